//! A test-only, in-memory Kubernetes API server, good enough for kube-rs controllers (reflectors,
//! watchers, server-side apply, the status subresource, events) and for `kubectl get` /
//! `kubectl apply --server-side`. See README.md for what it does and how it differs from a real
//! API server.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fake_apiserver::{FakeApiServer, Options};
//! let server = FakeApiServer::start(Options::default()).await?;
//! server.write_kubeconfig("/tmp/fake.kubeconfig")?;
//! println!("{}", server.url());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod defaults;
mod discovery;
mod error;
mod faults;
mod fields;
mod resources;
mod selector;
mod server;
mod store;
mod watch;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use error::ApiError;
pub use faults::{Counters, Faults};

use faults::Rng;
use store::{DeleteOpts, PatchKind, Store, WriteCtx};

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; loopback by default.
    pub host: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Changes kept for watch resumption; a watch from an older resourceVersion gets 410 Gone.
    pub watch_history: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Delete objects whose owners are all gone (ownerReferences by uid).
    pub garbage_collection: bool,
    /// Create PVCs for StatefulSets' volumeClaimTemplates (no pods, ever).
    pub statefulset_controller: bool,
    /// Serve `sendInitialEvents=true` watches (streaming lists); when false they get 422, like a
    /// server without the WatchList feature.
    pub streaming_lists: bool,
    /// Faults in force from the start.
    pub faults: Faults,
    /// Objects (CRDs first, typically) created before the server accepts connections.
    pub objects: Vec<Value>,
    /// Seed for uids and generated names.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            garbage_collection: true,
            statefulset_controller: true,
            streaming_lists: true,
            faults: Faults::default(),
            objects: Vec::new(),
            seed: 0x5eed,
        }
    }
}

/// State shared by the connections.
pub(crate) struct Shared {
    store: Mutex<Store>,
    faults: Mutex<(Faults, Rng)>,
    counters: Mutex<Counters>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) streaming_lists: bool,
    pub(crate) addr: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub(crate) fn count(&self, verb: &str, resource: &str) {
        *lock(&self.counters)
            .requests
            .entry((verb.to_owned(), resource.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    pub(crate) fn reset_counters(&self) {
        *lock(&self.counters) = Counters::default();
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).0.clone()
    }

    pub(crate) fn set_faults(&self, f: Faults) {
        let seed = f.seed;
        *lock(&self.faults) = (f, Rng::new(seed));
    }

    /// Latency to add and the error to inject (code, Retry-After) for one request.
    pub(crate) fn decide_faults(
        &self,
        verb: &str,
        resource: &str,
    ) -> (Option<Duration>, Option<(u16, Option<u64>)>) {
        let mut g = lock(&self.faults);
        let (f, rng) = &mut *g;
        if !f.applies_to(verb, resource) {
            return (None, None);
        }
        let latency = faults::latency(f);
        if !rng.chance(f.error_rate) {
            return (latency, None);
        }
        let code = if f.error_codes.is_empty() {
            500
        } else {
            f.error_codes[(rng.next_u64() % f.error_codes.len() as u64) as usize]
        };
        let retry_after = if code == 429 {
            f.retry_after_seconds
        } else {
            None
        };
        drop(g);
        *lock(&self.counters)
            .injected_errors
            .entry((verb.to_owned(), resource.to_owned()))
            .or_default() += 1;
        (latency, Some((code, retry_after)))
    }

    /// Whether a watch that has sent `sent` events is to be closed now.
    pub(crate) fn should_drop_watch(&self, sent: u64) -> bool {
        let mut g = lock(&self.faults);
        let (f, rng) = &mut *g;
        let close =
            f.watch_drop_after_events.is_some_and(|n| sent >= n) || rng.chance(f.watch_drop_rate);
        drop(g);
        if close {
            lock(&self.counters).dropped_watches += 1;
        }
        close
    }
}

/// A running fake API server. Dropping it stops it (and ends every watch).
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Errors of the test helpers that name a kind.
/// The resource type that serves `kind` in `api_version`, or the API's 404.
fn served(
    store: &Store,
    api_version: &str,
    kind: &str,
) -> Result<resources::ResourceType, ApiError> {
    store
        .registry
        .by_api_version(api_version, kind)
        .map(|(rt, _)| rt.clone())
        .ok_or_else(|| unknown_kind(api_version, kind))
}

fn unknown_kind(api_version: &str, kind: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("no kind {kind} is served in {api_version}"),
    )
}

