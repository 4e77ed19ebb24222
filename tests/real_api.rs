//! The operator against a real Kubernetes control plane (tests/control-plane: etcd,
//! kube-apiserver with RBAC, Pod Security Admission and an audit log, kube-controller-manager,
//! kube-scheduler and kwok's fake nodes), built from Go modules. What these prove that the
//! in-memory API server cannot: the CRDs pass the real structural-schema and CEL cost checks and
//! `kubectl explain` lists every field; the chart's RBAC is enough (no 403 in the audit log, every
//! request of the operator made as the chart's ServiceAccount); the real StatefulSet controller's
//! pods are admitted under the "restricted" Pod Security Standard; the real garbage collector
//! removes the children and the real StatefulSet PVC retention keeps or drops the claims.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use control_plane::{ControlPlane, Operator, Scope, eventually};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PostParams};
use kube::{Api, Client, ResourceExt};
use secure_qdrant_operator::children::CHILD_KINDS;
use secure_qdrant_operator::crd::SecureQdrant;
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// A cluster-wide operator reconciles every namespace: while one runs, no other operator may
/// (tests with namespaced operators share the read side, cluster-wide ones take the write side).
static OPERATOR_SCOPE: RwLock<()> = RwLock::const_new(());

/// How long an instance may take to become Ready (scheduling, kwok, the StatefulSet's ordered
/// start of up to three pods).
const READY_WITHIN: Duration = Duration::from_secs(180);

fn sq_resource() -> ApiResource {
    ApiResource::erase::<SecureQdrant>(&())
}

fn secure_qdrants(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &sq_resource())
}

/// A child kind's API in `ns`.
fn child_api(client: &Client, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let lower = kind.to_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A SecureQdrant from a file of deploy/examples, moved to `ns`, named `name`.
fn example(file: &str, ns: &str, name: &str) -> Value {
    let text = control_plane::repo_file(format!("deploy/examples/{file}"));
    let mut v: Value = serde_yaml_ng::from_str(&text).expect("an example SecureQdrant");
    // The examples' own names (`vectors.search` in extraDnsNames) follow the rename: an
    // in-cluster name that is not the instance's own is refused.
    let (old_name, old_ns) = (
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    if let Some(names) = v["spec"]["tls"]["extraDnsNames"].as_array_mut() {
        for n in names {
            if n.as_str() == Some(&format!("{old_name}.{old_ns}")) {
                *n = json!(format!("{name}.{ns}"));
            }
        }
    }
    v["metadata"]["namespace"] = json!(ns);
    v["metadata"]["name"] = json!(name);
    v
}

/// The messages of the `FailedCreate` Events in a namespace: pods a controller could not create
/// (refused by admission, say).
async fn failed_creates(events: &Api<Event>) -> Result<Vec<String>, String> {
    Ok(events
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .map(|e| e.message.unwrap_or_default())
        .collect())
}

async fn create_sq(client: &Client, ns: &str, sq: &Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(sq.clone()).unwrap();
    secure_qdrants(client, ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("the API server refuses {}: {e}", sq["metadata"]["name"]))
}

/// Waits until the SecureQdrant `name` reports phase Ready; fails early on a FailedCreate event
/// (a pod refused by admission) in the namespace, or on a 403 for the operator in the audit log.
async fn wait_ready(client: &Client, ns: &str, name: &str, op: &Operator) -> DynamicObject {
    let cp = control_plane::get();
    let sqs = secure_qdrants(client, ns);
    let events = Api::<Event>::namespaced(client.clone(), ns);
    let user = format!("\"username\":\"{}\"", op.username());
    eventually(READY_WITHIN, || {
        let sqs = sqs.clone();
        let events = events.clone();
        let forbidden: Vec<String> = std::fs::read_to_string(&cp.state.audit_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&user) && l.contains("\"code\":403"))
            .map(str::to_owned)
            .collect();
        assert!(
            forbidden.is_empty(),
            "the chart's RBAC refuses the operator:\n{}",
            forbidden.join("\n")
        );
        async move {
            let refused = failed_creates(&events).await?;
            assert!(
                refused.is_empty(),
                "pods of {ns}/{name} refused: {refused:#?}"
            );
            let sq = sqs.get(name).await.map_err(|e| e.to_string())?;
            let phase = sq.data["status"]["phase"].as_str().unwrap_or_default();
            if phase == "Ready" {
                Ok(sq)
            } else {
                Err(format!("phase {phase:?}, status {}", sq.data["status"]))
            }
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{ns}/{name} not Ready: {e}\noperator log:\n{}",
            op.log_tail()
        )
    })
}

/// The pods of instance `name`, each Ready (kwok plays the kubelet).
async fn assert_pods_ready(client: &Client, ns: &str, name: &str, replicas: usize) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap();
    let ready = pods
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert_eq!(ready, replicas, "Ready pods of {ns}/{name}");
}

