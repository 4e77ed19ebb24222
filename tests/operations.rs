//! Operating the operator, on the real control plane of `tests/support/control_plane.rs`
//! (a real kube-apiserver, its Leases in etcd; faults through the proxy of
//! `tests/support/real_server.rs`):
//!
//! - the leader elector (`secure_qdrant_operator::leader`) with several candidates, on a real
//!   `coordination.k8s.io/v1` Lease in a release namespace of the chart, as the chart's
//!   ServiceAccount (its leader-election Role): exactly one leads, a standby takes over once the
//!   leader stops renewing (after the Lease expires, not before), lost races (the real API
//!   server's 409 AlreadyExists / Conflict) leave the loser standing by, a leader that cannot
//!   renew (the proxy fails its Lease requests) steps down before its Lease expires, and the
//!   Lease is released on shutdown;
//! - the real binary (`secure-qdrant-operator run`), started with the arguments of the chart's
//!   Deployment and authenticated as the chart's ServiceAccount: `/healthz`, `/readyz` (503 until
//!   the caches synced), `/metrics` after SecureQdrant and QdrantAccessToken reconciles (counts,
//!   failures by kind, durations, certificate and token expiry), SIGTERM (exit 0, Lease
//!   released), JSON logs and the log level, `--namespaces`, and two replicas of ONE release
//!   (same ServiceAccount, same Lease, different pod names) with leader election: only the leader
//!   reconciles; killing it hands over within ~20 s; a leader that loses its Lease exits 1.
//!
//! Tests run in parallel on one control plane: each has its own namespaces and its own release
//! of the chart; every operator process watches only its test's namespaces (the chart's
//! `watchNamespaces` mode). Each operator serves its endpoints on a port the kernel picks
//! (`--http-addr 127.0.0.1:0`), read back from its JSON log (or, at `--log-level warn`, from
//! /proc).

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/real_server.rs"]
mod real_server;

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;

use control_plane::{apply_chart_rbac, listening_on_loopback, render_chart, service_account_token};
use real_server::{Env, Faults, Identity, count, requests_between};
use secure_qdrant_operator::controller::shutdown::Shutdown;
use secure_qdrant_operator::leader::{self, Attempt, LEASE_NAME, LeaderElector, LeaseConfig};
use secure_qdrant_operator::telemetry::{Health, Role};

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
const GROUP_VERSION: &str = "secureqdrant.dev/v1alpha1";
const LEASES: &str = "leases.coordination.k8s.io";
/// Waits for the API server and the operator: generous, the machine is shared.
const LONG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// A release of the chart
// ---------------------------------------------------------------------------------------------

/// The chart installed as one release in its own namespace: its ServiceAccount and RBAC applied
/// (rendered by the Helm SDK), a token of the ServiceAccount, and the rendered documents (for
/// the Deployment's arguments). With `replicas > 1` the chart turns leader election on: a Role
/// for the Lease in the release namespace, and `--leader-election --lease-namespace=<it>`.
struct Release {
    identity: Identity,
    docs: Vec<Value>,
}

impl Release {
    async fn install(env: &Env, replicas: u32, watch: &[String]) -> Release {
        let namespace = env.cp.namespace(&env.admin, "sqo").await;
        let values = json!({ "replicas": replicas, "watchNamespaces": watch });
        let docs = render_chart(&values, &format!("sqo-{namespace}"), &namespace);
        let service_account = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("the chart has a ServiceAccount")
            .to_owned();
        apply_chart_rbac(&env.admin, &docs).await;
        let token = service_account_token(&env.admin, &namespace, &service_account).await;
        Release {
            identity: Identity {
                namespace,
                service_account,
                token,
            },
            docs,
        }
    }

    /// The release namespace: where the chart puts the Lease.
    fn namespace(&self) -> &str {
        &self.identity.namespace
    }

    /// The operator container's arguments in the chart's Deployment, without `run` and
    /// `--http-addr` (each test process serves on its own loopback port).
    fn args(&self) -> Vec<String> {
        let deployment = self
            .docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the chart has a Deployment");
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("the operator's args")
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| *a != "run" && !a.starts_with("--http-addr"))
            .map(str::to_owned)
            .collect()
    }

    /// A client as the release's ServiceAccount, through `env`'s fault proxy.
    async fn client(&self, env: &Env) -> Client {
        self.identity.client(env.cp, &env.proxy.url()).await
    }

    /// A client as the release's ServiceAccount, straight to the API server (no faults).
    async fn direct_client(&self, env: &Env) -> Client {
        self.identity.client(env.cp, &env.cp.state.server).await
    }
}

// ---------------------------------------------------------------------------------------------
// The leader elector, as a library
// ---------------------------------------------------------------------------------------------

/// Short timings so expiry tests take seconds: Lease 2 s, renewed every 300 ms, given up after
/// 1.2 s without a renewal, standbys look every 100 ms. The Lease is the chart's: in the release
/// namespace.
fn fast(namespace: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_period: Duration::from_millis(300),
        renew_deadline: Duration::from_millis(1200),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new(namespace, identity)
    }
}

