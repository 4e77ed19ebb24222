//! The client certificate that goes into a token Secret when its instance requires client
//! certificates (`spec.tls.clientCertificates`): signed by the CA that signs the instance's
//! serving certificate (the operator's `<n>-ca`, or the user's `spec.tls.caSecretRef`), with the
//! instance's certificate lifetime and renewBefore.
//!
//! A certificate is only issued from a CA the pods already trust: while a CA key rollover has
//! not rolled the new CA out (the published bundle lacks it, or the phase is TrustBoth), a
//! usable certificate from the old CA is kept, and a missing one waits. Nothing here blocks the
//! token itself (gRPC needs no client certificate): a certificate that cannot be issued now is
//! reported on ClientCertificateReady and looked at again soon, the last usable one kept. With
//! `spec.tls.certificateSecretRef` the operator holds no CA key and issues none.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

use super::outcome::{Blocked, ClientCondition};
use super::secrets::{instance_secret_ours, read};
use super::trust::TrustBundle;
use crate::conditions::{SECRET_NOT_ALLOWED, WAIT};
use crate::error::Result;
use crate::reconcile::Context;
use crate::reconcile::memo::{Version, version_read};
use crate::tls::renewal::{LeafState, renewal_time};
use crate::tls::{
    CaMaterial, ClientReason, Jitter, LeafMaterial, Phase, TlsError, TlsPolicy, client_common_name,
    issue_client, plan_client, signed,
};
use crate::tokens::{ValidToken, read_client_certificate};
use crate::validate::{Instance, TlsSettings, TlsSource};

/// The client certificate that goes into the token Secret.
pub(super) struct ClientCert {
    pub(super) material: Option<LeafMaterial>,
    /// Why it was issued in this reconcile (None: kept, or none).
    pub(super) issued: Option<ClientReason>,
    pub(super) renewal_time: Option<Timestamp>,
    pub(super) next_check: Option<Timestamp>,
    pub(super) condition: ClientCondition,
}

impl ClientCert {
    fn none(condition: ClientCondition) -> Self {
        ClientCert {
            material: None,
            issued: None,
            renewal_time: None,
            next_check: None,
            condition,
        }
    }
}

/// The operator's `<n>-ca`, which would sign the token's client certificate, is used only when
/// this very instance controls it (as its API key). Returns the version of `<n>-ca` as read
/// (None: not read, or absent).
pub(super) async fn operator_ca_ours(
    ctx: &Context,
    secrets: &Api<Secret>,
    inst: &Instance,
) -> Result<Result<Version, Blocked>> {
    if let Some(ca_name) = inst
        .tls
        .as_ref()
        .filter(|t| t.client_certificates)
        .and_then(|_| inst.operator_ca_secret_name())
        && let Some(secret) = read(ctx, secrets, &inst.namespace, &ca_name).await?
    {
        let version = version_read(Some(&secret));
        return Ok(instance_secret_ours(&secret, inst).map(|()| version));
    }
    Ok(Ok(None))
}

/// Not now: keeps the stored certificate while it still works, says why, looks again soon.
struct Later {
    usable: Option<LeafMaterial>,
    now: Timestamp,
}

impl Later {
    fn because(&self, reason: &'static str, message: String) -> ClientCert {
        ClientCert {
            material: self.usable.clone(),
            issued: None,
            renewal_time: None,
            next_check: self.now.checked_add(signed(WAIT)).ok(),
            condition: Some((false, reason, message)),
        }
    }
}

/// Issues, keeps or renews the token's client certificate (see the module's description).
pub(super) async fn client_certificate(
    ctx: &Context,
    secrets: &Api<Secret>,
    inst: &Instance,
    valid: &ValidToken,
    existing: Option<&Secret>,
    trust: &TrustBundle,
    now: Timestamp,
) -> Result<ClientCert> {
    let Some(settings) = inst.tls.as_ref().filter(|t| t.client_certificates) else {
        return Ok(ClientCert::none(None));
    };
    let stored = read_client_certificate(existing);
    let later = Later {
        usable: stored
            .as_ref()
            .ok()
            .filter(|m| m.cert().valid_at(now) && m.cert().info().client_auth)
            .cloned(),
        now,
    };
    let ca_name = match signing_ca_name(inst, settings) {
        Ok(name) => name,
        Err(no_ca) => return Ok(ClientCert::none(no_ca)),
    };
    let ca = match signing_ca(ctx, secrets, inst, settings, &ca_name, &later).await? {
        Ok(ca) => ca,
        Err(wait) => return Ok(wait),
    };
    let ca_trusted = trusted(trust, &ca);
    let policy = crate::tls::policy::policy(settings);
    let state = match &stored {
        Ok(leaf) => LeafState::Present(leaf),
        Err(TlsError::MissingKey(_)) => LeafState::Missing,
        Err(e) => LeafState::Unusable(e),
    };
    let jitter = Jitter::for_instance(&valid.namespace, &valid.name, &valid.owner.uid);
    let decision = plan_client(&policy, state, ca.cert(), !ca_trusted, jitter, now);
    let Some(reason) = decision.issue else {
        let material = stored.ok();
        let condition = material.as_ref().and_then(|m| ready(valid, m));
        return Ok(ClientCert {
            material,
            issued: None,
            renewal_time: decision.renewal_time,
            next_check: decision.next_check,
            condition,
        });
    };
    if !ca_trusted {
        return Ok(later.because(
            "WaitingForCATrust",
            format!(
                "{} is rolling over to a new CA: a client certificate is issued from it once \
                 every pod trusts it",
                inst.name
            ),
        ));
    }
    Ok(issue(&ca, &ca_name, &policy, jitter, valid, reason, &later))
}

