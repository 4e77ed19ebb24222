//! The tenant boundary (issue 12): whoever may create a SecureQdrant or a QdrantAccessToken must
//! not get the operator to write or delete objects it does not own. One test per attack, on the
//! real control plane (`tests/support/control_plane.rs`): the attacker is a tenant user with only
//! the rights the threat model gives it (a Role for SecureQdrants and QdrantAccessTokens in its
//! namespace), other users' objects are made as admin, and the operator's reconcile functions run
//! in-process as the chart's ServiceAccount (its RBAC for the test's namespace) with the
//! controller's label-selected caches (`tests/support/tenant.rs`). What the operator wrote is read
//! from the API server's audit log; the garbage collector is the real one.
//!
//! The rule: a child is created when absent, updated when controlled by THIS object (its UID),
//! and otherwise left alone — a `ChildConflict` condition and a Warning Event name it and its
//! owner. An orphan is adopted only when annotated `secureqdrant.dev/adopt: <instance>`.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/real_server.rs"]
mod real_server;
#[path = "support/tenant.rs"]
mod tenant;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use control_plane::eventually;
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use secure_qdrant_operator::error::Error;
use secure_qdrant_operator::reconcile::ownership::ADOPT_ANNOTATION;
use tenant::{KINDS, LIMIT, SQ_API, Tenant, stable, writes, writes_to};

use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};

