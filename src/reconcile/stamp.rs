//! The applied-hash annotation: what the operator last sent, stamped on every child it applies.
//! The apply step compares it with the cache ([`super::apply::needs_apply`]); the expectations
//! ([`super::expect`]) wait for the watch to show it.

use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Annotation on every applied child: hash of what the operator last sent. With the subset check
/// of [`super::apply::is_subset`] it detects both drift made by others and fields the operator stopped sending.
pub const APPLIED_HASH: &str = "secureqdrant.dev/applied-hash";

/// Hash of an object as it would be sent.
pub fn applied_hash<K: Serialize>(obj: &K) -> String {
    let bytes = serde_json::to_vec(obj).expect("k8s objects serialize");
    hex::encode(&Sha256::digest(&bytes)[..16])
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
