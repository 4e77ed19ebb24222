//! The token Secret itself: the copy this token wrote last, writing it, and removing it when the
//! token may no longer exist. Only the QdrantAccessToken that controls it writes it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

use super::outcome::{Blocked, blocked};
use super::secrets::read;
use crate::crd::QdrantAccessToken;
use crate::error::{Error, Result};
use crate::reconcile::Context;
use crate::reconcile::apply::{Outcome, apply_secret};
use crate::reconcile::stores::cached;
use crate::tokens::{ValidToken, controlled_by};

/// The token Secret as it is now (None: none yet), or a conflict when it exists and this
/// QdrantAccessToken does not control it (nothing is written to it then).
pub(super) async fn existing(
    ctx: &Context,
    secrets: &Api<Secret>,
    valid: &ValidToken,
) -> Result<Result<Option<Secret>, Blocked>> {
    let existing = read(ctx, secrets, &valid.namespace, &valid.secret_name).await?;
    if let Some(s) = &existing
        && !controlled_by(s, valid)
    {
        return Ok(Err(blocked(
            "SecretConflict",
            format!(
                "Secret {} exists and does not belong to this QdrantAccessToken (current owner: \
                 {}): the operator writes nothing to it; choose another spec.secretName",
                valid.secret_name,
                crate::reconcile::ownership::describe_owner(s)
            ),
            None,
        )));
    }
    // Read now from the API server: never a stale copy, so a token or client certificate is
    // never issued twice.
    Ok(Ok(existing))
}

/// Applies the token Secret over `existing` (as this reconcile read it). Returns the outcome and
/// the Secret's resourceVersion after it.
pub(super) async fn write(
    ctx: &Context,
    secret: Secret,
    existing: Option<Secret>,
) -> Result<(Outcome, Option<String>)> {
    apply_secret(&ctx.client, &ctx.expectations, secret, existing).await
}

/// Deletes the token Secret this QdrantAccessToken controls, if any (its spec became invalid,
/// e.g. manage tokens were disallowed): a token that may no longer be issued is not kept around.
pub(super) async fn remove_ours(ctx: &Context, qat: &QdrantAccessToken) -> Result<()> {
    let ns = qat.namespace().unwrap_or_default();
    let name = qat.secret_name();
    let Some(secret) = cached(&ctx.stores.secrets, &ns, &name) else {
        return Ok(());
    };
    let ours = qat
        .metadata
        .uid
        .as_deref()
        .is_some_and(|uid| secret.controlled_by(uid));
    if !ours {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // Only the object whose owner was checked: one recreated by someone else meanwhile is left.
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: secret.uid().map(str::to_owned),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "Secret",
            name,
            source,
        }),
    }
}
