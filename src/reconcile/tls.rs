//! The TLS step: reads the CA and serving-certificate Secrets, lets [`crate::tls::converge`]
//! decide (pure), and writes the CA Secret when it changes. The serving certificate Secret
//! `<n>-tls` is applied with the other children; the pods mount it.
//!
//! - Operator CA: `<n>-ca` is created once and afterwards only renewed on the same key (a
//!   compare-and-swap update), or replaced through the rollover when its key is lost or a new one
//!   is asked for (annotation `secureqdrant.dev/rotate-ca`).
//! - The user's CA (`spec.tls.caSecretRef`): read, never written.
//! - The user's certificate (`spec.tls.certificateSecretRef`): read, mounted, fingerprinted so a
//!   change rolls the pods; a warning condition from `renewBefore` ahead of expiry.
//!
//! Referenced user Secrets are used only when they allow the instance
//! ([`super::references`]); they are re-read on every reconcile, at least every
//! [`EXTERNAL_POLL`], and the operator's watch of labelled Secrets reconciles at once on a change.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::memo::{Inputs, Memo, Version, get, version_cached, version_read};
use super::metrics_client;
use super::stores::Stores;
use crate::children::meta::{COMPONENT_METRICS_CLIENT, LABEL_COMPONENT, LABEL_INSTANCE, MANAGER};
use crate::children::{PodTls, secrets};
use crate::crd::{CertificateStatus, SecureQdrant};
use crate::error::{Error, Result};
use crate::events::Notice;
use crate::rollout::rolled_out_annotation;
use crate::statefulset_view::StatefulSetView;
use crate::tls::{
    self, CaAction, CaInput, CaSubject, Jitter, LeafAction, ROTATE_CA_ANNOTATION,
    TLS_FINGERPRINT_ANNOTATION, TlsInputs, Transition,
};
use crate::tokens;
// Moved to the TLS domain; re-exported for the callers that still name them here.
pub use crate::tls::policy::policy;
pub use crate::tls::signed;
use crate::validate::{Instance, TlsSettings, TlsSource};

/// How often Secrets the user references are re-read at the latest.
pub const EXTERNAL_POLL: Duration = Duration::from_secs(300);

/// The outcome of the TLS step.
#[derive(Clone, Debug)]
pub struct TlsReport {
    pub pod_tls: PodTls,
    pub certificate: CertificateStatus,
    /// CertificateReady: (status, reason, message).
    pub ready: (bool, &'static str, String),
    pub requeue_after: Duration,
    pub notices: Vec<Notice>,
    /// MetricsClientCertificateReady: (status, reason, message); None when scrapers need no
    /// client certificate.
    pub metrics_client: Option<(bool, &'static str, String)>,
    /// When the operator renews the CA it generated (None for a CA the user brings).
    pub ca_renewal_time: Option<Timestamp>,
    /// The phase of a running CA key rollover (None when Stable), for the metrics.
    pub rollover_phase: Option<&'static str>,
    /// `<n>-tls` and `<n>-metrics-client` as this reconcile read them, which their writes
    /// compare with (only when `pod_tls` asks to write them).
    pub read: ReadSecrets,
}

/// Secrets as one reconcile read them from the API server (None: absent), for the apply step.
/// Dropped with the reconcile; never shown (the Debug form names versions only).
#[derive(Clone, Default)]
pub struct ReadSecrets {
    pub tls: Option<Secret>,
    pub metrics_client: Option<Secret>,
}

impl std::fmt::Debug for ReadSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSecrets")
            .field("tls", &version_read(self.tls.as_ref()))
            .field(
                "metrics_client",
                &version_read(self.metrics_client.as_ref()),
            )
            .finish()
    }
}

