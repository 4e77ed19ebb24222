//! Fixtures for reconcile tests: SecureQdrant builders, the operator's caches as a fake cluster
//! state, and a harness that runs one reconcile against a scripted API server.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Lookup, store::Writer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use secure_qdrant_operator::api_keys::ApiKeys;
use secure_qdrant_operator::children::meta::MANAGER;
use secure_qdrant_operator::children::{self, Children, Material};
use secure_qdrant_operator::crd::{SecureQdrant, SecureQdrantSpec, SecureQdrantStatus, TlsSpec};
use secure_qdrant_operator::error::Error;
use secure_qdrant_operator::events::Events;
use secure_qdrant_operator::material::SecretValue;
use secure_qdrant_operator::reconcile::child_meta::ChildMeta;
use secure_qdrant_operator::reconcile::drift;
use secure_qdrant_operator::reconcile::plan::{self, Plan};
use secure_qdrant_operator::reconcile::stamp::stamp;
use secure_qdrant_operator::reconcile::status::{self, Verdict};
use secure_qdrant_operator::reconcile::stores::{Stores, cached};
use secure_qdrant_operator::reconcile::{Clock, Context, reconcile};
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::statefulset_view::StatefulSetView;
use secure_qdrant_operator::validate::{self, Instance};

use super::api_verifier::{ApiServer, MockApi, Transcript, as_stored, mock_client};

pub const NS: &str = "search";
pub const NAME: &str = "vectors";
pub const CR_UID: &str = "7d8c2f4e-1b2a-4c3d-9e8f-a1b2c3d4e5f6";

/// Paths of the objects of the test instance.
pub mod path {
    use super::{NAME, NS};

    pub fn secrets() -> String {
        format!("/api/v1/namespaces/{NS}/secrets")
    }
    pub fn secret(name: &str) -> String {
        format!("{}/{name}", secrets())
    }
    pub fn api_key_secret() -> String {
        secret(&format!("{NAME}-api-key"))
    }
    pub fn service_account() -> String {
        format!("/api/v1/namespaces/{NS}/serviceaccounts/{NAME}")
    }
    pub fn config_map() -> String {
        format!("/api/v1/namespaces/{NS}/configmaps/{NAME}-config")
    }
    pub fn headless_service() -> String {
        format!("/api/v1/namespaces/{NS}/services/{NAME}-headless")
    }
    pub fn client_service() -> String {
        format!("/api/v1/namespaces/{NS}/services/{NAME}")
    }
    /// NetworkPolicy `<n>-<suffix>`.
    pub fn network_policy(suffix: &str) -> String {
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{NAME}-{suffix}")
    }
    pub fn pdb() -> String {
        format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{NAME}")
    }
    pub fn statefulset() -> String {
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}")
    }
    pub fn status() -> String {
        format!("/apis/secureqdrant.dev/v1alpha1/namespaces/{NS}/secureqdrants/{NAME}/status")
    }
}

/// A fixed clock for statuses built by fixtures.
pub fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("a timestamp")
}

/// Chained builders of test SecureQdrants (`SecureQdrant::test().replicas(3)`).
pub trait SecureQdrantExt: Sized {
    /// `search/vectors`, as read from the API (uid, generation 1), every spec field defaulted.
    fn test() -> Self;
    fn replicas(self, n: i32) -> Self;
    fn image(self, image: &str) -> Self;
    fn storage_size(self, size: &str) -> Self;
    /// `spec.config` as JSON.
    fn config(self, config: Value) -> Self;
    /// `spec.network.metrics`: pods labelled `app: prometheus` may scrape.
    fn with_metrics(self) -> Self;
    fn with_status(self, status: SecureQdrantStatus) -> Self;
    fn generation(self, generation: i64) -> Self;
    fn deleting(self) -> Self;
    /// `spec.tls` at its defaults: TLS on, the operator's own CA (used by reconcile_tls.rs).
    #[allow(dead_code)]
    fn tls(self) -> Self;
    /// The object as JSON, as the API server returns it.
    fn to_json(&self) -> Value;
}

