//! The metrics scrapers' client certificate `<n>-metrics-client` (issue 13, item 4): with
//! `spec.tls.clientCertificates`, Qdrant's metrics port demands a client certificate like REST,
//! so the operator issues one for the scrapers listed in `spec.network.metrics`.
//!
//! The real SecureQdrant reconcile runs in-process against a real Kubernetes control plane
//! (tests/control-plane), as the chart's ServiceAccount with the chart's RBAC for the test's
//! namespace, with caches fed by reflectors and a clock the test moves; the real StatefulSet
//! controller and kwok's nodes roll the pods out. What it writes is then used in a real rustls
//! handshake against a server configured like Qdrant's REST/metrics listener with client
//! verification (the serving certificate of `<n>-tls`, client certificates verified against its
//! `ca.crt`).
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/real_server.rs"]
mod real_server;

use in_process::{cached_versions, namespaced_stores, versions};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use secure_qdrant_operator::children::meta::{LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::events::{EventLog, Events};
use secure_qdrant_operator::reconcile::metrics_client::METRICS_CLIENT_CERTIFICATE_READY;
use secure_qdrant_operator::reconcile::tls::CLIENT_PICKUP;
use secure_qdrant_operator::reconcile::{self, Context};
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::{
    CaSubject, Certificate, LeafMaterial, issue_ca, issue_client, issue_leaf, parse_bundle,
    serving_dns_names,
};

const NAME: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const METRICS_SECRET: &str = "vectors-metrics-client";
/// How long the real StatefulSet controller and kwok may take to roll the pods out.
const ROLL_OUT_WITHIN: Duration = Duration::from_secs(180);

fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

/// Client certificates required and a scraper listed.
fn spec() -> Value {
    json!({
        "replicas": 1,
        "tls": {"clientCertificates": true},
        "network": {"metrics": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}]},
    })
}

struct Env {
    real: real_server::Env,
    /// The test's own namespace (the instance's).
    ns: String,
    ctx: Arc<Context>,
    events: EventLog,
    clock: Arc<Mutex<Timestamp>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Env {
    async fn start(spec: Value) -> Env {
        let real = real_server::Env::namespaced("metrics").await;
        let ns = real.ns.clone();
        // As the operator (the chart's ServiceAccount), through the env's proxy (no faults).
        let client = real.client.clone();
        let mut tasks = Vec::new();
        let stores = namespaced_stores(&client, &ns, &mut tasks);
        let clock = Arc::new(Mutex::new(t0()));
        let (events, log) = Events::memory();
        let reading = clock.clone();
        let ctx = Context::new(client, stores, events, Settings::default())
            .with_clock(Arc::new(move || *reading.lock().unwrap()));
        real.insert(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": NAME, "namespace": ns},
            "spec": spec,
        }))
        .await
        .expect("SecureQdrant inserted");
        Env {
            real,
            ns,
            ctx: Arc::new(ctx),
            events: log,
            clock,
            tasks,
        }
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn set_now(&self, now: Timestamp) {
        *self.clock.lock().unwrap() = now;
    }

    /// Waits until the caches show what the server holds (managed Secrets, StatefulSets).
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let secrets = versions(
                self.real
                    .list("v1", "Secret", &self.ns)
                    .await
                    .into_iter()
                    .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
            );
            let sts = versions(
                self.real
                    .list("apps/v1", "StatefulSet", &self.ns)
                    .await
                    .into_iter(),
            );
            if secrets == cached_versions(&self.ctx.stores.secrets)
                && sts == cached_versions(&self.ctx.stores.statefulsets)
            {
                return;
            }
            assert!(Instant::now() < deadline, "the caches did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sq(&self) -> SecureQdrant {
        serde_json::from_value(
            self.real
                .get(SQ_API, "SecureQdrant", &self.ns, NAME)
                .await
                .expect("the SecureQdrant"),
        )
        .expect("a SecureQdrant")
    }

    /// One reconcile once the caches caught up.
    async fn reconcile(&self) {
        self.settle().await;
        reconcile::reconcile(Arc::new(self.sq().await), self.ctx.clone())
            .await
            .expect("the reconcile succeeds");
        self.settle().await;
    }