/// What a TLS step that wrote nothing decided, remembered under the versions of the Secrets it
/// read (see [`super::memo`]): no key, no certificate, only what status and the pod template
/// show, and when to decide again.
#[derive(Clone, Debug)]
pub struct TlsFacts {
    fingerprint: String,
    certificate: CertificateStatus,
    ready: (bool, &'static str, String),
    metrics_client: Option<(bool, &'static str, String)>,
    ca_renewal_time: Option<Timestamp>,
    /// The next decision is due then (a renewal, a wait): the facts are not used from then on.
    deadline: Timestamp,
}

impl TlsFacts {
    fn of(report: &TlsReport, now: Timestamp) -> Self {
        TlsFacts {
            fingerprint: report.pod_tls.fingerprint.clone(),
            certificate: report.certificate.clone(),
            ready: report.ready.clone(),
            metrics_client: report.metrics_client.clone(),
            ca_renewal_time: report.ca_renewal_time,
            deadline: now.checked_add(signed(report.requeue_after)).unwrap_or(now),
        }
    }

    /// The report of a reconcile that reuses these facts: nothing to write.
    fn report(self, now: Timestamp) -> TlsReport {
        let wait = Duration::try_from(self.deadline.duration_since(now)).unwrap_or_default();
        TlsReport {
            pod_tls: PodTls {
                secret: None,
                fingerprint: self.fingerprint,
                metrics_client: None,
            },
            certificate: self.certificate,
            ready: self.ready,
            requeue_after: wait.max(Duration::from_secs(1)),
            notices: Vec::new(),
            metrics_client: self.metrics_client,
            ca_renewal_time: self.ca_renewal_time,
            rollover_phase: None,
            read: ReadSecrets::default(),
        }
    }
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn read_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>> {
    get(client, ns, name).await
}

fn tls_error(secret: &str, source: tls::TlsError) -> Error {
    Error::Tls {
        secret: secret.to_owned(),
        source,
    }
}

/// The fingerprint of the StatefulSet's pods once a rollout is complete and every pod is ready.
pub fn rolled_out_fingerprint(sts: Option<&StatefulSetView>) -> Option<String> {
    rolled_out_annotation(sts, TLS_FINGERPRINT_ANNOTATION)
}

/// Runs the TLS step for an instance with TLS on.
#[allow(clippy::too_many_arguments)]
pub async fn ensure(
    client: &Client,
    stores: &Stores,
    memo: &Memo<TlsFacts>,
    sq: &SecureQdrant,
    inst: &Instance,
    settings: &TlsSettings,
    sts: Option<&StatefulSetView>,
    now: Timestamp,
) -> Result<TlsReport> {
    let mut report = match &settings.source {
        TlsSource::UserCertificate(name) => {
            user_certificate(client, inst, settings, name, now).await
        }
        _ => {
            let cx = Issuing {
                client,
                stores,
                memo,
                inst,
                settings,
                now,
            };
            issued(&cx, sts).await
        }
    }?;
    // A MetricsClientCertificateReady that turns False is announced once.
    if let Some((false, reason, message)) = &report.metrics_client {
        let before = sq.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == metrics_client::METRICS_CLIENT_CERTIFICATE_READY)
        });
        if before.is_none_or(|c| c.status != "False" || c.reason != *reason) {
            report.notices.push(Notice {
                type_: EventType::Warning,
                reason,
                note: message.clone(),
            });
        }
    }
    Ok(report)
}

async fn user_certificate(
    client: &Client,
    inst: &Instance,
    settings: &TlsSettings,
    name: &str,
    now: Timestamp,
) -> Result<TlsReport> {
    let secret = read_secret(client, &inst.namespace, name)
        .await?
        .ok_or_else(|| tls_error(name, tls::TlsError::MissingKey(tls::TLS_CRT)))?;
    super::references::check(&secret, inst, "spec.tls.certificateSecretRef")?;
    let data = secret.data.unwrap_or_default();
    let read = tls::read_published(Some(&data));
    let leaf = read.leaf.map_err(|e| tls_error(name, e))?;
    if read.bundle.is_empty() {
        return Err(tls_error(name, tls::TlsError::MissingKey(tls::CA_CRT)));
    }
    refuse_without_client_auth(&leaf, inst, settings, name)?;
    let not_after = leaf.cert().not_after();
    let warn_at = not_after
        .checked_sub(signed(settings.renew_before))
        .unwrap_or(not_after);
    let ca_not_after = read
        .bundle
        .iter()
        .map(|c| c.not_after())
        .min()
        .unwrap_or(not_after);
    let metrics_client = inst
        .metrics_need_client_certificate()
        .then(|| metrics_client::no_signing_ca(inst, name).condition);
    Ok(TlsReport {
        pod_tls: PodTls {
            secret: None,
            fingerprint: user_fingerprint(&data),
            metrics_client: None,
        },
        certificate: CertificateStatus {
            not_after: Some(rfc3339(not_after)),
            renewal_time: Some(rfc3339(warn_at)),
            ca_not_after: Some(rfc3339(ca_not_after)),
        },
        ready: user_certificate_ready(name, not_after, warn_at, now),
        requeue_after: user_certificate_requeue(warn_at, not_after, now),
        notices: Vec::new(),
        metrics_client,
        ca_renewal_time: None,
        rollover_phase: None,
        read: ReadSecrets::default(),
    })
}