impl SecureQdrantExt for SecureQdrant {
    /// TLS is off here: these scenarios are about keys, children and status; the TLS step has
    /// its own scenarios (`tls()` turns it on).
    fn test() -> Self {
        let spec: SecureQdrantSpec =
            serde_json::from_value(serde_json::json!({"tls": {"enabled": false}}))
                .expect("every spec field has a default");
        let mut sq = SecureQdrant::new(NAME, spec);
        sq.metadata.namespace = Some(NS.to_owned());
        sq.metadata.uid = Some(CR_UID.to_owned());
        sq.metadata.generation = Some(1);
        sq.metadata.resource_version = Some("100".to_owned());
        sq
    }
    fn replicas(mut self, n: i32) -> Self {
        self.spec.replicas = n;
        self
    }
    fn image(mut self, image: &str) -> Self {
        self.spec.image = image.to_owned();
        self
    }
    fn storage_size(mut self, size: &str) -> Self {
        self.spec.storage.size = size.to_owned();
        self
    }
    fn config(mut self, config: Value) -> Self {
        self.spec.config = serde_json::from_value(config).expect("a JSON object");
        self
    }
    fn with_metrics(mut self) -> Self {
        self.spec.network.metrics = vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some([("app".to_owned(), "prometheus".to_owned())].into()),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }];
        self
    }
    fn with_status(mut self, status: SecureQdrantStatus) -> Self {
        self.status = Some(status);
        self
    }
    fn generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }
    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(t0()));
        self
    }
    fn tls(mut self) -> Self {
        self.spec.tls = TlsSpec::default();
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a SecureQdrant serializes")
    }
}

/// The validated, planned instance of `sq` against the StatefulSet `current`.
pub fn planned(sq: &SecureQdrant, current: Option<&StatefulSetView>) -> Plan {
    let inst = validate::validate(sq, &Settings::default()).expect("a valid spec");
    plan::plan(inst, current)
}

/// The validated instance of `sq` when no StatefulSet exists yet.
pub fn instance(sq: &SecureQdrant) -> Instance {
    planned(sq, None).instance
}

/// Fixed, recognisable API keys (43 characters, like generated ones).
pub fn keys(tag: &str) -> ApiKeys {
    let pad = |s: String| format!("{s:x<43}");
    ApiKeys {
        api_key: SecretValue::new(pad(format!("{tag}-admin-key-"))),
        read_only: Some(SecretValue::new(pad(format!("{tag}-read-only-key-")))),
        next: None,
        phase: Default::default(),
        salt: SecretValue::new(pad(format!("{tag}-fingerprint-salt-"))),
    }
}

/// Every child `sq` has when its Secret holds `keys`.
pub fn children_of(sq: &SecureQdrant, keys: &ApiKeys) -> Children {
    children::build(
        &instance(sq),
        &Material {
            api_keys: keys.clone(),
            tls: None,
        },
    )
}

/// The restart hash the StatefulSet of `inst` carries when its Secret holds `keys`.
pub fn restart_hash(inst: &Instance, keys: &ApiKeys) -> String {
    children::restart_hash(
        &secure_qdrant_operator::qdrant::config_yaml(inst),
        &Material {
            api_keys: keys.clone(),
            tls: None,
        },
    )
}

/// An object as the cluster holds it after the operator applied it: stamped with the
/// applied-hash annotation, plus what the server adds.
pub fn applied<K: Resource + Serialize + DeserializeOwned>(desired: K) -> K {
    stored(stamp(desired))
}

/// `obj` as the operator's cache shows it after someone else wrote it (a write newer than the
/// operator's apply in its managed fields: the drift mark is set as the watch event enters the
/// cache, then the managed fields go).
pub fn edited_by_someone_else<K: Resource>(mut obj: K) -> K {
    let meta = obj.meta_mut();
    meta.managed_fields = Some(
        serde_json::from_value(serde_json::json!([
            {"manager": MANAGER, "operation": "Apply", "time": "2026-12-05T10:00:00Z"},
            {"manager": "kubectl-edit", "operation": "Update", "time": "2026-12-05T10:00:09Z"}
        ]))
        .expect("managed fields"),
    );
    drift::mark_and_trim(meta);
    obj
}

/// An object with the fields the API server adds (resourceVersion, uid, ...).
pub fn stored<K: Serialize + DeserializeOwned>(obj: K) -> K {
    let value = serde_json::to_value(obj).expect("serializes");
    serde_json::from_value(as_stored(&value)).expect("deserializes")
}

