//! The StatefulSet cache holds only what the operator reads (issue 16, step 4:
//! `src/statefulset_view.rs`), on the real control plane (tests/support/control_plane.rs): the
//! REAL operator binary watching the test's namespace, a `minimal` instance whose pod the real
//! StatefulSet controller creates and kwok makes ready.
//!
//! - A StatefulSet as the real API server returns it decodes into the view with exactly the
//!   fields the operator reads (`RECORD_STATEFULSET=path` writes it out: the recorded copy the
//!   unit tests of `src/statefulset_view.rs` read).
//! - Someone else's edit of the StatefulSet's spec, a part the view keeps (`/scale` replicas) or
//!   not (the container image), is restored within one reconcile: one read and one write of the
//!   StatefulSet, no other child written; also when the edit was made while the operator was
//!   down.
//! - The StatefulSet controller's status writes (a pod replaced) cost no request on the
//!   StatefulSet.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/real_server.rs"]
mod real_server;

use std::time::Duration;

use control_plane::{Operator, eventually_or_panic};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use real_server::{Counters, Env, Mark};
use serde_json::{Value, json};

use secure_qdrant_operator::crd::{Phase, SecureQdrant};
use secure_qdrant_operator::statefulset_view::StatefulSetView;

const SQ: &str = "vectors";
/// Generous: the machine is shared and loaded.
const WITHIN: Duration = Duration::from_secs(240);
/// The container the operator builds.
const CONTAINER: &str = "qdrant";

/// A namespace, the operator binary watching it, and `vectors` (every default but the replicas)
/// Ready.
struct World {
    env: Env,
    op: Option<Operator>,
    replicas: i32,
}

impl World {
    async fn start(prefix: &str, replicas: i32) -> World {
        let env = Env::namespaced(prefix).await;
        let op = env.start_namespaced_operator().await;
        env.create_instance(SQ, json!({"replicas": replicas})).await;
        let w = World {
            env,
            op: Some(op),
            replicas,
        };
        w.wait_ready().await;
        w
    }

    fn op(&self) -> &Operator {
        self.op.as_ref().expect("an operator runs")
    }

    fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.env.admin.clone(), &self.env.ns)
    }

    async fn wait<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        eventually_or_panic(WITHIN, what, f, || self.op().log_tail()).await
    }

    /// Ready, every pod ready, and the StatefulSet rolled out.
    async fn wait_ready(&self) {
        let replicas = self.replicas;
        let sqs = Api::<SecureQdrant>::namespaced(self.env.admin.clone(), &self.env.ns);
        let sts = self.statefulsets();
        self.wait("the instance Ready and its StatefulSet rolled out", || {
            let (sqs, sts) = (sqs.clone(), sts.clone());
            async move {
                let sq = sqs.get(SQ).await.map_err(|e| e.to_string())?;
                let status = sq.status.clone().unwrap_or_default();
                let s = sts.get(SQ).await.map_err(|e| e.to_string())?;
                let st = s.status.clone().unwrap_or_default();
                let ready = status.phase == Some(Phase::Ready)
                    && status.observed_generation == sq.metadata.generation
                    && st.observed_generation == s.metadata.generation
                    && status.ready_replicas == Some(replicas)
                    && st.ready_replicas == Some(replicas)
                    && st.replicas == replicas
                    && st.current_revision == st.update_revision;
                ready
                    .then_some(())
                    .ok_or_else(|| format!("status {status:?}, StatefulSet {st:?}"))
            }
        })
        .await;
    }

    /// The operator's requests since `mark` (its own identity, from the audit log).
    async fn counters_since(&self, mark: &Mark) -> Counters {
        self.env.counters_of(mark, &[self.op().username()]).await
    }

    /// Waits until the operator has written nothing for a few seconds; returns a mark then.
    async fn quiet(&self) -> Mark {
        self.wait("the operator idle", || async {
            let mark = self.env.mark().await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            let c = self.counters_since(&mark).await;
            (c.writes() == 0)
                .then_some(mark)
                .ok_or_else(|| format!("writes: {:?}", c.log))
        })
        .await
    }

    /// After an edit of the StatefulSet by someone else (since `mark`): once `restored` holds
    /// and the operator is idle again, what it did.
    async fn repaired(&self, mark: &Mark, restored: impl Fn(&StatefulSet) -> bool) -> Counters {
        let sts = self.statefulsets();
        let restored = &restored;
        self.wait("the StatefulSet restored", || {
            let sts = sts.clone();
            async move {
                let s = sts.get(SQ).await.map_err(|e| e.to_string())?;
                restored(&s)
                    .then_some(())
                    .ok_or_else(|| format!("{:?}", s.spec))
            }
        })
        .await;
        self.quiet().await;
        self.counters_since(mark).await
    }

    /// Someone else sets the container's image of the StatefulSet to one the operator did not
    /// build.
    async fn edit_image(&self) {
        self.statefulsets()
            .patch(
                SQ,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": CONTAINER, "image": "docker.io/qdrant/qdrant:v0.0.1-edited"}
                ]}}}})),
            )
            .await
            .expect("image edited by someone else");
    }

    /// [`World::repaired`] for an image edit: the `built` image is back, written two
    /// generations after `before` (the edit, then the repair).
    async fn image_restored(&self, mark: &Mark, built: &str, before: Option<i64>) -> Counters {
        self.repaired(mark, |s| {
            image_of(s).as_deref() == Some(built) && s.metadata.generation >= before.map(|g| g + 2)
        })
        .await
    }

    /// The requests counted, and the operator's log lines about the StatefulSet, for messages.
    fn explain(&self, c: &Counters) -> String {
        let log = self.op().log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("StatefulSet") || l.contains("409"))
            .collect();
        format!("{:?}\noperator log:\n{}", c.log, lines.join("\n"))
    }
}

