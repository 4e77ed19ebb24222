//! HTTP: routing of Kubernetes API paths, verbs, query parameters and content types onto the
//! store; fault injection and request counting on the way in.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Shared;
use crate::discovery;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, PatchKind, WriteCtx};
use crate::watch::{self, Start, WatchSpec, present};

pub type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).expect("JSON values serialize")));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Parsed query string (last value wins).
struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// A resource path, split.
struct Route {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_route(segs: &[&str]) -> Option<Route> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let route = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Some(Route {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
        })
    };
    match rest {
        // The namespace objects themselves.
        ["namespaces", name] if group.is_empty() => route("namespaces", None, Some(name), None),
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            route("namespaces", None, Some(name), Some(sub))
        }
        ["namespaces", ns, plural] => route(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] => route(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => route(plural, Some(ns), Some(name), Some(sub)),
        [plural] => route(plural, None, None, None),
        [plural, name] => route(plural, None, Some(name), None),
        [plural, name, sub] => route(plural, None, Some(name), Some(sub)),
        _ => None,
    }
}

fn user_agent_manager(ua: Option<&HeaderValue>) -> String {
    let ua = ua.and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    let name = ua.split('/').next().unwrap_or("unknown").trim();
    if name.is_empty() {
        "unknown".into()
    } else {
        name.chars().take(128).collect()
    }
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let path = parts.uri.path().trim_end_matches('/').to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = Query::parse(parts.uri.query());
    let method = parts.method.clone();

    // Non-resource endpoints.
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => return json_response(200, &discovery::version()),
        (Method::GET, ["healthz" | "readyz" | "livez"]) => {
            let mut r = Response::new(full("ok"));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return r;
        }
        (Method::GET, ["api"]) => {
            return json_response(200, &discovery::core_versions(&shared.addr.to_string()));
        }
        (Method::GET, ["apis"]) => {
            let reg = shared.lock_store().registry.clone();
            return json_response(200, &discovery::group_list(&reg));
        }
        (Method::GET, ["api", v]) => {
            let reg = shared.lock_store().registry.clone();
            return match discovery::resource_list(&reg, "", v) {
                Some(l) => json_response(200, &l),
                None => error_response(&ApiError::no_route()),
            };
        }
        (Method::GET, ["apis", g]) => {
            let reg = shared.lock_store().registry.clone();
            return match discovery::api_group(&reg, g) {
                Some(l) => json_response(200, &l),
                None => error_response(&ApiError::no_route()),
            };
        }
        (Method::GET, ["apis", g, v]) => {
            let reg = shared.lock_store().registry.clone();
            return match discovery::resource_list(&reg, g, v) {
                Some(l) => json_response(200, &l),
                None => error_response(&ApiError::no_route()),
            };
        }
        (Method::GET, ["openapi", "v3"]) => {
            let reg = shared.lock_store().registry.clone();
            return json_response(200, &discovery::openapi_index(&reg));
        }
        (Method::GET, ["openapi", "v3", "api", v] | ["openapi", "v3", "apis", _, v]) => {
            let g = if segs[2] == "api" { "" } else { segs[3] };
            let reg = shared.lock_store().registry.clone();
            return match discovery::openapi_group_version(&reg, g, v) {
                Some(d) => json_response(200, &d),
                None => error_response(&ApiError::no_route()),
            };
        }
        (Method::GET, ["debug", "requests"]) => {
            return json_response(200, &shared.counters().to_json());
        }
        (Method::DELETE, ["debug", "requests"]) => {
            shared.reset_counters();
            return json_response(200, &json!({"reset": true}));
        }
        (Method::GET, ["debug", "faults"]) => {
            return json_response(200, &serde_json::to_value(shared.faults()).expect("faults"));
        }
        (Method::PUT, ["debug", "faults"]) => {
            return match serde_json::from_slice::<Faults>(&body) {
                Ok(f) => {
                    shared.set_faults(f.clone());
                    json_response(200, &serde_json::to_value(f).expect("faults"))
                }
                Err(e) => error_response(&ApiError::bad_request(format!("invalid faults: {e}"))),
            };
        }
        (Method::POST, ["debug", "compact"]) => {
            shared.lock_store().compact();
            return json_response(200, &json!({"compacted": true}));
        }
        _ => {}
    }

    let Some(route) = parse_route(&segs) else {
        return error_response(&ApiError::no_route());
    };
    let rt = {
        let store = shared.lock_store();
        store
            .registry
            .by_path(&route.group, &route.version, &route.plural)
            .cloned()
    };
    let Some(rt) = rt else {
        return error_response(&ApiError::no_route());
    };
    if route.namespace.is_some() && !rt.namespaced {
        return error_response(&ApiError::no_route());
    }
    if route.name.is_some() && route.namespace.is_none() && rt.namespaced {
        return error_response(&ApiError::no_route());
    }
    let status = match route.subresource.as_deref() {
        None => false,
        Some("status") if rt.status => true,
        Some(_) => return error_response(&ApiError::no_route()),
    };

    let verb = match (&method, route.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if query.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return error_response(&ApiError::method_not_allowed()),
    };
    let mut counted = rt.group_resource().display();
    if status {
        counted.push_str("/status");
    }
    shared.count(verb, &counted);
    let (latency, injected) = shared.decide_faults(verb, &counted);
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    if let Some((code, retry_after)) = injected {
        let mut r = error_response(&ApiError::injected(code));
        if let Some(s) = retry_after {
            r.headers_mut().insert(
                "Retry-After",
                HeaderValue::from_str(&s.to_string()).expect("digits"),
            );
        }
        return r;
    }

    let accept = parts
        .headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let req = Req {
        rt,
        version: route.version,
        namespace: route.namespace.unwrap_or_default(),
        name: route.name.unwrap_or_default(),
        status,
        query,
        partial: accept.contains("as=PartialObjectMetadata"),
        table: accept.contains("as=Table"),
        content_type,
        manager_from_agent: user_agent_manager(parts.headers.get(USER_AGENT)),
        body,
    };
    let result = match verb {
        "get" => get(&shared, &req),
        "list" => list(&shared, &req),
        "watch" => return watch(shared.clone(), &req),
        "create" => create(&shared, &req),
        "update" => update(&shared, &req),
        "patch" => patch(&shared, &req),
        "delete" => delete(&shared, &req),
        _ => delete_collection(&shared, &req),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

struct Req {
    rt: ResourceType,
    version: String,
    namespace: String,
    name: String,
    status: bool,
    query: Query,
    partial: bool,
    table: bool,
    content_type: String,
    manager_from_agent: String,
    body: Bytes,
}

impl Req {
    fn api_version(&self) -> String {
        self.rt.api_version(&self.version)
    }

    fn present(&self, obj: &Value) -> Value {
        present(obj, &self.api_version(), self.partial)
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
        Ok((labels, fields))
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }

    fn ctx(&self, default_manager: bool) -> WriteCtx {
        let manager = match self.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ if default_manager => self.manager_from_agent.clone(),
            _ => String::new(),
        };
        WriteCtx {
            manager,
            api_version: self.api_version(),
            dry_run: self.dry_run(),
            status: self.status,
            force: self.query.flag("force"),
        }
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        if self.content_type.contains("protobuf") || self.content_type.contains("cbor") {
            return Err(ApiError::unsupported_media_type(&self.content_type));
        }
        if self.content_type.contains("yaml") {
            serde_yaml_ng::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
        } else {
            serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
        }
    }
}

