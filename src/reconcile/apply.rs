//! Writes: server-side apply under one field manager, skipped when the cluster already holds
//! exactly what would be sent (so an idle operator writes nothing), and deletion of children that
//! are no longer built.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::expect::Expectations;
use super::stores::cached;
use crate::children::meta::{LABEL_INSTANCE, MANAGER};
use crate::error::{Error, Result};
use crate::validate::parse_quantity;

/// Annotation on every applied child: hash of what the operator last sent. With the subset check
/// below it detects both drift made by others and fields the operator stopped sending.
pub const APPLIED_HASH: &str = "secureqdrant.dev/applied-hash";

/// What a step did, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied,
    /// Not written: the same write was just made and the cache has not shown it yet. Look again
    /// within [`super::expect::EXPECTATION_TTL`].
    Pending,
}

/// Hash of an object as it would be sent.
pub fn applied_hash<K: Serialize>(obj: &K) -> String {
    let bytes = serde_json::to_vec(obj).expect("k8s objects serialize");
    hex::encode(&Sha256::digest(&bytes)[..16])
}

/// True when every field of `want` is present in `have` with the same value (the API server adds
/// defaults and status, so `have` may hold more).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        // The API server rewrites quantities to canonical form (`1.5Gi` is stored as `1536Mi`):
        // equal values are equal, or every reconcile would re-apply them.
        (Value::String(w), Value::String(h)) => w == h || same_quantity(w, h),
        (w, h) => w == h,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0) * 4.0,
        _ => false,
    }
}

/// Decides whether `desired` (already carrying its applied-hash annotation) needs a write.
pub fn needs_apply<K: Serialize + Resource>(desired: &K, current: Option<&K>) -> bool {
    let Some(current) = current else { return true };
    let want_hash = desired
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH));
    let have_hash = current
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH));
    if want_hash.is_none() || want_hash != have_hash {
        return true;
    }
    let want = serde_json::to_value(desired).expect("k8s objects serialize");
    let mut have = serde_json::to_value(current).expect("k8s objects serialize");
    // The cache keeps some parts as compact JSON: compare with them in place.
    super::compact::restore(&mut have);
    !is_subset(&want, &have)
}

/// Stamps the applied-hash annotation on a desired object.
pub fn stamp<K: Serialize + Resource>(mut desired: K) -> K {
    let hash = applied_hash(&desired);
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH.to_owned(), hash);
    desired
}

/// Server-side applies `desired` unless the cache shows it is already in place, or the same
/// write was just made and the cache has not caught up yet (`expectations`).
pub async fn apply<K>(
    client: &Client,
    expectations: &Expectations,
    store: &Store<K>,
    desired: K,
) -> Result<Outcome>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + 'static,
{
    let desired = stamp(desired);
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let current = cached(store, &namespace, &name);
    if !needs_apply(&desired, current.as_deref()) {
        return Ok(Outcome::Unchanged);
    }
    let kind = <K as k8s_openapi::Resource>::KIND;
    let hash = desired
        .annotations()
        .get(APPLIED_HASH)
        .cloned()
        .unwrap_or_default();
    let cache_behind = current
        .as_deref()
        .is_none_or(|c| c.annotations().get(APPLIED_HASH) != Some(&hash));
    if cache_behind && expectations.pending(kind, &namespace, &name, &hash) {
        return Ok(Outcome::Pending);
    }
    // Recorded before the write, so its watch event cannot arrive before the record.
    expectations.expect(kind, &namespace, &name, &hash);
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| {
        expectations.forget(kind, &namespace, &name);
        Error::Apply {
            kind,
            name: name.clone(),
            source,
        }
    })?;
    Ok(Outcome::Applied)
}

/// Deletes the cached children of one instance (by its labels and controller owner UID) whose
/// names are not in `keep`. Returns the names deleted.
pub async fn delete_orphans<K>(
    client: &Client,
    store: &Store<K>,
    namespace: &str,
    instance: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<Vec<String>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + DeserializeOwned
        + 'static,
{
    let orphans: Vec<String> = store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace))
        .filter(|o| o.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(instance))
        .filter(|o| {
            o.owner_references()
                .iter()
                .any(|r| r.uid == owner_uid && r.controller == Some(true))
        })
        .map(|o| o.name_any())
        .filter(|n| !keep.contains(n))
        .collect();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for name in &orphans {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: <K as k8s_openapi::Resource>::KIND,
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(orphans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_added_fields_but_not_changed_ones() {
        let want = json!({"a": 1, "b": {"c": [1, {"d": 2}]}});
        let have = json!({"a": 1, "x": 0, "b": {"c": [1, {"d": 2, "e": 3}], "z": 1}});
        assert!(is_subset(&want, &have));
        assert!(!is_subset(&json!({"a": 2}), &have));
        assert!(!is_subset(&json!({"b": {"c": [1]}}), &have));
        assert!(!is_subset(&json!({"missing": null}), &have));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(&json!({"q": "1.5Gi"}), &json!({"q": "1536Mi"})));
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(!is_subset(&json!({"q": "1Gi"}), &json!({"q": "1G"})));
        assert!(!is_subset(&json!({"name": "a"}), &json!({"name": "b"})));
    }
}
