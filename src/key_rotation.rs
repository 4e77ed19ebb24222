//! Rotation of the generated full-access API key without downtime, through Qdrant's
//! `alt_api_key` (a second key that is accepted for requests and as a JWT secret). Pure: the
//! reconcile reads the state from the API-key Secret and the StatefulSet, and writes back what
//! [`step`] decides.
//!
//! 1. Asked for (annotation `secureqdrant.dev/rotate-api-key` set to a new value): a new key is
//!    stored as `next-api-key` and phase `Introduced` is recorded on the Secret. Qdrant gets it as
//!    `alt_api_key`; the pods roll; both keys work.
//! 2. Once every pod runs, ready, with both keys, the time is recorded (`rolled-out-at`). From
//!    then on new tokens are signed with the new key and consumers have the grace period
//!    (`spec.auth.keyRotationGracePeriod`) to pick it up.
//! 3. After the grace period the new key is promoted to `api-key` and the old one is removed;
//!    the pods roll again.
//!
//! Every phase lives on the Secret, so an operator restart resumes where it stopped.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Annotation on the SecureQdrant: set to a new value to rotate the generated API key.
pub const ROTATE_API_KEY_ANNOTATION: &str = "secureqdrant.dev/rotate-api-key";
/// Annotation on `<n>-api-key`: the request value last handled.
pub const HANDLED_ANNOTATION: &str = "secureqdrant.dev/api-key-rotation-handled";
/// Annotation on `<n>-api-key`: the rotation phase (`Introduced`), absent when none runs.
pub const PHASE_ANNOTATION: &str = "secureqdrant.dev/api-key-rotation-phase";
/// Annotation on `<n>-api-key`: when every pod first ran with both keys.
pub const ROLLED_OUT_AT_ANNOTATION: &str = "secureqdrant.dev/api-key-rotation-rolled-out-at";
/// Pod-template annotation: fingerprint of the keys the pods run with.
pub const KEYS_FINGERPRINT_ANNOTATION: &str = "secureqdrant.dev/api-keys-fingerprint";
/// The one phase a running rotation is in.
pub const PHASE_INTRODUCED: &str = "Introduced";
/// While waiting for a rollout, look again at least this often.
pub const POLL: Duration = Duration::from_secs(30);

/// What the reconcile knows about a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationState<'a> {
    /// `ROTATE_API_KEY_ANNOTATION` on the SecureQdrant.
    pub requested: Option<&'a str>,
    /// `HANDLED_ANNOTATION` on the Secret.
    pub handled: Option<&'a str>,
    /// The Secret holds `next-api-key`.
    pub has_next: bool,
    /// `ROLLED_OUT_AT_ANNOTATION` on the Secret, parsed.
    pub rolled_out_at: Option<Timestamp>,
    /// Every pod runs, ready, with the keys the Secret holds now.
    pub rolled_out: bool,
    pub grace: Duration,
    pub now: Timestamp,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationStep {
    /// No rotation runs and none is asked for.
    Idle,
    /// Generate the next key and record phase Introduced and the handled request.
    Start { request: String },
    /// Wait for the pods to roll with both keys.
    AwaitRollout,
    /// Record that the pods run with both keys (tokens switch to the new key now).
    MarkRolledOut,
    /// Both keys work; the grace period runs until then.
    Grace { until: Timestamp },
    /// Make the next key the only key.
    Promote,
}

/// Decides the next step of a rotation.
pub fn step(s: &RotationState<'_>) -> RotationStep {
    if !s.has_next {
        return match s.requested {
            Some(r) if !r.is_empty() && Some(r) != s.handled => RotationStep::Start {
                request: r.to_owned(),
            },
            _ => RotationStep::Idle,
        };
    }
    match s.rolled_out_at {
        None if !s.rolled_out => RotationStep::AwaitRollout,
        None => RotationStep::MarkRolledOut,
        Some(at) => {
            let until = at
                .checked_add(
                    k8s_openapi::jiff::SignedDuration::try_from(s.grace).unwrap_or_default(),
                )
                .unwrap_or(at);
            if s.now >= until {
                RotationStep::Promote
            } else {
                RotationStep::Grace { until }
            }
        }
    }
}

/// How long to wait before looking again after `step`.
pub fn requeue_after(step: &RotationStep, now: Timestamp, grace: Duration) -> Option<Duration> {
    match step {
        RotationStep::Idle => None,
        RotationStep::Start { .. } | RotationStep::AwaitRollout => Some(POLL),
        RotationStep::MarkRolledOut => Some(grace.max(Duration::from_secs(1))),
        RotationStep::Grace { until } => Some(
            Duration::try_from(*until - now)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
        ),
        RotationStep::Promote => Some(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state<'a>() -> RotationState<'a> {
        RotationState {
            requested: None,
            handled: None,
            has_next: false,
            rolled_out_at: None,
            rolled_out: true,
            grace: Duration::from_secs(3600),
            now: "2026-11-22T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_new_request_starts_once() {
        let mut s = state();
        assert_eq!(step(&s), RotationStep::Idle);
        s.requested = Some("n1");
        assert_eq!(
            step(&s),
            RotationStep::Start {
                request: "n1".into()
            }
        );
        s.handled = Some("n1");
        assert_eq!(
            step(&s),
            RotationStep::Idle,
            "a handled request is not repeated"
        );
        s.requested = Some("");
        s.handled = None;
        assert_eq!(
            step(&s),
            RotationStep::Idle,
            "an empty value asks for nothing"
        );
    }

    #[test]
    fn phases_advance_only_after_rollout_and_grace() {
        let mut s = state();
        s.requested = Some("n1");
        s.handled = Some("n1");
        s.has_next = true;
        s.rolled_out = false;
        assert_eq!(step(&s), RotationStep::AwaitRollout);
        s.rolled_out = true;
        assert_eq!(step(&s), RotationStep::MarkRolledOut);
        s.rolled_out_at = Some(s.now);
        let until: Timestamp = "2026-11-22T01:00:00Z".parse().unwrap();
        assert_eq!(step(&s), RotationStep::Grace { until });
        assert_eq!(
            requeue_after(&step(&s), s.now, s.grace),
            Some(Duration::from_secs(3600))
        );
        s.now = "2026-11-22T00:59:59Z".parse().unwrap();
        assert_eq!(
            step(&s),
            RotationStep::Grace { until },
            "not a second early"
        );
        s.now = until;
        assert_eq!(step(&s), RotationStep::Promote);
        // A new request during a rotation waits for it to finish.
        s.requested = Some("n2");
        assert_eq!(step(&s), RotationStep::Promote);
    }
}
