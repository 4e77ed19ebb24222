//! Real TLS handshakes (rustls, ring provider, loopback TCP) with the material `tls` issues:
//! the names pods and Services are dialled by, the p2p pattern (both ends present the serving
//! certificate and verify the other), expiry, foreign CAs, renewal driven by an injected clock,
//! and a CA key rollover where every pair of pods must keep completing the mutual handshake
//! through every phase of a StatefulSet rollout, including after operator restarts.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use secure_qdrant_operator::tls::{
    CA_CRT, CA_ROTATION_HANDLED_ANNOTATION, CaInput, CaMaterial, CaSubject, Certificate, Jitter,
    LeafMaterial, Phase, ROLLOVER_PHASE_ANNOTATION, TLS_CRT, TLS_KEY, TlsInputs, TlsOutcome,
    TlsPolicy, converge, issue_ca, issue_client, issue_leaf, parse_bundle, read_published,
    renew_ca, serving_dns_names,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

// ---------------------------------------------------------------------------------------------
// Handshake harness

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The clock rustls verifies certificates against.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Real,
    At(Timestamp),
}

#[derive(Debug)]
struct FixedTime(UnixTime);

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

fn time_provider(clock: Clock) -> Arc<dyn TimeProvider> {
    match clock {
        Clock::Real => Arc::new(FixedTimeNow),
        Clock::At(t) => Arc::new(FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(
            t.as_second() as u64,
        )))),
    }
}

#[derive(Debug)]
struct FixedTimeNow;

impl TimeProvider for FixedTimeNow {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::now())
    }
}

fn roots(bundle: &[Certificate]) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for c in bundle {
        store.add(CertificateDer::from(c.der().to_vec())).unwrap();
    }
    Arc::new(store)
}

/// Roots exactly as a pod reads them: the `ca.crt` PEM of the Secret.
fn roots_from_secret(data: &BTreeMap<String, ByteString>) -> Vec<Certificate> {
    parse_bundle(std::str::from_utf8(&data[CA_CRT].0).unwrap()).unwrap()
}

fn chain_and_key(leaf: &LeafMaterial) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(leaf.cert().pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key().expose_pem().as_bytes()).unwrap();
    (chain, key)
}

/// A server presenting `leaf`; with `client_roots`, it requires a client certificate chaining
/// to them (Qdrant's p2p server).
fn server_config(
    leaf: &LeafMaterial,
    client_roots: Option<&[Certificate]>,
    clock: Clock,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_details(provider(), time_provider(clock))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(r) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(r), provider())
                .build()
                .unwrap(),
        ),
    };
    let (chain, key) = chain_and_key(leaf);
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// A client trusting only `trust`; with `identity`, it presents it (Qdrant's p2p client).
fn client_config(
    trust: &[Certificate],
    identity: Option<&LeafMaterial>,
    clock: Clock,
) -> Arc<ClientConfig> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(trust), provider())
        .build()
        .unwrap();
    let builder = ClientConfig::builder_with_details(provider(), time_provider(clock))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_webpki_verifier(verifier);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let (chain, key) = chain_and_key(leaf);
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *s).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    poll_fn(|cx| Pin::new(&mut *s).poll_flush(cx)).await
}

async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        let mut rb = ReadBuf::new(&mut out[filled..]);
        poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, &mut rb)).await?;
        let got = rb.filled().len();
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += got;
    }
    Ok(out)
}

/// Connects `client` to `server` over loopback TCP, dialling `name` (SNI and the name the
/// certificate must carry), and exchanges one message each way. Ok only when both sides
/// completed the handshake and the exchange; otherwise both sides' errors.
async fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = async move {
        let (tcp, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| format!("server handshake: {e:?}"))?;
        let ping = read_exact(&mut tls, 4)
            .await
            .map_err(|e| format!("server read: {e:?}"))?;
        if ping != b"ping" {
            return Err("server got garbage".to_owned());
        }
        write_all(&mut tls, b"pong")
            .await
            .map_err(|e| format!("server write: {e:?}"))
    };
    let name = ServerName::try_from(name.to_owned()).map_err(|e| format!("name: {e}"))?;
    let client_side = async move {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("client handshake: {e:?}"))?;
        write_all(&mut tls, b"ping")
            .await
            .map_err(|e| format!("client write: {e:?}"))?;
        let pong = read_exact(&mut tls, 4)
            .await
            .map_err(|e| format!("client read: {e:?}"))?;
        if pong != b"pong" {
            return Err("client got garbage".to_owned());
        }
        Ok(())
    };
    let both = async { tokio::join!(server_side, client_side) };
    let (s, c) = tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .map_err(|_| "timed out".to_owned())?;
    match (s, c) {
        (Ok(()), Ok(())) => Ok(()),
        (s, c) => Err(format!("server: {s:?}; client: {c:?}")),
    }
}