    /// A spec change by the user (admin).
    async fn patch_spec(&self, spec: Value) {
        Api::<SecureQdrant>::namespaced(self.real.admin.clone(), &self.ns)
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("spec patched");
    }

    /// Waits until the real StatefulSet controller reports the current template rolled out,
    /// every pod ready (kwok plays the kubelet).
    async fn roll_out(&self) {
        let (real, ns) = (&self.real, &self.ns);
        control_plane::eventually(ROLL_OUT_WITHIN, || async move {
            let sts = real
                .get("apps/v1", "StatefulSet", ns, NAME)
                .await
                .ok_or("no StatefulSet")?;
            let n = sts["spec"]["replicas"].as_i64().unwrap_or(1);
            let s = &sts["status"];
            let done = s["observedGeneration"] == sts["metadata"]["generation"]
                && s["replicas"] == n
                && s["readyReplicas"] == n
                && s["updatedReplicas"] == n
                && s["currentRevision"].is_string()
                && s["currentRevision"] == s["updateRevision"];
            done.then_some(())
                .ok_or_else(|| format!("not rolled out: {s}"))
        })
        .await
        .unwrap_or_else(|e| panic!("the StatefulSet: {e}"));
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        self.real
            .get("v1", "Secret", &self.ns, name)
            .await
            .map(|v| serde_json::from_value(v).expect("a Secret"))
    }

    async fn condition(&self) -> Option<(String, String, String)> {
        self.sq().await.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == METRICS_CLIENT_CERTIFICATE_READY)
                .map(|c| (c.status, c.reason, c.message))
        })
    }

    async fn phase(&self) -> String {
        self.secret("vectors-tls")
            .await
            .and_then(|s| s.metadata.annotations)
            .and_then(|a| a.get("secureqdrant.dev/ca-rollover-phase").cloned())
            .unwrap_or_default()
    }

    fn issued_events(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| {
                e.type_ == EventType::Normal && e.reason == "MetricsClientCertificateIssued"
            })
            .count()
    }

    /// Secret writes of the operator's identity since `reset_counters` (audit log).
    async fn secret_writes(&self) -> u64 {
        let c = self.real.counters().await;
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .map(|verb| c.get(verb, "secrets"))
            .sum()
    }
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn leaf_of(secret: &Secret) -> LeafMaterial {
    LeafMaterial::from_secret_data(secret.data.as_ref().unwrap()).expect("a certificate and key")
}

async fn ca_of(env: &Env) -> Certificate {
    Certificate::from_pem(&text(&env.secret("vectors-ca").await.unwrap(), "tls.crt")).unwrap()
}

// ----- a real handshake ------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct At(UnixTime);

impl TimeProvider for At {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

fn at(t: Timestamp) -> Arc<dyn TimeProvider> {
    Arc::new(At(UnixTime::since_unix_epoch(Duration::from_secs(
        t.as_second() as u64,
    ))))
}

fn roots(bundle_pem: &str) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for c in parse_bundle(bundle_pem).unwrap() {
        store.add(CertificateDer::from(c.der().to_vec())).unwrap();
    }
    Arc::new(store)
}

fn identity(secret: &Secret) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(text(secret, "tls.crt").as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(text(secret, "tls.key").as_bytes()).unwrap();
    (chain, key)
}

/// Qdrant's REST and metrics listener with `verify_https_client_certificate`: it presents the
/// serving certificate of `<n>-tls` and requires a client certificate chaining to its `ca.crt`.
fn qdrant_metrics_server(tls: &Secret, now: Timestamp) -> Arc<ServerConfig> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&text(tls, "ca.crt")), provider())
            .build()
            .unwrap();
    let (chain, key) = identity(tls);
    Arc::new(
        ServerConfig::builder_with_details(provider(), at(now))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// A scraper configured from `<n>-metrics-client` as the ServiceMonitor example does: `ca.crt`
/// as its CA, `tls.crt`/`tls.key` as its certificate.
fn scraper(secret: &Secret, now: Timestamp) -> Arc<ClientConfig> {
    let (chain, key) = identity(secret);
    Arc::new(
        ClientConfig::builder_with_details(provider(), at(now))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&text(secret, "ca.crt")))
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *s).poll_write(cx, buf)).await?;
        buf = &buf[n..];
    }
    poll_fn(|cx| Pin::new(&mut *s).poll_flush(cx)).await
}