/// The audit log of the scenario: no request of the operator's user was refused, the operator
/// made requests (so the check is not vacuous), and no request with the operator's User-Agent
/// was made by anyone but a chart ServiceAccount.
fn assert_audit_clean(cp: &ControlPlane, op: &Operator) {
    let user = op.username();
    let events = cp.audit_events();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["user"]["username"] == user.as_str())
        .collect();
    let writes = mine
        .iter()
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "patch" | "update")))
        .count();
    assert!(
        writes > 0,
        "the audit log shows no write by {user}: the operator did not run as the ServiceAccount"
    );
    let refused: Vec<String> = mine
        .iter()
        .filter(|e| e["responseStatus"]["code"].as_u64() == Some(403))
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["verb"], e["objectRef"]["resource"], e["objectRef"]["namespace"], e["requestURI"]
            )
        })
        .collect();
    assert!(
        refused.is_empty(),
        "403 for {user} (the chart's RBAC misses these):\n{}",
        refused.join("\n")
    );
    // The operator's requests carry its User-Agent (the audit log omits an empty one, so without
    // it the check below would find nothing), and no request with it was made by anyone but a
    // chart ServiceAccount (`system:serviceaccount:sqo-*:sqo-*`: the releases of this binary's
    // tests, which run beside each other) — never admin.
    let agent = secure_qdrant_operator::cli::USER_AGENT;
    assert!(
        mine.iter().any(|e| e["userAgent"] == agent),
        "no request of {user} with the operator's User-Agent {agent:?} in the audit log"
    );
    let strangers: BTreeSet<String> = events
        .iter()
        .filter(|e| e["userAgent"] == agent)
        .filter_map(|e| e["user"]["username"].as_str())
        .filter(|u| {
            !u.strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(ns, sa)| ns.starts_with("sqo-") && sa.starts_with("sqo-"))
        })
        .map(str::to_owned)
        .collect();
    assert!(
        strangers.is_empty(),
        "requests with the operator's User-Agent ({agent:?}) made as {strangers:?}"
    );
}

/// Every field path of a CRD's schema: `spec.storage.size`, `spec.network.clients.podSelector`..
/// (array items are walked through; maps and preserved-unknown objects stop the walk).
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let schema = if schema["type"] == "array" {
        &schema["items"]
    } else {
        schema
    };
    if let Some(props) = schema["properties"].as_object() {
        for (name, sub) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.insert(path.clone());
            schema_paths(sub, &path, out);
        }
    }
}

/// The field paths of `kubectl explain --recursive` output (indentation is nesting).
fn explained_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut in_fields = false;
    for line in text.lines() {
        if line.starts_with("FIELDS:") {
            in_fields = true;
            continue;
        }
        if !in_fields || line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !line.contains('<') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path = match stack.last() {
            Some((_, p)) => format!("{p}.{name}"),
            None => name.to_owned(),
        };
        out.insert(path.clone());
        stack.push((indent, path));
    }
    out
}

