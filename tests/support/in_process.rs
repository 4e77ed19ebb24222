//! Caches like the controller's for tests that run the reconcile functions in-process against
//! the real control plane (tests/support/control_plane.rs): reflector-fed stores of managed
//! objects, fed until the test ends, each object marked with the drift signal as the
//! controller's caches mark it (`reconcile::drift::mark_and_trim`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::task::JoinHandle;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use secure_qdrant_operator::children::meta::MANAGED_SELECTOR;
use secure_qdrant_operator::reconcile::drift;
use secure_qdrant_operator::reconcile::stores::Stores;
use secure_qdrant_operator::statefulset_view::StatefulSetView;

/// A reflector-fed cache of `K` (only managed objects when `managed`), running until the test
/// ends.
pub fn reflect<K>(client: &Client, tasks: &mut Vec<JoinHandle<()>>, managed: bool) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if managed {
        config = config.labels(MANAGED_SELECTOR);
    }
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(|o: &mut K| drift::mark_and_trim(o.meta_mut()))
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        stream.for_each(|_| async {}).await;
    }));
    reader
}

/// The caches the controller keeps: managed objects only, by label, fed until the test ends.
pub fn managed_stores(client: &Client, tasks: &mut Vec<JoinHandle<()>>) -> Stores {
    Stores {
        service_accounts: reflect::<PartialObjectMeta<ServiceAccount>>(client, tasks, true),
        secrets: reflect::<PartialObjectMeta<Secret>>(client, tasks, true),
        config_maps: reflect::<PartialObjectMeta<ConfigMap>>(client, tasks, true),
        services: reflect::<PartialObjectMeta<Service>>(client, tasks, true),
        network_policies: reflect::<PartialObjectMeta<NetworkPolicy>>(client, tasks, true),
        pdbs: reflect::<PartialObjectMeta<PodDisruptionBudget>>(client, tasks, true),
        statefulsets: reflect::<StatefulSetView>(client, tasks, true),
    }
}

/// A reflector-fed cache of `K` in `ns` (only managed objects when `managed`), running until
/// the test ends: the operator's caches as with `watchNamespaces` (an identity with the chart's
/// Role for that namespace only cannot list across namespaces).
pub fn reflect_in<K>(
    client: &Client,
    ns: &str,
    tasks: &mut Vec<JoinHandle<()>>,
    managed: bool,
) -> Store<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if managed {
        config = config.labels(MANAGED_SELECTOR);
    }
    let stream = watcher(Api::<K>::namespaced(client.clone(), ns), config)
        .default_backoff()
        .modify(|o: &mut K| drift::mark_and_trim(o.meta_mut()))
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        stream.for_each(|_| async {}).await;
    }));
    reader
}

/// The caches the controller keeps for one watched namespace: managed objects only, by label.
pub fn namespaced_stores(client: &Client, ns: &str, tasks: &mut Vec<JoinHandle<()>>) -> Stores {
    Stores {
        service_accounts: reflect_in::<PartialObjectMeta<ServiceAccount>>(client, ns, tasks, true),
        secrets: reflect_in::<PartialObjectMeta<Secret>>(client, ns, tasks, true),
        config_maps: reflect_in::<PartialObjectMeta<ConfigMap>>(client, ns, tasks, true),
        services: reflect_in::<PartialObjectMeta<Service>>(client, ns, tasks, true),
        network_policies: reflect_in::<PartialObjectMeta<NetworkPolicy>>(client, ns, tasks, true),
        pdbs: reflect_in::<PartialObjectMeta<PodDisruptionBudget>>(client, ns, tasks, true),
        statefulsets: reflect_in::<StatefulSetView>(client, ns, tasks, true),
    }
}

/// `namespace/name` → resourceVersion of objects as the API server returns them (JSON).
pub fn versions(objects: impl Iterator<Item = Value>) -> BTreeMap<String, String> {
    objects
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                ),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// `namespace/name` → resourceVersion of a cache's objects.
pub fn cached_versions<K>(store: &Store<K>) -> BTreeMap<String, String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .map(|o| {
            (
                format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
                o.resource_version().unwrap_or_default(),
            )
        })
        .collect()
}