/// The pod presents its own certificate as a client: to its peers (p2p mTLS), and to its own
/// REST port in the readiness check when clients must present certificates. Without the
/// clientAuth usage that fails, so such a certificate is refused before anything is built.
fn refuse_without_client_auth(
    leaf: &tls::LeafMaterial,
    inst: &Instance,
    settings: &TlsSettings,
    name: &str,
) -> Result<()> {
    if leaf.cert().info().client_auth {
        return Ok(());
    }
    let needed_by = match (inst.cluster_mode(), settings.client_certificates) {
        (true, _) => Some("peer-to-peer mTLS (spec.replicas > 1)"),
        (false, true) => Some("the readiness check with spec.tls.clientCertificates"),
        (false, false) => None,
    };
    match needed_by {
        Some(what) => Err(tls_error(name, tls::TlsError::NoClientAuth(what))),
        None => Ok(()),
    }
}

/// SHA-256 (hex) over the user's `tls.crt`, `tls.key` and `ca.crt`: a change rolls the pods.
fn user_fingerprint(data: &BTreeMap<String, k8s_openapi::ByteString>) -> String {
    let mut h = Sha256::new();
    for key in [tls::TLS_CRT, tls::TLS_KEY, tls::CA_CRT] {
        h.update(key.as_bytes());
        h.update(b"\0");
        h.update(Sha256::digest(
            data.get(key).map(|b| b.0.as_slice()).unwrap_or_default(),
        ));
    }
    hex::encode(h.finalize())
}

/// CertificateReady for the user's certificate: valid, expiring soon (from `renewBefore` ahead
/// of its end), or expired.
fn user_certificate_ready(
    name: &str,
    not_after: Timestamp,
    warn_at: Timestamp,
    now: Timestamp,
) -> (bool, &'static str, String) {
    if now >= not_after {
        (
            false,
            "Expired",
            format!(
                "the certificate in Secret {name} expired at {}",
                rfc3339(not_after)
            ),
        )
    } else if now >= warn_at {
        (
            false,
            "ExpiringSoon",
            format!(
                "the certificate in Secret {name} expires at {}: renew it",
                rfc3339(not_after)
            ),
        )
    } else {
        (
            true,
            "Valid",
            format!(
                "certificate from Secret {name} valid until {}",
                rfc3339(not_after)
            ),
        )
    }
}

/// Look again when the condition changes next (the warning, then the expiry), and at least
/// every EXTERNAL_POLL to notice the user's renewal; never in a tight loop once warning.
fn user_certificate_requeue(warn_at: Timestamp, not_after: Timestamp, now: Timestamp) -> Duration {
    [warn_at, not_after]
        .into_iter()
        .find(|t| *t > now)
        .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
        .map_or(EXTERNAL_POLL, |d| {
            EXTERNAL_POLL.min(d.max(Duration::from_secs(1)))
        })
}

/// The data of a Secret that does not exist, for a `<n>-tls` that exists without data.
static NO_DATA: BTreeMap<String, k8s_openapi::ByteString> = BTreeMap::new();