#[tokio::test]
async fn crds_install_on_the_real_api_server_and_every_field_is_explained() {
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let text = control_plane::repo_file("crds/secure-qdrant-operator.yaml");
    let mut checked = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(doc).unwrap();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
        let group = crd["spec"]["group"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let v = version["name"].as_str().unwrap();
            let mut want = BTreeSet::new();
            schema_paths(&version["schema"]["openAPIV3Schema"], "", &mut want);
            want.retain(|p| p != "metadata" && !p.starts_with("metadata."));
            // The OpenAPI document of a new CRD is published shortly after it is Established.
            let explained = eventually(Duration::from_secs(60), || {
                let (ok, out, err) = cp.kubectl(&[
                    "explain",
                    plural,
                    "--api-version",
                    &format!("{group}/{v}"),
                    "--recursive",
                ]);
                async move { if ok { Ok(out) } else { Err(err) } }
            })
            .await
            .unwrap_or_else(|e| panic!("kubectl explain {plural}: {e}"));
            let got = explained_paths(&explained);
            let missing: Vec<&String> = want.difference(&got).collect();
            assert!(
                missing.is_empty(),
                "kubectl explain --recursive {plural} does not list {missing:#?}\n{explained}"
            );
            assert!(want.len() > 3, "{plural} has a schema with fields");
            checked += want.len();
        }
    }
    assert!(checked > 50, "only {checked} fields checked");
}

/// Runs each example that can run here to phase Ready with a namespaced operator (the chart's
/// `watchNamespaces` mode), in a namespace enforcing the "restricted" Pod Security Standard.
#[tokio::test]
async fn examples_reach_ready_with_admitted_pods_as_the_charts_service_account() {
    let _scope = OPERATOR_SCOPE.read().await;
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let ns = cp.namespace(&client, "examples").await;
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    // full.yaml's pods ask for this PriorityClass (the Priority admission plugin refuses them
    // without it).
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "vectors-high"},
        "value": 1000,
    }))
    .unwrap();
    Api::<PriorityClass>::all(client.clone())
        .patch(
            "vectors-high",
            &control_plane::apply_params(),
            &Patch::Apply(&pc),
        )
        .await
        .expect("PriorityClass vectors-high");
    // byo-secrets.yaml: the Secrets the user brings (a serving certificate from their CA and
    // the full-access API key).
    bring_own_secrets(&client, &ns, "byo").await;
    // full.yaml's image pull Secret, allowed for that instance by its owner.
    let pull: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "registry-credentials",
                     "labels": {"secureqdrant.dev/allowed-instance": "full"}},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\": {}}"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pull)
        .await
        .expect("Secret registry-credentials");
    let examples = [
        ("minimal.yaml", "minimal", 1),
        ("full.yaml", "full", 3),
        ("byo-secrets.yaml", "byo", 3),
    ];
    let files: BTreeSet<String> =
        std::fs::read_dir(control_plane::repo_file_path("deploy/examples"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".yaml"))
            .collect();
    let run: BTreeSet<String> = examples.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(files, run, "every example of deploy/examples runs here");
    for (file, name, _) in examples {
        create_sq(&client, &ns, &example(file, &ns, name)).await;
    }
    for (_, name, replicas) in examples {
        wait_ready(&client, &ns, name, &op).await;
        assert_pods_ready(&client, &ns, name, replicas).await;
    }
    assert_audit_clean(cp, &op);
    cp.delete_namespace(&client, &ns).await;
    cp.delete_namespace(&client, &op.namespace).await;
}

