//! What the in-memory API server gave the tests, done with real parts (issue 14): a fault proxy
//! in front of the real kube-apiserver (`control-plane proxy`, tests/control-plane/proxy.go)
//! that can be switched on, changed and off while a test runs; request counts and the RBAC call
//! set read from the API server's audit log (verb, resource, namespace, user, code); an
//! identity per test with the chart's RBAC; and a small dynamic API (insert, get, list, patch,
//! delete by apiVersion and kind) for tests that were written against the fake's helpers.
//!
//! Use it next to `support/control_plane.rs`:
//!
//! ```ignore
//! #[path = "support/control_plane.rs"] mod control_plane;
//! #[path = "support/real_server.rs"] mod real_server;
//! let env = real_server::Env::new("my-test").await;   // namespace, identity, proxy, clients
//! env.set_faults(&Faults { error_rate: 0.3, ..Default::default() });
//! let mark = env.mark().await; /* ... */ let counters = env.counters_since(&mark).await;
//! ```
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use secure_qdrant_operator::crd::SecureQdrant;

use crate::control_plane::{
    self, ControlPlane, Operator, Scope, apply_chart_rbac, eventually, render_chart,
    service_account_token, token_kubeconfig,
};

/// What the proxy breaks. Field names and meanings are those of the in-memory server's faults,
/// plus `watch_gone_rate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Seed of the RNG that picks which requests fail; setting faults reseeds it.
    pub seed: u64,
    /// Added before every matching request is forwarded.
    pub latency_ms: u64,
    /// Probability (0..=1) that a matching request is answered with an error instead.
    pub error_rate: f64,
    /// Status codes to pick from for injected errors; empty means `[500]`.
    pub error_codes: Vec<u16>,
    /// `Retry-After` seconds sent with injected 429s.
    pub retry_after_seconds: Option<u64>,
    /// Only these verbs (get, list, watch, create, update, patch, delete, deletecollection);
    /// empty means all.
    pub verbs: Vec<String>,
    /// Only these resources (`secrets`, `statefulsets.apps`,
    /// `secureqdrants.secureqdrant.dev/status`); empty means all.
    pub resources: Vec<String>,
    /// Close every matching watch stream after it has passed on this many events (bookmarks not
    /// counted).
    pub watch_drop_after_events: Option<u64>,
    /// Probability (0..=1) that a matching watch stream is closed after each event.
    pub watch_drop_rate: f64,
    /// Probability (0..=1) that a matching watch is answered with 410 Gone ("too old resource
    /// version"), as the API server does when its watch history no longer holds the version.
    pub watch_gone_rate: f64,
}

/// What the proxy broke so far.
#[derive(Clone, Debug, Default)]
pub struct Injected {
    /// (verb, resource) → injected error responses.
    pub errors: BTreeMap<(String, String), u64>,
    pub dropped_watches: u64,
    pub gone_watches: u64,
}

