//! Wiring of the controller: watches, caches, and the reconcile loop.

pub mod caches;
pub mod scope;
pub mod shutdown;
pub mod triggers;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, error, info, warn};

use self::caches::{ChildStream, ChildStreams, Synced, child_caches, main_stream};
use self::scope::WatchScope;
use self::shutdown::Shutdown;
use crate::access_tokens;
use crate::children::meta::{COMPONENT_CREDENTIALS, LABEL_COMPONENT, LABEL_INSTANCE, MANAGER};
use crate::crd::{QdrantAccessToken, SecureQdrant};
use crate::error::{Error, Step};
use crate::events::{Events, Publisher};
use crate::reconcile::backoff::{backoff_key, key};
use crate::reconcile::expect::Expectations;
use crate::reconcile::recent::system_clock;
use crate::reconcile::references::ALLOWED_INSTANCE_LABEL;
use crate::reconcile::stores::CachedSecret;
use crate::reconcile::{Context, reconcile_steps};
use crate::settings::Settings;
use crate::telemetry::metrics::{ACCESS_TOKEN, SECURE_QDRANT};
use crate::telemetry::{Health, Metrics};

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

/// Checks that the API answers and that the CRD is installed (listing in the first watched
/// namespace when the scope is a list, which needs no cluster-wide permission).
pub async fn preflight(client: &Client, scope: &WatchScope) -> Result<(), StartError> {
    let api: Api<SecureQdrant> = match scope {
        WatchScope::All => Api::all(client.clone()),
        WatchScope::Namespaces(list) => Api::namespaced(client.clone(), &list[0]),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(StartError::CrdMissing),
        Err(e) => Err(StartError::Unreachable(e)),
    }
}

/// Reconciles running at once, per controller. Unbounded, a thousand instances created together
/// start a thousand reconciles, each holding an HTTP connection and its buffers (BENCHMARKS.md);
/// the API server is the bottleneck anyway.
pub const CONCURRENCY: u16 = 16;

/// What the controllers run with, besides the client.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub settings: Settings,
    pub scope: WatchScope,
    pub metrics: Metrics,
    pub health: Health,
    pub shutdown: Shutdown,
}

/// Counts and times one reconcile of `obj`. Forgets its per-object series when it is being
/// deleted, or was deleted while the reconcile ran (`store` no longer holds it: the watch's
/// deletion already forgot it, and the reconcile may have set it again).
async fn instrumented<K, F, T>(
    metrics: Metrics,
    controller: &'static str,
    obj: Arc<K>,
    store: Store<K>,
    reconcile: F,
) -> T
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Future<Output = T>,
{
    let started = Instant::now();
    let result = reconcile.await;
    metrics.reconciled(controller, started.elapsed());
    if obj.meta().deletion_timestamp.is_some()
        || store.get(&ObjectRef::from_obj(obj.as_ref())).is_none()
    {
        metrics.forget(
            controller,
            &obj.namespace().unwrap_or_default(),
            &obj.name_any(),
        );
    }
    result
}

/// Runs the SecureQdrant and QdrantAccessToken controllers until `options.shutdown` fires, then
/// lets running reconciles finish. Marks `options.health` synced once every cache listed.
pub async fn run(client: Client, options: RunOptions) -> anyhow::Result<()> {
    let RunOptions {
        settings,
        scope,
        metrics,
        health,
        shutdown,
    } = options;
    health.set_synced(false);
    let synced = Synced::new(health);
    // One clock for the reconciles and their memories of recent writes.
    let clock = system_clock();
    let expectations = Expectations::enabled(clock.clone());
    let (stores, children) = child_caches(&client, &scope, &synced, &expectations);

    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let events = Events::Kube(Publisher::new(client.clone(), reporter, clock.clone()));
    let mut ctx = Context::new(client.clone(), stores, events, settings).with_clock(clock);
    ctx.metrics = metrics.clone();
    ctx.expectations = expectations;
    let ctx = Arc::new(ctx);

    info!(
        ?scope,
        "starting the SecureQdrant and QdrantAccessToken controllers"
    );
    let forget = metrics.clone();
    let memos = ctx.clone();
    let tokens = main_stream::<QdrantAccessToken>(&client, &scope, &synced, move |qat| {
        let (ns, name) = (qat.namespace().unwrap_or_default(), qat.name_any());
        forget.forget(ACCESS_TOKEN, &ns, &name);
        memos.token_facts.forget(&format!("{ns}/{name}"));
    });
    let (token_triggers, token_requests) = TokenTriggers::new(tokens.0.clone());
    let forget = metrics.clone();
    let memos = ctx.clone();
    let gone = token_triggers.clone();
    let (instance_store, instance_stream) =
        main_stream::<SecureQdrant>(&client, &scope, &synced, move |sq| {
            let (ns, name) = (sq.namespace().unwrap_or_default(), sq.name_any());
            forget.forget(SECURE_QDRANT, &ns, &name);
            // What was derived from its Secrets goes with it.
            memos.key_facts.forget(&format!("{ns}/{name}"));
            memos.tls_facts.forget(&format!("{ns}/{name}"));
            gone.instance(sq);
        });
    let referenced = scope
        .events::<CachedSecret>(&client, &referenced_secrets())
        .touched_objects()
        .boxed();
    let triggers = token_triggers.share(
        instance_store.clone(),
        instance_stream,
        children,
        referenced,
    );
    let instances = secure_qdrants(&shutdown, instance_store.clone(), triggers, ctx.clone());
    let tokens = access_tokens(&shutdown, tokens, token_requests, instance_store, ctx);
    futures::join!(instances, tokens);
    info!("controllers stopped");
    Ok(())
}

