//! A scripted Kubernetes API server for one reconcile scenario (the kube-rs controller-rs
//! "ApiServerVerifier" pattern).
//!
//! [`mock_client`] gives a real `kube::Client` whose transport is a `tower_test` mock. A test hands
//! [`MockApi::run`] a script: an async block that takes the requests one by one in the order it
//! expects them, asserts method, path, query and body of each, and answers the way the API server
//! would (an applied object is echoed back with a resourceVersion, a missing object is a 404
//! `Status`, a create is a 201). When the reconcile is over, `play` checks that the
//! script got every request it waited for and that no request arrived after it: any extra request
//! is answered with a 500 and fails the test, so "nothing else was written" is checked, not assumed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

/// Field manager the operator must write with.
pub const FIELD_MANAGER: &str = "secure-qdrant-operator";
/// resourceVersion of every object the fake server writes.
pub const RESOURCE_VERSION: &str = "4242";
/// Content type of a server-side apply.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
/// Content type of a JSON merge patch.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A `kube::Client` over a mock transport, and the handle that plays the API server.
pub fn mock_client(default_namespace: &str) -> (kube::Client, MockApi) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (
        kube::Client::new(service, default_namespace),
        MockApi {
            handle: Some(handle),
        },
    )
}

/// The server side of a mock client.
pub struct MockApi {
    handle: Option<ApiHandle>,
}

impl MockApi {
    /// Runs `under_test` while `script` plays the API server in a task of its own, then checks
    /// the script got every request it waited for and nothing more. A failed assertion of the
    /// script fails the test with its own message.
    pub async fn play<F, Fut, T>(
        &mut self,
        script: F,
        under_test: impl Future<Output = T>,
    ) -> (T, Transcript)
    where
        F: FnOnce(ApiServer) -> Fut,
        Fut: Future<Output = ApiServer> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let server = ApiServer {
            handle: self
                .handle
                .take()
                .expect("the previous scenario on this client did not finish"),
            finished: done_rx,
            log: Vec::new(),
            readable: None,
            reads: Vec::new(),
        };
        let script = script(server);
        let task = tokio::spawn(async move { script.await.drain().await });
        let output = under_test.await;
        let _ = done_tx.send(());
        let (transcript, handle) = finish(task).await;
        self.handle = Some(handle);
        (output, transcript)
    }
}

async fn finish(task: JoinHandle<(Transcript, ApiHandle)>) -> (Transcript, ApiHandle) {
    let joined = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the API server script did not finish within 10 s");
    let (transcript, handle) = match joined {
        Ok(t) => t,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the API server script was cancelled: {e}"),
    };
    assert!(
        transcript.unexpected.is_empty(),
        "requests the scenario did not expect (answered with 500):\n  {}\nafter the expected \
         ones:\n{}",
        transcript.unexpected.join("\n  "),
        transcript.summary()
    );
    (transcript, handle)
}

/// One request, as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The JSON body; `Value::Null` when there was none.
    pub body: Value,
}

impl Logged {
    /// `METHOD /path?query`, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.method, self.path);
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(s, "?{}", q.join("&"));
        }
        s
    }

    /// True for anything but a read.
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// Every request the script handled, in order, and those that came after it.
#[derive(Debug)]
pub struct Transcript {
    pub log: Vec<Logged>,
    pub unexpected: Vec<String>,
    /// GETs of Secrets answered from [`ApiServer::serve_secret_reads`], as `GET /path`, in
    /// order (not in `log`).
    pub reads: Vec<String>,
}

impl Transcript {
    /// The writes (everything but GET), as `METHOD /path`.
    pub fn writes(&self) -> Vec<String> {
        self.log
            .iter()
            .filter(|l| l.is_write())
            .map(|l| format!("{} {}", l.method, l.path))
            .collect()
    }

