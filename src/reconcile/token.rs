//! The QdrantAccessToken pipeline: validate against its SecureQdrant → read the API key →
//! plan (pure: keep or sign) → sign if needed → apply the token Secret → status. The token is
//! signed with the instance's API key, exactly as Qdrant checks it, and renewed at its renewal
//! time (the requeue), after a key change, or when the spec changes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use super::apply::{Outcome, apply};
use super::context::{Context, RESYNC};
use super::expect::EXPECTATION_TTL;
use super::status::set_condition;
use super::stores::cached;
use crate::children::meta::MANAGER;
use crate::crd::{GlobalAccess, QdrantAccessToken, QdrantAccessTokenStatus, SecureQdrant};
use crate::error::{Error, Result};
use crate::settings::Settings;

use crate::tls::renewal::{LeafState, renewal_time};
use crate::tls::{
    CaMaterial, ClientReason, Jitter, LeafMaterial, Phase, TlsError, client_common_name,
    issue_client, plan_client,
};
use crate::tokens::{
    self, InstanceInfo, TokenEndpoints, ValidToken, controlled_by, plan_token,
    read_client_certificate, read_token, token_annotations, token_secret, token_status,
    validate_token_spec,
};
use crate::validate::{self, Instance, TlsSource, describe};

/// Condition type of a QdrantAccessToken: its Secret holds a valid token.
pub const READY: &str = "Ready";
/// Condition type of a QdrantAccessToken whose SecureQdrant requires client certificates: its
/// Secret holds a client certificate (`tls.crt`, `tls.key`).
pub const CLIENT_CERTIFICATE_READY: &str = "ClientCertificateReady";
/// How soon to look again while waiting for the SecureQdrant's material.
pub const WAIT: Duration = Duration::from_secs(10);

/// Why no token could be written this time (reported as Ready=False).
struct Blocked {
    reason: &'static str,
    message: String,
    retry: Option<Duration>,
    /// No token of this QdrantAccessToken exists any more (its Secret was removed): the status
    /// stops describing one.
    no_token: bool,
}

fn blocked(reason: &'static str, message: String, retry: Option<Duration>) -> Blocked {
    Blocked {
        reason,
        message,
        retry,
        no_token: false,
    }
}

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
    super::stores::caches_ready(
        || async {
            ctx.stores.wait_until_ready().await && instances.wait_until_ready().await.is_ok()
        },
        super::stores::CACHE_WAIT,
    )
    .await?;
    let now = (ctx.clock)();
    let ns = qat.namespace().unwrap_or_default();
    let sq = instances.get(&ObjectRef::new(&qat.spec.qdrant_ref.name).within(&ns));
    let info = InstanceInfo::of(sq.as_deref());

    let outcome = match validate_token_spec(&qat, &info) {
        // Before anything else: no manage token is refreshed once the administrator forbids
        // them, whatever the SecureQdrant allows.
        _ if manage_token_forbidden(&qat, &ctx.settings) => {
            remove_our_secret(&ctx, &qat).await?;
            Err(Blocked {
                no_token: true,
                ..blocked(
                    "ManageTokensForbidden",
                    "global manage access (spec.access.global: m) is forbidden in this cluster by \
                     the operator's administrator (--allow-global-manage-tokens=false, chart \
                     value policy.allowGlobalManageTokens): use spec.access.collections or \
                     global r; the token Secret is removed"
                        .to_owned(),
                    None,
                )
            })
        }

        Err(problems)
            if info.exists
                && qat
                    .spec
                    .secret_name
                    .as_deref()
                    .and_then(crate::children::meta::instance_of_secret_name)
                    .is_some() =>
        {
            // A token created before such names were refused: its Secret is kept as it is (and
            // no longer renewed), the condition names the fix.
            Err(blocked(
                "InvalidSpec",
                format!(
                    "{}; the existing token Secret is kept but no longer renewed: recreate the \
                     QdrantAccessToken with another spec.secretName",
                    describe(&problems)
                ),
                None,
            ))
        }
        Err(problems) => {
            remove_our_secret(&ctx, &qat).await?;
            // A missing SecureQdrant is reported as such (creating it triggers this token).
            let reason = if info.exists {
                "InvalidSpec"
            } else {
                "InstanceMissing"
            };
            Err(Blocked {
                no_token: true,
                ..blocked(reason, describe(&problems), None)
            })
        }
        Ok(valid) => issue(&ctx, &valid, sq.as_deref(), now).await?,
    };
    let mut client_condition: ClientCondition = None;

    let mut status = qat.status.clone().unwrap_or_default();
    status.observed_generation = qat.metadata.generation;
    let (action, ready) = match outcome {
        Ok((fresh, requeue, client)) => {
            client_condition = client;
            let conditions = std::mem::take(&mut status.conditions);
            status = fresh;
            status.conditions = conditions;
            (
                Action::requeue(requeue.min(RESYNC).max(Duration::from_secs(1))),
                (
                    true,
                    "TokenIssued",
                    format!(
                        "token in Secret {}",
                        status.secret_name.clone().unwrap_or_default()
                    ),
                ),
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
            )
        }
    };
    let old_ready = qat
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .map(|c| (c.status.clone(), c.reason.clone()));
    set_condition(
        &mut status.conditions,
        READY,
        ready.0,
        ready.1,
        ready.2.clone(),
        qat.metadata.generation,
        now,
    );
    let changed = old_ready
        != Some((
            if ready.0 { "True" } else { "False" }.to_owned(),
            ready.1.to_owned(),
        ));
    if changed && !ready.0 {
        ctx.events
            .publish(
                &qat.object_ref(&()),
                EventType::Warning,
                ready.1,
                "Issue",
                ready.2,
            )
            .await;
    }
    let old_client = qat
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CLIENT_CERTIFICATE_READY)
        })
        .map(|c| (c.status.clone(), c.reason.clone()));
    match &client_condition {
        Some((ok, reason, message)) => {
            set_condition(
                &mut status.conditions,
                CLIENT_CERTIFICATE_READY,
                *ok,
                reason,
                message.clone(),
                qat.metadata.generation,
                now,
            );
            let now_state = (
                if *ok { "True" } else { "False" }.to_owned(),
                (*reason).to_owned(),
            );
            if !ok && old_client != Some(now_state) {
                ctx.events
                    .publish(
                        &qat.object_ref(&()),
                        EventType::Warning,
                        reason,
                        "Issue",
                        message.clone(),
                    )
                    .await;
            }
        }
        // Not required (or the token is blocked): drop a stale condition, but keep it while
        // blocked so the last word on the certificate stays visible.
        None if ready.0 => status
            .conditions
            .retain(|c| c.type_ != CLIENT_CERTIFICATE_READY),
        None => {}
    }
    ctx.metrics.observe_token(&qat, &status);
    write_status(&ctx, &qat, status).await?;
    Ok(action)
}

