//! Which namespaces the operator watches: all of them, or a list (`--namespaces a,b`).
//!
//! With a list, every watch becomes one watch per namespace (`Api::namespaced`), so the operator
//! needs no cluster-wide list/watch permission. The streams of one kind are merged; a cache fed
//! by several namespaces is kept by [`NamespacedReflector`], because kube's reflector replaces the
//! whole cache when one watch re-lists (it would drop the other namespaces' objects).

use std::collections::HashMap;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use crate::reconcile::child_meta::map_event;
use crate::reconcile::stores::Watched;

/// A stream of watch events.
pub type EventStream<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// The namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum WatchScope {
    #[default]
    All,
    /// These namespaces only (not empty, no duplicates).
    Namespaces(Vec<String>),
}

impl WatchScope {
    /// `All` for an empty list; blank entries and duplicates are dropped.
    pub fn from_list<S: AsRef<str>>(names: &[S]) -> Self {
        let mut list: Vec<String> = Vec::new();
        for n in names.iter().map(|n| n.as_ref().trim()) {
            if !n.is_empty() && !list.iter().any(|l| l == n) {
                list.push(n.to_owned());
            }
        }
        if list.is_empty() {
            WatchScope::All
        } else {
            WatchScope::Namespaces(list)
        }
    }

    /// One Api per watched namespace (one cluster-wide Api for `All`).
    pub fn apis<K>(&self, client: &Client) -> Vec<(Option<String>, Api<K>)>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            WatchScope::All => vec![(None, Api::all(client.clone()))],
            WatchScope::Namespaces(list) => list
                .iter()
                .map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns)))
                .collect(),
        }
    }

    /// One watch per namespace (with kube's default backoff), not merged.
    pub fn watches<K>(
        &self,
        client: &Client,
        config: &watcher::Config,
    ) -> Vec<(Option<String>, EventStream<K>)>
    where
        K: Watched,
    {
        self.apis::<K>(client)
            .into_iter()
            .map(|(ns, api)| (ns, watcher(api, config.clone()).default_backoff().boxed()))
            .collect()
    }

    /// Every namespace's watch merged into one stream (for triggers without a cache).
    pub fn events<K>(&self, client: &Client, config: &watcher::Config) -> EventStream<K>
    where
        K: Watched,
    {
        stream::select_all(
            self.watches::<K>(client, config)
                .into_iter()
                .map(|(_, s)| s),
        )
        .boxed()
    }
}

/// Something to call once, when a cache first holds a full list.
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Feeds `writer` from per-namespace watches and yields their events, merged; calls `on_ready`
/// once the cache holds every namespace's first list. The cache holds `cached(object)` of each
/// object a watch reports (`C`: what the reconciles read of it), the events go on as they came.
/// With one watch this is kube's `reflect`; with several, [`NamespacedReflector`] keeps the cache.
///
/// (`on_ready` exists because awaiting `Store::wait_until_ready` from a second task is unsafe in
/// kube-runtime 5: the store wakes only the last task that polled it, so a readiness probe
/// waiting on it could leave the controller itself waiting.)
pub fn reflect<K, C>(
    watches: Vec<(Option<String>, EventStream<K>)>,
    mut writer: Writer<C>,
    cached: fn(&K) -> C,
    on_ready: OnReady,
) -> EventStream<K>
where
    K: Send + 'static,
    C: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    if watches.len() == 1 {
        let (_, s) = watches.into_iter().next().expect("one watch");
        let mut on_ready = Some(on_ready);
        return s
            .inspect(move |event| {
                if let Ok(event) = event {
                    writer.apply_watcher_event(&map_event(event, cached));
                    if let watcher::Event::InitDone = event
                        && let Some(f) = on_ready.take()
                    {
                        f();
                    }
                }
            })
            .boxed();
    }
    let namespaces: Vec<String> = watches
        .iter()
        .map(|(ns, _)| ns.clone().unwrap_or_default())
        .collect();
    let mut reflector = NamespacedReflector::new(writer, namespaces, on_ready);
    let tagged = watches
        .into_iter()
        .enumerate()
        .map(|(i, (_, s))| s.map(move |e| (i, e)).boxed());
    stream::select_all(tagged)
        .map(move |(i, event)| {
            if let Ok(e) = &event {
                reflector.apply(i, &map_event(e, cached));
            }
            event
        })
        .boxed()
}

/// One cache fed by one watch per namespace. A namespace's re-list replaces that namespace's
/// objects only; the cache reports ready once every namespace listed once.
pub struct NamespacedReflector<K: Lookup<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    reader: Store<K>,
    namespaces: Vec<String>,
    /// Objects of a re-list in progress, per namespace.
    relisting: Vec<Option<HashMap<ObjectRef<K>, K>>>,
    listed: Vec<bool>,
    on_ready: Option<OnReady>,
}

