//! The API-server side of the SecureQdrant and QdrantAccessToken rules, on the REAL control
//! plane (tests/control-plane, see tests/support/control_plane.rs): the bad-input tables of
//! tests/bad_input.rs and tests/access_tokens.rs (shared through tests/support) sent to a real
//! kube-apiserver, the TLS-switch transition rule against a status written through the status
//! subresource, the chart's ValidatingAdmissionPolicy around the real operator binary, the
//! `Cert-Expiry` printer column in real `kubectl get`, and ownership of a foreign child.
//!
//! Which layer refuses what is stated per case in the tables: `schema` and `cel` are the API
//! server's (it must refuse the case on create, or on the update of the stored `old` object for
//! transition rules, with a message naming the field); a case with neither is stored by the API
//! server and left to the operator (`bad_input.rs`/`access_tokens.rs` check that layer).
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;

#[path = "support/bad_input_cases.rs"]
mod sq_cases;

#[path = "support/token_cases.rs"]
mod token_cases;

use std::time::{Duration, Instant};

use control_plane::{ControlPlane, Operator, Scope, eventually};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use serde_json::{Value, json};

/// How long an instance may take to become Ready.
const READY_WITHIN: Duration = Duration::from_secs(180);

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const MANAGER: &str = "secure-qdrant-operator";

/// The User-Agent of this file's requests made with the operator's token, told apart from the
/// operator's own in the audit log.
const PROBE_USER_AGENT: &str = "real-api-rules-probe";

async fn setup() -> (&'static ControlPlane, Client) {
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    (cp, client)
}

fn sq_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<SecureQdrant>(&()))
}

fn token_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<QdrantAccessToken>(&()),
    )
}

/// A case document as the API server gets it: in `ns`, without the fields only the server sets.
fn object(doc: &str, ns: &str) -> Value {
    let mut v: Value = serde_yaml_ng::from_str(doc).expect("well-formed YAML");
    v["metadata"]["namespace"] = json!(ns);
    if let Some(meta) = v["metadata"].as_object_mut() {
        meta.remove("uid");
        meta.remove("generation");
    }
    v
}

fn dynamic(v: &Value) -> DynamicObject {
    serde_json::from_value(v.clone()).expect("a Kubernetes object")
}

/// Whether the API server's message names `field`: in full, relative to `spec`, or as a rule's
/// path followed by the rest of the field in the rule's message.
fn names(message: &str, field: &str) -> bool {
    if message.contains(field)
        || field
            .strip_prefix("spec.")
            .is_some_and(|f| message.contains(f))
    {
        return true;
    }
    field.match_indices('.').any(|(i, _)| {
        let (path, rest) = (&field[..i], &field[i + 1..]);
        message.contains(&format!("{path}:")) && message.contains(rest)
    })
}

