//! The reconcile pipeline, one visible step each:
//! validate (pure) → observe + plan (pure) → credentials (create-only) → build (pure) →
//! apply (server-side apply, fixed order, StatefulSet last) → prune → status.

pub mod apply;
pub mod backoff;
pub mod child_meta;
pub mod context;
pub mod credentials;
pub mod drift;
pub mod expect;
pub mod memo;
pub mod metrics_client;
pub mod ownership;
pub mod plan;
pub mod recent;
pub mod references;
pub mod stamp;
pub mod status;
pub mod stores;
pub mod tls;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use self::apply::{Outcome, apply, apply_secret, delete_orphans};
use self::backoff::{backoff_key, key};
pub use self::context::{Context, RESYNC};
pub use self::recent::Clock;
use self::status::{RECONCILED, Verdict};
use self::stores::{CACHE_WAIT, Stores, cached, caches_ready};
use crate::api_keys::KeyFacts;
use crate::children::meta::MANAGER;
use crate::children::{self, Children};
use crate::crd::SecureQdrant;
use crate::error::{AtStep, Error, Failure, Result, Step};
use crate::statefulset_view::StatefulSetView;
use crate::validate::{self, Instance, describe};

/// Reconciles one SecureQdrant (see [`reconcile_steps`]; the error without its step).
pub async fn reconcile(sq: Arc<SecureQdrant>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_steps(sq, ctx)
        .await
        .map_err(|failure| failure.error)
}

/// Reconciles one SecureQdrant; a failure names the step that failed (what the controller runs:
/// its metrics and error policy use the step).
pub async fn reconcile_steps(sq: Arc<SecureQdrant>, ctx: Arc<Context>) -> Result<Action, Failure> {
    if sq.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them (and the PVCs,
        // when retainOnDelete is false, through the StatefulSet's retention policy).
        return Ok(Action::await_change());
    }
    let sq = status::with_latest(&ctx.written_status, sq);
    caches_ready(|| ctx.stores.wait_until_ready(), CACHE_WAIT)
        .await
        .at(Step::Cache)?;
    let now = (ctx.clock)();
    let reference = sq.object_ref(&());

    // 1. validate
    let inst = match validate::validate(&sq, &ctx.settings) {
        Ok(inst) => inst,
        Err(problems) => {
            let status = status::desired(&sq, &Verdict::Invalid(&problems), now);
            if condition_changed(&sq, &status) {
                ctx.events
                    .publish(
                        &reference,
                        EventType::Warning,
                        "InvalidSpec",
                        "Validate",
                        format!("invalid spec, nothing changed: {}", describe(&problems)),
                    )
                    .await;
            }
            status::write(&ctx.client, &ctx.written_status, &sq, status)
                .await
                .at(Step::Status)?;
            ctx.failures.succeeded(&backoff_key(&sq));
            return Ok(Action::await_change());
        }
    };

    // 2.-7.: every failure from here on is also reported on the resource.
    match converge(&sq, &ctx, inst, now).await {
        Ok(action) => {
            ctx.failures.succeeded(&backoff_key(&sq));
            Ok(action)
        }
        Err(failure) => {
            let Failure { step, error } = &failure;
            let status = status::desired(&sq, &Verdict::Failed(error), now);
            if condition_changed(&sq, &status) {
                ctx.events
                    .publish(
                        &reference,
                        EventType::Warning,
                        &status::failure_reason(error),
                        step.action(),
                        error.to_string(),
                    )
                    .await;
            }
            if let Err(status_error) =
                status::write(&ctx.client, &ctx.written_status, &sq, status).await
            {
                warn!(instance = %key(&sq), error = %status_error, "could not report a failure in status");
            }
            Err(failure)
        }
    }
}