fn clock() -> Option<Timestamp> {
    Some("2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap())
}

async fn start(prefix: &str) -> Tenant {
    Tenant::start(prefix, clock()).await
}

/// Every child of a converged SecureQdrant `name` with `spec`: (apiVersion, kind, name, object).
async fn children_of(name: &str, spec: Value) -> Vec<(String, String, String, Value)> {
    let t = start("tb-children").await;
    t.create_instance(name, spec).await;
    t.converge(name).await;
    let out = t
        .managed()
        .await
        .into_iter()
        .map(|(api, kind, o)| {
            let n = o["metadata"]["name"].as_str().unwrap().to_owned();
            (api.to_owned(), kind.to_owned(), n, o)
        })
        .collect();
    t.env.cp.delete_namespace(&t.env.admin, t.ns()).await;
    out
}

/// A user's object with the same kind and name as `child`, in `ns`: its content, none of its
/// metadata but the name, a label of the user's, and `owner` as controller (None: no owner).
/// A Service's cluster IP is left to the API server (the child's is still allocated).
fn foreign(api: &str, kind: &str, child: &Value, owner: Option<&Value>, ns: &str) -> Value {
    let mut o = json!({
        "apiVersion": api, "kind": kind,
        "metadata": {"name": child["metadata"]["name"], "namespace": ns,
                     "labels": {"team": "payments"}},
    });
    for (k, v) in child.as_object().unwrap() {
        if !["apiVersion", "kind", "metadata", "status"].contains(&k.as_str()) {
            o[k] = v.clone();
        }
    }
    if kind == "Service" && o["spec"]["clusterIP"] != "None" {
        let spec = o["spec"].as_object_mut().unwrap();
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if let Some(owner) = owner {
        o["metadata"]["ownerReferences"] = json!([{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": true,
        }]);
    }
    o
}

fn condition(sq: &SecureQdrant, type_: &str) -> Option<(String, String, String)> {
    sq.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Asserts the attack on `(kind, name)` was refused: the reconcile failed with a ChildConflict
/// naming it and `owner`, the condition and a Warning Event (on the real API server) say so.
async fn assert_refused(
    t: &Tenant,
    instance: &str,
    result: Result<(), Error>,
    kind: &str,
    name: &str,
    owner: &str,
) {
    match result {
        Err(Error::ChildConflict {
            kind: k,
            name: n,
            owner: o,
        }) => {
            assert_eq!((k, n.as_str()), (kind, name));
            assert!(o.contains(owner), "owner {o:?} should name {owner:?}");
        }
        other => panic!("{kind} {name}: expected a ChildConflict, got {other:?}"),
    }
    let sq = t.instance(instance).await;
    let (status, reason, message) =
        condition(&sq, "ChildConflict").expect("a ChildConflict condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ObjectNotOwned")
    );
    assert!(
        message.contains(&format!("{kind} {name} ")) && message.contains(owner),
        "{message}"
    );
    let warnings = t.warnings().await;
    assert!(
        warnings.iter().any(|(r, note, _)| r == "ChildConflict"
            && note.contains(&format!("{kind} {name} "))
            && note.contains(owner)),
        "no Warning Event naming {kind} {name} and {owner}: {warnings:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The CRD of the previous operator version (no reserved-name rule for spec.secretName), for the
// tests that need a token created before that rule existed: the real API server refuses it now.

/// Tests that change or rely on the QdrantAccessToken CRD's reserved-name rule take this lock
/// (they run in parallel on one control plane).
static CRD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TOKEN_CRD: &str = "qdrantaccesstokens.secureqdrant.dev";
const RESERVED_RULE: &str = "may not end in";

/// Whether the real API server refuses a token named `secret_name` (a dry run as `client`);
/// the refusal's message.
async fn crd_refusal(client: &Client, ns: &str, secret_name: Option<&str>) -> Option<String> {
    let mut t = json!({
        "apiVersion": SQ_API, "kind": "QdrantAccessToken",
        "metadata": {"name": "t", "namespace": ns},
        "spec": {"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
                 "lifetime": "24h"}
    });
    if let Some(n) = secret_name {
        t["spec"]["secretName"] = json!(n);
    }
    let qat: QdrantAccessToken = serde_json::from_value(t).unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<QdrantAccessToken>::namespaced(client.clone(), ns)
        .create(&params, &qat)
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(e)) => Some(e.message),
        Err(e) => panic!("dry run: {e}"),
    }
}

/// Waits until the API server applies the reserved-name rule (`present`) or no longer does.
async fn wait_for_rule(t: &Tenant, present: bool) {
    eventually(LIMIT, || async {
        let refused = crd_refusal(&t.env.admin, t.ns(), Some("probe-tls"))
            .await
            .is_some_and(|m| m.contains(RESERVED_RULE));
        (refused == present)
            .then_some(())
            .ok_or_else(|| format!("the reserved-name rule is not yet {present}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Edits the token CRD's schema (`openAPIV3Schema`) with `f`.
async fn edit_token_crd(admin: &Client, f: impl FnOnce(&mut Value)) {
    let api = Api::<CustomResourceDefinition>::all(admin.clone());
    let mut crd = serde_json::to_value(api.get(TOKEN_CRD).await.unwrap()).unwrap();
    let versions = crd["spec"]["versions"].as_array_mut().unwrap();
    assert_eq!(versions.len(), 1, "one version of the token CRD");
    f(&mut versions[0]["schema"]["openAPIV3Schema"]);
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    api.replace(TOKEN_CRD, &PostParams::default(), &crd)
        .await
        .expect("the token CRD replaced");
}

/// The rules of the schema's root (`at_spec` false) or of its `spec`.
fn rules_at(schema: &mut Value, at_spec: bool) -> &mut Value {
    let node = if at_spec {
        &mut schema["properties"]["spec"]
    } else {
        schema
    };
    if node["x-kubernetes-validations"].is_null() {
        node["x-kubernetes-validations"] = json!([]);
    }
    &mut node["x-kubernetes-validations"]
}

/// Creates QdrantAccessToken `name` as the tenant while the CRD is the previous version's (the
/// reserved-name rule taken out), then puts the rule back: a token of an upgraded cluster.
async fn create_legacy_token(t: &Tenant, name: &str, spec: Value) -> QdrantAccessToken {
    let _guard = CRD_LOCK.lock().await;
    let mut saved = Vec::new();
    edit_token_crd(&t.env.admin, |schema| {
        for at_spec in [false, true] {
            let rules = rules_at(schema, at_spec).as_array_mut().unwrap();
            rules.retain(|r| {
                let reserved = r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(RESERVED_RULE));
                if reserved {
                    saved.push((at_spec, r.clone()));
                }
                !reserved
            });
        }
    })
    .await;
    assert_eq!(saved.len(), 1, "the rule taken out");
    wait_for_rule(t, false).await;
    let qat = t.create_token(name, spec).await;
    edit_token_crd(&t.env.admin, |schema| {
        for (at_spec, rule) in saved {
            rules_at(schema, at_spec).as_array_mut().unwrap().push(rule);
        }
    })
    .await;
    wait_for_rule(t, true).await;
    qat
}

// ---------------------------------------------------------------------------------------------

/// For each child a SecureQdrant writes (every kind, every Secret, both Services, every
/// NetworkPolicy, the PDB), a user's object of that kind and name exists first — alternately
/// with no owner and controlled by another object. The instance writes nothing to it, reports it,
/// and deleting the instance leaves it (it never got an owner reference to the instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_child_name_taken_by_a_users_object_is_left_byte_for_byte_and_reported() {
    let spec = json!({"replicas": 3});
    let children = children_of("vectors", spec.clone()).await;
    let kinds: std::collections::BTreeSet<&str> =
        children.iter().map(|(_, k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds.len(),
        KINDS.len(),
        "every child kind is covered: {kinds:?}"
    );
    for (i, (api, kind, name, child)) in children.iter().enumerate() {
        let t = start("tb-taken").await;
        let owner = if i % 2 == 0 {
            None
        } else {
            Some(
                t.env
                    .insert(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "payments-app"}}))
                    .await
                    .unwrap(),
            )
        };
        t.env
            .insert(foreign(api, kind, child, owner.as_ref(), t.ns()))
            .await
            .unwrap_or_else(|e| panic!("the user's {kind} {name}: {e}"));
        let before = stable(t.get(api, kind, name).await.unwrap());
        t.create_instance("vectors", spec.clone()).await;
        let mark = t.env.mark().await;
        let result = t.reconcile("vectors").await;
        let owner_text = if owner.is_some() {
            "ConfigMap/payments-app"
        } else {
            "no owner"
        };
        assert_refused(&t, "vectors", result, kind, name, owner_text).await;
        // Again: still nothing written to it.
        let _ = t.reconcile("vectors").await;
        assert_eq!(
            stable(t.get(api, kind, name).await.expect("not deleted")),
            before,
            "{kind} {name} was written"
        );
        let wrote = writes_to(&t.env.counters_since(&mark).await, kind, name);
        assert!(wrote.is_empty(), "{kind} {name} was written: {wrote:?}");
        // Deleting the instance garbage-collects its own children, never the user's object.
        t.delete_instance_and_wait_for_gc("vectors").await;
        assert_eq!(
            stable(t.get(api, kind, name).await.expect("not garbage-collected")),
            before,
            "{kind} {name} changed when the instance was deleted"
        );
        t.env.cp.delete_namespace(&t.env.admin, t.ns()).await;
    }
}

/// A SecureQdrant named `default-deny` would write NetworkPolicies `default-deny-ingress` and
/// `default-deny-egress`, the names of a namespace's usual default-deny policies: the user's
/// policies stay as they are and survive the instance's deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_named_default_deny_leaves_the_namespaces_default_deny_policies() {
    let t = start("tb-deny").await;
    let policies = ["default-deny-ingress", "default-deny-egress"];
    for (name, types) in policies.iter().zip([["Ingress"], ["Egress"]]) {
        t.env
            .insert(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name},
                "spec": {"podSelector": {}, "policyTypes": types}
            }))
            .await
            .unwrap();
    }
    let mut before = Vec::new();
    for p in policies {
        before.push(stable(
            t.get("networking.k8s.io/v1", "NetworkPolicy", p)
                .await
                .unwrap(),
        ));
    }
    t.create_instance("default-deny", json!({})).await;
    let mark = t.env.mark().await;
    let result = t.reconcile("default-deny").await;
    assert_refused(
        &t,
        "default-deny",
        result,
        "NetworkPolicy",
        "default-deny-ingress",
        "no owner",
    )
    .await;
    // Nothing runs without its policies: no StatefulSet was written.
    assert!(
        t.get("apps/v1", "StatefulSet", "default-deny")
            .await
            .is_none()
    );
    t.delete_instance_and_wait_for_gc("default-deny").await;
    let counters = t.env.counters_since(&mark).await;
    for (p, b) in policies.iter().zip(&before) {
        assert_eq!(
            &stable(
                t.get("networking.k8s.io/v1", "NetworkPolicy", p)
                    .await
                    .expect("kept")
            ),
            b
        );
        let wrote = writes_to(&counters, "NetworkPolicy", p);
        assert!(wrote.is_empty(), "{p} was written: {wrote:?}");
    }
}