/// Sends one case to the API server: creates `old` (with its status, through the status
/// subresource) and updates it to `doc`, or creates `doc`. Returns the refusal (code, message)
/// or None when stored; whatever was stored is deleted again.
async fn send(
    api: &Api<DynamicObject>,
    ns: &str,
    doc: &str,
    old: Option<&str>,
) -> Result<Option<(u16, String)>, String> {
    let new = object(doc, ns);
    let name = new["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let result = match old {
        None => api
            .create(&PostParams::default(), &dynamic(&new))
            .await
            .map(|_| ()),
        Some(old) => {
            let mut old = object(old, ns);
            let status = old.as_object_mut().and_then(|o| o.remove("status"));
            api.create(&PostParams::default(), &dynamic(&old))
                .await
                .map_err(|e| format!("the old object of the update is refused: {e}"))?;
            if let Some(status) = status {
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await
                .map_err(|e| format!("the old object's status is refused: {e}"))?;
            }
            let current = api.get(&name).await.map_err(|e| e.to_string())?;
            let mut new = new.clone();
            new["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
            api.replace(&name, &PostParams::default(), &dynamic(&new))
                .await
                .map(|_| ())
        }
    };
    let _ = api.delete(&name, &DeleteParams::default()).await;
    eventually(Duration::from_secs(30), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            match api.get_opt(&name).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(format!("{name} still exists")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    match result {
        Ok(()) => Ok(None),
        Err(kube::Error::Api(s)) => Ok(Some((s.code, s.message.clone()))),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks one case: refused with 422 naming `field` when `refused`, stored otherwise.
fn judge(
    name: &str,
    field: &str,
    refused: bool,
    got: Result<Option<(u16, String)>, String>,
    failures: &mut Vec<String>,
) {
    match (refused, got) {
        (_, Err(e)) => failures.push(format!("{name}: {e}")),
        (true, Ok(None)) => failures.push(format!("{name}: the real API server stores it")),
        (true, Ok(Some((code, message)))) => {
            if code != 422 || !names(&message, field) {
                failures.push(format!(
                    "{name}: refused with {code} not naming {field}: {message}"
                ))
            }
        }
        (false, Ok(Some((code, message)))) => failures.push(format!(
            "{name}: the real API server refuses it ({code}): {message}"
        )),
        (false, Ok(None)) => {}
    }
}

#[tokio::test]
async fn secure_qdrant_bad_input_is_refused_by_the_real_api_server_as_the_table_says() {
    let started = Instant::now();
    let (cp, client) = setup().await;
    let ns = cp.namespace(&client, "rules-sq").await;
    let api = sq_api(&client, &ns);
    let mut failures = Vec::new();
    let (mut refused, mut stored) = (0, 0);
    for case in sq_cases::bad_cases() {
        let server_refuses = case.schema || case.cel;
        if server_refuses {
            refused += 1
        } else {
            stored += 1
        }
        let got = send(&api, &ns, &case.doc, case.old.as_deref()).await;
        judge(&case.name, &case.field, server_refuses, got, &mut failures);
    }
    for (name, doc, old) in sq_cases::valid_cases() {
        stored += 1;
        let got = send(&api, &ns, &doc, old.as_deref()).await;
        judge(&name, "", false, got, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of the cases disagree with the real API server:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        refused > 50 && stored > 10,
        "{refused} refused, {stored} stored: the tables are not all here"
    );
    eprintln!(
        "{refused} SecureQdrant cases refused and {stored} stored by the real API server in {:.1?}",
        started.elapsed()
    );
    cp.delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn access_token_bad_input_is_refused_by_the_real_api_server_as_the_table_says() {
    let started = Instant::now();
    let (cp, client) = setup().await;
    let ns = cp.namespace(&client, "rules-token").await;
    let api = token_api(&client, &ns);
    let mut failures = Vec::new();
    let (mut refused, mut stored) = (0, 0);
    for case in token_cases::bad_cases() {
        let server_refuses = case.schema || case.cel;
        if server_refuses {
            refused += 1
        } else {
            stored += 1
        }
        let got = send(&api, &ns, &case.doc, case.old.as_deref()).await;
        judge(case.name, case.field, server_refuses, got, &mut failures);
    }
    for (name, doc, old, _) in token_cases::valid_cases() {
        stored += 1;
        let got = send(&api, &ns, &doc, old.as_deref()).await;
        judge(name, "", false, got, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of the cases disagree with the real API server:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        refused > 20 && stored > 5,
        "{refused} refused, {stored} stored: the tables are not all here"
    );
    eprintln!(
        "{refused} QdrantAccessToken cases refused and {stored} stored by the real API server in {:.1?}",
        started.elapsed()
    );
    cp.delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn tls_switch_is_refused_once_status_says_clustered() {
    let (cp, client) = setup().await;
    let ns = cp.namespace(&client, "rules-tls").await;
    let api = sq_api(&client, &ns);
    for name in ["clustered", "single"] {
        let sq = json!({
            "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 3, "tls": {"enabled": true}},
        });
        api.create(&PostParams::default(), &dynamic(&sq))
            .await
            .unwrap();
    }
    // As admin, through the status subresource (the main resource ignores .status).
    api.patch_status(
        "clustered",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"clustered": true}})),
    )
    .await
    .expect("status.clustered is written through the status subresource");
    let stored = api.get("clustered").await.unwrap();
    assert_eq!(
        stored.data["status"]["clustered"],
        json!(true),
        "{:?}",
        stored.data
    );
    let flip = json!({"spec": {"tls": {"enabled": false}}});
    match api
        .patch("clustered", &PatchParams::default(), &Patch::Merge(&flip))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message.contains("spec.tls.enabled cannot change")
                    && s.message.contains("status.clustered"),
                "{}",
                s.message
            );
        }
        other => panic!("the switch of a clustered instance is not refused: {other:?}"),
    }
    let after = api.get("clustered").await.unwrap();
    assert_eq!(after.data["spec"]["tls"]["enabled"], json!(true));
    // Other changes of the clustered instance still pass.
    api.patch(
        "clustered",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("a clustered instance that keeps its TLS setting can change replicas");
    // Without that status the switch is allowed.
    let single = api
        .patch("single", &PatchParams::default(), &Patch::Merge(&flip))
        .await
        .expect("the switch is accepted for an instance that never clustered");
    assert_eq!(single.data["spec"]["tls"]["enabled"], json!(false));
    cp.delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------
// The operator under the chart's ValidatingAdmissionPolicy
// ---------------------------------------------------------------------------------------------

fn cluster_api(client: &Client, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    Api::all_with(client.clone(), &ar)
}

/// Renders the chart for the operator's release and applies its ValidatingAdmissionPolicy and
/// binding as admin.
async fn install_admission_policy(client: &Client, op: &Operator, watched: &str) {
    let docs = control_plane::render_chart(
        &json!({"watchNamespaces": [watched]}),
        &op.release,
        &op.namespace,
    );
    let mut installed = 0;
    for doc in &docs {
        let (kind, plural) = match doc["kind"].as_str().unwrap_or_default() {
            "ValidatingAdmissionPolicy" => {
                ("ValidatingAdmissionPolicy", "validatingadmissionpolicies")
            }
            "ValidatingAdmissionPolicyBinding" => (
                "ValidatingAdmissionPolicyBinding",
                "validatingadmissionpolicybindings",
            ),
            _ => continue,
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        cluster_api(client, "admissionregistration.k8s.io", kind, plural)
            .patch(name, &control_plane::apply_params(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("the real API server refuses the chart's {kind}: {e}"));
        installed += 1;
    }
    assert_eq!(installed, 2, "the chart renders a policy and its binding");
}

/// A client with a token of the operator's ServiceAccount (and the probe's User-Agent).
async fn as_operator(cp: &ControlPlane, admin: &Client, op: &Operator, ns: &str) -> Client {
    let token =
        control_plane::service_account_token(admin, &op.namespace, &op.service_account).await;
    let kc =
        Kubeconfig::from_yaml(&control_plane::token_kubeconfig(&cp.state, &token, ns)).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(PROBE_USER_AGENT),
    ));
    Client::try_from(config).unwrap()
}

/// A StatefulSet as the operator builds one (labelled, hardened, the official image), changed
/// by `f`.
fn statefulset(ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": {MANAGED_BY: MANAGER}},
        "spec": {
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "qdrant",
                        "image": "qdrant/qdrant:v1.19.0-unprivileged",
                        "securityContext": {
                            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    });
    f(&mut sts);
    sts
}

/// Sends `obj` as a dry-run create with `client`; the refusal message, if any.
async fn dry_run_create(
    client: &Client,
    ns: &str,
    ar: &ApiResource,
    obj: &Value,
) -> Result<(), (u16, String)> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&pp, &dynamic(obj)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err((s.code, s.message.clone())),
        Err(e) => Err((0, e.to_string())),
    }
}

fn denied_by_policy(got: &Result<(), (u16, String)>, expect: &str) -> Result<(), String> {
    match got {
        Err((403, m)) if m.contains("ValidatingAdmissionPolicy") && m.contains(expect) => Ok(()),
        other => Err(format!(
            "not denied by the policy with {expect:?}: {other:?}"
        )),
    }
}

async fn wait_ready(client: &Client, ns: &str, name: &str, op: &Operator) -> DynamicObject {
    let api = sq_api(client, ns);
    eventually(READY_WITHIN, || {
        let api = api.clone();
        async move {
            let sq = api.get(name).await.map_err(|e| e.to_string())?;
            match sq.data["status"]["phase"].as_str() {
                Some("Ready") => Ok(sq),
                _ => Err(format!("status {}", sq.data["status"])),
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

fn minimal(ns: &str, name: &str) -> DynamicObject {
    let mut v: Value =
        serde_yaml_ng::from_str(&control_plane::repo_file("deploy/examples/minimal.yaml")).unwrap();
    v["metadata"]["namespace"] = json!(ns);
    v["metadata"]["name"] = json!(name);
    dynamic(&v)
}

/// The operator's own requests (not this file's probes) that the API server refused.
fn operator_refusals(cp: &ControlPlane, op: &Operator) -> (usize, Vec<String>) {
    let user = op.username();
    let events = cp.audit_events();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["user"]["username"] == user.as_str() && e["userAgent"] != PROBE_USER_AGENT)
        .collect();
    let writes = mine
        .iter()
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "patch" | "update")))
        .count();
    let refused = mine
        .iter()
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| c >= 400 && c != 404 && c != 409)
        })
        .map(|e| {
            format!(
                "{} {} {} -> {}",
                e["verb"],
                e["requestURI"],
                e["responseStatus"]["code"],
                e["responseStatus"]["message"]
            )
        })
        .collect();
    (writes, refused)
}

