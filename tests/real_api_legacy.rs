//! Objects created before a CRD rule existed (an upgraded cluster), on the REAL control plane
//! (tests/control-plane, see tests/support/control_plane.rs).
//!
//! The real API server evaluates a CEL rule at the ROOT of a CRD's schema on every write of the
//! object, status writes included: the status subresource still validates the whole object, and
//! a failing rule is forgiven ("ratcheting") only on a node that did not change — the root
//! always changes with the status. A root rule that an existing object breaks would refuse every
//! status write of the operator (422), so the condition naming the fix could never be written.
//! The root rules on `metadata.name` therefore apply on create only (`optionalOldSelf`), and the
//! TLS-switch transition rule passes any write that keeps `spec.tls.enabled`.
//!
//! Each test makes its "legacy" object by taking the rule out of the live CRD for a moment
//! (creating the object, putting the rule back, waiting until the server applies it again).
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;

use std::time::Duration;

use control_plane::{ControlPlane, Scope, eventually};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use serde_json::{Value, json};

const SQ_CRD: &str = "secureqdrants.secureqdrant.dev";
const TOKEN_CRD: &str = "qdrantaccesstokens.secureqdrant.dev";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
/// The operator's field manager (its status writes are server-side applies under it).
const MANAGER: &str = "secure-qdrant-operator";

/// How long the operator may take to write a status.
const LIMIT: Duration = Duration::from_secs(120);

/// The message of the SecureQdrant name rule (kept by the fix).
const SQ_NAME_RULE: &str = "metadata.name must be a DNS-1035 label of at most 52 characters (it names the StatefulSet, \
     its pods and the Services)";
/// The message of the QdrantAccessToken name rule (kept by the fix).
const TOKEN_NAME_RULE: &str = "metadata.name may be at most 240 characters unless \
     spec.secretName is set (the default Secret name is <metadata.name>-qdrant-token)";
/// The start of the TLS-switch rule's message.
const TLS_RULE: &str =
    "spec.tls.enabled cannot change on an instance that has run more than one replica";

/// The tests edit the live CRDs (they run in parallel on one control plane): each holds this
/// while a rule is out, and while it checks what the rules refuse.
static CRD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup(prefix: &str) -> (&'static ControlPlane, Client, String) {
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let ns = cp.namespace(&client, prefix).await;
    (cp, client, ns)
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

fn instance(ns: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": SQ_API, "kind": "SecureQdrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap()
}

fn token(ns: &str, name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": SQ_API, "kind": "QdrantAccessToken",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"qdrantRef": {"name": "vectors"}, "access": {"global": "r"}},
    }))
    .unwrap()
}

/// Creates `obj` (a dry run when `dry_run`); the refusal (code, message) if any.
async fn create(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    dry_run: bool,
) -> Option<(u16, String)> {
    let pp = PostParams {
        dry_run,
        ..PostParams::default()
    };
    match api.create(&pp, obj).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
        Err(e) => panic!("create: {e}"),
    }
}

/// Asserts that the API server refuses to create `obj` with 422 and a message holding `rule`.
async fn assert_refused(api: &Api<DynamicObject>, obj: &DynamicObject, rule: &str) {
    match create(api, obj, false).await {
        Some((422, m)) if m.contains(rule) => {}
        other => panic!(
            "{:?} is not refused with {rule:?}: {other:?}",
            obj.metadata.name
        ),
    }
}

