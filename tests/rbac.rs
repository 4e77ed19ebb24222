//! The RBAC tables of `secure_qdrant_operator::rbac` against what the operator really calls.
//!
//! The real operator binary runs against the in-memory API server of `tests/fake-apiserver`,
//! started exactly as the Helm chart starts it with two replicas (the Deployment's args and env,
//! leader election on), and goes through a scenario that makes every kind of call it has: an
//! instance from deploy/examples/full.yaml converges (one of its Secrets was broken beforehand,
//! so it is replaced), a QdrantAccessToken is issued, stale children are pruned, an acknowledged
//! scale-down is applied (the acknowledgment annotation removed), the API-key
//! Secret is lost (new keys, the token re-signed, a repeated Event), the instance is deleted (the
//! token Secret goes), and the operator is stopped with SIGTERM (the Lease is released). Then the
//! server's request counter, by (verb, resource), must equal the tables: a call without a rule
//! fails (the operator would be forbidden on a real cluster), and so does a rule never used (a
//! permission granted for nothing).
//!
//! One authorization is not in a request log: a server-side apply that creates the object is
//! authorized by the API server as `create` too. So `create` is required for every kind the
//! operator created through apply (objects of that kind exist that only the operator wrote).

#[path = "support/in_process.rs"]
mod in_process;

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_apiserver::{Counters, FakeApiServer};
use serde_json::{Value, json};
use tokio::time::Instant;

use secure_qdrant_operator::children::meta::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER,
};
use secure_qdrant_operator::rbac::{self, LEADER_ELECTION, RBAC};

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
/// The release the chart is rendered as.
const RELEASE: &str = "sqo";
const RELEASE_NS: &str = "qdrant-system";
/// The image pull Secret deploy/examples/full.yaml names, as its owner made it: labelled to
/// allow the instance (the operator refuses it otherwise).
fn pull_secret() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "registry-credentials", "namespace": NS,
            "labels": {"secureqdrant.dev/allowed-instance": NAME}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "e30="},
    })
}

/// The instance of deploy/examples/full.yaml.
const NS: &str = "search";
const NAME: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const WAIT: Duration = Duration::from_secs(30);

/// The kinds the operator writes with server-side apply, as (apiVersion, kind, group, plural).
const APPLIED_KINDS: [(&str, &str, &str, &str); 7] = [
    ("v1", "ServiceAccount", "", "serviceaccounts"),
    ("v1", "Secret", "", "secrets"),
    ("v1", "ConfigMap", "", "configmaps"),
    ("v1", "Service", "", "services"),
    ("apps/v1", "StatefulSet", "apps", "statefulsets"),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networking.k8s.io",
        "networkpolicies",
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "policy",
        "poddisruptionbudgets",
    ),
];

