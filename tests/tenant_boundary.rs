//! The tenant boundary (issue 12): whoever may create a SecureQdrant or a QdrantAccessToken must
//! not get the operator to write or delete objects it does not own. One test per attack,
//! against the in-memory API server of `tests/fake-apiserver`, with the real reconcile functions
//! in-process and the controller's label-selected caches.
//!
//! The rule: a child is created when absent, updated when controlled by THIS object (its UID),
//! and otherwise left alone — a `ChildConflict` condition and a Warning Event name it and its
//! owner. An orphan is adopted only when annotated `secureqdrant.dev/adopt: <instance>`.

#[path = "support/in_process.rs"]
mod in_process;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use in_process::{cached_versions, client_for, managed_stores, reflect, versions};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use secure_qdrant_operator::error::Error;
use secure_qdrant_operator::events::{EventLog, Events};
use secure_qdrant_operator::reconcile::ownership::ADOPT_ANNOTATION;
use secure_qdrant_operator::reconcile::{self, Context, token};
use secure_qdrant_operator::settings::Settings;

const NS: &str = "tenant";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
/// Every kind a SecureQdrant writes, as (apiVersion, kind).
const KINDS: [(&str, &str); 7] = secure_qdrant_operator::children::CHILD_KINDS;

struct Env {
    server: FakeApiServer,
    client: Client,
    ctx: Arc<Context>,
    events: EventLog,
    instances: Store<SecureQdrant>,
    tasks: Vec<JoinHandle<()>>,
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
        let instances = reflect::<SecureQdrant>(&client, &mut tasks, false);
        let clock = Arc::new(Mutex::new(
            "2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap(),
        ));
        let (events, log) = Events::memory();
        let ctx = Context::new(client.clone(), stores, events, Settings::default())
            .with_clock(Arc::new(move || *clock.lock().unwrap()));
        let env = Env {
            server,
            client,
            ctx: Arc::new(ctx),
            events: log,
            instances,
            tasks,
        };
        env.settle().await;
        env
    }

    /// Creates SecureQdrant `name` with `spec` (not reconciled).
    async fn create_instance(&self, name: &str, spec: Value) {
        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": name, "namespace": NS}, "spec": spec
        }))
        .unwrap();
        Api::<SecureQdrant>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &sq)
            .await
            .expect("SecureQdrant created");
    }

    fn instance(&self, name: &str) -> SecureQdrant {
        serde_json::from_value(
            self.server
                .get(SQ_API, "SecureQdrant", NS, name)
                .expect("the SecureQdrant"),
        )
        .unwrap()
    }

    /// One reconcile of SecureQdrant `name`, after the caches caught up.
    async fn reconcile(&self, name: &str) -> Result<(), Error> {
        self.settle().await;
        reconcile::reconcile(Arc::new(self.instance(name)), self.ctx.clone())
            .await
            .map(|_| ())
    }

    /// Reconciles until a reconcile writes nothing (the instance is converged).
    async fn converge(&self, name: &str) {
        for _ in 0..5 {
            self.server.reset_counters();
            self.reconcile(name).await.expect("reconciles");
            if writes(&self.server) == 0 {
                return;
            }
        }
        panic!("{name} does not converge");
    }

    fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.server.get(api_version, kind, NS, name)
    }

    fn warnings(&self) -> Vec<(String, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.type_ == EventType::Warning)
            .map(|(_, e)| (e.reason.clone(), e.note.clone().unwrap_or_default()))
            .collect()
    }

    /// Waits until the caches hold what the server holds (managed objects, SecureQdrants).
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let managed = |api: &str, kind: &str| {
                versions(
                    self.server
                        .list(api, kind, "")
                        .into_iter()
                        .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
                )
            };
            let s = &self.ctx.stores;
            let pairs = [
                (
                    managed("v1", "ServiceAccount"),
                    cached_versions(&s.service_accounts),
                ),
                (managed("v1", "Secret"), cached_versions(&s.secrets)),
                (managed("v1", "ConfigMap"), cached_versions(&s.config_maps)),
                (managed("v1", "Service"), cached_versions(&s.services)),
                (
                    managed("networking.k8s.io/v1", "NetworkPolicy"),
                    cached_versions(&s.network_policies),
                ),
                (
                    managed("policy/v1", "PodDisruptionBudget"),
                    cached_versions(&s.pdbs),
                ),
                (
                    managed("apps/v1", "StatefulSet"),
                    cached_versions(&s.statefulsets),
                ),
                (
                    versions(self.server.list(SQ_API, "SecureQdrant", "").into_iter()),
                    cached_versions(&self.instances),
                ),
            ];
            if pairs.iter().all(|(a, b)| a == b) {
                return;
            }
            assert!(Instant::now() < deadline, "caches did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Writes of any kind to any resource.
fn writes(server: &FakeApiServer) -> u64 {
    let c = server.counters();
    let resources = [
        "serviceaccounts",
        "secrets",
        "configmaps",
        "services",
        "networkpolicies",
        "poddisruptionbudgets",
        "statefulsets",
        "secureqdrants",
        "qdrantaccesstokens",
    ];
    ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .flat_map(|verb| resources.iter().map(|r| c.get(verb, r)).collect::<Vec<_>>())
        .sum()
}

/// Every child of a converged SecureQdrant `name` with `spec`: (apiVersion, kind, name, object).
async fn children_of(name: &str, spec: Value) -> Vec<(String, String, String, Value)> {
    let env = Env::start().await;
    env.create_instance(name, spec).await;
    env.converge(name).await;
    let mut out = Vec::new();
    for (api, kind) in KINDS {
        for o in env.server.list(api, kind, NS) {
            if o["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER {
                let n = o["metadata"]["name"].as_str().unwrap().to_owned();
                out.push((api.to_owned(), kind.to_owned(), n, o));
            }
        }
    }
    out
}

/// A user's object with the same kind and name as `child`: its content, none of its metadata
/// but the name, a label of the user's, and `owner` as controller (None: no owner).
fn foreign(child: &Value, owner: Option<&Value>) -> Value {
    let mut o = json!({
        "apiVersion": child["apiVersion"], "kind": child["kind"],
        "metadata": {"name": child["metadata"]["name"], "namespace": NS,
                     "labels": {"team": "payments"}},
    });
    for (k, v) in child.as_object().unwrap() {
        if !["apiVersion", "kind", "metadata", "status"].contains(&k.as_str()) {
            o[k] = v.clone();
        }
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

/// Strips what a read adds each time (nothing else may differ: byte for byte).
fn stored(v: Value) -> String {
    serde_json::to_string(&v).unwrap()
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
/// naming it and `owner`, the condition and a Warning Event say so.
fn assert_refused(
    env: &Env,
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
    let sq = env.instance(instance);
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
    assert!(
        env.warnings().iter().any(|(r, note)| r == "ChildConflict"
            && note.contains(&format!("{kind} {name} "))
            && note.contains(owner)),
        "no Warning Event naming {kind} {name} and {owner}: {:?}",
        env.warnings()
    );
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
        let env = Env::start().await;
        let owner = if i % 2 == 0 {
            None
        } else {
            Some(
                env.server
                    .insert(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "payments-app", "namespace": NS}}))
                    .unwrap(),
            )
        };
        env.server.insert(foreign(child, owner.as_ref())).unwrap();
        let before = stored(env.get(api, kind, name).unwrap());
        env.create_instance("vectors", spec.clone()).await;
        let result = env.reconcile("vectors").await;
        let owner_text = if owner.is_some() {
            "ConfigMap/payments-app"
        } else {
            "no owner"
        };
        assert_refused(&env, "vectors", result, kind, name, owner_text);
        // Again: still nothing written to it.
        let _ = env.reconcile("vectors").await;
        assert_eq!(
            stored(env.get(api, kind, name).expect("not deleted")),
            before,
            "{kind} {name} was written"
        );
        // Deleting the instance garbage-collects its own children, never the user's object.
        env.server
            .delete(SQ_API, "SecureQdrant", NS, "vectors")
            .unwrap();
        assert_eq!(
            stored(env.get(api, kind, name).expect("not garbage-collected")),
            before,
            "{kind} {name} changed when the instance was deleted"
        );
    }
}

