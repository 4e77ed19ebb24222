//! The pieces shared by tests that run the reconcile functions in-process against the
//! in-memory API server (`tests/fake-apiserver`): a client for it, the CRDs it starts with,
//! reflector-fed caches like the controller's, and cache/server comparison by resourceVersion;
//! and a server with a kubeconfig for the tests that run the operator binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Faults, Options};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use secure_qdrant_operator::children::meta::MANAGED_SELECTOR;
use secure_qdrant_operator::reconcile::stores::Stores;

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
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        stream.for_each(|_| async {}).await;
    }));
    reader
}

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

pub fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_secs(now.duration_until(then).as_secs().unsigned_abs())
}

pub fn crds() -> Vec<Value> {
    secure_qdrant_operator::crd::all()
        .into_iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD serializes"))
        .collect()
}

/// The in-memory API server with the operator's CRDs installed.
pub async fn server_with_crds() -> FakeApiServer {
    FakeApiServer::start(fake_apiserver::Options {
        objects: crds(),
        ..fake_apiserver::Options::default()
    })
    .await
    .expect("fake API server starts")
}

pub async fn client_for(server: &FakeApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// The caches the controller keeps: managed objects only, by label, fed until the test ends.
pub fn managed_stores(client: &Client, tasks: &mut Vec<JoinHandle<()>>) -> Stores {
    Stores {
        service_accounts: reflect::<ServiceAccount>(client, tasks, true),
        secrets: reflect::<Secret>(client, tasks, true),
        config_maps: reflect::<ConfigMap>(client, tasks, true),
        services: reflect::<Service>(client, tasks, true),
        network_policies: reflect::<NetworkPolicy>(client, tasks, true),
        pdbs: reflect::<PodDisruptionBudget>(client, tasks, true),
        statefulsets: reflect::<StatefulSet>(client, tasks, true),
    }
}

/// A fake API server holding the CRDs, with `faults`, and a temp dir holding its `kubeconfig`
/// (for the operator binary).
pub async fn server_with_kubeconfig(faults: Faults) -> (FakeApiServer, TempDir) {
    let server = FakeApiServer::start(Options {
        objects: crds(),
        faults,
        ..Options::default()
    })
    .await
    .expect("fake API server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    server
        .write_kubeconfig(dir.path().join("kubeconfig"))
        .expect("kubeconfig written");
    (server, dir)
}
