//! A valid token's Secret: the instance it signs for → the signing key → the trust bundle → the
//! Secret as it is → the client certificate → keep or sign the token → write the Secret.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::{Api, Resource};

use super::client_cert::{ClientCert, client_certificate, operator_ca_ours};
use super::outcome::{Blocked, Issued, Verdict, blocked};
use super::signing_key::{key_secret, signing_key};
use super::token_secret;
use super::trust::trust_bundle;
use crate::crd::{QdrantAccessToken, SecureQdrant};
use crate::error::{Error, Result};
use crate::material::SecretValue;
use crate::reconcile::Context;
use crate::reconcile::apply::Outcome;
use crate::reconcile::expect::EXPECTATION_TTL;
use crate::reconcile::memo::{Inputs, Key, TokenFacts, Version, version_cached, version_read};
use crate::settings::Settings;
use crate::tokens::{
    self, TokenEndpoints, TokenPlan, ValidToken, plan_token, read_token, token_annotations,
    token_status,
};
use crate::validate::{self, Instance, TlsSource};

/// Validated spec → the token Secret. Ok(Err(..)) when blocked by the instance's state.
pub(super) async fn issue(
    ctx: &Context,
    valid: &ValidToken,
    sq: Option<&SecureQdrant>,
    now: Timestamp,
) -> Result<Verdict> {
    let inst = match instance(valid, sq, &ctx.settings) {
        Ok(inst) => inst,
        Err(b) => return Ok(Err(b)),
    };
    // What was decided on exactly the Secrets the cache shows, before its next decision.
    let memo_key = remembered_inputs(valid, &inst);
    let who = format!("{}/{}", valid.namespace, valid.name);
    if let Some(facts) = memo_key
        .as_ref()
        .and_then(|k| {
            ctx.token_facts
                .get(&who, &k(&cached_versions(ctx, valid, &inst)))
        })
        .filter(|f| now < f.deadline)
    {
        let requeue = Duration::try_from(facts.deadline.duration_since(now)).unwrap_or_default();
        return Ok(Ok(Issued {
            status: facts.status,
            requeue,
            client: facts.client,
        }));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &inst.namespace);
    let key_secret = match key_secret(ctx, &secrets, &inst).await? {
        Ok(secret) => secret,
        Err(b) => return Ok(Err(b)),
    };
    let ca_version = match operator_ca_ours(ctx, &secrets, &inst).await? {
        Ok(version) => version,
        Err(b) => return Ok(Err(b)),
    };
    let key = match signing_key(&inst, key_secret.as_ref()) {
        Ok(key) => key,
        Err(b) => return Ok(Err(b)),
    };
    let trust = match trust_bundle(ctx, &secrets, &inst).await? {
        Ok(trust) => trust,
        Err(b) => return Ok(Err(b)),
    };
    let existing = match token_secret::existing(ctx, &secrets, valid).await? {
        Ok(existing) => existing,
        Err(b) => return Ok(Err(b)),
    };
    let client =
        client_certificate(ctx, &secrets, &inst, valid, existing.as_ref(), &trust, now).await?;
    let plan = plan_token(now, existing.as_ref(), valid, &key);
    let token = keep_or_sign(ctx, valid, &plan, existing.as_ref(), &key).await?;
    let endpoints = TokenEndpoints {
        client_certificate: client.material.clone(),
        ..endpoints(&inst, trust.ca_crt)
    };
    let secret = tokens::token_secret(valid, &token, &endpoints, token_annotations(valid, &key));
    let read = TokenVersions {
        key: version_read(key_secret.as_ref()),
        ca: ca_version,
        tls: trust.version.clone(),
        token: None,
    };
    let uid = existing.as_ref().and_then(|s| s.metadata.uid.clone());
    let (outcome, rv) = token_secret::write(ctx, secret, existing).await?;
    announce_client_certificate(ctx, valid, &client).await;
    let issued = issued(valid, &plan, outcome, client, now);
    // Remembered under the versions read, the token Secret's as this write left it (a created
    // one is read once more by the next reconcile).
    if let (Some(memo_key), Some(uid), Some(rv)) = (memo_key, uid, rv)
        && outcome != Outcome::Pending
    {
        let read = TokenVersions {
            token: Some((uid, rv)),
            ..read
        };
        let facts = TokenFacts {
            status: issued.status.clone(),
            client: issued.client.clone(),
            deadline: now
                .checked_add(crate::tls::signed(issued.requeue))
                .unwrap_or(now),
        };
        ctx.token_facts.remember(who, memo_key(&read), facts);
    }
    Ok(Ok(issued))
}

/// The versions of the Secrets a token is made from: the signing key's Secret, `<n>-ca` (with
/// client certificates), `<n>-tls`, the token Secret.
struct TokenVersions {
    key: Version,
    ca: Version,
    tls: Version,
    token: Version,
}

/// How the inputs of a token's decision make a memo key; None when a Secret the user references
/// is among them (it is read on every reconcile).
fn remembered_inputs<'a>(
    valid: &'a ValidToken,
    inst: &'a Instance,
) -> Option<impl Fn(&TokenVersions) -> Key + 'a> {
    let user_certificate = matches!(
        inst.tls.as_ref().map(|t| &t.source),
        Some(TlsSource::UserCertificate(_) | TlsSource::UserCa(_))
    );
    if !inst.generates_api_key() || user_certificate {
        return None;
    }
    Some(move |v: &TokenVersions| {
        Inputs::new("token")
            .debug(valid)
            .instance(inst)
            .version(&v.key)
            .version(&v.ca)
            .version(&v.tls)
            .version(&v.token)
            .finish()
    })
}

