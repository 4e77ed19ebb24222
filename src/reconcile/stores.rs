//! Caches of the objects this operator manages, filled by label-selected watches.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

/// One cache per child kind. Only objects labelled as managed by this operator are cached.
#[derive(Clone)]
pub struct Stores {
    pub service_accounts: Store<ServiceAccount>,
    pub secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
    pub network_policies: Store<NetworkPolicy>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub statefulsets: Store<StatefulSet>,
}

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
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Refuses a Secret the operator would write its credentials into (`<n>-api-key`, `<n>-ca`,
/// `<n>-tls`) when another object controls it: a QdrantAccessToken named its Secret like that
/// (before the instance existed), say, and an application mounts it. A Secret without a
/// controller (created by a user ahead of time) is adopted.
pub fn ensure_ours(
    secret: &k8s_openapi::api::core::v1::Secret,
    inst: &crate::validate::Instance,
) -> crate::error::Result<()> {
    use kube::ResourceExt;
    match secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    {
        Some(r) if r.uid != inst.owner.uid => Err(crate::error::Error::NotOurs {
            name: secret.name_any(),
            owner: format!("{} {}", r.kind, r.name),
        }),
        _ => Ok(()),
    }
}
