//! The StatefulSet as the operator caches it: only what its decisions read. A k8s-openapi
//! `StatefulSet` decodes the whole pod spec (~20 KB of structs for ~3 KB of JSON); at 1,000
//! instances that cache was the biggest part of the operator's memory (BENCHMARKS.md). The
//! view keeps:
//! - `metadata` (ownership, pruning, the applied-hash annotation, `generation`);
//! - `spec.replicas` (scale-down acknowledgment, rollout gating);
//! - the pod template's annotations (the TLS and API-key fingerprints the pods run with);
//! - each claim template's name, storage request and storage class (claim templates are
//!   immutable: `plan` keeps them);
//! - `status.{replicas, readyReplicas, updatedReplicas, currentRevision, updateRevision,
//!   observedGeneration}` (rollout gating, the instance's status).
//!
//! Everything else, the pod spec first, is skipped by serde while a watch event is decoded (never
//! built, no JSON round trip). Drift of the parts not kept is seen through the field managers and
//! verified on the full object (`reconcile::apply`).
//!
//! The field names are those of k8s-openapi's `StatefulSet`, so readers read it the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// What the operator reads of a StatefulSet (see the module's documentation).
#[derive(kube::Resource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[resource(inherit = "StatefulSet")]
pub struct StatefulSetView {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// `spec`: the replicas, the pod template's annotations, the claim templates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub template: Template,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_templates: Option<Vec<Claim>>,
}

/// `spec.template`: its metadata's annotations only (the pod spec is skipped).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Annotated>,
}

/// Metadata reduced to its annotations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Annotated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A claim template: its name, storage request and class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Claim {
    #[serde(default)]
    pub metadata: Named,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ClaimSpec>,
}

/// Metadata reduced to the name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Named {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A claim template's spec: the storage request and class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// `resources` of a claim: the requests (`storage`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
}

/// `status`: what rollout gating and the instance's status read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl From<&StatefulSet> for StatefulSetView {
    /// What the view keeps of a StatefulSet (the operator's own, to compare with the cache, and
    /// tests').
    fn from(sts: &StatefulSet) -> Self {
        let value = serde_json::to_value(sts).expect("k8s objects serialize");
        serde_json::from_value(value).expect("a StatefulSet decodes into its view")
    }
}

impl From<StatefulSet> for StatefulSetView {
    fn from(sts: StatefulSet) -> Self {
        StatefulSetView::from(&sts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A StatefulSet as the real API server returned it, its StatefulSet controller having
    /// rolled it out: a `minimal` instance (TLS on), recorded by `tests/statefulset_cache.rs`
    /// (`RECORD_STATEFULSET`).
    fn recorded() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/recorded/statefulset.json"))
            .expect("recorded JSON")
    }

    #[test]
    fn a_real_statefulset_decodes_into_exactly_what_is_read() {
        let view: StatefulSetView = serde_json::from_value(recorded()).unwrap();
        let full: StatefulSet = serde_json::from_value(recorded()).unwrap();
        assert_eq!(view.metadata, full.metadata, "the metadata is kept whole");
        let spec = view.spec.as_ref().unwrap();
        let full_spec = full.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, full_spec.replicas);
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().annotations,
            full_spec.template.metadata.as_ref().unwrap().annotations
        );
        let claims = spec.volume_claim_templates.as_ref().unwrap();
        let full_claims = full_spec.volume_claim_templates.as_ref().unwrap();
        assert_eq!(claims.len(), full_claims.len());
        for (c, f) in claims.iter().zip(full_claims) {
            assert_eq!(c.metadata.name, f.metadata.name);
            let (cs, fs) = (c.spec.as_ref().unwrap(), f.spec.as_ref().unwrap());
            assert_eq!(cs.storage_class_name, fs.storage_class_name);
            assert_eq!(
                cs.resources.as_ref().unwrap().requests,
                fs.resources.as_ref().unwrap().requests
            );
        }
        let (status, full_status) = (view.status.as_ref().unwrap(), full.status.unwrap());
        assert_eq!(status.replicas, full_status.replicas);
        assert_eq!(status.ready_replicas, full_status.ready_replicas);
        assert_eq!(status.updated_replicas, full_status.updated_replicas);
        assert_eq!(status.current_revision, full_status.current_revision);
        assert_eq!(status.update_revision, full_status.update_revision);
        assert_eq!(status.observed_generation, full_status.observed_generation);
    }

    #[test]
    fn nothing_else_of_a_real_statefulset_is_kept() {
        let view: StatefulSetView = serde_json::from_value(recorded()).unwrap();
        let mut kept = serde_json::to_value(&view).unwrap();
        kept.as_object_mut().unwrap().remove("metadata");
        let annotations = serde_json::to_value(
            &view
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations,
        )
        .unwrap();
        let status = &recorded()["status"];
        assert_eq!(
            kept,
            json!({
                "spec": {
                    "replicas": 1,
                    "template": {"metadata": {"annotations": annotations}},
                    "volumeClaimTemplates": [{
                        "metadata": {"name": "storage"},
                        "spec": {"resources": {"requests": {"storage": "10Gi"}}}
                    }]
                },
                "status": {
                    "replicas": status["replicas"],
                    "readyReplicas": status["readyReplicas"],
                    "updatedReplicas": status["updatedReplicas"],
                    "currentRevision": status["currentRevision"],
                    "updateRevision": status["updateRevision"],
                    "observedGeneration": status["observedGeneration"],
                }
            }),
            "the pod spec, selector, strategies and the rest of the status are not kept"
        );
    }

    #[test]
    fn the_view_is_the_statefulset_resource() {
        use kube::Resource;
        assert_eq!(StatefulSetView::kind(&()), "StatefulSet");
        assert_eq!(StatefulSetView::group(&()), "apps");
        assert_eq!(StatefulSetView::version(&()), "v1");
        assert_eq!(StatefulSetView::plural(&()), "statefulsets");
    }
}