    /// The body of the only request with this method and path.
    pub fn body(&self, method: Method, path: &str) -> &Value {
        let found: Vec<&Logged> = self
            .log
            .iter()
            .filter(|l| l.method == method && l.path == path)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {method} {path}; the server saw:\n{}",
            self.summary()
        );
        &found[0].body
    }

    /// Every request, one a line (then the Secret reads answered for the script).
    pub fn summary(&self) -> String {
        self.log
            .iter()
            .map(|l| format!("  {}", l.describe()))
            .chain(self.reads.iter().map(|r| format!("  (read) {r}")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A request waiting for its answer.
pub struct Call {
    pub request: Logged,
    respond: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `code` and a JSON body.
    pub fn respond(self, code: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("JSON serializes");
        let response = Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .expect("a valid response");
        self.respond.send_response(response);
    }
}

/// The fake API server a script drives.
pub struct ApiServer {
    handle: ApiHandle,
    finished: oneshot::Receiver<()>,
    log: Vec<Logged>,
    /// Secrets by path, answering GETs the script does not expect (None: no such answers).
    readable: Option<BTreeMap<String, Value>>,
    reads: Vec<String>,
}

impl ApiServer {
    /// Answers the GETs of Secrets the script does not expect from `secrets` (path → object as
    /// stored; a path not there is answered 404), as the API server would: the operator reads
    /// Secret material on demand, and a script lists the writes and reads it is about. Such
    /// answers go to [`Transcript::reads`].
    pub fn serve_secret_reads(&mut self, secrets: BTreeMap<String, Value>) {
        self.readable = Some(secrets);
    }

    /// Answers `call` from the readable Secrets when it is a GET of a Secret. Returns it back
    /// otherwise.
    fn try_read(&mut self, call: Call) -> Option<Call> {
        let Some(readable) = &self.readable else {
            return Some(call);
        };
        if call.request.method != Method::GET || !call.request.path.contains("/secrets/") {
            return Some(call);
        }
        let path = call.request.path.clone();
        self.reads.push(format!("GET {path}"));
        match readable.get(&path) {
            Some(object) => {
                let object = object.clone();
                call.respond(StatusCode::OK, &object)
            }
            None => call.respond(StatusCode::NOT_FOUND, &not_found(&path)),
        }
        None
    }

    /// The next request that is not a Secret read answered by [`ApiServer::serve_secret_reads`]
    /// (unless it is `method path` itself).
    async fn next_unread(&mut self, method: &Method, path: &str) -> Call {
        loop {
            let call = self.next(&format!("{method} {path}")).await;
            if call.request.method == *method && call.request.path == path {
                return call;
            }
            match self.try_read(call) {
                Some(call) => return call,
                None => {
                    self.log.pop();
                }
            }
        }
    }

    /// The next request. Panics when the code under test returned without sending it.
    pub async fn next(&mut self, expected: &str) -> Call {
        let request = tokio::select! {
            biased;
            r = self.handle.next_request() => r,
            _ = &mut self.finished => None,
        };
        let Some((request, respond)) = request else {
            panic!(
                "expected {expected}, but the reconcile finished (or the client was dropped) \
                 after:\n{}",
                self.summary()
            );
        };
        let logged = read(request).await;
        self.log.push(logged.clone());
        Call {
            request: logged,
            respond,
        }
    }

    /// The next request, asserted to be `method path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next_unread(&method, path).await;
        assert!(
            call.request.method == method && call.request.path == path,
            "expected {method} {path}, got {}; requests so far:\n{}",
            call.request.describe(),
            self.summary()
        );
        call
    }

    /// A GET of an object that does not exist: answered 404 NotFound.
    pub async fn expect_get_missing(&mut self, path: &str) {
        let call = self.expect(Method::GET, path).await;
        call.respond(StatusCode::NOT_FOUND, &not_found(path));
    }

    /// A GET of an object that exists: answered with it.
    pub async fn expect_get(&mut self, path: &str, object: &Value) {
        let call = self.expect(Method::GET, path).await;
        call.respond(StatusCode::OK, object);
    }

    /// A server-side apply of `path` under the operator's field manager, forced. Answered with the
    /// object as stored (resourceVersion, uid, creationTimestamp added). Returns what was sent.
    ///
    /// A child the cache does not hold is read first (a foreign object is not in the
    /// label-selected cache): that GET is answered 404, and the apply that creates the object
    /// must not force (a concurrent creation by someone else is a conflict, not a takeover). An
    /// update must carry the resourceVersion of the copy whose owner was checked (a repair of
    /// drift, of a copy just read: its uid).
    pub async fn expect_apply(&mut self, path: &str) -> Value {
        let mut call = self.next_unread(&Method::PATCH, path).await;
        let creation = if call.request.method == Method::GET && call.request.path == path {
            call.respond(StatusCode::NOT_FOUND, &not_found(path));
            call = self.expect(Method::PATCH, path).await;
            true
        } else {
            // A Secret is written over the copy the reconcile read (no GET right before the
            // write): absent from what the server answers, it is created.
            self.readable
                .as_ref()
                .is_some_and(|r| path.contains("/secrets/") && !r.contains_key(path))
        };
        assert!(
            call.request.method == Method::PATCH && call.request.path == path,
            "expected PATCH {path}, got {}; requests so far:\n{}",
            call.request.describe(),
            self.summary()
        );
        let r = &call.request;
        let guarded = r.body["metadata"]["resourceVersion"].is_string()
            || r.body["metadata"]["uid"].is_string();
        assert_eq!(
            guarded,
            !creation,
            "{}: an update carries the checked resourceVersion (a repair of what was just read: \
             its uid), a creation neither",
            r.describe()
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some(APPLY_PATCH),
            "{} must be a server-side apply",
            r.describe()
        );
        assert_eq!(
            r.query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER),
            "{} must name the operator's field manager",
            r.describe()
        );
        assert_eq!(
            r.query.get("force").map(String::as_str),
            (!creation).then_some("true"),
            "{} must force conflicts on an update (the operator owns these fields), and never \
             on a creation",
            r.describe()
        );
        let (_, _, name) = parse_path(path);
        assert_eq!(
            r.body["metadata"]["name"].as_str(),
            Some(name.as_str()),
            "{}: body names another object",
            r.describe()
        );
        assert!(
            r.body["apiVersion"].is_string() && r.body["kind"].is_string(),
            "{}: an apply body needs apiVersion and kind",
            r.describe()
        );
        let sent = r.body.clone();
        call.respond(StatusCode::OK, &as_stored(&sent));
        sent
    }

    /// A create (POST to the collection `path`) under the operator's field manager: answered 201
    /// with the object as stored. Returns what was sent.
    pub async fn expect_create(&mut self, collection: &str) -> Value {
        let call = self.expect_post(collection).await;
        let sent = call.request.body.clone();
        call.respond(StatusCode::CREATED, &as_stored(&sent));
        sent
    }

    /// A create that loses a race: answered 409 AlreadyExists. Returns what was sent.
    pub async fn expect_create_conflict(&mut self, collection: &str) -> Value {
        let call = self.expect_post(collection).await;
        let sent = call.request.body.clone();
        let name = sent["metadata"]["name"].as_str().unwrap_or_default();
        call.respond(
            StatusCode::CONFLICT,
            &status_failure(&format!("{collection}/{name}"), 409, "AlreadyExists"),
        );
        sent
    }

    /// A replace (PUT of the whole object at `path`) under the operator's field manager, guarded
    /// by `resource_version` (the version the operator read: a compare-and-swap). Answered 200
    /// with the object as stored. Returns what was sent. Used by reconcile_tls.rs.
    #[allow(dead_code)]
    pub async fn expect_replace(&mut self, path: &str, resource_version: &str) -> Value {
        let call = self.expect(Method::PUT, path).await;
        let r = &call.request;
        assert_eq!(
            r.query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER),
            "{} must name the operator's field manager",
            r.describe()
        );
        let (_, _, name) = parse_path(path);
        assert_eq!(
            r.body["metadata"]["name"].as_str(),
            Some(name.as_str()),
            "{}: body names another object",
            r.describe()
        );
        assert_eq!(
            r.body["metadata"]["resourceVersion"].as_str(),
            Some(resource_version),
            "{}: a replace must carry the resourceVersion that was read",
            r.describe()
        );
        let sent = r.body.clone();
        call.respond(StatusCode::OK, &as_stored(&sent));
        sent
    }

    /// A POST to `collection` under the operator's field manager, not yet answered.
    pub async fn expect_post(&mut self, collection: &str) -> Call {
        let call = self.expect(Method::POST, collection).await;
        assert_eq!(
            call.request.query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER),
            "{} must name the operator's field manager",
            call.request.describe()
        );
        call
    }

    /// A server-side apply of the status subresource at `path` (ending in `/status`), forced,
    /// under the operator's field manager: answered with `object` carrying the new status.
    /// Returns the patch.
    pub async fn expect_status_patch(&mut self, path: &str, object: &Value) -> Value {
        assert!(path.ends_with("/status"), "{path} is not a status path");
        let call = self.expect(Method::PATCH, path).await;
        assert_eq!(
            call.request.content_type.as_deref(),
            Some(APPLY_PATCH),
            "{}: status is written with server-side apply",
            call.request.describe()
        );
        assert_eq!(
            call.request.query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER)
        );
        assert_eq!(
            call.request.query.get("force").map(String::as_str),
            Some("true")
        );
        let patch = call.request.body.clone();
        let keys: Vec<&str> = patch
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["apiVersion", "kind", "status"],
            "a status apply carries nothing but status: {patch}"
        );
        let mut stored = as_stored(object);
        stored["status"] = patch["status"].clone();
        call.respond(StatusCode::OK, &stored);
        patch
    }

    /// A background DELETE of `path`: answered with a success Status.
    pub async fn expect_delete(&mut self, path: &str) {
        let call = self.expect(Method::DELETE, path).await;
        assert_eq!(
            call.request.body["propagationPolicy"].as_str(),
            Some("Background"),
            "{}: children are deleted in the background",
            call.request.describe()
        );
        assert!(
            call.request.body["preconditions"]["uid"].is_string(),
            "{}: a child is deleted only as the object whose owner was checked (uid precondition)",
            call.request.describe()
        );
        let (group, plural, name) = parse_path(path);
        call.respond(
            StatusCode::OK,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": group, "kind": plural, "uid": "deleted-uid"},
            }),
        );
    }

    fn summary(&self) -> String {
        if self.log.is_empty() {
            return "  (no request)".to_owned();
        }
        self.log
            .iter()
            .map(|l| format!("  {}", l.describe()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// After the script: every further request is unexpected, recorded and answered with 500
    /// (so the code under test fails fast instead of hanging) until the scenario is finished.
    async fn drain(mut self) -> (Transcript, ApiHandle) {
        let mut unexpected = Vec::new();
        loop {
            let request = tokio::select! {
                biased;
                r = self.handle.next_request() => r,
                _ = &mut self.finished => None,
            };
            let Some((request, respond)) = request else {
                break;
            };
            let logged = read(request).await;
            let call = Call {
                request: logged,
                respond,
            };
            let Some(call) = self.try_read(call) else {
                continue;
            };
            unexpected.push(call.request.describe());
            call.respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                &status_failure("unexpected request", 500, "InternalError"),
            );
        }
        (
            Transcript {
                log: self.log,
                unexpected,
                reads: self.reads,
            },
            self.handle,
        )
    }
}

async fn read(request: Request<Body>) -> Logged {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("request bodies are JSON")
    };
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Logged {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ASCII content type").to_owned()),
        body,
    }
}