type Answer = Result<(u16, Value), ApiError>;

fn get(shared: &Shared, req: &Req) -> Answer {
    let store = shared.lock_store();
    let gr = req.rt.group_resource();
    let obj = store
        .get(&gr, &req.namespace, &req.name)
        .ok_or_else(|| ApiError::not_found(&gr, &req.name))?;
    if req.table {
        let rv = store.rv.to_string();
        let include = req.query.get("includeObject").unwrap_or("Metadata");
        return Ok((
            200,
            discovery::table(&req.rt, &req.version, &[req.present(obj)], &rv, include),
        ));
    }
    Ok((200, req.present(obj)))
}

/// Continue tokens: hex of "namespace/name" of the last item sent.
fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_owned(), name.to_owned()))
}

fn list(shared: &Shared, req: &Req) -> Answer {
    let (labels, fields) = req.selectors()?;
    let store = shared.lock_store();
    let current = store.rv;
    if let Some(rv) = req.query.get("resourceVersion").filter(|s| !s.is_empty()) {
        let n: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        if req.query.get("resourceVersionMatch") == Some("Exact") && n != current {
            return Err(ApiError::gone(format!(
                "too old resource version: {n} ({current})"
            )));
        }
    }
    let after = match req.query.get("continue").filter(|s| !s.is_empty()) {
        Some(t) => Some(decode_continue(t)?),
        None => None,
    };
    let gr = req.rt.group_resource();
    let mut items: Vec<&Value> = store
        .list(&gr, &req.namespace)
        .filter(|o| labels.matches(o) && fields.matches(o))
        .filter(|o| match &after {
            None => true,
            Some((ans, aname)) => {
                let ns = o.pointer("/metadata/namespace").and_then(Value::as_str);
                let name = o.pointer("/metadata/name").and_then(Value::as_str);
                (ns.unwrap_or_default(), name.unwrap_or_default()) > (ans.as_str(), aname.as_str())
            }
        })
        .collect();
    let mut meta = json!({"resourceVersion": current.to_string()});
    if let Some(limit) = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items.last().expect("limit > 0");
        let ns = last.pointer("/metadata/namespace").and_then(Value::as_str);
        let name = last.pointer("/metadata/name").and_then(Value::as_str);
        meta["continue"] = json!(encode_continue(
            ns.unwrap_or_default(),
            name.unwrap_or_default()
        ));
        meta["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = items.into_iter().map(|o| req.present(o)).collect();
    if req.table {
        let include = req.query.get("includeObject").unwrap_or("Metadata");
        let mut t = discovery::table(&req.rt, &req.version, &items, &current.to_string(), include);
        t["metadata"] = meta;
        return Ok((200, t));
    }
    let (api_version, kind) = if req.partial {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (req.api_version(), format!("{}List", req.rt.kind))
    };
    Ok((
        200,
        json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}),
    ))
}