/// Secrets the user references (apiKeySecretRef, caSecretRef, certificateSecretRef,
/// imagePullSecrets) are used only when they carry the opt-in label naming the instance; the
/// watch selects that label, so a change (the label added, the key renewed) reconciles every
/// instance that references them at once (and their tokens: a user's key signs them). The
/// operator writes no label on them. Like every Secret watch of the operator, it asks for
/// metadata only: no Secret value is decoded.
fn referenced_secrets() -> watcher::Config {
    watcher::Config::default().labels(ALLOWED_INSTANCE_LABEL)
}

/// The SecureQdrant controller's trigger streams: its instances, their children, the Secrets
/// users let them use.
struct InstanceTriggers {
    instances: ChildStream<SecureQdrant>,
    children: ChildStreams,
    referenced: ChildStream<CachedSecret>,
}

/// Which tokens to look at again when an instance, one of the operator's Secrets or a Secret a
/// user lets an instance use changes, read from the SecureQdrant controller's watches as they
/// pass: one watch per kind and label selector serves both controllers.
#[derive(Clone)]
struct TokenTriggers {
    queue: triggers::Sender<QdrantAccessToken>,
    tokens: Store<QdrantAccessToken>,
}

impl TokenTriggers {
    fn new(tokens: Store<QdrantAccessToken>) -> (Self, triggers::Requests<QdrantAccessToken>) {
        let (queue, requests) = triggers::queue();
        (TokenTriggers { queue, tokens }, requests)
    }

    /// An instance changed, or went: its tokens.
    fn instance(&self, sq: &SecureQdrant) {
        let name = sq.metadata.name.clone();
        self.queue
            .send(tokens_of(&self.tokens, sq.namespace(), name));
    }

    /// One of the operator's Secrets changed: the token whose Secret it is, or the tokens of
    /// the instance whose credentials (API key, trust bundle) it holds, so a rotated key
    /// re-mints at once.
    fn managed_secret(&self, secret: &CachedSecret) {
        let ns = secret.namespace();
        self.queue.send(
            secret
                .owner_references()
                .iter()
                .filter_map(|owner| ObjectRef::from_owner_ref(ns.as_deref(), owner, ())),
        );
        let labels = secret.labels();
        if labels.get(LABEL_COMPONENT).map(String::as_str) == Some(COMPONENT_CREDENTIALS) {
            let instance = labels.get(LABEL_INSTANCE).cloned();
            self.queue.send(tokens_of(&self.tokens, ns, instance));
        }
    }

    /// A Secret users let instances use changed: the tokens of the instances that reference it
    /// (a user's key, spec.auth.apiKeySecretRef, signs the tokens too).
    fn referenced(&self, instances: &Store<SecureQdrant>, secret: &CachedSecret) {
        for sq in instances_referencing(instances, secret) {
            let (ns, name) = (sq.namespace.clone(), Some(sq.name.clone()));
            self.queue.send(tokens_of(&self.tokens, ns, name));
        }
    }

    /// The SecureQdrant controller's trigger streams, passing on to the tokens what they see.
    fn share(
        self,
        instance_store: Store<SecureQdrant>,
        instances: ChildStream<SecureQdrant>,
        mut children: ChildStreams,
        referenced: ChildStream<CachedSecret>,
    ) -> InstanceTriggers {
        let this = self.clone();
        let instances = instances
            .inspect(move |sq| sq.iter().for_each(|sq| this.instance(sq)))
            .boxed();
        let this = self.clone();
        children.secrets = children
            .secrets
            .inspect(move |s| s.iter().for_each(|s| this.managed_secret(s)))
            .boxed();
        let referenced = referenced
            .inspect(move |s| s.iter().for_each(|s| self.referenced(&instance_store, s)))
            .boxed();
        InstanceTriggers {
            instances,
            children,
            referenced,
        }
    }
}