/// A child orphaned on purpose (`kubectl delete --cascade=orphan`, then the SecureQdrant created
/// again, as a restore does) is not taken over by the new instance (another UID) until someone
/// who may write it annotates it for that instance by name — which the tenant may not do; then
/// it is adopted — its controller reference added, the annotation removed — and the keys in it
/// are kept, not regenerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_child_is_adopted_only_when_annotated_for_the_instance() {
    let t = start("tb-adopt").await;
    t.create_instance("vectors", json!({})).await;
    t.converge("vectors").await;
    let key_before = t.get("v1", "Secret", "vectors-api-key").await.unwrap()["data"].clone();
    let uid = t.instance("vectors").await.metadata.uid.unwrap();
    Api::<SecureQdrant>::namespaced(t.user.clone(), t.ns())
        .delete("vectors", &DeleteParams::orphan())
        .await
        .unwrap();
    // The real garbage collector takes the owner references off, then lets the instance go.
    eventually(LIMIT, || async {
        if t.get(SQ_API, "SecureQdrant", "vectors").await.is_some() {
            return Err("the SecureQdrant is still there".to_owned());
        }
        for (_, kind, o) in t.managed().await {
            if o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["uid"] == uid.as_str()))
            {
                return Err(format!("{kind} {} still owned", o["metadata"]["name"]));
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let children = t.managed().await;
    assert!(children.len() >= 8);
    for (_, kind, o) in &children {
        assert!(
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty()),
            "{kind} still owned"
        );
    }

    t.create_instance("vectors", json!({})).await;
    let result = t.reconcile("vectors").await;
    assert_refused(
        &t,
        "vectors",
        result,
        "Secret",
        "vectors-api-key",
        "no owner",
    )
    .await;
    // The tenant may not give its consent on the Secret: it has no right to write it.
    let denied = Api::<Secret>::namespaced(t.user.clone(), t.ns())
        .patch(
            "vectors-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ADOPT_ANNOTATION: "vectors"}}})),
        )
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(e)) if e.code == 403),
        "{denied:?}"
    );
    // Naming another instance is no consent for this one.
    t.merge_patch(
        "v1",
        "Secret",
        "vectors-api-key",
        json!({"metadata": {"annotations": {ADOPT_ANNOTATION: "other"}}}),
    )
    .await;
    let result = t.reconcile("vectors").await;
    assert!(
        matches!(result, Err(Error::ChildConflict { .. })),
        "{result:?}"
    );

    for (api, kind, o) in t.managed().await {
        let name = o["metadata"]["name"].as_str().unwrap();
        t.merge_patch(
            api,
            kind,
            name,
            json!({"metadata": {"annotations": {ADOPT_ANNOTATION: "vectors"}}}),
        )
        .await;
    }
    t.converge("vectors").await;
    let uid = t.instance("vectors").await.metadata.uid.unwrap();
    for (_, kind, o) in t.managed().await {
        let name = &o["metadata"]["name"];
        let refs = o["metadata"]["ownerReferences"].as_array().cloned();
        assert!(
            refs.unwrap_or_default()
                .iter()
                .any(|r| r["uid"] == uid.as_str() && r["controller"] == true),
            "{kind} {name} not adopted"
        );
        assert!(
            o["metadata"]["annotations"][ADOPT_ANNOTATION].is_null(),
            "{kind} {name}: the adopt annotation is used up"
        );
    }
    assert_eq!(
        t.get("v1", "Secret", "vectors-api-key").await.unwrap()["data"],
        key_before,
        "the adopted keys are kept"
    );
    let sq = t.instance("vectors").await;
    assert_eq!(condition(&sq, "ChildConflict"), None);
}

