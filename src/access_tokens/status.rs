//! The status of a QdrantAccessToken: the token it describes, Ready and ClientCertificateReady
//! (a Warning Event when either turns False), written only when it changed.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::outcome::{ClientCondition, Verdict};
use crate::children::meta::MANAGER;
use crate::conditions::set_condition;
use crate::crd::{QdrantAccessToken, QdrantAccessTokenStatus};
use crate::error::{Error, Result};
use crate::reconcile::{Context, RESYNC};

/// Condition type of a QdrantAccessToken: its Secret holds a valid token.
pub const READY: &str = "Ready";
/// Condition type of a QdrantAccessToken whose SecureQdrant requires client certificates: its
/// Secret holds a client certificate (`tls.crt`, `tls.key`).
pub const CLIENT_CERTIFICATE_READY: &str = "ClientCertificateReady";

/// The Ready condition: (status, reason, message).
type Ready = (bool, &'static str, String);

/// Records the verdict in the token's status and says when to look again.
pub(super) async fn report(
    ctx: &Context,
    qat: &QdrantAccessToken,
    verdict: Verdict,
    now: Timestamp,
) -> Result<Action> {
    let mut status = qat.status.clone().unwrap_or_default();
    status.observed_generation = qat.metadata.generation;
    let (action, ready, client) = fields(&mut status, verdict);
    let token_ready = ready.0;
    set_announced(ctx, qat, &mut status, READY, ready, now).await;
    set_client_certificate(ctx, qat, &mut status, client, token_ready, now).await;
    ctx.metrics.observe_token(qat, &status);
    write_status(ctx, qat, status).await?;
    Ok(action)
}

/// The status fields the verdict determines (the conditions are kept), when to look again, and
/// the two conditions.
fn fields(
    status: &mut QdrantAccessTokenStatus,
    verdict: Verdict,
) -> (Action, Ready, ClientCondition) {
    match verdict {
        Ok(issued) => {
            let conditions = std::mem::take(&mut status.conditions);
            *status = issued.status;
            status.conditions = conditions;
            let message = format!(
                "token in Secret {}",
                status.secret_name.clone().unwrap_or_default()
            );
            (
                Action::requeue(issued.requeue.min(RESYNC).max(Duration::from_secs(1))),
                (true, "TokenIssued", message),
                issued.client,
            )
        }
        Err(b) => {
            if b.no_token {
                status.secret_name = None;
                status.access = None;
                status.expires_at = None;
                status.renewal_time = None;
                status.client_certificate_not_after = None;
                status.client_certificate_renewal_time = None;
            }
            (
                b.retry
                    .map(Action::requeue)
                    .unwrap_or_else(Action::await_change),
                (false, b.reason, b.message),
                None,
            )
        }
    }
}

/// The (status, reason) a condition of the token had before this reconcile.
fn previous(qat: &QdrantAccessToken, type_: &str) -> Option<(String, String)> {
    qat.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn state(ok: bool, reason: &str) -> (String, String) {
    (
        if ok { "True" } else { "False" }.to_owned(),
        reason.to_owned(),
    )
}

/// Sets ClientCertificateReady when the instance requires client certificates, announcing a
/// False one; otherwise drops a stale one, but keeps it while the token is blocked so the last
/// word on the certificate stays visible.
async fn set_client_certificate(
    ctx: &Context,
    qat: &QdrantAccessToken,
    status: &mut QdrantAccessTokenStatus,
    client: ClientCondition,
    token_ready: bool,
    now: Timestamp,
) {
    let Some(client) = client else {
        if token_ready {
            status
                .conditions
                .retain(|c| c.type_ != CLIENT_CERTIFICATE_READY);
        }
        return;
    };
    set_announced(ctx, qat, status, CLIENT_CERTIFICATE_READY, client, now).await;
}

/// Sets the condition `type_` (Ready, ClientCertificateReady); announces it with a Warning Event
/// when it turns False or changes its reason.
async fn set_announced(
    ctx: &Context,
    qat: &QdrantAccessToken,
    status: &mut QdrantAccessTokenStatus,
    type_: &str,
    (ok, reason, message): Ready,
    now: Timestamp,
) {
    let changed = previous(qat, type_) != Some(state(ok, reason));
    set_condition(
        &mut status.conditions,
        type_,
        ok,
        reason,
        message.clone(),
        qat.metadata.generation,
        now,
    );
    if changed && !ok {
        ctx.events
            .publish(
                &qat.object_ref(&()),
                EventType::Warning,
                reason,
                "Issue",
                message,
            )
            .await;
    }
}

async fn write_status(
    ctx: &Context,
    qat: &QdrantAccessToken,
    status: QdrantAccessTokenStatus,
) -> Result<()> {
    if qat.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<QdrantAccessToken> =
        Api::namespaced(ctx.client.clone(), &qat.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": QdrantAccessToken::api_version(&()),
        "kind": QdrantAccessToken::kind(&()),
        "status": status,
    });
    api.patch_status(
        &qat.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}