/// The fault proxy: a child process forwarding plain HTTP on loopback to the real API server.
pub struct Proxy {
    child: Child,
    _stdin: ChildStdin,
    addr: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts a proxy in front of `cp`'s API server, with no faults.
    pub fn start(cp: &ControlPlane) -> Proxy {
        let mut child = Command::new(control_plane::binary())
            .args(["proxy", "--upstream", &cp.state.server, "--ca"])
            .arg(&cp.state.ca_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("control-plane proxy starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the proxy prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening http://")
            .unwrap_or_else(|| panic!("unexpected proxy output {line:?}"))
            .to_owned();
        Proxy {
            child,
            _stdin: stdin,
            addr,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One request to the proxy's own `/debug/*` endpoints; the response body.
    fn call(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = std::net::TcpStream::connect(&self.addr).expect("proxy reachable");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("request written");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "proxy {method} {path}: {head}"
        );
        body.to_owned()
    }

    /// Replaces the faults in force (and reseeds the RNG with `faults.seed`).
    pub fn set_faults(&self, faults: &Faults) {
        self.call(
            "PUT",
            "/debug/faults",
            &serde_json::to_string(faults).unwrap(),
        );
    }

    pub fn clear_faults(&self) {
        self.set_faults(&Faults::default());
    }

    /// What the proxy broke so far.
    pub fn injected(&self) -> Injected {
        let v: Value = serde_json::from_str(&self.call("GET", "/debug/injected", ""))
            .expect("JSON from /debug/injected");
        let mut out = Injected {
            dropped_watches: v["droppedWatches"].as_u64().unwrap_or(0),
            gone_watches: v["goneWatches"].as_u64().unwrap_or(0),
            ..Injected::default()
        };
        for row in v["errors"].as_array().into_iter().flatten() {
            out.errors.insert(
                (
                    row["verb"].as_str().unwrap_or_default().to_owned(),
                    row["resource"].as_str().unwrap_or_default().to_owned(),
                ),
                row["count"].as_u64().unwrap_or(0),
            );
        }
        out
    }
}

/// One request as the API server's audit log recorded it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub verb: String,
    /// `secrets`, `statefulsets.apps`, `secureqdrants.secureqdrant.dev/status`, ...
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub code: u16,
}

/// Reads one audit event; each request appears once (a watch logs ResponseStarted and, when it
/// ends, ResponseComplete: the caller dedupes by `auditID`).
pub fn request_of(event: &Value) -> Option<(String, Request)> {
    let id = event["auditID"].as_str()?.to_owned();
    let o = &event["objectRef"];
    let mut resource = o["resource"].as_str()?.to_owned();
    if let Some(group) = o["apiGroup"].as_str().filter(|g| !g.is_empty()) {
        resource = format!("{resource}.{group}");
    }
    if let Some(sub) = o["subresource"].as_str().filter(|s| !s.is_empty()) {
        resource = format!("{resource}/{sub}");
    }
    Some((
        id,
        Request {
            verb: event["verb"].as_str().unwrap_or_default().to_owned(),
            resource,
            namespace: o["namespace"].as_str().unwrap_or_default().to_owned(),
            name: o["name"].as_str().unwrap_or_default().to_owned(),
            user: event["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            code: event["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
        },
    ))
}

/// A place in the audit log: requests logged after it are "since" it.
#[derive(Clone, Debug)]
pub struct Mark(u64);

/// Request counts by (verb, resource), from the audit log: the same shape as the in-memory
/// server's counters. Injected errors come from the proxy (they never reach the API server).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub requests: BTreeMap<(String, String), u64>,
    pub injected_errors: BTreeMap<(String, String), u64>,
    pub dropped_watches: u64,
    /// Every request counted, for the RBAC call set and for messages.
    pub log: Vec<Request>,
}

impl Counters {
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn errors(&self, verb: &str, resource: &str) -> u64 {
        self.injected_errors
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.injected_errors.values().sum()
    }

    /// Requests with this verb, over all resources.
    pub fn verb(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes (create, update, patch, delete, deletecollection), over all resources.
    pub fn writes(&self) -> u64 {
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .map(|v| self.verb(v))
            .sum()
    }

    /// Requests answered 403 Forbidden.
    pub fn forbidden(&self) -> Vec<&Request> {
        self.log.iter().filter(|r| r.code == 403).collect()
    }

    /// The RBAC call set: (verb, resource without subresource... kept as logged, namespace).
    pub fn call_set(&self) -> BTreeSet<(String, String, String)> {
        self.log
            .iter()
            .map(|r| (r.verb.clone(), r.resource.clone(), r.namespace.clone()))
            .collect()
    }
}

/// Writes a marker request into the audit log (an admin GET of a ConfigMap that does not
/// exist, with a unique name) and waits until the log shows it; returns the log's length then.
/// Every request that completed before the marker was sent is in the log before that point.
pub async fn audit_sync(cp: &ControlPlane, admin: &Client) -> Mark {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "audit-mark-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let _ = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), "default")
        .get_opt(&name)
        .await;
    let path = cp.state.audit_log.clone();
    let needle = format!("\"name\":\"{name}\"");
    eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found = text
            .find(&needle)
            .map(|at| at as u64 + text[at..].find('\n').map(|n| n as u64 + 1).unwrap_or(0));
        let missing = format!("{needle} not in the audit log yet");
        async move { found.ok_or(missing) }
    })
    .await
    .map(Mark)
    .unwrap_or_else(|e| panic!("audit log: {e}"))
}

/// The requests of `user` logged between `from` and `to` (each once).
pub fn requests_between(cp: &ControlPlane, from: &Mark, to: &Mark, user: &str) -> Vec<Request> {
    all_requests_between(cp, from, to)
        .into_iter()
        .filter(|r| r.user == user)
        .collect()
}

/// Every user's requests logged between `from` and `to` (each once).
pub fn all_requests_between(cp: &ControlPlane, from: &Mark, to: &Mark) -> Vec<Request> {
    let bytes = std::fs::read(&cp.state.audit_log).expect("audit log");
    let end = (to.0 as usize).min(bytes.len());
    let start = (from.0 as usize).min(end);
    let text = String::from_utf8_lossy(&bytes[start..end]);
    let mut seen = BTreeSet::new();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| request_of(&e))
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(_, r)| r)
        .collect()
}

/// Counts `requests` like the in-memory server did.
pub fn count(requests: Vec<Request>) -> Counters {
    let mut counters = Counters::default();
    for r in &requests {
        *counters
            .requests
            .entry((r.verb.clone(), r.resource.clone()))
            .or_insert(0) += 1;
    }
    counters.log = requests;
    counters
}