/// A SecureQdrant named `default-deny` would write NetworkPolicies `default-deny-ingress` and
/// `default-deny-egress`, the names of a namespace's usual default-deny policies: the user's
/// policies stay as they are and survive the instance's deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_named_default_deny_leaves_the_namespaces_default_deny_policies() {
    let env = Env::start().await;
    let policies = ["default-deny-ingress", "default-deny-egress"];
    for (name, types) in policies.iter().zip([["Ingress"], ["Egress"]]) {
        env.server
            .insert(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"podSelector": {}, "policyTypes": types}
            }))
            .unwrap();
    }
    let before: Vec<String> = policies
        .iter()
        .map(|p| stored(env.get("networking.k8s.io/v1", "NetworkPolicy", p).unwrap()))
        .collect();
    env.create_instance("default-deny", json!({})).await;
    let result = env.reconcile("default-deny").await;
    assert_refused(
        &env,
        "default-deny",
        result,
        "NetworkPolicy",
        "default-deny-ingress",
        "no owner",
    );
    // Nothing runs without its policies: no StatefulSet was written.
    assert!(env.get("apps/v1", "StatefulSet", "default-deny").is_none());
    env.server
        .delete(SQ_API, "SecureQdrant", NS, "default-deny")
        .unwrap();
    for (p, b) in policies.iter().zip(&before) {
        assert_eq!(
            &stored(
                env.get("networking.k8s.io/v1", "NetworkPolicy", p)
                    .expect("kept")
            ),
            b
        );
    }
}

