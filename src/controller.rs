//! Wiring of the controller: watches, caches, and the reconcile loop.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use crate::children::meta::{
    COMPONENT_CREDENTIALS, LABEL_COMPONENT, LABEL_INSTANCE, MANAGED_SELECTOR, MANAGER,
};
use crate::crd::{QdrantAccessToken, SecureQdrant};
use crate::error::Error;
use crate::events::Events;
use crate::reconcile::stores::Stores;
use crate::reconcile::token;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::settings::Settings;

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the SecureQdrant CRD is not installed in this cluster: install it first \
         (`secure-qdrant-operator crd | kubectl apply -f -`, or `kubectl apply -f crds/`)"
    )]
    CrdMissing,
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(#[source] kube::Error),
}

/// Checks that the API answers and that the CRD is installed.
pub async fn preflight(client: &Client) -> Result<(), StartError> {
    let api: Api<SecureQdrant> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(StartError::CrdMissing),
        Err(e) => Err(StartError::Unreachable(e)),
    }
}

type ChildStream<K> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<K, watcher::Error>> + Send>>;

/// A label-selected, managed-fields-stripped cache of one child kind, and the stream that feeds
/// it (deletions included, so a deleted child triggers a reconcile of its owner).
fn cache<K>(client: &Client) -> (Store<K>, ChildStream<K>)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| {
            o.meta_mut().managed_fields = None;
        })
        .reflect(writer)
        .touched_objects();
    (reader, Box::pin(stream))
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
    preflight(&client).await?;

    let (service_accounts, sa_stream) = cache::<ServiceAccount>(&client);
    let (secrets, secret_stream) = cache::<Secret>(&client);
    let (config_maps, cm_stream) = cache::<ConfigMap>(&client);
    let (services, svc_stream) = cache::<Service>(&client);
    let (network_policies, np_stream) = cache::<NetworkPolicy>(&client);
    let (pdbs, pdb_stream) = cache::<PodDisruptionBudget>(&client);
    let (statefulsets, sts_stream) = cache::<StatefulSet>(&client);
    let stores = Stores {
        service_accounts,
        secrets,
        config_maps,
        services,
        network_policies,
        pdbs,
        statefulsets,
    };

    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let events = Events::Kube(Recorder::new(client.clone(), reporter));
    let ctx = Arc::new(Context::new(client.clone(), stores, events, settings));

    info!("starting the SecureQdrant and QdrantAccessToken controllers");
    let instances = Controller::new(
        Api::<SecureQdrant>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let instance_store = instances.store();
    let instances = instances
        .owns_stream(sa_stream)
        .owns_stream(secret_stream)
        .owns_stream(cm_stream)
        .owns_stream(svc_stream)
        .owns_stream(np_stream)
        .owns_stream(pdb_stream)
        .owns_stream(sts_stream)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(log_queue_errors);

    // Tokens: re-checked when their SecureQdrant or its credentials (API key, trust bundle)
    // change, so a rotated key re-mints at once.
    let tokens = Controller::new(
        Api::<QdrantAccessToken>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let token_store = tokens.store();
    let by_instance = {
        let store = token_store.clone();
        move |sq: SecureQdrant| tokens_of(&store, sq.namespace(), sq.metadata.name)
    };
    let by_credentials = {
        let store = token_store.clone();
        move |secret: Secret| {
            let instance = secret.labels().get(LABEL_INSTANCE).cloned();
            tokens_of(&store, secret.namespace(), instance)
        }
    };
    let credentials = watcher::Config::default().labels(&format!(
        "{MANAGED_SELECTOR},{LABEL_COMPONENT}={COMPONENT_CREDENTIALS}"
    ));
    let tokens = tokens
        .owns(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(MANAGED_SELECTOR),
        )
        .watches(
            Api::<SecureQdrant>::all(client.clone()),
            watcher::Config::default(),
            by_instance,
        )
        .watches(
            Api::<Secret>::all(client.clone()),
            credentials,
            by_credentials,
        )
        .shutdown_on_signal()
        .run(
            move |qat, ctx| token::reconcile(qat, ctx, instance_store.clone()),
            token_error_policy,
            ctx,
        )
        .for_each(log_queue_errors);

    futures::join!(instances, tokens);
    info!("controllers stopped");
    Ok(())
}

async fn log_queue_errors<T, E: std::fmt::Display, Q: std::fmt::Display>(
    result: Result<T, kube::runtime::controller::Error<E, Q>>,
) {
    if let Err(e) = result {
        // Reconcile errors are already logged by the error policies; these are watch errors.
        match e {
            kube::runtime::controller::Error::ReconcilerFailed(..) => {}
            other => error!(error = %other, "controller error"),
        }
    }
}

/// The QdrantAccessTokens of a namespace that reference the SecureQdrant `instance`.
fn tokens_of(
    store: &Store<QdrantAccessToken>,
    namespace: Option<String>,
    instance: Option<String>,
) -> Vec<ObjectRef<QdrantAccessToken>> {
    let (Some(ns), Some(instance)) = (namespace, instance) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|t| {
            t.namespace().as_deref() == Some(ns.as_str()) && t.spec.qdrant_ref.name == instance
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

fn token_error_policy(qat: Arc<QdrantAccessToken>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(
        token = %format!("{}/{}", qat.namespace().unwrap_or_default(), qat.name_any()),
        error = %error,
        kind = error.metric_label(),
        "token reconcile failed"
    );
    Action::requeue(std::time::Duration::from_secs(15))
}
