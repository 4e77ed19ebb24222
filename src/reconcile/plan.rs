//! Planning: what of the validated spec can be applied to the cluster as it is now. Pure.
//!
//! Some changes cannot be made safely by rewriting objects, so the plan keeps the cluster as it
//! is for those and says why:
//! - scaling down: Qdrant keeps a removed peer in its consensus and the shards it held would be
//!   lost; peers must be removed with Qdrant's API first;
//! - changing the data volume size or class: StatefulSet claim templates are immutable.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::validate::Instance;

/// A change the operator refuses to make, with the reason shown to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    ScaleDown {
        from: i32,
        to: i32,
    },
    StorageChange {
        field: &'static str,
        from: String,
        to: String,
    },
}

impl Refusal {
    /// Condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ScaleDown { .. } => "ScaleDownRefused",
            Refusal::StorageChange { .. } => "StorageChangeRefused",
        }
    }

    /// A message telling the user what happened and what to do.
    pub fn message(&self) -> String {
        match self {
            Refusal::ScaleDown { from, to } => format!(
                "scale-down from {from} to {to} replicas refused: Qdrant would keep the removed \
                 peers in its consensus and their shards would be lost. Move shards off and remove \
                 the peers with Qdrant's API (DELETE /cluster/peer/<id>), then lower \
                 spec.replicas; the cluster keeps {from} replicas meanwhile"
            ),
            Refusal::StorageChange { field, from, to } => format!(
                "{field} cannot change from {from} to {to}: StatefulSet volume claims are \
                 immutable. Expand the PVCs directly (if the StorageClass allows it) and set \
                 {field} back to {from}"
            ),
        }
    }
}

/// The instance to build, adjusted to what can be applied, and the refused changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub instance: Instance,
    pub refusals: Vec<Refusal>,
}

/// Plans the instance against the StatefulSet that exists (if any).
pub fn plan(mut inst: Instance, current: Option<&StatefulSet>) -> Plan {
    let mut refusals = Vec::new();
    let Some(spec) = current.and_then(|s| s.spec.as_ref()) else {
        return Plan {
            instance: inst,
            refusals,
        };
    };
    let running = spec.replicas.unwrap_or(1);
    if inst.replicas < running {
        refusals.push(Refusal::ScaleDown {
            from: running,
            to: inst.replicas,
        });
        inst.replicas = running;
    }
    let storage_claim = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .find(|c| c.metadata.name.as_deref() == Some("storage"));
    if let Some(claim) = storage_claim.and_then(|c| c.spec.as_ref()) {
        let size = claim
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        if let Some(size) = size
            && size != &inst.storage.size
        {
            refusals.push(Refusal::StorageChange {
                field: "spec.storage.size",
                from: size.0.clone(),
                to: inst.storage.size.0.clone(),
            });
            inst.storage.size = Quantity(size.0.clone());
        }
        if claim.storage_class_name != inst.storage.class {
            refusals.push(Refusal::StorageChange {
                field: "spec.storage.storageClassName",
                from: claim
                    .storage_class_name
                    .clone()
                    .unwrap_or_else(|| "(default)".into()),
                to: inst
                    .storage
                    .class
                    .clone()
                    .unwrap_or_else(|| "(default)".into()),
            });
            inst.storage.class = claim.storage_class_name.clone();
        }
    }
    Plan {
        instance: inst,
        refusals,
    }
}