/// A ServiceAccount with the chart's RBAC bound to it: who the operator (in-process or as its
/// binary) is in a test.
#[derive(Clone, Debug)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
    pub token: String,
}

impl Identity {
    /// Applies the chart's RBAC for `scope` as a new release in a new namespace (as
    /// `ControlPlane::start_operator` does) and takes a token of its ServiceAccount.
    pub async fn new(cp: &ControlPlane, admin: &Client, scope: &Scope) -> Identity {
        let namespace = cp.namespace(admin, "sqo").await;
        let values = match scope {
            Scope::ClusterWide => json!({}),
            Scope::Namespaces(list) => json!({ "watchNamespaces": list }),
        };
        let docs = render_chart(&values, &format!("sqo-{namespace}"), &namespace);
        let service_account = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("the chart has a ServiceAccount")
            .to_owned();
        apply_chart_rbac(admin, &docs).await;
        let token = service_account_token(admin, &namespace, &service_account).await;
        Identity {
            namespace,
            service_account,
            token,
        }
    }

    /// The user name the API server sees.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// A kubeconfig for this identity against `server` (the API server or a proxy's URL).
    pub fn kubeconfig(&self, cp: &ControlPlane, server: &str) -> String {
        let mut state = cp.state.clone();
        state.server = server.to_owned();
        token_kubeconfig(&state, &self.token, &self.namespace)
    }

    /// A client as this identity against `server`.
    pub async fn client(&self, cp: &ControlPlane, server: &str) -> Client {
        let kc = Kubeconfig::from_yaml(&self.kubeconfig(cp, server)).expect("kubeconfig parses");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
        Client::try_from(config).expect("client builds")
    }
}

/// The CRDs, installed once per test binary.
pub async fn crds_installed(cp: &ControlPlane, admin: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| cp.install_crds(admin)).await;
}

/// One test's world on the binary's control plane: a fresh namespace ("restricted" Pod
/// Security), the CRDs, an admin client, the operator's identity (the chart's RBAC, cluster-wide
/// unless built with `Env::with_scope`), a fault proxy, and a client as the operator through
/// that proxy. Request counts are the identity's own (one identity per test), so tests running
/// in parallel do not see each other's requests.
pub struct Env {
    pub cp: &'static ControlPlane,
    pub admin: Client,
    pub ns: String,
    pub identity: Identity,
    pub proxy: Proxy,
    /// As the operator (the identity), through the proxy.
    pub client: Client,
    counted_from: Mutex<Option<Mark>>,
}

impl Env {
    /// Namespace `prefix-N-PID`; the identity has the chart's cluster-wide RBAC.
    pub async fn new(prefix: &str) -> Env {
        Env::with_scope(prefix, None).await
    }

    /// As `new`, with the chart's RBAC for `watchNamespaces = [the test's namespace]` when
    /// `namespaced`.
    pub async fn namespaced(prefix: &str) -> Env {
        Env::with_scope(prefix, Some(())).await
    }

    async fn with_scope(prefix: &str, namespaced: Option<()>) -> Env {
        let cp = control_plane::get();
        let admin = cp.admin().await;
        crds_installed(cp, &admin).await;
        let ns = cp.namespace(&admin, prefix).await;
        let scope = match namespaced {
            Some(()) => Scope::Namespaces(vec![ns.clone()]),
            None => Scope::ClusterWide,
        };
        let identity = Identity::new(cp, &admin, &scope).await;
        let proxy = Proxy::start(cp);
        let client = identity.client(cp, &proxy.url()).await;
        Env {
            cp,
            admin,
            ns,
            identity,
            proxy,
            client,
            counted_from: Mutex::new(None),
        }
    }

    /// A kubeconfig as the operator through the proxy (for the operator binary).
    pub fn kubeconfig(&self) -> String {
        self.identity.kubeconfig(self.cp, &self.proxy.url())
    }

    pub fn set_faults(&self, faults: &Faults) {
        self.proxy.set_faults(faults)
    }

    pub fn clear_faults(&self) {
        self.proxy.clear_faults()
    }

    /// Marks the audit log now (see `audit_sync`).
    pub async fn mark(&self) -> Mark {
        audit_sync(self.cp, &self.admin).await
    }

    /// The identity's requests since `mark`, counted; injected errors from the proxy (since it
    /// started).
    pub async fn counters_since(&self, mark: &Mark) -> Counters {
        self.counters_of(mark, &[self.identity.username()]).await
    }