/// Steps 2 to 7 for a valid spec: plan, credentials, build, apply, prune, status.
async fn converge(
    sq: &SecureQdrant,
    ctx: &Context,
    inst: Instance,
    now: Timestamp,
) -> Result<Action, Failure> {
    // 2. observe and plan
    let current_sts = cached(&ctx.stores.statefulsets, &inst.namespace, &inst.name);
    let Some(plan) = plan_or_refuse(sq, ctx, inst, current_sts.as_deref(), now).await? else {
        return Ok(Action::requeue(RESYNC));
    };
    let inst = &plan.instance;

    // 2b. every Secret the spec references but the instance does not own must allow it; nothing
    // is written before.
    references::ensure_allowed(&ctx.client, &ctx.stores, inst)
        .await
        .at(Step::References)?;

    // 3. credentials, 3b. TLS material
    let credentials = ensure_credentials(sq, ctx, inst, current_sts.as_deref(), now).await?;
    let tls_report = ensure_tls(sq, ctx, inst, current_sts.as_deref(), now).await?;

    // 4. build, 5. apply, 6. prune
    let pending = build_and_apply(sq, ctx, &plan, credentials.keys, tls_report.as_ref()).await?;

    // 6b. once the StatefulSet runs the acknowledged count, the acknowledgment is used up, so it
    // cannot allow a later scale-down.
    if plan.consume_annotation {
        remove_peers_removed_annotation(&ctx.client, sq)
            .await
            .at(Step::Acknowledgment)?;
    }

    // 7. status
    let rotation_phase = credentials.rotation_phase;
    report_status(sq, ctx, &plan, tls_report.as_ref(), rotation_phase, now)
        .await
        .at(Step::Status)?;
    let requeue = [
        Some(RESYNC),
        tls_report.map(|r| r.requeue_after),
        credentials.requeue_after,
        // A write skipped because the cache had not shown the same write yet: check it landed.
        pending.then_some(expect::EXPECTATION_TTL),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(RESYNC)
    .max(Duration::from_secs(1));
    Ok(Action::requeue(requeue))
}

/// Step 2: the plan for `inst` — or None when the spec switches TLS on a cluster, which is
/// refused outright (reported in status; nothing is applied: the pods keep running with the TLS
/// setting they have).
async fn plan_or_refuse(
    sq: &SecureQdrant,
    ctx: &Context,
    inst: Instance,
    current_sts: Option<&StatefulSetView>,
    now: Timestamp,
) -> Result<Option<plan::Plan>, Failure> {
    let history = plan::History::observe(sq.status.as_ref(), current_sts);
    let running_tls = plan::running_tls(current_sts, sq.status.as_ref());
    if let Some(refusal) = plan::tls_switch(&inst, history, running_tls) {
        let status = status::desired(sq, &Verdict::Refused(&refusal), now);
        if condition_changed(sq, &status) {
            ctx.events
                .publish(
                    &sq.object_ref(&()),
                    EventType::Warning,
                    refusal.reason(),
                    "Plan",
                    refusal.message(),
                )
                .await;
        }
        status::write(&ctx.client, &ctx.written_status, sq, status)
            .await
            .at(Step::Status)?;
        return Ok(None);
    }
    let mut plan = plan::plan(inst, current_sts);
    // Read by the pods' start script (through `<n>-config`): a pod 0 without Raft state joins
    // the formed cluster instead of starting a new one.
    plan.instance.cluster_formed = history.formed;
    Ok(Some(plan))
}

/// Step 3: the API keys (the Secret created or completed, a key rotation advanced), announced
/// in Events.
async fn ensure_credentials(
    sq: &SecureQdrant,
    ctx: &Context,
    inst: &Instance,
    current_sts: Option<&StatefulSetView>,
    now: Timestamp,
) -> Result<credentials::Credentials, Failure> {
    let created_before = sq
        .status
        .as_ref()
        .and_then(|s| s.secrets.as_ref())
        .is_some();
    let credentials = credentials::ensure(
        &ctx.client,
        &ctx.stores,
        &ctx.key_facts,
        inst,
        created_before,
        current_sts,
        now,
    )
    .await
    .at(Step::Credentials)?;
    let reference = sq.object_ref(&());
    for n in &credentials.notices {
        ctx.events
            .publish(&reference, n.type_, n.reason, "Credentials", n.note.clone())
            .await;
    }
    Ok(credentials)
}

/// Step 3b: the TLS material (None with TLS off), announced in Events.
async fn ensure_tls(
    sq: &SecureQdrant,
    ctx: &Context,
    inst: &Instance,
    current_sts: Option<&StatefulSetView>,
    now: Timestamp,
) -> Result<Option<tls::TlsReport>, Failure> {
    let Some(settings) = &inst.tls else {
        return Ok(None);
    };
    let report = tls::ensure(
        &ctx.client,
        &ctx.stores,
        &ctx.tls_facts,
        sq,
        inst,
        settings,
        current_sts,
        now,
    )
    .await
    .at(Step::Tls)?;
    let reference = sq.object_ref(&());
    for n in &report.notices {
        ctx.events
            .publish(
                &reference,
                n.type_,
                n.reason,
                "Certificates",
                n.note.clone(),
            )
            .await;
    }
    Ok(Some(report))
}

/// Steps 4 to 6: builds the children, applies them, prunes the ones no longer built. Returns
/// whether a write was skipped as pending (see [`expect`]).
async fn build_and_apply(
    sq: &SecureQdrant,
    ctx: &Context,
    plan: &plan::Plan,
    keys: KeyFacts,
    tls_report: Option<&tls::TlsReport>,
) -> Result<bool, Failure> {
    let inst = &plan.instance;
    let children = children::build_from_facts(inst, &keys, tls_report.map(|r| &r.pod_tls));
    // An acknowledged scale-down is announced when its StatefulSet write happens (not again on a
    // cache that lags behind it, and not lost when a later step of this reconcile fails).
    let reference = sq.object_ref(&());
    let scale_down_event = plan
        .scale_down
        .map(|d| (&reference, scale_down_applied_message(inst, d)));
    let read = tls_report.map(|r| r.read.clone()).unwrap_or_default();
    let applied = apply_children(ctx, inst, children, read, scale_down_event)
        .await
        .at(Step::Apply)?;
    let deleted = prune(ctx, inst, &applied).await.at(Step::Prune)?;
    let written = applied.written + deleted;
    if written > 0 {
        info!(instance = %key(sq), written, "applied children");
    }
    Ok(applied.pending)
}

/// Step 7: the status after the children were applied (with the metrics and the Events it
/// implies), written when it changed.
async fn report_status(
    sq: &SecureQdrant,
    ctx: &Context,
    plan: &plan::Plan,
    tls_report: Option<&tls::TlsReport>,
    key_rotation_phase: Option<&'static str>,
    now: Timestamp,
) -> Result<()> {
    let inst = &plan.instance;
    let sts = cached(&ctx.stores.statefulsets, &inst.namespace, &inst.name);
    let status = status::desired(
        sq,
        &Verdict::Applied {
            instance: inst,
            refusals: &plan.refusals,
            statefulset: sts.as_deref(),
            tls: tls_report,
        },
        now,
    );
    ctx.metrics.observe_instance(sq, &status);
    ctx.metrics.observe_rotations(
        sq,
        tls_report.and_then(|r| r.ca_renewal_time),
        key_rotation_phase,
        tls_report.and_then(|r| r.rollover_phase),
        now,
    );
    let reference = sq.object_ref(&());
    if inst.tls.is_none() && !has_condition(sq, status::TLS_DISABLED) {
        ctx.events
            .publish(
                &reference,
                EventType::Warning,
                "TLSDisabled",
                "Validate",
                status::TLS_DISABLED_MESSAGE.to_owned(),
            )
            .await;
    }
    if condition_changed(sq, &status) {
        for r in &plan.refusals {
            ctx.events
                .publish(
                    &reference,
                    EventType::Warning,
                    r.reason(),
                    "Plan",
                    r.message(),
                )
                .await;
        }
    }
    status::write(&ctx.client, &ctx.written_status, sq, status).await?;
    Ok(())
}

/// Removes [`plan::PEERS_REMOVED_ANNOTATION`] from `sq` (a merge patch of its metadata, nothing
/// else). Not guarded by a resourceVersion: if the user set a new value meanwhile, it is removed
/// too, and the next reconcile refuses the scale-down it would have allowed until it is set
/// again (a refusal, never a scale-down nobody acknowledged).
async fn remove_peers_removed_annotation(client: &Client, sq: &SecureQdrant) -> Result<()> {
    let api: Api<SecureQdrant> =
        Api::namespaced(client.clone(), &sq.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"annotations": {plan::PEERS_REMOVED_ANNOTATION: null}}
    });
    api.patch(
        &sq.name_any(),
        &PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::RemoveAnnotation {
        name: sq.name_any(),
        annotation: plan::PEERS_REMOVED_ANNOTATION,
        source,
    })?;
    Ok(())
}