/// The Lease as stored by the API server (read as admin).
async fn lease(env: &Env, ns: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(env.admin.clone(), ns)
        .get_opt(LEASE_NAME)
        .await
        .unwrap_or_else(|e| panic!("get Lease {ns}/{LEASE_NAME}: {e}"))
}

async fn holder(env: &Env, ns: &str) -> Option<String> {
    lease(env, ns)
        .await
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn transitions(env: &Env, ns: &str) -> i64 {
    lease(env, ns)
        .await
        .and_then(|l| l.spec?.lease_transitions)
        .map(i64::from)
        .unwrap_or(-1)
}

/// A world for the elector tests: a namespace, a fault proxy, and a release of the chart with
/// leader election (its Lease Role) whose ServiceAccount the candidates are.
async fn elector_env(prefix: &str) -> (Env, Release, Client) {
    let env = Env::namespaced(prefix).await;
    let release = Release::install(&env, 2, std::slice::from_ref(&env.ns)).await;
    let client = release.client(&env).await;
    (env, release, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_candidates_leads() {
    let (env, release, client) = elector_env("one-leads").await;
    let ns = release.namespace();
    let mut a = LeaderElector::new(client.clone(), fast(ns, "a"));
    let mut b = LeaderElector::new(client.clone(), fast(ns, "b"));

    // Both try at once, then keep trying: one leads every round, always the same one.
    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let leader = match (&ra, &rb) {
        (Attempt::Leading, Attempt::Standby { .. }) => "a",
        (Attempt::Standby { .. }, Attempt::Leading) => "b",
        other => panic!("not exactly one leader: {other:?}"),
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (lead, stand) = if leader == "a" { (ra, rb) } else { (rb, ra) };
        assert_eq!(lead, Attempt::Leading);
        assert_eq!(
            stand,
            Attempt::Standby {
                holder: leader.into()
            }
        );
    }
    assert_eq!(holder(&env, ns).await.as_deref(), Some(leader));
    assert_eq!(transitions(&env, ns).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_once_the_leader_stopped_renewing_for_the_lease_duration() {
    let (env, release, client) = elector_env("takeover").await;
    let ns = release.namespace();
    let mut a = LeaderElector::new(client.clone(), fast(ns, "a"));
    let mut b = LeaderElector::new(client.clone(), fast(ns, "b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);

    // a renews for a while: b never takes over, though more than a Lease duration passes.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
        assert_eq!(
            b.try_acquire_or_renew().await.unwrap(),
            Attempt::Standby { holder: "a".into() }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // a stops renewing (hung, partitioned): b takes over 2 s after it last saw a renewal.
    let stopped = Instant::now();
    let took_over = loop {
        match b.try_acquire_or_renew().await.unwrap() {
            Attempt::Leading => break stopped.elapsed(),
            Attempt::Standby { holder } => assert_eq!(holder, "a"),
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "b never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        took_over >= Duration::from_millis(1700),
        "took over after {took_over:?}, before the Lease could expire"
    );
    assert_eq!(holder(&env, ns).await.as_deref(), Some("b"));
    assert_eq!(transitions(&env, ns).await, 1);
    // a comes back: it has lost.
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::Standby { holder: "b".into() }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_leaves_the_loser_standing_by() {
    let (env, release, client) = elector_env("race").await;
    let ns = release.namespace();
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mut a = LeaderElector::new(client.clone(), fast(ns, "a"));
    let mut b = LeaderElector::new(client.clone(), fast(ns, "b"));
    let mark = env.mark().await;

    // Both saw no Lease; a creates it first, b's create is refused (409 AlreadyExists).
    assert_eq!(a.act_on(None).await.unwrap(), Attempt::Leading);
    assert!(matches!(
        b.act_on(None).await.unwrap(),
        Attempt::Standby { .. }
    ));
    assert_eq!(holder(&env, ns).await.as_deref(), Some("a"));

    // a releases; both read the free Lease; a writes first, b's write on the same
    // resourceVersion is refused (409 Conflict).
    assert!(a.release().await.unwrap());
    assert_eq!(holder(&env, ns).await, None);
    let seen = api.get(LEASE_NAME).await.unwrap();
    assert_eq!(
        a.act_on(Some(seen.clone())).await.unwrap(),
        Attempt::Leading
    );
    assert!(matches!(
        b.act_on(Some(seen)).await.unwrap(),
        Attempt::Standby { .. }
    ));
    assert_eq!(holder(&env, ns).await.as_deref(), Some("a"));
    let now = env.mark().await;
    let updates = count(requests_between(
        env.cp,
        &mark,
        &now,
        &release.identity.username(),
    ));
    assert_eq!(
        updates.get("update", LEASES),
        3,
        "release + two takes: {:?}",
        updates.log
    );
    let codes = |verb: &str| -> Vec<u16> {
        updates
            .log
            .iter()
            .filter(|r| r.verb == verb && r.resource == LEASES)
            .map(|r| r.code)
            .collect()
    };
    // The real API server refused the loser each time: AlreadyExists, then Conflict.
    assert_eq!(codes("create"), [201, 409], "{:?}", updates.log);
    assert_eq!(codes("update"), [200, 200, 409], "{:?}", updates.log);

    // Released, the Lease is free at once (no expiry to wait for).
    assert!(a.release().await.unwrap());
    assert!(!a.release().await.unwrap(), "only the holder releases");
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert_eq!(holder(&env, ns).await.as_deref(), Some("b"));
    assert!(!a.release().await.unwrap(), "a does not hold it");
    assert_eq!(holder(&env, ns).await.as_deref(), Some("b"));
}

/// A future that records whether it was dropped before finishing.
struct Lead {
    dropped: Arc<AtomicBool>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_runs_the_work_releases_on_shutdown_and_stops_it_when_the_lease_is_taken() {
    let (env, release, client) = elector_env("lead-work").await;
    let ns = release.namespace().to_owned();

    // 1. Shutdown while leading: the work finishes, the Lease is released.
    let (trigger, shutdown) = Shutdown::new();
    let health = Health::default();
    let task = {
        let (client, health, shutdown, ns) =
            (client.clone(), health.clone(), shutdown.clone(), ns.clone());
        tokio::spawn(async move {
            let work = {
                let shutdown = shutdown.clone();
                async move {
                    shutdown.requested().await;
                    42
                }
            };
            leader::run(
                LeaderElector::new(client, fast(&ns, "a")),
                &health,
                &shutdown,
                work,
            )
            .await
        })
    };
    let (e, n, h) = (&env, ns.as_str(), &health);
    until("a leads", LONG, || async move {
        let health = h;
        let h = holder(e, n).await;
        (h.as_deref() == Some("a") && health.role() == Role::Leader)
            .then_some(())
            .ok_or(format!("holder {h:?}, role {:?}", health.role()))
    })
    .await;
    trigger.fire();
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("returns after shutdown")
        .unwrap();
    assert_eq!(out.expect("not lost"), Some(42));
    assert_eq!(holder(&env, &ns).await, None, "released");

    // 2. Another holder appears (an operator with a clock far off, a human): the leader notices
    // at its next renewal and stops the work.
    let (_trigger, shutdown) = Shutdown::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let task = {
        let (client, dropped, ns) = (client.clone(), dropped.clone(), ns.clone());
        tokio::spawn(async move {
            let work = async move {
                let _guard = Lead { dropped };
                std::future::pending::<()>().await
            };
            leader::run(
                LeaderElector::new(client, fast(&ns, "a")),
                &Health::default(),
                &shutdown,
                work,
            )
            .await
        })
    };
    until("a leads again", LONG, || async move {
        let h = holder(e, n).await;
        (h.as_deref() == Some("a"))
            .then_some(())
            .ok_or(format!("holder {h:?}"))
    })
    .await;
    // As admin: a human, or a process outside the chart's RBAC.
    let api: Api<Lease> = Api::namespaced(env.admin.clone(), &ns);
    steal(&api, "intruder").await;
    let lost = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the leader notices within a renew period")
        .unwrap()
        .expect_err("lost");
    assert!(lost.reason.contains("intruder"), "{lost}");
    assert!(dropped.load(Ordering::SeqCst), "the work was stopped");
    assert_eq!(holder(&env, &ns).await.as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
    let (env, release, client) = elector_env("no-renew").await;
    let ns = release.namespace().to_owned();
    let (_trigger, shutdown) = Shutdown::new();
    let task = {
        let (client, ns) = (client.clone(), ns.clone());
        tokio::spawn(async move {
            leader::run(
                LeaderElector::new(client, fast(&ns, "a")),
                &Health::default(),
                &shutdown,
                std::future::pending::<()>(),
            )
            .await
        })
    };
    let (e, n) = (&env, ns.as_str());
    let acquired = until("a leads", LONG, || async move {
        let l = lease(e, n).await;
        let h = l
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.holder_identity.clone());
        match l {
            Some(l) if h.as_deref() == Some("a") => Ok(l.metadata.resource_version),
            _ => Err(format!("holder {h:?}")),
        }
    })
    .await;
    // Let one renewal through (the Lease's resourceVersion moves), then every Lease request
    // fails at the proxy.
    let acquired = &acquired;
    until("a renewed", Duration::from_secs(10), || async move {
        let rv = lease(e, n).await.and_then(|l| l.metadata.resource_version);
        (rv != *acquired).then_some(()).ok_or(format!("{rv:?}"))
    })
    .await;
    env.set_faults(&Faults {
        error_rate: 1.0,
        error_codes: vec![500],
        resources: vec![LEASES.into()],
        ..Faults::default()
    });
    let lost = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the leader gives up")
        .unwrap()
        .expect_err("lost");
    let stepped_down = Timestamp::now();
    assert!(lost.reason.contains("not renewed"), "{lost}");
    // The last renewal that reached the API server, as the elector wrote it: `renewTime` is
    // taken (same host clock as this test) just before the write, so the Lease expires 2 s
    // after it at the earliest for every other candidate. The proxy fails every Lease request
    // since, the release on step-down included (a's Lease still, not a released one).
    let last = lease(&env, &ns)
        .await
        .and_then(|l| l.spec)
        .expect("the Lease");
    assert_eq!(last.holder_identity.as_deref(), Some("a"), "{last:?}");
    let renew_time = last.renew_time.as_ref().expect("renewTime").0;
    let acquire_time = last.acquire_time.as_ref().expect("acquireTime").0;
    assert!(renew_time > acquire_time, "renewed at least once: {last:?}");
    let after = Duration::try_from(stepped_down.duration_since(renew_time)).expect("a duration");
    // Deadline 1.2 s after the last renewal; the Lease lasts 2 s: no overlap with a successor.
    assert!(
        after < Duration::from_millis(1900),
        "stepped down after {after:?}"
    );
    assert!(
        after >= Duration::from_millis(800),
        "stepped down after {after:?}"
    );
    assert!(
        env.proxy.injected().errors.keys().any(|(_, r)| r == LEASES),
        "the proxy failed its Lease requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reports_whether_it_can_read_the_lease_and_stops_on_shutdown() {
    let (env, release, client) = elector_env("standby").await;
    let ns = release.namespace().to_owned();
    // The other replica reaches the API server without the proxy: the faults below are a's.
    let mut other = LeaderElector::new(release.direct_client(&env).await, fast(&ns, "other"));
    assert_eq!(
        other.try_acquire_or_renew().await.unwrap(),
        Attempt::Leading
    );
    let keep_other = tokio::spawn(async move {
        loop {
            let _ = other.try_acquire_or_renew().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let (trigger, shutdown) = Shutdown::new();
    let health = Health::default();
    let ran = Arc::new(AtomicBool::new(false));
    let task = {
        let (client, health, ran, ns) = (client.clone(), health.clone(), ran.clone(), ns.clone());
        tokio::spawn(async move {
            let work = async move { ran.store(true, Ordering::SeqCst) };
            leader::run(
                LeaderElector::new(client, fast(&ns, "a")),
                &health,
                &shutdown,
                work,
            )
            .await
        })
    };
    wait_until("a stands by", Duration::from_secs(30), || {
        (health.readiness() == Ok("standby: another replica leads")).then_some(())
    })
    .await;
    env.set_faults(&Faults {
        error_rate: 1.0,
        verbs: vec!["get".into()],
        resources: vec![LEASES.into()],
        ..Faults::default()
    });
    wait_until(
        "a reports the Lease unreadable",
        Duration::from_secs(30),
        || (health.readiness() == Err("standby: the Lease cannot be read")).then_some(()),
    )
    .await;
    env.clear_faults();
    wait_until("a stands by again", Duration::from_secs(30), || {
        health.readiness().is_ok().then_some(())
    })
    .await;
    trigger.fire();
    let out = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(out.expect("not lost"), None, "never led");
    assert!(
        !ran.load(Ordering::SeqCst),
        "a standby never runs the controllers"
    );
    assert_eq!(holder(&env, &ns).await.as_deref(), Some("other"));
    keep_other.abort();
}

/// Makes `identity` the Lease's holder, whatever the current holder does meanwhile.
async fn steal(api: &Api<Lease>, identity: &str) {
    for _ in 0..20 {
        let mut lease = api.get(LEASE_NAME).await.unwrap();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(identity.into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            Timestamp::now(),
        ));
        spec.lease_duration_seconds = Some(3600);
        lease.metadata.managed_fields = None;
        match api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("could not overwrite the Lease");
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_metrics_after_secure_qdrant_and_token_reconciles() {
    let ops = Ops::start("endpoints", 1).await;
    let (env, ns) = (&ops.env, ops.env.ns.as_str());
    // The StatefulSet cache cannot list at first: the operator runs but is not ready.
    env.set_faults(&Faults {
        error_rate: 1.0,
        verbs: vec!["list".into()],
        resources: vec!["statefulsets.apps".into()],
        ..Faults::default()
    });
    let op = ops.spawn("op", &[]);
    let http = op.http_addr().await;
    assert_eq!(get(&http, "/healthz"), (200, "ok\n".into()));
    // Not ready while the StatefulSet list fails (the proxy has refused it at least once).
    eventually("a StatefulSet list refused", LONG, || {
        let n = env
            .proxy
            .injected()
            .errors
            .get(&("list".to_owned(), "statefulsets.apps".to_owned()))
            .copied()
            .unwrap_or(0);
        (n >= 1).then_some(()).ok_or(n.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let (code, body) = get(&http, "/readyz");
    assert_eq!((code, body.as_str()), (503, "caches not synced yet\n"));
    let (code, metrics) = get(&http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"secure_qdrant_reconciles_total{controller="secureqdrant"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    env.clear_faults();
    eventually("ready once the caches synced", LONG, || {
        let (code, body) = get(&http, "/readyz");
        (code == 200).then_some(()).ok_or(body)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));

    // A SecureQdrant whose status cannot be written at first (a failure of the "status" step),
    // and a token for it.
    env.set_faults(&Faults {
        error_rate: 1.0,
        verbs: vec!["patch".into()],
        resources: vec!["secureqdrants.secureqdrant.dev/status".into()],
        ..Faults::default()
    });
    env.insert(instance(ns, "vectors")).await.unwrap();
    env.insert(token(ns, "frontend", "vectors")).await.unwrap();
    eventually("a failure counted", LONG, || {
        let m = get(&http, "/metrics").1;
        sample(
            &m,
            r#"secure_qdrant_reconcile_failures_total{controller="secureqdrant",step="status",error="status"}"#,
        )
        .filter(|n| *n >= 1.0)
        .ok_or(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    env.clear_faults();

    let not_after = until_ok("certificate in status", LONG, || async move {
        let sq = env
            .get(GROUP_VERSION, "SecureQdrant", ns, "vectors")
            .await
            .unwrap_or_default();
        unix(&sq["status"]["certificate"]["notAfter"]).ok_or(sq.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let expires_at = until_ok("token in status", LONG, || async move {
        let t = env
            .get(GROUP_VERSION, "QdrantAccessToken", ns, "frontend")
            .await
            .unwrap_or_default();
        unix(&t["status"]["expiresAt"]).ok_or(t.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));

    let cert_series = format!(
        r#"secure_qdrant_certificate_expiry_timestamp_seconds{{namespace="{ns}",name="vectors"}}"#
    );
    let token_series = format!(
        r#"secure_qdrant_token_expiry_timestamp_seconds{{namespace="{ns}",name="frontend"}}"#
    );
    let metrics = eventually("expiry gauges", LONG, || {
        let m = get(&http, "/metrics").1;
        (sample(&m, &cert_series) == Some(not_after as f64)
            && sample(&m, &token_series) == Some(expires_at as f64))
        .then_some(m.clone())
        .ok_or(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for controller in ["secureqdrant", "qdrantaccesstoken"] {
        let n = sample(
            &metrics,
            &format!(r#"secure_qdrant_reconciles_total{{controller="{controller}"}}"#),
        )
        .unwrap_or(0.0);
        assert!(n >= 1.0, "{controller}: {metrics}");
        let timed = sample(
            &metrics,
            &format!(
                r#"secure_qdrant_reconcile_duration_seconds_count{{controller="{controller}"}}"#
            ),
        );
        assert_eq!(timed, Some(n), "every reconcile is timed: {metrics}");
    }
    assert!(metrics.contains("# TYPE secure_qdrant_reconcile_duration_seconds histogram"));
    assert!(metrics.contains(
        r#"secure_qdrant_reconcile_duration_seconds_bucket{le="+Inf",controller="secureqdrant"}"#
    ));

    // Deleted objects leave the metrics.
    env.delete(GROUP_VERSION, "QdrantAccessToken", ns, "frontend")
        .await
        .unwrap();
    env.delete(GROUP_VERSION, "SecureQdrant", ns, "vectors")
        .await
        .unwrap();
    eventually("series removed", LONG, || {
        let m = get(&http, "/metrics").1;
        (sample(&m, &cert_series).is_none() && sample(&m, &token_series).is_none())
            .then_some(())
            .ok_or(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    op.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_operator_with_exit_code_0() {
    let ops = Ops::start("sigterm", 1).await;
    let mut op = ops.spawn("op", &[]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    ops.env
        .insert(instance(&ops.env.ns, "vectors"))
        .await
        .unwrap();
    op.wait_log("applied children").await;

    let status = op.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", op.log_tail());
    let log = op.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("controllers stopped"), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    assert!(
        TcpStream::connect(&http).is_err(),
        "the HTTP endpoints stopped with the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_leader_election_releases_the_lease_and_exits_0() {
    let ops = Ops::start("sigterm-le", 2).await;
    let lease_ns = ops.release.namespace().to_owned();
    let mut op = ops.spawn("op-a", &[]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    assert_eq!(holder(&ops.env, &lease_ns).await.as_deref(), Some("op-a"));
    assert_eq!(get(&http, "/readyz"), (200, "leader: ready\n".into()));

    let status = op.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", op.log_tail());
    assert_eq!(holder(&ops.env, &lease_ns).await, None, "released");
    assert!(op.log().contains("released the Lease"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_at_the_chosen_level() {
    let ops = Ops::start("logs", 1).await;
    // JSON at debug level for the operator's own modules.
    let mut op = ops.spawn_with(
        "op",
        &[],
        &[("LOG_LEVEL", "secure_qdrant_operator=debug,warn")],
    );
    let http = op.http_addr().await;
    // The /proc reading used at level warn below finds the address the log names.
    assert_eq!(op.listening_addr().await, http);
    op.wait_ready(&http).await;
    ops.env
        .insert(instance(&ops.env.ns, "vectors"))
        .await
        .unwrap();
    op.wait_log("applied children").await;
    assert_eq!(op.terminate(Duration::from_secs(10)).await.code(), Some(0));
    let log = op.log();
    let mut levels = BTreeMap::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field}: {line}");
        }
        *levels
            .entry(v["level"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
        // `warn` for everything else: kube's INFO lines are filtered out.
        if v["level"] == "INFO" || v["level"] == "DEBUG" {
            let target = v["target"].as_str().unwrap_or_default();
            assert!(target.starts_with("secure_qdrant_operator"), "{line}");
        }
    }
    assert!(levels.contains_key("DEBUG"), "{levels:?}");
    assert!(levels.contains_key("INFO"), "{levels:?}");

    // `--log-level warn`: the routine INFO lines are gone. (The endpoints' address is logged at
    // INFO, so this one's port, still picked by the kernel, is read from /proc.)
    let mut quiet = ops.spawn_with("quiet", &["--log-level", "warn"], &[]);
    let http = quiet.listening_addr().await;
    quiet.wait_ready(&http).await;
    assert_eq!(
        quiet.terminate(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    let log = quiet.log();
    assert!(
        !log.contains("\"INFO\"") && !log.contains("caches synced"),
        "INFO lines at level warn:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_namespaces_are_watched() {
    let env = Env::namespaced("listed").await;
    let mut teams = Vec::new();
    for team in ["team-a", "team-b", "team-c"] {
        teams.push(env.cp.namespace(&env.admin, team).await);
    }
    let (a, b, c) = (&teams[0], &teams[1], &teams[2]);
    // The release watches team-a and team-b (the chart's Roles there, `--namespaces=a,b`).
    let ops = Ops::with_env(env, 1, vec![a.clone(), b.clone()]).await;
    let env = &ops.env;
    assert!(
        ops.release
            .args()
            .contains(&format!("--namespaces={a},{b}")),
        "{:?}",
        ops.release.args()
    );
    let mark = env.mark().await;
    let op = ops.spawn("op", &[]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    for ns in &teams {
        env.insert(instance(ns, "vectors")).await.unwrap();
    }
    for ns in [a, b] {
        until_ok(&format!("{ns} reconciled"), LONG, || async move {
            let sq = env
                .get(GROUP_VERSION, "SecureQdrant", ns, "vectors")
                .await
                .unwrap_or_default();
            sq["status"]["observedGeneration"]
                .as_i64()
                .ok_or(sq.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    }
    // A child deleted in a watched namespace comes back (caches and triggers work per
    // namespace).
    let config_maps = env.list("v1", "ConfigMap", b).await;
    let cm = config_maps
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        // The API server's own ConfigMap in every namespace is not the operator's.
        .find(|n| *n != "kube-root-ca.crt")
        .unwrap_or_else(|| panic!("no ConfigMap of the operator in {b}: {config_maps:?}"))
        .to_owned();
    env.delete("v1", "ConfigMap", b, &cm).await.unwrap();
    let cm = cm.as_str();
    until_ok("the ConfigMap is back", LONG, || async move {
        env.get("v1", "ConfigMap", b, cm)
            .await
            .map(|_| ())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let sq = env
        .get(GROUP_VERSION, "SecureQdrant", c, "vectors")
        .await
        .unwrap();
    assert!(sq.get("status").is_none(), "team-c is not watched: {sq}");
    let built: Vec<Value> = env
        .list("v1", "ConfigMap", c)
        .await
        .into_iter()
        .filter(|c| c["metadata"]["name"] != "kube-root-ca.crt")
        .collect();
    assert!(built.is_empty(), "nothing built in team-c: {built:?}");
    for (api, kind) in secure_qdrant_operator::children::CHILD_KINDS {
        let owned: Vec<Value> = env
            .list(api, kind, c)
            .await
            .into_iter()
            .filter(|o| o["metadata"]["ownerReferences"].is_array())
            .collect();
        assert!(owned.is_empty(), "no {kind} built in team-c: {owned:?}");
    }
    let m = get(&http, "/metrics").1;
    assert!(
        !m.contains(&format!(r#"namespace="{c}""#)),
        "no series for team-c: {m}"
    );
    // The chart has no Role in team-c, so the checks above would hold even if the operator
    // ignored `--namespaces` (its requests there refused). The audit log shows that the flag
    // filters: the release's ServiceAccount made no request at all in team-c, none cluster-wide
    // (all namespaces), and the API server refused it nothing; it did work team-a and team-b.
    let now = env.mark().await;
    let requests = count(requests_between(
        env.cp,
        &mark,
        &now,
        &ops.release.identity.username(),
    ));
    assert!(
        requests.forbidden().is_empty(),
        "refused: {:?}",
        requests.forbidden()
    );
    let in_c: Vec<_> = requests.log.iter().filter(|r| r.namespace == *c).collect();
    assert!(in_c.is_empty(), "requests in team-c: {in_c:?}");
    let cluster_wide: Vec<_> = requests
        .log
        .iter()
        .filter(|r| r.namespace.is_empty())
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "requests across all namespaces: {cluster_wide:?}"
    );
    for ns in [a, b] {
        assert!(
            requests
                .log
                .iter()
                .any(|r| r.namespace == *ns && r.verb == "watch"),
            "no watch in {ns}: {:?}",
            requests.log
        );
    }
    op.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_the_other_takes_over_when_it_dies() {
    // Two pods of ONE release (replicas: 2): the same ServiceAccount, the Deployment's
    // arguments (`--leader-election --lease-namespace=<release namespace>`), their own names.
    let ops = Ops::start("replicas", 2).await;
    let (env, ns) = (&ops.env, ops.env.ns.as_str());
    let lease_ns = ops.release.namespace().to_owned();
    let lease_ns = lease_ns.as_str();
    let args = ops.release.args();
    assert!(
        args.contains(&"--leader-election".to_owned())
            && args.contains(&format!("--lease-namespace={lease_ns}")),
        "{args:?}"
    );
    let mark = env.mark().await;
    let mut a = ops.spawn("op-a", &[]);
    let a_http = a.http_addr().await;
    a.wait_ready(&a_http).await;
    assert_eq!(holder(env, lease_ns).await.as_deref(), Some("op-a"));
    let b = ops.spawn("op-b", &[]);
    let b_http = b.http_addr().await;
    eventually("b stands by, ready", LONG, || {
        let r = get(&b_http, "/readyz");
        (r == (200, "standby: another replica leads\n".into()))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));

    // Only the leader reconciles.
    env.insert(instance(ns, "vectors")).await.unwrap();
    until_ok("reconciled", LONG, || async move {
        let sq = env
            .get(GROUP_VERSION, "SecureQdrant", ns, "vectors")
            .await
            .unwrap_or_default();
        sq["status"]["observedGeneration"]
            .as_i64()
            .ok_or(sq.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail()));
    let reconciles = |http: &str| {
        sample(
            &get(http, "/metrics").1,
            r#"secure_qdrant_reconciles_total{controller="secureqdrant"}"#,
        )
        .unwrap_or(-1.0)
    };
    assert!(reconciles(&a_http) >= 1.0);
    assert_eq!(reconciles(&b_http), 0.0, "the standby reconciled");
    assert!(
        !b.log().contains("starting the SecureQdrant"),
        "{}",
        b.log()
    );

    // The leader dies without releasing: b takes over after the Lease expires (15 s).
    let killed = Instant::now();
    a.kill();
    let took = until_ok("b leads", Duration::from_secs(25), || async move {
        let h = holder(env, lease_ns).await;
        (h.as_deref() == Some("op-b"))
            .then(|| killed.elapsed())
            .ok_or(format!("holder {h:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));
    assert!(took <= Duration::from_secs(20), "took {took:?}");
    assert!(
        took >= Duration::from_secs(10),
        "took over after {took:?}: too early"
    );
    eventually("b reconciles", LONG, || {
        let n = reconciles(&b_http);
        (n >= 1.0).then_some(()).ok_or(n.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));
    assert_eq!(get(&b_http, "/readyz"), (200, "leader: ready\n".into()));
    assert_eq!(transitions(env, lease_ns).await, 1, "one change of holder");
    b.assert_clean();

    // The audit log: both replicas worked the Lease as the chart's ServiceAccount, in the release
    // namespace only, and the chart's RBAC refused nothing.
    let now = env.mark().await;
    let requests = count(requests_between(
        env.cp,
        &mark,
        &now,
        &ops.release.identity.username(),
    ));
    assert!(
        requests.forbidden().is_empty(),
        "refused: {:?}",
        requests.forbidden()
    );
    let lease_calls: Vec<_> = requests
        .log
        .iter()
        .filter(|r| r.resource == LEASES)
        .collect();
    assert!(
        requests.get("create", LEASES) == 1 && requests.get("update", LEASES) >= 1,
        "{lease_calls:?}"
    );
    assert!(
        lease_calls
            .iter()
            .all(|r| r.namespace == lease_ns && r.name == LEASE_NAME),
        "{lease_calls:?}"
    );
    let writers: Vec<_> = env
        .cp
        .audit_events()
        .into_iter()
        .filter_map(|e| real_server::request_of(&e))
        .map(|(_, r)| r)
        .filter(|r| r.resource == LEASES && r.namespace == lease_ns && r.verb != "get")
        .filter(|r| r.user != ops.release.identity.username())
        .collect();
    assert!(
        writers.is_empty(),
        "the Lease was written by someone else: {writers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_exits_non_zero() {
    let ops = Ops::start("lose-lease", 2).await;
    let lease_ns = ops.release.namespace().to_owned();
    let mut op = ops.spawn("op-a", &[]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    assert_eq!(holder(&ops.env, &lease_ns).await.as_deref(), Some("op-a"));
    // As admin: a human, or a process outside the chart's RBAC.
    let api: Api<Lease> = Api::namespaced(ops.env.admin.clone(), &lease_ns);
    steal(&api, "intruder").await;
    let status = op
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running\n{}", op.log_tail()));
    assert_eq!(status.code(), Some(1), "{}", op.log_tail());
    assert!(op.log().contains("lost the Lease"), "{}", op.log_tail());
    assert_eq!(
        holder(&ops.env, &lease_ns).await.as_deref(),
        Some("intruder")
    );
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A test's world for the binary: its namespace and fault proxy (`env`), and a release of the
/// chart (`release`) whose ServiceAccount every operator process of the test authenticates as.
struct Ops {
    env: Env,
    release: Release,
    dir: TempDir,
}

impl Ops {
    /// A fresh namespace, and a release of the chart with `replicas` (2: leader election on)
    /// watching only that namespace.
    async fn start(prefix: &str, replicas: u32) -> Ops {
        let env = Env::namespaced(prefix).await;
        let watch = vec![env.ns.clone()];
        Ops::with_env(env, replicas, watch).await
    }

    async fn with_env(env: Env, replicas: u32, watch: Vec<String>) -> Ops {
        let release = Release::install(&env, replicas, &watch).await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("kubeconfig"),
            release.identity.kubeconfig(env.cp, &env.proxy.url()),
        )
        .expect("kubeconfig written");
        Ops { env, release, dir }
    }

    /// Starts a replica of the release as pod `name`, JSON logs, endpoints on a port the kernel
    /// picks.
    fn spawn(&self, name: &str, args: &[&str]) -> Operator {
        self.spawn_with(name, args, &[])
    }

    /// The chart's Deployment's arguments, then `args`; the pod's name in `POD_NAME` (as the
    /// chart sets it); the release's ServiceAccount through the test's proxy.
    fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Operator {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        let mut cmd = Command::new(OPERATOR);
        cmd.args(["run", "--log-format", "json"]);
        if !args.contains(&"--http-addr") {
            cmd.args(["--http-addr", "127.0.0.1:0"]);
        }
        cmd.args(self.release.args())
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("POD_NAME", name)
            .env_remove("LOG_LEVEL")
            .env_remove("LOG_FORMAT")
            .env_remove("HTTP_ADDR")
            .env_remove("WATCH_NAMESPACES")
            .env_remove("LEADER_ELECTION")
            .env_remove("LEASE_NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .env_remove("CLUSTER_DOMAIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // The operator dies with the thread that started it, even when this test binary is
        // killed and Drop never runs.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Operator {
            child: cmd.spawn().expect("operator binary starts"),
            log,
            exited: None,
        }
    }
}

/// The operator process; killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Operator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The address of the endpoints, from the "serving" log line.
    async fn http_addr(&self) -> String {
        eventually("the endpoints' address in the log", LONG, || {
            self.log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("serving /metrics"))
                })
                .and_then(|v| v["addr"].as_str().map(str::to_owned))
                .ok_or_else(|| "not yet".to_owned())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// The address of the endpoints, from /proc (for a process that does not log it): its one
    /// listening socket.
    async fn listening_addr(&self) -> String {
        let pid = self.child.id();
        eventually("the endpoints' listening socket", LONG, || {
            listening_on_loopback(pid)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    async fn wait_ready(&self, http: &str) {
        eventually("/readyz 200", LONG, || {
            let (code, body) = get(http, "/readyz");
            (code == 200).then_some(()).ok_or(format!("{code} {body}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    async fn wait_log(&self, needle: &str) {
        eventually(needle, LONG, || {
            self.log()
                .contains(needle)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    /// SIGTERM, then waits up to `within` for the exit.
    async fn terminate(&mut self, within: Duration) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit(within)
            .await
            .unwrap_or_else(|| panic!("no exit within {within:?} of SIGTERM\n{}", self.log_tail()))
    }

    /// Polls for the exit without blocking the runtime's worker.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    fn assert_running(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
        assert!(self.exited.is_none(), "the operator exited");
    }

    /// Running, and no ERROR line (for tests without injected faults).
    fn assert_clean(&self) {
        self.assert_running();
        let log = self.log();
        assert!(
            !log.contains("\"level\":\"ERROR\""),
            "errors logged:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.kill();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// `GET path` over HTTP/1.1: (status, body). (0, error) when the connection fails.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request written");
    let mut raw = String::new();
    if let Err(e) = stream.read_to_string(&mut raw) {
        return (0, e.to_string());
    }
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The value of the series written exactly as `series` (name and labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn unix(v: &Value) -> Option<i64> {
    v.as_str()?.parse::<Timestamp>().ok().map(|t| t.as_second())
}

fn instance(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "SecureQdrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {},
    })
}

fn token(ns: &str, name: &str, instance: &str) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "QdrantAccessToken",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"qdrantRef": {"name": instance}, "access": {"global": "r"}},
    })
}

/// Polls `check` every 50 ms until it returns Ok, or returns its last error after `timeout`.
async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{what}: not within {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<()>) {
    eventually(what, timeout, || check().ok_or_else(String::new))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `eventually` for checks that ask the API server (polled every 200 ms).
async fn until_ok<T, F, Fut>(what: &str, limit: Duration, check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    control_plane::eventually(limit, check)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// `until_ok`, panicking with its error.
async fn until<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    until_ok(what, limit, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
