//! Rollouts gated on the real StatefulSet status (issue 14, item 4): the REAL operator binary
//! (the chart's RBAC for the test's namespace, `env.start_namespaced_operator()`) drives a
//! certificate renewal, an API-key rotation and a CA key replacement of a three-replica instance
//! on the real control plane, whose StatefulSet controller rolls the pods one at a time and kwok
//! makes the new pods Ready. Each goes through all its documented phases with the documented
//! number of rolls (README "TLS" and "API keys and access tokens"), counted from the real
//! StatefulSet: the ControllerRevisions its controller creates (one per new pod template) and the
//! `status.updateRevision` values a watch saw.
//!
//! In each, the operator is killed (SIGKILL) in the middle, once a phase is recorded and its roll
//! is held (the instance is pinned to a kwok Node of the test's own, cordoned:
//! tests/support/held_node.rs), and a new operator process is started while the roll is still
//! held; then the node is released. The rollout finishes, with no extra roll.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/held_node.rs"]
mod held_node;
#[path = "support/real_server.rs"]
mod real_server;

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane::{Operator, eventually, eventually_or_panic};
use futures::StreamExt;
use held_node::HeldNode;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use real_server::Env;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use secure_qdrant_operator::api_keys::{
    HANDLED_ANNOTATION, PHASE_ANNOTATION, Phase, ROLLED_OUT_AT_ANNOTATION,
    ROTATE_API_KEY_ANNOTATION,
};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::tls::{ROLLOVER_PHASE_ANNOTATION, ROTATE_CA_ANNOTATION};

const SQ: &str = "vectors";
const REPLICAS: i32 = 3;
/// Generous: the machine is shared and loaded.
const WITHIN: Duration = Duration::from_secs(300);

/// Records each distinct value `f` gives for object `name` of `api`, in the order a watch sees
/// them (consecutive repeats folded), until the test ends.
fn record<K, F>(api: Api<K>, name: &str, f: F) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&K) -> Option<String> + Send + Sync + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            if let Some(value) = event.ok().and_then(|obj| f(&obj)) {
                let mut seen = out.lock().unwrap();
                if seen.last() != Some(&value) {
                    seen.push(value);
                }
            }
        }
    });
    (seen, task)
}

/// One rollout's world: the namespace, its held node, the running operator, and what the
/// watches record.
struct Rollout {
    env: Env,
    node: HeldNode,
    op: Option<Operator>,
    /// The ControllerRevision number of the template before the rollout.
    baseline: i64,
    /// `status.updateRevision` of the StatefulSet, as watched (set ones only).
    revisions: Arc<Mutex<Vec<String>>>,
    /// How many of `revisions` were seen up to the baseline.
    baseline_seen: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Rollout {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self
            .env
            .cp
            .kubectl(&["delete", "node", &self.node.name, "--wait=false"]);
    }
}

impl Rollout {
    /// A namespace, a held node, the operator binary watching the namespace, and SecureQdrant
    /// `vectors` with `spec` (three replicas, pinned to the node) rolled out and Ready.
    async fn start(prefix: &str, mut spec: Value) -> Rollout {
        let env = Env::namespaced(prefix).await;
        let node = HeldNode::create(&env.admin, &env.ns).await;
        let op = env.start_namespaced_operator().await;
        spec["replicas"] = json!(REPLICAS);
        spec["pod"] = node.pod_spec();
        env.create_instance(SQ, spec).await;
        let (revisions, task) = record(
            Api::<StatefulSet>::namespaced(env.admin.clone(), &env.ns),
            SQ,
            |s: &StatefulSet| s.status.as_ref().and_then(|s| s.update_revision.clone()),
        );
        let mut r = Rollout {
            env,
            node,
            op: Some(op),
            baseline: 0,
            revisions,
            baseline_seen: 0,
            tasks: vec![task],
        };
        r.node.release().await;
        r.wait_ready().await;
        r.baseline = r.max_revision().await;
        let current = held_node::wait_rolled_out(&r.admin(), &r.env.ns, SQ)
            .await
            .status
            .and_then(|s| s.update_revision)
            .expect("an updateRevision");
        let revisions = r.revisions.clone();
        r.baseline_seen = r
            .wait("the watch sees the baseline revision", || {
                let seen = revisions.lock().unwrap().clone();
                let current = current.clone();
                async move {
                    (seen.last() == Some(&current))
                        .then_some(seen.len())
                        .ok_or_else(|| format!("{seen:?}"))
                }
            })
            .await;
        r
    }

