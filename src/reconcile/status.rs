//! Status: computed from what was decided and what the StatefulSet reports (pure), then written
//! to the status subresource only when it changed.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::plan::Refusal;
use crate::crd::{Endpoints, Phase, SecretNames, SecureQdrant, SecureQdrantStatus};
use crate::error::{Error, Result};
use crate::qdrant::{GRPC_PORT, HTTP_PORT};
use crate::validate::{Instance, Invalid, describe};

/// Condition type: all replicas run the current spec and are ready.
pub const READY: &str = "Ready";
/// Condition type: the spec was validated and every child applied as asked.
pub const RECONCILED: &str = "Reconciled";

/// How a reconcile ended, as far as status is concerned.
pub enum Verdict<'a> {
    Invalid(&'a [Invalid]),
    Applied {
        instance: &'a Instance,
        refusals: &'a [Refusal],
        statefulset: Option<&'a StatefulSet>,
    },
}

/// Sets a condition, keeping its lastTransitionTime when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The status a SecureQdrant should have now.
pub fn desired(sq: &SecureQdrant, verdict: &Verdict<'_>, now: Timestamp) -> SecureQdrantStatus {
    let previous = sq.status.clone().unwrap_or_default();
    let generation = sq.metadata.generation;
    let mut status = SecureQdrantStatus {
        observed_generation: generation,
        conditions: previous.conditions.clone(),
        ..previous.clone()
    };
    match verdict {
        Verdict::Invalid(problems) => {
            status.phase = Some(Phase::Failed);
            let message = format!("invalid spec, nothing changed: {}", describe(problems));
            set_condition(
                &mut status.conditions,
                RECONCILED,
                false,
                "InvalidSpec",
                message,
                generation,
                now,
            );
            let ready = previous
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True");
            if !ready {
                set_condition(
                    &mut status.conditions,
                    READY,
                    false,
                    "InvalidSpec",
                    "the spec must be fixed first".to_owned(),
                    generation,
                    now,
                );
            }
        }
        Verdict::Applied {
            instance,
            refusals,
            statefulset,
        } => {
            let replicas = instance.replicas;
            let sts_status = statefulset.and_then(|s| s.status.as_ref());
            let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
            status.replicas = Some(sts_status.map(|s| s.replicas).unwrap_or(0));
            status.ready_replicas = Some(ready);
            let rolled_out = match (statefulset, sts_status) {
                (Some(sts), Some(s)) => {
                    s.observed_generation >= sts.metadata.generation
                        && s.updated_replicas == Some(replicas)
                        && s.current_revision == s.update_revision
                }
                _ => false,
            };
            let all_ready = rolled_out && ready == replicas;
            status.phase = Some(if !refusals.is_empty() {
                Phase::Degraded
            } else if all_ready {
                Phase::Ready
            } else if sts_status.is_none() {
                Phase::Pending
            } else if !rolled_out {
                Phase::Progressing
            } else {
                Phase::Degraded
            });
            match refusals.first() {
                Some(r) => {
                    let message = refusals
                        .iter()
                        .map(Refusal::message)
                        .collect::<Vec<_>>()
                        .join("; ");
                    set_condition(
                        &mut status.conditions,
                        RECONCILED,
                        false,
                        r.reason(),
                        message,
                        generation,
                        now,
                    );
                }
                None => set_condition(
                    &mut status.conditions,
                    RECONCILED,
                    true,
                    "Applied",
                    "every child object is applied".to_owned(),
                    generation,
                    now,
                ),
            }
            let (reason, message) = if all_ready {
                (
                    "AllReplicasReady",
                    format!("{ready}/{replicas} replicas ready"),
                )
            } else if rolled_out {
                (
                    "ReplicasNotReady",
                    format!("{ready}/{replicas} replicas ready"),
                )
            } else {
                (
                    "RollingOut",
                    format!("{ready}/{replicas} replicas ready, rollout in progress"),
                )
            };
            set_condition(
                &mut status.conditions,
                READY,
                all_ready,
                reason,
                message,
                generation,
                now,
            );
            let host = format!("{}.{}.svc", instance.name, instance.namespace);
            status.endpoints = Some(Endpoints {
                rest: format!("http://{host}:{HTTP_PORT}"),
                grpc: format!("http://{host}:{GRPC_PORT}"),
            });
            status.secrets = Some(SecretNames {
                api_key: instance.api_key_secret_name(),
            });
        }
    }
    status
}

/// Writes the status if it differs from the object's current one. Returns whether it wrote.
pub async fn write(client: &Client, sq: &SecureQdrant, status: SecureQdrantStatus) -> Result<bool> {
    if sq.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<SecureQdrant> =
        Api::namespaced(client.clone(), &sq.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &sq.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(true)
}