/// An instance converged under the previous rules — its children carry its controller
/// reference, as every operator version wrote them — sees no write at all from the ownership
/// checks: an upgrade neither writes nor rolls it. (Converged means its pods are Ready too: the
/// real StatefulSet controller and kwok make them so, and the operator records the formed
/// cluster first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_instance_sees_zero_writes() {
    let t = start("tb-zero").await;
    t.create_instance("vectors", json!({"replicas": 3})).await;
    t.converge("vectors").await;
    eventually(LIMIT, || async {
        let sts = t.get("apps/v1", "StatefulSet", "vectors").await.unwrap();
        let s = &sts["status"];
        (s["readyReplicas"] == 3 && s["updatedReplicas"] == 3)
            .then_some(())
            .ok_or_else(|| format!("StatefulSet not ready: {s}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    t.converge("vectors").await;
    let sts = stable(t.get("apps/v1", "StatefulSet", "vectors").await.unwrap());
    t.env.reset_counters().await;
    for _ in 0..3 {
        t.reconcile("vectors").await.expect("reconciles");
    }
    let counters = t.env.counters().await;
    assert_eq!(writes(&counters), 0, "{:?}", counters.log);
    assert_eq!(
        stable(t.get("apps/v1", "StatefulSet", "vectors").await.unwrap()),
        sts
    );
}

/// A QdrantAccessToken whose `spec.secretName` names an application's Secret: nothing is
/// written to it, the token says whose it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_users_secret_leaves_it_untouched() {
    let t = start("tb-tokuser").await;
    t.create_instance("vectors", json!({})).await;
    t.converge("vectors").await;
    t.env
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "payments-db"},
            "stringData": {"password": "the application's own"}
        }))
        .await
        .unwrap();
    let before = stable(t.get("v1", "Secret", "payments-db").await.unwrap());
    t.create_token(
        "grab",
        json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
               "secretName": "payments-db"}),
    )
    .await;
    let mark = t.env.mark().await;
    t.reconcile_token("grab").await.expect("reconciled");
    assert_eq!(
        stable(t.get("v1", "Secret", "payments-db").await.unwrap()),
        before
    );
    let wrote = writes_to(&t.env.counters_since(&mark).await, "Secret", "payments-db");
    assert!(wrote.is_empty(), "{wrote:?}");
    let ready = token_condition(&t, "grab", "Ready").await;
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "SecretConflict")
    );
    assert!(ready.2.contains("no owner"), "{}", ready.2);
}

