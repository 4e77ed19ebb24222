//! What `kubectl get sq` shows, read from the in-memory API server's Table output (the CRD's
//! printer columns applied to the stored object), after the operator's real reconciles: a
//! refused scale-down shows the replicas asked for beside the pods that still run.

#[path = "support/in_process.rs"]
mod in_process;

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::time::Instant;

use in_process::{cached_versions, client_for, managed_stores, versions};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::events::Events;
use secure_qdrant_operator::reconcile::{self, Context};
use secure_qdrant_operator::settings::Settings;

const NS: &str = "search";
const NAME: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";

/// `kubectl get sq` as a Table: the column names, and the cells of the one row.
async fn table(client: &Client) -> (Vec<String>, Vec<Value>) {
    let request = http::Request::get(format!(
        "/apis/secureqdrant.dev/v1alpha1/namespaces/{NS}/secureqdrants"
    ))
    .header(
        http::header::ACCEPT,
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .body(Vec::new())
    .expect("a request");
    let table: Value = client.request(request).await.expect("a Table");
    assert_eq!(table["kind"], "Table", "{table}");
    let columns = table["columnDefinitions"]
        .as_array()
        .expect("column definitions")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let cells = table["rows"][0]["cells"]
        .as_array()
        .expect("one row")
        .clone();
    (columns, cells)
}

/// The cell under `column`.
fn cell<'a>(columns: &[String], cells: &'a [Value], column: &str) -> &'a Value {
    let i = columns
        .iter()
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no column {column} in {columns:?}"));
    &cells[i]
}

struct Env {
    server: FakeApiServer,
    client: Client,
    ctx: Arc<Context>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Env {
    async fn start() -> Env {
        let server = in_process::server_with_crds().await;
        let client = client_for(&server).await;
        let mut tasks = Vec::new();
        let stores = managed_stores(&client, &mut tasks);
        let (events, _) = Events::memory();
        let ctx = Context::new(client.clone(), stores, events, Settings::default());
        Env {
            server,
            client,
            ctx: Arc::new(ctx),
            tasks,
        }
    }

    /// One reconcile, once the operator's StatefulSet cache shows what the server holds.
    async fn reconcile(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while versions(self.server.list("apps/v1", "StatefulSet", NS).into_iter())
            != cached_versions(&self.ctx.stores.statefulsets)
        {
            assert!(Instant::now() < deadline, "the cache did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sq: SecureQdrant = serde_json::from_value(
            self.server
                .get(SQ_API, "SecureQdrant", NS, NAME)
                .expect("the SecureQdrant"),
        )
        .expect("a SecureQdrant");
        reconcile::reconcile(Arc::new(sq), self.ctx.clone())
            .await
            .expect("the reconcile succeeds");
    }

    /// The StatefulSet controller and kubelet report `n` pods, all ready.
    fn statefulset_runs(&self, n: i64) {
        let sts = self
            .server
            .get("apps/v1", "StatefulSet", NS, NAME)
            .expect("the StatefulSet");
        self.server
            .set_status(
                "apps/v1",
                "StatefulSet",
                NS,
                NAME,
                json!({
                    "observedGeneration": sts["metadata"]["generation"],
                    "replicas": n, "readyReplicas": n, "updatedReplicas": n,
                    "currentReplicas": n, "availableReplicas": n,
                    "currentRevision": "r1", "updateRevision": "r1",
                }),
            )
            .expect("StatefulSet status set");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scale_down_shows_the_desired_count_beside_the_pods_that_run() {
    let env = Env::start().await;
    env.server
        .insert(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"replicas": 3, "tls": {"enabled": false}},
        }))
        .expect("SecureQdrant inserted");
    env.reconcile().await;
    env.statefulset_runs(3);
    env.reconcile().await;
    let (columns, cells) = table(&env.client).await;
    assert_eq!(
        columns,
        [
            "Name",
            "Phase",
            "Desired",
            "Current",
            "Ready",
            "Cert-Expiry",
            "Age"
        ]
    );
    assert_eq!(cell(&columns, &cells, "Phase"), "Ready");
    for column in ["Desired", "Current", "Ready"] {
        assert_eq!(cell(&columns, &cells, column), 3, "{column}");
    }

    // Scale-down to 1: refused, the three pods keep running.
    Api::<SecureQdrant>::namespaced(env.client.clone(), NS)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("spec patched");
    env.reconcile().await;
    let sts = env
        .server
        .get("apps/v1", "StatefulSet", NS, NAME)
        .expect("the StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3, "the scale-down was applied");
    let (columns, cells) = table(&env.client).await;
    assert_eq!(cell(&columns, &cells, "Phase"), "Degraded");
    assert_eq!(cell(&columns, &cells, "Desired"), 1, "spec.replicas");
    assert_eq!(cell(&columns, &cells, "Current"), 3, "pods that run");
    assert_eq!(cell(&columns, &cells, "Ready"), 3, "pods that are ready");
}
