//! The drift signal: has anyone but the operator's own apply changed a child since that apply?
//! Read from `metadata.managedFields` alone, so a cache that keeps no body (a metadata-only
//! watch) still tells which children to look at.
//!
//! The rule: let `t` be the time of the operator's entry (manager [`MANAGER`], operation
//! `Apply`, no subresource). The object is flagged when there is no such entry, or when any
//! other entry (another manager, or the operator's own `Update`, e.g. an adoption patch) that is
//! not a `status` write has a time `>= t`. Times have whole-second resolution, so a tie counts as
//! foreign. `/scale` counts (it edits `spec.replicas`).
//!
//! Why it is sound: the API server stamps an entry's time only when that request changed the
//! object (a no-op apply is not persisted and leaves our time as it was; a changing apply
//! refreshes it), and every foreign change creates or refreshes the writer's entry. So an object
//! whose newest non-status entry is our Apply holds what our last changing apply left, plus
//! status. A flag is only a reason to look: the apply step reads the full object and compares
//! (see [`super::apply`]).
//!
//! Blind spot (accepted): a writer that uses the operator's field manager name with operation
//! `Apply` (`kubectl apply --server-side --field-manager=secure-qdrant-operator`) refreshes the
//! operator's own entry, so its edit is not flagged. (If it also leaves the applied-hash
//! annotation alone the edit stays until the next change of the desired object; that writer
//! already impersonates the operator.)

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use crate::children::meta::MANAGER;

/// Cache-only annotation (never sent: the operator applies objects it builds, not cached ones)
/// set to `"true"` on a cached object whose managed fields showed a foreign write, computed as
/// the watch event enters the cache, before the managed fields are dropped.
pub const FOREIGN_WRITE: &str = "secureqdrant.dev/foreign-write";

/// True when `meta`'s managed fields show a write newer than (or as new as) the operator's own
/// apply, or no apply of the operator at all. See the module documentation.
pub fn foreign_write(meta: &ObjectMeta) -> bool {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    let Some(ours) = entries
        .iter()
        .filter(|e| is_our_apply(e))
        .map(time)
        .max()
        .flatten()
    else {
        return true;
    };
    entries
        .iter()
        .filter(|e| !is_our_apply(e) && !is_status(e))
        .any(|e| time(e).is_none_or(|t| t >= ours))
}

/// Computes [`foreign_write`] into the [`FOREIGN_WRITE`] annotation (removed when clear), then
/// drops the managed fields: what a cache does with each object as it arrives.
pub fn mark_and_trim(meta: &mut ObjectMeta) {
    if foreign_write(meta) {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(FOREIGN_WRITE.to_owned(), "true".to_owned());
    } else if let Some(a) = meta.annotations.as_mut() {
        a.remove(FOREIGN_WRITE);
    }
    meta.managed_fields = None;
}

/// Whether a cached object carries the [`FOREIGN_WRITE`] mark.
pub fn flagged(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(FOREIGN_WRITE))
}

fn is_our_apply(e: &ManagedFieldsEntry) -> bool {
    e.manager.as_deref() == Some(MANAGER)
        && e.operation.as_deref() == Some("Apply")
        && e.subresource.as_deref().unwrap_or_default().is_empty()
}

fn is_status(e: &ManagedFieldsEntry) -> bool {
    e.subresource.as_deref() == Some("status")
}

