//! What the pods run with: a StatefulSet's pod template, once its rollout is complete. The
//! API-key rotation and the CA rollover each advance only when the pods run what they
//! published.

use crate::statefulset_view::StatefulSetView;

/// A pod-template annotation of the StatefulSet, once its rollout is complete and every pod is
/// ready: what every pod runs with. None while a rollout is in progress.
pub fn rolled_out_annotation(sts: Option<&StatefulSetView>, annotation: &str) -> Option<String> {
    let sts = sts?;
    let spec = sts.spec.as_ref()?;
    let status = sts.status.as_ref()?;
    let replicas = spec.replicas.unwrap_or(1);
    let done = status.observed_generation >= sts.metadata.generation
        && status.update_revision == status.current_revision
        && status.updated_replicas == Some(replicas)
        && status.ready_replicas == Some(replicas);
    if !done {
        return None;
    }
    spec.template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(annotation)
        .cloned()
}