type Triples = BTreeSet<(String, String, String)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_calls_exactly_what_the_rbac_tables_grant() {
    let server = Arc::new(start_server().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = RecordingProxy::start(&server);
    let kubeconfig = proxy.write_kubeconfig(&server, &dir);

    server.insert(pull_secret()).expect("pull Secret inserted");
    let sq = server
        .insert(example("full.yaml"))
        .expect("instance inserted");
    let uid = sq["metadata"]["uid"].as_str().expect("uid").to_owned();
    // A broken CA Secret of the instance (someone edited it): the operator replaces it (an
    // update). Controlled by the instance: the operator writes nothing it does not control.
    server
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{NAME}-ca"), "namespace": NS, "labels": labels(),
                         "ownerReferences": [{
                             "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
                             "name": NAME, "uid": uid, "controller": true}]},
            "type": "Opaque",
            "data": {"tls.crt": "bm90IGEgY2VydGlmaWNhdGU=", "tls.key": "bm90IGEga2V5"},
        }))
        .expect("broken CA inserted");

    let http_port = free_port();
    let (mut operator, chart) =
        Operator::spawn(&dir, &kubeconfig, http_port, &json!({"replicas": 2}));
    let lease = eventually("the operator takes the Lease", || {
        server
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                RELEASE_NS,
                "secure-qdrant-operator",
            )
            .ok_or_else(|| "no Lease".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    assert_eq!(
        lease["spec"]["holderIdentity"], "sqo-secure-qdrant-operator-7d9f-abcde",
        "the Lease is held by POD_NAME"
    );

    // The instance converges; the broken CA was replaced.
    eventually("the instance converges", || converged(&server))
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    eventually("the CA is replaced", || {
        let ca = server
            .get("v1", "Secret", NS, &format!("{NAME}-ca"))
            .ok_or("no CA")?;
        (ca["data"]["tls.key"] != "bm90IGEga2V5")
            .then_some(())
            .ok_or_else(|| "the broken CA is still there".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The probes of the chart answer on the port the chart passes.
    for path in ["/healthz", "/readyz", "/metrics"] {
        eventually(&format!("GET {path} is 200"), || http_get(http_port, path))
            .await
            .unwrap_or_else(|e| operator.fail(&e));
    }

    // A token for an application.
    server
        .insert(json!({
            "apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "frontend", "namespace": NS},
            "spec": {"qdrantRef": {"name": NAME}, "access": {"global": "r"}, "lifetime": "1h"},
        }))
        .expect("token inserted");
    let token = eventually("the token is issued", || issued_token(&server)).await;
    let first_token = token.unwrap_or_else(|e| operator.fail(&e));

    // Children of an older operator version under other names: pruned.
    let owner = json!([{
        "apiVersion": SQ_API, "kind": "SecureQdrant", "name": NAME, "uid": uid,
        "controller": true,
    }]);
    let meta = json!({"name": format!("{NAME}-legacy"), "namespace": NS, "labels": labels(),
                      "ownerReferences": owner});
    server
        .insert(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": meta, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        )
        .expect("stale NetworkPolicy inserted");
    server
        .insert(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                       "metadata": meta,
                       "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels()}}}),
        )
        .expect("stale PDB inserted");
    eventually("stale children are pruned", || {
        let np = server.get(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            NS,
            &format!("{NAME}-legacy"),
        );
        let pdb = server.get(
            "policy/v1",
            "PodDisruptionBudget",
            NS,
            &format!("{NAME}-legacy"),
        );
        (np.is_none() && pdb.is_none())
            .then_some(())
            .ok_or_else(|| "stale children still there".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The user acknowledges a scale-down (3 -> 2) with the annotation: the StatefulSet is
    // scaled and the operator removes the annotation (its one write to the resource itself).
    // The user's own write goes to the server directly, so it is not counted.
    server
        .merge_patch(
            SQ_API,
            "SecureQdrant",
            NS,
            NAME,
            &json!({"metadata": {"annotations": {"secureqdrant.dev/peers-removed": "2"}},
                    "spec": {"replicas": 2}}),
        )
        .expect("scale-down acknowledged");
    eventually("the acknowledged scale-down is applied", || {
        let sts = server
            .get("apps/v1", "StatefulSet", NS, NAME)
            .ok_or("no StatefulSet")?;
        let sq = server
            .get(SQ_API, "SecureQdrant", NS, NAME)
            .ok_or("no SecureQdrant")?;
        let acknowledged = sq["metadata"]["annotations"]
            .get("secureqdrant.dev/peers-removed")
            .is_some();
        (sts["spec"]["replicas"] == 2 && !acknowledged)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "replicas {}, acknowledged {acknowledged}",
                    sts["spec"]["replicas"]
                )
            })
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // Which applied kinds the operator created (before the instance and its children go).
    let created_by_apply = operator_created_kinds(&server);

    // The API-key Secret is lost: new keys, the token is signed again (its Event repeats).
    server
        .delete("v1", "Secret", NS, &format!("{NAME}-api-key"))
        .expect("API-key Secret deleted");
    eventually("the token is signed with the new key", || {
        let now = issued_token(&server)?;
        (now != first_token)
            .then_some(())
            .ok_or_else(|| "the token was not re-signed".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The leader renews its Lease.
    eventually("the Lease is renewed", || {
        (server
            .counters()
            .get("update", "leases.coordination.k8s.io")
            > 0)
        .then_some(())
        .ok_or_else(|| "no renewal yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The instance is deleted: the token is invalid, its Secret is removed.
    server
        .delete(SQ_API, "SecureQdrant", NS, NAME)
        .expect("instance deleted");
    eventually("the token Secret is removed", || {
        match server.get("v1", "Secret", NS, "frontend-qdrant-token") {
            None => Ok(()),
            Some(_) => Err("the token Secret is still there".to_owned()),
        }
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // SIGTERM, as Kubernetes stops a pod: the leader releases its Lease and exits.
    let released_before = server
        .counters()
        .get("update", "leases.coordination.k8s.io");
    operator.terminate();
    eventually("the Lease is released", || {
        let lease = server
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                RELEASE_NS,
                "secure-qdrant-operator",
            )
            .ok_or("no Lease")?;
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
        holder
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("still held by {holder}"))
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    assert!(
        server
            .counters()
            .get("update", "leases.coordination.k8s.io")
            > released_before
    );

    // Every request was authorized by the RBAC objects of the same rendering.
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.namespace.is_none() && r.verb == "watch")
            && requests
                .iter()
                .any(|r| { r.namespace.as_deref() == Some(RELEASE_NS) && r.resource == "leases" }),
        "the proxy missed the operator's requests: {requests:#?}"
    );
    let forbidden = forbidden(&requests, &chart);
    assert!(
        forbidden.is_empty(),
        "requests the chart's RBAC does not allow: {forbidden:#?}"
    );

    let called = called(&server.counters(), &created_by_apply);
    let mut granted = rbac::expand(RBAC);
    granted.extend(rbac::expand(LEADER_ELECTION));
    let missing: Vec<_> = called.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&called).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "the RBAC tables (src/rbac.rs) do not match the operator's calls:\n\
         called without a rule (forbidden on a real cluster): {missing:?}\n\
         granted but never called: {unused:?}\n\
         counters: {:?}",
        server.counters().requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_namespaces_every_request_stays_where_the_roles_allow() {
    let server = Arc::new(start_server().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = RecordingProxy::start(&server);
    let kubeconfig = proxy.write_kubeconfig(&server, &dir);
    let watched = ["search", "other"];
    let values = json!({"replicas": 2, "watchNamespaces": watched});
    // One instance in a watched namespace, one elsewhere (which must stay untouched).
    server.insert(pull_secret()).expect("pull Secret inserted");
    server
        .insert(example("full.yaml"))
        .expect("instance inserted");
    let mut outside = example("minimal.yaml");
    outside["metadata"]["namespace"] = json!("elsewhere");
    server.insert(&outside).expect("instance inserted");

    let (mut operator, chart) = Operator::spawn(&dir, &kubeconfig, free_port(), &values);
    eventually("the instance converges", || converged(&server))
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    server
        .insert(json!({
            "apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "frontend", "namespace": NS},
            "spec": {"qdrantRef": {"name": NAME}, "access": {"global": "r"}, "lifetime": "1h"},
        }))
        .expect("token inserted");
    eventually("the token is issued", || issued_token(&server))
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    eventually("the Lease is renewed", || {
        (server
            .counters()
            .get("update", "leases.coordination.k8s.io")
            > 0)
        .then_some(())
        .ok_or_else(|| "no renewal yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    let unwatched = server
        .get(SQ_API, "SecureQdrant", "elsewhere", NAME)
        .expect("still there");
    assert!(
        unwatched.get("status").is_none_or(Value::is_null),
        "an instance outside the watched namespaces was reconciled: {}",
        unwatched["status"]
    );
    assert!(server.list("v1", "Secret", "elsewhere").is_empty());

    let requests = proxy.requests();
    let forbidden = forbidden(&requests, &chart);
    assert!(
        forbidden.is_empty(),
        "requests the chart's Roles do not allow (a cluster-wide call, or one outside the \
         watched namespaces): {forbidden:#?}"
    );
    // The proxy saw the operator's work: watches in each watched namespace.
    for ns in watched {
        assert!(
            requests
                .iter()
                .any(|r| r.namespace.as_deref() == Some(ns) && r.verb == "watch"),
            "no watch in {ns}: {requests:#?}"
        );
    }
}

#[test]
fn counter_names_map_to_rbac_resources() {
    // The mapping the test above relies on, on the counter's documented names.
    let mut counters = Counters::default();
    for (verb, resource) in [
        ("list", "secrets"),
        ("patch", "statefulsets.apps"),
        ("patch", "secureqdrants.secureqdrant.dev/status"),
        ("update", "leases.coordination.k8s.io"),
    ] {
        counters
            .requests
            .insert((verb.to_owned(), resource.to_owned()), 1);
    }
    let created = BTreeSet::from([("apps".to_owned(), "statefulsets".to_owned())]);
    let want: Triples = [
        ("", "secrets", "list"),
        ("apps", "statefulsets", "patch"),
        ("apps", "statefulsets", "create"),
        ("secureqdrant.dev", "secureqdrants/status", "patch"),
        ("coordination.k8s.io", "leases", "update"),
    ]
    .iter()
    .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(called(&counters, &created), want);
}

// ---------------------------------------------------------------------------------------------
// Requests as the API server's authorizer sees them, and the chart's RBAC deciding on them
// ---------------------------------------------------------------------------------------------

/// One API request: namespace (None: cluster-wide), group, resource (with subresource), verb.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    namespace: Option<String>,
    group: String,
    resource: String,
    verb: String,
}

impl Request {
    /// The authorizer's attributes of a request line (`PATCH /apis/apps/v1/namespaces/x/... `);
    /// None for non-resource paths (discovery, /version), which every client may read.
    fn parse(method: &str, target: &str) -> Option<Request> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            rest => (None, rest),
        };
        let (resource, name, sub) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (method, name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Request {
            namespace,
            group: group.to_owned(),
            resource: match sub {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_owned(),
            },
            verb: verb.to_owned(),
        })
    }
}

/// The requests that no (Cluster)Role bound to the operator's ServiceAccount in the rendered
/// chart allows, as Kubernetes RBAC decides: a RoleBinding grants its Role's rules in its own
/// namespace; a ClusterRoleBinding grants its ClusterRole's rules everywhere.
fn forbidden(requests: &[Request], chart: &[Value]) -> Vec<Request> {
    let sa = chart
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    let is_operator = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == sa["metadata"]["name"]
                    && s["namespace"] == sa["metadata"]["namespace"]
            })
    };
    let role = |kind: &str, name: &Value, ns: &Value| {
        chart
            .iter()
            .find(|d| {
                d["kind"] == kind
                    && &d["metadata"]["name"] == name
                    && (kind == "ClusterRole" || &d["metadata"]["namespace"] == ns)
            })
            .unwrap_or_else(|| panic!("the chart binds a missing {kind} {name}"))
    };
    // (namespace or None for cluster-wide, granted rules)
    let mut grants: Vec<(Option<String>, Triples)> = Vec::new();
    for b in chart.iter().filter(|d| is_operator(d)) {
        let ns = &b["metadata"]["namespace"];
        let r = role(
            b["roleRef"]["kind"].as_str().unwrap_or_default(),
            &b["roleRef"]["name"],
            ns,
        );
        let scope = match b["kind"].as_str() {
            Some("ClusterRoleBinding") => None,
            _ => Some(ns.as_str().expect("a namespaced binding").to_owned()),
        };
        grants.push((scope, rules_of(r)));
    }
    let mut out: Vec<Request> = requests
        .iter()
        .filter(|r| {
            !grants.iter().any(|(scope, rules)| {
                (scope.is_none() || *scope == r.namespace)
                    && rules.contains(&(r.group.clone(), r.resource.clone(), r.verb.clone()))
            })
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// (group, resource, verb) of every rule of a (Cluster)Role.
fn rules_of(role: &Value) -> Triples {
    let mut out = Triples::new();
    for rule in role["rules"].as_array().expect("rules") {
        for g in rule["apiGroups"].as_array().expect("apiGroups") {
            for r in rule["resources"].as_array().expect("resources") {
                for v in rule["verbs"].as_array().expect("verbs") {
                    out.insert((
                        g.as_str().unwrap().to_owned(),
                        r.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// A TCP proxy in front of the fake API server that notes every HTTP request line the operator
/// sends (the server's counters do not say in which namespace a request was).
struct RecordingProxy {
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl RecordingProxy {
    fn start(server: &FakeApiServer) -> RecordingProxy {
        let upstream = server.addr();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let lines: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = lines.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (Ok(mut to_client), Ok(mut from_upstream)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_upstream, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                });
                let seen = seen.clone();
                std::thread::spawn(move || forward_and_note(client, upstream, &seen));
            }
        });
        RecordingProxy { addr, lines }
    }

    /// A kubeconfig for the server, through the proxy.
    fn write_kubeconfig(
        &self,
        server: &FakeApiServer,
        dir: &tempfile::TempDir,
    ) -> std::path::PathBuf {
        let path = dir.path().join("kubeconfig");
        let config = server
            .kubeconfig()
            .replace(&server.url(), &format!("http://{}", self.addr));
        std::fs::write(&path, config).expect("kubeconfig written");
        path
    }

    fn requests(&self) -> Vec<Request> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(method, target)| Request::parse(method, target))
            .collect()
    }
}

/// Copies the client's bytes upstream, noting each request line (`METHOD target HTTP/1.1`).
fn forward_and_note(
    mut client: TcpStream,
    mut upstream: TcpStream,
    seen: &Mutex<Vec<(String, String)>>,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if upstream.write_all(&buf[..n]).is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 2);
            let mut parts = line.split(' ');
            if let (Some(method), Some(target), Some(version)) =
                (parts.next(), parts.next(), parts.next())
                && version.starts_with("HTTP/1.")
                && ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method)
            {
                seen.lock()
                    .unwrap()
                    .push((method.to_owned(), target.to_owned()));
            }
        }
        // Bodies without line breaks: keep only a tail long enough for a request line.
        if pending.len() > 64 * 1024 {
            pending.drain(..pending.len() - 8 * 1024);
        }
    }
    let _ = upstream.shutdown(std::net::Shutdown::Write);
}

#[test]
fn request_lines_map_to_authorizer_attributes() {
    let parse = |m: &str, t: &str| Request::parse(m, t);
    let req = |ns: Option<&str>, g: &str, r: &str, v: &str| {
        Some(Request {
            namespace: ns.map(str::to_owned),
            group: g.to_owned(),
            resource: r.to_owned(),
            verb: v.to_owned(),
        })
    };
    assert_eq!(
        parse(
            "GET",
            "/api/v1/secrets?labelSelector=a%3Db&watch=true&resourceVersion=5"
        ),
        req(None, "", "secrets", "watch")
    );
    assert_eq!(
        parse("GET", "/api/v1/namespaces/search/secrets?labelSelector=x"),
        req(Some("search"), "", "secrets", "list")
    );
    assert_eq!(
        parse("GET", "/api/v1/namespaces/search/secrets/vectors-ca"),
        req(Some("search"), "", "secrets", "get")
    );
    assert_eq!(
        parse(
            "PATCH",
            "/apis/secureqdrant.dev/v1alpha1/namespaces/search/secureqdrants/vectors/status?fieldManager=x&force=true"
        ),
        req(
            Some("search"),
            "secureqdrant.dev",
            "secureqdrants/status",
            "patch"
        )
    );
    assert_eq!(
        parse(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/l"
        ),
        req(Some("ops"), "coordination.k8s.io", "leases", "update")
    );
    assert_eq!(
        parse(
            "DELETE",
            "/apis/policy/v1/namespaces/search/poddisruptionbudgets/p"
        ),
        req(Some("search"), "policy", "poddisruptionbudgets", "delete")
    );
    assert_eq!(
        parse("POST", "/apis/events.k8s.io/v1/namespaces/search/events"),
        req(Some("search"), "events.k8s.io", "events", "create")
    );
    assert_eq!(parse("GET", "/apis/apps/v1"), None);
    assert_eq!(parse("GET", "/version"), None);

    // The authorizer: a Role allows only its namespace; a ClusterRole everywhere.
    let chart = common::yaml_docs(&common::render_chart(
        &json!({"watchNamespaces": ["search"], "replicas": 2}),
        RELEASE,
        RELEASE_NS,
    ));
    let list_in = |ns: Option<&str>| req(ns, "", "secrets", "list").unwrap();
    let lease_in = |ns: &str| req(Some(ns), "coordination.k8s.io", "leases", "update").unwrap();
    let asked = [
        list_in(Some("search")),
        list_in(Some("other")),
        list_in(None),
        lease_in(RELEASE_NS),
        lease_in("search"),
    ];
    assert_eq!(
        forbidden(&asked, &chart),
        [list_in(None), list_in(Some("other")), lease_in("search")]
    );
    let cluster = common::yaml_docs(&common::render_chart(&json!({}), RELEASE, RELEASE_NS));
    assert_eq!(
        forbidden(&asked, &cluster),
        [lease_in(RELEASE_NS), lease_in("search")]
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// (group, resource, verb) of every request counted, plus `create` for the kinds created by
/// server-side apply.
fn called(counters: &Counters, created_by_apply: &BTreeSet<(String, String)>) -> Triples {
    let mut out = Triples::new();
    for (verb, counted) in counters.requests.keys() {
        let (counted, sub) = match counted.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (counted.as_str(), None),
        };
        let (plural, group) = counted.split_once('.').unwrap_or((counted, ""));
        let resource = match sub {
            Some(s) => format!("{plural}/{s}"),
            None => plural.to_owned(),
        };
        if verb == "patch"
            && sub.is_none()
            && created_by_apply.contains(&(group.to_owned(), resource.clone()))
        {
            out.insert((group.to_owned(), resource.clone(), "create".to_owned()));
        }
        out.insert((group.to_owned(), resource, verb.clone()));
    }
    out
}

/// (group, plural) of the applied kinds of which an object exists that only the operator wrote
/// (the test inserted none of them; the broken CA Secret was inserted, so Secrets are judged by
/// the TLS Secret, which only apply writes).
fn operator_created_kinds(server: &FakeApiServer) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (api_version, kind, group, plural) in APPLIED_KINDS {
        let ours = server.list(api_version, kind, NS).into_iter().any(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let by_operator_only = o["metadata"]["managedFields"]
                .as_array()
                .is_some_and(|m| !m.is_empty() && m.iter().all(|f| f["manager"] == MANAGER));
            by_operator_only
                && name != format!("{NAME}-ca")
                && o["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER
        });
        if ours {
            out.insert((group.to_owned(), plural.to_owned()));
        }
    }
    out
}

async fn start_server() -> FakeApiServer {
    in_process::server_with_crds().await
}

fn labels() -> Value {
    json!({
        LABEL_NAME: "qdrant",
        LABEL_INSTANCE: NAME,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_COMPONENT: "credentials",
    })
}

fn example(file: &str) -> Value {
    let path = common::root().join("deploy/examples").join(file);
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("example readable"))
        .expect("example parses")
}

/// The instance's status says the current generation is reconciled.
fn converged(server: &FakeApiServer) -> Result<(), String> {
    let sq = server
        .get(SQ_API, "SecureQdrant", NS, NAME)
        .ok_or("no SecureQdrant")?;
    let generation = &sq["metadata"]["generation"];
    let reconciled = sq["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Reconciled")
        .ok_or("no Reconciled condition")?;
    if reconciled["status"] == "True" && &reconciled["observedGeneration"] == generation {
        Ok(())
    } else {
        Err(format!("not reconciled: {reconciled}"))
    }
}

/// The token in the token Secret, once the QdrantAccessToken is Ready.
fn issued_token(server: &FakeApiServer) -> Result<String, String> {
    let qat = server
        .get(SQ_API, "QdrantAccessToken", NS, "frontend")
        .ok_or("no QdrantAccessToken")?;
    let ready = qat["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Err(format!("token not ready: {}", qat["status"]));
    }
    let secret = server
        .get("v1", "Secret", NS, "frontend-qdrant-token")
        .ok_or("no token Secret")?;
    secret["data"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no token in the Secret".to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GET on the operator's HTTP port: Ok when 200.
fn http_get(port: u16, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_owned();
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        Err(format!("GET {path}: {status:?}: {}", body.trim()))
    }
}

/// Polls `check` every 50 ms until Ok, or returns its last error after [`WAIT`].
async fn eventually<T>(
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{what}: not within {WAIT:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The operator process, started as the chart's Deployment starts it.
struct Operator {
    child: Child,
    log: std::path::PathBuf,
}

impl Operator {
    /// Starts the operator as the chart rendered with `values` would; it talks to the API server
    /// through `kubeconfig`. Returns it with the rendered documents.
    fn spawn(
        dir: &tempfile::TempDir,
        kubeconfig: &std::path::Path,
        http_port: u16,
        values: &Value,
    ) -> (Operator, Vec<Value>) {
        let all = common::yaml_docs(&common::render_chart(values, RELEASE, RELEASE_NS));
        let deployment = all
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the chart renders a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        // The chart's args, but the HTTP server on a free loopback port.
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .map(|a| {
                if a.starts_with("--http-addr=") {
                    format!("--http-addr=127.0.0.1:{http_port}")
                } else {
                    a
                }
            })
            .collect();
        let log = dir.path().join("operator.log");
        let file = File::create(&log).expect("log file");
        let mut cmd = Command::new(OPERATOR);
        cmd.args(&args).env_clear().env("KUBECONFIG", kubeconfig);
        for env in container["env"].as_array().expect("env") {
            let name = env["name"].as_str().expect("env name");
            let value = match env["value"].as_str() {
                Some(v) => v.to_owned(),
                None if env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" => {
                    "sqo-secure-qdrant-operator-7d9f-abcde".to_owned()
                }
                None => panic!("env {name}: a source this test does not know: {env}"),
            };
            cmd.env(name, value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("the operator starts");
        (Operator { child, log }, all)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with `error` and the operator's log.
    fn fail(&mut self, error: &str) -> ! {
        let exited = self.child.try_wait().ok().flatten();
        panic!(
            "{error}\noperator exited: {exited:?}\noperator log:\n{}",
            self.log()
        );
    }

    /// SIGTERM, as the kubelet sends it.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM not delivered");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