/// The SecureQdrant controller: reconciles an instance when it, one of its children, or a Secret
/// it references changes.
fn secure_qdrants(
    shutdown: &Shutdown,
    instance_store: Store<SecureQdrant>,
    triggers: InstanceTriggers,
    ctx: Arc<Context>,
) -> impl Future<Output = ()> {
    let InstanceTriggers {
        instances,
        children,
        referenced,
    } = triggers;
    let by_reference = {
        let store = instance_store.clone();
        move |secret: CachedSecret| instances_referencing(&store, &secret)
    };
    Controller::for_stream(instances, instance_store.clone())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .watches_stream(referenced, by_reference)
        .owns_stream(children.service_accounts)
        .owns_stream(children.secrets)
        .owns_stream(children.config_maps)
        .owns_stream(children.services)
        .owns_stream(children.network_policies)
        .owns_stream(children.pdbs)
        .owns_stream(children.statefulsets)
        .graceful_shutdown_on(stopped(shutdown))
        .run(
            {
                let store = instance_store.clone();
                move |sq: Arc<SecureQdrant>, ctx: Arc<Context>| {
                    instrumented(
                        ctx.metrics.clone(),
                        SECURE_QDRANT,
                        sq.clone(),
                        store.clone(),
                        reconcile_steps(sq, ctx),
                    )
                }
            },
            |sq, failure, ctx| {
                ctx.metrics
                    .failed(SECURE_QDRANT, failure.step, &failure.error);
                // The policy's log line names the step.
                let _step = tracing::warn_span!("failed", step = failure.step.label()).entered();
                error_policy(sq, &failure.error, ctx)
            },
            ctx,
        )
        .for_each(log_queue_errors)
}

/// The QdrantAccessToken controller: tokens are re-checked when they or their Secrets change,
/// and on `requests` ([`TokenTriggers`]: their SecureQdrant or its credentials (API key, trust
/// bundle) changed), so a rotated key re-mints at once.
fn access_tokens(
    shutdown: &Shutdown,
    (token_store, token_stream): (Store<QdrantAccessToken>, ChildStream<QdrantAccessToken>),
    requests: triggers::Requests<QdrantAccessToken>,
    instance_store: Store<SecureQdrant>,
    ctx: Arc<Context>,
) -> impl Future<Output = ()> {
    Controller::for_stream(token_stream, token_store.clone())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_on(requests)
        .graceful_shutdown_on(stopped(shutdown))
        .run(
            {
                let store = token_store.clone();
                move |qat: Arc<QdrantAccessToken>, ctx: Arc<Context>| {
                    instrumented(
                        ctx.metrics.clone(),
                        ACCESS_TOKEN,
                        qat.clone(),
                        store.clone(),
                        access_tokens::reconcile(qat, ctx, instance_store.clone()),
                    )
                }
            },
            |qat, error, ctx| {
                ctx.metrics.failed(ACCESS_TOKEN, Step::Token, error);
                token_error_policy(qat, error, ctx)
            },
            ctx,
        )
        .for_each(log_queue_errors)
}

/// Resolves when shutdown is requested (what `graceful_shutdown_on` waits for).
fn stopped(shutdown: &Shutdown) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.requested().await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

async fn log_queue_errors<T, E: std::fmt::Display, Q: std::fmt::Display>(
    result: Result<T, kube::runtime::controller::Error<E, Q>>,
) {
    if let Err(e) = result {
        // Reconcile errors are already logged by the error policies; these are watch errors.
        match e {
            kube::runtime::controller::Error::ReconcilerFailed(..) => {}
            // A requeue of an object deleted meanwhile: nothing to do.
            kube::runtime::controller::Error::ObjectNotFound(obj) => {
                debug!(object = %obj, "requeued object no longer exists")
            }
            other => error!(error = %other, "controller error"),
        }
    }
}

