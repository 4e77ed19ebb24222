//! The readiness probe with client certificates (`spec.tls.clientCertificates`), RUN under bash
//! against a loopback REST server that, like Qdrant with `verify_https_client_certificate`,
//! refuses every handshake without a client certificate from the instance's CA.
//!
//! The probe command is taken exactly as the StatefulSet renders it; only its two arguments (the
//! REST port and the TLS directory) are pointed at the test server and a temp dir holding the
//! `<n>-tls` files a pod mounts. Needs `openssl` on the test machine, as in the Qdrant image.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use secure_qdrant_operator::api_keys::ApiKeys;
use secure_qdrant_operator::children::{self, Material, PodTls};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::material::SecretValue;
use secure_qdrant_operator::qdrant::{HTTP_PORT, TLS_DIR};
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::{
    CaMaterial, CaSubject, LeafMaterial, issue_ca, issue_leaf, serving_dns_names,
};
use secure_qdrant_operator::validate::validate;
use std::future::poll_fn;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const NAME: &str = "vectors";
const NS: &str = "search";

/// Reads what is there (0: the peer closed).
async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut rb = ReadBuf::new(buf);
    poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, &mut rb)).await?;
    Ok(rb.filled().len())
}

/// Writes `buf`, flushes and shuts the TLS stream down (close_notify).
async fn write_and_close<S: AsyncWrite + Unpin>(s: &mut S, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *s).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    poll_fn(|cx| Pin::new(&mut *s).poll_flush(cx)).await?;
    poll_fn(|cx| Pin::new(&mut *s).poll_shutdown(cx)).await
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn probes(spec: &str) -> (Probe, Probe, Probe) {
    let sq: SecureQdrant = serde_yaml_ng::from_str(&format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {{name: {NAME}, namespace: {NS}, uid: u}}\nspec: {spec}\n"
    ))
    .unwrap();
    let inst = validate(&sq, &Settings::default()).unwrap();
    let material = Material {
        api_keys: ApiKeys {
            api_key: SecretValue::new("k1"),
            read_only: None,
            next: None,
            phase: Default::default(),
            salt: SecretValue::new("s1"),
        },
        tls: inst.tls.is_some().then(|| PodTls::placeholder(true)),
    };
    let c = children::build(&inst, &material)
        .statefulset
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let c = &c.containers[0];
    (
        c.readiness_probe.clone().unwrap(),
        c.liveness_probe.clone().unwrap(),
        c.startup_probe.clone().unwrap(),
    )
}

/// The readiness command, its port and TLS directory replaced by the test's.
fn readiness_command(port: u16, tls_dir: &Path) -> Vec<String> {
    let (readiness, _, _) = probes("{tls: {clientCertificates: true}}");
    let mut command = readiness.exec.unwrap().command.unwrap();
    let n = command.len();
    assert_eq!(command[..2], ["/bin/bash", "-c"]);
    assert_eq!(
        command[n - 2..],
        [HTTP_PORT.to_string(), TLS_DIR.to_owned()]
    );
    command[n - 2] = port.to_string();
    command[n - 1] = tls_dir.display().to_string();
    command
}

fn issue(now: Timestamp) -> (CaMaterial, LeafMaterial) {
    let ca = issue_ca(
        &CaSubject::new(NS, NAME),
        SignedDuration::from_hours(8760),
        now,
    )
    .unwrap();
    let names = serving_dns_names(NAME, NS, "cluster.local", &[]);
    let leaf = issue_leaf(&ca, &names, SignedDuration::from_hours(2160), now).unwrap();
    (ca, leaf)
}

/// The `<n>-tls` files of `leaf`, as a pod mounts them.
fn write_tls_dir(dir: &Path, ca: &CaMaterial, leaf: &LeafMaterial) {
    let data: BTreeMap<String, k8s_openapi::ByteString> =
        leaf.to_secret_data(std::slice::from_ref(ca.cert()));
    for (k, v) in data {
        std::fs::write(dir.join(k), v.0).unwrap();
    }
}