fn time(e: &ManagedFieldsEntry) -> Option<Timestamp> {
    e.time.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Metadata with these managed fields, as the API server returns them.
    fn meta(fields: Value) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "v", "namespace": "ns", "resourceVersion": "812",
            "annotations": {"secureqdrant.dev/applied-hash": "h"},
            "managedFields": fields,
        }))
        .unwrap()
    }

    fn our_apply(time: &str) -> Value {
        json!({
            "manager": "secure-qdrant-operator", "operation": "Apply", "apiVersion": "apps/v1",
            "time": time, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:secureqdrant.dev/applied-hash": {}}},
                         "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}}
        })
    }

    /// A StatefulSet as the real control plane left it after our apply and the StatefulSet
    /// controller's status writes.
    fn with_status_churn() -> Vec<Value> {
        vec![
            our_apply("2026-12-05T10:00:00Z"),
            json!({
                "manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "apps/v1", "time": "2026-12-05T10:03:41Z",
                "fieldsType": "FieldsV1", "subresource": "status",
                "fieldsV1": {"f:status": {"f:availableReplicas": {}, "f:readyReplicas": {}}}
            }),
        ]
    }

    #[test]
    fn our_apply_then_status_writes_only_is_not_foreign() {
        assert!(!foreign_write(&meta(Value::Array(with_status_churn()))));
        assert!(!foreign_write(&meta(json!([our_apply(
            "2026-12-05T10:00:00Z"
        )]))));
    }

    #[test]
    fn a_scale_write_after_our_apply_is_foreign() {
        let mut fields = with_status_churn();
        fields.push(json!({
            "manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
            "time": "2026-12-05T10:05:00Z", "fieldsType": "FieldsV1", "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}
        }));
        assert!(foreign_write(&meta(Value::Array(fields))));
    }

    #[test]
    fn an_edit_by_another_manager_after_our_apply_is_foreign_and_before_it_is_not() {
        let edit = |time: &str| {
            json!({
                "manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1",
                "time": time, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:config.yaml": {}}}
            })
        };
        let after = json!([
            our_apply("2026-12-05T10:00:00Z"),
            edit("2026-12-05T10:00:07Z")
        ]);
        assert!(foreign_write(&meta(after)));
        // Repaired: our changing apply refreshed our time past the edit.
        let repaired = json!([
            edit("2026-12-05T10:00:07Z"),
            our_apply("2026-12-05T10:00:08Z")
        ]);
        assert!(!foreign_write(&meta(repaired)));
    }

    #[test]
    fn another_managers_apply_counts_as_foreign() {
        let forced = json!([
            our_apply("2026-12-05T10:00:00Z"),
            {"manager": "admin", "operation": "Apply", "apiVersion": "v1",
             "time": "2026-12-05T11:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:ports": {}}}}
        ]);
        assert!(foreign_write(&meta(forced)));
    }

    #[test]
    fn our_own_adoption_update_at_or_after_our_apply_is_foreign() {
        let adoption = |time: &str| {
            json!({
                "manager": "secure-qdrant-operator", "operation": "Update", "apiVersion": "v1",
                "time": time, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:ownerReferences": {}, "f:labels": {}}}
            })
        };
        let after = json!([
            our_apply("2026-12-05T10:00:00Z"),
            adoption("2026-12-05T10:00:01Z")
        ]);
        assert!(foreign_write(&meta(after)));
        let before = json!([
            adoption("2026-12-05T09:59:59Z"),
            our_apply("2026-12-05T10:00:00Z")
        ]);
        assert!(!foreign_write(&meta(before)));
    }

    #[test]
    fn a_foreign_write_in_the_same_second_as_our_apply_counts_as_foreign() {
        let tie = json!([
            our_apply("2026-12-05T10:00:00Z"),
            {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "v1",
             "time": "2026-12-05T10:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:publishNotReadyAddresses": {}}}}
        ]);
        assert!(foreign_write(&meta(tie)));
    }

    #[test]
    fn no_apply_of_ours_is_foreign() {
        let created_by_someone = json!([
            {"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
             "time": "2026-12-05T10:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:data": {}}}
        ]);
        assert!(foreign_write(&meta(created_by_someone)));
        // Our status-subresource apply is not our object apply.
        let mut status_only = our_apply("2026-12-05T10:00:00Z");
        status_only["subresource"] = json!("status");
        assert!(foreign_write(&meta(json!([status_only]))));
        // No managed fields at all (nothing to prove the object is as we left it).
        assert!(foreign_write(&ObjectMeta::default()));
        assert!(foreign_write(&meta(json!([]))));
    }

    #[test]
    fn an_entry_without_a_time_counts_as_foreign() {
        let mut ours = our_apply("2026-12-05T10:00:00Z");
        ours.as_object_mut().unwrap().remove("time");
        assert!(foreign_write(&meta(json!([ours]))));
        let untimed = json!({"manager": "m", "operation": "Update", "apiVersion": "v1"});
        assert!(foreign_write(&meta(json!([
            our_apply("2026-12-05T10:00:00Z"),
            untimed
        ]))));
    }

    #[test]
    fn the_mark_is_computed_before_the_managed_fields_go_and_cleared_when_clear() {
        let mut m = meta(json!([{"manager": "kubectl", "operation": "Update",
                                 "time": "2026-12-05T10:00:00Z"}]));
        mark_and_trim(&mut m);
        assert!(flagged(&m));
        assert!(m.managed_fields.is_none());
        assert_eq!(
            m.annotations.as_ref().unwrap()["secureqdrant.dev/applied-hash"],
            "h"
        );
        m.managed_fields = meta(Value::Array(with_status_churn())).managed_fields;
        mark_and_trim(&mut m);
        assert!(!flagged(&m));
        assert!(m.managed_fields.is_none());
        assert_eq!(m.annotations.as_ref().unwrap().len(), 1);
    }
}
