//! The QdrantAccessToken controller's reconcile: admit the token (its spec, its SecureQdrant,
//! the administrator's policy) → validate its SecureQdrant → the signing key → the trust bundle
//! and client certificate → plan (pure: keep or sign) → sign if needed → apply the token Secret
//! → status. The token is signed with the instance's API key, exactly as Qdrant checks it, and
//! renewed at its renewal time (the requeue), after a key change, or when the spec changes.
//!
//! Where each decision is:
//! - `admission.rs`: whether the token may exist at all (else its Secret goes).
//! - `issue.rs`: the steps from a valid token to its Secret; `signing_key.rs`, `trust.rs`,
//!   `client_cert.rs` and `token_secret.rs` for what each step reads, decides and writes;
//!   `outcome.rs` for what a reconcile comes to.
//! - `status.rs`: the conditions, their Events, and the status write.
//!
//! The pure rules live in [`crate::tokens`] (spec, claims, plan, Secret) and [`crate::tls`]
//! (client certificates).

mod admission;
mod client_cert;
mod issue;
mod outcome;
mod secrets;
mod signing_key;
mod status;
mod token_secret;
mod trust;

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

pub use self::admission::manage_token_forbidden;
pub use self::status::{CLIENT_CERTIFICATE_READY, READY};
pub use crate::conditions::WAIT;
use crate::crd::{QdrantAccessToken, SecureQdrant};
use crate::error::Result;
use crate::reconcile::Context;
use crate::tokens::InstanceInfo;

/// Reconciles one QdrantAccessToken. `instances` is the cache of SecureQdrants.
pub async fn reconcile(
    qat: Arc<QdrantAccessToken>,
    ctx: Arc<Context>,
    instances: Store<SecureQdrant>,
) -> Result<Action> {
    if qat.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // its Secret is garbage-collected with it
    }
    // Before the SecureQdrant cache is filled, every instance looks missing, and a token whose
    // instance is missing loses its Secret: wait (an operator start, a re-list).
    crate::reconcile::stores::caches_ready(
        || async {
            ctx.stores.wait_until_ready().await && instances.wait_until_ready().await.is_ok()
        },
        crate::reconcile::stores::CACHE_WAIT,
    )
    .await?;
    let now = (ctx.clock)();
    let ns = qat.namespace().unwrap_or_default();
    let sq = instances.get(&ObjectRef::new(&qat.spec.qdrant_ref.name).within(&ns));
    let info = InstanceInfo::of(sq.as_deref());

    let verdict = match admission::admit(&qat, &info, &ctx.settings) {
        Ok(valid) => issue::issue(&ctx, &valid, sq.as_deref(), now).await?,
        Err(refused) => {
            if refused.no_token {
                token_secret::remove_ours(&ctx, &qat).await?;
            }
            Err(refused)
        }
    };
    status::report(&ctx, &qat, verdict, now).await
}