/// What every step of the issued-certificate path works with: where it reads from (the API
/// server, the cache's metadata, the memo), the instance, its TLS settings and the time.
#[derive(Clone, Copy)]
struct Issuing<'a> {
    client: &'a Client,
    stores: &'a Stores,
    memo: &'a Memo<TlsFacts>,
    inst: &'a Instance,
    settings: &'a TlsSettings,
    now: Timestamp,
}

/// The versions of the Secrets the issued-certificate path reads: the signing CA, `<n>-tls`,
/// `<n>-metrics-client`.
type Versions = (Version, Version, Version);

/// The issued-certificate path: the facts remembered for exactly the Secrets the cache shows
/// (and a user's CA as read now), before their next decision; else the Secrets read and
/// [`tls::converge`] asked.
async fn issued(cx: &Issuing<'_>, sts: Option<&StatefulSetView>) -> Result<TlsReport> {
    let Issuing {
        inst,
        settings,
        now,
        ..
    } = *cx;
    let (ns, source) = (&inst.namespace, &settings.source);
    // A user's CA is a referenced Secret, read on every reconcile.
    let user_ca = match source {
        TlsSource::UserCa(name) => Some(read_secret(cx.client, ns, name).await?),
        _ => None,
    };
    let rolled_out = rolled_out_fingerprint(sts);
    // What the pods run with (`rolled_out`) is no input: it decides only the steps of a
    // rollover, and nothing is remembered outside the Stable phase.
    let memo_key = |(ca, tls, metrics): &Versions| {
        Inputs::new("tls")
            .instance(inst)
            .version(ca)
            .version(tls)
            .version(metrics)
            .finish()
    };
    let metrics_name = inst.metrics_client_secret();
    let cached_version =
        |name: Option<String>| name.and_then(|n| version_cached(cx.stores, ns, &n));
    let cached: Versions = (
        match &user_ca {
            Some(ca) => version_read(ca.as_ref()),
            None => cached_version(Some(inst.ca_secret_name())),
        },
        cached_version(inst.tls_secret_name()),
        cached_version(metrics_name.clone()),
    );
    let who = format!("{ns}/{}", inst.name);
    if let Some(facts) = cx
        .memo
        .get(&who, &memo_key(&cached))
        .filter(|f| now < f.deadline)
    {
        return Ok(facts.report(now));
    }
    let secrets = read_issued_secrets(cx.client, inst, source, user_ca).await?;
    let read: Versions = (
        version_read(secrets.ca.as_ref()),
        version_read(secrets.published.as_ref()),
        Version::None,
    );
    let (report, settled, metrics_read) = converge(cx, &secrets, rolled_out.as_deref()).await?;
    let read = (read.0, read.1, version_read(metrics_read.as_ref()));
    let every_read =
        read.0.is_some() && read.1.is_some() && (metrics_name.is_none() || read.2.is_some());
    if settled && every_read {
        cx.memo
            .remember(who, memo_key(&read), TlsFacts::of(&report, now));
    }
    Ok(TlsReport {
        read: ReadSecrets {
            tls: secrets.published,
            metrics_client: metrics_read,
        },
        ..report
    })
}