/// The Secrets byo-secrets.yaml refers to, for instance `name` in `ns`: `vectors-certificate`
/// (a kubernetes.io/tls Secret issued by a "corporate" CA for the instance's DNS names, valid 90
/// days) and `vectors-admin-key`.
async fn bring_own_secrets(client: &Client, ns: &str, name: &str) {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use secure_qdrant_operator::tls::{CaSubject, issue_ca, issue_leaf, serving_dns_names};
    let now = Timestamp::now();
    let ca = issue_ca(
        &CaSubject::new("pki", "corp"),
        SignedDuration::from_hours(24 * 365),
        now,
    )
    .unwrap();
    let names = serving_dns_names(name, ns, "cluster.local", &[]);
    let data = issue_leaf(&ca, &names, SignedDuration::from_hours(24 * 90), now)
        .unwrap()
        .to_secret_data(&[ca.cert().clone()]);
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    // Each opts in for the instance (secureqdrant.dev/allowed-instance), as its owner would.
    let allowed = std::collections::BTreeMap::from([(
        "secureqdrant.dev/allowed-instance".to_owned(),
        name.to_owned(),
    )]);
    let cert = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("vectors-certificate".to_owned()),
            labels: Some(allowed.clone()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vectors-admin-key", "labels": allowed},
        "stringData": {"api-key": "a-full-access-key-the-user-brings-0123456789"},
    }))
    .unwrap();
    for secret in [cert, key] {
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("Secret {:?}: {e}", secret.metadata.name));
    }
}

/// The same with the chart installed cluster-wide (ClusterRole and ClusterRoleBinding).
#[tokio::test]
async fn minimal_reaches_ready_with_a_cluster_wide_operator() {
    let _scope = OPERATOR_SCOPE.write().await;
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    // The namespaces earlier tests deleted may still be terminating, with their instances in
    // them: a cluster-wide operator would reconcile those and be refused (403, "being
    // terminated") writing there. Start it once they are gone.
    no_namespace_terminating(&client).await;
    let ns = cp.namespace(&client, "cluster-wide").await;
    let op = cp.start_operator(&client, Scope::ClusterWide).await;
    create_sq(&client, &ns, &example("minimal.yaml", &ns, "vectors")).await;
    wait_ready(&client, &ns, "vectors", &op).await;
    assert_pods_ready(&client, &ns, "vectors", 1).await;
    assert_audit_clean(cp, &op);
    cp.delete_namespace(&client, &ns).await;
    cp.delete_namespace(&client, &op.namespace).await;
}