/// The SecureQdrants of the Secret's namespace that reference it (key, CA, certificate or image
/// pull Secret).
fn instances_referencing(
    store: &Store<SecureQdrant>,
    secret: &CachedSecret,
) -> Vec<ObjectRef<SecureQdrant>> {
    let (Some(ns), name) = (secret.namespace(), secret.name_any()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|sq| sq.namespace().as_deref() == Some(ns.as_str()))
        .filter(|sq| {
            let spec = &sq.spec;
            spec.auth.api_key_secret_ref.as_ref().map(|r| &r.name) == Some(&name)
                || spec.tls.ca_secret_ref.as_ref().map(|r| &r.name) == Some(&name)
                || spec.tls.certificate_secret_ref.as_ref().map(|r| &r.name) == Some(&name)
                || spec.image_pull_secrets.iter().any(|r| r.name == name)
        })
        .map(|sq| ObjectRef::from_obj(sq.as_ref()))
        .collect()
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

/// Called when a reconcile fails: logs, and retries with exponential backoff per object
/// (5 s doubling to 5 min; see [`crate::reconcile::backoff::Backoffs`]).
pub fn error_policy(sq: Arc<SecureQdrant>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.failures.failed(&backoff_key(&sq), (ctx.clock)());
    warn!(instance = %key(&sq), error = %error, kind = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
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

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use kube::core::PartialObjectMetaExt;
    use kube::runtime::reflector;
    use serde_json::json;

    use super::*;

    fn token(ns: &str, name: &str, instance: &str) -> QdrantAccessToken {
        serde_json::from_value(json!({
            "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "QdrantAccessToken",
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}")},
            "spec": {"qdrantRef": {"name": instance}, "access": {"global": "r"}},
        }))
        .expect("a token")
    }

    fn instance(ns: &str, name: &str, spec: serde_json::Value) -> SecureQdrant {
        serde_json::from_value(json!({
            "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
            "metadata": {"namespace": ns, "name": name}, "spec": spec,
        }))
        .expect("a SecureQdrant")
    }

    fn secret(ns: &str, name: &str, meta: serde_json::Value) -> CachedSecret {
        let mut meta: kube::api::ObjectMeta = serde_json::from_value(meta).expect("metadata");
        meta.namespace = Some(ns.into());
        meta.name = Some(name.into());
        meta.into_response_partial()
    }

    fn store<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (reader, mut writer) = reflector::store();
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(o));
        }
        reader
    }

    /// What the requests queued so far name, as `ns/name`, sorted.
    fn queued(requests: &mut triggers::Requests<QdrantAccessToken>) -> Vec<String> {
        let mut out: Vec<String> = std::iter::from_fn(|| requests.next().now_or_never().flatten())
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        out.sort();
        out
    }

    /// Each trigger the token controller had its own watch for names the same tokens from the
    /// SecureQdrant controller's watches: an instance (changed or gone), its credentials
    /// Secret, a token's own Secret (deleted), a Secret a user lets an instance use.
    #[test]
    fn the_shared_watches_name_the_tokens_each_trigger_concerns() {
        let tokens = store(vec![
            token("a", "t1", "vectors"),
            token("a", "t2", "vectors"),
            token("a", "t3", "other"),
            token("b", "t4", "vectors"),
        ]);
        let (triggers, mut requests) = TokenTriggers::new(tokens);

        triggers.instance(&instance("a", "vectors", json!({})));
        assert_eq!(queued(&mut requests), ["a/t1", "a/t2"]);

        let credentials = json!({"labels": {
            "app.kubernetes.io/managed-by": "secure-qdrant-operator",
            LABEL_COMPONENT: COMPONENT_CREDENTIALS, LABEL_INSTANCE: "other"}});
        triggers.managed_secret(&secret("a", "other-api-key", credentials));
        assert_eq!(queued(&mut requests), ["a/t3"]);

        // Another of the instance's Secrets (its CA, say): not the tokens' business.
        let ca = json!({"labels": {
            "app.kubernetes.io/managed-by": "secure-qdrant-operator",
            LABEL_COMPONENT: "ca", LABEL_INSTANCE: "other"}});
        triggers.managed_secret(&secret("a", "other-ca", ca));
        assert_eq!(queued(&mut requests), Vec::<String>::new());

        let owned = json!({"ownerReferences": [{
            "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "QdrantAccessToken",
            "name": "t4", "uid": "uid-t4", "controller": true}]});
        triggers.managed_secret(&secret("b", "t4-qdrant-token", owned));
        assert_eq!(queued(&mut requests), ["b/t4"]);

        let instances = store(vec![
            instance(
                "a",
                "vectors",
                json!({"auth": {"apiKeySecretRef": {"name": "mine", "key": "api-key"}}}),
            ),
            instance("a", "other", json!({})),
        ]);
        triggers.referenced(&instances, &secret("a", "mine", json!({})));
        assert_eq!(queued(&mut requests), ["a/t1", "a/t2"]);
        triggers.referenced(&instances, &secret("a", "unused", json!({})));
        assert_eq!(queued(&mut requests), Vec::<String>::new());
    }
}