/// Waits until a dry-run create of `probe` is refused with `rule` (`present`) or accepted.
async fn wait_for_rule(api: &Api<DynamicObject>, probe: &DynamicObject, rule: &str, present: bool) {
    eventually(Duration::from_secs(60), || async {
        let refused = create(api, probe, true)
            .await
            .is_some_and(|(_, m)| m.contains(rule));
        (refused == present)
            .then_some(())
            .ok_or_else(|| format!("the rule {rule:?} is not yet applied = {present}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Takes the root rule whose message starts with `rule` out of CRD `crd` (`out`), or puts
/// `saved` back; returns the rule taken out.
async fn edit_root_rule(client: &Client, crd: &str, rule: &str, saved: Option<Value>) -> Value {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut doc = serde_json::to_value(api.get(crd).await.unwrap()).unwrap();
    let versions = doc["spec"]["versions"].as_array_mut().unwrap();
    assert_eq!(versions.len(), 1, "one version of {crd}");
    let schema = &mut versions[0]["schema"]["openAPIV3Schema"];
    if schema["x-kubernetes-validations"].is_null() {
        schema["x-kubernetes-validations"] = json!([]);
    }
    let rules = schema["x-kubernetes-validations"]
        .as_array_mut()
        .expect("root rules");
    let taken = match saved {
        Some(saved) => {
            rules.push(saved.clone());
            saved
        }
        None => {
            let i = rules
                .iter()
                .position(|r| r["message"].as_str().is_some_and(|m| m.starts_with(rule)))
                .unwrap_or_else(|| panic!("no root rule {rule:?} in {crd}"));
            rules.remove(i)
        }
    };
    let doc: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
    api.replace(crd, &PostParams::default(), &doc)
        .await
        .unwrap_or_else(|e| panic!("{crd} replaced: {e}"));
    taken
}

/// Runs `make` (which creates the legacy objects) while the root rule `rule` of `crd` is out
/// of the live CRD; `probe` breaks the rule (a dry run of it tells whether the rule applies).
async fn without_rule<F: std::future::Future<Output = ()>>(
    client: &Client,
    api: &Api<DynamicObject>,
    crd: &str,
    rule: &str,
    probe: &DynamicObject,
    make: F,
) {
    let saved = edit_root_rule(client, crd, rule, None).await;
    wait_for_rule(api, probe, rule, false).await;
    make.await;
    edit_root_rule(client, crd, rule, Some(saved)).await;
    wait_for_rule(api, probe, rule, true).await;
}

/// Writes a status field as the operator does (server-side apply on the status subresource,
/// under its field manager); the refusal if any.
async fn apply_status(
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    status: Value,
) -> Result<(), String> {
    let patch = json!({"apiVersion": SQ_API, "kind": kind, "status": status});
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// The status conditions of `name` once one of them has a message containing `needle`.
async fn condition_naming(
    api: &Api<DynamicObject>,
    name: &str,
    needle: &str,
    log: impl Fn() -> String,
) -> Value {
    eventually(LIMIT, || async {
        let obj = api.get(name).await.map_err(|e| e.to_string())?;
        obj.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["status"] == "False" && c["message"].as_str().is_some_and(|m| m.contains(needle))
            })
            .cloned()
            .ok_or_else(|| format!("status {}", obj.data["status"]))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{name}: no condition names {needle:?}: {e}\noperator log:\n{}",
            log()
        )
    })
}

/// Deletes `name` and waits until it is gone (no write of the object may be refused on the way).
async fn delete(api: &Api<DynamicObject>, name: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(LIMIT, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(format!("{name} still exists")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The SecureQdrant name rule (a DNS-1035 label of at most 52 characters): still refused on
/// create; an instance that has such a name from before the rule gets its status written — by
/// the operator too, with the condition naming the fix.
#[tokio::test]
async fn an_instance_named_before_the_name_rule_existed_gets_its_status_and_the_fix() {
    let (cp, client, ns) = setup("legacy-sq").await;
    let api = sq_api(&client, &ns);
    let long = "a".repeat(53);
    let names = [long.as_str(), "legacy.dotted", "9lives"];
    let _guard = CRD_LOCK.lock().await;
    // (a) A new instance breaking the rule is refused on create, with the rule's message.
    for name in names {
        assert_refused(&api, &instance(&ns, name, json!({})), SQ_NAME_RULE).await;
    }
    // (b) The same names, created before the rule.
    let probe = instance(&ns, "probe.dotted", json!({}));
    without_rule(&client, &api, SQ_CRD, SQ_NAME_RULE, &probe, async {
        for name in names {
            assert_eq!(
                create(&api, &instance(&ns, name, json!({})), false).await,
                None
            );
        }
    })
    .await;
    drop(_guard);
    for name in names {
        apply_status(&api, "SecureQdrant", name, json!({"observedGeneration": 1}))
            .await
            .unwrap_or_else(|e| panic!("the status of legacy instance {name} is refused: {e}"));
        // Metadata writes too (labels, finalizers of other controllers).
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "search"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("a label on legacy instance {name} is refused: {e}"));
    }
    // The operator writes the condition that names the fix.
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    for name in names {
        let c = condition_naming(&api, name, "metadata.name", || op.log_tail()).await;
        assert_eq!(c["reason"], "InvalidSpec", "{c}");
        assert!(
            c["message"]
                .as_str()
                .unwrap_or_default()
                .contains("DNS-1035 label"),
            "{c}"
        );
    }
    for name in names {
        delete(&api, name).await;
    }
    drop(op);
    cp.delete_namespace(&client, &ns).await;
}

/// The QdrantAccessToken name rule (at most 240 characters without spec.secretName): still
/// refused on create; a token with such a name from before the rule gets its status written —
/// by the operator too, with the condition naming the fix.
#[tokio::test]
async fn a_token_named_before_the_name_rule_existed_gets_its_status_and_the_fix() {
    let (cp, client, ns) = setup("legacy-token").await;
    let api = token_api(&client, &ns);
    let name = "t".repeat(241);
    let _guard = CRD_LOCK.lock().await;
    // (a)
    assert_refused(&api, &token(&ns, &name), TOKEN_NAME_RULE).await;
    // (b)
    let probe = token(&ns, &"p".repeat(245));
    without_rule(&client, &api, TOKEN_CRD, TOKEN_NAME_RULE, &probe, async {
        assert_eq!(create(&api, &token(&ns, &name), false).await, None);
    })
    .await;
    drop(_guard);
    apply_status(
        &api,
        "QdrantAccessToken",
        &name,
        json!({"observedGeneration": 1}),
    )
    .await
    .unwrap_or_else(|e| panic!("the status of the legacy token is refused: {e}"));
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;
    let c = condition_naming(&api, &name, "240 characters", || op.log_tail()).await;
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unless spec.secretName is set"),
        "{c}"
    );
    delete(&api, &name).await;
    drop(op);
    cp.delete_namespace(&client, &ns).await;
}

/// The TLS-switch transition rule (root, it reads the status): an instance whose
/// spec.tls.enabled was switched after it clustered, before the rule existed, still gets its
/// status written (the rule compares old and new, and a status write keeps the spec); a new
/// switch is still refused.
#[tokio::test]
async fn an_instance_switched_before_the_tls_rule_existed_gets_its_status() {
    let (cp, client, ns) = setup("legacy-tls").await;
    let api = sq_api(&client, &ns);
    let clustered = json!({"clustered": true, "endpoints": {
        "rest": "https://x.ns.svc:6333", "grpc": "https://x.ns.svc:6334"}});
    for name in ["switched", "probe"] {
        let sq = instance(&ns, name, json!({"replicas": 3, "tls": {"enabled": true}}));
        if let Some(e) = create(&api, &sq, false).await {
            panic!("{name}: {e:?}");
        }
        apply_status(&api, "SecureQdrant", name, clustered.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let flip = json!({"spec": {"tls": {"enabled": false}}});
    // The switch of `name`; a dry run for the probe, which must keep its setting (a probe that
    // got through before the rule is back would pass every later probe).
    let switch = |name: &'static str| {
        let api = api.clone();
        let flip = flip.clone();
        let pp = PatchParams {
            dry_run: name == "probe",
            ..PatchParams::default()
        };
        async move {
            match api.patch(name, &pp, &Patch::Merge(&flip)).await {
                Ok(_) => None,
                Err(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
                Err(e) => panic!("{e}"),
            }
        }
    };
    let _guard = CRD_LOCK.lock().await;
    // (a) The switch of a clustered instance is refused.
    match switch("probe").await {
        Some((422, m)) if m.contains(TLS_RULE) => {}
        other => panic!("the switch is not refused: {other:?}"),
    }
    // (b) A switch that got past the previous CRD.
    let saved = edit_root_rule(&client, SQ_CRD, TLS_RULE, None).await;
    eventually(Duration::from_secs(60), || async {
        switch("switched")
            .await
            .map_or(Ok(()), |e| Err(format!("still refused: {e:?}")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    edit_root_rule(&client, SQ_CRD, TLS_RULE, Some(saved)).await;
    eventually(Duration::from_secs(60), || async {
        match switch("probe").await {
            Some((422, m)) if m.contains(TLS_RULE) => Ok(()),
            other => Err(format!("the rule is not applied again yet: {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(_guard);
    let stored = api.get("switched").await.unwrap();
    assert_eq!(stored.data["spec"]["tls"]["enabled"], json!(false));
    apply_status(
        &api,
        "SecureQdrant",
        "switched",
        // All the fields of this field manager: a server-side apply drops the ones it omits.
        {
            let mut status = clustered.clone();
            status["observedGeneration"] = json!(2);
            status
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the status of the switched legacy instance is refused: {e}"));
    api.patch(
        "switched",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"team": "search"}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("a label on the switched legacy instance is refused: {e}"));
    // Switching back to what the pods run with is allowed.
    api.patch(
        "switched",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"tls": {"enabled": true}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("switching back is refused: {e}"));
    cp.delete_namespace(&client, &ns).await;
}
