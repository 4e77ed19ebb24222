//! The TLS step of the reconcile pipeline against a scripted API server, time driven by an
//! injected clock (`Context::with_clock`).
//!
//! A [`World`] plays the cluster between reconciles: every object the operator wrote is stored
//! as the API server would store it (a fresh resourceVersion per write, the StatefulSet keeping
//! its status and bumping its generation on a spec change), the caches are fed like the watches
//! would feed them (only objects labelled as the operator's; a user's Secret is read with a GET),
//! and [`World::roll_out`] plays the StatefulSet controller finishing a rollout. An operator
//! restart is a fresh Cluster and Harness built from the stored objects.
//!
//! Each reconcile's script lists the exact requests expected, in order; anything else fails the
//! test, so "writes nothing" and "never writes the user's Secret" are checked, not assumed.

#[path = "support/api_verifier.rs"]
#[allow(dead_code)]
mod api_verifier;
#[path = "support/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Resource as _;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, crypto::CryptoProvider};
use serde_json::{Value, json};

use secure_qdrant_operator::children::meta::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER, RESTART_HASH,
};
use secure_qdrant_operator::crd::{SecretRef, SecureQdrant, SecureQdrantStatus};
use secure_qdrant_operator::error::Error;
use secure_qdrant_operator::qdrant::env as qdrant_env;
use secure_qdrant_operator::reconcile::status::TLS_DISABLED_MESSAGE;
use secure_qdrant_operator::reconcile::tls::{CLIENT_PICKUP, EXTERNAL_POLL};
use secure_qdrant_operator::reconcile::{Clock, RESYNC};
use secure_qdrant_operator::tls::{
    CA_CRT, CA_ROTATION_HANDLED_ANNOTATION, CaMaterial, CaSubject, Certificate, Jitter, Phase,
    PublishedTls, ROLLOVER_PHASE_ANNOTATION, ROLLOVER_POLL, ROTATE_CA_ANNOTATION, TLS_CRT,
    TLS_FINGERPRINT_ANNOTATION, TLS_KEY, issue_ca, issue_client, issue_leaf, parse_bundle,
    read_published, serving_dns_names,
};

use api_verifier::{ApiServer, Transcript, as_stored, status_failure};
use fixtures::{CR_UID, Cluster, Harness, NAME, NS, SecureQdrantExt, path};

// ----- time ------------------------------------------------------------------------------------

/// When the scenarios start.
fn t0() -> Timestamp {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

const HOUR: SignedDuration = SignedDuration::from_hours(1);
const DAY: SignedDuration = SignedDuration::from_hours(24);
/// The API defaults of spec.tls.
const LEAF_LIFETIME: SignedDuration = SignedDuration::from_hours(2160);
const LEAF_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(720);
const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(8760);
const CA_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(2920);

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_time(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is no timestamp: {e}"))
}

/// The deterministic per-instance jitter pulling the test instance's renewals earlier.
fn jitter(lifetime: SignedDuration) -> SignedDuration {
    Jitter::for_instance(NS, NAME, CR_UID).amount(lifetime)
}

/// The renewal time of a serving certificate with the default policy.
fn leaf_renewal(not_after: Timestamp) -> Timestamp {
    not_after - LEAF_RENEW_BEFORE - jitter(LEAF_LIFETIME)
}

/// The renewal time of the operator's CA with the default policy.
fn ca_renewal(not_after: Timestamp) -> Timestamp {
    not_after - CA_RENEW_BEFORE - jitter(CA_LIFETIME)
}

fn secs(d: SignedDuration) -> Duration {
    Duration::from_secs(d.as_secs().try_into().expect("a positive duration"))
}

// ----- paths and builders ----------------------------------------------------------------------

fn ca_name() -> String {
    format!("{NAME}-ca")
}
fn tls_name() -> String {
    format!("{NAME}-tls")
}
fn ca_path() -> String {
    path::secret(&ca_name())
}
fn tls_path() -> String {
    path::secret(&tls_name())
}

/// A TLS-on instance with 3 replicas (peers talk p2p over TLS).
fn sq3() -> SecureQdrant {
    SecureQdrant::test().tls().replicas(3)
}

fn with_annotation(mut sq: SecureQdrant, key: &str, value: &str) -> SecureQdrant {
    sq.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
    sq
}

/// A Secret the user made (no operator labels, so not in the operator's caches), carrying the
/// label that allows the test instance to use it; `unmarked_user_secret` is one without it.
fn user_secret(name: &str, type_: &str, data: BTreeMap<String, ByteString>) -> Value {
    let mut value = unmarked_user_secret(name, type_, data);
    value["metadata"]["labels"] = json!({"secureqdrant.dev/allowed-instance": NAME});
    value
}

fn unmarked_user_secret(name: &str, type_: &str, data: BTreeMap<String, ByteString>) -> Value {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    let mut value = serde_json::to_value(secret).unwrap();
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    value
}

/// A user's CA: a CA certificate and its key, as `caSecretRef` wants them.
fn user_ca(now: Timestamp, lifetime: SignedDuration) -> CaMaterial {
    issue_ca(&CaSubject::new("pki", "corp"), lifetime, now).unwrap()
}

/// A user's serving certificate (e.g. from cert-manager) for the test instance, signed by `ca`.
fn user_certificate(
    ca: &CaMaterial,
    now: Timestamp,
    lifetime: SignedDuration,
) -> BTreeMap<String, ByteString> {
    let names = serving_dns_names(NAME, NS, "cluster.local", &[]);
    issue_leaf(ca, &names, lifetime, now)
        .unwrap()
        .to_secret_data(&[ca.cert().clone()])
}

// ----- reading what was sent -------------------------------------------------------------------

fn data_of(secret: &Value) -> BTreeMap<String, ByteString> {
    let secret: Secret = serde_json::from_value(secret.clone()).expect("a Secret");
    secret.data.unwrap_or_default()
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    String::from_utf8(
        data.get(key)
            .unwrap_or_else(|| panic!("no {key}"))
            .0
            .clone(),
    )
    .expect("UTF-8 PEM")
}

/// The certificates in one key of a Secret, in order.
fn certs(data: &BTreeMap<String, ByteString>, key: &str) -> Vec<Certificate> {
    parse_bundle(&text(data, key)).expect("PEM certificates")
}

fn leaf_of(data: &BTreeMap<String, ByteString>) -> Certificate {
    certs(data, TLS_CRT).remove(0)
}

fn ders(certs: &[Certificate]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.der().to_vec()).collect()
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

fn template_annotation<'a>(sts: &'a Value, key: &str) -> &'a str {
    sts["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the pod template lacks {key}"))
}

/// The fingerprint the pods must carry for what `<n>-tls` holds.
fn fingerprint_of(data: &BTreeMap<String, ByteString>, phase: Phase) -> String {
    let read = read_published(Some(data));
    PublishedTls {
        leaf: read.leaf.expect("a serving certificate and its key"),
        trust_bundle: read.bundle,
        phase,
    }
    .fingerprint()
}

fn status_in(patch: &Value) -> SecureQdrantStatus {
    serde_json::from_value(patch["status"].clone()).expect("a SecureQdrantStatus")
}

/// (status, reason, message) of a condition in a status patch.
fn condition<'a>(patch: &'a Value, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = patch["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {patch}"));
    (
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap(),
        c["message"].as_str().unwrap(),
    )
}

fn has_condition(patch: &Value, type_: &str) -> bool {
    patch["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_))
}

/// Checks with rustls (webpki, independent of the operator's own X.509 code) that the serving
/// certificate in `data` is valid at `at` for `host` against the trust bundle `ca.crt`, both as
/// a server and as a client certificate (p2p is mutual TLS with the same certificate).
fn verify_peer(
    data: &BTreeMap<String, ByteString>,
    host: &str,
    at: Timestamp,
) -> Result<(), String> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&data[CA_CRT].0) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let roots = Arc::new(roots);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data[TLS_CRT].0)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let now = UnixTime::since_unix_epoch(Duration::from_secs(at.as_second() as u64));
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    server
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
        .map_err(|e| format!("as a server for {host}: {e}"))?;
    let client = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .verify_client_cert(&chain[0], &chain[1..], now)
        .map_err(|e| format!("as a client: {e}"))?;
    Ok(())
}

/// The private keys (PEM) a transcript carried in Secret data (`tls.key`).
fn private_keys(t: &Transcript) -> Vec<String> {
    t.log
        .iter()
        .filter(|l| l.is_write() && l.body["kind"] == "Secret")
        .filter_map(|l| data_of(&l.body).get(TLS_KEY).cloned())
        .map(|b| String::from_utf8(b.0).unwrap())
        .collect()
}

/// Fails if any part of a private key (a line of its PEM body, or its base64 form as Secret
/// data holds it) is in `text`.
fn assert_no_key_material(what: &str, text: &str, keys: &[String]) {
    assert!(!keys.is_empty(), "no key to look for");
    assert!(!text.contains("PRIVATE KEY"), "{what} holds a key: {text}");
    for key in keys {
        for line in key.lines().filter(|l| l.len() >= 32) {
            assert!(!text.contains(line), "{what} holds key material: {text}");
        }
        let b64 = STANDARD.encode(key);
        assert!(
            !text.contains(&b64[40..100]),
            "{what} holds a base64 key: {text}"
        );
    }
}

// ----- the cluster between reconciles ----------------------------------------------------------

/// What one reconcile did.
struct Step {
    result: Result<Action, Error>,
    t: Transcript,
    /// The Events it published: (type, reason, note).
    events: Vec<(EventType, String, String)>,
}