/// Asks [`tls::converge`] what the Secrets must hold, writes `<n>-ca` when it changes, and
/// runs the metrics client certificate step. Returns the report, whether nothing was written
/// or is due before its requeue (the state stays as it is until a Secret changes), and
/// `<n>-metrics-client` as read.
async fn converge(
    cx: &Issuing<'_>,
    secrets: &IssuedSecrets,
    rolled_out: Option<&str>,
) -> Result<(TlsReport, bool, Option<Secret>)> {
    let Issuing {
        client,
        inst,
        settings,
        now,
        ..
    } = *cx;
    let ns = &inst.namespace;
    let source = &settings.source;
    let ca_data = secrets.ca.as_ref().and_then(|s| s.data.as_ref());
    let recorded_phase = secrets
        .published
        .as_ref()
        .and_then(|s| s.annotations().get(tls::ROLLOVER_PHASE_ANNOTATION))
        .map(String::as_str);
    let clients = clients_for_rollover(cx, recorded_phase, ca_data).await?;
    let input = TlsInputs {
        policy: policy(settings),
        subject: CaSubject::new(ns.clone(), inst.name.clone()),
        jitter: Jitter::for_instance(ns, &inst.name, &inst.owner.uid),
        dns_names: tls::serving_dns_names(
            &inst.name,
            ns,
            &inst.cluster_domain,
            &settings.extra_dns_names,
        ),
        ca: ca_input(inst, source, secrets)?,
        published: secrets
            .published
            .as_ref()
            .map(|s| s.data.as_ref().unwrap_or(&NO_DATA)),
        recorded_phase,
        rolled_out,
        clients_on_current: clients.moved(now),
        now,
    };
    let outcome = tls::converge(&input).map_err(|e| tls_error(&secrets.ca_name, e))?;

    let mut notices = Vec::new();
    if let Some(change) = &outcome.ca_change {
        write_ca(client, inst, secrets.ca.as_ref(), change).await?;
        notices.push(ca_notice(change, secrets));
    }
    if let LeafAction::Issue(why) = &outcome.leaf_action {
        notices.push(leaf_notice(why, secrets, outcome.not_after));
    }
    // The scrapers' client certificate, from the CA that signs now and as far as the pods
    // trust it (after `<n>-ca` is written: it may be a new CA).
    let (metrics, metrics_read) = match inst.metrics_client_secret() {
        Some(_) => {
            let (m, read) = metrics_client::ensure(
                client,
                inst,
                settings,
                &outcome.ca,
                &outcome.published,
                now,
            )
            .await?;
            (Some(m), read)
        }
        None => (None, None),
    };
    if let Some((why, not_after)) = metrics.as_ref().and_then(|m| m.issued.as_ref()) {
        notices.push(metrics_client_notice(inst, why, *not_after));
    }
    notices.extend(rollover_notice(&outcome));
    let settled = outcome.ca_change.is_none()
        && outcome.leaf_action == LeafAction::Keep
        && !outcome.tls_changed
        && outcome.transition == Transition::Stay
        && outcome.published.phase == tls::Phase::Stable
        && metrics.as_ref().is_none_or(|m| m.issued.is_none());
    let report = issued_report(inst, outcome, metrics, &clients, notices, now);
    Ok((report, settled, metrics_read))
}

/// The Secrets the operator's certificates are issued from and published in.
struct IssuedSecrets {
    /// `<n>-ca`, or the user's `spec.tls.caSecretRef`.
    ca_name: String,
    /// None: it does not exist.
    ca: Option<Secret>,
    /// `<n>-tls`.
    tls_name: String,
    /// None: it does not exist.
    published: Option<Secret>,
}

/// Reads the signing CA's Secret (the user's only when it allows the instance, the operator's
/// only when it owns it) and `<n>-tls` (only when the operator owns it). `user_ca`: the user's
/// CA Secret, already read.
async fn read_issued_secrets(
    client: &Client,
    inst: &Instance,
    source: &TlsSource,
    user_ca: Option<Option<Secret>>,
) -> Result<IssuedSecrets> {
    let ns = &inst.namespace;
    let ca_name = match source {
        TlsSource::UserCa(name) => name.clone(),
        _ => inst.ca_secret_name(),
    };
    let ca_secret = match user_ca {
        Some(secret) => secret,
        None => read_secret(client, ns, &ca_name).await?,
    };
    let ca = match (source, ca_secret) {
        (TlsSource::UserCa(_), Some(secret)) => {
            super::references::check(&secret, inst, "spec.tls.caSecretRef")?;
            Some(secret)
        }
        (_, Some(secret)) => Some(super::ownership::own_secret(client, inst, secret).await?),
        (_, None) => None,
    };
    let tls_name = inst.tls_secret_name().expect("TLS is on");
    let published = match read_secret(client, ns, &tls_name).await? {
        Some(secret) => Some(super::ownership::own_secret(client, inst, secret).await?),
        None => None,
    };
    Ok(IssuedSecrets {
        ca_name,
        ca,
        tls_name,
        published,
    })
}

