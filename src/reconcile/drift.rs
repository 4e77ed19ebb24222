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
//! A removal is the exception: a write that only removes fields the operator owns (a merge patch
//! setting `spec.ingress: []`, a deleted ConfigMap key) leaves the writer owning nothing, so the
//! API server records no entry for it, and takes the fields out of the operator's entry without
//! touching its time. So the cache also keeps [`OWNED_FIELDS`], a fingerprint of the field paths
//! the operator's entry still owns ([`owned_fields`]), and the apply step compares it with the
//! paths of what it sends ([`sent_fields`]): a field removed by someone else changes it. The
//! fingerprint stops at lists (their element keys need the schema): removing one element of a
//! list the API server merges by key (one of several ports, one env var) while others stay is
//! not seen until the next write of that child.
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

/// Cache-only annotation: the fingerprint of the field paths the operator's apply entry owns
/// ([`owned_fields`]), set as the watch event enters the cache; absent when there is no such
/// entry (the object is then flagged anyway).
pub const OWNED_FIELDS: &str = "secureqdrant.dev/owned-fields";

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

/// Computes [`foreign_write`] into the [`FOREIGN_WRITE`] annotation (removed when clear) and
/// [`owned_fields`] into [`OWNED_FIELDS`], then drops the managed fields: what a cache does with
/// each object as it arrives.
pub fn mark_and_trim(meta: &mut ObjectMeta) {
    let foreign = foreign_write(meta);
    let owned = owned_fields(meta);
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    if foreign {
        annotations.insert(FOREIGN_WRITE.to_owned(), "true".to_owned());
    } else {
        annotations.remove(FOREIGN_WRITE);
    }
    match owned {
        Some(owned) => annotations.insert(OWNED_FIELDS.to_owned(), owned),
        None => annotations.remove(OWNED_FIELDS),
    };
    meta.managed_fields = None;
}

/// The fingerprint of the field paths the operator's apply entry owns, down to the first list
/// (`None`: no such entry).
pub fn owned_fields(meta: &ObjectMeta) -> Option<String> {
    let entry = meta
        .managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| is_our_apply(e))?;
    let mut paths = Vec::new();
    if let Some(fields) = &entry.fields_v1 {
        field_paths(&fields.0, &mut String::new(), 0, &mut paths);
    }
    Some(fingerprint(paths))
}

/// The same fingerprint for an object as the operator sends it (JSON): equal to the
/// [`owned_fields`] of the object once applied, unless someone removed some of its fields.
pub fn sent_fields(desired: &serde_json::Value) -> String {
    let mut paths = Vec::new();
    object_paths(desired, &mut String::new(), 0, &mut paths);
    fingerprint(paths)
}

/// Whether the fingerprint the cache kept differs from that of what would be sent (`None`
/// kept: unknown, e.g. a cache that never saw managed fields: not a difference).
pub fn fields_removed(meta: &ObjectMeta, sent: &str) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OWNED_FIELDS))
        .is_some_and(|owned| owned != sent)
}

/// Fields that are not tracked in managed fields (or never sent).
fn untracked(depth: usize, parent_is_metadata: bool, key: &str) -> bool {
    (depth == 0 && matches!(key, "apiVersion" | "kind" | "status"))
        || (parent_is_metadata
            && matches!(
                key,
                "name"
                    | "namespace"
                    | "resourceVersion"
                    | "uid"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
            ))
}

const SEP: char = '\u{1f}';

/// Fields the API server manages as one value (`+structType=atomic` / `+mapType=atomic` in the
/// Kubernetes API: label selectors, a Service's selector, a pod's node selector): managed fields
/// never go inside them, so neither does the fingerprint of what is sent. (Lists are never
/// entered on either side.) A field missing here costs reads, not a missed drift: the child is
/// read once per version and found clean.
const ATOMIC: &[&str] = &[
    "selector",
    "podSelector",
    "namespaceSelector",
    "nodeSelector",
    "labelSelector",
    "requiredDuringSchedulingIgnoredDuringExecution",
];