/// A child kind the operator caches, and what its cache holds of it (the object, or only its
/// metadata).
pub trait Cached:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + 'static
{
    type Stored: Lookup<DynamicType = ()> + Clone + 'static;
    fn writer(cluster: &mut Cluster) -> &mut Writer<Self::Stored>;
    fn stored(self) -> Self::Stored;
}

/// What the StatefulSet cache holds of it.
fn view(obj: StatefulSet) -> StatefulSetView {
    StatefulSetView::from(obj)
}

/// Only the metadata (a metadata-only watch), as the cache keeps it.
fn meta_only<K: Resource>(obj: K) -> ChildMeta<K> {
    ChildMeta::new(obj.meta())
}

macro_rules! cached {
    ($($kind:ty => $field:ident as $stored:ty, $conv:ident),* $(,)?) => {
        /// The operator's caches, and the writers that fill them (as the watches would).
        pub struct Cluster {
            $($field: Writer<$stored>,)*
            pub stores: Stores,
            /// The Secrets put in the cache, whole (the cache holds their metadata only): what
            /// the API server answers when a reconcile reads one.
            secrets_stored: Arc<Mutex<BTreeMap<String, Value>>>,
        }

        impl Cluster {
            fn new(synced: bool) -> Self {
                $(let (_, mut $field) = reflector::store::<$stored>();
                if synced {
                    $field.apply_watcher_event(&watcher::Event::Init);
                    $field.apply_watcher_event(&watcher::Event::InitDone);
                })*
                let stores = Stores { $($field: $field.as_reader(),)* };
                Cluster { $($field,)* stores, secrets_stored: Arc::default() }
            }

            /// Puts an object given as JSON (as the API server returned it) in its cache.
            pub fn put_json(&mut self, object: &Value) {
                let kind = object["kind"].as_str().expect("an object with a kind");
                $(if kind == <$kind as k8s_openapi::Resource>::KIND {
                    let obj: $kind = serde_json::from_value(object.clone()).expect(kind);
                    return self.put(obj);
                })*
                panic!("the operator caches no {kind}");
            }
        }

        $(impl Cached for $kind {
            type Stored = $stored;
            fn writer(cluster: &mut Cluster) -> &mut Writer<$stored> {
                &mut cluster.$field
            }
            fn stored(self) -> $stored {
                $conv(self)
            }
        })*
    };
}

cached! {
    ServiceAccount => service_accounts as ChildMeta<ServiceAccount>, meta_only,
    Secret => secrets as ChildMeta<Secret>, meta_only,
    ConfigMap => config_maps as ChildMeta<ConfigMap>, meta_only,
    Service => services as ChildMeta<Service>, meta_only,
    NetworkPolicy => network_policies as ChildMeta<NetworkPolicy>, meta_only,
    PodDisruptionBudget => pdbs as ChildMeta<PodDisruptionBudget>, meta_only,
    StatefulSet => statefulsets as StatefulSetView, view,
}

impl Cluster {
    /// Every cache has listed, and found nothing.
    pub fn synced() -> Self {
        Cluster::new(true)
    }

    /// No cache has listed yet.
    pub fn unsynced() -> Self {
        Cluster::new(false)
    }

    /// A watch event: `obj` was created or changed.
    pub fn put<K: Cached>(&mut self, obj: K) {
        if K::kind(&()) == "Secret" {
            let json = serde_json::to_value(&obj).expect("a Secret serializes");
            self.secrets_stored
                .lock()
                .unwrap()
                .insert(path::secret(&obj.name_any()), json);
        }
        K::writer(self).apply_watcher_event(&watcher::Event::Apply(obj.stored()));
    }

    /// A watch event: `obj` was deleted.
    pub fn remove<K: Cached>(&mut self, obj: K) {
        if K::kind(&()) == "Secret" {
            self.secrets_stored
                .lock()
                .unwrap()
                .remove(&path::secret(&obj.name_any()));
        }
        K::writer(self).apply_watcher_event(&watcher::Event::Delete(obj.stored()));
    }