    fn admin(&self) -> Client {
        self.env.admin.clone()
    }

    fn op(&self) -> &Operator {
        self.op.as_ref().expect("an operator runs")
    }

    fn log_tail(&self) -> String {
        self.op
            .as_ref()
            .map(|o| o.log_tail())
            .unwrap_or_else(|| "(no operator running)".to_owned())
    }

    /// Waits until `f` holds; the operator's log in the failure message.
    async fn wait<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        eventually_or_panic(WITHIN, what, f, || self.log_tail()).await
    }

    /// The instance is Ready with every replica and its StatefulSet rolled out.
    async fn wait_ready(&self) {
        let sqs = Api::<SecureQdrant>::namespaced(self.admin(), &self.env.ns);
        self.wait("the instance Ready", || {
            let sqs = sqs.clone();
            async move {
                let sq = sqs.get(SQ).await.map_err(|e| e.to_string())?;
                let status = sq.status.clone().unwrap_or_default();
                let ready = status.phase == Some(secure_qdrant_operator::crd::Phase::Ready)
                    && status.ready_replicas == Some(REPLICAS)
                    && status.observed_generation == sq.metadata.generation;
                ready
                    .then_some(())
                    .ok_or_else(|| format!("status {status:?}"))
            }
        })
        .await;
        let sts = held_node::wait_rolled_out(&self.admin(), &self.env.ns, SQ).await;
        assert!(held_node::rolled_out(&sts));
    }

    /// The highest ControllerRevision number of the StatefulSet: its controller makes a new one
    /// for every new pod template (a template seen before gets its old revision renumbered to
    /// the next number), so the difference of two readings is the number of rolls asked for.
    async fn max_revision(&self) -> i64 {
        Api::<ControllerRevision>::namespaced(self.admin(), &self.env.ns)
            .list(&ListParams::default())
            .await
            .expect("ControllerRevisions")
            .items
            .iter()
            .filter(|c| c.owner_references().iter().any(|o| o.name == SQ))
            .map(|c| c.revision)
            .max()
            .unwrap_or(0)
    }

    async fn rolls(&self) -> i64 {
        self.max_revision().await - self.baseline
    }

    /// The StatefulSet controller has seen the current template and its roll is held: the new
    /// revision is not the current one.
    async fn wait_roll_held(&self) {
        let api = Api::<StatefulSet>::namespaced(self.admin(), &self.env.ns);
        self.wait("a held roll", || {
            let api = api.clone();
            async move {
                let sts = api.get(SQ).await.map_err(|e| e.to_string())?;
                let status = sts.status.clone().unwrap_or_default();
                (status.observed_generation >= sts.metadata.generation
                    && status.update_revision != status.current_revision)
                    .then_some(())
                    .ok_or_else(|| format!("status {status:?}"))
            }
        })
        .await;
    }

    async fn secret(&self, name: &str) -> Secret {
        Api::<Secret>::namespaced(self.admin(), &self.env.ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}"))
    }

    async fn annotate_sq(&self, key: &str, value: &str) {
        Api::<SecureQdrant>::namespaced(self.admin(), &self.env.ns)
            .patch(
                SQ,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("SecureQdrant annotated");
    }

    /// Kills the operator (SIGKILL) while the current roll is held, starts a new operator
    /// process (the roll still held), and once it has reconciled the instance checks that it
    /// advanced nothing: Secret `phase_secret` (where the phase is recorded) holds the same data
    /// and annotations, no new template, the roll still held. Then releases the node.
    async fn restart_mid_phase(&mut self, phase_secret: &str) {
        self.wait_roll_held().await;
        let recorded = |s: Secret| (s.data, s.metadata.annotations);
        let before = recorded(self.secret(phase_secret).await);
        let revision = self.max_revision().await;
        drop(self.op.take());
        self.op = Some(self.env.start_namespaced_operator().await);
        let addr = self.http_addr().await;
        self.wait("a reconcile by the new operator", || {
            let addr = addr.clone();
            async move {
                let n = reconciles(&addr)?;
                (n >= 1.0)
                    .then_some(())
                    .ok_or_else(|| format!("{n} reconciles"))
            }
        })
        .await;
        assert_eq!(
            recorded(self.secret(phase_secret).await),
            before,
            "the restarted operator advanced while the roll is held"
        );
        assert_eq!(
            self.max_revision().await,
            revision,
            "a new template while held"
        );
        let sts = Api::<StatefulSet>::namespaced(self.admin(), &self.env.ns)
            .get(SQ)
            .await
            .unwrap();
        assert!(!held_node::rolled_out(&sts), "{:?}", sts.status);
        self.node.release().await;
    }

    /// The running operator's endpoints (`--http-addr 127.0.0.1:0`), from its log.
    async fn http_addr(&self) -> String {
        self.wait("the endpoints' address in the log", || {
            let log = self.op().log();
            async move {
                let line = log
                    .lines()
                    .map(strip_ansi)
                    .find(|l| l.contains("serving /metrics"))
                    .ok_or_else(|| "not yet".to_owned())?;
                let after = &line[line.rfind("addr=").ok_or("no addr")? + 5..];
                Ok(after
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned())
            }
        })
        .await
    }

    /// The rollout is over: the instance Ready and rolled out, and the running operator wrote
    /// its status since `mark` (it reconciled the finished state), with `expected` rolls since
    /// the baseline, each seen by the watch as a new `updateRevision`.
    async fn assert_finished(&self, mark: &real_server::Mark, expected: i64) {
        self.wait_ready().await;
        let user = self.op().username();
        self.wait("a status write by the new operator", || async {
            let now = self.env.mark().await;
            real_server::requests_between(self.env.cp, mark, &now, &user)
                .iter()
                .any(|r| r.verb == "patch" && r.resource == "secureqdrants.secureqdrant.dev/status")
                .then_some(())
                .ok_or_else(|| "none yet".to_owned())
        })
        .await;
        let rolls = self.rolls().await;
        let revisions = self.revisions.lock().unwrap().clone();
        let after: Vec<&String> = revisions[self.baseline_seen..].iter().collect();
        println!(
            "{}: {rolls} rolls (ControllerRevisions); updateRevision as watched: {revisions:?}",
            self.env.ns
        );
        assert_eq!(rolls, expected, "rolls; updateRevisions {revisions:?}");
        // The watch saw one new updateRevision per roll after the baseline, each new (no
        // template was reverted to).
        let distinct: std::collections::BTreeSet<&String> = revisions.iter().collect();
        assert_eq!(
            after.len() as i64,
            expected,
            "updateRevisions {revisions:?}"
        );
        assert_eq!(
            distinct.len(),
            revisions.len(),
            "updateRevisions {revisions:?}"
        );
    }
}