fn field_paths(node: &serde_json::Value, prefix: &mut String, depth: usize, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    let is_metadata = depth == 1 && prefix.ends_with("metadata");
    for (key, child) in map {
        let Some(name) = key.strip_prefix("f:") else {
            continue;
        };
        if untracked(depth, is_metadata, name) {
            continue;
        }
        let len = prefix.len();
        prefix.push(SEP);
        prefix.push_str(name);
        let children = child.as_object();
        let is_list = children.is_some_and(|c| {
            c.keys()
                .any(|k| k.starts_with("k:") || k.starts_with("v:") || k.starts_with("i:"))
        });
        let has_fields = children.is_some_and(|c| c.keys().any(|k| k.starts_with("f:")));
        if is_list || !has_fields || ATOMIC.contains(&name) {
            out.push(prefix.clone());
        } else {
            field_paths(child, prefix, depth + 1, out);
        }
        prefix.truncate(len);
    }
}

fn object_paths(
    node: &serde_json::Value,
    prefix: &mut String,
    depth: usize,
    out: &mut Vec<String>,
) {
    let Some(map) = node.as_object() else { return };
    let is_metadata = depth == 1 && prefix.ends_with("metadata");
    for (key, child) in map {
        if child.is_null() || untracked(depth, is_metadata, key) {
            continue;
        }
        let len = prefix.len();
        prefix.push(SEP);
        prefix.push_str(key);
        match child.as_object() {
            Some(m)
                if !m.values().all(serde_json::Value::is_null)
                    && !ATOMIC.contains(&key.as_str()) =>
            {
                object_paths(child, prefix, depth + 1, out)
            }
            _ => out.push(prefix.clone()),
        }
        prefix.truncate(len);
    }
}

fn fingerprint(mut paths: Vec<String>) -> String {
    use sha2::{Digest, Sha256};
    paths.sort();
    let mut h = Sha256::new();
    for p in &paths {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..12])
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
    fn the_owned_fields_match_what_was_sent_until_someone_removes_one() {
        let sent = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "v-ingress", "namespace": "ns",
                         "labels": {"app.kubernetes.io/instance": "v"},
                         "annotations": {"secureqdrant.dev/applied-hash": "h"},
                         "ownerReferences": [{"uid": "u", "name": "v"}]},
            "spec": {"podSelector": {"matchLabels": {"app": "q"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"port": 6333}]}]}
        });
        // As the API server recorded our apply of it.
        let fields = json!({
            "f:metadata": {
                "f:annotations": {"f:secureqdrant.dev/applied-hash": {}},
                "f:labels": {"f:app.kubernetes.io/instance": {}},
                "f:ownerReferences": {"k:{\"uid\":\"u\"}": {}}
            },
            "f:spec": {"f:ingress": {}, "f:podSelector": {}, "f:policyTypes": {}}
        });
        let ours = |fields: &Value| {
            let mut entry = our_apply("2026-12-05T10:00:00Z");
            entry["fieldsV1"] = fields.clone();
            meta(json!([entry]))
        };
        let mut m = ours(&fields);
        assert_eq!(
            owned_fields(&m).as_deref(),
            Some(sent_fields(&sent).as_str())
        );
        mark_and_trim(&mut m);
        assert!(!flagged(&m));
        assert!(!fields_removed(&m, &sent_fields(&sent)));
        // Someone emptied the rules (a merge patch): the field left our entry, no entry of
        // theirs, our time unchanged.
        let mut emptied = fields.clone();
        emptied["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:ingress");
        let mut m = ours(&emptied);
        assert!(!foreign_write(&m), "the time rule cannot see it");
        mark_and_trim(&mut m);
        assert!(fields_removed(&m, &sent_fields(&sent)));
        // A cache that never saw managed fields knows nothing either way.
        assert!(!fields_removed(&ObjectMeta::default(), &sent_fields(&sent)));
        assert!(owned_fields(&meta(json!([]))).is_none());
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
        assert_eq!(
            m.annotations.as_ref().unwrap().len(),
            2,
            "applied hash and owned fields"
        );
    }
}