/// A child orphaned on purpose (`kubectl delete --cascade=orphan`, then the SecureQdrant created
/// again, as a restore does) is not taken over by the new instance (another UID) until someone
/// who may write it annotates it for that instance by name; then it is adopted — its controller
/// reference added, the annotation removed — and the keys in it are kept, not regenerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_child_is_adopted_only_when_annotated_for_the_instance() {
    let env = Env::start().await;
    env.create_instance("vectors", json!({})).await;
    env.converge("vectors").await;
    let key_before = env.get("v1", "Secret", "vectors-api-key").unwrap()["data"].clone();
    Api::<SecureQdrant>::namespaced(env.client.clone(), NS)
        .delete("vectors", &DeleteParams::orphan())
        .await
        .unwrap();
    let children = || {
        let mut out = Vec::new();
        for (api, kind) in KINDS {
            for o in env.server.list(api, kind, NS) {
                if o["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER {
                    out.push((api, kind, o));
                }
            }
        }
        out
    };
    assert!(children().len() >= 8);
    for (_, kind, o) in children() {
        assert!(
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty()),
            "{kind} still owned"
        );
    }

    env.create_instance("vectors", json!({})).await;
    let result = env.reconcile("vectors").await;
    assert_refused(
        &env,
        "vectors",
        result,
        "Secret",
        "vectors-api-key",
        "no owner",
    );
    // Naming another instance is no consent for this one.
    env.server
        .merge_patch(
            "v1",
            "Secret",
            NS,
            "vectors-api-key",
            &json!({"metadata": {"annotations": {ADOPT_ANNOTATION: "other"}}}),
        )
        .unwrap();
    let result = env.reconcile("vectors").await;
    assert!(
        matches!(result, Err(Error::ChildConflict { .. })),
        "{result:?}"
    );

    for (api, kind, o) in children() {
        let name = o["metadata"]["name"].as_str().unwrap();
        env.server
            .merge_patch(
                api,
                kind,
                NS,
                name,
                &json!({"metadata": {"annotations": {ADOPT_ANNOTATION: "vectors"}}}),
            )
            .unwrap();
    }
    env.converge("vectors").await;
    let uid = env.instance("vectors").metadata.uid.unwrap();
    for (_, kind, o) in children() {
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
        env.get("v1", "Secret", "vectors-api-key").unwrap()["data"],
        key_before,
        "the adopted keys are kept"
    );
    let sq = env.instance("vectors");
    assert_eq!(condition(&sq, "ChildConflict"), None);
}

/// An instance converged under the previous rules — its children carry its controller
/// reference, as every operator version wrote them — sees no write at all from the ownership
/// checks: an upgrade neither writes nor rolls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_instance_sees_zero_writes() {
    let env = Env::start().await;
    env.create_instance("vectors", json!({"replicas": 3})).await;
    env.converge("vectors").await;
    let sts = stored(env.get("apps/v1", "StatefulSet", "vectors").unwrap());
    env.server.reset_counters();
    for _ in 0..3 {
        env.reconcile("vectors").await.expect("reconciles");
    }
    assert_eq!(writes(&env.server), 0, "{:?}", env.server.counters());
    assert_eq!(
        stored(env.get("apps/v1", "StatefulSet", "vectors").unwrap()),
        sts
    );
}

/// A QdrantAccessToken whose `spec.secretName` names an application's Secret: nothing is
/// written to it, the token says whose it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_users_secret_leaves_it_untouched() {
    let env = Env::start().await;
    env.create_instance("vectors", json!({})).await;
    env.converge("vectors").await;
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "payments-db", "namespace": NS},
        "stringData": {"password": "the application's own"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let before = stored(env.get("v1", "Secret", "payments-db").unwrap());
    let qat = create_token(
        &env,
        "grab",
        json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
               "secretName": "payments-db"}),
    )
    .await;
    env.settle().await;
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        stored(env.get("v1", "Secret", "payments-db").unwrap()),
        before
    );
    let ready = token_condition(&env, "grab", "Ready");
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "SecretConflict")
    );
    assert!(ready.2.contains("no owner"), "{}", ready.2);
}

