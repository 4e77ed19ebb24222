//! PodDisruptionBudget `<n>`: at most one Qdrant peer down at a time (cluster mode only).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{COMPONENT_DATABASE, object_meta, pod_selector};
use crate::validate::Instance;

/// None for a single node: a budget of one unavailable pod would block node drains forever.
pub fn build(inst: &Instance) -> Option<PodDisruptionBudget> {
    inst.cluster_mode().then(|| PodDisruptionBudget {
        metadata: object_meta(inst, &inst.name, COMPONENT_DATABASE),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pod_selector(inst)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
