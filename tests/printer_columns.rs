//! What `kubectl get sq` shows, read from the in-memory API server's Table output (the CRD's
//! printer columns applied to the stored object), after the operator's real reconciles: a
//! refused scale-down shows the replicas asked for beside the pods that still run.

#[path = "support/in_process.rs"]
mod in_process;

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};
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
    let (columns, cells, _) = table_with_types(client).await;
    (columns, cells)
}

/// `kubectl get sq` as a Table: the column names, the cells of the one row, and the column
/// types.
async fn table_with_types(client: &Client) -> (Vec<String>, Vec<Value>, Vec<String>) {
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
    let types = table["columnDefinitions"]
        .as_array()
        .expect("column definitions")
        .iter()
        .map(|c| c["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    let cells = table["rows"][0]["cells"]
        .as_array()
        .expect("one row")
        .clone();
    (columns, cells, types)
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

/// How the API server renders a printer column cell of `type_` for the JSON `value`
/// (apiextensions-apiserver's table convertor): a `date` is the time elapsed since it, in
/// apimachinery's `duration.HumanDuration`, which refuses a time more than a second in the
/// future with `<invalid>`; a `string` is shown as it is.
fn real_cell(type_: &str, value: &str, now: k8s_openapi::jiff::Timestamp) -> String {
    match type_ {
        "date" => {
            let t: k8s_openapi::jiff::Timestamp = value.parse().expect("an RFC 3339 time");
            let seconds = now.as_second() - t.as_second();
            if seconds < -1 {
                "<invalid>".to_owned()
            } else {
                format!("{}s ago (a duration)", seconds.max(0))
            }
        }
        "string" => value.to_owned(),
        other => panic!("no {other} column expected here"),
    }
}

#[test]
fn no_date_column_points_at_a_time_in_the_future() {
    let crd = serde_json::to_value(SecureQdrant::crd()).expect("the CRD serializes");
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .clone();
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .clone()
    };
    let expiry = column("Cert-Expiry");
    assert_eq!(expiry["type"], "string", "{expiry}");
    assert_eq!(expiry["jsonPath"], ".status.certificate.notAfter");
    // A certificate that expires in 90 days reads as its time, not `<invalid>`.
    let now: k8s_openapi::jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let not_after = "2030-04-01T00:00:00Z";
    assert_eq!(
        real_cell(expiry["type"].as_str().unwrap(), not_after, now),
        not_after
    );
    assert_eq!(real_cell("date", not_after, now), "<invalid>", "the defect");
    // Every date column shows a time in the past: only the creation time.
    let dates: Vec<&Value> = columns.iter().filter(|c| c["type"] == "date").collect();
    assert_eq!(dates.len(), 1, "{dates:?}");
    assert_eq!(dates[0]["jsonPath"], ".metadata.creationTimestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_expiry_shows_the_time_the_certificate_expires() {
    let env = Env::start().await;
    env.server
        .insert(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"replicas": 1},
        }))
        .expect("SecureQdrant inserted");
    env.reconcile().await;
    let sq = env
        .server
        .get(SQ_API, "SecureQdrant", NS, NAME)
        .expect("the SecureQdrant");
    let not_after = sq["status"]["certificate"]["notAfter"]
        .as_str()
        .expect("status.certificate.notAfter")
        .to_owned();
    let expires: k8s_openapi::jiff::Timestamp = not_after.parse().expect("RFC 3339");
    assert!(expires > k8s_openapi::jiff::Timestamp::now(), "{not_after}");

    let (columns, cells, types) = table_with_types(&env.client).await;
    let i = columns.iter().position(|c| c == "Cert-Expiry").unwrap();
    // The in-memory server renders `date` cells as Kubernetes does (`<invalid>` in the future).
    assert_ne!(cells[i], "<invalid>");
    assert_eq!(cell(&columns, &cells, "Cert-Expiry"), &json!(not_after));
    assert_eq!(types[i], "string");
}
