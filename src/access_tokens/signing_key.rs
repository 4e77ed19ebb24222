//! The key that signs a token: the instance's full-access API key; during a key rotation, the
//! new key once every pod accepts it (Qdrant checks JWTs against api_key and alt_api_key).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::outcome::{Blocked, blocked};
use super::secrets::{instance_secret_ours, read};
use crate::conditions::{SECRET_NOT_ALLOWED, WAIT};
use crate::error::Result;
use crate::material::{self, SecretValue, read_key};
use crate::reconcile::Context;
use crate::validate::Instance;

/// The Secret that holds the instance's API key (None: not there yet), once it may sign tokens
/// of this instance.
pub(super) async fn key_secret(
    ctx: &Context,
    secrets: &Api<Secret>,
    inst: &Instance,
) -> Result<Result<Option<Secret>, Blocked>> {
    let (key_secret_name, _) = inst.api_key_ref();
    let key_secret = read(ctx, secrets, &inst.namespace, &key_secret_name).await?;
    let allowed = match &key_secret {
        // A user's key signs the token only when its Secret allows this instance: otherwise an
        // author could have manage tokens minted with another instance's key.
        Some(secret) if !inst.generates_api_key() => {
            crate::reconcile::references::check(secret, inst, "spec.auth.apiKeySecretRef")
                .map_err(|e| blocked(SECRET_NOT_ALLOWED, e.to_string(), Some(WAIT)))
        }
        // The operator's own `<n>-api-key` signs only when this very instance (its UID) controls
        // it: an orphaned Secret of an earlier instance of the same name, or anyone's Secret of
        // that name, would otherwise hand its key to whoever creates a SecureQdrant named like
        // it.
        Some(secret) => instance_secret_ours(secret, inst),
        None => Ok(()),
    };
    Ok(allowed.map(|()| key_secret))
}

/// The key that signs the token now, or WaitingForKey.
pub(super) fn signing_key(
    inst: &Instance,
    key_secret: Option<&Secret>,
) -> Result<SecretValue, Blocked> {
    let (_, key_name) = inst.api_key_ref();
    let rotated_in = key_secret.filter(|s| signs_with_next_key(inst, s));
    let key = match rotated_in.and_then(|s| read_key(s, material::NEXT_API_KEY).ok()) {
        Some(next) => Some(next),
        None => key_secret.and_then(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get(&key_name))
                .and_then(|b| std::str::from_utf8(&b.0).ok())
                .filter(|v| !v.trim().is_empty())
                .map(SecretValue::new)
        }),
    };
    key.ok_or_else(|| {
        blocked(
            "WaitingForKey",
            format!("the API key of {} is not ready yet", inst.name),
            Some(WAIT),
        )
    })
}

/// Whether a key rotation of the operator's own key has reached the phase where the new key
/// signs tokens (read from the rotation's annotations on the key Secret).
fn signs_with_next_key(inst: &Instance, key_secret: &Secret) -> bool {
    let annotations = key_secret.annotations();
    inst.generates_api_key()
        && crate::key_rotation::sign_with_next(
            true,
            annotations
                .get(crate::key_rotation::PHASE_ANNOTATION)
                .map(String::as_str),
            annotations.contains_key(crate::key_rotation::ROLLED_OUT_AT_ANNOTATION),
        )
}