/// A QdrantAccessToken may not take a Secret name an instance uses or will need — any
/// `<x>-api-key`, `<x>-ca`, `<x>-tls`, `<x>-metrics-client`, for an instance that exists or not
/// yet: the CRD refuses it, and so does the operator's validation (no Secret is written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_may_not_take_a_secret_name_an_instance_needs() {
    // The CRD rule.
    let crd = secure_qdrant_operator::crd::access_token_crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let token = |secret_name: Option<&str>| {
        let mut t = json!({
            "apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "t", "namespace": NS},
            "spec": {"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
                     "lifetime": "24h"}
        });
        if let Some(n) = secret_name {
            t["spec"]["secretName"] = json!(n);
        }
        t
    };
    let refused = |t: &Value| {
        kube::core::cel::Validator::new()
            .validate(&schema, t, None)
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default()
            .contains("may not end in")
    };
    for name in [
        "future-api-key",
        "vectors-ca",
        "x-tls",
        "vectors-metrics-client",
    ] {
        assert!(refused(&token(Some(name))), "{name} accepted by the CRD");
    }
    for name in [
        None,
        Some("vectors-token"),
        Some("my-tls-token"),
        Some("cab"),
    ] {
        assert!(!refused(&token(name)), "{name:?} refused by the CRD");
    }

    // The operator's own validation, for a token that got past the CRD.
    let env = Env::start().await;
    env.create_instance("vectors", json!({})).await;
    env.converge("vectors").await;
    let qat = create_token(
        &env,
        "squat",
        json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
               "secretName": "later-tls"}),
    )
    .await;
    env.settle().await;
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert!(env.get("v1", "Secret", "later-tls").is_none());
    let ready = token_condition(&env, "squat", "Ready");
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

async fn create_token(env: &Env, name: &str, spec: Value) -> QdrantAccessToken {
    let qat: QdrantAccessToken = serde_json::from_value(json!({
        "apiVersion": SQ_API, "kind": "QdrantAccessToken",
        "metadata": {"name": name, "namespace": NS}, "spec": spec
    }))
    .unwrap();
    Api::<QdrantAccessToken>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &qat)
        .await
        .expect("QdrantAccessToken created")
}

fn token_condition(env: &Env, name: &str, type_: &str) -> (String, String, String) {
    let qat: QdrantAccessToken = serde_json::from_value(
        env.server
            .get(SQ_API, "QdrantAccessToken", NS, name)
            .unwrap(),
    )
    .unwrap();
    qat.status
        .unwrap()
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
    let env = Env::start().await;
    env.create_instance("vectors", json!({})).await;
    env.converge("vectors").await;
    env.server
        .merge_patch(
            "v1",
            "ConfigMap",
            NS,
            "vectors-config",
            &json!({"metadata": {"finalizers": ["example.com/backup"]}}),
        )
        .unwrap();
    env.server
        .delete(SQ_API, "SecureQdrant", NS, "vectors")
        .unwrap();
    let lingering = env.get("v1", "ConfigMap", "vectors-config").expect("held");
    assert!(lingering["metadata"]["deletionTimestamp"].is_string());
    let before = stored(lingering);

    env.create_instance("vectors", json!({})).await;
    let result = env.reconcile("vectors").await;
    assert_refused(
        &env,
        "vectors",
        result,
        "ConfigMap",
        "vectors-config",
        "an earlier SecureQdrant of the same name",
    );
    assert_eq!(
        stored(env.get("v1", "ConfigMap", "vectors-config").unwrap()),
        before
    );

    env.server
        .merge_patch(
            "v1",
            "ConfigMap",
            NS,
            "vectors-config",
            &json!({"metadata": {"finalizers": null}}),
        )
        .unwrap();
    assert!(env.get("v1", "ConfigMap", "vectors-config").is_none());
    env.converge("vectors").await;
    let uid = env.instance("vectors").metadata.uid.unwrap();
    let config = env
        .get("v1", "ConfigMap", "vectors-config")
        .expect("recreated");
    assert_eq!(
        config["metadata"]["ownerReferences"][0]["uid"],
        uid.as_str()
    );
    assert_eq!(condition(&env.instance("vectors"), "ChildConflict"), None);
}

