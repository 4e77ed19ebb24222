//! Caches of the objects this operator manages, filled by label-selected watches.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::child_meta::ChildMeta;
use crate::error::Error;
use crate::statefulset_view::StatefulSetView;

/// A namespaced kind the operator watches (a child kind, a custom resource, or a view of one
/// decoded from its watch): what its watches and caches need of it.
pub trait Watched:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A kind of child the operator writes (server-side apply, adoption, pruning): a watched
/// Kubernetes kind that serializes.
pub trait Child: Watched + k8s_openapi::Resource + Serialize {}

impl<K> Child for K where K: Watched + k8s_openapi::Resource + Serialize {}

/// A managed Secret as the watches deliver it: its metadata only (the watch asks the API server
/// for metadata only, and decoding drops anything else). The cache keeps less of it
/// ([`ChildMeta`]); neither type has a data field, so no Secret value can reach the cache. A
/// step that needs a Secret's material reads it with a GET ([`super::memo`]).
pub type CachedSecret = PartialObjectMeta<Secret>;

/// A cache of one kind's metadata, compact ([`ChildMeta`], fed by a metadata-only watch): the
/// kinds the operator only applies ([`super::apply`], which reads the full object when the drift
/// signal asks for it) and prunes by labels and owner.
pub type MetaStore<K> = Store<ChildMeta<K>>;

/// What the apply step reads of a cached child: its metadata, in kube's form.
pub trait CachedMeta: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static {
    fn object_meta(&self) -> ObjectMeta;
}

impl<K: Resource<DynamicType = ()> + 'static> CachedMeta for ChildMeta<K> {
    fn object_meta(&self) -> ObjectMeta {
        ChildMeta::object_meta(self)
    }
}

impl CachedMeta for StatefulSetView {
    fn object_meta(&self) -> ObjectMeta {
        self.metadata.clone()
    }
}

/// One cache per child kind. Only objects labelled as managed by this operator are cached.
///
/// The cache of Secrets holds no Secret value: reading one from it does not compile.
///
/// ```compile_fail,E0609
/// use secure_qdrant_operator::reconcile::stores::Stores;
/// fn leak(s: &Stores) {
///     let _ = &s.secrets.state()[0].data;
/// }
/// ```
#[derive(Clone)]
pub struct Stores {
    pub service_accounts: MetaStore<ServiceAccount>,
    /// Metadata only, compact ([`ChildMeta`]; see [`CachedSecret`]).
    pub secrets: MetaStore<Secret>,
    pub config_maps: MetaStore<ConfigMap>,
    pub services: MetaStore<Service>,
    pub network_policies: MetaStore<NetworkPolicy>,
    pub pdbs: MetaStore<PodDisruptionBudget>,
    pub statefulsets: Store<StatefulSetView>,
}

/// Pins the type of the Secret cache: a change that would cache Secrets with their data fails
/// to compile here.
const _: fn(&Stores) -> &Store<ChildMeta<Secret>> = |s| &s.secrets;

impl Stores {
    /// Waits until every cache holds its first full list.
    pub async fn wait_until_ready(&self) -> bool {
        self.service_accounts.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
            && self.config_maps.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.network_policies.wait_until_ready().await.is_ok()
            && self.pdbs.wait_until_ready().await.is_ok()
            && self.statefulsets.wait_until_ready().await.is_ok()
    }
}

/// Looks up a namespaced object in a cache.
pub fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Lookup<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// How long a reconcile waits for the caches to be filled after a start.
pub const CACHE_WAIT: Duration = Duration::from_secs(30);

/// Waits until `ready` says the caches hold a complete list, at most `limit`: a reconcile that
/// read an empty cache at start-up would take existing objects for missing ones. Polled rather
/// than awaited once: kube-runtime's Store wakes only the last task that waited on it, and
/// several reconciles may wait at start-up.
pub async fn caches_ready<F, Fut>(ready: F, limit: Duration) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if tokio::time::timeout(Duration::from_millis(50), ready()).await == Ok(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::CacheNotReady);
        }
    }
}