#[tokio::test]
async fn the_operator_works_under_the_charts_admission_policy_which_denies_what_it_must() {
    let started = Instant::now();
    let (cp, client) = setup().await;
    let ns = cp.namespace(&client, "rules-vap").await;
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    install_admission_policy(&client, &op, &ns).await;
    let sa = as_operator(cp, &client, &op, &ns).await;
    let sts_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "StatefulSet"),
        "statefulsets",
    );
    let secret_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());

    // (b) What the policy must deny, sent with the operator's token. The first probe also waits
    // until the policy is in force (the API server loads it asynchronously).
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let foreign: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "foreign"}, "data": {"a": "b"}}))
            .unwrap();
    cms.create(&PostParams::default(), &foreign).await.unwrap();
    let sa_cms = Api::<ConfigMap>::namespaced(sa.clone(), &ns);
    let take = |dry_run: bool| {
        let sa_cms = sa_cms.clone();
        async move {
            let pp = PatchParams {
                dry_run,
                ..PatchParams::default()
            };
            let got = sa_cms
                .patch(
                    "foreign",
                    &pp,
                    &Patch::Merge(&json!({"data": {"a": "taken"}})),
                )
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    kube::Error::Api(s) => (s.code, s.message.clone()),
                    e => (0, e.to_string()),
                });
            denied_by_policy(
                &got,
                "may only update objects labelled app.kubernetes.io/managed-by",
            )
        }
    };
    // Dry runs (admission runs for them too) until the policy is in force, then for real.
    eventually(Duration::from_secs(60), || take(true))
        .await
        .unwrap_or_else(|e| panic!("updating an unlabelled ConfigMap (dry run): {e}"));
    take(false)
        .await
        .unwrap_or_else(|e| panic!("updating an unlabelled ConfigMap: {e}"));
    assert_eq!(cms.get("foreign").await.unwrap().data.unwrap()["a"], "b");

    // The hardened, labelled StatefulSet passes (so the denials below are for what they change).
    dry_run_create(&sa, &ns, &sts_ar, &statefulset(&ns, "hardened", |_| {}))
        .await
        .unwrap_or_else(|e| panic!("a hardened StatefulSet is denied: {e:?}"));
    let denials: Vec<(&str, Value, &str)> = vec![
        (
            "privileged StatefulSet",
            statefulset(&ns, "privileged", |s| {
                s["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                    json!(true)
            }),
            "privileged unset or false",
        ),
        (
            "StatefulSet with a foreign image",
            statefulset(&ns, "foreign-image", |s| {
                s["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!("docker.io/evil/qdrant:v1.19.0")
            }),
            "must run an image of",
        ),
        (
            "StatefulSet with qdrant/qdrant-evil (a longer name under the allowed one)",
            statefulset(&ns, "evil-image", |s| {
                s["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!("qdrant/qdrant-evil:v1")
            }),
            "must run an image of",
        ),
        (
            "StatefulSet with a hostPath volume",
            statefulset(&ns, "hostpath", |s| {
                s["spec"]["template"]["spec"]["volumes"] =
                    json!([{"name": "root", "hostPath": {"path": "/"}}])
            }),
            "may not mount hostPath volumes",
        ),
    ];
    let mut failures = Vec::new();
    for (what, obj, expect) in &denials {
        if let Err(e) = denied_by_policy(&dry_run_create(&sa, &ns, &sts_ar, obj).await, expect) {
            failures.push(format!("{what}: {e}"));
        }
    }
    let token_secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "minted", "namespace": ns, "labels": {MANAGED_BY: MANAGER},
                     "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token",
    });
    if let Err(e) = denied_by_policy(
        &dry_run_create(&sa, &ns, &secret_ar, &token_secret).await,
        "may only write Secrets of type Opaque or kubernetes.io/tls",
    ) {
        failures.push(format!("service-account-token Secret: {e}"));
    }
    assert!(
        failures.is_empty(),
        "the policy lets the operator's token through:\n{}",
        failures.join("\n")
    );

    // (a) The operator brings minimal.yaml to Ready under the policy.
    let sqs = sq_api(&client, &ns);
    sqs.create(&PostParams::default(), &minimal(&ns, "vectors"))
        .await
        .unwrap();
    let ready = wait_ready(&client, &ns, "vectors", &op).await;

    // The Cert-Expiry column in the real kubectl's table.
    let not_after = ready.data["status"]["certificate"]["notAfter"]
        .as_str()
        .expect("status.certificate.notAfter")
        .to_owned();
    let (ok, out, err) = cp.kubectl(&["get", "sq", "-n", &ns, "vectors"]);
    assert!(ok, "kubectl get sq: {err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = header
        .iter()
        .position(|h| *h == "CERT-EXPIRY")
        .unwrap_or_else(|| panic!("no CERT-EXPIRY column:\n{out}"));
    assert_eq!(header.len(), row.len(), "one word per column:\n{out}");
    assert_eq!(
        row[col], not_after,
        "kubectl get sq shows the expiry as it is:\n{out}"
    );
    let expiry: k8s_openapi::jiff::Timestamp = row[col]
        .parse()
        .unwrap_or_else(|e| panic!("{:?} is not a time: {e}\n{out}", row[col]));
    assert!(expiry > k8s_openapi::jiff::Timestamp::now(), "{out}");
    assert!(!out.contains("<invalid>"), "{out}");
    eprintln!("kubectl get sq:\n{out}");

    // (c) An orphan annotated for adoption is adopted under the policy, by the patch the
    // operator sends; the same patch naming another SecureQdrant than the annotation is denied.
    let bait: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "bait", "annotations": {"secureqdrant.dev/adopt": "someone"}},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &bait).await.unwrap();
    let adopt_patch = |owner: &str| {
        json!({"metadata": {
            "labels": {MANAGED_BY: MANAGER},
            "annotations": {"secureqdrant.dev/adopt": null},
            "ownerReferences": [{
                "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant", "name": owner,
                "uid": ready.metadata.uid.clone().unwrap(), "controller": true,
                "blockOwnerDeletion": true,
            }],
        }})
    };
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let hijack = sa_cms
        .patch("bait", &dry, &Patch::Merge(&adopt_patch("vectors")))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) => (s.code, s.message.clone()),
            e => (0, e.to_string()),
        });
    denied_by_policy(&hijack, "may only update objects labelled")
        .unwrap_or_else(|e| panic!("adopting an orphan meant for another instance: {e}"));
    sa_cms
        .patch("bait", &dry, &Patch::Merge(&adopt_patch("someone")))
        .await
        .unwrap_or_else(|e| panic!("the adoption the annotation asks for is denied: {e}"));

    let orphan: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "adoptee-config", "annotations": {"secureqdrant.dev/adopt": "adoptee"}},
        "data": {"config.yaml": "{}"},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &orphan).await.unwrap();
    let adoptee = sqs
        .create(&PostParams::default(), &minimal(&ns, "adoptee"))
        .await
        .unwrap();
    let uid = adoptee.metadata.uid.clone().unwrap();
    eventually(READY_WITHIN, || {
        let cms = cms.clone();
        let uid = uid.clone();
        async move {
            let cm = cms.get("adoptee-config").await.map_err(|e| e.to_string())?;
            let controlled = cm
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.controller == Some(true));
            let labelled = cm
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY))
                .map(String::as_str)
                == Some(MANAGER);
            (controlled && labelled)
                .then_some(())
                .ok_or_else(|| format!("not adopted: {:?}", cm.metadata))
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\noperator log:\n{}\nrefused: {:#?}",
            op.log_tail(),
            operator_refusals(cp, &op).1
        )
    });
    wait_ready(&client, &ns, "adoptee", &op).await;

    assert!(
        !op.log().contains("could not publish an Event"),
        "the API server refused an Event of the operator:\n{}",
        op.log_tail()
    );
    let (writes, refused) = operator_refusals(cp, &op);
    assert!(writes > 0, "no write by the operator in the audit log");
    assert!(
        refused.is_empty(),
        "requests of the operator refused under the policy:\n{}",
        refused.join("\n")
    );
    // The probes above were denied by the policy and audited as such (so the check is not vacuous).
    let probe_denials = cp
        .audit_events()
        .iter()
        .filter(|e| e["userAgent"] == PROBE_USER_AGENT && e["responseStatus"]["code"] == 403)
        .count();
    assert!(
        probe_denials >= 6,
        "{probe_denials} denied probes in the audit log"
    );
    eprintln!("admission policy scenario in {:.1?}", started.elapsed());
    drop(op);
    cp.delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_foreign_config_map_is_left_alone_and_the_instance_reports_child_conflict() {
    let (cp, client) = setup().await;
    let ns = cp.namespace(&client, "rules-own").await;
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let foreign: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "clash-config", "labels": {"team": "search"}}, "data": {"owner": "someone else"}})).unwrap();
    let before = cms.create(&PostParams::default(), &foreign).await.unwrap();
    sq_api(&client, &ns)
        .create(&PostParams::default(), &minimal(&ns, "clash"))
        .await
        .unwrap();
    let api = sq_api(&client, &ns);
    let condition = eventually(READY_WITHIN, || {
        let api = api.clone();
        async move {
            let sq = api.get("clash").await.map_err(|e| e.to_string())?;
            sq.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "ChildConflict" && c["status"] == "True")
                .cloned()
                .ok_or_else(|| format!("status {}", sq.data["status"]))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains("clash-config"), "{condition}");
    let after = cms.get("clash-config").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the foreign ConfigMap was written: {after:?}"
    );
    assert_eq!(after.data, before.data);
    assert!(after.metadata.owner_references.is_none());
    assert_eq!(after.metadata.labels, before.metadata.labels);
    // The conflict is also an Event the real API server stored.
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .any(|e| {
                    e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("clash-config"))
                })
                .then_some(())
                .ok_or_else(|| "no Event names clash-config".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
    assert!(
        !op.log().contains("could not publish an Event"),
        "the API server refused an Event of the operator:\n{}",
        op.log_tail()
    );
    drop(op);
    cp.delete_namespace(&client, &ns).await;
}
