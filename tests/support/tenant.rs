//! The harness of the tenant-boundary tests (issue 12) on the real control plane (issue 14):
//! one namespace per test (`real_server::Env::namespaced`), the operator's reconcile functions
//! in-process as the chart's ServiceAccount (`env.client`, the chart's RBAC for that namespace
//! only) with namespaced, label-selected caches like the controller's, its Events published to
//! the real API server, and a tenant user who may do what the threat model gives a SecureQdrant
//! author and nothing more: a ServiceAccount whose Role allows SecureQdrants and
//! QdrantAccessTokens in the namespace (no Secrets, no other kind). The objects of other users
//! (their Secrets, policies, ...) are made as admin.
#![allow(dead_code)]

pub use crate::in_process::{cached_versions, reflect_in as reflect, reflect_meta, versions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use secure_qdrant_operator::access_tokens as token;
use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use secure_qdrant_operator::error::Error;
use secure_qdrant_operator::events::{Events, Publisher};
use secure_qdrant_operator::reconcile::recent::{Clock, system_clock};
use secure_qdrant_operator::reconcile::stores::Stores;
use secure_qdrant_operator::reconcile::{self, Context};
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::statefulset_view::StatefulSetView;

use crate::control_plane::{apply_params, eventually, service_account_token, token_kubeconfig};
use crate::real_server::{Counters, Env};

pub const SQ_API: &str = "secureqdrant.dev/v1alpha1";
/// Every kind a SecureQdrant writes, as (apiVersion, kind).
pub const KINDS: [(&str, &str); 7] = secure_qdrant_operator::children::CHILD_KINDS;
/// Generous: the machine is shared.
pub const LIMIT: Duration = Duration::from_secs(180);

/// The audit log's resource name of a child kind.
pub fn resource_of(kind: &str) -> &'static str {
    match kind {
        "ServiceAccount" => "serviceaccounts",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "NetworkPolicy" => "networkpolicies.networking.k8s.io",
        "PodDisruptionBudget" => "poddisruptionbudgets.policy",
        "StatefulSet" => "statefulsets.apps",
        "SecureQdrant" => "secureqdrants.secureqdrant.dev",
        "QdrantAccessToken" => "qdrantaccesstokens.secureqdrant.dev",
        other => panic!("no resource for {other}"),
    }
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Writes the operator made to objects (Events and status subresources not counted, as the
/// in-memory server's tests counted them).
pub fn writes(c: &Counters) -> u64 {
    c.log
        .iter()
        .filter(|r| WRITE_VERBS.contains(&r.verb.as_str()))
        .filter(|r| !r.resource.starts_with("events") && !r.resource.ends_with("/status"))
        .count() as u64
}

/// The operator's write requests (any verb that writes, status included) to `kind` `name`.
pub fn writes_to(c: &Counters, kind: &str, name: &str) -> Vec<String> {
    let resource = resource_of(kind);
    c.log
        .iter()
        .filter(|r| WRITE_VERBS.contains(&r.verb.as_str()))
        .filter(|r| r.name == name && r.resource.split('/').next() == Some(resource))
        .map(|r| format!("{} {} {} -> {}", r.verb, r.resource, r.name, r.code))
        .collect()
}

/// What of an object only its writers change: everything but `status` (the real StatefulSet
/// and disruption controllers keep it current), `resourceVersion` and `managedFields` (which
/// follow status writes). Whether the operator wrote is read from the audit log
/// (`writes_to`).
pub fn stable(mut v: Value) -> String {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    serde_json::to_string(&v).unwrap()
}

/// A tenant: a ServiceAccount in `ns` allowed SecureQdrants and QdrantAccessTokens there (every
/// verb) and nothing else; a client as it, straight to the API server.
pub async fn tenant_user(env: &Env) -> Client {
    let ns = &env.ns;
    let name = "tenant";
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap();
    Api::<ServiceAccount>::namespaced(env.admin.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("tenant ServiceAccount");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "secureqdrant-author", "namespace": ns},
        "rules": [{"apiGroups": ["secureqdrant.dev"],
                   "resources": ["secureqdrants", "qdrantaccesstokens"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(env.admin.clone(), ns)
        .patch("secureqdrant-author", &apply_params(), &Patch::Apply(&role))
        .await
        .expect("tenant Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "secureqdrant-author", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "secureqdrant-author"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin.clone(), ns)
        .patch(
            "secureqdrant-author",
            &apply_params(),
            &Patch::Apply(&binding),
        )
        .await
        .expect("tenant RoleBinding");
    let token = service_account_token(&env.admin, ns, name).await;
    let kc = Kubeconfig::from_yaml(&token_kubeconfig(&env.cp.state, &token, ns))
        .expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    let client = Client::try_from(config).expect("tenant client");
    // RBAC takes effect at once, but make sure before anything relies on it.
    let api = Api::<SecureQdrant>::namespaced(client.clone(), ns);
    eventually(LIMIT, || {
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the tenant cannot list SecureQdrants: {e}"));
    client
}

/// One test's world: see the module doc.
pub struct Tenant {
    pub env: Env,
    /// The tenant's client (SecureQdrants and QdrantAccessTokens in `env.ns` only).
    pub user: Client,
    pub ctx: Arc<Context>,
    pub instances: Store<SecureQdrant>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Tenant {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Tenant {
    /// `clock`: a fixed time for the reconciles (None: the system clock).
    pub async fn start(prefix: &str, clock: Option<Timestamp>) -> Tenant {
        let env = Env::namespaced(prefix).await;
        let user = tenant_user(&env).await;
        let client = env.client.clone();
        let ns = env.ns.clone();
        let mut tasks = Vec::new();
        let stores = Stores {
            service_accounts: reflect_meta::<ServiceAccount>(&client, Some(&ns), &mut tasks),
            secrets: reflect_meta::<Secret>(&client, Some(&ns), &mut tasks),
            config_maps: reflect_meta::<ConfigMap>(&client, Some(&ns), &mut tasks),
            services: reflect_meta::<Service>(&client, Some(&ns), &mut tasks),
            network_policies: reflect_meta::<NetworkPolicy>(&client, Some(&ns), &mut tasks),
            pdbs: reflect_meta::<PodDisruptionBudget>(&client, Some(&ns), &mut tasks),
            statefulsets: reflect::<StatefulSetView>(&client, &ns, &mut tasks, true),
        };
        let instances = reflect::<SecureQdrant>(&client, &ns, &mut tasks, false);
        let clock: Clock = match clock {
            Some(at) => {
                let clock = Arc::new(Mutex::new(at));
                Arc::new(move || *clock.lock().unwrap())
            }
            None => system_clock(),
        };
        let events = Events::Kube(Publisher::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: None,
            },
            clock.clone(),
        ));
        let ctx = Context::new(client, stores, events, Settings::default()).with_clock(clock);
        let t = Tenant {
            env,
            user,
            ctx: Arc::new(ctx),
            instances,
            tasks,
        };
        assert!(t.ctx.stores.wait_until_ready().await);
        t.instances.wait_until_ready().await.unwrap();
        t.settle().await;
        t
    }

    pub fn ns(&self) -> &str {
        &self.env.ns
    }

    /// Creates SecureQdrant `name` with `spec` as the tenant (not reconciled).
    pub async fn create_instance(&self, name: &str, spec: Value) -> SecureQdrant {
        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": name, "namespace": self.ns()}, "spec": spec
        }))
        .unwrap();
        Api::<SecureQdrant>::namespaced(self.user.clone(), self.ns())
            .create(&PostParams::default(), &sq)
            .await
            .unwrap_or_else(|e| panic!("SecureQdrant {name} created by the tenant: {e}"))
    }

    /// Creates QdrantAccessToken `name` with `spec` as the tenant.
    pub async fn create_token(&self, name: &str, spec: Value) -> QdrantAccessToken {
        let qat: QdrantAccessToken = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": name, "namespace": self.ns()}, "spec": spec
        }))
        .unwrap();
        Api::<QdrantAccessToken>::namespaced(self.user.clone(), self.ns())
            .create(&PostParams::default(), &qat)
            .await
            .unwrap_or_else(|e| panic!("QdrantAccessToken {name} created by the tenant: {e}"))
    }

    pub async fn instance(&self, name: &str) -> SecureQdrant {
        serde_json::from_value(
            self.get(SQ_API, "SecureQdrant", name)
                .await
                .unwrap_or_else(|| panic!("SecureQdrant {name}")),
        )
        .unwrap()
    }

    pub async fn token(&self, name: &str) -> QdrantAccessToken {
        serde_json::from_value(
            self.get(SQ_API, "QdrantAccessToken", name)
                .await
                .unwrap_or_else(|| panic!("QdrantAccessToken {name}")),
        )
        .unwrap()
    }

    /// The object in the test's namespace, as admin.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.env.get(api_version, kind, &self.env.ns, name).await
    }

    pub async fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.env.list(api_version, kind, &self.env.ns).await
    }

    /// A JSON merge patch as admin.
    pub async fn merge_patch(&self, api_version: &str, kind: &str, name: &str, patch: Value) {
        self.env
            .merge_patch(api_version, kind, &self.env.ns, name, patch)
            .await
            .unwrap_or_else(|e| panic!("merge patch of {kind} {name}: {e}"));
    }

    /// Every managed object (the children of every instance) in the namespace:
    /// (apiVersion, kind, object).
    pub async fn managed(&self) -> Vec<(&'static str, &'static str, Value)> {
        let mut out = Vec::new();
        for (api, kind) in KINDS {
            for o in self.list(api, kind).await {
                if o["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER {
                    out.push((api, kind, o));
                }
            }
        }
        out
    }

    /// Waits until the caches hold what the server holds (managed objects, SecureQdrants).
    pub async fn settle(&self) {
        let s = &self.ctx.stores;
        eventually(LIMIT, || async {
            let managed = |api: &'static str, kind: &'static str| async move {
                versions(
                    self.list(api, kind)
                        .await
                        .into_iter()
                        .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
                )
            };
            let pairs = [
                (
                    managed("v1", "ServiceAccount").await,
                    cached_versions(&s.service_accounts),
                ),
                (managed("v1", "Secret").await, cached_versions(&s.secrets)),
                (
                    managed("v1", "ConfigMap").await,
                    cached_versions(&s.config_maps),
                ),
                (managed("v1", "Service").await, cached_versions(&s.services)),
                (
                    managed("networking.k8s.io/v1", "NetworkPolicy").await,
                    cached_versions(&s.network_policies),
                ),
                (
                    managed("policy/v1", "PodDisruptionBudget").await,
                    cached_versions(&s.pdbs),
                ),
                (
                    managed("apps/v1", "StatefulSet").await,
                    cached_versions(&s.statefulsets),
                ),
                (
                    versions(self.list(SQ_API, "SecureQdrant").await.into_iter()),
                    cached_versions(&self.instances),
                ),
            ];
            match pairs.iter().find(|(a, b)| a != b) {
                None => Ok(()),
                Some((a, b)) => Err(format!("cache {b:?} behind server {a:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("caches did not catch up: {e}"));
    }

    /// One reconcile of SecureQdrant `name`, after the caches caught up (and again after it).
    pub async fn reconcile(&self, name: &str) -> Result<(), Error> {
        self.settle().await;
        let result = reconcile::reconcile(Arc::new(self.instance(name).await), self.ctx.clone())
            .await
            .map(|_| ());
        self.settle().await;
        result
    }

    /// One reconcile of QdrantAccessToken `name`, after the caches caught up.
    pub async fn reconcile_token(&self, name: &str) -> Result<(), Error> {
        self.settle().await;
        token::reconcile(
            Arc::new(self.token(name).await),
            self.ctx.clone(),
            self.instances.clone(),
        )
        .await
        .map(|_| ())
    }

    /// Reconciles until a reconcile writes nothing (the instance is converged).
    pub async fn converge(&self, name: &str) {
        let mut last = Counters::default();
        for _ in 0..5 {
            self.env.reset_counters().await;
            self.reconcile(name).await.expect("reconciles");
            last = self.env.counters().await;
            if writes(&last) == 0 {
                return;
            }
        }
        panic!("{name} does not converge: {:?}", last.log);
    }

    /// The Warning Events in the namespace: (reason, note, the name of the object regarded).
    pub async fn warnings(&self) -> Vec<(String, String, String)> {
        self.events("Warning").await
    }

    /// The Warning Events in the namespace last observed at or after `since` (the Event's
    /// `eventTime`, or its `series.lastObservedTime` when the recorder counted a repeat on an
    /// existing Event): (reason, note, the name of the object regarded).
    pub async fn warnings_since(
        &self,
        since: k8s_openapi::jiff::Timestamp,
    ) -> Vec<(String, String, String)> {
        self.all_events()
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| {
                let last = e
                    .series
                    .as_ref()
                    .map(|s| s.last_observed_time.0)
                    .or(e.event_time.as_ref().map(|t| t.0));
                last.is_some_and(|t| t >= since)
            })
            .map(reason_note_regarding)
            .collect()
    }

    /// The Events (events.k8s.io/v1) about the SecureQdrant `name`, as the API server stores
    /// them.
    pub async fn events_about(&self, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        self.events_regarding("SecureQdrant", name).await
    }

    /// The Events (events.k8s.io/v1) about the `kind` named `name`, as the API server stores
    /// them.
    pub async fn events_regarding(
        &self,
        kind: &str,
        name: &str,
    ) -> Vec<k8s_openapi::api::events::v1::Event> {
        self.all_events()
            .await
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .collect()
    }

    /// Every Event (events.k8s.io/v1) in the namespace, as the API server stores them.
    async fn all_events(&self) -> Vec<k8s_openapi::api::events::v1::Event> {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.env.admin.clone(), self.ns())
            .list(&ListParams::default())
            .await
            .expect("Events listed")
            .items
    }

    /// The Events of `type_` in the namespace: (reason, note, the name of the object regarded).
    pub async fn events(&self, type_: &str) -> Vec<(String, String, String)> {
        self.all_events()
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some(type_))
            .map(reason_note_regarding)
            .collect()
    }

    /// Deletes SecureQdrant `name` as the tenant and waits until it is gone and the garbage
    /// collector removed every object it controlled (apart from those held by a finalizer,
    /// which must carry a deletionTimestamp by then).
    pub async fn delete_instance_and_wait_for_gc(&self, name: &str) {
        let uid = self.instance(name).await.metadata.uid.unwrap();
        Api::<SecureQdrant>::namespaced(self.user.clone(), self.ns())
            .delete(name, &Default::default())
            .await
            .expect("deleted by the tenant");
        self.wait_for_gc(name, &uid).await;
    }

    /// Waits until SecureQdrant `name` with `uid` is gone and nothing it owned is left (but
    /// objects held by a finalizer, being deleted).
    pub async fn wait_for_gc(&self, name: &str, uid: &str) {
        eventually(LIMIT, || async {
            if let Some(sq) = self.get(SQ_API, "SecureQdrant", name).await
                && sq["metadata"]["uid"] == uid
            {
                return Err(format!("SecureQdrant {name} still there"));
            }
            for (_, kind, o) in self.managed().await {
                let owned = o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["uid"] == uid));
                if owned && o["metadata"]["deletionTimestamp"].is_null() {
                    return Err(format!(
                        "{kind} {} not garbage-collected yet",
                        o["metadata"]["name"]
                    ));
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// (reason, note, the name of the object regarded) of an Event.
fn reason_note_regarding(e: k8s_openapi::api::events::v1::Event) -> (String, String, String) {
    (
        e.reason.unwrap_or_default(),
        e.note.unwrap_or_default(),
        e.regarding.and_then(|r| r.name).unwrap_or_default(),
    )
}