/// Where the signing CA comes from: the user's CA Secret (which must exist), or `<n>-ca` with
/// the SecureQdrant's rotate-ca request and the request `<n>-ca` last handled.
fn ca_input<'a>(
    inst: &'a Instance,
    source: &TlsSource,
    secrets: &'a IssuedSecrets,
) -> Result<CaInput<'a>> {
    let ca_data = secrets.ca.as_ref().and_then(|s| s.data.as_ref());
    Ok(match source {
        TlsSource::UserCa(_) => {
            CaInput::External(ca_data.ok_or_else(|| {
                tls_error(&secrets.ca_name, tls::TlsError::MissingKey(tls::TLS_CRT))
            })?)
        }
        _ => CaInput::Managed {
            secret: ca_data,
            rotation_requested: inst.ca_rotation_request.as_deref(),
            rotation_handled: secrets
                .ca
                .as_ref()
                .and_then(|s| s.annotations().get(tls::CA_ROTATION_HANDLED_ANNOTATION))
                .map(String::as_str),
        },
    })
}

/// The applications' client certificates, as far as a CA key rollover waits for them. Only the
/// step out of SignWithNew looks at them: the Secrets are not read on any other reconcile.
async fn clients_for_rollover(
    cx: &Issuing<'_>,
    recorded_phase: Option<&str>,
    ca_data: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
) -> Result<ClientCertificates> {
    let in_sign_with_new = recorded_phase == Some(tls::Phase::SignWithNew.as_str());
    if cx.settings.client_certificates && in_sign_with_new {
        client_certificates(cx, ca_data).await
    } else {
        Ok(ClientCertificates::default())
    }
}

/// The Event for a written `<n>-ca`: a first CA, a replaced key, or a renewal.
fn ca_notice(change: &tls::CaChange, secrets: &IssuedSecrets) -> Notice {
    let ca_name = &secrets.ca_name;
    let (type_, reason, note) = match &change.action {
        // A first CA. With `<n>-tls` already published (a deleted `<n>-ca`), it is a
        // replacement of the trust root: the Warning below.
        CaAction::Create(_) if secrets.ca.is_none() && secrets.published.is_none() => (
            EventType::Normal,
            "CAIssued",
            format!("issued the instance CA in Secret {ca_name}"),
        ),
        CaAction::Create(why) => (
            EventType::Warning,
            "CAReplaced",
            format!("replaced the CA key in Secret {ca_name} ({why:?}); rolling over trust"),
        ),
        _ => (
            EventType::Normal,
            "CARenewed",
            format!("renewed the CA in Secret {ca_name} on the same key"),
        ),
    };
    Notice {
        type_,
        reason,
        note,
    }
}

/// The Event for an issued serving certificate.
fn leaf_notice(why: &tls::LeafReason, secrets: &IssuedSecrets, not_after: Timestamp) -> Notice {
    Notice {
        type_: EventType::Normal,
        reason: if secrets.published.is_some() {
            "CertificateRenewed"
        } else {
            "CertificateIssued"
        },
        note: format!(
            "issued the serving certificate in Secret {} ({why:?}), valid until {}",
            secrets.tls_name,
            rfc3339(not_after)
        ),
    }
}

/// The Event for an issued client certificate of the metrics scrapers.
fn metrics_client_notice(inst: &Instance, why: &tls::ClientReason, not_after: Timestamp) -> Notice {
    Notice {
        type_: EventType::Normal,
        reason: "MetricsClientCertificateIssued",
        note: format!(
            "issued the client certificate for metrics scrapers in Secret {} ({}), valid \
             until {}",
            inst.metrics_client_secret_name(),
            why.describe(),
            rfc3339(not_after)
        ),
    }
}

/// The Event for a step of a CA key rollover.
fn rollover_notice(outcome: &tls::TlsOutcome) -> Option<Notice> {
    match outcome.transition {
        Transition::Stay => None,
        other => Some(Notice {
            type_: EventType::Normal,
            reason: "CARollover",
            note: format!(
                "CA rollover {other:?}: phase {}",
                outcome.published.phase.as_str()
            ),
        }),
    }
}