    /// The cluster after the operator applied `children`: each one stamped and stored, the
    /// API-key Secret as created (never applied, so not stamped).
    pub fn with_children(mut self, children: &Children) -> Self {
        let Children {
            service_account,
            api_key_secret,
            tls_secret,
            metrics_client_secret,
            config_map,
            headless_service,
            client_service,
            network_policies,
            pdb,
            statefulset,
        } = children.clone();
        self.put(applied(service_account));
        if let Some(secret) = api_key_secret {
            self.put(stored(secret));
        }
        if let Some(secret) = tls_secret {
            self.put(applied(secret));
        }
        if let Some(secret) = metrics_client_secret {
            self.put(applied(secret));
        }
        self.put(applied(config_map));
        self.put(applied(headless_service));
        self.put(applied(client_service));
        for policy in network_policies {
            self.put(applied(policy));
        }
        if let Some(pdb) = pdb {
            self.put(applied(pdb));
        }
        self.put(applied(statefulset));
        self
    }
}

/// `sq` with the status a reconcile against `cluster` computes when nothing changes, as if the
/// previous reconcile had written it.
pub fn settled(sq: SecureQdrant, cluster: &Cluster) -> SecureQdrant {
    let sts = cached(&cluster.stores.statefulsets, NS, NAME);
    let plan = planned(&sq, sts.as_deref());
    let status = status::desired(
        &sq,
        &Verdict::Applied {
            instance: &plan.instance,
            refusals: &plan.refusals,
            statefulset: sts.as_deref(),
            tls: None,
        },
        t0(),
    );
    sq.with_status(status)
}

/// What the memory Event sink received.
pub type EventLog = Arc<Mutex<Vec<(ObjectReference, Event)>>>;

/// (type, reason, note) of every published Event.
pub fn published(log: &EventLog) -> Vec<(EventType, String, String)> {
    log.lock()
        .expect("event log")
        .iter()
        .map(|(_, e)| {
            (
                e.type_,
                e.reason.clone(),
                e.note.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The operator's Context over a scripted API server; reconciles one scenario at a time.
pub struct Harness {
    pub ctx: Arc<Context>,
    pub events: EventLog,
    api: MockApi,
    /// The Secrets of the cluster the harness was built over (see [`Cluster`]).
    secrets_stored: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl Harness {
    pub fn new(cluster: &Cluster) -> Self {
        Harness::build(cluster, None)
    }

    /// A harness whose reconciles read the time from `clock` (`Context::with_clock`), so a
    /// scenario can move time (certificate renewal). Used by reconcile_tls.rs.
    #[allow(dead_code)]
    pub fn with_clock(cluster: &Cluster, clock: Clock) -> Self {
        Harness::build(cluster, Some(clock))
    }

    fn build(cluster: &Cluster, clock: Option<Clock>) -> Self {
        let (client, api) = mock_client(NS);
        let (events, log) = Events::memory();
        let mut ctx = Context::new(client, cluster.stores.clone(), events, Settings::default());
        if let Some(clock) = clock {
            ctx = ctx.with_clock(clock);
        }
        Harness {
            ctx: Arc::new(ctx),
            events: log,
            api,
            secrets_stored: cluster.secrets_stored.clone(),
        }
    }

    /// Reconciles `sq` once while `script` plays the API server; returns the reconcile's result
    /// and what the server saw. Fails when the script's expectations are not met exactly.
    pub async fn reconcile<F, Fut>(
        &mut self,
        sq: &SecureQdrant,
        script: F,
    ) -> (Result<Action, Error>, Transcript)
    where
        F: FnOnce(ApiServer) -> Fut,
        Fut: Future<Output = ApiServer> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        let sq = Arc::new(sq.clone());
        // The operator reads Secret material on demand: the cluster's Secrets answer its GETs.
        let secrets = self.secrets_stored.lock().unwrap().clone();
        let script = move |mut api: ApiServer| {
            api.serve_secret_reads(secrets);
            script(api)
        };
        self.api.play(script, reconcile(sq, ctx)).await
    }

    /// (type, reason, note) of every Event published so far.
    pub fn published(&self) -> Vec<(EventType, String, String)> {
        published(&self.events)
    }
}

/// The Warning Event a TLS-off SecureQdrant gets the first time it is reconciled.
pub fn tls_disabled_event() -> (EventType, String, String) {
    (
        EventType::Warning,
        "TLSDisabled".to_owned(),
        status::TLS_DISABLED_MESSAGE.to_owned(),
    )
}