fn watch(shared: Arc<Shared>, req: &Req) -> Response<Body> {
    let (labels, fields) = match req.selectors() {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let spec = WatchSpec {
        gr: req.rt.group_resource(),
        kind: req.rt.kind.clone(),
        api_version: req.api_version(),
        namespace: req.namespace.clone(),
        labels,
        fields,
        bookmarks: req.query.flag("allowWatchBookmarks"),
        timeout: Duration::from_secs(
            req.query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .filter(|t| *t > 0)
                .unwrap_or(1800),
        ),
        partial_metadata: req.partial,
        bookmark_interval: shared.bookmark_interval,
    };
    let send_initial = req.query.flag("sendInitialEvents");
    let rv = req
        .query
        .get("resourceVersion")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let (start, current, rx) = {
        let store = shared.lock_store();
        let rx = store.tx.subscribe();
        let current = store.rv;
        let snapshot = || -> Vec<Value> {
            store
                .list(&spec.gr, &spec.namespace)
                .filter(|o| spec.labels.matches(o) && spec.fields.matches(o))
                .cloned()
                .collect()
        };
        let start = if send_initial {
            if !shared.streaming_lists {
                return error_response(&ApiError::invalid(
                    &spec.gr,
                    "",
                    "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                ));
            }
            if !spec.bookmarks {
                return error_response(&ApiError::invalid(
                    &spec.gr,
                    "",
                    "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
                ));
            }
            Start::Snapshot {
                objects: snapshot(),
                end_bookmark: true,
            }
        } else {
            match rv.as_deref() {
                None | Some("0") => Start::Snapshot {
                    objects: snapshot(),
                    end_bookmark: false,
                },
                Some(s) => {
                    let Ok(n) = s.parse::<u64>() else {
                        return error_response(&ApiError::bad_request(format!(
                            "invalid resourceVersion {s:?}"
                        )));
                    };
                    match store.changes_since(n) {
                        Some(changes) => Start::Replay(changes),
                        None => Start::Gone(format!(
                            "too old resource version: {n} ({})",
                            store.compacted + 1
                        )),
                    }
                }
            }
        };
        (start, current, rx)
    };
    let (tx, out) = mpsc::channel::<Bytes>(64);
    tokio::spawn(watch::run(shared, spec, start, current, rx, tx));
    let stream = tokio_stream::wrappers::ReceiverStream::new(out)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn create(shared: &Shared, req: &Req) -> Answer {
    if req.status {
        return Err(ApiError::method_not_allowed());
    }
    let obj = req.body_json()?;
    let ctx = req.ctx(true);
    let out = shared
        .lock_store()
        .create(&req.rt, &req.namespace, obj, &ctx, false)?;
    Ok((201, req.present(&out)))
}

fn update(shared: &Shared, req: &Req) -> Answer {
    let obj = req.body_json()?;
    let ctx = req.ctx(true);
    let out = shared
        .lock_store()
        .update(&req.rt, &req.namespace, &req.name, obj, &ctx)?;
    Ok((200, req.present(&out)))
}

fn patch(shared: &Shared, req: &Req) -> Answer {
    if req.content_type.contains("protobuf") || req.content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(&req.content_type));
    }
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let kind = match ct {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::StrategicMerge,
        "application/json-patch+json" => PatchKind::Json,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let ctx = req.ctx(kind != PatchKind::Apply);
    let (out, created) =
        shared
            .lock_store()
            .patch(&req.rt, &req.namespace, &req.name, kind, &req.body, &ctx)?;
    Ok((if created { 201 } else { 200 }, req.present(&out)))
}

fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts {
        propagation: req.query.get("propagationPolicy").map(str::to_owned),
        dry_run: req.dry_run(),
        ..DeleteOpts::default()
    };
    if !req.body.is_empty() {
        let b: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_owned());
        }
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some("Orphan".into());
        }
        let s = |p: &str| b.pointer(p).and_then(Value::as_str).map(str::to_owned);
        opts.precondition_uid = s("/preconditions/uid");
        opts.precondition_rv = s("/preconditions/resourceVersion");
        if b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "All"))
        {
            opts.dry_run = true;
        }
    }
    Ok(opts)
}

