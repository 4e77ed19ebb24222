//! `render` prints what the operator writes, no more and no less.
//!
//! For every example under deploy/examples and a variant for each rule that adds or removes an
//! object (TLS off; the user's API key with and without the read-only key; the user's CA; the
//! user's certificate; cluster mode with metrics and client certificates), the real SecureQdrant
//! reconcile runs once, in-process, against the real API server of `tests/support/control_plane.rs`
//! (as the chart's ServiceAccount, in a fresh namespace per case; the Secrets a spec references
//! are created first, as a user would). What it wrote is then compared with `render`'s output
//! for the same document:
//! - the same objects (kind and name) in the same order: the order the operator wrote them,
//!   read from the API server's audit log (the first successful write of each object; the
//!   objects' resourceVersions cannot tell it on a real cluster, where the StatefulSet and
//!   disruption controllers write their status right after);
//! - the same labels, annotations (but the applied-hash one the apply step adds) and owner;
//! - for Secrets, the same type and the same keys (render shows placeholders for the values).

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/real_server.rs"]
mod real_server;

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use in_process::managed_stores;
use real_server::{Env, requests_between};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::events::Events;
use secure_qdrant_operator::reconcile::stamp::APPLIED_HASH;
use secure_qdrant_operator::reconcile::{self, Context};
use secure_qdrant_operator::render::render;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::{CaSubject, issue_ca, issue_leaf, serving_dns_names};

const SQ_API: &str = "secureqdrant.dev/v1alpha1";

/// What is compared of one object.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeSet<String>,
    /// (apiVersion, kind, name, controller) of each owner; the UID is the API server's.
    owners: Vec<(String, String, String, bool)>,
    /// Secrets only: the type and the keys of the data.
    secret: Option<(String, BTreeSet<String>)>,
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn seen(obj: &Value) -> Seen {
    let meta = &obj["metadata"];
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let secret = (kind == "Secret").then(|| {
        // render shows the placeholders as stringData; the API server stores data.
        let data = if obj["stringData"].is_object() {
            &obj["stringData"]
        } else {
            &obj["data"]
        };
        (
            obj["type"].as_str().unwrap_or_default().to_owned(),
            strings(data).into_keys().collect(),
        )
    });
    Seen {
        name: meta["name"].as_str().unwrap_or_default().to_owned(),
        kind,
        labels: strings(&meta["labels"]),
        annotations: strings(&meta["annotations"])
            .into_keys()
            .filter(|k| k != APPLIED_HASH)
            .collect(),
        owners: meta["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                (
                    o["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    o["kind"].as_str().unwrap_or_default().to_owned(),
                    o["name"].as_str().unwrap_or_default().to_owned(),
                    o["controller"].as_bool().unwrap_or_default(),
                )
            })
            .collect(),
        secret,
    }
}

/// Where render and the operator disagree, in words; Ok when they do not.
fn differences(rendered: &[Seen], written: &[Seen]) -> Result<(), String> {
    let names = |objs: &[Seen]| -> Vec<String> {
        objs.iter()
            .map(|o| format!("{} {}", o.kind, o.name))
            .collect()
    };
    if names(rendered) != names(written) {
        return Err(format!(
            "objects differ:\n  render:   {:?}\n  operator: {:?}",
            names(rendered),
            names(written)
        ));
    }
    for (r, w) in rendered.iter().zip(written) {
        if r != w {
            return Err(format!(
                "{} {} differs:\n  render:   {r:?}\n  operator: {w:?}",
                r.kind, r.name
            ));
        }
    }
    Ok(())
}

/// render's output for a document, parsed.
fn rendered(doc: &str) -> Vec<Seen> {
    let out = render(doc, &Settings::default()).unwrap_or_else(|e| panic!("render: {e}"));
    serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| seen(&Value::deserialize(d).expect("render prints YAML")))
        .collect()
}