async fn read_byte<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<u8> {
    let mut one = [0u8; 1];
    let mut rb = ReadBuf::new(&mut one);
    poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, &mut rb)).await?;
    if rb.filled().is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(one[0])
}

/// A scrape over loopback TCP: Ok when both sides completed the handshake and exchanged a byte
/// each way (a TLS 1.3 server reports a refused client certificate only after the client's
/// handshake returned).
async fn scrape(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    ns: &str,
) -> Result<(), String> {
    let name = ServerName::try_from(format!("{NAME}.{ns}.svc")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| format!("server handshake: {e}"))?;
        read_byte(&mut tls).await.map_err(|e| e.to_string())?;
        write_all(&mut tls, b"m").await.map_err(|e| e.to_string())
    };
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("client handshake: {e}"))?;
        write_all(&mut tls, b"g").await.map_err(|e| e.to_string())?;
        read_byte(&mut tls)
            .await
            .map(|_| ())
            .map_err(|e| format!("client read: {e}"))
    };
    let (s, c) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(server_side, client_side)
    })
    .await
    .map_err(|_| "timed out".to_owned())?;
    match (s, c) {
        (Ok(()), Ok(())) => Ok(()),
        (s, c) => Err(format!("server: {s:?}; client: {c:?}")),
    }
}

