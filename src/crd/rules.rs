//! Helpers for the CEL rules of the CRDs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;

/// `rule` (a rule at the root of a schema) checked when the object is created, never on an
/// update. The API server evaluates a root rule on every write of the object, status writes
/// included (the status subresource validates the whole object), and forgives a failing rule
/// ("ratcheting") only on a node that did not change: the root always changes with the status.
/// An object created before the rule existed (an upgraded cluster) would get a 422 on every
/// status write, and the condition naming the fix could never be written. For a rule on
/// `metadata.name` (immutable), create-only loses nothing. `optionalOldSelf` makes the rule run
/// on create with `oldSelf` unset (GA and always on since Kubernetes 1.33, feature
/// CRDValidationRatcheting).
pub(crate) fn on_create_only(rule: ValidationRule) -> ValidationRule {
    ValidationRule {
        rule: format!("oldSelf.hasValue() || ({})", rule.rule),
        optional_old_self: Some(true),
        ..rule
    }
}