/// The ClientCertificateReady condition of a token: (status, reason, message); None when the
/// instance does not require client certificates.
type ClientCondition = Option<(bool, &'static str, String)>;

/// Validated spec → the token Secret. Ok(Err(..)) when blocked by the instance's state.
async fn issue(
    ctx: &Context,
    valid: &ValidToken,
    sq: Option<&SecureQdrant>,
    now: Timestamp,
) -> Result<std::result::Result<(QdrantAccessTokenStatus, Duration, ClientCondition), Blocked>> {
    let Some(sq) = sq else {
        return Ok(Err(blocked(
            "InstanceMissing",
            format!("SecureQdrant {} not found", valid.instance),
            None,
        )));
    };
    let inst = match validate::validate(sq, &ctx.settings) {
        Ok(inst) => inst,
        Err(_) => {
            return Ok(Err(blocked(
                "InstanceInvalid",
                format!(
                    "SecureQdrant {} has an invalid spec; see its status",
                    valid.instance
                ),
                None,
            )));
        }
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &inst.namespace);

    // The signing key: the instance's full-access API key; during a key rotation, the new key
    // once every pod accepts it (Qdrant checks JWTs against api_key and alt_api_key).
    let (key_secret_name, key_name) = inst.api_key_ref();
    let key_secret = read(ctx, &secrets, &inst.namespace, &key_secret_name).await?;
    // A user's key signs the token only when its Secret allows this instance: otherwise an author
    // could have manage tokens minted with another instance's key.
    if let (false, Some(secret)) = (inst.generates_api_key(), &key_secret)
        && let Err(e) = super::references::check(secret, &inst, "spec.auth.apiKeySecretRef")
    {
        return Ok(Err(blocked(
            super::status::SECRET_NOT_ALLOWED,
            e.to_string(),
            Some(WAIT),
        )));
    }
    // The operator's own `<n>-api-key` signs only when this very instance (its UID) controls it:
    // an orphaned Secret of an earlier instance of the same name, or anyone's Secret of that
    // name, would otherwise hand its key to whoever creates a SecureQdrant named like it.
    if let (true, Some(secret)) = (inst.generates_api_key(), &key_secret)
        && let Err(b) = instance_secret_ours(secret, &inst)
    {
        return Ok(Err(b));
    }
    // The same for the CA that would sign the token's client certificate.
    if let Some(ca_name) = inst
        .tls
        .as_ref()
        .filter(|t| t.client_certificates)
        .and_then(|_| inst.operator_ca_secret_name())
        && let Some(secret) = read(ctx, &secrets, &inst.namespace, &ca_name).await?
        && let Err(b) = instance_secret_ours(&secret, &inst)
    {
        return Ok(Err(b));
    }
    let key = key_secret
        .as_ref()
        .and_then(|s| crate::api_keys::signing_key(s, &key_name, inst.generates_api_key()));
    let Some(key) = key else {
        return Ok(Err(blocked(
            "WaitingForKey",
            format!("the API key of {} is not ready yet", inst.name),
            Some(WAIT),
        )));
    };

    // What the application trusts.
    let (ca_crt, rollover_phase) = match trust_bundle(ctx, &secrets, &inst).await? {
        Ok(found) => found,
        Err(b) => return Ok(Err(b)),
    };

    let mut existing = read(ctx, &secrets, &inst.namespace, &valid.secret_name).await?;
    if let Some(s) = &existing
        && !controlled_by(s, valid)
    {
        return Ok(Err(blocked(
            "SecretConflict",
            format!(
                "Secret {} exists and does not belong to this QdrantAccessToken (current owner: \
                 {}): the operator writes nothing to it; choose another spec.secretName",
                valid.secret_name,
                super::ownership::describe_owner(s)
            ),
            None,
        )));
    }
    // Only this token writes its Secret: what it wrote last is newer than a cached copy that
    // does not show it yet.
    let memo_key = format!("{}/{}", inst.namespace, valid.secret_name);
    if let Some(s) = existing.as_mut()
        && let Some(data) = ctx.written_token_data.get(&memo_key)
        && s.data.as_ref() != Some(&data)
    {
        s.data = Some(data);
    }

    let client = client_certificate(
        ctx,
        &secrets,
        &inst,
        valid,
        existing.as_ref(),
        ca_crt.as_deref(),
        rollover_phase.as_deref(),
        now,
    )
    .await?;

    let plan = plan_token(now, existing.as_ref(), valid, &key);
    let token = match (&plan.mint, existing.as_ref().and_then(read_token)) {
        (None, Some(token)) => token,
        (reason, _) => {
            let token =
                tokens::mint(&valid.claims(plan.expires_at), &key).map_err(|e| Error::Token {
                    name: valid.name.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(reason) = reason {
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
            token
        }
    };
    let scheme = inst.scheme();
    let host = format!("{}.{}.svc", inst.name, inst.namespace);
    let endpoints = TokenEndpoints {
        url: format!("{scheme}://{host}:{}", crate::qdrant::HTTP_PORT),
        grpc_url: format!("{scheme}://{host}:{}", crate::qdrant::GRPC_PORT),
        ca_crt,
        client_certificate: client.material.clone(),
    };
    let secret = token_secret(valid, &token, &endpoints, token_annotations(valid, &key));
    let data = secret.data.clone().unwrap_or_default();
    let outcome = apply(&ctx.client, &ctx.expectations, &ctx.stores.secrets, secret).await?;
    if outcome == Outcome::Applied {
        ctx.written_token_data.remember(memo_key, data);
    }
    if let Some(reason) = &client.issued {
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
    let mut status = token_status(valid, &plan);
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
    Ok(Ok((status, requeue, client.condition)))
}

/// The client certificate that goes into the token Secret.
struct ClientCert {
    material: Option<LeafMaterial>,
    /// Why it was issued in this reconcile (None: kept, or none).
    issued: Option<ClientReason>,
    renewal_time: Option<Timestamp>,
    next_check: Option<Timestamp>,
    condition: ClientCondition,
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

/// Issues, keeps or renews the token's client certificate when its instance requires client
/// certificates (`spec.tls.clientCertificates`): signed by the CA that signs the instance's
/// serving certificate (the operator's `<n>-ca`, or the user's `spec.tls.caSecretRef`), with the
/// instance's certificate lifetime and renewBefore.
///
/// A certificate is only issued from a CA the pods already trust: while a CA key rollover has
/// not rolled the new CA out (the published bundle lacks it, or the phase is TrustBoth), a
/// usable certificate from the old CA is kept, and a missing one waits. Nothing here blocks the
/// token itself (gRPC needs no client certificate): a certificate that cannot be issued now is
/// reported on ClientCertificateReady and looked at again soon, the last usable one kept. With
/// `spec.tls.certificateSecretRef` the operator holds no CA key and issues none.
#[allow(clippy::too_many_arguments)]
async fn client_certificate(
    ctx: &Context,
    secrets: &Api<Secret>,
    inst: &Instance,
    valid: &ValidToken,
    existing: Option<&Secret>,
    trust_bundle: Option<&str>,
    rollover_phase: Option<&str>,
    now: Timestamp,
) -> Result<ClientCert> {
    let Some(settings) = inst.tls.as_ref().filter(|t| t.client_certificates) else {
        return Ok(ClientCert::none(None));
    };
    let stored = read_client_certificate(existing);
    let usable = stored
        .as_ref()
        .ok()
        .filter(|m| m.cert().valid_at(now) && m.cert().info().client_auth)
        .cloned();
    // Not now: keep what still works, say why, look again soon.
    let later = |reason: &'static str, message: String| ClientCert {
        material: usable.clone(),
        issued: None,
        renewal_time: None,
        next_check: now.checked_add(super::tls::signed(WAIT)).ok(),
        condition: Some((false, reason, message)),
    };
    let ca_name = match &settings.source {
        TlsSource::UserCertificate(name) => {
            return Ok(ClientCert::none(Some((
                false,
                "NoSigningCA",
                format!(
                    "{} requires client certificates but its serving certificate comes from Secret {name} \
                     (spec.tls.certificateSecretRef): the operator holds no CA key to sign one; \
                     issue the application's client certificate from that CA",
                    inst.name
                ),
            ))));
        }
        TlsSource::UserCa(name) => name.clone(),
        TlsSource::OperatorCa => inst.ca_secret_name(),
    };
    let ca_secret = read(ctx, secrets, &inst.namespace, &ca_name).await?;
    // A user's CA signs client certificates only when its Secret allows this instance.
    if let (TlsSource::UserCa(_), Some(secret)) = (&settings.source, &ca_secret)
        && let Err(e) = super::references::check(secret, inst, "spec.tls.caSecretRef")
    {
        return Ok(later(super::status::SECRET_NOT_ALLOWED, e.to_string()));
    }
    let ca = ca_secret
        .and_then(|s| s.data)
        .map(|d| CaMaterial::from_secret_data(&d));
    let ca = match ca {
        Some(Ok(ca)) => ca,
        Some(Err(e)) => {
            return Ok(later(
                "CANotUsable",
                format!(
                    "the CA of {} (Secret {ca_name}) is not usable: {e}",
                    inst.name
                ),
            ));
        }
        None => {
            return Ok(later(
                "WaitingForCA",
                format!(
                    "the CA of {} (Secret {ca_name}) is not ready yet",
                    inst.name
                ),
            ));
        }
    };
    // The pods trust the CA that signs now once it is in the published bundle and the first
    // phase of a rollover (which rolls it out) is over.
    let bundle_has_ca = trust_bundle
        .and_then(|pem| crate::tls::parse_bundle(pem).ok())
        .is_some_and(|b| b.iter().any(|c| c.same_key(ca.cert())));
    let ca_trusted = bundle_has_ca && rollover_phase != Some(Phase::TrustBoth.as_str());

    let policy = super::tls::policy(settings);
    let state = match &stored {
        Ok(leaf) => LeafState::Present(leaf),
        Err(TlsError::MissingKey(_)) => LeafState::Missing,
        Err(e) => LeafState::Unusable(e),
    };
    let jitter = Jitter::for_instance(&valid.namespace, &valid.name, &valid.owner.uid);
    let decision = plan_client(&policy, state, ca.cert(), !ca_trusted, jitter, now);
    let ready = |m: &LeafMaterial| {
        Some((
            true,
            "Issued",
            format!(
                "client certificate in Secret {} valid until {}",
                valid.secret_name,
                m.cert().not_after()
            ),
        ))
    };
    let Some(reason) = decision.issue else {
        let material = stored.ok();
        let condition = material.as_ref().and_then(ready);
        return Ok(ClientCert {
            material,
            issued: None,
            renewal_time: decision.renewal_time,
            next_check: decision.next_check,
            condition,
        });
    };
    if !ca_trusted {
        return Ok(later(
            "WaitingForCATrust",
            format!(
                "{} is rolling over to a new CA: a client certificate is issued from it once \
                 every pod trusts it",
                inst.name
            ),
        ));
    }
    let material = match issue_client(
        &ca,
        &client_common_name(&valid.namespace, &valid.name),
        policy.certificate_lifetime,
        now,
    ) {
        Ok(m) => m,
        Err(e) => {
            return Ok(later(
                "IssueFailed",
                format!("could not issue a client certificate from Secret {ca_name}: {e}"),
            ));
        }
    };
    let renewal = renewal_time(
        material.cert(),
        policy.leaf_renew_before(),
        jitter,
        policy.certificate_lifetime,
    );
    let condition = ready(&material);
    Ok(ClientCert {
        material: Some(material),
        issued: Some(reason),
        renewal_time: Some(renewal),
        next_check: Some(renewal),
        condition,
    })
}

fn token_ref(valid: &ValidToken) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(QdrantAccessToken::api_version(&()).into_owned()),
        kind: Some(QdrantAccessToken::kind(&()).into_owned()),
        name: Some(valid.name.clone()),
        namespace: Some(valid.namespace.clone()),
        uid: Some(valid.owner.uid.clone()),
        ..Default::default()
    }
}

async fn read(ctx: &Context, api: &Api<Secret>, ns: &str, name: &str) -> Result<Option<Secret>> {
    if let Some(s) = cached(&ctx.stores.secrets, ns, name) {
        return Ok(Some(s.as_ref().clone()));
    }
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind: "Secret",
        name: name.to_owned(),
        source,
    })
}

/// A Secret of the instance's own (`<n>-api-key`, `<n>-ca`, `<n>-tls`) is used for a token only
/// when the instance the token refers to controls it (its UID): anything else blocks the token
/// with `ChildConflict` (the instance's own reconcile reports the same conflict).
fn instance_secret_ours(secret: &Secret, inst: &Instance) -> std::result::Result<(), Blocked> {
    super::ownership::ensure_ours(secret, inst).map_err(|e| {
        blocked(
            super::status::CHILD_CONFLICT,
            format!("{e}; no token is issued from it"),
            Some(WAIT),
        )
    })
}

/// The PEM bundle that verifies the instance's serving certificate (None without TLS), and the
/// CA key rollover phase recorded on that Secret.
async fn trust_bundle(
    ctx: &Context,
    api: &Api<Secret>,
    inst: &Instance,
) -> Result<std::result::Result<(Option<String>, Option<String>), Blocked>> {
    let Some(name) = inst.tls_secret_name() else {
        return Ok(Ok((None, None)));
    };
    let secret = read(ctx, api, &inst.namespace, &name).await?;
    // `<n>-tls` only when this instance controls it; the user's certificateSecretRef only when
    // it allows this instance (its ca.crt goes into the token Secret).
    if let Some(s) = &secret {
        let allowed = match inst.tls.as_ref().map(|t| &t.source) {
            Some(TlsSource::UserCertificate(_)) => {
                super::references::check(s, inst, "spec.tls.certificateSecretRef").map_err(|e| {
                    blocked(super::status::SECRET_NOT_ALLOWED, e.to_string(), Some(WAIT))
                })
            }
            _ => instance_secret_ours(s, inst),
        };
        if let Err(b) = allowed {
            return Ok(Err(b));
        }
    }
    let phase = secret.as_ref().and_then(|s| {
        s.annotations()
            .get(crate::tls::ROLLOVER_PHASE_ANNOTATION)
            .cloned()
    });
    let ca = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(crate::tls::CA_CRT).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .filter(|s| s.contains("BEGIN CERTIFICATE"));
    Ok(match ca {
        Some(ca) => Ok((Some(ca), phase)),
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

/// Whether `qat` asks for global manage access while the operator's settings forbid it
/// cluster-wide (`--allow-global-manage-tokens=false`).
pub fn manage_token_forbidden(qat: &QdrantAccessToken, settings: &Settings) -> bool {
    !settings.allow_global_manage_tokens && qat.spec.access.global == Some(GlobalAccess::Manage)
}

/// Deletes the token Secret this QdrantAccessToken controls, if any (its spec became invalid,
/// e.g. manage tokens were disallowed): a token that may no longer be issued is not kept around.
async fn remove_our_secret(ctx: &Context, qat: &QdrantAccessToken) -> Result<()> {
    let ns = qat.namespace().unwrap_or_default();
    let name = qat.secret_name();
    let Some(secret) = cached(&ctx.stores.secrets, &ns, &name) else {
        return Ok(());
    };
    let ours = secret
        .owner_references()
        .iter()
        .any(|r| Some(&r.uid) == qat.metadata.uid.as_ref() && r.controller == Some(true));
    if !ours {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // Only the object whose owner was checked: one recreated by someone else meanwhile is left.
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: secret.metadata.uid.clone(),
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
