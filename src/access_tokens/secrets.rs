//! Reading the instance's Secrets a token is made from, and whether they may be used for it.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::outcome::{Blocked, blocked};
use crate::conditions::{CHILD_CONFLICT, WAIT};
use crate::error::{Error, Result};
use crate::reconcile::Context;
use crate::validate::Instance;

/// The Secret `ns/name`, read from the API server (None: it does not exist). No cache holds a
/// Secret's data; what a token reconcile derives from them is remembered in
/// [`Context::token_facts`](crate::reconcile::Context).
pub(super) async fn read(
    _ctx: &Context,
    api: &Api<Secret>,
    _ns: &str,
    name: &str,
) -> Result<Option<Secret>> {
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind: "Secret",
        name: name.to_owned(),
        source,
    })
}

/// A Secret of the instance's own (`<n>-api-key`, `<n>-ca`, `<n>-tls`) is used for a token only
/// when the instance the token refers to controls it (its UID): anything else blocks the token
/// with `ChildConflict` (the instance's own reconcile reports the same conflict).
pub(super) fn instance_secret_ours(secret: &Secret, inst: &Instance) -> Result<(), Blocked> {
    crate::reconcile::ownership::ensure_ours(secret, inst).map_err(|e| {
        blocked(
            CHILD_CONFLICT,
            format!("{e}; no token is issued from it"),
            Some(WAIT),
        )
    })
}