/// The Secret of the CA that signs client certificates, or ClientCertificateReady=False when
/// the serving certificate is the user's own (`spec.tls.certificateSecretRef`): the operator
/// holds no CA key then.
fn signing_ca_name(inst: &Instance, settings: &TlsSettings) -> Result<String, ClientCondition> {
    match &settings.source {
        TlsSource::UserCertificate(name) => Err(Some((
            false,
            "NoSigningCA",
            format!(
                "{} requires client certificates but its serving certificate comes from Secret {name} \
                 (spec.tls.certificateSecretRef): the operator holds no CA key to sign one; \
                 issue the application's client certificate from that CA",
                inst.name
            ),
        ))),
        TlsSource::UserCa(name) => Ok(name.clone()),
        TlsSource::OperatorCa => Ok(inst.ca_secret_name()),
    }
}

/// The CA that signs client certificates, once it may and can: a user's CA only when its Secret
/// allows this instance.
async fn signing_ca(
    ctx: &Context,
    secrets: &Api<Secret>,
    inst: &Instance,
    settings: &TlsSettings,
    ca_name: &str,
    later: &Later,
) -> Result<Result<CaMaterial, ClientCert>> {
    let ca_secret = read(ctx, secrets, &inst.namespace, ca_name).await?;
    if let (TlsSource::UserCa(_), Some(secret)) = (&settings.source, &ca_secret)
        && let Err(e) = crate::reconcile::references::check(secret, inst, "spec.tls.caSecretRef")
    {
        return Ok(Err(later.because(SECRET_NOT_ALLOWED, e.to_string())));
    }
    let ca = ca_secret
        .and_then(|s| s.data)
        .map(|d| CaMaterial::from_secret_data(&d));
    Ok(match ca {
        Some(Ok(ca)) => Ok(ca),
        Some(Err(e)) => Err(later.because(
            "CANotUsable",
            format!(
                "the CA of {} (Secret {ca_name}) is not usable: {e}",
                inst.name
            ),
        )),
        None => Err(later.because(
            "WaitingForCA",
            format!(
                "the CA of {} (Secret {ca_name}) is not ready yet",
                inst.name
            ),
        )),
    })
}

/// The pods trust the CA that signs now once it is in the published bundle and the first phase
/// of a rollover (which rolls it out) is over.
fn trusted(trust: &TrustBundle, ca: &CaMaterial) -> bool {
    let bundle_has_ca = trust
        .ca_crt
        .as_deref()
        .and_then(|pem| crate::tls::parse_bundle(pem).ok())
        .is_some_and(|b| b.iter().any(|c| c.same_key(ca.cert())));
    bundle_has_ca && trust.rollover_phase.as_deref() != Some(Phase::TrustBoth.as_str())
}

/// A new client certificate from `ca`, renewed at its renewal time.
fn issue(
    ca: &CaMaterial,
    ca_name: &str,
    policy: &TlsPolicy,
    jitter: Jitter,
    valid: &ValidToken,
    reason: ClientReason,
    later: &Later,
) -> ClientCert {
    let material = match issue_client(
        ca,
        &client_common_name(&valid.namespace, &valid.name),
        policy.certificate_lifetime,
        later.now,
    ) {
        Ok(m) => m,
        Err(e) => {
            return later.because(
                "IssueFailed",
                format!("could not issue a client certificate from Secret {ca_name}: {e}"),
            );
        }
    };
    let renewal = renewal_time(
        material.cert(),
        policy.leaf_renew_before(),
        jitter,
        policy.certificate_lifetime,
    );
    let condition = ready(valid, &material);
    ClientCert {
        material: Some(material),
        issued: Some(reason),
        renewal_time: Some(renewal),
        next_check: Some(renewal),
        condition,
    }
}

/// ClientCertificateReady=True for the certificate `m` in the token Secret.
fn ready(valid: &ValidToken, m: &LeafMaterial) -> ClientCondition {
    Some((
        true,
        "Issued",
        format!(
            "client certificate in Secret {} valid until {}",
            valid.secret_name,
            m.cert().not_after()
        ),
    ))
}