    /// The requests of `users` (e.g. the operator processes a test ran, `Operator::username`)
    /// since `mark`, each user's in turn, counted; injected errors from the proxy (since it
    /// started).
    pub async fn counters_of(&self, mark: &Mark, users: &[String]) -> Counters {
        let now = self.mark().await;
        let requests = users
            .iter()
            .flat_map(|user| requests_between(self.cp, mark, &now, user))
            .collect();
        let mut counters = count(requests);
        let injected = self.proxy.injected();
        counters.injected_errors = injected.errors;
        counters.dropped_watches = injected.dropped_watches;
        counters
    }

    /// Counting starts now (the fake's `reset_counters`).
    pub async fn reset_counters(&self) {
        let mark = self.mark().await;
        *self.counted_from.lock().unwrap() = Some(mark);
    }

    /// The identity's requests since `reset_counters` (or since the env was made).
    pub async fn counters(&self) -> Counters {
        let from = self.counted_from.lock().unwrap().clone();
        self.counters_since(&from.unwrap_or(Mark(0))).await
    }

    /// Runs the operator binary as this env's identity... a new identity, in fact: the chart
    /// installed for `scope` as its own release, talking through this env's proxy.
    pub async fn start_operator(&self, scope: Scope) -> Operator {
        self.cp
            .start_operator_at(&self.admin, scope, &self.proxy.url())
            .await
    }

    /// The operator binary watching only this env's namespace (safe beside other tests).
    pub async fn start_namespaced_operator(&self) -> Operator {
        self.start_operator(Scope::Namespaces(vec![self.ns.clone()]))
            .await
    }

    /// Creates SecureQdrant `name` with `spec` in the test's namespace, as the admin.
    pub async fn create_instance(&self, name: &str, spec: Value) {
        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        Api::<SecureQdrant>::namespaced(self.admin.clone(), &self.ns)
            .create(&PostParams::default(), &sq)
            .await
            .expect("SecureQdrant created");
    }

    /// The served resource of `kind` in `api_version`.
    pub async fn resource(&self, api_version: &str, kind: &str) -> ApiResource {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, _) = kube::discovery::pinned_kind(&self.admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{api_version} {kind} is not served: {e}"));
        ar
    }

    async fn dynamic(&self, api_version: &str, kind: &str, ns: &str) -> Api<DynamicObject> {
        let ar = self.resource(api_version, kind).await;
        if ns.is_empty() {
            Api::all_with(self.admin.clone(), &ar)
        } else {
            Api::namespaced_with(self.admin.clone(), ns, &ar)
        }
    }

    /// Creates `obj` as admin (its namespace defaults to the env's); a `status` in it is
    /// written through the status subresource afterwards. Returns the object as stored.
    pub async fn insert(&self, obj: impl Serialize) -> Result<Value, kube::Error> {
        let mut obj = serde_json::to_value(obj).expect("serializes");
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_owned();
        let kind = obj["kind"].as_str().expect("kind").to_owned();
        let ar = self.resource(&api_version, &kind).await;
        let namespaced = !matches!(
            kind.as_str(),
            "Namespace"
                | "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "PriorityClass"
                | "Node"
                | "PersistentVolume"
                | "StorageClass"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        );
        let ns = if namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&self.ns)
                .to_owned();
            obj["metadata"]["namespace"] = json!(ns);
            Some(ns)
        } else {
            None
        };
        let status = obj.as_object_mut().and_then(|o| o.remove("status"));
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(self.admin.clone(), ns, &ar),
            None => Api::all_with(self.admin.clone(), &ar),
        };
        let dynamic: DynamicObject = serde_json::from_value(obj).expect("an object");
        let mut created = api.create(&PostParams::default(), &dynamic).await?;
        if let Some(status) = status.filter(|s| !s.is_null()) {
            let name = created.metadata.name.clone().expect("named");
            created = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await?;
        }
        Ok(serde_json::to_value(created).unwrap())
    }

    /// The object, as admin; `None` when it does not exist.
    pub async fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.dynamic(api_version, kind, ns)
            .await
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get {kind} {ns}/{name}: {e}"))
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Every object of `kind` in `ns` ("" for all namespaces), as admin.
    pub async fn list(&self, api_version: &str, kind: &str, ns: &str) -> Vec<Value> {
        self.dynamic(api_version, kind, ns)
            .await
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {kind} in {ns:?}: {e}"))
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    /// Deletes the object as admin (background propagation: the real garbage collector removes
    /// its dependents afterwards); Ok when it was deleted or was not there.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        match self
            .dynamic(api_version, kind, ns)
            .await
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A JSON merge patch as admin; the object after it.
    pub async fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, kube::Error> {
        self.dynamic(api_version, kind, ns)
            .await
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// A JSON merge patch of the status subresource as admin.
    pub async fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, kube::Error> {
        self.dynamic(api_version, kind, ns)
            .await
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map(|o| serde_json::to_value(o).unwrap())
    }
}