/// The report of the issued-certificate path: what the pods mount, the status, and the
/// earliest of the serving and the metrics client certificates' next checks.
fn issued_report(
    inst: &Instance,
    outcome: tls::TlsOutcome,
    metrics: Option<metrics_client::MetricsClient>,
    clients: &ClientCertificates,
    notices: Vec<Notice>,
    now: Timestamp,
) -> TlsReport {
    let mut requeue_after = outcome.requeue_after;
    if let Some(next) = metrics.as_ref().and_then(|m| m.next_check) {
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
        requeue_after = requeue_after.min(wait.max(Duration::from_secs(1)));
    }
    TlsReport {
        pod_tls: PodTls {
            secret: Some((
                outcome.published.to_secret_data(),
                outcome.published.annotations(),
            )),
            fingerprint: outcome.published.fingerprint(),
            metrics_client: metrics.as_ref().and_then(|m| m.data.clone()),
        },
        certificate: CertificateStatus {
            not_after: Some(rfc3339(outcome.not_after)),
            renewal_time: Some(rfc3339(outcome.renewal_time)),
            ca_not_after: Some(rfc3339(outcome.ca_not_after)),
        },
        ready: issued_ready(inst, &outcome, clients, now),
        requeue_after,
        notices,
        metrics_client: metrics.map(|m| m.condition),
        ca_renewal_time: outcome.ca_renewal_time,
        rollover_phase: (outcome.published.phase != tls::Phase::Stable)
            .then(|| outcome.published.phase.as_str()),
        read: ReadSecrets::default(),
    }
}

/// CertificateReady for an issued serving certificate: valid until when, renewed when, which
/// wanted names the CA cannot sign, and what a CA rollover waits for.
fn issued_ready(
    inst: &Instance,
    outcome: &tls::TlsOutcome,
    clients: &ClientCertificates,
    now: Timestamp,
) -> (bool, &'static str, String) {
    let uncovered = if outcome.uncovered_names.is_empty() {
        String::new()
    } else {
        format!(
            "; left out of the certificate because the CA's name constraints do not permit \
             them: {} (they are added with a new CA key: kubectl annotate sq {} \
             {ROTATE_CA_ANNOTATION}=$(date +%s))",
            outcome.uncovered_names.join(", "),
            inst.name
        )
    };
    let waiting = if outcome.published.phase == tls::Phase::SignWithNew && !clients.moved(now) {
        clients.waiting_for()
    } else {
        String::new()
    };
    (
        true,
        "Valid",
        format!(
            "serving certificate valid until {}, renewed at {}{uncovered}{waiting}",
            rfc3339(outcome.not_after),
            rfc3339(outcome.renewal_time),
        ),
    )
}

/// How long applications get to pick up a re-issued client certificate (the kubelet updates a
/// mounted Secret within about a minute; the application must reload the files) before a CA
/// rollover drops the old CA from the pods' trust.
pub const CLIENT_PICKUP: SignedDuration = SignedDuration::from_mins(5);

/// The client certificates in this instance's QdrantAccessToken Secrets and its
/// `<n>-metrics-client`, seen from a CA key rollover.
#[derive(Debug, Default)]
struct ClientCertificates {
    /// Secrets whose certificate does not chain to the CA that signs now.
    lagging: Vec<String>,
    /// When the newest certificate from that CA was issued (its NotBefore is backdated).
    newest_issued: Option<Timestamp>,
}

impl ClientCertificates {
    /// Every client certificate comes from the current CA, and applications had
    /// [`CLIENT_PICKUP`] to load the newest one.
    fn moved(&self, now: Timestamp) -> bool {
        self.lagging.is_empty()
            && self
                .newest_issued
                .is_none_or(|t| now >= t.saturating_add(CLIENT_PICKUP).unwrap_or(Timestamp::MAX))
    }

