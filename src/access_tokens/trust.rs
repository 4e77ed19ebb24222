//! What the application trusts: the bundle that verifies the instance's serving certificate,
//! copied into the token Secret, and the CA key rollover phase recorded beside it.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::outcome::{Blocked, blocked};
use super::secrets::{instance_secret_ours, read};
use crate::conditions::{SECRET_NOT_ALLOWED, WAIT};
use crate::error::Result;
use crate::reconcile::Context;
use crate::reconcile::memo::{Version, version_read};
use crate::validate::{Instance, TlsSource};

/// The instance's trust bundle.
pub(super) struct TrustBundle {
    /// The PEM bundle of `ca.crt` (None without TLS).
    pub(super) ca_crt: Option<String>,
    /// The CA key rollover phase recorded on the serving-certificate Secret.
    pub(super) rollover_phase: Option<String>,
    /// The version of that Secret as read.
    pub(super) version: Version,
}

/// The PEM bundle that verifies the instance's serving certificate (None without TLS), and the
/// CA key rollover phase recorded on that Secret.
pub(super) async fn trust_bundle(
    ctx: &Context,
    api: &Api<Secret>,
    inst: &Instance,
) -> Result<Result<TrustBundle, Blocked>> {
    let Some(name) = inst.tls_secret_name() else {
        return Ok(Ok(TrustBundle {
            ca_crt: None,
            rollover_phase: None,
            version: None,
        }));
    };
    let secret = read(ctx, api, &inst.namespace, &name).await?;
    if let Some(s) = &secret
        && let Err(b) = usable(s, inst)
    {
        return Ok(Err(b));
    }
    let rollover_phase = secret.as_ref().and_then(|s| {
        s.annotations()
            .get(crate::tls::ROLLOVER_PHASE_ANNOTATION)
            .cloned()
    });
    let version = version_read(secret.as_ref());
    let ca = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(crate::tls::CA_CRT).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .filter(|s| s.contains("BEGIN CERTIFICATE"));
    Ok(match ca {
        Some(ca) => Ok(TrustBundle {
            ca_crt: Some(ca),
            rollover_phase,
            version,
        }),
        None => Err(blocked(
            "WaitingForCertificate",
            format!(
                "the trust bundle of {} (Secret {name}, ca.crt) is not ready yet",
                inst.name
            ),
            Some(WAIT),
        )),
    })
}

/// `<n>-tls` only when this instance controls it; the user's certificateSecretRef only when it
/// allows this instance (its ca.crt goes into the token Secret).
fn usable(secret: &Secret, inst: &Instance) -> Result<(), Blocked> {
    match inst.tls.as_ref().map(|t| &t.source) {
        Some(TlsSource::UserCertificate(_)) => {
            crate::reconcile::references::check(secret, inst, "spec.tls.certificateSecretRef")
                .map_err(|e| blocked(SECRET_NOT_ALLOWED, e.to_string(), Some(WAIT)))
        }
        _ => instance_secret_ours(secret, inst),
    }
}