/// Upgrade: a token created before reserved names were refused, whose Secret is `<x>-tls`,
/// keeps that Secret exactly as it is (applications still mount it) and is told how to fix it;
/// its Secret is not deleted as an invalid token's would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_already_holds_a_reserved_name_keeps_its_secret_and_names_the_fix() {
    let env = Env::start().await;
    env.create_instance("vectors", json!({})).await;
    env.converge("vectors").await;
    let qat = create_token(
        &env,
        "legacy",
        json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"},
               "secretName": "old-tls"}),
    )
    .await;
    env.server
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "old-tls", "namespace": NS,
                         "labels": {LABEL_MANAGED_BY: MANAGER},
                         "ownerReferences": [{
                             "apiVersion": SQ_API, "kind": "QdrantAccessToken",
                             "name": "legacy", "uid": qat.metadata.uid, "controller": true}]},
            "stringData": {"token": "issued by the previous version"}
        }))
        .unwrap();
    let before = stored(env.get("v1", "Secret", "old-tls").unwrap());
    env.settle().await;
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        stored(env.get("v1", "Secret", "old-tls").expect("kept")),
        before
    );
    let ready = token_condition(&env, "legacy", "Ready");
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

/// The Secrets of the instance a token belongs to, written by the operator for its token
/// (`ownerReferences` naming a QdrantAccessToken).
fn token_secrets(env: &Env) -> Vec<Value> {
    env.server
        .list("v1", "Secret", NS)
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
    let env = Env::start().await;
    env.create_instance("x", json!({})).await;
    env.converge("x").await;
    Api::<SecureQdrant>::namespaced(env.client.clone(), NS)
        .delete("x", &DeleteParams::orphan())
        .await
        .unwrap();
    assert!(env.get("v1", "Secret", "x-api-key").is_some(), "orphaned");
    env.create_instance("x", json!({"auth": {"allowManageTokens": true}}))
        .await;
    assert!(matches!(
        env.reconcile("x").await,
        Err(Error::ChildConflict { .. })
    ));
    let qat = create_token(
        &env,
        "grab",
        json!({"qdrantRef": {"name": "x"}, "access": {"global": "m"}}),
    )
    .await;
    env.settle().await;
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert_eq!(token_secrets(&env), Vec::<Value>::new());
    let ready = token_condition(&env, "grab", "Ready");
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
    let env = Env::start().await;
    env.create_instance("x", json!({"tls": {"clientCertificates": true}}))
        .await;
    env.converge("x").await;
    env.server
        .merge_patch(
            "v1",
            "Secret",
            NS,
            "x-ca",
            &json!({"metadata": {"ownerReferences": null}}),
        )
        .unwrap();
    let qat = create_token(
        &env,
        "app",
        json!({"qdrantRef": {"name": "x"}, "access": {"global": "r"}}),
    )
    .await;
    env.settle().await;
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert_eq!(token_secrets(&env), Vec::<Value>::new());
    let ready = token_condition(&env, "app", "Ready");
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

    let env = Env::start().await;
    let now = "2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap();
    let ca = issue_ca(
        &CaSubject::new(NS, "own"),
        SignedDuration::from_hours(8760),
        now,
    )
    .unwrap();
    let leaf = issue_leaf(
        &ca,
        &serving_dns_names("x", NS, "cluster.local", &[]),
        SignedDuration::from_hours(2000),
        now,
    )
    .unwrap();
    let data: std::collections::BTreeMap<String, String> = leaf
        .to_secret_data(std::slice::from_ref(ca.cert()))
        .into_iter()
        .map(|(k, v)| (k, STANDARD.encode(v.0)))
        .collect();
    env.server
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "own-tls", "namespace": NS,
                         "labels": {"secureqdrant.dev/allowed-instance": "x"}},
            "type": "kubernetes.io/tls", "data": data,
        }))
        .unwrap();
    env.create_instance(
        "x",
        json!({"tls": {"certificateSecretRef": {"name": "own-tls"}}}),
    )
    .await;
    env.converge("x").await;
    env.server
        .merge_patch(
            "v1",
            "Secret",
            NS,
            "own-tls",
            &json!({"metadata": {"labels": null}}),
        )
        .unwrap();
    let qat = create_token(
        &env,
        "app",
        json!({"qdrantRef": {"name": "x"}, "access": {"global": "r"}}),
    )
    .await;
    env.settle().await;
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert_eq!(token_secrets(&env), Vec::<Value>::new());
    let ready = token_condition(&env, "app", "Ready");
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