impl Step {
    fn action(&self) -> Action {
        match &self.result {
            Ok(a) => a.clone(),
            Err(e) => panic!("the reconcile failed: {e}\n{}", self.t.summary()),
        }
    }

    fn reasons(&self) -> Vec<&str> {
        self.events.iter().map(|(_, r, _)| r.as_str()).collect()
    }

    fn event(&self, reason: &str) -> &(EventType, String, String) {
        self.events
            .iter()
            .find(|(_, r, _)| r == reason)
            .unwrap_or_else(|| panic!("no {reason} Event in {:?}", self.events))
    }

    fn sent(&self, method: Method, path: &str) -> &Value {
        self.t.body(method, path)
    }

    /// The `<n>-tls` Secret this reconcile applied.
    fn tls(&self) -> &Value {
        self.sent(Method::PATCH, &tls_path())
    }

    fn sts(&self) -> &Value {
        self.sent(Method::PATCH, &path::statefulset())
    }

    fn status(&self) -> &Value {
        self.sent(Method::PATCH, &path::status())
    }
}

/// The stored objects and the operator's status: everything that survives an operator restart.
#[derive(Clone)]
struct Snapshot {
    sq: SecureQdrant,
    objects: BTreeMap<(String, String), Value>,
    version: u64,
}

/// The cluster, the operator (caches, Context) and its clock.
struct World {
    sq: SecureQdrant,
    /// Every object by (kind, name), as the API server stores it.
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    cluster: Cluster,
    harness: Harness,
    clock: Arc<Mutex<Timestamp>>,
}

fn key_of(object: &Value) -> (String, String) {
    (
        object["kind"].as_str().expect("a kind").to_owned(),
        object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_owned(),
    )
}

impl World {
    fn new(sq: SecureQdrant, now: Timestamp) -> Self {
        World::restore(
            Snapshot {
                sq,
                objects: BTreeMap::new(),
                version: 1000,
            },
            now,
        )
    }

    /// A new operator process over the stored objects: its caches list them, its Context is
    /// new.
    fn restore(snapshot: Snapshot, now: Timestamp) -> Self {
        let clock = Arc::new(Mutex::new(now));
        let reader = clock.clone();
        let as_clock: Clock = Arc::new(move || *reader.lock().unwrap());
        let mut cluster = Cluster::synced();
        for object in snapshot.objects.values() {
            if is_cached(object) {
                cluster.put_json(object);
            }
        }
        let harness = Harness::with_clock(&cluster, as_clock);
        World {
            sq: snapshot.sq,
            objects: snapshot.objects,
            version: snapshot.version,
            cluster,
            harness,
            clock,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sq: self.sq.clone(),
            objects: self.objects.clone(),
            version: self.version,
        }
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn set_now(&self, now: Timestamp) {
        *self.clock.lock().unwrap() = now;
    }

    fn object(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name} in the cluster"))
    }

    fn secret(&self, name: &str) -> &Value {
        self.object("Secret", name)
    }

    fn secret_data(&self, name: &str) -> BTreeMap<String, ByteString> {
        data_of(self.secret(name))
    }

    fn version_of(&self, kind: &str, name: &str) -> String {
        self.object(kind, name)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The CA certificate in `<n>-ca`.
    fn ca(&self) -> Certificate {
        certs(&self.secret_data(&ca_name()), TLS_CRT).remove(0)
    }

    /// The rollover phase recorded on `<n>-tls`.
    fn phase(&self) -> String {
        annotation(self.secret(&tls_name()), ROLLOVER_PHASE_ANNOTATION)
            .expect("the phase annotation")
            .to_owned()
    }

    fn sts(&self) -> &Value {
        self.object("StatefulSet", NAME)
    }

    /// Stores `object` with a new resourceVersion and feeds the caches as a watch would.
    fn store(&mut self, mut object: Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        if is_cached(&object) {
            self.cluster.put_json(&object);
        }
        self.objects.insert(key_of(&object), object);
    }

    /// Stores an object the user made (not cached by the operator).
    fn put_user_secret(&mut self, secret: Value) {
        self.store(as_stored(&secret));
    }

    fn delete_secret(&mut self, name: &str) {
        let removed = self
            .objects
            .remove(&("Secret".to_owned(), name.to_owned()))
            .expect("the Secret exists");
        let secret: Secret = serde_json::from_value(removed).unwrap();
        self.cluster.remove(secret);
    }

    /// Reconciles once while `script` plays the API server; stores every write it answered.
    async fn reconcile<F, Fut>(&mut self, script: F) -> Step
    where
        F: FnOnce(ApiServer) -> Fut,
        Fut: Future<Output = ApiServer> + Send + 'static,
    {
        self.reconcile_refusing(None, script).await
    }

    /// Like [`World::reconcile`], but the write to `refused` is one the script failed: it is
    /// not stored.
    async fn reconcile_refusing<F, Fut>(&mut self, refused: Option<&str>, script: F) -> Step
    where
        F: FnOnce(ApiServer) -> Fut,
        Fut: Future<Output = ApiServer> + Send + 'static,
    {
        let before = self.harness.published().len();
        // The operator reads Secret material on demand: the Secrets stored answer its GETs.
        let secrets: BTreeMap<String, Value> = self
            .objects
            .iter()
            .filter(|((kind, _), _)| kind == "Secret")
            .map(|((_, name), object)| (path::secret(name), object.clone()))
            .collect();
        let script = move |mut api: ApiServer| {
            api.serve_secret_reads(secrets);
            script(api)
        };
        // Boxed: a reconcile's future is large, and scenarios await many of them.
        let (result, t) = Box::pin(self.harness.reconcile(&self.sq, script)).await;
        let events = self.harness.published()[before..].to_vec();
        for l in t.log.iter().filter(|l| l.is_write()) {
            if Some(l.path.as_str()) == refused {
                continue;
            }
            if l.path.ends_with("/status") {
                self.sq.status = Some(status_in(&l.body));
                continue;
            }
            assert_ne!(l.method, Method::DELETE, "no scenario here deletes");
            if l.body.get("kind").is_none() {
                // A merge patch: merge it in.
                let name = l.path.rsplit('/').next().unwrap().to_owned();
                let key = ("Secret".to_owned(), name);
                let mut stored = self.objects[&key].clone();
                json_patch::merge(&mut stored, &l.body);
                self.objects.insert(key, stored);
                continue;
            }
            let mut stored = as_stored(&l.body);
            if stored["kind"] == "StatefulSet" {
                // Applying the main resource leaves the status subresource alone; a new
                // template is a new generation the controller has not observed yet.
                if let Some(old) = self.objects.get(&key_of(&stored)) {
                    stored["status"] = old["status"].clone();
                    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    stored["metadata"]["generation"] = json!(generation + 1);
                }
            }
            self.store(stored);
        }
        Step { result, t, events }
    }

    /// The StatefulSet controller finished rolling out the current template: every pod is
    /// updated and ready (the pods now run with the template's TLS fingerprint).
    fn roll_out(&mut self) {
        let mut sts = self.sts().clone();
        let generation = sts["metadata"]["generation"].as_i64().unwrap();
        let replicas = sts["spec"]["replicas"].as_i64().unwrap();
        let revision = format!("{NAME}-rev{generation}");
        sts["status"] = json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "currentReplicas": replicas,
            "currentRevision": revision,
            "updateRevision": revision,
        });
        self.store(sts);
    }
}

