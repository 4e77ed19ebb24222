//! The caches of the controllers: label-selected watches of the children, trimmed of what the
//! operator never reads, feeding the expectations; and the readiness they report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tracing::info;

use super::scope::{EventStream, OnReady, WatchScope, reflect};
use crate::children::meta::MANAGED_SELECTOR;
use crate::reconcile::child_meta::ChildMeta;
use crate::reconcile::drift;
use crate::reconcile::expect::Expectations;
use crate::reconcile::stores::{CachedSecret, MetaStore, Stores, Watched};
use crate::statefulset_view::StatefulSetView;
use crate::telemetry::Health;

/// The objects a watch reports, for a controller's triggers.
pub type ChildStream<K> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<K, watcher::Error>> + Send>>;

/// A label-selected, managed-fields-stripped cache of one child kind in the watched namespaces,
/// and the stream that feeds it (deletions included, so a deleted child triggers a reconcile of
/// its owner). The watch reports `K`; the cache holds `cached(object)` (what the reconciles read
/// of it). With `mark`, each object carries the drift marks ([`trimmed`]).
fn cache<K, C>(
    client: &Client,
    scope: &WatchScope,
    synced: &Synced,
    expectations: &Expectations,
    mark: bool,
    cached: fn(&K) -> C,
) -> (Store<C>, ChildStream<K>)
where
    K: Watched,
    C: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let watches = trimmed(scope.watches::<K>(client, &config), mark);
    let expectations = expectations.clone();
    // After the cache holds the event's object: a write it shows is no longer pending.
    let stream = reflect(watches, writer, cached, synced.register())
        .inspect(move |event| {
            if let Ok(event) = event {
                expectations.observe(event);
            }
        })
        .touched_objects();
    (reader, Box::pin(stream))
}

/// The annotation `kubectl apply` keeps the applied object in (a Secret's data too).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The watches with what a cache never reads taken out of each object as it arrives: managed
/// fields (a third of a small object) and the copy `kubectl apply` keeps. With `mark`, the drift
/// signal ([`drift::foreign_write`]) is read from the managed fields first and kept as a
/// cache-only mark.
fn trimmed<K>(
    watches: Vec<(Option<String>, EventStream<K>)>,
    mark: bool,
) -> Vec<(Option<String>, EventStream<K>)>
where
    K: Resource + Send + 'static,
{
    watches
        .into_iter()
        .map(|(ns, s)| {
            let s: EventStream<K> = s
                .modify(move |o: &mut K| {
                    let meta = o.meta_mut();
                    if mark {
                        drift::mark_and_trim(meta);
                    }
                    meta.managed_fields = None;
                    // `kubectl apply` copies the whole object there, a Secret's data included.
                    if let Some(annotations) = meta.annotations.as_mut() {
                        annotations.remove(LAST_APPLIED);
                    }
                })
                .boxed();
            (ns, s)
        })
        .collect()
}

/// The cache and trigger stream of a controller's own kind in the watched namespaces; `deleted`
/// is called with each object whose deletion the watch reports.
pub fn main_stream<K>(
    client: &Client,
    scope: &WatchScope,
    synced: &Synced,
    deleted: impl Fn(&K) + Send + 'static,
) -> (Store<K>, ChildStream<K>)
where
    K: Watched + serde::Serialize,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().any_semantic();
    let watches = trimmed(scope.watches::<K>(client, &config), false);
    let stream = reflect(watches, writer, K::clone, synced.register())
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = event {
                deleted(obj);
            }
        })
        .applied_objects();
    (reader, Box::pin(stream))
}

/// Marks the health synced once every registered cache has listed.
#[derive(Clone)]
pub struct Synced {
    pending: Arc<AtomicUsize>,
    health: Health,
}

impl Synced {
    pub fn new(health: Health) -> Self {
        Synced {
            pending: Arc::new(AtomicUsize::new(0)),
            health,
        }
    }

    /// One more cache to wait for; the result is called when it has listed. (Every cache
    /// registers before any stream is polled.)
    fn register(&self) -> OnReady {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        Box::new(move || {
            if this.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                info!("caches synced");
                this.health.set_synced(true);
            }
        })
    }
}

/// The trigger streams of the children's caches.
pub struct ChildStreams {
    pub service_accounts: ChildStream<PartialObjectMeta<ServiceAccount>>,
    /// Metadata only: no Secret value is decoded.
    pub secrets: ChildStream<CachedSecret>,
    pub config_maps: ChildStream<PartialObjectMeta<ConfigMap>>,
    pub services: ChildStream<PartialObjectMeta<Service>>,
    pub network_policies: ChildStream<PartialObjectMeta<NetworkPolicy>>,
    pub pdbs: ChildStream<PartialObjectMeta<PodDisruptionBudget>>,
    pub statefulsets: ChildStream<StatefulSetView>,
}

/// A metadata-only cache (see [`crate::reconcile::stores::MetaStore`]): the watch asks the API
/// server for `PartialObjectMetadata`, so no body crosses the wire; the cache keeps of it only
/// the compact [`ChildMeta`]. The stream still reports the watch's objects (for triggers).
fn meta_cache<K>(
    client: &Client,
    scope: &WatchScope,
    synced: &Synced,
    expectations: &Expectations,
) -> (MetaStore<K>, ChildStream<PartialObjectMeta<K>>)
where
    K: Watched,
{
    cache::<PartialObjectMeta<K>, ChildMeta<K>>(
        client,
        scope,
        synced,
        expectations,
        marked::<K>(),
        |p| ChildMeta::new(&p.metadata),
    )
}