impl FakeApiServer {
    /// Binds, creates `options.objects`, and serves until dropped.
    pub async fn start(options: Options) -> std::io::Result<FakeApiServer> {
        let listener = TcpListener::bind((options.host, options.port)).await?;
        let addr = listener.local_addr()?;
        let mut store = Store::new(options.watch_history, options.seed);
        store.gc = options.garbage_collection;
        store.statefulset_controller = options.statefulset_controller;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            faults: Mutex::new((options.faults.clone(), Rng::new(options.faults.seed))),
            counters: Mutex::new(Counters::default()),
            bookmark_interval: options.bookmark_interval,
            streaming_lists: options.streaming_lists,
            addr,
        });
        let server = FakeApiServer {
            shared: shared.clone(),
            addr,
            task: tokio::spawn(serve(listener, shared)),
        };
        for obj in options.objects {
            server.insert(obj).map_err(std::io::Error::other)?;
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig (context `fake`, namespace `default`, no credentials) for this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Requests received so far, by (verb, resource).
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    pub fn reset_counters(&self) {
        self.shared.reset_counters()
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the faults in force (and reseeds the fault RNG with `faults.seed`).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults)
    }

    pub fn clear_faults(&self) {
        self.shared.set_faults(Faults::default())
    }

    /// The global resourceVersion (the last one handed out).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_store().rv
    }

    /// Forgets the watch history: a watch from any older resourceVersion now gets 410 Gone.
    pub fn compact_watch_history(&self) {
        self.shared.lock_store().compact()
    }

    /// Creates an object directly (no faults, not counted), status included. A
    /// CustomResourceDefinition registers its kind. The namespace defaults to `default`.
    pub fn insert(&self, obj: impl Serialize) -> Result<Value, ApiError> {
        let obj = serde_json::to_value(obj)
            .map_err(|e| ApiError::bad_request(format!("not serializable: {e}")))?;
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut store = self.shared.lock_store();
        let (rt, version) = store
            .registry
            .by_api_version(&api_version, &kind)
            .map(|(rt, v)| (rt.clone(), v))
            .ok_or_else(|| unknown_kind(&api_version, &kind))?;
        let ns = match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(ns) => ns.to_owned(),
            None if rt.namespaced => "default".to_owned(),
            None => String::new(),
        };
        let ctx = WriteCtx {
            manager: "fake-apiserver".into(),
            api_version: rt.api_version(&version),
            ..WriteCtx::default()
        };
        let out = store.create(&rt, &ns, obj, &ctx, true)?;
        Ok(watch::present(&out, &rt.api_version(&version), false))
    }

    /// An object, by apiVersion, kind (or plural/short name) and namespace (`""` when
    /// cluster-scoped).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.lock_store();
        let (rt, _) = store.registry.by_api_version(api_version, kind)?;
        store
            .get(&rt.group_resource(), namespace, name)
            .map(|o| watch::present(o, api_version, false))
    }

    /// The objects of a kind in a namespace (`""`: all namespaces), by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: &str) -> Vec<Value> {
        let store = self.shared.lock_store();
        let Some((rt, _)) = store.registry.by_api_version(api_version, kind) else {
            return Vec::new();
        };
        store
            .list(&rt.group_resource(), namespace)
            .map(|o| watch::present(o, api_version, false))
            .collect()
    }

    /// Deletes an object as a background-propagation DELETE would (finalizers respected,
    /// dependents garbage-collected).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let mut store = self.shared.lock_store();
        let rt = served(&store, api_version, kind)?;
        store.delete(&rt, namespace, name, &DeleteOpts::default())
    }

    /// Waits until `done` holds for an object (`None` when it does not exist), checking now and
    /// after every change; returns the object as it was then, or `Err` after `timeout`.
    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut rx = self.shared.lock_store().tx.subscribe();
            let now = self.get(api_version, kind, namespace, name);
            if done(now.as_ref()) {
                return Ok(now);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {kind} {namespace}/{name}; last seen: {now:?}"
                    ));
                }
                _ = rx.recv() => {}
            }
        }
    }

    /// Applies a JSON merge patch to an object directly (no faults, not counted), as a user's
    /// `kubectl patch --type merge` or `kubectl annotate` would: for tests that must tell the
    /// user's writes from the code under test's (the request counters see only the latter).
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut store = self.shared.lock_store();
        let rt = served(&store, api_version, kind)?;
        let ctx = WriteCtx {
            manager: "kubectl".into(),
            api_version: api_version.to_owned(),
            ..WriteCtx::default()
        };
        let body = serde_json::to_vec(patch)
            .map_err(|e| ApiError::bad_request(format!("not serializable: {e}")))?;
        store
            .patch(&rt, namespace, name, PatchKind::Merge, &body, &ctx)
            .map(|(obj, _)| obj)
    }

    /// Replaces an object's `.status` (as a controller or kubelet would), e.g. to make a
    /// StatefulSet look ready.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let mut store = self.shared.lock_store();
        let rt = served(&store, api_version, kind)?;
        let ctx = WriteCtx {
            manager: "fake-apiserver".into(),
            api_version: api_version.to_owned(),
            status: rt.status,
            ..WriteCtx::default()
        };
        let gr = rt.group_resource();
        let mut obj = store
            .get(&gr, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&gr, name))?;
        obj["status"] = status;
        store.update(&rt, namespace, name, obj, &ctx)
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(server::handle(shared, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