// ----- tests -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_client_certificate_passes_qdrants_client_verification_and_a_foreign_one_not() {
    let env = Env::start(spec()).await;
    let ns = env.ns.clone();
    env.reconcile().await;
    let tls = env
        .secret("vectors-tls")
        .await
        .expect("the serving certificate");
    let metrics = env
        .secret(METRICS_SECRET)
        .await
        .expect("the metrics client Secret");
    let now = env.now();
    let server = qdrant_metrics_server(&tls, now);
    scrape(scraper(&metrics, now), server.clone(), &ns)
        .await
        .expect("the scraper's certificate is accepted");

    // A client certificate from another CA, trusting the right CA: refused by the server.
    let foreign = issue_ca(
        &CaSubject::new(&ns, NAME),
        SignedDuration::from_hours(100),
        now,
    )
    .unwrap();
    let stranger = issue_client(
        &foreign,
        &format!("metrics.vectors.{ns}"),
        SignedDuration::from_hours(1),
        now,
    )
    .unwrap();
    let mut forged = metrics.clone();
    let data = forged.data.as_mut().unwrap();
    let stranger_data = stranger.to_secret_data(&[]);
    data.insert("tls.crt".into(), stranger_data["tls.crt"].clone());
    data.insert("tls.key".into(), stranger_data["tls.key"].clone());
    let refused = scrape(scraper(&forged, now), server.clone(), &ns).await;
    assert!(
        refused.is_err(),
        "a foreign client certificate was accepted"
    );
    // No client certificate at all: refused too (what every scraper got before).
    let anonymous = Arc::new(
        ClientConfig::builder_with_details(provider(), at(now))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&text(&metrics, "ca.crt")))
            .with_no_client_auth(),
    );
    assert!(scrape(anonymous, server, &ns).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapers_get_a_client_certificate_from_the_instance_ca_renewed_at_its_time() {
    let env = Env::start(spec()).await;
    env.reconcile().await;
    let secret = env
        .secret(METRICS_SECRET)
        .await
        .expect("the metrics client Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_COMPONENT], "metrics-client");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGER);
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("SecureQdrant", NAME, Some(true))
    );
    let first = leaf_of(&secret);
    let info = first.cert().info();
    assert!(info.client_auth && !info.server_auth && !info.is_ca);
    assert!(info.dns_names.is_empty());
    assert!(
        info.subject
            .contains(&format!("CN=metrics.vectors.{}", env.ns)),
        "{}",
        info.subject
    );
    assert!(first.cert().is_signed_by(&ca_of(&env).await));
    assert_eq!(
        text(&secret, "ca.crt"),
        text(&env.secret("vectors-tls").await.unwrap(), "ca.crt"),
        "the scrapers trust what verifies the serving certificate"
    );
    assert!(
        first.key().expose_pem().contains("BEGIN PRIVATE KEY"),
        "a PKCS#8 key"
    );
    let status = env.sq().await.status.unwrap();
    assert_eq!(
        status.secrets.unwrap().metrics_client.as_deref(),
        Some(METRICS_SECRET)
    );
    let (ok, reason, message) = env.condition().await.expect("the condition");
    assert_eq!((ok.as_str(), reason.as_str()), ("True", "Issued"));
    assert!(message.contains(METRICS_SECRET), "{message}");
    assert_eq!(env.issued_events(), 1);

    // Idle: nothing is written again. (The real StatefulSet controller rolls the pods out on
    // its own: the reconcile that sees the first rollout records it, so idle is after that.)
    env.roll_out().await;
    env.reconcile().await;
    env.real.reset_counters().await;
    env.reconcile().await;
    assert_eq!(
        env.secret_writes().await,
        0,
        "an idle reconcile writes no Secret"
    );
    assert_eq!(
        leaf_of(&env.secret(METRICS_SECRET).await.unwrap())
            .cert()
            .der(),
        first.cert().der()
    );

    // Just before its renewal time (renewBefore 720 h, minus up to the jitter): kept. At a day
    // before its expiry: renewed, from the same CA, ending later.
    let not_after = first.cert().not_after();
    env.set_now(not_after - SignedDuration::from_hours(24 * 60));
    env.reconcile().await;
    assert_eq!(
        leaf_of(&env.secret(METRICS_SECRET).await.unwrap())
            .cert()
            .der(),
        first.cert().der(),
        "renewed before its time"
    );
    env.set_now(not_after - SignedDuration::from_hours(24));
    env.reconcile().await;
    let renewed = leaf_of(&env.secret(METRICS_SECRET).await.unwrap());
    assert_ne!(renewed.cert().der(), first.cert().der(), "not renewed");
    assert!(renewed.cert().is_signed_by(&ca_of(&env).await));
    assert!(renewed.cert().not_after() > not_after);
    assert_eq!(env.issued_events(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_removed_when_scrapers_need_no_client_certificate() {
    let env = Env::start(spec()).await;
    env.reconcile().await;
    assert!(env.secret(METRICS_SECRET).await.is_some());

    env.patch_spec(json!({"network": {"metrics": []}})).await;
    env.reconcile().await;
    assert!(env.secret(METRICS_SECRET).await.is_none(), "still there");
    let status = env.sq().await.status.unwrap();
    assert_eq!(status.secrets.unwrap().metrics_client, None);
    assert_eq!(env.condition().await, None, "a stale condition");

    // Back on, then client certificates off: removed again.
    env.patch_spec(spec()).await;
    env.reconcile().await;
    assert!(env.secret(METRICS_SECRET).await.is_some());
    env.patch_spec(json!({"tls": {"clientCertificates": false}}))
        .await;
    env.reconcile().await;
    assert!(env.secret(METRICS_SECRET).await.is_none());
    assert_eq!(env.condition().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_certificates_no_metrics_client_secret_is_issued() {
    let env = Env::start(json!({
        "network": {"metrics": [{"podSelector": {}}]},
    }))
    .await;
    env.reconcile().await;
    assert!(env.secret(METRICS_SECRET).await.is_none());
    assert_eq!(env.condition().await, None);
    assert_eq!(
        env.sq()
            .await
            .status
            .unwrap()
            .secrets
            .unwrap()
            .metrics_client,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_user_certificate_the_condition_says_no_ca_can_sign_one() {
    let env = Env::start(json!({
        "replicas": 1,
        "tls": {"clientCertificates": true, "certificateSecretRef": {"name": "own-tls"}},
        "network": {"metrics": [{"podSelector": {}}]},
    }))
    .await;
    let ns = env.ns.clone();
    let ca = issue_ca(
        &CaSubject::new(&ns, "own"),
        SignedDuration::from_hours(8760),
        t0(),
    )
    .unwrap();
    let leaf = issue_leaf(
        &ca,
        &serving_dns_names(NAME, &ns, "cluster.local", &[]),
        SignedDuration::from_hours(2000),
        t0(),
    )
    .unwrap();
    let data: BTreeMap<String, String> = leaf
        .to_secret_data(std::slice::from_ref(ca.cert()))
        .into_iter()
        .map(|(k, v)| (k, STANDARD.encode(v.0)))
        .collect();
    env.real
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "own-tls", "namespace": ns,
                         "labels": {"secureqdrant.dev/allowed-instance": NAME}},
            "type": "kubernetes.io/tls", "data": data,
        }))
        .await
        .expect("the user's Secret");
    env.reconcile().await;
    assert!(env.secret(METRICS_SECRET).await.is_none());
    let (ok, reason, message) = env.condition().await.expect("the condition");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "NoSigningCA"));
    assert!(message.contains("own-tls"), "{message}");
    let warnings = env
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| e.type_ == EventType::Warning && e.reason == "NoSigningCA")
        .count();
    assert_eq!(warnings, 1);
    env.reconcile().await;
    let warnings = env
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| e.reason == "NoSigningCA")
        .count();
    assert_eq!(warnings, 1, "announced once, not per reconcile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rollover_leaves_sign_with_new_only_after_the_metrics_certificate_moved() {
    let env = Env::start(spec()).await;
    env.reconcile().await;
    env.roll_out().await;
    env.reconcile().await;
    let a = ca_of(&env).await;
    let old = leaf_of(&env.secret(METRICS_SECRET).await.unwrap());
    assert!(old.cert().is_signed_by(&a));
    assert_eq!(env.phase().await, "Stable");

    // A new CA key is asked for: TrustBoth, the scrapers keep A's certificate.
    Api::<SecureQdrant>::namespaced(env.real.admin.clone(), &env.ns)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"secureqdrant.dev/rotate-ca": "1"}}}),
            ),
        )
        .await
        .unwrap();
    env.reconcile().await;
    assert_eq!(env.phase().await, "TrustBoth");
    let b = ca_of(&env).await;
    assert!(!b.same_key(&a));
    let kept = env.secret(METRICS_SECRET).await.unwrap();
    assert!(leaf_of(&kept).cert().der() == old.cert().der(), "A's kept");
    assert_eq!(
        parse_bundle(&text(&kept, "ca.crt")).unwrap().len(),
        2,
        "the scrapers trust both CAs"
    );

    // TrustBoth rolled out: SignWithNew, and the scrapers' certificate now comes from B.
    env.roll_out().await;
    env.reconcile().await;
    assert_eq!(env.phase().await, "SignWithNew");
    let moved = leaf_of(&env.secret(METRICS_SECRET).await.unwrap());
    assert!(moved.cert().is_signed_by(&b), "from B");

    // SignWithNew rolled out at once: the old CA stays trusted until the scrapers had
    // CLIENT_PICKUP to load the new certificate.
    env.roll_out().await;
    env.reconcile().await;
    assert_eq!(
        env.phase().await,
        "SignWithNew",
        "left before the scrapers moved"
    );
    let message = env
        .sq()
        .await
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "CertificateReady")
        .unwrap()
        .message;
    assert!(message.contains("client certificates"), "{message}");

    // The Secret is put back to A's certificate (a stale restore, say): it is re-issued, and
    // the rollover still waits.
    let old_data: BTreeMap<String, String> = old
        .to_secret_data(&[])
        .into_iter()
        .filter(|(k, _)| k != "ca.crt")
        .map(|(k, v)| (k, STANDARD.encode(v.0)))
        .collect();
    env.real
        .merge_patch(
            "v1",
            "Secret",
            &env.ns,
            METRICS_SECRET,
            json!({"data": old_data}),
        )
        .await
        .expect("the Secret patched");
    env.set_now(env.now() + CLIENT_PICKUP + SignedDuration::from_secs(1));
    env.roll_out().await;
    env.reconcile().await;
    assert_eq!(
        env.phase().await,
        "SignWithNew",
        "left while A's certificate was in use"
    );
    assert!(
        leaf_of(&env.secret(METRICS_SECRET).await.unwrap())
            .cert()
            .is_signed_by(&b)
    );

    // Picked up: DropOld, the scrapers' certificate from B passes the new trust.
    env.set_now(env.now() + CLIENT_PICKUP + SignedDuration::from_secs(1));
    env.roll_out().await;
    env.reconcile().await;
    assert_eq!(env.phase().await, "DropOld");
    let tls = env.secret("vectors-tls").await.unwrap();
    assert_eq!(parse_bundle(&text(&tls, "ca.crt")).unwrap().len(), 1);
    let metrics = env.secret(METRICS_SECRET).await.unwrap();
    scrape(
        scraper(&metrics, env.now()),
        qdrant_metrics_server(&tls, env.now()),
        &env.ns,
    )
    .await
    .expect("the scraper still gets in after the old CA left");
}

