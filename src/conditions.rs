//! What both controllers (SecureQdrant and QdrantAccessToken) say in their status conditions:
//! the condition reasons they share, how a condition is set, and how soon a condition that
//! waits for another object's material is looked at again. Pure.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Reason of Reconciled=False (and of the Warning Event) when a referenced Secret does not allow
/// the instance (see `reconcile/references.rs`); a token blocked by such a Secret says the same.
pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
/// Condition type: an object with the name of one of the instance's children exists and is not
/// controlled by it; nothing was written to it (see `reconcile/ownership.rs`). A token whose
/// instance Secret is such an object is blocked with this reason.
pub const CHILD_CONFLICT: &str = "ChildConflict";

/// How soon to look again while waiting for the SecureQdrant's material (its API key, CA or
/// trust bundle), or for a client certificate that cannot be issued yet.
pub const WAIT: Duration = Duration::from_secs(10);

/// Sets a condition, keeping its lastTransitionTime when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}