/// Whether the cache of `K` carries the drift marks ([`drift::mark_and_trim`]: a walk of the
/// managed fields and a hash per event). Not for Secrets: no reader of their cache reads the
/// marks (a Secret is written only over the copy its step has just read, `apply_secret`, and the
/// memo keys on versions), so the work and the two annotations per Secret would be for nothing.
pub fn marked<K: Resource<DynamicType = ()>>() -> bool {
    K::kind(&()) != "Secret"
}

/// One cache per child kind (what the reconciles read) and the streams that feed them.
pub fn child_caches(
    client: &Client,
    scope: &WatchScope,
    synced: &Synced,
    expectations: &Expectations,
) -> (Stores, ChildStreams) {
    let (service_accounts, sa_stream) =
        meta_cache::<ServiceAccount>(client, scope, synced, expectations);
    // Secrets: a metadata-only watch (`PartialObjectMeta`), so their data is neither sent by the
    // API server nor held in the cache.
    let (secrets, secret_stream) = meta_cache::<Secret>(client, scope, synced, expectations);
    let (config_maps, cm_stream) = meta_cache::<ConfigMap>(client, scope, synced, expectations);
    let (services, svc_stream) = meta_cache::<Service>(client, scope, synced, expectations);
    let (network_policies, np_stream) =
        meta_cache::<NetworkPolicy>(client, scope, synced, expectations);
    let (pdbs, pdb_stream) = meta_cache::<PodDisruptionBudget>(client, scope, synced, expectations);
    // Decoded into the view: the pod spec is skipped as each event is read.
    let (statefulsets, sts_stream) = cache::<StatefulSetView, StatefulSetView>(
        client,
        scope,
        synced,
        expectations,
        true,
        StatefulSetView::clone,
    );
    let stores = Stores {
        service_accounts,
        secrets,
        config_maps,
        services,
        network_policies,
        pdbs,
        statefulsets,
    };
    let streams = ChildStreams {
        service_accounts: sa_stream,
        secrets: secret_stream,
        config_maps: cm_stream,
        services: svc_stream,
        network_policies: np_stream,
        pdbs: pdb_stream,
        statefulsets: sts_stream,
    };
    (stores, streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use kube::core::WatchEvent;
    use serde_json::json;

    /// A Secret as a watch event brings it, decoded as the cache of Secrets decodes it and
    /// trimmed as it is before it is cached: no value is left, in any form.
    #[test]
    fn every_child_cache_but_the_secrets_carries_the_drift_marks() {
        assert!(!marked::<Secret>());
        assert!(marked::<ServiceAccount>());
        assert!(marked::<ConfigMap>());
        assert!(marked::<Service>());
        assert!(marked::<NetworkPolicy>());
        assert!(marked::<PodDisruptionBudget>());
    }

    #[test]
    fn a_secret_watch_event_leaves_no_value_in_the_cached_type() {
        let value = "c2VjcmV0LWtleS1tYXRlcmlhbC0xMjM0NTY3ODkw";
        let plain = "secret-key-material-1234567890";
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {
                "name": "vectors-ca", "namespace": "search", "uid": "u-1",
                "resourceVersion": "42",
                "labels": {"app.kubernetes.io/managed-by": "secure-qdrant-operator"},
                "annotations": {
                    LAST_APPLIED: json!({"data": {"tls.key": value}}).to_string(),
                    "secureqdrant.dev/applied-hash": "abc",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsV1": {"f:data": {"f:tls.key": {}}}}],
            },
            "data": {"tls.key": value},
            "stringData": {"other": plain},
        });
        let event: WatchEvent<CachedSecret> =
            serde_json::from_value(json!({"type": "ADDED", "object": secret})).unwrap();
        let WatchEvent::Added(decoded) = event else {
            panic!("an ADDED event")
        };
        let stream: EventStream<CachedSecret> =
            futures::stream::iter([Ok(watcher::Event::Apply(decoded))]).boxed();
        let trimmed = trimmed(vec![(None, stream)], marked::<Secret>());
        let (_, stream) = trimmed.into_iter().next().unwrap();
        let events = futures::executor::block_on(stream.collect::<Vec<_>>());
        let Ok(watcher::Event::Apply(cached)) = &events[0] else {
            panic!("an Apply event")
        };
        // What the cache keeps of it.
        let kept = ChildMeta::<Secret>::new(&cached.metadata);
        let shown = format!(
            "{cached:?}\n{}\n{kept:?}\n{:?}",
            serde_json::to_string(cached).expect("serializes"),
            kept.object_meta()
        );
        for leak in [value, plain, "tls.key"] {
            assert!(!shown.contains(leak), "{leak} in {shown}");
        }
        // What the operator decides from is kept.
        assert_eq!(cached.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(cached.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(
            cached.annotations().get("secureqdrant.dev/applied-hash"),
            Some(&"abc".to_owned())
        );
        assert_eq!(kept.resource_version(), Some("42"));
        assert_eq!(kept.uid(), Some("u-1"));
        assert_eq!(
            kept.annotation("secureqdrant.dev/applied-hash"),
            Some("abc")
        );
        // No drift marks: nothing reads them on Secrets (the managed fields above, with no
        // apply of the operator, would mark it as written by someone else).
        assert_eq!(kept.annotation(drift::FOREIGN_WRITE), None);
        assert_eq!(kept.annotation(drift::OWNED_FIELDS), None);
    }
}