/// A QdrantAccessToken may not take a Secret name an instance uses or will need — any
/// `<x>-api-key`, `<x>-ca`, `<x>-tls`, `<x>-metrics-client`, for an instance that exists or not
/// yet: the real API server refuses it (the CRD's rule, for the tenant), and so does the
/// operator's validation for a token created before that rule (no Secret is written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_may_not_take_a_secret_name_an_instance_needs() {
    let t = start("tb-reserved").await;
    // The CRD rule, on the real API server.
    {
        let _guard = CRD_LOCK.lock().await;
        for name in [
            "future-api-key",
            "vectors-ca",
            "x-tls",
            "vectors-metrics-client",
        ] {
            let refusal = crd_refusal(&t.user, t.ns(), Some(name)).await;
            assert!(
                refusal
                    .as_deref()
                    .is_some_and(|m| m.contains(RESERVED_RULE)),
                "{name} accepted by the CRD: {refusal:?}"
            );
        }
        for name in [
            None,
            Some("vectors-token"),
            Some("my-tls-token"),
            Some("cab"),
        ] {
            let refusal = crd_refusal(&t.user, t.ns(), name).await;
            assert_eq!(refusal, None, "{name:?} refused by the CRD");
        }
    }

    // The operator's own validation, for a token that got past the CRD (created before it had
    // the rule: the real API server refuses it now).
    t.create_instance("vectors", json!({})).await;
    t.converge("vectors").await;
    create_legacy_token(
        &t,
        "squat",
        json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
               "secretName": "later-tls"}),
    )
    .await;
    t.reconcile_token("squat").await.expect("reconciled");
    assert!(t.get("v1", "Secret", "later-tls").await.is_none());
    let ready = token_condition(&t, "squat", "Ready").await;
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        ready.2.contains("spec.secretName") && ready.2.contains("\"later\""),
        "{}",
        ready.2
    );
}