/// `line` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `secure_qdrant_reconciles_total` of the SecureQdrant controller, from `/metrics` at `addr`.
fn reconciles(addr: &str) -> Result<f64, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    response
        .lines()
        .find_map(|l| {
            l.strip_prefix("secure_qdrant_reconciles_total{controller=\"secureqdrant\"} ")
        })
        .ok_or_else(|| "no secure_qdrant_reconciles_total yet".to_owned())?
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).expect("UTF-8"))
}

/// PEM text without whitespace, to compare certificates written by different encoders.
fn squash(pem: &str) -> String {
    pem.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Records the values of `annotation` on Secret `name` (`-` while absent).
fn record_annotation(
    r: &mut Rollout,
    name: &str,
    annotation: &'static str,
) -> Arc<Mutex<Vec<String>>> {
    let (seen, task) = record(
        Api::<Secret>::namespaced(r.admin(), &r.env.ns),
        name,
        move |s: &Secret| {
            Some(
                s.annotations()
                    .get(annotation)
                    .cloned()
                    .unwrap_or_else(|| "-".to_owned()),
            )
        },
    );
    r.tasks.push(task);
    seen
}

/// Waits until a recorder has seen the object once: a change made before its watch has listed
/// would be recorded without the value it replaced.
async fn wait_recorded(r: &Rollout, seen: &Arc<Mutex<Vec<String>>>) {
    r.wait("the recorder has seen the object", || async {
        let first = seen.lock().unwrap().first().cloned();
        first
            .map(|_| ())
            .ok_or_else(|| "nothing recorded yet".to_owned())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_rotation_rolls_three_times_and_resumes_after_a_restart_in_phase_swapped() {
    let mut r = Rollout::start(
        "roll-key",
        json!({"auth": {"keyRotationGracePeriod": "1m"}}),
    )
    .await;
    let secret_name = format!("{SQ}-api-key");
    let old = text(&r.secret(&secret_name).await, "api-key").expect("api-key");
    let phases = record_annotation(&mut r, &secret_name, PHASE_ANNOTATION);
    wait_recorded(&r, &phases).await;

    // Introduced: the new key beside the old one (roll 1); once every pod runs, ready, with
    // both, the moment is recorded and the grace period (1m) starts.
    r.annotate_sq(ROTATE_API_KEY_ANNOTATION, "r1").await;
    let new = r
        .wait("rolled out with both keys", || async {
            let s = r.secret(&secret_name).await;
            let a = s.annotations();
            match (a.get(PHASE_ANNOTATION), a.get(ROLLED_OUT_AT_ANNOTATION)) {
                (Some(p), Some(_)) if p == Phase::Introduced.as_str() => {
                    text(&s, "next-api-key").ok_or_else(|| "no next-api-key".to_owned())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_ne!(new, old);
    assert_eq!(r.rolls().await, 1, "Introduced is one roll");
    // Held from here (the swap comes only after the grace period).
    r.node.hold().await;

    // Swapped (roll 2, held): the operator is killed and a new one started.
    r.wait("phase Swapped", || async {
        let s = r.secret(&secret_name).await;
        (s.annotations().get(PHASE_ANNOTATION).map(String::as_str) == Some(Phase::Swapped.as_str()))
            .then_some(())
            .ok_or_else(|| format!("{:?}", s.annotations()))
    })
    .await;
    r.restart_mid_phase(&secret_name).await;
    let mark = r.env.mark().await;

    // Promoted (roll 3), then finished: next-api-key removed without a roll.
    r.wait("the rotation finished", || async {
        let s = r.secret(&secret_name).await;
        let a = s.annotations();
        let done = !a.contains_key(PHASE_ANNOTATION)
            && !a.contains_key(ROLLED_OUT_AT_ANNOTATION)
            && text(&s, "next-api-key").is_none()
            && a.get(HANDLED_ANNOTATION).map(String::as_str) == Some("r1");
        done.then_some(()).ok_or_else(|| format!("{a:?}"))
    })
    .await;
    let s = r.secret(&secret_name).await;
    assert_eq!(
        text(&s, "api-key").as_deref(),
        Some(new.as_str()),
        "promoted"
    );
    r.assert_finished(&mark, 3).await;
    assert_eq!(
        *phases.lock().unwrap(),
        [
            "-",
            Phase::Introduced.as_str(),
            Phase::Swapped.as_str(),
            Phase::Promoted.as_str(),
            "-"
        ],
        "the phases, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_key_replacement_rolls_three_times_and_resumes_after_a_restart_in_phase_trust_both() {
    let mut r = Rollout::start("roll-ca", json!({})).await;
    let (ca_name, tls_name) = (format!("{SQ}-ca"), format!("{SQ}-tls"));
    let old_ca = text(&r.secret(&ca_name).await, "tls.crt").expect("the CA");
    let phases = record_annotation(&mut r, &tls_name, ROLLOVER_PHASE_ANNOTATION);
    wait_recorded(&r, &phases).await;

    // TrustBoth (roll 1, held): old and new CA in the bundle; the operator is killed and a new
    // one started.
    r.node.hold().await;
    r.annotate_sq(ROTATE_CA_ANNOTATION, "1").await;
    r.wait("phase TrustBoth", || async {
        let s = r.secret(&tls_name).await;
        (s.annotations()
            .get(ROLLOVER_PHASE_ANNOTATION)
            .map(String::as_str)
            == Some("TrustBoth"))
        .then_some(())
        .ok_or_else(|| format!("{:?}", s.annotations()))
    })
    .await;
    r.restart_mid_phase(&tls_name).await;
    let mark = r.env.mark().await;

    // SignWithNew (roll 2), DropOld (roll 3), then Stable: the bundle is the new CA alone.
    let new_ca = r
        .wait("the rollover finished", || async {
            let tls = r.secret(&tls_name).await;
            let ca = text(&r.secret(&ca_name).await, "tls.crt").unwrap_or_default();
            let phase = tls.annotations().get(ROLLOVER_PHASE_ANNOTATION).cloned();
            let bundle = text(&tls, "ca.crt").unwrap_or_default();
            let same = squash(&bundle) == squash(&ca);
            let done = matches!(phase.as_deref(), None | Some("Stable")) && ca != old_ca && same;
            done.then_some(ca)
                .ok_or_else(|| format!("phase {phase:?}, the bundle is the new CA alone: {same}"))
        })
        .await;
    assert_ne!(squash(&new_ca), squash(&old_ca), "a new CA");
    r.assert_finished(&mark, 3).await;
    assert_eq!(
        *phases.lock().unwrap(),
        ["Stable", "TrustBoth", "SignWithNew", "DropOld", "Stable"],
        "the phases, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewal_rolls_once_and_resumes_after_a_restart_before_its_roll() {
    // The shortest lifetime the CRD allows (1h) renewed as early as it allows (54m, 90% of the
    // lifetime, before its end): the renewal comes 3 to 6 minutes (the per-instance jitter is
    // at most 5% of the lifetime) after the certificate is issued.
    let mut r = Rollout::start(
        "roll-cert",
        json!({"tls": {"certificateLifetime": "1h", "renewBefore": "59m"}}),
    )
    .await;
    let tls_name = format!("{SQ}-tls");
    let (certs, task) = record(
        Api::<Secret>::namespaced(r.admin(), &r.env.ns),
        &tls_name,
        |s: &Secret| text(s, "tls.crt"),
    );
    r.tasks.push(task);
    wait_recorded(&r, &certs).await;
    let first = text(&r.secret(&tls_name).await, "tls.crt").expect("a certificate");
    let bundle = text(&r.secret(&tls_name).await, "ca.crt").expect("a bundle");

    // Renewed (roll 1, held): the operator is killed and a new one started.
    r.node.hold().await;
    let sq = Api::<SecureQdrant>::namespaced(r.admin(), &r.env.ns)
        .get(SQ)
        .await
        .unwrap();
    let renewal: k8s_openapi::jiff::Timestamp = sq
        .status
        .and_then(|s| s.certificate)
        .and_then(|c| c.renewal_time)
        .expect("status.certificate.renewalTime")
        .parse()
        .expect("a time");
    assert!(
        renewal > k8s_openapi::jiff::Timestamp::now(),
        "the renewal ({renewal}) came before the node was held: the instance took too long to start"
    );
    let until_due = Duration::from_secs(
        k8s_openapi::jiff::Timestamp::now()
            .duration_until(renewal)
            .as_secs()
            .unsigned_abs(),
    );
    let renewed = eventually(until_due + WITHIN, || async {
        let cert = text(&r.secret(&tls_name).await, "tls.crt").unwrap_or_default();
        (cert != first)
            .then_some(cert)
            .ok_or_else(|| format!("not yet (due at {renewal})"))
    })
    .await
    .unwrap_or_else(|e| panic!("the certificate renewed: {e}\n{}", r.log_tail()));
    // The renewed certificate would be due again 3 to 6 minutes later: renewBefore is lowered
    // to 5m (due in about 50 minutes), which changes no certificate and no pod.
    Api::<SecureQdrant>::namespaced(r.admin(), &r.env.ns)
        .patch(
            SQ,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tls": {"renewBefore": "5m"}}})),
        )
        .await
        .expect("renewBefore lowered");
    r.restart_mid_phase(&tls_name).await;
    let mark = r.env.mark().await;
    r.assert_finished(&mark, 1).await;
    let s = r.secret(&tls_name).await;
    assert_eq!(
        text(&s, "tls.crt"),
        Some(renewed),
        "renewed once, not again"
    );
    assert_eq!(text(&s, "ca.crt"), Some(bundle), "the same CA");
    assert_eq!(certs.lock().unwrap().len(), 2, "one renewal");
}