/// The operator's requests on the StatefulSet since the edit: one read, one write. (The repair
/// is guarded by the uid it read, not its resourceVersion: the StatefulSet controller's status
/// writes, frequent right after an edit, do not fail it.)
fn assert_read_once_written_once(w: &World, c: &Counters) {
    let sts: Vec<(&str, u16)> = c
        .log
        .iter()
        .filter(|r| r.resource == "statefulsets.apps" && r.name == SQ)
        .map(|r| (r.verb.as_str(), r.code))
        .collect();
    assert_eq!(sts, [("get", 200), ("patch", 200)], "{}", w.explain(c));
}

/// The writes of the operator to children other than the StatefulSet.
fn other_child_writes(c: &Counters) -> Vec<String> {
    c.log
        .iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .filter(|r| {
            !r.resource.starts_with("statefulsets.apps")
                && !r.resource.starts_with("secureqdrants.")
                && !r.resource.starts_with("events")
        })
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
        .collect()
}

fn image_of(s: &StatefulSet) -> Option<String> {
    s.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .image
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_statefulset_decodes_into_what_the_operator_reads() {
    let w = World::start("sts-view", 1).await;
    let json: Value = w
        .env
        .get("apps/v1", "StatefulSet", &w.env.ns, SQ)
        .await
        .expect("the StatefulSet");
    if let Ok(path) = std::env::var("RECORD_STATEFULSET") {
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).expect("recorded");
    }
    let full: StatefulSet = serde_json::from_value(json.clone()).unwrap();
    let view: StatefulSetView = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(view.metadata, full.metadata);
    let (spec, full_spec) = (view.spec.unwrap(), full.spec.unwrap());
    assert_eq!(spec.replicas, Some(1));
    let annotations = spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(
        Some(&annotations),
        full_spec.template.metadata.unwrap().annotations.as_ref()
    );
    assert!(
        annotations.contains_key(secure_qdrant_operator::tls::TLS_FINGERPRINT_ANNOTATION),
        "{annotations:?}"
    );
    let claims = spec.volume_claim_templates.unwrap();
    let claim = claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("storage"));
    let claim = claim.expect("the storage claim").spec.clone().unwrap();
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"].0,
        "10Gi"
    );
    let (status, full_status) = (view.status.unwrap(), full.status.unwrap());
    assert_eq!(status.replicas, full_status.replicas);
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(status.updated_replicas, full_status.updated_replicas);
    assert!(status.current_revision.is_some());
    assert_eq!(status.current_revision, full_status.current_revision);
    assert_eq!(status.update_revision, full_status.update_revision);
    assert_eq!(status.observed_generation, full.metadata.generation);
    // Nothing else: the pod spec, selector, strategies, other status fields are not decoded.
    let kept = serde_json::to_value(StatefulSetView {
        metadata: Default::default(),
        ..serde_json::from_value(json).unwrap()
    })
    .unwrap();
    assert_eq!(
        kept["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["replicas", "template", "volumeClaimTemplates"]
    );
    assert_eq!(
        kept["spec"]["template"],
        json!({"metadata": {"annotations": annotations}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_edit_of_the_statefulset_is_restored_within_one_reconcile() {
    // Scaled down by someone else (a scale-up is a scale-down for the operator to undo: it
    // waits for the acknowledgment of the removed peers, README "The API").
    let w = World::start("sts-scale", 2).await;
    let mark = w.quiet().await;
    let before = w.statefulsets().get(SQ).await.unwrap().metadata.generation;
    w.statefulsets()
        .patch_scale(
            SQ,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scaled by someone else");
    let c = w
        .repaired(&mark, |s| {
            // Edited, then written back: two generations later.
            s.spec.as_ref().and_then(|s| s.replicas) == Some(2)
                && s.metadata.generation >= before.map(|g| g + 2)
        })
        .await;
    // Seen through its field manager (the `/scale` entry), read, applied again.
    assert_read_once_written_once(&w, &c);
    assert_eq!(other_child_writes(&c), Vec::<String>::new());
    w.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_edit_of_the_statefulset_is_restored_within_one_reconcile() {
    let w = World::start("sts-image", 1).await;
    let mark = w.quiet().await;
    let sts = w.statefulsets().get(SQ).await.unwrap();
    let (built, before) = (image_of(&sts).expect("an image"), sts.metadata.generation);
    w.edit_image().await;
    let c = w.image_restored(&mark, &built, before).await;
    // The pod spec is not cached: the edit is seen through its field manager, read, and applied
    // again.
    assert_read_once_written_once(&w, &c);
    assert_eq!(other_child_writes(&c), Vec::<String>::new());
    w.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_edit_made_while_the_operator_was_down_is_restored_at_its_start() {
    let mut w = World::start("sts-restart", 1).await;
    w.quiet().await;
    let sts = w.statefulsets().get(SQ).await.unwrap();
    let (built, before) = (image_of(&sts).expect("an image"), sts.metadata.generation);
    // SIGKILL; the cache and the memory of verified versions go with the process.
    drop(w.op.take());
    w.edit_image().await;
    let mark = w.env.mark().await;
    w.op = Some(w.env.start_namespaced_operator().await);
    let c = w.image_restored(&mark, &built, before).await;
    // The first reconcile of the new process: the StatefulSet, flagged from its listed managed
    // fields, is read and applied again; nothing else is written.
    assert_read_once_written_once(&w, &c);
    assert_eq!(other_child_writes(&c), Vec::<String>::new());
    w.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statefulset_controllers_status_writes_cost_no_read() {
    use k8s_openapi::api::core::v1::Pod;
    let w = World::start("sts-churn", 1).await;
    let mark = w.quiet().await;
    // The pod goes: the StatefulSet controller makes a new one and reports it (status writes
    // only, each a watch event of the operator's StatefulSet cache).
    let pods: Api<Pod> = Api::namespaced(w.env.admin.clone(), &w.env.ns);
    let pod = format!("{SQ}-0");
    let old = pods.get(&pod).await.expect("pod 0").metadata.uid;
    let before = w.statefulsets().get(SQ).await.unwrap().metadata;
    pods.delete(&pod, &Default::default())
        .await
        .expect("pod deleted");
    w.wait("a new pod 0", || {
        let (pods, pod, old) = (pods.clone(), pod.clone(), old.clone());
        async move {
            let p = pods.get(&pod).await.map_err(|e| e.to_string())?;
            (p.metadata.uid != old)
                .then_some(())
                .ok_or_else(|| "the old pod".to_owned())
        }
    })
    .await;
    w.wait_ready().await;
    w.quiet().await;
    let after = w.statefulsets().get(SQ).await.unwrap().metadata;
    assert_eq!(after.generation, before.generation, "the spec is as it was");
    assert_ne!(
        after.resource_version, before.resource_version,
        "its status was written"
    );
    let c = w.counters_since(&mark).await;
    let sts: Vec<String> = c
        .log
        .iter()
        .filter(|r| r.resource.starts_with("statefulsets.apps"))
        .map(|r| format!("{} {}", r.verb, r.code))
        .collect();
    assert_eq!(sts, Vec::<String>::new(), "{}", w.explain(&c));
    assert_eq!(other_child_writes(&c), Vec::<String>::new());
}