async fn token_condition(t: &Tenant, name: &str, type_: &str) -> (String, String, String) {
    let qat = t.token(name).await;
    qat.status
        .unwrap_or_else(|| panic!("token {name} has no status"))
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
        .expect("the condition")
}

/// A SecureQdrant deleted and created again under the same name while the garbage collector
/// still removes the old one's children (here a ConfigMap held by a finalizer): the new instance
/// (another UID) does not take the old child over — it waits, says why, and creates its own once
/// the old one is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_instance_waits_for_the_children_of_its_earlier_incarnation() {
    let t = start("tb-recreate").await;
    t.create_instance("vectors", json!({})).await;
    t.converge("vectors").await;
    t.merge_patch(
        "v1",
        "ConfigMap",
        "vectors-config",
        json!({"metadata": {"finalizers": ["example.com/backup"]}}),
    )
    .await;
    // The real garbage collector deletes every other child; the ConfigMap stays, being deleted.
    t.delete_instance_and_wait_for_gc("vectors").await;
    let lingering = t
        .get("v1", "ConfigMap", "vectors-config")
        .await
        .expect("held");
    assert!(lingering["metadata"]["deletionTimestamp"].is_string());
    let before = stable(lingering);

    t.create_instance("vectors", json!({})).await;
    let mark = t.env.mark().await;
    let result = t.reconcile("vectors").await;
    assert_refused(
        &t,
        "vectors",
        result,
        "ConfigMap",
        "vectors-config",
        "an earlier SecureQdrant of the same name",
    )
    .await;
    assert_eq!(
        stable(t.get("v1", "ConfigMap", "vectors-config").await.unwrap()),
        before
    );
    let wrote = writes_to(
        &t.env.counters_since(&mark).await,
        "ConfigMap",
        "vectors-config",
    );
    assert!(wrote.is_empty(), "{wrote:?}");

    t.merge_patch(
        "v1",
        "ConfigMap",
        "vectors-config",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    eventually(LIMIT, || async {
        match t.get("v1", "ConfigMap", "vectors-config").await {
            None => Ok(()),
            Some(_) => Err("the old ConfigMap is still there".to_owned()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    t.converge("vectors").await;
    let uid = t.instance("vectors").await.metadata.uid.unwrap();
    let config = t
        .get("v1", "ConfigMap", "vectors-config")
        .await
        .expect("recreated");
    assert_eq!(
        config["metadata"]["ownerReferences"][0]["uid"],
        uid.as_str()
    );
    assert_eq!(
        condition(&t.instance("vectors").await, "ChildConflict"),
        None
    );
}

/// Upgrade: a token created before reserved names were refused, whose Secret is `<x>-tls`,
/// keeps that Secret exactly as it is (applications still mount it) and is told how to fix it;
/// its Secret is not deleted as an invalid token's would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_already_holds_a_reserved_name_keeps_its_secret_and_names_the_fix() {
    let t = start("tb-legacy").await;
    t.create_instance("vectors", json!({})).await;
    t.converge("vectors").await;
    let qat = create_legacy_token(
        &t,
        "legacy",
        json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
               "secretName": "old-tls"}),
    )
    .await;
    t.env
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "old-tls",
                         "labels": {LABEL_MANAGED_BY: MANAGER},
                         "ownerReferences": [{
                             "apiVersion": SQ_API, "kind": "QdrantAccessToken",
                             "name": "legacy", "uid": qat.metadata.uid, "controller": true}]},
            "stringData": {"token": "issued by the previous version"}
        }))
        .await
        .unwrap();
    let before = stable(t.get("v1", "Secret", "old-tls").await.unwrap());
    let mark = t.env.mark().await;
    t.reconcile_token("legacy").await.expect("reconciled");
    assert_eq!(
        stable(t.get("v1", "Secret", "old-tls").await.expect("kept")),
        before
    );
    let wrote = writes_to(&t.env.counters_since(&mark).await, "Secret", "old-tls");
    assert!(wrote.is_empty(), "{wrote:?}");
    let ready = token_condition(&t, "legacy", "Ready").await;
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        ready
            .2
            .contains("recreate the QdrantAccessToken with another spec.secretName"),
        "{}",
        ready.2
    );
}