/// A REST server serving `leaf`, requiring a client certificate chaining to `ca`, answering
/// every request with `status`. Returns its port and the request heads it received.
async fn serve(
    ca: &CaMaterial,
    leaf: &LeafMaterial,
    status: &'static str,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert().der().to_vec()))
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(leaf.cert().pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key().expose_pem().as_bytes()).unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap(),
        )
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                // A handshake without a trusted client certificate fails here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match read_some(&mut tls, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = "ok";
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = write_and_close(&mut tls, response.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

/// Runs the probe command; true when it reports ready (exit 0).
async fn probe_ready(port: u16, tls_dir: &Path) -> bool {
    let command = readiness_command(port, tls_dir);
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("bash runs")
            .status
            .success()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_probe_asks_readyz_with_the_pods_certificate_and_is_ready_only_on_200() {
    let now = Timestamp::now();
    let (ca, leaf) = issue(now);
    let dir = tempfile::tempdir().unwrap();
    write_tls_dir(dir.path(), &ca, &leaf);

    let (ready, seen) = serve(&ca, &leaf, "200 OK").await;
    assert!(probe_ready(ready, dir.path()).await, "200: ready");
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /readyz HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        !heads[0].to_lowercase().contains("api-key") && !heads[0].contains("Authorization"),
        "no credential is sent: {heads:?}"
    );

    // Qdrant's answer while the peer has not joined or caught up.
    let (not_ready, seen) = serve(&ca, &leaf, "503 Service Unavailable").await;
    assert!(!probe_ready(not_ready, dir.path()).await, "503: not ready");
    assert_eq!(seen.lock().unwrap().len(), 1, "the request was made");

    // Nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert!(
        !probe_ready(closed, dir.path()).await,
        "no server: not ready"
    );
}

#[tokio::test]
async fn a_certificate_the_server_does_not_trust_is_not_ready() {
    // The pod's certificate is what gets the probe through the client-certificate check: one
    // from another CA gets no answer (so a kubelet-style probe without one would get none).
    let now = Timestamp::now();
    let (ca, leaf) = issue(now);
    let (other_ca, other_leaf) = issue(now);
    let dir = tempfile::tempdir().unwrap();
    write_tls_dir(dir.path(), &other_ca, &other_leaf);
    let (port, seen) = serve(&ca, &leaf, "200 OK").await;
    assert!(!probe_ready(port, dir.path()).await);
    assert!(
        seen.lock().unwrap().is_empty(),
        "the handshake failed first"
    );
}

#[tokio::test]
async fn without_openssl_the_probe_checks_only_that_the_port_is_open() {
    let command = |port: u16| readiness_command(port, Path::new("/nonexistent"));
    // A PATH with bash but no openssl.
    let bin = tempfile::tempdir().unwrap();
    let bash = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v bash"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(bash.trim(), bin.path().join("bash")).unwrap();
    let run = |port: u16| {
        let c = command(port);
        std::process::Command::new(&c[0])
            .args(&c[1..])
            .env_clear()
            .env("PATH", bin.path())
            .output()
            .unwrap()
    };
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = run(open.local_addr().unwrap().port());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no openssl"));
    let closed = open.local_addr().unwrap().port();
    drop(open);
    assert!(!run(closed).status.success());
}

#[test]
fn only_readiness_runs_in_the_container_and_only_with_client_certificates() {
    let (readiness, liveness, startup) = probes("{tls: {clientCertificates: true}}");
    assert!(
        readiness.exec.is_some() && readiness.http_get.is_none() && readiness.tcp_socket.is_none()
    );
    for p in [&liveness, &startup] {
        assert!(p.tcp_socket.is_some() && p.exec.is_none(), "{p:?}");
    }
    assert_eq!(readiness.timeout_seconds, Some(5));
    // Without client certificates the kubelet asks /readyz itself.
    for spec in ["{}", "{tls: {enabled: false}}", "{replicas: 3}"] {
        let (readiness, _, _) = probes(spec);
        assert!(readiness.exec.is_none(), "{spec}");
        assert_eq!(
            readiness.http_get.unwrap().path.as_deref(),
            Some("/readyz"),
            "{spec}"
        );
    }
}