/// Whether the operator's label-selected watches see `object`.
fn is_cached(object: &Value) -> bool {
    object["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER
        && object["metadata"]["labels"][LABEL_INSTANCE] == NAME
}

// ----- scripts ---------------------------------------------------------------------------------

/// The server-side apply of every child of a new TLS instance, in the operator's order: the
/// serving-certificate Secret right after the ServiceAccount, the StatefulSet last.
async fn expect_children(api: &mut ApiServer, cluster_mode: bool, tls_secret: bool) {
    api.expect_apply(&path::service_account()).await;
    if tls_secret {
        api.expect_apply(&tls_path()).await;
    }
    api.expect_apply(&path::config_map()).await;
    api.expect_apply(&path::headless_service()).await;
    api.expect_apply(&path::client_service()).await;
    api.expect_apply(&path::network_policy("default-deny"))
        .await;
    api.expect_apply(&path::network_policy("ingress")).await;
    if cluster_mode {
        api.expect_apply(&path::network_policy("egress")).await;
        api.expect_apply(&path::pdb()).await;
    }
    api.expect_apply(&path::statefulset()).await;
}

/// The first reconcile of a TLS instance with the operator's CA on an empty cluster.
async fn first_reconcile(w: &mut World) -> Step {
    let cr = w.sq.to_json();
    let cluster_mode = w.sq.spec.replicas > 1;
    w.reconcile(move |mut api| async move {
        // Credentials first.
        api.expect_get_missing(&path::api_key_secret()).await;
        api.expect_create(&path::secrets()).await;
        // TLS: both Secrets are looked up (cache misses are confirmed with a GET) before
        // anything is decided; then the CA is created (a create: it never overwrites).
        api.expect_get_missing(&ca_path()).await;
        api.expect_get_missing(&tls_path()).await;
        api.expect_create(&path::secrets()).await;
        expect_children(&mut api, cluster_mode, true).await;
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
}

/// A TLS instance after its first reconcile, rolled out, its status settled: further
/// reconciles write nothing.
async fn settled(sq: SecureQdrant) -> World {
    let mut w = World::new(sq, t0());
    first_reconcile(&mut w).await.action();
    w.roll_out();
    after_first_roll_out(&mut w).await;
    let quiet = w.reconcile(|api| async move { api }).await;
    quiet.action();
    w
}

/// The reconcile after the first roll-out: the status and, for a cluster (its peers are ready
/// now), the formation recorded in `<n>-config` (never a StatefulSet write).
async fn after_first_roll_out(w: &mut World) -> Step {
    let cr = w.sq.to_json();
    let cluster_mode = w.sq.spec.replicas > 1;
    w.reconcile(move |mut api| async move {
        if cluster_mode {
            api.expect_apply(&path::config_map()).await;
        }
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
}

/// A reconcile that writes nothing but status.
async fn status_only(w: &mut World) -> Step {
    let cr = w.sq.to_json();
    w.reconcile(move |mut api| async move {
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
}

/// A reconcile that reissues or republishes `<n>-tls`: its apply, the StatefulSet's (when the
/// pods must restart), the status.
async fn republish(w: &mut World, sts: bool) -> Step {
    let cr = w.sq.to_json();
    w.reconcile(move |mut api| async move {
        api.expect_apply(&tls_path()).await;
        if sts {
            api.expect_apply(&path::statefulset()).await;
        }
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
}

// ===== 1. first reconcile ======================================================================

#[tokio::test]
async fn first_reconcile_creates_the_ca_then_applies_the_serving_certificate_with_the_children() {
    let mut w = World::new(sq3(), t0());
    let step = first_reconcile(&mut w).await;
    assert_eq!(
        step.action(),
        Action::requeue(RESYNC),
        "renewal is months away: the resync cap"
    );

    // Two creates: the API keys, then the CA.
    let posts: Vec<&Value> = step
        .t
        .log
        .iter()
        .filter(|l| l.method == Method::POST)
        .map(|l| &l.body)
        .collect();
    assert_eq!(posts.len(), 2);
    let ca_secret = posts[1];
    assert_eq!(ca_secret["metadata"]["name"], ca_name());
    assert_eq!(ca_secret["type"], "Opaque");
    assert_eq!(ca_secret["metadata"]["labels"][LABEL_INSTANCE], NAME);
    assert_eq!(ca_secret["metadata"]["ownerReferences"][0]["uid"], CR_UID);
    let ca_data = data_of(ca_secret);
    assert_eq!(
        ca_data.keys().collect::<Vec<_>>(),
        [TLS_CRT, TLS_KEY],
        "the CA Secret holds the CA certificate and key only"
    );
    let ca = CaMaterial::from_secret_data(&ca_data).expect("a usable CA");
    assert!(ca.cert().info().is_ca);
    assert_eq!(ca.cert().not_after(), t0() + CA_LIFETIME);
    assert!(
        !step
            .t
            .log
            .iter()
            .any(|l| l.path == ca_path() && l.is_write()),
        "the CA is created, never applied or replaced:\n{}",
        step.t.summary()
    );

    // <n>-tls: a kubernetes.io/tls Secret with the leaf, its key and the trust bundle.
    let tls = step.tls();
    assert_eq!(tls["type"], "kubernetes.io/tls");
    assert_eq!(tls["metadata"]["ownerReferences"][0]["uid"], CR_UID);
    assert_eq!(
        annotation(tls, ROLLOVER_PHASE_ANNOTATION),
        Some("Stable"),
        "the phase is recorded with the material"
    );
    let data = data_of(tls);
    assert_eq!(data.keys().collect::<Vec<_>>(), [CA_CRT, TLS_CRT, TLS_KEY]);
    assert_eq!(
        ders(&certs(&data, CA_CRT)),
        ders(&[ca.cert().clone()]),
        "the bundle is the CA"
    );
    let leaf = leaf_of(&data);
    assert!(!leaf.info().is_ca);
    assert_eq!(leaf.not_after(), t0() + LEAF_LIFETIME);
    for name in [
        "*.vectors-headless.search.svc",
        "*.vectors-headless.search.svc.cluster.local",
        "vectors",
        "vectors.search",
        "vectors.search.svc",
        "vectors.search.svc.cluster.local",
        "vectors-headless.search.svc",
    ] {
        assert!(
            leaf.info().dns_names.iter().any(|n| n == name),
            "{name} missing from {:?}",
            leaf.info().dns_names
        );
    }
    // The names peers and clients dial verify against ca.crt (rustls, at the injected time).
    for host in [
        "vectors-0.vectors-headless.search.svc",
        "vectors-2.vectors-headless.search.svc.cluster.local",
        "vectors.search.svc",
    ] {
        verify_peer(&data, host, t0() + HOUR).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert!(
        verify_peer(&data, "vectors.other.svc", t0() + HOUR).is_err(),
        "a name the certificate does not carry must fail (the check can fail)"
    );

    // The StatefulSet mounts it, carries its fingerprint, and peers dial https.
    let sts = step.sts();
    assert_eq!(
        template_annotation(sts, TLS_FINGERPRINT_ANNOTATION),
        fingerprint_of(&data, Phase::Stable)
    );
    let pod = &sts["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == tls_name())
        .expect("the TLS Secret is mounted");
    assert!(volume["secret"]["items"].is_null(), "as a whole directory");
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let env_value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .as_str()
            .unwrap()
    };
    assert_eq!(
        env_value(qdrant_env::URI),
        "https://$(POD_NAME).vectors-headless.search.svc:6335"
    );
    assert_eq!(
        env_value(qdrant_env::BOOTSTRAP),
        "https://vectors-0.vectors-headless.search.svc:6335"
    );
    assert!(
        step.sent(Method::PATCH, &path::config_map())["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("enable_tls: true")
    );

    // Status: the certificate's times and CertificateReady.
    let patch = step.status();
    let status = status_in(patch);
    let cert = status.certificate.as_ref().expect("status.certificate");
    let not_after = t0() + LEAF_LIFETIME;
    assert_eq!(cert.not_after.as_deref(), Some(rfc3339(not_after).as_str()));
    assert_eq!(
        cert.renewal_time.as_deref(),
        Some(rfc3339(leaf_renewal(not_after)).as_str())
    );
    assert_eq!(
        cert.ca_not_after.as_deref(),
        Some(rfc3339(t0() + CA_LIFETIME).as_str())
    );
    let (ready, reason, _) = condition(patch, "CertificateReady");
    assert_eq!((ready, reason), ("True", "Valid"));
    assert!(!has_condition(patch, "TLSDisabled"));
    let secrets = status.secrets.as_ref().unwrap();
    assert_eq!(secrets.tls.as_deref(), Some("vectors-tls"));
    assert_eq!(secrets.ca.as_deref(), Some("vectors-ca"));
    assert_eq!(
        status.endpoints.as_ref().unwrap().rest,
        "https://vectors.search.svc:6333"
    );

    // Events: credentials, the CA, the certificate; no warning about TLS.
    assert_eq!(
        step.reasons(),
        ["CredentialsGenerated", "CAIssued", "CertificateIssued"]
    );
    assert_eq!(step.event("CAIssued").0, EventType::Normal);
    assert_eq!(step.event("CertificateIssued").0, EventType::Normal);
    assert!(step.event("CertificateIssued").2.contains("vectors-tls"));

    // No key material anywhere but the two Secrets that hold it.
    let keys = private_keys(&step.t);
    assert_eq!(keys.len(), 2, "the CA key and the serving key");
    for l in &step.t.log {
        let name = &l.body["metadata"]["name"];
        if l.body["kind"] == "Secret" && (*name == ca_name() || *name == tls_name()) {
            continue;
        }
        assert_no_key_material(&l.describe(), &l.body.to_string(), &keys);
    }
    for (_, reason, note) in &step.events {
        assert_no_key_material(reason, note, &keys);
    }
}

// ===== 2. nothing changed ======================================================================

#[tokio::test]
async fn a_second_reconcile_over_what_the_first_wrote_sends_no_request() {
    let mut w = World::new(sq3(), t0());
    first_reconcile(&mut w).await.action();
    w.set_now(t0() + HOUR);
    let step = w.reconcile(|api| async move { api }).await;
    assert!(step.t.log.is_empty(), "{}", step.t.summary());
    assert!(step.events.is_empty(), "{:?}", step.events);
    assert_eq!(step.action(), Action::requeue(RESYNC));
    // The same after an operator restart (caches listed afresh, no GET).
    let mut w = World::restore(w.snapshot(), t0() + HOUR);
    let step = w.reconcile(|api| async move { api }).await;
    assert!(step.t.log.is_empty(), "{}", step.t.summary());
}

#[tokio::test]
async fn an_unchanged_instance_sends_no_request_and_requeues_for_its_renewal_time() {
    let w = settled(sq3()).await;
    let renewal = parse_time(
        w.sq.status
            .as_ref()
            .unwrap()
            .certificate
            .as_ref()
            .unwrap()
            .renewal_time
            .as_deref()
            .unwrap(),
    );
    assert_eq!(renewal, leaf_renewal(t0() + LEAF_LIFETIME));
    let mut w = w;

    // Months before renewal: nothing to do, looked at again within the resync interval.
    let quiet = w.reconcile(|api| async move { api }).await;
    assert!(quiet.t.log.is_empty(), "{}", quiet.t.summary());
    assert_eq!(quiet.action(), Action::requeue(RESYNC));
    assert!(quiet.events.is_empty(), "{:?}", quiet.events);
    // Once read, the Secrets are not read again while they stay as they are: what the TLS and
    // credentials steps derived from them is remembered (no value), until the renewal is due.
    let again = w.reconcile(|api| async move { api }).await;
    assert!(again.t.log.is_empty(), "{}", again.t.summary());
    assert!(again.t.reads.is_empty(), "{}", again.t.summary());
    assert_eq!(again.action(), Action::requeue(RESYNC));

    // Inside the resync interval: the requeue is exactly the time left until renewal.
    for left in [
        SignedDuration::from_mins(7),
        SignedDuration::from_secs(61),
        SignedDuration::from_secs(1),
    ] {
        w.set_now(renewal - left);
        let step = w.reconcile(|api| async move { api }).await;
        assert!(step.t.log.is_empty(), "{}", step.t.summary());
        assert!(step.t.reads.is_empty(), "{}", step.t.summary());
        assert_eq!(
            step.action(),
            Action::requeue(secs(left)),
            "{left:?} before"
        );
        assert!(step.events.is_empty());
    }
    // At the renewal time the remembered decision is due: the Secrets are read again.
    w.set_now(renewal);
    let due = republish(&mut w, true).await;
    assert!(
        due.t.reads.iter().any(|r| r.ends_with(&tls_name())),
        "{}",
        due.t.summary()
    );
}

// ===== 3. renewal at renewalTime, not before ===================================================

#[tokio::test]
async fn the_serving_certificate_is_renewed_at_its_renewal_time_and_not_a_second_before() {
    let mut w = settled(sq3()).await;
    let old_tls = w.secret_data(&tls_name());
    let old_leaf = leaf_of(&old_tls);
    let ca_before = w.secret(&ca_name()).clone();
    let old_sts = w.sts().clone();
    let renewal = leaf_renewal(old_leaf.not_after());

    w.set_now(renewal - SignedDuration::from_secs(1));
    let before = w.reconcile(|api| async move { api }).await;
    assert!(before.t.log.is_empty(), "{}", before.t.summary());
    assert_eq!(before.action(), Action::requeue(Duration::from_secs(1)));

    w.set_now(renewal);
    let step = republish(&mut w, true).await;
    let data = data_of(step.tls());
    let leaf = leaf_of(&data);
    assert_ne!(leaf.der(), old_leaf.der(), "a new serving certificate");
    assert_ne!(leaf.info().serial, old_leaf.info().serial);
    assert_ne!(data[TLS_KEY], old_tls[TLS_KEY], "with a new key");
    assert_eq!(leaf.not_after(), renewal + LEAF_LIFETIME);
    assert_eq!(data[CA_CRT], old_tls[CA_CRT], "the same CA");
    assert_eq!(w.secret(&ca_name()), &ca_before, "the CA is not written");
    verify_peer(&data, "vectors-1.vectors-headless.search.svc", renewal).unwrap();
    assert_eq!(
        annotation(step.tls(), ROLLOVER_PHASE_ANNOTATION),
        Some("Stable")
    );

    // The pods roll: a new fingerprint and restart hash.
    let sts = step.sts();
    assert_eq!(
        template_annotation(sts, TLS_FINGERPRINT_ANNOTATION),
        fingerprint_of(&data, Phase::Stable)
    );
    assert_ne!(
        template_annotation(sts, TLS_FINGERPRINT_ANNOTATION),
        template_annotation(&old_sts, TLS_FINGERPRINT_ANNOTATION)
    );
    assert_ne!(
        template_annotation(sts, RESTART_HASH),
        template_annotation(&old_sts, RESTART_HASH)
    );

    let cert = status_in(step.status()).certificate.unwrap();
    assert_eq!(cert.not_after, Some(rfc3339(renewal + LEAF_LIFETIME)));
    assert_eq!(
        cert.renewal_time,
        Some(rfc3339(leaf_renewal(renewal + LEAF_LIFETIME)))
    );
    assert_eq!(step.reasons(), ["CertificateRenewed"]);
    assert_eq!(step.event("CertificateRenewed").0, EventType::Normal);
    assert_eq!(step.action(), Action::requeue(RESYNC));
    assert_no_key_material(
        "the renewal Event",
        &step.events[0].2,
        &private_keys(&step.t),
    );

    // Renewed once: while the pods roll, only status changes (Progressing); then nothing.
    let rolling = status_only(&mut w).await;
    assert_eq!(rolling.status()["status"]["phase"], "Progressing");
    assert!(rolling.events.is_empty());
    w.roll_out();
    let ready = status_only(&mut w).await;
    assert_eq!(ready.status()["status"]["phase"], "Ready");
    let again = w.reconcile(|api| async move { api }).await;
    assert!(again.t.log.is_empty(), "{}", again.t.summary());
}

// ===== 4. found expired ========================================================================

#[tokio::test]
async fn a_serving_certificate_found_expired_is_replaced_at_once() {
    let mut w = settled(sq3()).await;
    let ca_before = w.secret(&ca_name()).clone();
    let old = leaf_of(&w.secret_data(&tls_name()));
    // The operator was down for three months: the certificate expired, the CA did not.
    let now = old.not_after() + SignedDuration::from_hours(24 * 90);
    w.set_now(now);
    let step = republish(&mut w, true).await;
    let data = data_of(step.tls());
    let leaf = leaf_of(&data);
    assert!(leaf.valid_at(now));
    assert_eq!(leaf.not_after(), now + LEAF_LIFETIME);
    verify_peer(&data, "vectors.search.svc", now).unwrap();
    assert_eq!(
        w.secret(&ca_name()),
        &ca_before,
        "the CA is still valid: kept"
    );
    assert_eq!(step.reasons(), ["CertificateRenewed"]);
    assert!(step.event("CertificateRenewed").2.contains("Expired"));
    let (ready, reason, _) = condition(step.status(), "CertificateReady");
    assert_eq!((ready, reason), ("True", "Valid"));
}

#[tokio::test]
async fn a_ca_found_expired_is_renewed_on_the_same_key_at_once_and_the_leaf_with_it() {
    let mut w = settled(sq3()).await;
    let old_ca = w.ca();
    let old_ca_key = w.secret_data(&ca_name())[TLS_KEY].clone();
    let version = w.version_of("Secret", &ca_name());
    // Down for more than a year: the CA and the certificate both expired.
    let now = old_ca.not_after() + SignedDuration::from_hours(24 * 60);
    w.set_now(now);
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            // A compare-and-swap update on the version read, never a create.
            api.expect_replace(&ca_path(), &version).await;
            api.expect_apply(&tls_path()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    let put = step.sent(Method::PUT, &ca_path());
    let ca_data = data_of(put);
    assert_eq!(ca_data[TLS_KEY], old_ca_key, "the same key");
    let new_ca = certs(&ca_data, TLS_CRT).remove(0);
    assert!(new_ca.same_key(&old_ca), "the same public key");
    assert_eq!(new_ca.info().subject_der, old_ca.info().subject_der);
    assert!(new_ca.valid_at(now));
    assert_eq!(new_ca.not_after(), now + CA_LIFETIME);

    let data = data_of(step.tls());
    assert_eq!(
        ders(&certs(&data, CA_CRT)),
        ders(std::slice::from_ref(&new_ca)),
        "same key: no rollover, the renewed CA alone"
    );
    assert_eq!(
        annotation(step.tls(), ROLLOVER_PHASE_ANNOTATION),
        Some("Stable")
    );
    verify_peer(&data, "vectors-0.vectors-headless.search.svc", now).unwrap();
    assert_eq!(step.reasons(), ["CARenewed", "CertificateRenewed"]);
    let cert = status_in(step.status()).certificate.unwrap();
    assert_eq!(cert.ca_not_after, Some(rfc3339(now + CA_LIFETIME)));
    assert_eq!(cert.not_after, Some(rfc3339(now + LEAF_LIFETIME)));
}

#[tokio::test]
async fn the_ca_is_renewed_on_the_same_key_when_due_while_leaves_renew_on_their_own_schedule() {
    let mut w = settled(sq3()).await;
    let first_ca = w.ca();
    let ca_due = ca_renewal(first_ca.not_after());
    // Follow the operator's own requeue through every leaf renewal until the CA is due.
    let mut renewals = 0;
    loop {
        let status = w.sq.status.clone().unwrap();
        let next = parse_time(status.certificate.unwrap().renewal_time.as_deref().unwrap());
        if next >= ca_due {
            break;
        }
        w.set_now(next);
        let step = republish(&mut w, true).await;
        assert_eq!(step.reasons(), ["CertificateRenewed"]);
        assert_eq!(w.ca().der(), first_ca.der(), "the CA is not touched yet");
        // The status written with the renewal already shows the pods ready (the rollout is
        // seen by the next reconcile); once rolled out, nothing changes.
        w.roll_out();
        let quiet = w.reconcile(|api| async move { api }).await;
        assert!(quiet.t.log.is_empty(), "{}", quiet.t.summary());
        renewals += 1;
    }
    assert_eq!(
        renewals, 4,
        "1440h, 2880h, 4320h and 5760h after the start, minus jitter"
    );

    w.set_now(ca_due - SignedDuration::from_secs(1));
    let before = w.reconcile(|api| async move { api }).await;
    assert!(before.t.log.is_empty(), "{}", before.t.summary());
    assert_eq!(before.action(), Action::requeue(Duration::from_secs(1)));

    w.set_now(ca_due);
    let version = w.version_of("Secret", &ca_name());
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_replace(&ca_path(), &version).await;
            api.expect_apply(&tls_path()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    let renewed = w.ca();
    assert!(renewed.same_key(&first_ca), "renewed on the same key");
    assert_ne!(renewed.der(), first_ca.der());
    assert_eq!(renewed.not_after(), ca_due + CA_LIFETIME);
    assert_eq!(step.reasons(), ["CARenewed", "CertificateRenewed"]);
    let data = w.secret_data(&tls_name());
    assert_eq!(ders(&certs(&data, CA_CRT)), ders(&[renewed]));
    assert_eq!(w.phase(), "Stable");
    verify_peer(&data, "vectors.search.svc", ca_due).unwrap();
}

// ===== the CA Secret is never regenerated while usable =========================================

#[tokio::test]
async fn an_existing_ca_missing_from_the_cache_is_read_and_used_not_regenerated() {
    let now = t0();
    let existing = issue_ca(&CaSubject::new(NS, NAME), CA_LIFETIME, now - DAY).unwrap();
    let sq = sq3();
    // <n>-ca as the operator wrote it before, but the cache has not seen it yet.
    let mut ca_secret = user_secret(&ca_name(), "Opaque", existing.to_secret_data());
    ca_secret["metadata"]["labels"] = json!({LABEL_MANAGED_BY: MANAGER, LABEL_INSTANCE: NAME});
    // Controlled by the instance, as the operator writes it (anything else is not written to).
    ca_secret["metadata"]["ownerReferences"] = json!([sq
        .controller_owner_ref(&())
        .expect("the instance has a uid")]);
    let ca_secret = as_stored(&ca_secret);
    let mut w = World::new(sq, now);
    let cr = w.sq.to_json();
    let answer = ca_secret.clone();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_get(&ca_path(), &answer).await;
            api.expect_get_missing(&tls_path()).await;
            expect_children(&mut api, true, true).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    step.action();
    assert!(
        !step
            .t
            .log
            .iter()
            .any(|l| l.path == ca_path() && l.is_write())
            && step
                .t
                .log
                .iter()
                .filter(|l| l.method == Method::POST)
                .count()
                == 1,
        "the existing CA is not written:\n{}",
        step.t.summary()
    );
    let data = data_of(step.tls());
    assert!(leaf_of(&data).is_signed_by(existing.cert()));
    assert_eq!(
        ders(&certs(&data, CA_CRT)),
        ders(&[existing.cert().clone()])
    );
    assert_eq!(
        step.reasons(),
        ["CredentialsGenerated", "CertificateIssued"]
    );
}

#[tokio::test]
async fn a_ca_create_that_loses_a_race_fails_and_publishes_nothing_signed_by_it() {
    let mut w = World::new(sq3(), t0());
    let cr = w.sq.to_json();
    let step = w
        .reconcile_refusing(Some(&path::secrets()), move |mut api| async move {
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_get_missing(&ca_path()).await;
            api.expect_get_missing(&tls_path()).await;
            api.expect_create_conflict(&path::secrets()).await;
            let status = api.expect_status_patch(&path::status(), &cr).await;
            assert_eq!(condition(&status, "Reconciled").0, "False");
            api
        })
        .await;
    let err = step.result.as_ref().expect_err("the race is reported");
    assert!(
        matches!(err, Error::SecretRace(name) if name == "vectors-ca"),
        "{err:?}"
    );
    assert!(
        !step
            .t
            .log
            .iter()
            .any(|l| l.path == tls_path() && l.is_write()),
        "nothing signed by a CA that was not stored is published"
    );
    assert!(
        !step.reasons().contains(&"CAIssued"),
        "no Event for a CA that was not stored: {:?}",
        step.events
    );
}

#[tokio::test]
async fn a_ca_update_that_loses_a_race_fails_and_publishes_nothing_signed_by_it() {
    let mut w = settled(sq3()).await;
    w.sq = with_annotation(w.sq.clone(), ROTATE_CA_ANNOTATION, "r1");
    let version = w.version_of("Secret", &ca_name());
    let ca_before = w.secret(&ca_name()).clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile_refusing(Some(&ca_path()), move |mut api| async move {
            let call = api.expect(Method::PUT, &ca_path()).await;
            assert_eq!(call.request.body["metadata"]["resourceVersion"], version);
            call.respond(
                http::StatusCode::CONFLICT,
                &status_failure(
                    "the object has been modified; please apply your changes to the latest version",
                    409,
                    "Conflict",
                ),
            );
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    let err = step.result.as_ref().expect_err("the conflict is reported");
    assert!(err.to_string().contains("vectors-ca"), "{err}");
    assert_eq!(w.secret(&ca_name()), &ca_before);
    assert!(
        !step.reasons().iter().any(|r| r.starts_with("CA")),
        "no CA Event for a write that failed: {:?}",
        step.events
    );
    assert_no_key_material(
        "the error",
        &format!("{err} {err:?}"),
        &private_keys(&step.t),
    );
}

// ===== 5. CA key rollover ======================================================================

/// What each phase of a rollover from CA `a` to CA `b` publishes.
fn assert_phase(w: &World, phase: &str, bundle: &[&Certificate], signer: &Certificate) {
    assert_eq!(w.phase(), phase);
    let data = w.secret_data(&tls_name());
    let expected: Vec<Certificate> = bundle.iter().map(|c| (*c).clone()).collect();
    assert_eq!(
        ders(&certs(&data, CA_CRT)),
        ders(&expected),
        "the trust bundle of {phase}"
    );
    assert!(
        leaf_of(&data).is_signed_by(signer),
        "the serving certificate of {phase} comes from the expected CA"
    );
    verify_peer(&data, "vectors-2.vectors-headless.search.svc", w.now())
        .unwrap_or_else(|e| panic!("{phase}: {e}"));
    assert_eq!(
        template_annotation(w.sts(), TLS_FINGERPRINT_ANNOTATION),
        fingerprint_of(&data, phase.parse().unwrap()),
        "the pod template carries what {phase} published"
    );
}

/// Reconciles while the rollout of the current phase is in progress: only status changes
/// (Progressing), then nothing; the phase stays; the short rollover poll.
async fn assert_waits_for_rollout(w: &mut World) {
    let phase = w.phase();
    let tls = w.secret(&tls_name()).clone();
    let step = status_only(w).await;
    assert_eq!(step.status()["status"]["phase"], "Progressing");
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    assert!(step.events.is_empty(), "{:?}", step.events);
    let step = w.reconcile(|api| async move { api }).await;
    assert!(step.t.log.is_empty(), "{}", step.t.summary());
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    assert_eq!(w.phase(), phase);
    assert_eq!(w.secret(&tls_name()), &tls);
}

#[tokio::test]
async fn a_ca_key_rollover_walks_every_phase_only_after_each_rollout_and_resumes_after_restarts() {
    let mut w = settled(sq3()).await;
    let a = w.ca();
    let a_key = w.secret_data(&ca_name())[TLS_KEY].clone();
    w.set_now(t0() + DAY);
    w.sq = with_annotation(w.sq.clone(), ROTATE_CA_ANNOTATION, "2026-03-02");
    // (next phase, state): rolled out and ready to advance...
    let mut snapshots: Vec<(String, Snapshot)> = Vec::new();
    // ...and (phase, state) just published, pods not rolled yet.
    let mut rolling: Vec<(String, Snapshot)> = Vec::new();

    // TrustBoth: a new key in <n>-ca (compare-and-swap), trust in old and new, old leaves kept.
    let version = w.version_of("Secret", &ca_name());
    let old_leaf = leaf_of(&w.secret_data(&tls_name()));
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_replace(&ca_path(), &version).await;
            api.expect_apply(&tls_path()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    let put = step.sent(Method::PUT, &ca_path());
    assert_eq!(
        annotation(put, CA_ROTATION_HANDLED_ANNOTATION),
        Some("2026-03-02"),
        "the request is recorded as handled, with the key"
    );
    assert_ne!(data_of(put)[TLS_KEY], a_key, "a new key");
    let b = w.ca();
    assert!(!b.same_key(&a));
    assert_eq!(leaf_of(&w.secret_data(&tls_name())).der(), old_leaf.der());
    assert_phase(&w, "TrustBoth", &[&a, &b], &a);
    assert_eq!(step.reasons(), ["CAReplaced", "CARollover"]);
    assert!(step.event("CARollover").2.contains("TrustBoth"));
    assert_eq!(
        status_in(step.status()).certificate.unwrap().ca_not_after,
        Some(rfc3339(t0() + DAY + CA_LIFETIME))
    );
    assert_no_key_material(
        "rollover Events",
        &format!("{:?}", step.events),
        &private_keys(&step.t),
    );
    rolling.push(("TrustBoth".into(), w.snapshot()));
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    snapshots.push(("SignWithNew".into(), w.snapshot()));

    // SignWithNew: every pod trusts both: leaves now come from the new CA.
    let step = republish(&mut w, true).await;
    assert_phase(&w, "SignWithNew", &[&a, &b], &b);
    assert_eq!(step.reasons(), ["CertificateRenewed", "CARollover"]);
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    rolling.push(("SignWithNew".into(), w.snapshot()));
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    snapshots.push(("DropOld".into(), w.snapshot()));

    // DropOld: every leaf is new: the old CA leaves the bundle.
    let step = republish(&mut w, true).await;
    assert_phase(&w, "DropOld", &[&b], &b);
    assert_eq!(step.reasons(), ["CARollover"]);
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    rolling.push(("DropOld".into(), w.snapshot()));
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    snapshots.push(("Stable".into(), w.snapshot()));

    // Stable: only the phase annotation changes; the pods already run this material.
    let sts_before = w.sts().clone();
    let step = republish(&mut w, false).await;
    assert_phase(&w, "Stable", &[&b], &b);
    assert_eq!(w.sts(), &sts_before, "no restart for the last step");
    assert_eq!(step.reasons(), ["CARollover"]);
    assert!(step.event("CARollover").2.contains("Finished"));
    assert_eq!(step.action(), Action::requeue(RESYNC));

    // Over: the same request is not handled twice.
    let quiet = w.reconcile(|api| async move { api }).await;
    assert!(quiet.t.log.is_empty(), "{}", quiet.t.summary());
    assert_eq!(w.ca().der(), b.der());

    // An operator restart in any phase continues from what the Secrets record.
    for (next, snapshot) in snapshots {
        let mut w = World::restore(snapshot, t0() + DAY + HOUR);
        let sts = next != "Stable";
        let step = republish(&mut w, sts).await;
        step.action();
        assert!(
            !step.t.log.iter().any(|l| l.path == ca_path()),
            "the CA is not touched after a restart"
        );
        match next.as_str() {
            "SignWithNew" => assert_phase(&w, "SignWithNew", &[&a, &b], &b),
            "DropOld" => assert_phase(&w, "DropOld", &[&b], &b),
            _ => assert_phase(&w, "Stable", &[&b], &b),
        }
    }
    // A restart while the pods of a phase still roll: it waits, then advances.
    assert_eq!(rolling.len(), 3);
    for (phase, snapshot) in rolling {
        let mut w = World::restore(snapshot, t0() + DAY + HOUR);
        assert_waits_for_rollout(&mut w).await;
        assert_eq!(w.phase(), phase);
        w.roll_out();
        let step = republish(&mut w, phase != "DropOld").await;
        assert!(!step.t.log.iter().any(|l| l.path == ca_path()));
        match phase.as_str() {
            "TrustBoth" => assert_phase(&w, "SignWithNew", &[&a, &b], &b),
            "SignWithNew" => assert_phase(&w, "DropOld", &[&b], &b),
            _ => assert_phase(&w, "Stable", &[&b], &b),
        }
    }
}

#[tokio::test]
async fn a_rollover_interrupted_between_the_ca_write_and_the_trust_bundle_resumes() {
    let mut w = settled(sq3()).await;
    let a = w.ca();
    w.set_now(t0() + DAY);
    w.sq = with_annotation(w.sq.clone(), ROTATE_CA_ANNOTATION, "r1");
    let version = w.version_of("Secret", &ca_name());
    let cr = w.sq.to_json();
    // The new CA is stored, then applying <n>-tls fails: the operator stops there.
    let step = w
        .reconcile_refusing(Some(&tls_path()), move |mut api| async move {
            api.expect_replace(&ca_path(), &version).await;
            let call = api.expect(Method::PATCH, &tls_path()).await;
            call.respond(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                &status_failure("etcdserver: request timed out", 500, "InternalError"),
            );
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    step.result.as_ref().expect_err("the apply failed");
    let b = w.ca();
    assert!(!b.same_key(&a));
    assert_eq!(w.phase(), "Stable", "<n>-tls still holds the old material");

    // A restarted operator keeps the new CA (the request is handled) and starts the rollover.
    let mut w = World::restore(w.snapshot(), t0() + DAY + HOUR);
    let step = republish(&mut w, true).await;
    assert!(
        !step.t.log.iter().any(|l| l.path == ca_path()),
        "the stored CA is kept: {}",
        step.t.summary()
    );
    assert_eq!(w.ca().der(), b.der());
    assert_phase(&w, "TrustBoth", &[&a, &b], &a);
    assert_eq!(step.reasons(), ["CARollover"]);
    w.roll_out();
    republish(&mut w, true).await;
    assert_phase(&w, "SignWithNew", &[&a, &b], &b);
}

#[tokio::test]
async fn a_rollover_interrupted_before_the_statefulset_apply_waits_for_the_new_rollout() {
    let mut w = settled(sq3()).await;
    w.set_now(t0() + DAY);
    w.sq = with_annotation(w.sq.clone(), ROTATE_CA_ANNOTATION, "r1");
    let a = w.ca();
    let cr = w.sq.to_json();
    let version = w.version_of("Secret", &ca_name());
    // TrustBoth is published, but the StatefulSet apply fails: the pods still run (rolled out,
    // ready) the Stable material.
    let step = w
        .reconcile_refusing(Some(&path::statefulset()), move |mut api| async move {
            api.expect_replace(&ca_path(), &version).await;
            api.expect_apply(&tls_path()).await;
            let call = api.expect(Method::PATCH, &path::statefulset()).await;
            call.respond(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                &status_failure("etcdserver: request timed out", 500, "InternalError"),
            );
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    step.result.as_ref().expect_err("the apply failed");
    assert_eq!(w.phase(), "TrustBoth");
    let b = w.ca();

    // After a restart: the finished rollout of the OLD material must not advance the phase;
    // the StatefulSet gets the TrustBoth fingerprint first.
    let mut w = World::restore(w.snapshot(), t0() + DAY + HOUR);
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    assert_phase(&w, "TrustBoth", &[&a, &b], &a);
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    republish(&mut w, true).await;
    assert_phase(&w, "SignWithNew", &[&a, &b], &b);
}

#[tokio::test]
async fn a_deleted_ca_secret_is_recreated_and_trust_rolls_over_with_a_warning() {
    let mut w = settled(sq3()).await;
    let a = w.ca();
    w.delete_secret(&ca_name());
    w.set_now(t0() + DAY);
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get_missing(&ca_path()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_apply(&tls_path()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    let b = w.ca();
    assert!(!b.same_key(&a));
    assert_phase(&w, "TrustBoth", &[&a, &b], &a);
    assert_eq!(step.reasons(), ["CAReplaced", "CARollover"]);
    assert_eq!(step.event("CAReplaced").0, EventType::Warning);
}

// ===== 6. bring your own CA or certificate =====================================================

fn with_ca_ref(mut sq: SecureQdrant, name: &str) -> SecureQdrant {
    sq.spec.tls.ca_secret_ref = Some(SecretRef {
        name: name.to_owned(),
    });
    sq
}

fn with_certificate_ref(mut sq: SecureQdrant, name: &str) -> SecureQdrant {
    sq.spec.tls.certificate_secret_ref = Some(SecretRef {
        name: name.to_owned(),
    });
    sq
}

#[tokio::test]
async fn a_users_ca_signs_the_serving_certificate_and_is_never_written() {
    let corp = user_ca(t0() - DAY, CA_LIFETIME);
    let mut w = World::new(with_ca_ref(sq3(), "corp-ca"), t0());
    w.put_user_secret(user_secret("corp-ca", "Opaque", corp.to_secret_data()));
    let corp_path = path::secret("corp-ca");
    let answer = w.secret("corp-ca").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            // The references are checked before anything is written.
            api.expect_get(&corp_path, &answer).await;
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            // The user's Secret is not cached (not labelled as the operator's): read it.
            api.expect_get(&corp_path, &answer).await;
            api.expect_get_missing(&tls_path()).await;
            expect_children(&mut api, true, true).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    step.action();
    assert!(
        !step
            .t
            .log
            .iter()
            .any(|l| l.is_write() && (l.path.contains("corp-ca") || l.path == ca_path())),
        "neither the user's CA nor an operator CA is written:\n{}",
        step.t.summary()
    );
    assert_eq!(
        step.t
            .log
            .iter()
            .filter(|l| l.method == Method::POST)
            .count(),
        1,
        "only the API keys are created"
    );
    let data = data_of(step.tls());
    assert!(leaf_of(&data).is_signed_by(corp.cert()));
    assert_eq!(ders(&certs(&data, CA_CRT)), ders(&[corp.cert().clone()]));
    verify_peer(&data, "vectors-1.vectors-headless.search.svc", t0()).unwrap();
    let status = status_in(step.status());
    assert_eq!(
        status.certificate.unwrap().ca_not_after,
        Some(rfc3339(corp.cert().not_after()))
    );
    assert_eq!(status.secrets.unwrap().ca, None, "no operator CA Secret");
    assert_eq!(
        step.reasons(),
        ["CredentialsGenerated", "CertificateIssued"]
    );

    // Re-read on every reconcile (not watched); nothing written while it is unchanged (after
    // the formation of the cluster is recorded in `<n>-config`).
    w.roll_out();
    let answer = w.secret("corp-ca").clone();
    let cr = w.sq.to_json();
    w.reconcile(move |mut api| async move {
        api.expect_get(&path::secret("corp-ca"), &answer).await;
        api.expect_get(&path::secret("corp-ca"), &answer).await;
        api.expect_apply(&path::config_map()).await;
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
    .action();
    let answer = w.secret("corp-ca").clone();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-ca"), &answer).await;
            api.expect_get(&path::secret("corp-ca"), &answer).await;
            api
        })
        .await;
    assert_eq!(step.t.writes(), Vec::<String>::new());

    // The user swaps in a CA with another key: trust rolls over, their Secret still untouched.
    let corp2 = user_ca(t0(), CA_LIFETIME);
    w.put_user_secret(user_secret("corp-ca", "Opaque", corp2.to_secret_data()));
    w.set_now(t0() + DAY);
    let answer = w.secret("corp-ca").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-ca"), &answer).await;
            api.expect_get(&path::secret("corp-ca"), &answer).await;
            api.expect_apply(&tls_path()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    assert_phase(&w, "TrustBoth", &[corp.cert(), corp2.cert()], corp.cert());
    assert_eq!(step.reasons(), ["CARollover"]);
}

#[tokio::test]
async fn a_users_ca_that_is_missing_or_expired_fails_the_reconcile_and_nothing_is_written() {
    // Missing.
    let mut w = World::new(with_ca_ref(sq3(), "corp-ca"), t0());
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            // The references are checked before anything is written.
            api.expect_get_missing(&path::secret("corp-ca")).await;
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_get_missing(&path::secret("corp-ca")).await;
            api.expect_get_missing(&tls_path()).await;
            let status = api.expect_status_patch(&path::status(), &cr).await;
            assert_eq!(condition(&status, "Reconciled").1, "TlsFailed");
            api
        })
        .await;
    let err = step.result.as_ref().expect_err("no CA to sign with");
    assert!(err.to_string().contains("corp-ca"), "{err}");

    // Expired.
    let corp = user_ca(
        t0() - SignedDuration::from_hours(3000),
        LEAF_LIFETIME + HOUR,
    );
    let mut w = World::new(with_ca_ref(sq3(), "corp-ca"), t0());
    w.put_user_secret(user_secret("corp-ca", "Opaque", corp.to_secret_data()));
    let answer = w.secret("corp-ca").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            // The references are checked before anything is written.
            api.expect_get(&path::secret("corp-ca"), &answer).await;
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_get(&path::secret("corp-ca"), &answer).await;
            api.expect_get_missing(&tls_path()).await;
            let status = api.expect_status_patch(&path::status(), &cr).await;
            let (_, reason, message) = condition(&status, "Reconciled");
            assert_eq!(reason, "TlsFailed");
            assert!(
                message.contains("corp-ca") && message.contains("expired"),
                "{message}"
            );
            api
        })
        .await;
    let err = step.result.as_ref().expect_err("an expired CA cannot sign");
    let keys = vec![String::from_utf8(corp.to_secret_data()[TLS_KEY].0.clone()).unwrap()];
    assert_no_key_material("the error", &format!("{err} {err:?}"), &keys);
    assert_no_key_material("the status", &step.status().to_string(), &keys);
    assert_no_key_material("the Events", &format!("{:?}", step.events), &keys);
}

#[tokio::test]
async fn a_users_certificate_is_mounted_not_issued_and_a_change_to_it_rolls_the_pods() {
    let corp = user_ca(t0() - DAY, CA_LIFETIME);
    let cert = user_certificate(&corp, t0() - DAY, LEAF_LIFETIME);
    let mut w = World::new(with_certificate_ref(sq3(), "corp-tls"), t0());
    w.put_user_secret(user_secret("corp-tls", "kubernetes.io/tls", cert.clone()));
    let answer = w.secret("corp-tls").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            // The references are checked before anything is written.
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            // Only the user's Secret is read: no operator CA, no <n>-tls.
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            expect_children(&mut api, true, false).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(EXTERNAL_POLL));
    assert!(
        !step
            .t
            .log
            .iter()
            .any(|l| l.path.contains("corp-tls") && l.is_write()),
        "the user's certificate is never written"
    );
    let sts = step.sts();
    let volume = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("a TLS volume");
    assert_eq!(volume["secret"]["secretName"], "corp-tls");
    let first_fp = template_annotation(sts, TLS_FINGERPRINT_ANNOTATION).to_owned();
    let first_hash = template_annotation(sts, RESTART_HASH).to_owned();
    let status = status_in(step.status());
    let not_after = leaf_of(&cert).not_after();
    let c = status.certificate.as_ref().unwrap();
    assert_eq!(c.not_after, Some(rfc3339(not_after)));
    assert_eq!(c.renewal_time, Some(rfc3339(not_after - LEAF_RENEW_BEFORE)));
    assert_eq!(c.ca_not_after, Some(rfc3339(corp.cert().not_after())));
    assert_eq!(
        status.secrets.as_ref().unwrap().tls.as_deref(),
        Some("corp-tls")
    );
    assert_eq!(status.secrets.as_ref().unwrap().ca, None);
    assert_eq!(condition(step.status(), "CertificateReady").1, "Valid");
    assert_eq!(
        step.reasons(),
        ["CredentialsGenerated"],
        "nothing was issued"
    );

    // Unchanged: read, nothing written (but the formation of the cluster and the status).
    w.roll_out();
    let answer = w.secret("corp-tls").clone();
    let cr = w.sq.to_json();
    w.reconcile(move |mut api| async move {
        api.expect_get(&path::secret("corp-tls"), &answer).await;
        api.expect_get(&path::secret("corp-tls"), &answer).await;
        api.expect_apply(&path::config_map()).await;
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
    .action();
    let answer = w.secret("corp-tls").clone();
    let quiet = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api
        })
        .await;
    assert_eq!(quiet.t.writes(), Vec::<String>::new());

    // cert-manager renews it: the pods roll with a new fingerprint.
    w.set_now(t0() + DAY * 30);
    let renewed = user_certificate(&corp, t0() + DAY * 30, LEAF_LIFETIME);
    w.put_user_secret(user_secret(
        "corp-tls",
        "kubernetes.io/tls",
        renewed.clone(),
    ));
    let answer = w.secret("corp-tls").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    step.action();
    let sts = step.sts();
    assert_ne!(
        template_annotation(sts, TLS_FINGERPRINT_ANNOTATION),
        first_fp
    );
    assert_ne!(template_annotation(sts, RESTART_HASH), first_hash);
    assert_eq!(
        status_in(step.status()).certificate.unwrap().not_after,
        Some(rfc3339(leaf_of(&renewed).not_after()))
    );
    assert!(step.events.is_empty(), "{:?}", step.events);
}

#[tokio::test]
async fn a_users_certificate_inside_renew_before_is_expiring_soon_then_expired() {
    let corp = user_ca(t0() - DAY, CA_LIFETIME);
    let cert = user_certificate(&corp, t0(), LEAF_LIFETIME);
    let not_after = leaf_of(&cert).not_after();
    let warn_at = not_after - LEAF_RENEW_BEFORE;
    let mut w = World::new(with_certificate_ref(sq3(), "corp-tls"), warn_at - HOUR);
    w.put_user_secret(user_secret("corp-tls", "kubernetes.io/tls", cert));
    let answer = w.secret("corp-tls").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            // The references are checked before anything is written.
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            expect_children(&mut api, true, false).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(condition(step.status(), "CertificateReady").0, "True");
    assert_eq!(step.action(), Action::requeue(EXTERNAL_POLL));

    // A minute before the warning: the requeue lands on it.
    w.set_now(warn_at - SignedDuration::from_mins(1));
    let answer = w.secret("corp-tls").clone();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(Duration::from_secs(60)));

    // Inside renewBefore: CertificateReady False, ExpiringSoon; the user's Secret is re-read
    // at the external poll, not in a tight loop.
    w.set_now(warn_at);
    let answer = w.secret("corp-tls").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    let (ready, reason, message) = condition(step.status(), "CertificateReady");
    assert_eq!((ready, reason), ("False", "ExpiringSoon"));
    assert!(message.contains("corp-tls"), "{message}");
    assert_eq!(step.action(), Action::requeue(EXTERNAL_POLL));

    // Two minutes before expiry: the requeue lands on the expiry.
    w.set_now(not_after - SignedDuration::from_mins(2));
    let answer = w.secret("corp-tls").clone();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(Duration::from_secs(120)));

    w.set_now(not_after);
    let answer = w.secret("corp-tls").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_get(&path::secret("corp-tls"), &answer).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(condition(step.status(), "CertificateReady").1, "Expired");
    assert_eq!(step.action(), Action::requeue(EXTERNAL_POLL));
}

// ===== 7. TLS disabled =========================================================================

#[tokio::test]
async fn tls_disabled_shows_a_warning_condition_and_one_event_and_touches_no_tls_secret() {
    let mut w = World::new(SecureQdrant::test().replicas(3), t0());
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            expect_children(&mut api, true, false).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(step.action(), Action::requeue(RESYNC));
    assert!(
        !step
            .t
            .log
            .iter()
            .any(|l| l.path == ca_path() || l.path == tls_path()),
        "{}",
        step.t.summary()
    );
    let patch = step.status();
    assert_eq!(
        condition(patch, "TLSDisabled"),
        ("True", "TLSDisabledBySpec", TLS_DISABLED_MESSAGE)
    );
    assert!(!has_condition(patch, "CertificateReady"));
    assert!(patch["status"]["certificate"].is_null());
    assert_eq!(
        status_in(patch).endpoints.unwrap().rest,
        "http://vectors.search.svc:6333"
    );
    let warnings: Vec<_> = step
        .events
        .iter()
        .filter(|(t, _, _)| *t == EventType::Warning)
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", step.events);
    assert_eq!(warnings[0].1, "TLSDisabled");

    // Later reconciles keep the condition and do not repeat the Event.
    w.roll_out();
    let step = after_first_roll_out(&mut w).await;
    assert_eq!(condition(step.status(), "TLSDisabled").0, "True");
    assert!(step.events.is_empty(), "{:?}", step.events);
    let quiet = w.reconcile(|api| async move { api }).await;
    assert!(quiet.t.log.is_empty() && quiet.events.is_empty());
}

#[tokio::test]
async fn turning_tls_off_on_a_cluster_is_refused_and_writes_nothing_but_status() {
    // Peer URIs are in Qdrant's Raft state with their scheme: the pods keep running with TLS.
    let mut w = settled(sq3()).await;
    let sts = w.sts().clone();
    let (ca, tls) = (w.secret(&ca_name()).clone(), w.secret(&tls_name()).clone());
    let mut sq = w.sq.clone();
    sq.spec.tls.enabled = false;
    sq.metadata.generation = Some(2);
    w.sq = sq;
    let step = status_only(&mut w).await;
    assert_eq!(step.t.writes().len(), 1, "{}", step.t.summary());
    assert_eq!(w.sts(), &sts);
    assert_eq!((w.secret(&ca_name()), w.secret(&tls_name())), (&ca, &tls));
    let patch = step.status();
    assert_eq!(condition(patch, "Reconciled").1, "TLSChangeRefused");
    assert!(!has_condition(patch, "TLSDisabled"));
    assert_eq!(step.reasons(), ["TLSChangeRefused"]);
}

#[tokio::test]
async fn turning_tls_off_on_a_never_clustered_single_node_warns_once_and_leaves_the_tls_secrets_alone()
 {
    let mut w = settled(SecureQdrant::test().tls()).await;
    let ca = w.secret(&ca_name()).clone();
    let tls = w.secret(&tls_name()).clone();
    let mut sq = w.sq.clone();
    sq.spec.tls.enabled = false;
    sq.metadata.generation = Some(2);
    w.sq = sq;
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_apply(&path::config_map()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    step.action();
    assert_eq!(w.secret(&ca_name()), &ca);
    assert_eq!(w.secret(&tls_name()), &tls);
    let pod = &step.sts()["spec"]["template"];
    assert!(pod["metadata"]["annotations"][TLS_FINGERPRINT_ANNOTATION].is_null());
    assert!(
        !pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == tls_name())
    );
    let patch = step.status();
    assert_eq!(condition(patch, "TLSDisabled").0, "True");
    assert!(!has_condition(patch, "CertificateReady"));
    assert!(patch["status"]["certificate"].is_null());
    assert_eq!(step.reasons(), ["TLSDisabled"]);
    assert_eq!(step.events[0].0, EventType::Warning);
}

#[tokio::test]
async fn a_users_ca_without_the_opt_in_label_is_refused_before_anything_is_written() {
    let corp = user_ca(t0() - DAY, CA_LIFETIME);
    let mut w = World::new(with_ca_ref(sq3(), "corp-ca"), t0());
    w.put_user_secret(unmarked_user_secret(
        "corp-ca",
        "Opaque",
        corp.to_secret_data(),
    ));
    let corp_path = path::secret("corp-ca");
    let answer = w.secret("corp-ca").clone();
    let cr = w.sq.to_json();
    let step = w
        .reconcile(move |mut api| async move {
            api.expect_get(&corp_path, &answer).await;
            // Refused: no key Secret, no label, no certificate; only the status says why.
            let status = api.expect_status_patch(&path::status(), &cr).await;
            let (_, reason, message) = condition(&status, "Reconciled");
            assert_eq!(reason, "SecretNotAllowed");
            assert!(
                message.contains("secureqdrant.dev/allowed-instance=vectors"),
                "{message}"
            );
            api
        })
        .await;
    step.result.as_ref().expect_err("refused");
    assert_eq!(step.t.writes().len(), 1, "{}", step.t.summary());
    assert_eq!(step.reasons(), ["SecretNotAllowed"]);
}

// ===== 6. client certificates across a CA key rollover =========================================

/// The token Secret of a QdrantAccessToken of this instance, as the token controller writes it
/// (controlled by the QdrantAccessToken), holding a client certificate from `ca`.
fn token_secret_with_client_certificate(name: &str, ca: &CaMaterial, now: Timestamp) -> Value {
    let mut secret = labelled_secret_with_client_certificate(name, ca, now);
    secret["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "QdrantAccessToken",
        "name": name.trim_end_matches("-qdrant-token"),
        "uid": "5d9a8f0e-7c1b-4a2e-9f3d-2b6c8e1a4f70", "controller": true,
    }]);
    secret
}

/// A Secret with the labels of a token Secret of this instance and a client certificate from
/// `ca`, but no owner: anyone who may create Secrets can write it.
fn labelled_secret_with_client_certificate(name: &str, ca: &CaMaterial, now: Timestamp) -> Value {
    let client = issue_client(ca, &format!("{name}.{NS}"), LEAF_LIFETIME, now).unwrap();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": name, "namespace": NS,
            "labels": {
                LABEL_MANAGED_BY: MANAGER,
                LABEL_INSTANCE: NAME,
                "app.kubernetes.io/component": "access-token",
            },
        },
        "type": "Opaque",
        "data": {
            "token": STANDARD.encode("a.b.c"),
            "tls.crt": STANDARD.encode(client.cert().pem()),
            "tls.key": STANDARD.encode(client.key().expose_pem()),
        },
    })
}

/// A day later, a new CA key is asked for: the first reconcile stores it and publishes
/// TrustBoth.
async fn start_rollover(w: &mut World) {
    w.set_now(t0() + DAY);
    w.sq = with_annotation(w.sq.clone(), ROTATE_CA_ANNOTATION, "r1");
    let version = w.version_of("Secret", &ca_name());
    let cr = w.sq.to_json();
    w.reconcile(move |mut api| async move {
        api.expect_replace(&ca_path(), &version).await;
        api.expect_apply(&tls_path()).await;
        api.expect_apply(&path::statefulset()).await;
        api.expect_status_patch(&path::status(), &cr).await;
        api
    })
    .await
    .action();
    assert_eq!(w.phase(), "TrustBoth");
}

#[tokio::test]
async fn the_old_ca_leaves_the_trust_bundle_only_after_every_client_certificate_moved_to_the_new() {
    let mut sq = sq3();
    sq.spec.tls.client_certificates = true;
    let mut w = settled(sq).await;
    let a = CaMaterial::from_secret_data(&w.secret_data(&ca_name())).unwrap();
    w.store(token_secret_with_client_certificate(
        "frontend-qdrant-token",
        &a,
        w.now(),
    ));
    // TrustBoth, rolled out; SignWithNew, rolled out: the client certificate plays no part yet
    // (A is trusted throughout).
    start_rollover(&mut w).await;
    let b = CaMaterial::from_secret_data(&w.secret_data(&ca_name())).unwrap();
    assert!(!b.cert().same_key(a.cert()));
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    republish(&mut w, true).await.action();
    assert_phase(&w, "SignWithNew", &[a.cert(), b.cert()], b.cert());
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();

    // Rolled out, but the application still holds A's certificate: A stays trusted, and the
    // condition says what the rollover waits for.
    let step = status_only(&mut w).await;
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    assert_phase(&w, "SignWithNew", &[a.cert(), b.cert()], b.cert());
    let (ready, _, message) = condition(step.status(), "CertificateReady");
    assert_eq!(ready, "True");
    assert!(
        message.contains("waits for 1 client certificate")
            && message.contains("frontend-qdrant-token"),
        "{message}"
    );
    let quiet = w.reconcile(|api| async move { api }).await;
    assert!(quiet.t.log.is_empty(), "{}", quiet.t.summary());
    assert_eq!(w.phase(), "SignWithNew");

    // The token controller re-issued it from B: the application gets CLIENT_PICKUP to load it,
    // then A is dropped.
    w.store(token_secret_with_client_certificate(
        "frontend-qdrant-token",
        &b,
        w.now(),
    ));
    let step = status_only(&mut w).await;
    assert_eq!(step.action(), Action::requeue(ROLLOVER_POLL));
    assert_eq!(w.phase(), "SignWithNew");
    let (_, _, message) = condition(step.status(), "CertificateReady");
    assert!(
        message.contains("to load their new client certificates"),
        "{message}"
    );
    w.set_now(w.now() + CLIENT_PICKUP - SignedDuration::from_secs(1));
    let quiet = w.reconcile(|api| async move { api }).await;
    assert!(quiet.t.log.is_empty(), "{}", quiet.t.summary());
    w.set_now(w.now() + SignedDuration::from_secs(1));
    republish(&mut w, true).await.action();
    assert_phase(&w, "DropOld", &[b.cert()], b.cert());
}

/// Anyone who may create Secrets writes one with a token Secret's labels and a certificate from
/// the old CA (or any other): it is not a token's (no QdrantAccessToken controls it), so it does
/// not hold the rollover in SignWithNew.
#[tokio::test]
async fn a_labelled_secret_no_token_controls_does_not_hold_a_rollover() {
    let mut sq = sq3();
    sq.spec.tls.client_certificates = true;
    let mut w = settled(sq).await;
    let a = CaMaterial::from_secret_data(&w.secret_data(&ca_name())).unwrap();
    w.store(labelled_secret_with_client_certificate(
        "stall-qdrant-token",
        &a,
        w.now(),
    ));
    start_rollover(&mut w).await;
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    republish(&mut w, true).await.action();
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    republish(&mut w, true).await.action();
    let b = w.ca();
    assert_phase(&w, "DropOld", &[&b], &b);
}

#[tokio::test]
async fn without_client_certificates_required_token_secrets_do_not_hold_a_rollover() {
    let mut w = settled(sq3()).await;
    let a = CaMaterial::from_secret_data(&w.secret_data(&ca_name())).unwrap();
    // A leftover client certificate from A (the instance required them earlier).
    w.store(token_secret_with_client_certificate(
        "frontend-qdrant-token",
        &a,
        w.now(),
    ));
    start_rollover(&mut w).await;
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    republish(&mut w, true).await.action();
    assert_waits_for_rollout(&mut w).await;
    w.roll_out();
    republish(&mut w, true).await.action();
    let b = w.ca();
    assert_phase(&w, "DropOld", &[&b], &b);
}
