//! The client certificate of metrics scrapers, `<n>-metrics-client`.
//!
//! Qdrant's metrics port (`service.metrics_port`) uses the same TLS server config as REST: with
//! `spec.tls.clientCertificates` (`verify_https_client_certificate`) it demands a client
//! certificate too, so a scraper listed in `spec.network.metrics` needs one. The operator issues
//! it like the client certificates of QdrantAccessTokens (`src/access_tokens`): ECDSA P-256, EKU
//! clientAuth only, CN `metrics.<n>.<ns>`, signed by the CA that signs the serving certificate
//! (the operator's `<n>-ca` or the user's `spec.tls.caSecretRef`), with the instance's
//! certificate lifetime and renewBefore. The Secret (`kubernetes.io/tls`) holds `tls.crt`,
//! `tls.key` and `ca.crt`, the trust bundle that verifies Qdrant's serving certificate: what a
//! Prometheus `tlsConfig` refers to.
//!
//! During a CA key rollover it moves like the token certificates: kept from the old CA while
//! the pods do not trust the new one (TrustBoth), re-issued from the new CA in SignWithNew, and
//! the rollover leaves SignWithNew only once it comes from the new CA (the TLS step scans it
//! with the token Secrets: `super::tls`). With `spec.tls.certificateSecretRef` the operator
//! holds no CA key: the condition says so and no Secret is written.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use super::memo::get;
use super::ownership::own_secret_as;
use crate::children::meta::COMPONENT_METRICS_CLIENT;
use crate::conditions::WAIT;
use crate::error::Result;
use crate::tls::renewal::{LeafState, renewal_time};
use crate::tls::{
    CaMaterial, Certificate, ClientDecision, ClientReason, Jitter, LeafMaterial, Phase,
    PublishedTls, TlsError, TlsPolicy, issue_client, metrics_client_common_name, plan_client,
};
use crate::validate::{Instance, TlsSettings};

/// Condition type of a SecureQdrant whose scrapers need a client certificate
/// (`spec.tls.clientCertificates` and `spec.network.metrics`): `<n>-metrics-client` holds one.
pub const METRICS_CLIENT_CERTIFICATE_READY: &str = "MetricsClientCertificateReady";

/// What the metrics client certificate step decided.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsClient {
    /// Data of `<n>-metrics-client` (`tls.crt`, `tls.key`, `ca.crt`); None: none to write yet.
    pub data: Option<BTreeMap<String, ByteString>>,
    /// MetricsClientCertificateReady: (status, reason, message).
    pub condition: (bool, &'static str, String),
    /// When to look at it again (its renewal time, or soon while waiting).
    pub next_check: Option<Timestamp>,
    /// Issued in this reconcile: why, and until when it is valid.
    pub issued: Option<(ClientReason, Timestamp)>,
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// With `spec.tls.certificateSecretRef`: nothing can be issued.
pub fn no_signing_ca(inst: &Instance, certificate_secret: &str) -> MetricsClient {
    MetricsClient {
        data: None,
        condition: (
            false,
            "NoSigningCA",
            format!(
                "{} requires client certificates, also on the metrics port, but its serving \
                 certificate comes from Secret {certificate_secret} \
                 (spec.tls.certificateSecretRef): the operator holds no CA key to sign one for \
                 the scrapers; issue their client certificate from that CA",
                inst.name
            ),
        ),
        next_check: None,
        issued: None,
    }
}

/// Keeps, renews or issues the metrics client certificate from `ca` (the CA that signs now),
/// given what `<n>-tls` publishes in this reconcile (`published`: its bundle and rollover
/// phase). A Secret of that name controlled by another object is refused, never written.
/// Returns the decision and `<n>-metrics-client` as read (with a GET: no cache holds its data).
pub async fn ensure(
    client: &Client,
    inst: &Instance,
    settings: &TlsSettings,
    ca: &CaMaterial,
    published: &PublishedTls,
    now: Timestamp,
) -> Result<(MetricsClient, Option<Secret>)> {
    let ns = &inst.namespace;
    let name = inst.metrics_client_secret_name();
    let existing = get(client, ns, &name).await?;
    let existing = owned(client, inst, existing).await?;
    // The pods trust the CA that signs now once it is in the bundle they run with and the
    // first phase of a rollover (which rolls that bundle out) is over.
    let ca_trusted = published.trust_bundle.iter().any(|c| c.same_key(ca.cert()))
        && published.phase != Phase::TrustBoth;
    let policy = crate::tls::policy::policy(settings);
    let jitter = Jitter::for_instance(ns, &inst.name, &inst.owner.uid);
    let decide = |leaf: &std::result::Result<LeafMaterial, TlsError>| {
        plan(&policy, leaf, ca, ca_trusted, jitter, now)
    };
    // Read now from the API server: never a stale copy, so a certificate is never issued twice.
    let leaf = stored(existing.as_ref());
    let decision = decide(&leaf);
    let bundle = &published.trust_bundle;
    let Some(reason) = decision.issue else {
        let leaf = leaf.expect("a kept certificate was read");
        let kept = MetricsClient {
            data: Some(leaf.to_secret_data(bundle)),
            condition: ready(&name, &leaf),
            next_check: decision.next_check,
            issued: None,
        };
        return Ok((kept, existing));
    };
    // Not now: keep what still works, say why, look again soon.
    let usable = leaf
        .as_ref()
        .ok()
        .filter(|m| m.cert().valid_at(now) && m.cert().info().client_auth);
    let later = |reason: &'static str, message: String| MetricsClient {
        data: usable.map(|m| m.to_secret_data(bundle)),
        condition: (false, reason, message),
        next_check: now.checked_add(crate::tls::signed(WAIT)).ok(),
        issued: None,
    };
    if !ca_trusted {
        return Ok((
            later(
                "WaitingForCATrust",
                format!(
                    "{} is rolling over to a new CA: the metrics client certificate is issued from \
                 it once every pod trusts it",
                    inst.name
                ),
            ),
            existing,
        ));
    }
    let material = match issue_client(
        ca,
        &metrics_client_common_name(ns, &inst.name),
        policy.certificate_lifetime,
        now,
    ) {
        Ok(m) => m,
        Err(e) => {
            let failed = later(
                "IssueFailed",
                format!("could not issue the metrics client certificate: {e}"),
            );
            return Ok((failed, existing));
        }
    };
    let issued = issued(&name, &material, bundle, reason, &policy, jitter);
    Ok((issued, existing))
}