    /// Words for the CertificateReady message while the rollover waits.
    fn waiting_for(&self) -> String {
        if self.lagging.is_empty() {
            return format!(
                "; the CA rollover gives applications {} to load their new client certificates",
                CLIENT_PICKUP
            );
        }
        let mut names = self.lagging.clone();
        names.sort();
        let more = names.len().saturating_sub(3);
        names.truncate(3);
        format!(
            "; the CA rollover waits for {} client certificate(s) to be re-issued from the new \
             CA (Secrets {}{})",
            self.lagging.len(),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// Reads the client certificates of this instance's QdrantAccessToken Secrets and its
/// `<n>-metrics-client` against the CA in `ca_data` (the CA that signs now): the cache of
/// managed Secrets says which they are (metadata), each is read with a GET.
async fn client_certificates(
    cx: &Issuing<'_>,
    ca_data: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
) -> Result<ClientCertificates> {
    let Issuing { inst, now, .. } = *cx;
    let mut out = ClientCertificates::default();
    let Some(ca) = ca_data
        .and_then(|d| d.get(tls::TLS_CRT))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .and_then(|pem| tls::Certificate::from_pem(pem).ok())
    else {
        return Ok(out);
    };
    let names: Vec<String> = cx
        .stores
        .secrets
        .state()
        .iter()
        .filter(|s| s.namespace() == Some(inst.namespace.as_str()))
        .filter(|s| client_secret(&s.object_meta(), inst))
        .map(|s| s.name().to_owned())
        .collect();
    for name in names {
        // Checked again on what was read: it may have changed since the cache saw it.
        let Some(secret) = read_secret(cx.client, &inst.namespace, &name)
            .await?
            .filter(|s| client_secret(&s.metadata, inst))
        else {
            continue;
        };
        let Some(cert) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(tokens::CLIENT_CRT_KEY))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .and_then(|pem| tls::Certificate::from_pem(pem).ok())
        else {
            continue;
        };
        if !cert.is_signed_by(&ca) {
            out.lagging.push(name);
        } else {
            // Issued at NotBefore + the backdating; never later than now.
            let issued = cert
                .not_before()
                .saturating_add(tls::BACKDATE)
                .unwrap_or(Timestamp::MAX)
                .min(now);
            out.newest_issued = out.newest_issued.max(Some(issued));
        }
    }
    Ok(out)
}

/// Whether a Secret of this metadata holds a client certificate of the instance: a token's
/// Secret or the scrapers' `<n>-metrics-client`. Labels alone are anyone's to set: only a Secret
/// the operator wrote counts (a token's, controlled by a QdrantAccessToken; the scrapers',
/// controlled by this instance), so a labelled Secret holding another CA's certificate cannot
/// hold a rollover back.
fn client_secret(meta: &kube::api::ObjectMeta, inst: &Instance) -> bool {
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    let component = label(LABEL_COMPONENT);
    let client = (component == Some(tokens::COMPONENT_ACCESS_TOKEN)
        && controller.is_some_and(|r| {
            r.kind == "QdrantAccessToken" && r.api_version.starts_with("secureqdrant.dev/")
        }))
        || (component == Some(COMPONENT_METRICS_CLIENT)
            && inst.metrics_client_secret().as_deref() == meta.name.as_deref()
            && controller.is_some_and(|r| r.uid == inst.owner.uid));
    meta.namespace.as_deref() == Some(inst.namespace.as_str())
        && label(LABEL_INSTANCE) == Some(inst.name.as_str())
        && client
}

/// Writes `<n>-ca`: a create when it does not exist (fails rather than overwrites), else an
/// update guarded by the resourceVersion that was read (a concurrent change fails it).
async fn write_ca(
    client: &Client,
    inst: &Instance,
    existing: Option<&Secret>,
    change: &tls::CaChange,
) -> Result<()> {
    let name = inst.ca_secret_name();
    let api: Api<Secret> = Api::namespaced(client.clone(), &inst.namespace);
    // `render` shows the same object, with placeholders (`children::secrets::ca`).
    let mut secret = secrets::ca(inst, change.secret_data(), change.annotations());
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match existing {
        None => match api.create(&params, &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::SecretRace(name)),
            Err(source) => Err(Error::CreateSecret { name, source }),
        },
        Some(current) => {
            secret.metadata.resource_version = current.metadata.resource_version.clone();
            api.replace(&name, &params, &secret)
                .await
                .map(|_| ())
                .map_err(|source| Error::Apply {
                    kind: "Secret",
                    name,
                    source,
                })
        }
    }
}
