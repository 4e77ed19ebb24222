//! The key that signs a token: the instance's full-access API key; during a key rotation, the
//! new key once every pod accepts it (Qdrant checks JWTs against api_key and alt_api_key).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::outcome::{Blocked, blocked};
use super::secrets::{instance_secret_ours, read};
use crate::conditions::{SECRET_NOT_ALLOWED, WAIT};
use crate::error::Result;
use crate::material::SecretValue;
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
    let key = key_secret
        .and_then(|s| crate::api_keys::signing_key(s, &key_name, inst.generates_api_key()));
    key.ok_or_else(|| {
        blocked(
            "WaitingForKey",
            format!("the API key of {} is not ready yet", inst.name),
            Some(WAIT),
        )
    })
}