/// The Secret as this instance controls it: controlled by it, or adopted when annotated for
/// it; anything else is a conflict and is never written.
async fn owned(client: &Client, inst: &Instance, secret: Option<Secret>) -> Result<Option<Secret>> {
    match secret {
        Some(s) => Ok(Some(
            own_secret_as(client, inst, s, COMPONENT_METRICS_CLIENT).await?,
        )),
        None => Ok(None),
    }
}

/// The certificate a Secret holds (MissingKey when there is none).
fn stored(secret: Option<&Secret>) -> std::result::Result<LeafMaterial, TlsError> {
    let data = secret
        .and_then(|s| s.data.as_ref())
        .ok_or(TlsError::MissingKey(crate::tls::TLS_CRT))?;
    LeafMaterial::from_secret_data(data)
}

/// Whether the stored certificate is kept or (re)issued: the pure decision of
/// [`plan_client`], issuing held back while the pods do not trust `ca` yet.
fn plan(
    policy: &TlsPolicy,
    leaf: &std::result::Result<LeafMaterial, TlsError>,
    ca: &CaMaterial,
    ca_trusted: bool,
    jitter: Jitter,
    now: Timestamp,
) -> ClientDecision {
    let state = match leaf {
        Ok(leaf) => LeafState::Present(leaf),
        Err(TlsError::MissingKey(_)) => LeafState::Missing,
        Err(e) => LeafState::Unusable(e),
    };
    plan_client(policy, state, ca.cert(), !ca_trusted, jitter, now)
}

/// MetricsClientCertificateReady True for the certificate in Secret `name`.
fn ready(name: &str, m: &LeafMaterial) -> (bool, &'static str, String) {
    (
        true,
        "Issued",
        format!(
            "client certificate for metrics scrapers in Secret {name}, valid until {}",
            rfc3339(m.cert().not_after())
        ),
    )
}

/// A certificate issued in this reconcile, looked at again at its renewal time.
fn issued(
    name: &str,
    material: &LeafMaterial,
    bundle: &[Certificate],
    reason: ClientReason,
    policy: &TlsPolicy,
    jitter: Jitter,
) -> MetricsClient {
    let renewal = renewal_time(
        material.cert(),
        policy.leaf_renew_before(),
        jitter,
        policy.certificate_lifetime,
    );
    MetricsClient {
        data: Some(material.to_secret_data(bundle)),
        condition: ready(name, material),
        next_check: Some(renewal),
        issued: Some((reason, material.cert().not_after())),
    }
}