fn opaque(ns: &str, name: &str, type_: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The Secrets the spec references, as a user would have made them.
fn user_secrets(sq: &SecureQdrant) -> Vec<Secret> {
    let ns = sq.metadata.namespace.as_deref().expect("a namespace");
    let name = sq.metadata.name.as_deref().expect("a name");
    let now = Timestamp::now();
    let mut out = Vec::new();
    if let Some(r) = &sq.spec.auth.api_key_secret_ref {
        out.push(opaque(
            ns,
            &r.name,
            "Opaque",
            BTreeMap::from([(r.key.clone(), ByteString(vec![b'k'; 43]))]),
        ));
    }
    let ca = issue_ca(
        &CaSubject::new("pki", "corp"),
        SignedDuration::from_hours(24 * 365),
        now,
    )
    .expect("a CA");
    if let Some(r) = &sq.spec.tls.ca_secret_ref {
        out.push(opaque(ns, &r.name, "Opaque", ca.to_secret_data()));
    }
    if let Some(r) = &sq.spec.tls.certificate_secret_ref {
        let names = serving_dns_names(name, ns, "cluster.local", &sq.spec.tls.extra_dns_names);
        let leaf = issue_leaf(&ca, &names, SignedDuration::from_hours(24 * 90), now)
            .expect("a certificate");
        out.push(opaque(
            ns,
            &r.name,
            "kubernetes.io/tls",
            leaf.to_secret_data(&[ca.cert().clone()]),
        ));
    }
    for r in &sq.spec.image_pull_secrets {
        out.push(opaque(
            ns,
            &r.name,
            "kubernetes.io/dockerconfigjson",
            BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(b"{\"auths\":{}}".to_vec()),
            )]),
        ));
    }
    // Each allows the instance to use it (the owner's opt-in).
    for secret in &mut out {
        secret.metadata.labels = Some(BTreeMap::from([(
            "secureqdrant.dev/allowed-instance".to_owned(),
            name.to_owned(),
        )]));
    }
    out
}

/// The kind a resource of the audit log (`statefulsets.apps`) names, for the child kinds.
fn kind_of(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "serviceaccounts" => "ServiceAccount",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "services" => "Service",
        "networkpolicies.networking.k8s.io" => "NetworkPolicy",
        "poddisruptionbudgets.policy" => "PodDisruptionBudget",
        "statefulsets.apps" => "StatefulSet",
        _ => return None,
    })
}

/// Runs the first reconcile of `doc` in a fresh namespace of the real API server, as the
/// chart's ServiceAccount (`env.client`); returns what the operator wrote for it, in the order
/// it wrote them.
async fn written(env: &Env, doc: &str) -> Vec<Seen> {
    let sq: Value = serde_yaml_ng::from_str(doc).expect("a YAML document");
    let ns = sq["metadata"]["namespace"]
        .as_str()
        .expect("moved to its namespace")
        .to_owned();
    let typed: SecureQdrant = serde_json::from_value(sq.clone()).expect("a SecureQdrant");
    for secret in user_secrets(&typed) {
        let mut value = serde_json::to_value(secret).expect("serializes");
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Secret");
        env.insert(value).await.expect("user Secret inserted");
    }
    let stored = env.insert(&sq).await.expect("SecureQdrant inserted");
    let uid = stored["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    let name = stored["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();

    let client = env.client.clone();
    let mut tasks = Vec::new();
    let stores = managed_stores(&client, &mut tasks);
    let (events, log) = Events::memory();
    let ctx = Context::new(client, stores, events, Settings::default());
    assert!(
        tokio::time::timeout(Duration::from_secs(120), ctx.stores.wait_until_ready())
            .await
            .unwrap_or(false),
        "caches did not fill"
    );
    let sq: SecureQdrant = serde_json::from_value(
        env.get(SQ_API, "SecureQdrant", &ns, &name)
            .await
            .expect("the SecureQdrant"),
    )
    .expect("a SecureQdrant");
    let mark = env.mark().await;
    let action = reconcile::reconcile(Arc::new(sq), Arc::new(ctx))
        .await
        .unwrap_or_else(|e| panic!("the first reconcile failed: {e}"));
    let end = env.mark().await;
    for task in tasks {
        task.abort();
    }
    assert_ne!(
        action,
        Action::await_change(),
        "the spec was refused: {:?}",
        log.lock()
            .unwrap()
            .iter()
            .map(|(_, e)| format!("{} {:?}", e.reason, e.note))
            .collect::<Vec<_>>()
    );

    // The order of the operator's first successful write of each object in the namespace.
    let mut order: Vec<(String, String)> = Vec::new();
    for r in requests_between(env.cp, &mark, &end, &env.identity.username()) {
        let Some(kind) = kind_of(&r.resource) else {
            continue;
        };
        let write = ["create", "update", "patch"].contains(&r.verb.as_str());
        let key = (kind.to_owned(), r.name.clone());
        if write && r.namespace == ns && (200..300).contains(&r.code) && !order.contains(&key) {
            order.push(key);
        }
    }
    let mut objects: Vec<(usize, Value)> = Vec::new();
    for (api, kind) in secure_qdrant_operator::children::CHILD_KINDS {
        for o in env.list(api, kind, &ns).await {
            let owned = o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["uid"] == uid.as_str());
            if !owned {
                continue;
            }
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let at = order
                .iter()
                .position(|k| k.0 == kind && k.1 == name)
                .unwrap_or_else(|| {
                    panic!("{kind} {name}: no write of the operator in the audit log: {order:?}")
                });
            let mut o = o;
            o["kind"] = json!(kind);
            objects.push((at, o));
        }
    }
    objects.sort_by_key(|(at, _)| *at);
    env.cp.delete_namespace(&env.admin, &ns).await;
    objects.iter().map(|(_, o)| seen(o)).collect()
}