/// What the Event of an applied scale-down says: which pods stop and what is left of them.
fn scale_down_applied_message(inst: &Instance, scale_down: plan::ScaleDown) -> String {
    let plan::ScaleDown { from, to } = scale_down;
    let name = &inst.name;
    let claims: Vec<String> = (to..from)
        .flat_map(|ordinal| {
            std::iter::once("storage")
                .chain(inst.snapshots_size.as_ref().map(|_| "snapshots"))
                .map(move |claim| format!("{claim}-{name}-{ordinal}"))
        })
        .collect();
    format!(
        "scaled down from {from} to {to} replicas as acknowledged by {annotation}={to}, which is \
         removed once the StatefulSet runs {to} (a later scale-down needs a new acknowledgment). \
         The StatefulSet stops \
         {pods}; their volumes are kept (whenScaled: Retain): {claims}. Delete them before \
         scaling up again: a pod that comes back on its old volume restarts as the peer that \
         was removed",
        annotation = plan::PEERS_REMOVED_ANNOTATION,
        pods = plan::removed_pods(name, from, to),
        claims = claims.join(", "),
    )
}

fn has_condition(sq: &SecureQdrant, type_: &str) -> bool {
    sq.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_))
}

/// True when the Reconciled condition's reason or message differs from the stored one: Events
/// are published on transitions only, never once per reconcile.
fn condition_changed(sq: &SecureQdrant, new: &crate::crd::SecureQdrantStatus) -> bool {
    let find = |conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conds
            .iter()
            .find(|c| c.type_ == RECONCILED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let old = sq.status.as_ref().and_then(|s| find(&s.conditions));
    old != find(&new.conditions)
}

/// What the apply step did.
struct Applied {
    /// How many objects were written.
    written: usize,
    /// Whether a write was skipped as pending (see [`expect`]).
    pending: bool,
    /// The NetworkPolicies and PodDisruptionBudget built, by name: the others are pruned.
    network_policies: Vec<String>,
    pdbs: Vec<String>,
}

/// Applies every child in order, the StatefulSet last (and announces an acknowledged scale-down
/// when its StatefulSet write happens).
async fn apply_children(
    ctx: &Context,
    inst: &Instance,
    children: Children,
    read: tls::ReadSecrets,
    scale_down_event: Option<(&k8s_openapi::api::core::v1::ObjectReference, String)>,
) -> Result<Applied> {
    let Children {
        service_account,
        // Created (never applied) by the credentials step.
        api_key_secret: _,
        tls_secret,
        metrics_client_secret,
        config_map,
        headless_service,
        client_service,
        network_policies,
        pdb,
        statefulset,
    } = children;
    let client = &ctx.client;
    let s = &ctx.stores;
    let mut outcomes = vec![
        apply(
            client,
            &ctx.expectations,
            &s.service_accounts,
            service_account,
        )
        .await?,
    ];
    // Written only when the TLS step read them in this reconcile (compared with that copy).
    for (secret, current) in [
        (tls_secret, read.tls),
        (metrics_client_secret, read.metrics_client),
    ] {
        if let Some(secret) = secret {
            let (outcome, _) = apply_secret(client, &ctx.expectations, secret, current).await?;
            outcomes.push(outcome);
        }
    }
    outcomes.extend([
        apply(client, &ctx.expectations, &s.config_maps, config_map).await?,
        apply(client, &ctx.expectations, &s.services, headless_service).await?,
        apply(client, &ctx.expectations, &s.services, client_service).await?,
    ]);
    let policy_names: Vec<String> = network_policies.iter().map(|p| p.name_any()).collect();
    for policy in network_policies {
        outcomes.push(apply(client, &ctx.expectations, &s.network_policies, policy).await?);
    }
    let pdb_names: Vec<String> = pdb.iter().map(|p| p.name_any()).collect();
    if let Some(pdb) = pdb {
        outcomes.push(apply(client, &ctx.expectations, &s.pdbs, pdb).await?);
    }
    let sts = apply(client, &ctx.expectations, &s.statefulsets, statefulset).await?;
    if let (Outcome::Applied, Some((reference, note))) = (&sts, scale_down_event) {
        info!(instance = %inst.name, namespace = %inst.namespace, "applied an acknowledged scale-down");
        ctx.events
            .publish(
                reference,
                EventType::Normal,
                "ScaleDownApplied",
                "Plan",
                note,
            )
            .await;
    }
    outcomes.push(sts);
    Ok(Applied {
        written: outcomes.iter().filter(|o| **o == Outcome::Applied).count(),
        pending: outcomes.contains(&Outcome::Pending),
        network_policies: policy_names,
        pdbs: pdb_names,
    })
}

/// Deletes the children the instance controls and no longer builds. Returns how many.
async fn prune(ctx: &Context, inst: &Instance, applied: &Applied) -> Result<usize> {
    let (client, s) = (&ctx.client, &ctx.stores);
    let uid = &inst.owner.uid;
    let (namespace, name) = (&inst.namespace, &inst.name);
    let mut deleted = delete_orphans::<NetworkPolicy>(
        client,
        &s.network_policies,
        namespace,
        name,
        uid,
        &applied.network_policies,
    )
    .await?;
    deleted.extend(
        delete_orphans::<PodDisruptionBudget>(client, &s.pdbs, namespace, name, uid, &applied.pdbs)
            .await?,
    );
    // `<n>-metrics-client` once scrapers need no client certificate from the operator.
    if inst.metrics_client_secret().is_none() {
        deleted.extend(
            delete_controlled_secret(client, s, inst, &inst.metrics_client_secret_name()).await?,
        );
    }
    if !deleted.is_empty() {
        info!(instance = %inst.name, namespace = %inst.namespace, ?deleted, "deleted children no longer needed");
    }
    Ok(deleted.len())
}

/// Deletes the Secret `name` when the cache shows one controlled by the instance. Returns its
/// name when deleted.
async fn delete_controlled_secret(
    client: &Client,
    stores: &Stores,
    inst: &Instance,
    name: &str,
) -> Result<Option<String>> {
    let Some(secret) = cached(&stores.secrets, &inst.namespace, name) else {
        return Ok(None);
    };
    if !secret.controlled_by(&inst.owner.uid) {
        return Ok(None);
    }
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &inst.namespace);
    // The uid precondition: a Secret recreated by someone else under the same name since the
    // cache saw this one is not deleted (409).
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: secret.uid().map(str::to_owned),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(Some(name.to_owned())),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(source) => Err(Error::Delete {
            kind: "Secret",
            name: name.to_owned(),
            source,
        }),
    }
}