impl<K: Lookup<DynamicType = ()> + Clone + 'static> NamespacedReflector<K> {
    pub fn new(writer: Writer<K>, namespaces: Vec<String>, on_ready: OnReady) -> Self {
        let n = namespaces.len();
        NamespacedReflector {
            reader: writer.as_reader(),
            writer,
            namespaces,
            relisting: vec![None; n],
            listed: vec![false; n],
            on_ready: Some(on_ready),
        }
    }

    /// Applies an event of the watch of namespace number `i`.
    pub fn apply(&mut self, i: usize, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                self.writer.apply_watcher_event(event);
            }
            watcher::Event::Init => self.relisting[i] = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                self.relisting[i]
                    .get_or_insert_with(HashMap::new)
                    .insert(ObjectRef::from_obj(obj), obj.clone());
            }
            watcher::Event::InitDone => {
                let fresh = self.relisting[i].take().unwrap_or_default();
                let ns = self.namespaces[i].as_str();
                for old in self.reader.state() {
                    if Lookup::namespace(old.as_ref()).as_deref() == Some(ns)
                        && !fresh.contains_key(&ObjectRef::from_obj(old.as_ref()))
                    {
                        self.writer
                            .apply_watcher_event(&watcher::Event::Delete(old.as_ref().clone()));
                    }
                }
                for obj in fresh.into_values() {
                    self.writer.apply_watcher_event(&watcher::Event::Apply(obj));
                }
                self.listed[i] = true;
                if self.on_ready.is_some() && self.listed.iter().all(|l| *l) {
                    // Replays the cache as one list: same content, and the Store becomes ready.
                    self.writer.apply_watcher_event(&watcher::Event::Init);
                    for obj in self.reader.state() {
                        self.writer
                            .apply_watcher_event(&watcher::Event::InitApply(obj.as_ref().clone()));
                    }
                    self.writer.apply_watcher_event(&watcher::Event::InitDone);
                    if let Some(f) = self.on_ready.take() {
                        f();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use watcher::Event;

    use super::*;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn content(store: &Store<ConfigMap>) -> BTreeSet<String> {
        store
            .state()
            .iter()
            .map(|c| {
                let ns = c.metadata.namespace.as_deref().unwrap_or_default();
                format!("{ns}/{}", c.name_any())
            })
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn is_ready(store: &Store<ConfigMap>) -> bool {
        store.wait_until_ready().now_or_never().is_some()
    }

    /// An `OnReady` counting its calls.
    fn counter() -> (Arc<AtomicUsize>, OnReady) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        (
            calls,
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn scope_from_a_list() {
        assert_eq!(WatchScope::from_list::<&str>(&[]), WatchScope::All);
        assert_eq!(WatchScope::from_list(&["", " "]), WatchScope::All);
        assert_eq!(
            WatchScope::from_list(&["a", " b ", "a"]),
            WatchScope::Namespaces(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn ready_once_every_namespace_listed_and_a_relist_replaces_only_its_namespace() {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let (ready_calls, on_ready) = counter();
        let mut r = NamespacedReflector::new(writer, vec!["a".into(), "b".into()], on_ready);

        r.apply(0, &Event::Init);
        r.apply(0, &Event::InitApply(cm("a", "one")));
        r.apply(0, &Event::InitApply(cm("a", "two")));
        r.apply(0, &Event::InitDone);
        assert_eq!(content(&reader), set(&["a/one", "a/two"]));
        assert!(!is_ready(&reader), "b has not listed yet");
        assert_eq!(ready_calls.load(Ordering::SeqCst), 0);

        r.apply(1, &Event::Init);
        r.apply(1, &Event::InitApply(cm("b", "one")));
        assert_eq!(content(&reader), set(&["a/one", "a/two"]), "b in progress");
        r.apply(1, &Event::InitDone);
        assert!(is_ready(&reader));
        assert_eq!(ready_calls.load(Ordering::SeqCst), 1);
        assert_eq!(content(&reader), set(&["a/one", "a/two", "b/one"]));

        // Live events.
        r.apply(1, &Event::Apply(cm("b", "two")));
        r.apply(0, &Event::Delete(cm("a", "one")));
        assert_eq!(content(&reader), set(&["a/two", "b/one", "b/two"]));

        // a re-lists after a dropped watch: a/two was deleted meanwhile, a/three created. b stays.
        r.apply(0, &Event::Init);
        r.apply(0, &Event::InitApply(cm("a", "three")));
        assert_eq!(
            content(&reader),
            set(&["a/two", "b/one", "b/two"]),
            "the old view stays until the list is complete"
        );
        r.apply(0, &Event::InitDone);
        assert_eq!(content(&reader), set(&["a/three", "b/one", "b/two"]));
        assert!(is_ready(&reader));
        assert_eq!(ready_calls.load(Ordering::SeqCst), 1, "ready once");
    }

    #[tokio::test]
    async fn one_watch_is_kubes_reflector() {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let events: EventStream<ConfigMap> = stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "one"))),
            Ok(Event::InitDone),
        ])
        .boxed();
        let (ready_calls, on_ready) = counter();
        let out: Vec<_> = reflect(vec![(None, events)], writer, ConfigMap::clone, on_ready)
            .collect()
            .await;
        assert_eq!(ready_calls.load(Ordering::SeqCst), 1);
        assert_eq!(out.len(), 3);
        assert!(is_ready(&reader));
        assert_eq!(content(&reader), set(&["a/one"]));
    }

    #[tokio::test]
    async fn several_watches_are_merged_and_passed_on() {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let list = |ns: &str| -> EventStream<ConfigMap> {
            stream::iter(vec![
                Ok(Event::Init),
                Ok(Event::InitApply(cm(ns, "x"))),
                Ok(Event::InitDone),
            ])
            .boxed()
        };
        let (ready_calls, on_ready) = counter();
        let out: Vec<_> = reflect(
            vec![(Some("a".into()), list("a")), (Some("b".into()), list("b"))],
            writer,
            ConfigMap::clone,
            on_ready,
        )
        .collect()
        .await;
        assert_eq!(out.len(), 6, "every event reaches the controller");
        assert_eq!(ready_calls.load(Ordering::SeqCst), 1);
        assert!(is_ready(&reader));
        assert_eq!(content(&reader), set(&["a/x", "b/x"]));
    }
}