/// A client trusting `trust` dials a server presenting `leaf` (REST / external gRPC).
async fn one_way(
    trust: &[Certificate],
    leaf: &LeafMaterial,
    name: &str,
    clock: Clock,
) -> Result<(), String> {
    handshake(
        client_config(trust, None, clock),
        server_config(leaf, None, clock),
        name,
    )
    .await
}

/// The p2p pattern: a pod (`from`) dials a peer (`to`); both present their serving
/// certificate, the server requires and verifies the client's, both use their own `ca.crt`.
async fn p2p(from: &Pod, to: &Pod, name: &str, clock: Clock) -> Result<(), String> {
    handshake(
        client_config(&from.trust, Some(&from.leaf), clock),
        server_config(&to.leaf, Some(&to.trust), clock),
        name,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const NS: &str = "search";
const NAME: &str = "vectors";

fn names() -> Vec<String> {
    serving_dns_names(NAME, NS, "cluster.local", &[])
}

fn year() -> SignedDuration {
    SignedDuration::from_hours(8760)
}

fn ninety_days() -> SignedDuration {
    SignedDuration::from_hours(2160)
}

fn real_now() -> Timestamp {
    Timestamp::now()
}

fn fresh_ca(now: Timestamp) -> CaMaterial {
    issue_ca(&CaSubject::new(NS, NAME), year(), now).unwrap()
}

/// The `<n>-tls` Secret data a pod mounts, for a leaf and its CA.
fn secret_for(leaf: &LeafMaterial, ca: &CaMaterial) -> BTreeMap<String, ByteString> {
    leaf.to_secret_data(std::slice::from_ref(ca.cert()))
}

/// Every name the Services and pods are dialled by.
fn dialled_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "vectors",
        "vectors.search",
        "vectors.search.svc",
        "vectors.search.svc.cluster.local",
        "vectors-headless",
        "vectors-headless.search",
        "vectors-headless.search.svc",
        "vectors-headless.search.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec();
    for pod in [0, 1, 2, 17] {
        v.push(format!("vectors-{pod}.vectors-headless.search.svc"));
        v.push(format!(
            "vectors-{pod}.vectors-headless.search.svc.cluster.local"
        ));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Names, chains, expiry

#[tokio::test]
async fn a_client_trusting_only_ca_crt_reaches_every_name_pods_and_services_use() {
    let now = real_now();
    let ca = fresh_ca(now);
    let leaf = issue_leaf(&ca, &names(), ninety_days(), now).unwrap();
    let data = secret_for(&leaf, &ca);
    let trust = roots_from_secret(&data);
    let mounted = LeafMaterial::from_pem(
        std::str::from_utf8(&data[TLS_CRT].0).unwrap(),
        std::str::from_utf8(&data[TLS_KEY].0).unwrap(),
    )
    .unwrap();
    for name in dialled_names() {
        one_way(&trust, &mounted, &name, Clock::Real)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test]
async fn a_wrong_name_fails() {
    let now = real_now();
    let ca = fresh_ca(now);
    let leaf = issue_leaf(&ca, &names(), ninety_days(), now).unwrap();
    let trust = vec![ca.cert().clone()];
    for name in [
        "other.search.svc",
        "vectors.other.svc",
        "vectors.search.svc.example.org",
        // A wildcard covers exactly one label.
        "a.vectors-0.vectors-headless.search.svc",
        // Pods are only covered under .svc (the peer URIs), not under the short headless name.
        "vectors-0.vectors-headless",
        "vectors-0.vectors-headless.search",
        "vectors-0.other-headless.search.svc",
    ] {
        let err = one_way(&trust, &leaf, name, Clock::Real)
            .await
            .expect_err(name);
        assert!(err.contains("NotValidForName"), "{name}: {err}");
    }
}

#[tokio::test]
async fn extra_dns_names_are_served() {
    let now = real_now();
    let ca = fresh_ca(now);
    let extra = vec![
        "qdrant.example.com".to_owned(),
        "*.vectors.example.com".to_owned(),
    ];
    let leaf = issue_leaf(
        &ca,
        &serving_dns_names(NAME, NS, "cluster.local", &extra),
        ninety_days(),
        now,
    )
    .unwrap();
    let trust = vec![ca.cert().clone()];
    for name in [
        "qdrant.example.com",
        "eu.vectors.example.com",
        "vectors.search.svc",
    ] {
        one_way(&trust, &leaf, name, Clock::Real).await.unwrap();
    }
    assert!(
        one_way(&trust, &leaf, "qdrant.example.org", Clock::Real)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_p2p_pattern_succeeds_with_both_ends_presenting_the_leaf() {
    let now = real_now();
    let ca = fresh_ca(now);
    let data = secret_for(&issue_leaf(&ca, &names(), ninety_days(), now).unwrap(), &ca);
    let pod = |data: &BTreeMap<String, ByteString>| Pod {
        leaf: LeafMaterial::from_secret_data(data).unwrap(),
        trust: roots_from_secret(data),
    };
    let (a, b) = (pod(&data), pod(&data));
    for target in [
        "vectors-1.vectors-headless.search.svc",
        "vectors-0.vectors-headless.search.svc.cluster.local",
    ] {
        p2p(&a, &b, target, Clock::Real).await.unwrap();
    }
    // Peers also call each other's REST port with the same identity.
    p2p(&b, &a, "vectors-0.vectors-headless.search.svc", Clock::Real)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_p2p_server_refuses_clients_without_a_trusted_certificate() {
    let now = real_now();
    let ca = fresh_ca(now);
    let leaf = issue_leaf(&ca, &names(), ninety_days(), now).unwrap();
    let trust = vec![ca.cert().clone()];
    let server = server_config(&leaf, Some(&trust), Clock::Real);
    let target = "vectors-1.vectors-headless.search.svc";

    let err = handshake(
        client_config(&trust, None, Clock::Real),
        server.clone(),
        target,
    )
    .await
    .unwrap_err();
    assert!(err.contains("NoCertificatesPresented"), "{err}");

    let foreign_ca = fresh_ca(now);
    let foreign = issue_leaf(&foreign_ca, &names(), ninety_days(), now).unwrap();
    let err = handshake(
        client_config(&trust, Some(&foreign), Clock::Real),
        server,
        target,
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn a_certificate_from_a_foreign_ca_fails() {
    let now = real_now();
    let ours = fresh_ca(now);
    // Same instance name, same subject text but another key: still not trusted.
    let foreign = fresh_ca(now);
    let leaf = issue_leaf(&foreign, &names(), ninety_days(), now).unwrap();
    let err = one_way(
        &[ours.cert().clone()],
        &leaf,
        "vectors.search.svc",
        Clock::Real,
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_fails() {
    // Verified at a chosen time: an hour after the leaf's notAfter.
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let ca = fresh_ca(t0);
    let leaf = issue_leaf(&ca, &names(), SignedDuration::from_hours(1), t0).unwrap();
    let trust = vec![ca.cert().clone()];
    let inside = Clock::At(t0);
    one_way(&trust, &leaf, "vectors.search.svc", inside)
        .await
        .unwrap();
    let after = Clock::At(leaf.cert().not_after() + SignedDuration::from_hours(1));
    let err = one_way(&trust, &leaf, "vectors.search.svc", after)
        .await
        .unwrap_err();
    assert!(err.contains("Expired"), "{err}");
    // Also in p2p: the server refuses an expired client certificate.
    let pod = Pod {
        leaf: leaf.clone(),
        trust: trust.clone(),
    };
    let err = p2p(&pod, &pod, "vectors-0.vectors-headless.search.svc", after)
        .await
        .unwrap_err();
    assert!(err.contains("Expired"), "{err}");

    // And with the real clock: a leaf that was already over when issued.
    let past = real_now() - SignedDuration::from_hours(3);
    let old_ca = fresh_ca(past);
    let dead = issue_leaf(&old_ca, &names(), SignedDuration::from_hours(1), past).unwrap();
    assert!(dead.cert().not_after() < real_now());
    let err = one_way(
        &[old_ca.cert().clone()],
        &dead,
        "vectors.search.svc",
        Clock::Real,
    )
    .await
    .unwrap_err();
    assert!(err.contains("Expired"), "{err}");
}

#[tokio::test]
async fn a_leaf_from_a_renewed_ca_is_trusted_by_pods_holding_the_old_ca_and_back() {
    let t0 = real_now();
    let ca = fresh_ca(t0);
    let renewed = renew_ca(&ca, year(), t0).unwrap();
    let old_pod = Pod {
        leaf: issue_leaf(&ca, &names(), ninety_days(), t0).unwrap(),
        trust: vec![ca.cert().clone()],
    };
    let new_pod = Pod {
        leaf: issue_leaf(&renewed, &names(), ninety_days(), t0).unwrap(),
        trust: vec![renewed.cert().clone()],
    };
    let target = "vectors-1.vectors-headless.search.svc";
    p2p(&old_pod, &new_pod, target, Clock::Real).await.unwrap();
    p2p(&new_pod, &old_pod, target, Clock::Real).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// A simulated instance: the Secrets, the operator (converge) and a StatefulSet of pods that
// each keep the material they started with until they are restarted, newest ordinal first.

#[derive(Clone, Debug)]
struct Pod {
    leaf: LeafMaterial,
    trust: Vec<Certificate>,
}

#[derive(Clone)]
struct Cluster {
    ca: Option<BTreeMap<String, ByteString>>,
    ca_annotations: BTreeMap<String, String>,
    tls: Option<BTreeMap<String, ByteString>>,
    tls_annotations: BTreeMap<String, String>,
    rotate_request: Option<String>,
    pods: Vec<Pod>,
    /// Fingerprint of the material each pod started with.
    pod_fingerprints: Vec<String>,
}

impl Cluster {
    fn new(replicas: usize, now: Timestamp) -> Self {
        let mut c = Cluster {
            ca: None,
            ca_annotations: BTreeMap::new(),
            tls: None,
            tls_annotations: BTreeMap::new(),
            rotate_request: None,
            pods: Vec::new(),
            pod_fingerprints: Vec::new(),
        };
        let out = c.reconcile(now);
        for _ in 0..replicas {
            c.pods.push(c.mounted());
            c.pod_fingerprints.push(out.published.fingerprint());
        }
        c
    }

    fn published_fingerprint(&self) -> String {
        let read = read_published(self.tls.as_ref());
        let p = secure_qdrant_operator::tls::PublishedTls {
            leaf: read.leaf.unwrap(),
            trust_bundle: read.bundle,
            phase: Phase::Stable,
        };
        p.fingerprint()
    }

    /// What the StatefulSet reports: the fingerprint every pod runs with, when all agree.
    fn rolled_out(&self) -> Option<String> {
        let first = self.pod_fingerprints.first()?;
        self.pod_fingerprints
            .iter()
            .all(|f| f == first)
            .then(|| first.clone())
    }

    /// One reconcile of a (possibly freshly started) operator: converge, write the result.
    fn reconcile(&mut self, now: Timestamp) -> TlsOutcome {
        let rolled_out = self.rolled_out();
        let input = TlsInputs {
            policy: TlsPolicy::default(),
            subject: CaSubject::new(NS, NAME),
            jitter: Jitter::for_instance(NS, NAME, "9d1c7c2e"),
            dns_names: names(),
            ca: CaInput::Managed {
                secret: self.ca.as_ref(),
                rotation_requested: self.rotate_request.as_deref(),
                rotation_handled: self
                    .ca_annotations
                    .get(CA_ROTATION_HANDLED_ANNOTATION)
                    .map(String::as_str),
            },
            published: self.tls.as_ref(),
            recorded_phase: self
                .tls_annotations
                .get(ROLLOVER_PHASE_ANNOTATION)
                .map(String::as_str),
            rolled_out: rolled_out.as_deref(),
            clients_on_current: true,
            now,
        };
        let out = converge(&input).unwrap();
        if let Some(change) = &out.ca_change {
            self.ca = Some(change.secret_data());
            self.ca_annotations = change.annotations();
        }
        if out.tls_changed {
            self.tls = Some(out.published.to_secret_data());
            self.tls_annotations = out.published.annotations();
        }
        out
    }

    fn phase(&self) -> &str {
        self.tls_annotations
            .get(ROLLOVER_PHASE_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("Stable")
    }

    /// What a pod starting now mounts from `<n>-tls`.
    fn mounted(&self) -> Pod {
        let data = self.tls.as_ref().unwrap();
        Pod {
            leaf: LeafMaterial::from_secret_data(data).unwrap(),
            trust: roots_from_secret(data),
        }
    }

    /// Restarts pod `i` with the published material.
    fn restart(&mut self, i: usize) {
        self.pods[i] = self.mounted();
        self.pod_fingerprints[i] = self.published_fingerprint();
    }

    /// Every ordered pair of pods completes the p2p handshake (and each pod can reach itself).
    async fn assert_all_peers_talk(&self, clock: Clock, when: &str) {
        for (i, from) in self.pods.iter().enumerate() {
            for (j, to) in self.pods.iter().enumerate() {
                let target = format!("vectors-{j}.vectors-headless.search.svc");
                p2p(from, to, &target, clock)
                    .await
                    .unwrap_or_else(|e| panic!("{when}: pod {i} -> pod {j}: {e}"));
            }
        }
    }

    /// A StatefulSet rolling update: one pod at a time, highest ordinal first, checking every
    /// pair after each restart.
    async fn rolling_update(&mut self, clock: Clock, when: &str) {
        for i in (0..self.pods.len()).rev() {
            self.restart(i);
            self.assert_all_peers_talk(clock, &format!("{when}, after restarting pod {i}"))
                .await;
        }
    }
}

#[tokio::test]
async fn renewal_is_driven_by_the_injected_clock_and_new_leaves_talk_to_old_ones() {
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut c = Cluster::new(3, t0);
    let first = c.reconcile(t0);
    assert!(!first.tls_changed);
    let renewal = first.renewal_time;
    assert_eq!(
        first.requeue_after.as_secs() as i64,
        renewal.duration_since(t0).as_secs(),
        "requeue for exactly the renewal time"
    );

    let before = renewal - SignedDuration::from_secs(1);
    let out = c.reconcile(before);
    assert!(!out.tls_changed, "not a second early");
    assert_eq!(out.requeue_after, Duration::from_secs(1));

    let out = c.reconcile(renewal);
    assert!(out.tls_changed, "renewed at renewalTime");
    assert!(out.published.leaf.cert().not_before() <= renewal);
    assert_eq!(c.phase(), "Stable");
    c.rolling_update(Clock::At(renewal), "leaf renewal").await;
}

#[tokio::test]
async fn ca_renewal_on_the_same_key_rolls_without_breaking_peers() {
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut c = Cluster::new(3, t0);
    let due = c.reconcile(t0).ca_renewal_time.unwrap();
    let mut now = t0;
    // Follow leaf renewals up to the CA's renewal time, rolling each.
    loop {
        let out = c.reconcile(now);
        if out.ca_change.is_some() {
            assert!(now >= due);
            break;
        }
        if out.tls_changed {
            c.rolling_update(Clock::At(now), "leaf renewal").await;
        }
        now += SignedDuration::from_secs(out.requeue_after.as_secs() as i64);
    }
    assert_eq!(now, due, "the CA renews exactly at its renewal time");
    assert_eq!(c.phase(), "Stable");
    c.rolling_update(Clock::At(now), "CA renewal").await;
}

/// Drives a CA key replacement through every phase, rolling the pods one at a time and
/// checking every pair after each restart, with an operator restart (a fresh `Cluster` copy
/// holding only what is stored in the cluster) before each phase.
async fn drive_rollover(mut c: Cluster, now: Timestamp) {
    let clock = Clock::At(now);
    let old_ca =
        c.ca.as_ref()
            .and_then(|d| CaMaterial::from_secret_data(d).ok());
    let out = c.reconcile(now);
    assert_eq!(c.phase(), "TrustBoth", "{:?}", out.transition);
    let new_ca = out.ca.clone();
    if let Some(old) = &old_ca {
        assert!(!old.cert().same_key(new_ca.cert()));
    }
    assert_eq!(out.published.trust_bundle.len(), 2);

    let mut seen = vec![c.phase().to_owned()];
    while c.phase() != "Stable" {
        // Until the rollout finishes, nothing moves, however often the operator runs.
        let published = c.tls.clone();
        c.restart(0); // a partial rollout is not a finished one
        for _ in 0..2 {
            let out = c.reconcile(now);
            assert!(
                !out.tls_changed && out.ca_change.is_none(),
                "{} moved early",
                c.phase()
            );
        }
        assert_eq!(c.tls, published);
        c.rolling_update(clock, &format!("rolling {}", c.phase()))
            .await;
        // The operator restarts: only what the cluster stores survives.
        let mut restarted = c.clone();
        restarted.reconcile(now);
        c = restarted;
        seen.push(c.phase().to_owned());
        if c.phase() == "SignWithNew" {
            let leaf = LeafMaterial::from_secret_data(c.tls.as_ref().unwrap()).unwrap();
            assert!(leaf.cert().is_signed_by(new_ca.cert()));
        }
    }
    assert_eq!(seen, ["TrustBoth", "SignWithNew", "DropOld", "Stable"]);
    assert_eq!(c.mounted().trust, vec![new_ca.cert().clone()]);
    for pod in &c.pods {
        assert!(pod.leaf.cert().is_signed_by(new_ca.cert()));
        assert_eq!(pod.trust, vec![new_ca.cert().clone()]);
    }
    c.assert_all_peers_talk(clock, "after the rollover").await;
}

#[tokio::test]
async fn a_lost_ca_key_is_replaced_without_two_peers_ever_failing_each_other() {
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut c = Cluster::new(3, t0);
    c.ca = None; // <n>-ca deleted: the key is gone
    drive_rollover(c, t0 + SignedDuration::from_hours(24)).await;
}

#[tokio::test]
async fn a_requested_ca_key_replacement_rolls_over_safely() {
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut c = Cluster::new(3, t0);
    c.rotate_request = Some("rotate-1".into());
    drive_rollover(c, t0 + SignedDuration::from_hours(24)).await;
}

#[tokio::test]
async fn a_rollover_resumes_after_an_interruption_in_each_phase() {
    // Stop between writing <n>-ca and <n>-tls, then between every pair of later steps: a
    // fresh operator continues from the Secrets alone and the peers keep talking.
    let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let now = t0 + SignedDuration::from_hours(24);
    let clock = Clock::At(now);
    let mut c = Cluster::new(3, t0);
    c.ca = None;
    // First operator: only <n>-ca is written before it dies.
    let mut crashed = c.clone();
    crashed.reconcile(now);
    c.ca = crashed.ca.clone();
    c.ca_annotations = crashed.ca_annotations.clone();
    assert_eq!(c.phase(), "Stable", "<n>-tls not written yet");
    c.assert_all_peers_talk(clock, "after the crash").await;

    let mut phases = Vec::new();
    loop {
        let mut fresh = c.clone(); // a new operator process
        let out = fresh.reconcile(now);
        assert!(
            out.ca_change.is_none(),
            "the CA written before the crash is kept"
        );
        c = fresh;
        phases.push(c.phase().to_owned());
        if c.phase() == "Stable" {
            break;
        }
        // Half the pods restart, the operator dies, a new one sees the same phase.
        c.restart(2);
        c.restart(1);
        let mut again = c.clone();
        let out = again.reconcile(now);
        assert!(!out.tls_changed, "a partial rollout never advances");
        c = again;
        c.assert_all_peers_talk(clock, &format!("half-rolled {}", c.phase()))
            .await;
        c.restart(0);
        c.assert_all_peers_talk(clock, &format!("rolled {}", c.phase()))
            .await;
    }
    assert_eq!(phases, ["TrustBoth", "SignWithNew", "DropOld", "Stable"]);
}

#[tokio::test]
async fn skipping_the_trust_phase_would_break_peers() {
    // The control: replacing the CA and the leaves in one step (what the phases prevent) does
    // break the handshake between a restarted pod and one still running the old material.
    let now = real_now();
    let old_ca = fresh_ca(now);
    let new_ca = fresh_ca(now);
    let old_pod = Pod {
        leaf: issue_leaf(&old_ca, &names(), ninety_days(), now).unwrap(),
        trust: vec![old_ca.cert().clone()],
    };
    let new_pod = Pod {
        leaf: issue_leaf(&new_ca, &names(), ninety_days(), now).unwrap(),
        trust: vec![new_ca.cert().clone()],
    };
    let target = "vectors-0.vectors-headless.search.svc";
    assert!(p2p(&old_pod, &new_pod, target, Clock::Real).await.is_err());
    assert!(p2p(&new_pod, &old_pod, target, Clock::Real).await.is_err());
    // With the TrustBoth bundle on both sides, the same pair works.
    let both = vec![old_ca.cert().clone(), new_ca.cert().clone()];
    let old_pod = Pod {
        trust: both.clone(),
        ..old_pod
    };
    let new_pod = Pod {
        trust: both,
        ..new_pod
    };
    p2p(&old_pod, &new_pod, target, Clock::Real).await.unwrap();
    p2p(&new_pod, &old_pod, target, Clock::Real).await.unwrap();
}

#[test]
fn the_material_has_the_shape_qdrant_reads() {
    let now = real_now();
    let ca = fresh_ca(now);
    let leaf = issue_leaf(&ca, &names(), ninety_days(), now).unwrap();
    let data = secret_for(&leaf, &ca);
    let crt = std::str::from_utf8(&data[TLS_CRT].0).unwrap();
    let key = std::str::from_utf8(&data[TLS_KEY].0).unwrap();
    assert_eq!(
        crt.matches("BEGIN CERTIFICATE").count(),
        1,
        "tls.crt holds the leaf"
    );
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8");
    assert_eq!(
        key.matches("-----BEGIN").count(),
        1,
        "the key file holds only the key"
    );
    assert!(matches!(
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        PrivateKeyDer::Pkcs8(_)
    ));
    let info = leaf.cert().info();
    assert!(info.server_auth && info.client_auth);
    assert!(info.not_before <= now - SignedDuration::from_mins(4));
}

// ---------------------------------------------------------------------------------------------
// Client certificates for applications (spec.tls.clientCertificates)

/// Qdrant's REST with `verify_https_client_certificate`: it presents the serving certificate
/// and requires a client certificate chaining to its `ca.crt`. The application trusts the
/// `ca.crt` of its token Secret and presents the `tls.crt`/`tls.key` the operator put there.
async fn rest_mtls(
    server_trust: &[Certificate],
    serving: &LeafMaterial,
    app_trust: &[Certificate],
    app_identity: Option<&LeafMaterial>,
    clock: Clock,
) -> Result<(), String> {
    handshake(
        client_config(app_trust, app_identity, clock),
        server_config(serving, Some(server_trust), clock),
        "vectors.search.svc",
    )
    .await
}

#[tokio::test]
async fn an_operator_issued_client_certificate_passes_rest_mtls_and_nothing_else_does() {
    let now = real_now();
    let ca = fresh_ca(now);
    let serving = issue_leaf(&ca, &names(), ninety_days(), now).unwrap();
    let trust = [ca.cert().clone()];
    let client = issue_client(&ca, "frontend.search", ninety_days(), now).unwrap();
    rest_mtls(&trust, &serving, &trust, Some(&client), Clock::Real)
        .await
        .expect("the application's certificate is accepted");

    // No certificate: refused (the kubelet's situation, hence TCP probes).
    assert!(
        rest_mtls(&trust, &serving, &trust, None, Clock::Real)
            .await
            .is_err()
    );
    // A certificate from another CA: refused.
    let foreign = fresh_ca(now);
    let stranger = issue_client(&foreign, "frontend.search", ninety_days(), now).unwrap();
    assert!(
        rest_mtls(&trust, &serving, &trust, Some(&stranger), Clock::Real)
            .await
            .is_err()
    );
    // An expired one: refused.
    let later = Clock::At(client.cert().not_after() + SignedDuration::from_secs(60));
    let serving_later = issue_leaf(&ca, &names(), ninety_days(), now).unwrap();
    let fresh_server = server_config(&serving_later, Some(&trust), later);
    let expired_client = client_config(&trust, Some(&client), Clock::Real);
    assert!(
        handshake(expired_client, fresh_server, "vectors.search.svc")
            .await
            .is_err()
    );
    // A client certificate is no serving certificate: a server presenting it is refused.
    assert!(
        one_way(&trust, &client, "vectors.search.svc", Clock::Real)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn client_certificates_keep_working_through_a_ca_key_rollover_when_moved_before_drop_old() {
    let now = real_now();
    let a = fresh_ca(now);
    let b = fresh_ca(now);
    let serving_a = issue_leaf(&a, &names(), ninety_days(), now).unwrap();
    let serving_b = issue_leaf(&b, &names(), ninety_days(), now).unwrap();
    let client_a = issue_client(&a, "frontend.search", ninety_days(), now).unwrap();
    let client_b = issue_client(&b, "frontend.search", ninety_days(), now).unwrap();
    let both = [a.cert().clone(), b.cert().clone()];
    let only_a = [a.cert().clone()];
    let only_b = [b.cert().clone()];

    // TrustBoth: pods still on the old bundle or on the new one; the application keeps A's
    // certificate and trusts both (its ca.crt follows <n>-tls).
    for server_trust in [&only_a[..], &both[..]] {
        rest_mtls(
            server_trust,
            &serving_a,
            &both,
            Some(&client_a),
            Clock::Real,
        )
        .await
        .expect("TrustBoth: A's client certificate works");
    }
    // SignWithNew: serving certificates from B, bundle A+B. A's client certificate still
    // works; B's (re-issued in this phase) works too.
    for client in [&client_a, &client_b] {
        rest_mtls(&both, &serving_b, &both, Some(client), Clock::Real)
            .await
            .expect("SignWithNew: both client certificates work");
    }
    // DropOld: only B is trusted. B's certificate works, A's would not: this is why the
    // operator drops A only after every client certificate moved.
    rest_mtls(&only_b, &serving_b, &only_b, Some(&client_b), Clock::Real)
        .await
        .expect("DropOld: B's client certificate works");
    assert!(
        rest_mtls(&only_b, &serving_b, &only_b, Some(&client_a), Clock::Real)
            .await
            .is_err(),
        "A's client certificate is refused once A is dropped"
    );
}

// ---------------------------------------------------------------------------------------------
// Name constraints (issue 12, item 3): the operator's CA can sign only the instance's names

/// The operator's first CA for an instance, as `converge` issues it.
fn operator_ca(extra: &[String], now: Timestamp) -> (CaMaterial, TlsOutcome) {
    let input = TlsInputs {
        policy: TlsPolicy::default(),
        subject: CaSubject::new(NS, NAME),
        jitter: Jitter::for_instance(NS, NAME, "9d1c7c2e"),
        dns_names: serving_dns_names(NAME, NS, "cluster.local", extra),
        ca: CaInput::Managed {
            secret: None,
            rotation_requested: None,
            rotation_handled: None,
        },
        published: None,
        recorded_phase: None,
        rolled_out: None,
        clients_on_current: true,
        now,
    };
    let out = converge(&input).unwrap();
    let ca = CaMaterial::from_secret_data(&out.ca_change.as_ref().unwrap().secret_data()).unwrap();
    (ca, out)
}

#[tokio::test]
async fn a_leaked_ca_key_cannot_sign_for_names_outside_the_instance() {
    let now = real_now();
    let extra = vec!["qdrant.example.com".to_owned()];
    let (ca, out) = operator_ca(&extra, now);
    assert!(
        ca.cert().info().permitted_dns.is_some(),
        "the operator's CA carries name constraints"
    );
    let trust = vec![ca.cert().clone()];
    // The instance's own leaf, as converge issued it: accepted under every name it is dialled by.
    for name in dialled_names()
        .iter()
        .map(String::as_str)
        .chain(["qdrant.example.com"])
    {
        one_way(&trust, &out.published.leaf, name, Clock::Real)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Whoever holds the CA key signs a leaf for another Service, the API server, another
    // domain: a verifier trusting the CA refuses each (webpki checks the name constraints).
    for foreign in [
        "kubernetes.default.svc",
        "other.search.svc",
        "other.search.svc.cluster.local",
        "qdrant.example.org",
    ] {
        let leaf = issue_leaf(&ca, &[foreign.to_owned()], ninety_days(), now).unwrap();
        let err = one_way(&trust, &leaf, foreign, Clock::Real)
            .await
            .expect_err(foreign);
        assert!(
            err.contains("NameConstraint") || err.contains("name constraint"),
            "{foreign}: {err}"
        );
    }
    // The applications' client certificates (CN only, no DNS name) still pass REST mTLS.
    let client = issue_client(&ca, "frontend.search", ninety_days(), now).unwrap();
    rest_mtls(
        &trust,
        &out.published.leaf,
        &trust,
        Some(&client),
        Clock::Real,
    )
    .await
    .expect("a client certificate from the constrained CA is accepted");
    // A leaf that adds one foreign name to the instance's own is refused too, for its own names.
    let mut names = serving_dns_names(NAME, NS, "cluster.local", &extra);
    names.push("kubernetes.default.svc".to_owned());
    let mixed = issue_leaf(&ca, &names, ninety_days(), now).unwrap();
    assert!(
        one_way(&trust, &mixed, "vectors.search.svc", Clock::Real)
            .await
            .is_err()
    );
}

/// A leaf whose only subject alternative name is the IP address `ip`, signed with `ca`'s key
/// by hand (the operator itself never puts IP addresses in its certificates).
fn leaf_for_ip(ca: &CaMaterial, ip: std::net::IpAddr, now: Timestamp) -> LeafMaterial {
    let signer = rcgen::KeyPair::from_pem(ca.key().expose_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca.cert().der().to_vec().into(), signer).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now.as_second() - 60).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now.as_second() + 86400).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    LeafMaterial::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
}

#[tokio::test]
async fn a_leaked_ca_key_cannot_sign_for_ip_addresses() {
    let now = real_now();
    let (ca, _) = operator_ca(&[], now);
    let trust = vec![ca.cert().clone()];
    // The API server's ClusterIP, a pod address, loopback, IPv6: dialled by address, a verifier
    // trusting the CA refuses each leaf (the CA excludes every IPv4 and IPv6 address).
    for ip in ["10.96.0.1", "10.244.1.7", "127.0.0.1", "::1", "fd00::1"] {
        let leaf = leaf_for_ip(&ca, ip.parse().unwrap(), now);
        let err = one_way(&trust, &leaf, ip, Clock::Real).await.expect_err(ip);
        assert!(
            err.contains("NameConstraint") || err.contains("name constraint"),
            "{ip}: {err}"
        );
    }
    // The same leaf from an unconstrained CA is accepted: the refusal is the CA's doing.
    let free = fresh_ca(now);
    let leaf = leaf_for_ip(&free, "10.96.0.1".parse().unwrap(), now);
    one_way(&[free.cert().clone()], &leaf, "10.96.0.1", Clock::Real)
        .await
        .expect("an IP leaf from an unconstrained CA");
}

#[test]
fn a_ca_renewal_keeps_its_constraints_and_an_old_ca_gets_them_at_its_renewal() {
    let now = real_now();
    let (ca, _) = operator_ca(&[], now);
    let permitted = ca.cert().info().permitted_dns.clone().unwrap();
    assert!(permitted.contains(&"vectors-headless.search.svc".to_owned()));
    assert!(!permitted.iter().any(|p| p == "svc" || p == "search.svc"));
    // Renewed on the same key: the same constraints, whatever names are asked for now.
    let renewed = secure_qdrant_operator::tls::renew_ca_for(
        &ca,
        &["other.example.com".to_owned()],
        year(),
        now,
    )
    .unwrap();
    assert_eq!(renewed.cert().info().permitted_dns, Some(permitted.clone()));
    // A CA issued before name constraints existed gets them at its renewal, on the same key.
    let old = fresh_ca(now);
    assert_eq!(old.cert().info().permitted_dns, None);
    let names = serving_dns_names(NAME, NS, "cluster.local", &[]);
    let renewed = secure_qdrant_operator::tls::renew_ca_for(
        &old,
        &secure_qdrant_operator::tls::permitted_subtrees(&names),
        year(),
        now,
    )
    .unwrap();
    assert_eq!(renewed.cert().info().permitted_dns, Some(permitted));
    assert!(renewed.cert().same_key(old.cert()));
}

#[test]
fn a_name_added_after_the_ca_was_issued_waits_for_a_new_ca_key() {
    let now = real_now();
    let (ca, first) = operator_ca(&[], now);
    let extra = vec!["qdrant.example.com".to_owned()];
    let input = TlsInputs {
        policy: TlsPolicy::default(),
        subject: CaSubject::new(NS, NAME),
        jitter: Jitter::for_instance(NS, NAME, "9d1c7c2e"),
        dns_names: serving_dns_names(NAME, NS, "cluster.local", &extra),
        ca: CaInput::Managed {
            secret: Some(&ca.to_secret_data()),
            rotation_requested: None,
            rotation_handled: None,
        },
        published: Some(&first.published.to_secret_data()),
        recorded_phase: None,
        rolled_out: None,
        clients_on_current: true,
        now,
    };
    let out = converge(&input).unwrap();
    assert_eq!(out.uncovered_names, extra);
    assert!(
        out.ca_change.is_none(),
        "the CA is not widened on the same key"
    );
    assert!(
        !out.published
            .leaf
            .cert()
            .info()
            .dns_names
            .contains(&extra[0]),
        "the leaf carries a name its CA may not sign"
    );
    // Asked for a new CA key: it permits the new name.
    let input = TlsInputs {
        ca: CaInput::Managed {
            secret: Some(&ca.to_secret_data()),
            rotation_requested: Some("1"),
            rotation_handled: None,
        },
        ..input
    };
    let out = converge(&input).unwrap();
    let new_ca = out.ca_change.unwrap();
    let new_ca = CaMaterial::from_secret_data(&new_ca.secret_data()).unwrap();
    assert!(
        new_ca
            .cert()
            .info()
            .permitted_dns
            .as_ref()
            .unwrap()
            .contains(&"qdrant.example.com".to_owned())
    );
}