/// `doc` moved to namespace `ns`: each case has its own namespace on the shared control plane.
/// The instance's own in-cluster name in `extraDnsNames` (`vectors.search` in an example) follows
/// the move, as a user's would: another namespace's name is refused.
fn moved(doc: &str, ns: &str) -> String {
    let mut v: Value = serde_yaml_ng::from_str(doc).expect("a YAML document");
    let own = format!(
        "{}.{}",
        v["metadata"]["name"].as_str().unwrap_or_default(),
        v["metadata"]["namespace"].as_str().unwrap_or("default")
    );
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(names) = v
        .pointer_mut("/spec/tls/extraDnsNames")
        .and_then(Value::as_array_mut)
    {
        for n in names {
            if n.as_str() == Some(own.as_str()) {
                *n = json!(format!("{name}.{ns}"));
            }
        }
    }
    v["metadata"]["namespace"] = json!(ns);
    serde_yaml_ng::to_string(&v).expect("YAML")
}

fn doc(spec: &str) -> String {
    format!(
        "apiVersion: {SQ_API}\nkind: SecureQdrant\nmetadata: {{name: vectors, namespace: search}}\nspec: {spec}\n"
    )
}

/// Every example, and a variant for each rule that adds or removes an object.
fn cases() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = common::examples()
        .into_iter()
        .map(|(stem, path)| {
            (
                format!("example {stem}"),
                std::fs::read_to_string(path).expect("readable example"),
            )
        })
        .collect();
    for (name, spec) in [
        ("TLS off", "{tls: {enabled: false}}"),
        (
            "the user's API key, with the read-only key",
            "{auth: {apiKeySecretRef: {name: admin-key, key: token}}}",
        ),
        (
            "the user's API key, no read-only key",
            "{auth: {apiKeySecretRef: {name: admin-key, key: token}, readOnlyApiKey: false}}",
        ),
        ("the user's CA", "{tls: {caSecretRef: {name: corp-ca}}}"),
        (
            "the user's certificate",
            "{tls: {certificateSecretRef: {name: vectors-cert}}}",
        ),
        (
            "cluster mode, metrics, client certificates",
            "{replicas: 3, network: {metrics: [{podSelector: {}}]}, tls: {clientCertificates: true}}",
        ),
    ] {
        out.push((name.to_owned(), doc(spec)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_shows_every_object_the_operator_writes_in_its_order() {
    // The chart's cluster-wide RBAC: the caches watch every namespace, as the operator's do.
    let env = Env::new("render").await;
    let mut failures = Vec::new();
    for (case, doc) in cases() {
        let ns = env.cp.namespace(&env.admin, "render").await;
        let doc = moved(&doc, &ns);
        let rendered = rendered(&doc);
        let written = written(&env, &doc).await;
        assert!(written.len() >= 8, "{case}: the operator wrote {written:?}");
        if let Err(e) = differences(&rendered, &written) {
            failures.push(format!("{case}: {e}"));
        }
        // The comparison can fail: one object fewer, or one Secret key fewer, is found.
        assert!(differences(&rendered[1..], &written).is_err(), "{case}");
        let mut fewer_keys = rendered;
        let secret = fewer_keys
            .iter_mut()
            .find_map(|o| o.secret.as_mut())
            .expect("every case has a Secret");
        secret.1.pop_first();
        assert!(differences(&fewer_keys, &written).is_err(), "{case}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