/// The instance's CA Secret when a client certificate is signed from it.
fn ca_name(inst: &Instance) -> Option<String> {
    inst.tls
        .as_ref()
        .filter(|t| t.client_certificates)
        .and_then(|_| inst.operator_ca_secret_name())
}

/// The versions the cache shows.
fn cached_versions(ctx: &Context, valid: &ValidToken, inst: &Instance) -> TokenVersions {
    let ns = &inst.namespace;
    let cached = |name: Option<String>| name.and_then(|n| version_cached(&ctx.stores, ns, &n));
    TokenVersions {
        key: cached(Some(inst.api_key_ref().0)),
        ca: cached(ca_name(inst)),
        tls: cached(inst.tls_secret_name()),
        token: cached(Some(valid.secret_name.clone())),
    }
}

/// The SecureQdrant the token signs for, validated by the one validation its own reconcile
/// runs: a token is never issued for a missing or invalid instance.
fn instance(
    valid: &ValidToken,
    sq: Option<&SecureQdrant>,
    settings: &Settings,
) -> Result<Instance, Blocked> {
    let Some(sq) = sq else {
        return Err(blocked(
            "InstanceMissing",
            format!("SecureQdrant {} not found", valid.instance),
            None,
        ));
    };
    validate::validate(sq, settings).map_err(|_| {
        blocked(
            "InstanceInvalid",
            format!(
                "SecureQdrant {} has an invalid spec; see its status",
                valid.instance
            ),
            None,
        )
    })
}

/// The token in the Secret when the plan keeps it, else a new one signed now (announced with
/// the reason).
async fn keep_or_sign(
    ctx: &Context,
    valid: &ValidToken,
    plan: &TokenPlan,
    existing: Option<&Secret>,
    key: &SecretValue,
) -> Result<SecretValue> {
    if plan.mint.is_none()
        && let Some(token) = existing.and_then(read_token)
    {
        return Ok(token);
    }
    let token = tokens::mint(&valid.claims(plan.expires_at), key).map_err(|e| Error::Token {
        name: valid.name.clone(),
        reason: e.to_string(),
    })?;
    if let Some(reason) = plan.mint {
        ctx.events
            .publish(
                &token_ref(valid),
                EventType::Normal,
                "TokenIssued",
                "Issue",
                format!(
                    "signed a new token ({}), valid until {}",
                    reason.describe(),
                    plan.expires_at
                ),
            )
            .await;
    }
    Ok(token)
}

/// Where the application reaches the instance, and the bundle that verifies it (no client
/// certificate).
fn endpoints(inst: &Instance, ca_crt: Option<String>) -> TokenEndpoints {
    let scheme = inst.scheme();
    let host = format!("{}.{}.svc", inst.name, inst.namespace);
    TokenEndpoints {
        url: format!("{scheme}://{host}:{}", crate::qdrant::HTTP_PORT),
        grpc_url: format!("{scheme}://{host}:{}", crate::qdrant::GRPC_PORT),
        ca_crt,
        client_certificate: None,
    }
}

async fn announce_client_certificate(ctx: &Context, valid: &ValidToken, client: &ClientCert) {
    let Some(reason) = &client.issued else {
        return;
    };
    ctx.events
        .publish(
            &token_ref(valid),
            EventType::Normal,
            "ClientCertificateIssued",
            "Issue",
            format!(
                "issued the client certificate in Secret {} ({}), valid until {}",
                valid.secret_name,
                reason.describe(),
                client
                    .material
                    .as_ref()
                    .map(|m| m.cert().not_after().to_string())
                    .unwrap_or_default()
            ),
        )
        .await;
}

/// The status of the written token Secret, and when to look again: at the renewal of the
/// token or of its client certificate, soon when the write has not shown in the cache yet.
fn issued(
    valid: &ValidToken,
    plan: &TokenPlan,
    outcome: Outcome,
    client: ClientCert,
    now: Timestamp,
) -> Issued {
    let mut status = token_status(valid, plan);
    let mut requeue = plan.requeue_after;
    if outcome == Outcome::Pending {
        // The same Secret was just written and the cache has not shown it: check it landed.
        requeue = requeue.min(EXPECTATION_TTL);
    }
    if let Some(m) = &client.material {
        status.client_certificate_not_after = Some(Time(m.cert().not_after()));
        status.client_certificate_renewal_time = client.renewal_time.map(Time);
    }
    if let Some(next) = client.next_check {
        let wait = if next > now {
            next.duration_since(now).unsigned_abs()
        } else {
            Duration::ZERO
        };
        requeue = requeue.min(wait);
    }
    Issued {
        status,
        requeue,
        client: client.condition,
    }
}

fn token_ref(valid: &ValidToken) -> ObjectReference {
    ObjectReference {
        api_version: Some(QdrantAccessToken::api_version(&()).into_owned()),
        kind: Some(QdrantAccessToken::kind(&()).into_owned()),
        name: Some(valid.name.clone()),
        namespace: Some(valid.namespace.clone()),
        uid: Some(valid.owner.uid.clone()),
        ..Default::default()
    }
}
