//! Annotations a user sets on a SecureQdrant to ask the operator for something the spec does not
//! say. Validation reads them into the [`crate::validate::Instance`]; no later step reads the
//! resource for them.

/// Annotation on the SecureQdrant: the user moved the shards off the peers of the pods
/// `<n>-<k>`, k ≥ the value, and removed those peers from Qdrant's consensus; the value is the
/// replica count to scale down to, and must equal `spec.replicas` (see `crate::reconcile::plan`).
pub const PEERS_REMOVED_ANNOTATION: &str = "secureqdrant.dev/peers-removed";