/// The Secrets in the namespace written by the operator for a token (`ownerReferences` naming
/// a QdrantAccessToken).
async fn token_secrets(t: &Tenant) -> Vec<Value> {
    t.list("v1", "Secret")
        .await
        .into_iter()
        .filter(|s| {
            s["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "QdrantAccessToken"))
        })
        .collect()
}

/// `kubectl delete sq x --cascade=orphan` leaves `x-api-key`, `x-ca` and `x-tls`; another
/// author creates SecureQdrant `x` (its reconcile stops: the Secrets are not its own) and a
/// manage token for it. The operator signs nothing with the orphaned instance's key: no token
/// Secret, and the token's condition names the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_not_signed_with_an_orphaned_api_key_of_an_earlier_instance() {
    let t = start("tb-orphankey").await;
    t.create_instance("x", json!({})).await;
    t.converge("x").await;
    Api::<SecureQdrant>::namespaced(t.user.clone(), t.ns())
        .delete("x", &DeleteParams::orphan())
        .await
        .unwrap();
    eventually(LIMIT, || async {
        let sq = t.get(SQ_API, "SecureQdrant", "x").await;
        let key = t.get("v1", "Secret", "x-api-key").await;
        match (sq, key) {
            (None, Some(k))
                if k["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|r| r.is_empty()) =>
            {
                Ok(())
            }
            (sq, key) => Err(format!(
                "not orphaned yet: instance {}, key {key:?}",
                sq.is_some()
            )),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        t.get("v1", "Secret", "x-api-key").await.is_some(),
        "orphaned"
    );
    t.create_instance("x", json!({"auth": {"allowManageTokens": true}}))
        .await;
    assert!(matches!(
        t.reconcile("x").await,
        Err(Error::ChildConflict { .. })
    ));
    t.create_token(
        "grab",
        json!({"qdrantRef": {"name": "x"}, "access": {"global": "m"}}),
    )
    .await;
    t.reconcile_token("grab").await.expect("reconciled");
    assert_eq!(token_secrets(&t).await, Vec::<Value>::new());
    let ready = token_condition(&t, "grab", "Ready").await;
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "ChildConflict")
    );
    assert!(
        ready.2.contains("Secret x-api-key") && ready.2.contains("no owner"),
        "{}",
        ready.2
    );
}

/// An instance with client certificates whose `x-ca` is not its own (here a valid CA Secret
/// with no owner, as a cert-manager or hand-made `x-ca` would be, or an orphan): no client
/// certificate is issued from it, no token written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_issued_from_a_foreign_ca_of_the_instances_name() {
    let t = start("tb-foreignca").await;
    t.create_instance("x", json!({"tls": {"clientCertificates": true}}))
        .await;
    t.converge("x").await;
    t.merge_patch(
        "v1",
        "Secret",
        "x-ca",
        json!({"metadata": {"ownerReferences": null}}),
    )
    .await;
    t.create_token(
        "app",
        json!({"qdrantRef": {"name": "x"}, "access": {"global": "r"}}),
    )
    .await;
    t.reconcile_token("app").await.expect("reconciled");
    assert_eq!(token_secrets(&t).await, Vec::<Value>::new());
    let ready = token_condition(&t, "app", "Ready").await;
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "ChildConflict")
    );
    assert!(
        ready.2.contains("Secret x-ca") && ready.2.contains("no owner"),
        "{}",
        ready.2
    );
}

