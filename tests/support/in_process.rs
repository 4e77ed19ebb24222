//! Caches like the controller's for tests that run the reconcile functions in-process against
//! the real control plane (tests/support/control_plane.rs): reflector-fed stores of managed
//! objects, fed until the test ends, each object marked with the drift signal as the
//! controller's caches mark it (`reconcile::drift::mark_and_trim`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::task::JoinHandle;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use secure_qdrant_operator::children::meta::MANAGED_SELECTOR;
use secure_qdrant_operator::controller::caches;
use secure_qdrant_operator::reconcile::child_meta::{ChildMeta, map_event};
use secure_qdrant_operator::reconcile::drift;
use secure_qdrant_operator::reconcile::stores::{MetaStore, Stores, Watched};
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

/// A reflector-fed cache of `K`'s compact metadata (`ChildMeta`, from a metadata-only watch of
/// managed objects, in `ns` or everywhere), running until the test ends: the controller's
/// `MetaStore`.
pub fn reflect_meta<K>(
    client: &Client,
    ns: Option<&str>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> MetaStore<K>
where
    K: Watched,
{
    let (reader, mut writer) = reflector::store();
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let api: Api<PartialObjectMeta<K>> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut PartialObjectMeta<K>| {
            // As the controller's caches do: no marks on Secrets.
            if caches::marked::<K>() {
                drift::mark_and_trim(&mut o.metadata)
            }
        });
    tasks.push(tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Ok(event) = event {
                    writer.apply_watcher_event(&map_event(&event, |o| ChildMeta::new(&o.metadata)));
                }
                async {}
            })
            .await;
    }));
    reader
}

/// The caches the controller keeps: managed objects only, by label, fed until the test ends.
pub fn managed_stores(client: &Client, tasks: &mut Vec<JoinHandle<()>>) -> Stores {
    Stores {
        service_accounts: reflect_meta::<ServiceAccount>(client, None, tasks),
        secrets: reflect_meta::<Secret>(client, None, tasks),
        config_maps: reflect_meta::<ConfigMap>(client, None, tasks),
        services: reflect_meta::<Service>(client, None, tasks),
        network_policies: reflect_meta::<NetworkPolicy>(client, None, tasks),
        pdbs: reflect_meta::<PodDisruptionBudget>(client, None, tasks),
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
    K: Watched,
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
        service_accounts: reflect_meta::<ServiceAccount>(client, Some(ns), tasks),
        secrets: reflect_meta::<Secret>(client, Some(ns), tasks),
        config_maps: reflect_meta::<ConfigMap>(client, Some(ns), tasks),
        services: reflect_meta::<Service>(client, Some(ns), tasks),
        network_policies: reflect_meta::<NetworkPolicy>(client, Some(ns), tasks),
        pdbs: reflect_meta::<PodDisruptionBudget>(client, Some(ns), tasks),
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
    K: Lookup<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .map(|o| {
            let o = o.as_ref();
            (
                format!(
                    "{}/{}",
                    Lookup::namespace(o).unwrap_or_default(),
                    Lookup::name(o).unwrap_or_default()
                ),
                Lookup::resource_version(o).unwrap_or_default().into_owned(),
            )
        })
        .collect()
}
