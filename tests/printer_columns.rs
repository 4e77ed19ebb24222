//! What `kubectl get sq` shows, read from the real API server's Table output (the CRD's
//! printer columns applied to the stored object by apiextensions-apiserver) and from kubectl
//! itself (built from the same Kubernetes module), after the operator binary's reconciles on
//! the real control plane (the real StatefulSet controller and kwok report the pods): a refused
//! scale-down shows the replicas asked for beside the pods that still run.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/real_server.rs"]
mod real_server;

use std::time::Duration;

use control_plane::eventually;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};
use real_server::Env;
use serde_json::{Value, json};

use secure_qdrant_operator::crd::SecureQdrant;

const NAME: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";

/// Scheduling, PVCs, kwok and the operator's reconciles on a loaded machine.
const WITHIN: Duration = Duration::from_secs(180);

/// A SecureQdrant's Table as the API server renders it for `kubectl get sq`.
struct Table {
    columns: Vec<String>,
    types: Vec<String>,
    cells: Vec<Value>,
}

impl Table {
    /// The cell under `column`.
    fn cell(&self, column: &str) -> &Value {
        let i = self
            .columns
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.columns));
        &self.cells[i]
    }
}

/// `kubectl get sq` as a Table (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the
/// column names and types, and the cells of the one row.
async fn table(client: &Client, ns: &str) -> Result<Table, String> {
    let request = http::Request::get(format!(
        "/apis/secureqdrant.dev/v1alpha1/namespaces/{ns}/secureqdrants"
    ))
    .header(
        http::header::ACCEPT,
        "application/json;as=Table;g=meta.k8s.io;v=v1",
    )
    .body(Vec::new())
    .expect("a request");
    let table: Value = client.request(request).await.map_err(|e| e.to_string())?;
    if table["kind"] != "Table" {
        return Err(format!("not a Table: {table}"));
    }
    let definitions = table["columnDefinitions"]
        .as_array()
        .ok_or("no column definitions")?;
    let field = |f: &str| -> Vec<String> {
        definitions
            .iter()
            .map(|c| c[f].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let cells = table["rows"][0]["cells"]
        .as_array()
        .ok_or_else(|| format!("no row: {table}"))?
        .clone();
    Ok(Table {
        columns: field("name"),
        types: field("type"),
        cells,
    })
}

/// Waits until the Table's row satisfies `ok`; returns it.
async fn table_when(env: &Env, what: &str, ok: impl Fn(&Table) -> bool) -> Table {
    let ok = &ok;
    eventually(WITHIN, || async move {
        let t = table(&env.admin, &env.ns).await?;
        if ok(&t) {
            Ok(t)
        } else {
            Err(format!("{what}: {:?} {:?}", t.columns, t.cells))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scale_down_shows_the_desired_count_beside_the_pods_that_run() {
    let env = Env::namespaced("columns").await;
    let op = env.start_namespaced_operator().await;
    env.insert(json!({
        "apiVersion": SQ_API, "kind": "SecureQdrant",
        "metadata": {"name": NAME},
        "spec": {"replicas": 3, "tls": {"enabled": false}},
    }))
    .await
    .expect("SecureQdrant inserted");
    // The real StatefulSet controller reports 3 pods, all ready (kwok plays the kubelet).
    let t = table_when(&env, "3 pods ready", |t| t.cell("Phase") == "Ready").await;
    assert_eq!(
        t.columns,
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
    assert_eq!(t.cell("Phase"), "Ready");
    for column in ["Desired", "Current", "Ready"] {
        assert_eq!(t.cell(column), 3, "{column}");
    }

    // Scale-down to 1: refused, the three pods keep running.
    Api::<SecureQdrant>::namespaced(env.admin.clone(), &env.ns)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("spec patched");
    let t = table_when(&env, "the scale-down refused", |t| {
        t.cell("Phase") == "Degraded"
    })
    .await;
    let sts = env
        .get("apps/v1", "StatefulSet", &env.ns, NAME)
        .await
        .expect("the StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3, "the scale-down was applied");
    assert_eq!(t.cell("Phase"), "Degraded");
    assert_eq!(t.cell("Desired"), 1, "spec.replicas");
    assert_eq!(t.cell("Current"), 3, "pods that run");
    assert_eq!(t.cell("Ready"), 3, "pods that are ready");
    // What kubectl prints from that Table.
    let (ok, out, err) = env
        .cp
        .kubectl(&["get", "sq", NAME, "-n", &env.ns, "--no-headers"]);
    assert!(ok, "kubectl get sq: {err}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[..5], [NAME, "Degraded", "1", "3", "3"], "{out}");
    drop(op);
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
    let env = Env::namespaced("expiry").await;
    let _op = env.start_namespaced_operator().await;
    env.insert(json!({
        "apiVersion": SQ_API, "kind": "SecureQdrant",
        "metadata": {"name": NAME},
        "spec": {"replicas": 1},
    }))
    .await
    .expect("SecureQdrant inserted");
    let not_after = eventually(WITHIN, || async {
        let sq = env
            .get(SQ_API, "SecureQdrant", &env.ns, NAME)
            .await
            .ok_or("no SecureQdrant")?;
        sq["status"]["certificate"]["notAfter"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no status.certificate.notAfter yet: {}", sq["status"]))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let expires: k8s_openapi::jiff::Timestamp = not_after.parse().expect("RFC 3339");
    assert!(expires > k8s_openapi::jiff::Timestamp::now(), "{not_after}");

    let t = table(&env.admin, &env.ns).await.expect("a Table");
    let i = t.columns.iter().position(|c| c == "Cert-Expiry").unwrap();
    // The real API server renders `date` cells as `<invalid>` in the future.
    assert_ne!(t.cells[i], "<invalid>");
    assert_eq!(t.cell("Cert-Expiry"), &json!(not_after));
    assert_eq!(t.types[i], "string");
    // And `kubectl get sq` prints it as it is.
    let (ok, out, err) = env
        .cp
        .kubectl(&["get", "sq", NAME, "-n", &env.ns, "--no-headers"]);
    assert!(ok, "kubectl get sq: {err}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.get(5), Some(&not_after.as_str()), "{out}");
}