/// (group, plural, name) of an object path: `/api/v1/namespaces/ns/secrets/x` or
/// `/apis/apps/v1/namespaces/ns/statefulsets/x`.
pub fn parse_path(path: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", _, "namespaces", _, plural, name, ..] => {
            (String::new(), (*plural).to_owned(), (*name).to_owned())
        }
        ["apis", group, _, "namespaces", _, plural, name, ..] => (
            (*group).to_owned(),
            (*plural).to_owned(),
            (*name).to_owned(),
        ),
        _ => panic!("not a namespaced object path: {path}"),
    }
}

/// The 404 `Status` the API server sends for a missing object.
pub fn not_found(path: &str) -> Value {
    let (group, plural, name) = parse_path(path);
    let what = if group.is_empty() {
        plural.clone()
    } else {
        format!("{plural}.{group}")
    };
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{what} \"{name}\" not found"),
        "reason": "NotFound",
        "details": {"name": name, "group": group, "kind": plural},
        "code": 404,
    })
}

/// A failure `Status` with a code and reason.
pub fn status_failure(message: &str, code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

/// An object as the API server stores it: what was sent plus resourceVersion, uid,
/// creationTimestamp and generation (fields the server owns).
pub fn as_stored(sent: &Value) -> Value {
    let mut stored = sent.clone();
    let meta = stored["metadata"]
        .as_object_mut()
        .expect("an object with metadata");
    meta.insert("resourceVersion".into(), json!(RESOURCE_VERSION));
    let uid = format!(
        "uid-of-{}",
        meta.get("name").and_then(Value::as_str).unwrap_or("x")
    );
    meta.entry("uid").or_insert_with(|| json!(uid));
    meta.entry("creationTimestamp")
        .or_insert_with(|| json!("2026-01-01T00:00:00Z"));
    meta.entry("generation").or_insert_with(|| json!(1));
    stored
}