/// An instance serving the user's certificate (`spec.tls.certificateSecretRef`) whose Secret no
/// longer allows it (the opt-in label was removed): its token does not copy that Secret's
/// `ca.crt`, nothing is written, and the condition names the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_does_not_copy_a_referenced_certificate_secret_that_no_longer_allows_it() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use k8s_openapi::jiff::SignedDuration;
    use secure_qdrant_operator::tls::{CaSubject, issue_ca, issue_leaf, serving_dns_names};

    let t = start("tb-certref").await;
    let now = clock().unwrap();
    let ca = issue_ca(
        &CaSubject::new(t.ns(), "own"),
        SignedDuration::from_hours(8760),
        now,
    )
    .unwrap();
    let leaf = issue_leaf(
        &ca,
        &serving_dns_names("x", t.ns(), "cluster.local", &[]),
        SignedDuration::from_hours(2000),
        now,
    )
    .unwrap();
    let data: std::collections::BTreeMap<String, String> = leaf
        .to_secret_data(std::slice::from_ref(ca.cert()))
        .into_iter()
        .map(|(k, v)| (k, STANDARD.encode(v.0)))
        .collect();
    t.env
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "own-tls",
                         "labels": {"secureqdrant.dev/allowed-instance": "x"}},
            "type": "kubernetes.io/tls", "data": data,
        }))
        .await
        .unwrap();
    t.create_instance(
        "x",
        json!({"tls": {"certificateSecretRef": {"name": "own-tls"}}}),
    )
    .await;
    t.converge("x").await;
    t.merge_patch(
        "v1",
        "Secret",
        "own-tls",
        json!({"metadata": {"labels": null}}),
    )
    .await;
    t.create_token(
        "app",
        json!({"qdrantRef": {"name": "x"}, "access": {"global": "r"}}),
    )
    .await;
    t.reconcile_token("app").await.expect("reconciled");
    assert_eq!(token_secrets(&t).await, Vec::<Value>::new());
    let ready = token_condition(&t, "app", "Ready").await;
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "SecretNotAllowed")
    );
    assert!(
        ready.2.contains("own-tls") && ready.2.contains("spec.tls.certificateSecretRef"),
        "{}",
        ready.2
    );
}

/// A tenant names a QdrantAccessToken with the longest name the API server allows (253
/// characters; the CRD lets it when `spec.secretName` is set): the operator's Event about it is
/// stored. An Event's name is the object's name and 17 more characters (kube-runtime's recorder
/// used the whole name, so the API server refused every Event about such a token and the tenant
/// only had its condition); `events::Publisher` cuts the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_the_longest_name_still_gets_its_events() {
    let t = start("tb-longname").await;
    let name = format!("{}-{}", "a".repeat(235), "b".repeat(17));
    assert_eq!(name.len(), 253);
    t.create_token(
        &name,
        json!({"qdrantRef": {"name": "missing"}, "access": {"global": "r"},
               "secretName": "long-token"}),
    )
    .await;
    t.reconcile_token(&name).await.expect("reconciled");
    let (status, reason, _) = token_condition(&t, &name, "Ready").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InstanceMissing")
    );
    let events = t.events_regarding("QdrantAccessToken", &name).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("InstanceMissing")
                && e.note.as_deref().is_some_and(|n| n.contains("missing"))),
        "no InstanceMissing Event about the token: {events:#?}"
    );
}