/// The YAML documents of a file, as JSON.
fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn the_service_monitor_example_points_at_what_the_operator_creates_for_full_yaml() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example =
        std::fs::read_to_string(root.join("deploy/examples/monitoring/service-monitor.yaml"))
            .unwrap();
    let docs = documents(&example);
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let (service, monitor) = (of_kind("Service"), of_kind("ServiceMonitor"));
    let full = std::fs::read_to_string(root.join("deploy/examples/full.yaml")).unwrap();
    let rendered = documents(
        &secure_qdrant_operator::render::render(&full, &Settings::default()).expect("renders"),
    );
    let rendered_of = |kind: &str, name: &str| {
        rendered
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("render shows no {kind} {name}"))
            .clone()
    };
    let sts = rendered_of("StatefulSet", NAME);
    let secret = rendered_of("Secret", METRICS_SECRET);
    assert_eq!(secret["type"], "kubernetes.io/tls");

    // Same namespace as the instance and its Secret.
    for doc in [&service, &monitor] {
        assert_eq!(doc["metadata"]["namespace"], "search");
    }
    // The Service selects the instance's Qdrant pods, on their `metrics` port (9091).
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "selector {k}");
    }
    let port = &service["spec"]["ports"][0];
    let container_ports = sts["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap();
    assert!(
        container_ports
            .iter()
            .any(|p| p["name"] == port["targetPort"] && p["containerPort"] == 9091),
        "{container_ports:?}"
    );
    // The ServiceMonitor selects that Service and scrapes its port over HTTPS.
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], port["name"]);
    assert_eq!(endpoint["scheme"], "https");
    // Its TLS settings come from <n>-metrics-client's keys, and its server name is on the
    // serving certificate.
    let tls = &endpoint["tlsConfig"];
    for (reference, key) in [
        (&tls["ca"]["secret"], "ca.crt"),
        (&tls["cert"]["secret"], "tls.crt"),
        (&tls["keySecret"], "tls.key"),
    ] {
        assert_eq!(reference["name"], METRICS_SECRET);
        assert_eq!(reference["key"], key);
        assert!(secret["stringData"][key].is_string(), "{key}");
    }
    let server_name = tls["serverName"].as_str().unwrap();
    assert!(
        serving_dns_names(NAME, "search", "cluster.local", &[]).contains(&server_name.to_owned()),
        "{server_name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_that_name_controlled_by_another_object_is_never_written() {
    // What a QdrantAccessToken with spec.secretName `vectors-metrics-client` would leave
    // (created before the instance needed the name, under a CRD without today's rule): its
    // token, its owner. Today the real API server refuses such a token (the CRD's CEL rule on
    // spec.secretName), so the token is made with another secretName and the Secret of that
    // name is made controlled by it: what the reconcile judges is the controller reference.
    let env = Env::start(spec()).await;
    let ns = env.ns.clone();
    let squatter = |secret_name: Option<&str>| {
        let mut token = json!({
            "apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "squatter", "namespace": ns},
            "spec": {"qdrantRef": {"name": NAME}, "access": {"global": "r"}},
        });
        if let Some(name) = secret_name {
            token["spec"]["secretName"] = json!(name);
        }
        token
    };
    match env.real.insert(squatter(Some(METRICS_SECRET))).await {
        Err(kube::Error::Api(e)) => assert!(
            e.code == 422 && e.message.contains("-metrics-client"),
            "{e:?}"
        ),
        other => panic!("the API server took a token named for the metrics Secret: {other:?}"),
    }
    let token = env
        .real
        .insert(squatter(None))
        .await
        .expect("the QdrantAccessToken");
    env.real
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": METRICS_SECRET, "namespace": ns,
                "labels": {LABEL_MANAGED_BY: MANAGER},
                "ownerReferences": [{
                    "apiVersion": SQ_API, "kind": "QdrantAccessToken", "name": "squatter",
                    "uid": token["metadata"]["uid"], "controller": true,
                }],
            },
            "data": {"token": STANDARD.encode("a token")},
        }))
        .await
        .expect("the token Secret");
    env.settle().await;
    let before = env
        .real
        .get("v1", "Secret", &ns, METRICS_SECRET)
        .await
        .unwrap();
    let result = reconcile::reconcile(Arc::new(env.sq().await), env.ctx.clone()).await;
    let error = result.expect_err("the reconcile must refuse the Secret");
    assert!(
        matches!(
            error,
            secure_qdrant_operator::error::Error::ChildConflict { .. }
        ),
        "{error}"
    );
    let after = env
        .real
        .get("v1", "Secret", &ns, METRICS_SECRET)
        .await
        .unwrap();
    assert_eq!(before, after, "the token's Secret was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_metrics_client_secret_annotated_for_the_instance_is_adopted_and_kept() {
    // `kubectl delete sq --cascade=orphan`, then the instance again: every child is handed back
    // with secureqdrant.dev/adopt=<name> (README), this Secret too.
    let env = Env::start(spec()).await;
    env.reconcile().await;
    let issued = env.secret(METRICS_SECRET).await.expect("issued");
    env.real
        .merge_patch(
            "v1",
            "Secret",
            &env.ns,
            METRICS_SECRET,
            json!({"metadata": {"ownerReferences": null,
                                 "annotations": {"secureqdrant.dev/adopt": NAME}}}),
        )
        .await
        .expect("orphaned and annotated");
    env.reconcile().await;
    let adopted = env
        .real
        .get("v1", "Secret", &env.ns, METRICS_SECRET)
        .await
        .expect("still there");
    let owner = &adopted["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("SecureQdrant"), Some(true)),
        "{adopted}"
    );
    assert!(
        adopted["metadata"]["annotations"]
            .get("secureqdrant.dev/adopt")
            .is_none(),
        "the consent is used up: {adopted}"
    );
    // The certificate it holds is kept, not re-issued.
    assert_eq!(
        env.secret(METRICS_SECRET).await.unwrap().data.unwrap()["tls.crt"],
        issued.data.unwrap()["tls.crt"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_certificate_without_client_auth_is_refused_when_the_pod_must_present_it() {
    // With client certificates the readiness check presents the pod's own certificate to its
    // REST port: a serverAuth-only certificate (cert-manager `usages: [server auth]`) would keep
    // every pod unready. Refused before anything is built.
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let env = Env::start(json!({
        "replicas": 1,
        "tls": {"clientCertificates": true, "certificateSecretRef": {"name": "own-tls"}},
    }))
    .await;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let ns = env.ns.clone();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(serving_dns_names(NAME, &ns, "cluster.local", &[])).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    env.real
        .insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "own-tls", "namespace": ns,
                         "labels": {"secureqdrant.dev/allowed-instance": NAME}},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": STANDARD.encode(leaf.pem()),
                "tls.key": STANDARD.encode(leaf_key.serialize_pem()),
                "ca.crt": STANDARD.encode(ca_cert.pem()),
            },
        }))
        .await
        .expect("the user's Secret");
    env.settle().await;
    let error = reconcile::reconcile(Arc::new(env.sq().await), env.ctx.clone())
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("no clientAuth extended key usage")
            && error.to_string().contains("own-tls"),
        "{error}"
    );
    assert!(
        env.real
            .get("apps/v1", "StatefulSet", &ns, NAME)
            .await
            .is_none(),
        "a StatefulSet was built"
    );
}