fn delete(shared: &Shared, req: &Req) -> Answer {
    if req.status {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_opts(req)?;
    let out = shared
        .lock_store()
        .delete(&req.rt, &req.namespace, &req.name, &opts)?;
    Ok((200, req.present(&out)))
}

fn delete_collection(shared: &Shared, req: &Req) -> Answer {
    let (labels, fields) = req.selectors()?;
    let opts = delete_opts(req)?;
    let mut store = shared.lock_store();
    let gone = store.delete_collection(&req.rt, &req.namespace, &labels, &fields, &opts)?;
    let items: Vec<Value> = gone.iter().map(|o| req.present(o)).collect();
    Ok((
        200,
        json!({"kind": format!("{}List", req.rt.kind), "apiVersion": req.api_version(),
               "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = parse_route(&[
            "apis",
            "apps",
            "v1",
            "namespaces",
            "ns",
            "statefulsets",
            "x",
            "status",
        ])
        .unwrap();
        assert_eq!(
            (
                r.group.as_str(),
                r.plural.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (
                "apps",
                "statefulsets",
                Some("ns"),
                Some("x"),
                Some("status")
            )
        );
        let r = parse_route(&["api", "v1", "namespaces", "ns"]).unwrap();
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("ns"), None)
        );
        let r = parse_route(&["api", "v1", "namespaces", "ns", "secrets"]).unwrap();
        assert_eq!(
            (r.plural.as_str(), r.namespace.as_deref()),
            ("secrets", Some("ns"))
        );
        let r = parse_route(&["api", "v1", "secrets"]).unwrap();
        assert_eq!((r.plural.as_str(), r.namespace), ("secrets", None));
        assert_eq!(
            decode_continue(&encode_continue("a", "b")).unwrap(),
            ("a".into(), "b".into())
        );
    }
}