/// Waits until no namespace is terminating.
async fn no_namespace_terminating(client: &Client) {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    eventually(Duration::from_secs(300), || {
        let api = api.clone();
        async move {
            let terminating: Vec<String> = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .filter(|n| {
                    n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
                })
                .map(|n| n.name_any())
                .collect();
            terminating
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("namespaces still terminating: {terminating:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Every object in `ns` of the operator's child kinds (and pods) owned, directly or through the
/// StatefulSet, by `uid`.
async fn owned_children(client: &Client, ns: &str, uid: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (api_version, kind) in CHILD_KINDS {
        let list = child_api(client, ns, api_version, kind)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {kind}: {e}"));
        let names: Vec<String> = list
            .items
            .iter()
            .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
            .map(|o| o.name_any())
            .collect();
        if !names.is_empty() {
            out.insert(kind.to_owned(), names);
        }
    }
    out
}

async fn claims_of(client: &Client, ns: &str, name: &str) -> Vec<String> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .filter(|n| n.ends_with(&format!("-{name}-0")))
        .collect()
}

/// Deleting a SecureQdrant: the real garbage collector removes every child, and the real
/// StatefulSet PVC retention keeps the claims (`retainOnDelete: true`, the default) or deletes
/// them (`false`).
#[tokio::test]
async fn deletion_collects_every_child_and_pvcs_follow_retain_on_delete() {
    let _scope = OPERATOR_SCOPE.read().await;
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let ns = cp.namespace(&client, "gc").await;
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    let kept = example("minimal.yaml", &ns, "kept");
    let mut dropped = example("minimal.yaml", &ns, "dropped");
    dropped["spec"] = json!({"storage": {"retainOnDelete": false}});
    create_sq(&client, &ns, &kept).await;
    create_sq(&client, &ns, &dropped).await;
    let mut uids = BTreeMap::new();
    for name in ["kept", "dropped"] {
        let sq = wait_ready(&client, &ns, name, &op).await;
        let uid = sq.uid().expect("uid");
        let children = owned_children(&client, &ns, &uid).await;
        for kind in ["StatefulSet", "Service", "Secret", "NetworkPolicy"] {
            assert!(
                children.contains_key(kind),
                "{name} has no {kind} child: {children:#?}"
            );
        }
        assert!(
            !claims_of(&client, &ns, name).await.is_empty(),
            "{name} has no PVC"
        );
        uids.insert(name, uid);
    }
    let sqs = secure_qdrants(&client, &ns);
    for name in ["kept", "dropped"] {
        sqs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for (name, uid) in &uids {
        eventually(Duration::from_secs(120), || {
            let client = client.clone();
            let ns = ns.clone();
            let pods = pods.clone();
            async move {
                let left = owned_children(&client, &ns, uid).await;
                let pods_left = pods
                    .list(
                        &ListParams::default()
                            .labels(&format!("app.kubernetes.io/instance={name}")),
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .len();
                if left.is_empty() && pods_left == 0 {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}, {pods_left} pods"))
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("children of {name} not collected: {e}"));
    }
    eventually(Duration::from_secs(120), || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let dropped = claims_of(&client, &ns, "dropped").await;
            dropped
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("PVCs of dropped still there: {dropped:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let kept = claims_of(&client, &ns, "kept").await;
    assert!(
        !kept.is_empty(),
        "the PVCs of an instance with retainOnDelete: true were deleted"
    );
    assert_audit_clean(cp, &op);
    cp.delete_namespace(&client, &ns).await;
    cp.delete_namespace(&client, &op.namespace).await;
}

/// `kill -9` of `control-plane up` leaves no process and no listening port behind: every
/// component dies with it (Pdeathsig).
#[tokio::test]
async fn killing_the_control_plane_leaves_no_process_and_no_port() {
    let cp = control_plane::start(&["--nodes", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let state = cp.state.clone();
    assert!(state.children.len() >= 5, "children: {:?}", state.children);
    for port in &state.ports {
        assert!(control_plane::port_open(*port), "port {port} not listening");
    }
    cp.sigkill();
    eventually(Duration::from_secs(30), || {
        let alive: Vec<String> = state
            .children
            .iter()
            .filter(|(_, pid)| control_plane::process_alive(**pid))
            .map(|(n, p)| format!("{n} ({p})"))
            .collect();
        let open: Vec<u16> = state
            .ports
            .iter()
            .copied()
            .filter(|p| control_plane::port_open(*p))
            .collect();
        async move {
            if alive.is_empty() && open.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {alive:?}; still listening: {open:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("after kill -9 of control-plane up: {e}"));
    let _ = std::fs::remove_dir_all(&state.dir);
}

/// SIGTERM to `control-plane up` stops every component, frees every port and removes the
/// temporary directory; the exit status is 0.
#[tokio::test]
async fn sigterm_stops_every_component_and_removes_the_directory() {
    let cp = control_plane::start(&["--nodes", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let state = cp.state.clone();
    let status = Command::new("kill")
        .args(["-TERM", &cp.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let code = cp.wait();
    assert_eq!(
        code,
        Some(0),
        "exit status of control-plane up after SIGTERM"
    );
    let alive: Vec<&String> = state
        .children
        .iter()
        .filter(|(_, pid)| control_plane::process_alive(**pid))
        .map(|(n, _)| n)
        .collect();
    assert!(alive.is_empty(), "still running after SIGTERM: {alive:?}");
    let open: Vec<u16> = state
        .ports
        .iter()
        .copied()
        .filter(|p| control_plane::port_open(*p))
        .collect();
    assert!(open.is_empty(), "still listening after SIGTERM: {open:?}");
    assert!(!state.dir.exists(), "{} left behind", state.dir.display());
}

/// The operator's own Deployment from the chart is admitted in its namespace enforcing the
/// "restricted" Pod Security Standard (a FailedCreate of its ReplicaSet fails the test), and its
/// pod becomes Ready (kwok plays the kubelet).
#[tokio::test]
async fn the_charts_operator_deployment_is_admitted_under_restricted() {
    use k8s_openapi::api::apps::v1::Deployment;
    let cp = control_plane::get();
    let client = cp.admin().await;
    let ns = cp.namespace(&client, "chart").await;
    let docs = control_plane::render_chart(&json!({}), "chart", &ns);
    control_plane::apply_chart_rbac(&client, &docs).await;
    // The control: the namespace does refuse a pod that breaks "restricted" (no securityContext:
    // may run as root, keeps its capabilities, no seccomp profile).
    let bad: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unrestricted"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("Pod Security Admission refuses a pod without a securityContext");
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );
    // kubectl reads the chart's YAML as the API machinery does (YAML 1.1: `defaultMode: 0444`
    // is octal).
    let text = control_plane::render_chart_text(&json!({}), "chart", &ns);
    let deployment = text
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l == "kind: Deployment"))
        .expect("the chart has a Deployment");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), deployment).unwrap();
    let (ok, out, err) = cp.kubectl(&[
        "apply",
        "--server-side",
        "-n",
        &ns,
        "-f",
        &file.path().to_string_lossy(),
    ]);
    assert!(ok, "kubectl apply of the chart's Deployment: {out}{err}");
    let name = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .and_then(|d| d["metadata"]["name"].as_str())
        .unwrap()
        .to_owned();
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(120), || {
        let api = api.clone();
        let events = events.clone();
        let name = name.clone();
        async move {
            let refused = failed_creates(&events).await?;
            assert!(
                refused.is_empty(),
                "the operator's pods refused: {refused:#?}"
            );
            let d = api.get(&name).await.map_err(|e| e.to_string())?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            (ready == want && want > 0)
                .then_some(())
                .ok_or_else(|| format!("{ready}/{want} ready: {:?}", d.status))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the chart's Deployment: {e}"));
    cp.delete_namespace(&client, &ns).await;
}

/// The watches the operator opens: (resource, namespace, label selector) → how many times,
/// from the audit log (the selector read from the request's URI).
fn watches_of(cp: &ControlPlane, op: &Operator) -> BTreeMap<(String, String, String), usize> {
    let user = op.username();
    let mut seen = BTreeSet::new();
    let mut watches = BTreeMap::new();
    for e in cp.audit_events() {
        if e["user"]["username"] != user.as_str() || e["verb"] != "watch" {
            continue;
        }
        // A watch logs when its response starts and again when it ends: count it once.
        if !seen.insert(e["auditID"].as_str().unwrap_or_default().to_owned()) {
            continue;
        }
        let uri = url::Url::parse(&format!(
            "http://api{}",
            e["requestURI"].as_str().unwrap_or_default()
        ))
        .expect("a request URI");
        let selector = uri
            .query_pairs()
            .find(|(k, _)| k == "labelSelector")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let key = (
            e["objectRef"]["resource"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            e["objectRef"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            selector,
        );
        *watches.entry(key).or_insert(0) += 1;
    }
    watches
}

/// Both controllers share one watch per resource and label selector in each watched namespace
/// (issue 16): the token controller's triggers (its Secrets, its instance's credentials, the
/// Secrets a user lets an instance use, the instances themselves) come from the SecureQdrant
/// controller's watches, not from watches of their own.
#[tokio::test]
async fn the_operator_opens_one_watch_per_resource_selector_and_namespace() {
    use secure_qdrant_operator::children::meta::MANAGED_SELECTOR;
    use secure_qdrant_operator::reconcile::references::ALLOWED_INSTANCE_LABEL;
    let _scope = OPERATOR_SCOPE.read().await;
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let namespaces = vec![
        cp.namespace(&client, "watches").await,
        cp.namespace(&client, "watches").await,
    ];
    let op = cp
        .start_operator(&client, Scope::Namespaces(namespaces.clone()))
        .await;
    let mut want = BTreeSet::new();
    for ns in &namespaces {
        for resource in ["secureqdrants", "qdrantaccesstokens"] {
            want.insert((resource.to_owned(), ns.clone(), String::new()));
        }
        for resource in [
            "serviceaccounts",
            "secrets",
            "configmaps",
            "services",
            "networkpolicies",
            "poddisruptionbudgets",
            "statefulsets",
        ] {
            want.insert((resource.to_owned(), ns.clone(), MANAGED_SELECTOR.to_owned()));
        }
        want.insert((
            "secrets".to_owned(),
            ns.clone(),
            ALLOWED_INSTANCE_LABEL.to_owned(),
        ));
    }
    eventually(Duration::from_secs(60), || {
        let opened: BTreeSet<_> = watches_of(cp, &op).into_keys().collect();
        let missing: Vec<_> = want.difference(&opened).cloned().collect();
        async move {
            missing
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("not watched yet: {missing:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
    // Every watch opens at start; a second one would be logged by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watches = watches_of(cp, &op);
    let more_than_once: Vec<_> = watches.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        more_than_once.is_empty(),
        "watched more than once (resource, namespace, selector) → watches: {more_than_once:#?}"
    );
    let opened: BTreeSet<_> = watches.into_keys().collect();
    assert_eq!(opened, want, "the operator's watches");
    for ns in &namespaces {
        cp.delete_namespace(&client, ns).await;
    }
    cp.delete_namespace(&client, &op.namespace).await;
}

/// The token controller hears of its Secrets through the SecureQdrant controller's watch of the
/// operator's Secrets (issue 16): a deleted token Secret is written again at once, not at the
/// token's renewal hours later.
#[tokio::test]
async fn a_deleted_token_secret_is_written_again_at_once() {
    use k8s_openapi::api::core::v1::Secret;
    use secure_qdrant_operator::crd::QdrantAccessToken;
    let _scope = OPERATOR_SCOPE.read().await;
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let ns = cp.namespace(&client, "token-secret").await;
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    create_sq(&client, &ns, &example("minimal.yaml", &ns, "vectors")).await;
    let token: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "secureqdrant.dev/v1alpha1",
        "kind": "QdrantAccessToken",
        "metadata": {"name": "frontend", "namespace": ns},
        "spec": {"qdrantRef": {"name": "vectors"}, "access": {"global": "r"}},
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<QdrantAccessToken>(&()),
    )
    .create(&PostParams::default(), &token)
    .await
    .expect("QdrantAccessToken created");
    wait_ready(&client, &ns, "vectors", &op).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let written = |not_uid: String, within: Duration| {
        let secrets = secrets.clone();
        let op = &op;
        async move {
            eventually(within, || {
                let secrets = secrets.clone();
                let not_uid = not_uid.clone();
                async move {
                    let s = secrets.get_opt("frontend-qdrant-token").await;
                    let uid = s.map_err(|e| e.to_string())?.and_then(|s| s.metadata.uid);
                    uid.filter(|u| *u != not_uid)
                        .ok_or_else(|| "no (new) token Secret yet".to_owned())
                }
            })
            .await
            .unwrap_or_else(|e| panic!("frontend-qdrant-token: {e}\n{}", op.log_tail()))
        }
    };
    let first = written(String::new(), READY_WITHIN).await;
    // The instance settled: nothing else reconciles the token now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    secrets
        .delete("frontend-qdrant-token", &DeleteParams::default())
        .await
        .expect("token Secret deleted");
    written(first, Duration::from_secs(20)).await;
    cp.delete_namespace(&client, &ns).await;
    cp.delete_namespace(&client, &op.namespace).await;
}
