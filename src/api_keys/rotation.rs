//! Rotation of the generated full-access API key without downtime, through Qdrant's
//! `alt_api_key` (a second key that is accepted for requests and as a JWT secret). Pure: the
//! reconcile reads the state from the API-key Secret and the StatefulSet, and writes back what
//! [`step`] decides.
//!
//! In cluster mode peers authenticate to each other with their own `api_key`
//! (`enforce_internal_auth`), so at every moment of every roll, each pod's `api_key` must be
//! accepted by every other pod, old revision or new. That takes three rolls:
//!
//! 1. Asked for (annotation `secureqdrant.dev/rotate-api-key` set to a new value): a new key is
//!    stored as `next-api-key` and phase `Introduced` is recorded on the Secret. Qdrant gets it as
//!    `alt_api_key`; the pods roll; both keys work.
//! 2. Once every pod runs, ready, with both keys, the time is recorded (`rolled-out-at`). From
//!    then on new tokens are signed with the new key and consumers have the grace period
//!    (`spec.auth.keyRotationGracePeriod`) to pick it up.
//! 3. After the grace period, phase `Swapped`: the pods roll with the new key as `api_key` and the
//!    old one as `alt_api_key` (the Secret's data does not change). Old and new pods still accept
//!    both keys, so peers on either side of the roll keep talking.
//! 4. Once rolled out, phase `Promoted`: `api-key` gets the new key and the pods roll with it
//!    alone. Every pod of either revision now sends the new key to its peers; clients still
//!    using the old key are refused from here on.
//! 5. Once rolled out, `next-api-key` and the phase are removed (no roll: the pods do not read
//!    it any more).
//!
//! Every phase lives on the Secret, so an operator restart resumes where it stopped; every Secret
//! key a pod template refers to stays in the Secret until no pod of that template can restart.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use serde_json::{Map, Value, json};

use super::keys::{API_KEY, ApiKeys, NEXT_API_KEY, data_value, generate_key};
use super::phase::{PHASE_ANNOTATION, Phase};
use crate::events::Notice;

/// Annotation on the SecureQdrant: set to a new value to rotate the generated API key.
pub const ROTATE_API_KEY_ANNOTATION: &str = "secureqdrant.dev/rotate-api-key";
/// Annotation on `<n>-api-key`: the request value last handled.
pub const HANDLED_ANNOTATION: &str = "secureqdrant.dev/api-key-rotation-handled";
/// Annotation on `<n>-api-key`: when every pod first ran with both keys.
pub const ROLLED_OUT_AT_ANNOTATION: &str = "secureqdrant.dev/api-key-rotation-rolled-out-at";
/// Pod-template annotation: fingerprint of the keys the pods run with.
pub const KEYS_FINGERPRINT_ANNOTATION: &str = "secureqdrant.dev/api-keys-fingerprint";
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
    /// The phase recorded on the Secret ([`Phase::recorded`]); None when no rotation runs.
    pub phase: Option<Phase>,
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
    /// Give Qdrant the new key as `api_key` and the old one as `alt_api_key`.
    Swap,
    /// Store the new key as `api-key`, the only key Qdrant gets.
    Promote,
    /// Remove `next-api-key` and the phase: the rotation is over.
    Finish,
}

impl<'a> RotationState<'a> {
    /// The state of a rotation: what `<n>-api-key` (`secret`) records, the request on the
    /// SecureQdrant (`requested`), whether the Secret holds a usable `next-api-key`
    /// (`has_next`) and whether every pod runs, ready, with the keys it holds (`rolled_out`).
    pub fn read(
        secret: &'a Secret,
        requested: Option<&'a str>,
        has_next: bool,
        rolled_out: bool,
        grace: Duration,
        now: Timestamp,
    ) -> Self {
        let annotations = secret.annotations();
        RotationState {
            requested,
            handled: annotations.get(HANDLED_ANNOTATION).map(String::as_str),
            has_next,
            phase: Phase::recorded(secret),
            rolled_out_at: annotations
                .get(ROLLED_OUT_AT_ANNOTATION)
                .and_then(|t| t.parse().ok()),
            rolled_out,
            grace,
            now,
        }
    }
}

/// Decides the next step of a rotation.
pub fn step(s: &RotationState<'_>) -> RotationStep {
    if !s.has_next {
        return match s.requested {
            Some(r) if !r.is_empty() && Some(r) != s.handled => RotationStep::Start {
                request: r.to_owned(),
            },
            // `next-api-key` was removed by hand mid-rotation, in phase Introduced or Promoted
            // (Swapped is refused before this: the pods send that key to their peers). Pods of
            // the template that still names it cannot restart until they are replaced, which the
            // one-key template does; no pod's api_key is lost. Clear what is left.
            _ if s.phase.is_some() || s.rolled_out_at.is_some() => RotationStep::Finish,
            _ => RotationStep::Idle,
        };
    }
    match s.phase {
        Some(Phase::Swapped) if s.rolled_out => RotationStep::Promote,
        Some(Phase::Promoted) if s.rolled_out => RotationStep::Finish,
        Some(Phase::Swapped | Phase::Promoted) => RotationStep::AwaitRollout,
        // Introduced (or an annotation that was lost: the keys tell the same).
        _ => match s.rolled_out_at {
            None if !s.rolled_out => RotationStep::AwaitRollout,
            None => RotationStep::MarkRolledOut,
            Some(at) => {
                let until = at
                    .checked_add(
                        k8s_openapi::jiff::SignedDuration::try_from(s.grace).unwrap_or_default(),
                    )
                    .unwrap_or(at);
                if s.now >= until {
                    RotationStep::Swap
                } else {
                    RotationStep::Grace { until }
                }
            }
        },
    }
}

/// Whether tokens are signed with `next-api-key`: once every pod accepts it (recorded as
/// `rolled-out-at`) and in the later phases, while the Secret still holds it.
pub fn sign_with_next(has_next: bool, phase: Option<Phase>, rolled_out_at: bool) -> bool {
    has_next && (rolled_out_at || matches!(phase, Some(Phase::Swapped | Phase::Promoted)))
}

/// The phase a running rotation is in once `step` is done, for the metric
/// `secure_qdrant_rotation_phase_since_timestamp_seconds`: `Introduced` (waiting for the pods to
/// run with both keys), `GracePeriod` (both keys work, consumers pick up the new one),
/// `Swapped`, `Promoted` (waiting for those rolls); None when no rotation runs. `phase` is the
/// recorded phase the step was decided from.
pub fn metric_phase(step: &RotationStep, phase: Option<Phase>) -> Option<&'static str> {
    match step {
        RotationStep::Idle | RotationStep::Finish => None,
        RotationStep::Start { .. } => Some(Phase::Introduced.as_str()),
        RotationStep::AwaitRollout => Some(phase.unwrap_or_default().as_str()),
        RotationStep::MarkRolledOut | RotationStep::Grace { .. } => Some("GracePeriod"),
        RotationStep::Swap => Some(Phase::Swapped.as_str()),
        RotationStep::Promote => Some(Phase::Promoted.as_str()),
    }
}

/// How long to wait before looking again after `step`.
pub fn requeue_after(step: &RotationStep, now: Timestamp, grace: Duration) -> Option<Duration> {
    match step {
        RotationStep::Idle => None,
        RotationStep::Start { .. }
        | RotationStep::AwaitRollout
        | RotationStep::Swap
        | RotationStep::Promote => Some(POLL),
        RotationStep::MarkRolledOut => Some(grace.max(Duration::from_secs(1))),
        RotationStep::Grace { until } => Some(
            Duration::try_from(*until - now)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
        ),
        RotationStep::Finish => Some(Duration::from_secs(1)),
    }
}

/// What a rotation step writes to `<n>-api-key`, as a merge patch of its data and annotations
/// (a value to set, or null to remove), and what it tells the user.
#[derive(Clone, Debug)]
pub struct StepWrite {
    pub data: Map<String, Value>,
    pub annotations: Value,
    pub notice: Notice,
}

/// Applies `step` to `keys` (what Qdrant gets from now on) and says what to write; None when
/// the step writes nothing. `secret`: the name of `<n>-api-key`; `grace`: the grace period
/// (both for the notice). Pure apart from the OS random source (a new key).
pub fn advance(
    step: &RotationStep,
    keys: &mut ApiKeys,
    secret: &str,
    grace: Duration,
    now: Timestamp,
) -> Result<Option<StepWrite>, getrandom::Error> {
    Ok(Some(match step {
        RotationStep::Start { request } => start(keys, request, secret)?,
        RotationStep::MarkRolledOut => mark_rolled_out(grace, now),
        RotationStep::Swap => swap(keys),
        RotationStep::Promote => promote(keys, secret),
        RotationStep::Finish => finish(keys, secret),
        RotationStep::Idle | RotationStep::AwaitRollout | RotationStep::Grace { .. } => {
            return Ok(None);
        }
    }))
}

fn normal(reason: &'static str, note: String) -> Notice {
    Notice {
        type_: EventType::Normal,
        reason,
        note,
    }
}

/// A new key as `next-api-key`, phase Introduced, and the request handled.
fn start(keys: &mut ApiKeys, request: &str, secret: &str) -> Result<StepWrite, getrandom::Error> {
    let next = generate_key()?;
    let data = Map::from_iter([(NEXT_API_KEY.to_owned(), data_value(&next))]);
    keys.next = Some(next);
    Ok(StepWrite {
        data,
        // A rolled-out-at left from an earlier rotation would skip the rollout.
        annotations: json!({PHASE_ANNOTATION: Phase::Introduced.as_str(),
                            HANDLED_ANNOTATION: request, ROLLED_OUT_AT_ANNOTATION: null}),
        notice: normal(
            "ApiKeyRotationStarted",
            format!(
                "generated a new API key ({NEXT_API_KEY} in Secret {secret}); pods restart and accept both keys"
            ),
        ),
    })
}

/// Every pod runs with both keys: the grace period starts, tokens switch to the new key.
fn mark_rolled_out(grace: Duration, now: Timestamp) -> StepWrite {
    StepWrite {
        data: Map::new(),
        annotations: json!({ROLLED_OUT_AT_ANNOTATION: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}),
        notice: normal(
            "ApiKeyRotationBothKeysActive",
            format!(
                "every pod accepts the old and the new API key; the old one is removed after {grace:?}; new tokens are signed with the new key"
            ),
        ),
    }
}

/// The grace period is over: the new key becomes Qdrant's `api_key` (the data is unchanged).
fn swap(keys: &mut ApiKeys) -> StepWrite {
    keys.phase = Phase::Swapped;
    StepWrite {
        data: Map::new(),
        annotations: json!({PHASE_ANNOTATION: Phase::Swapped.as_str()}),
        notice: normal(
            "ApiKeyRotationSwapped",
            "the grace period is over: pods restart with the new API key as their \
             main key and the old one as the alternative (peers authenticate with \
             the new one)"
                .to_owned(),
        ),
    }
}

/// The new key replaces the old one in `api-key`, the only key Qdrant gets.
fn promote(keys: &mut ApiKeys, secret: &str) -> StepWrite {
    let next = keys
        .next
        .clone()
        .expect("a rotation in progress has a next key");
    let data = Map::from_iter([(API_KEY.to_owned(), data_value(&next))]);
    keys.api_key = next;
    keys.phase = Phase::Promoted;
    StepWrite {
        data,
        annotations: json!({PHASE_ANNOTATION: Phase::Promoted.as_str()}),
        notice: normal(
            "ApiKeyRotated",
            format!(
                "the new API key replaced the old one in Secret {secret}; pods restart and \
                 stop accepting the old key"
            ),
        ),
    }
}

/// The rotation is over (or was abandoned by removing `next-api-key` by hand): remove
/// `next-api-key` and the phase.
fn finish(keys: &mut ApiKeys, secret: &str) -> StepWrite {
    let notice = match keys.next.take() {
        Some(_) => normal(
            "ApiKeyRotationFinished",
            format!(
                "every pod runs with the new API key only; removed {NEXT_API_KEY} from Secret {secret}"
            ),
        ),
        None => Notice {
            type_: EventType::Warning,
            reason: "ApiKeyRotationAbandoned",
            note: format!(
                "{NEXT_API_KEY} was removed from Secret {secret} by hand: the key rotation is \
                 abandoned and the pods roll with the current key alone"
            ),
        },
    };
    keys.phase = Phase::Introduced;
    StepWrite {
        data: Map::from_iter([(NEXT_API_KEY.to_owned(), Value::Null)]),
        annotations: json!({PHASE_ANNOTATION: null, ROLLED_OUT_AT_ANNOTATION: null}),
        notice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::keys::KeySlot;
    use crate::material::SecretValue;

    fn state<'a>() -> RotationState<'a> {
        RotationState {
            requested: None,
            handled: None,
            has_next: false,
            phase: None,
            rolled_out_at: None,
            rolled_out: true,
            grace: Duration::from_secs(3600),
            now: "2026-11-22T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn the_state_is_read_from_what_the_secret_records() {
        let mut secret = Secret::default();
        let now: Timestamp = "2026-11-22T00:00:00Z".parse().unwrap();
        let grace = Duration::from_secs(60);
        let s = RotationState::read(&secret, Some("n1"), false, true, grace, now);
        assert_eq!((s.handled, s.phase, s.rolled_out_at), (None, None, None));
        secret.metadata.annotations = Some(
            [
                (HANDLED_ANNOTATION, "n1"),
                (PHASE_ANNOTATION, "Swapped"),
                (ROLLED_OUT_AT_ANNOTATION, "2026-11-21T00:00:00Z"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let s = RotationState::read(&secret, Some("n1"), true, false, grace, now);
        assert_eq!(s.requested, Some("n1"));
        assert_eq!(s.handled, Some("n1"));
        assert_eq!(s.phase, Some(Phase::Swapped));
        assert_eq!(
            s.rolled_out_at,
            Some("2026-11-21T00:00:00Z".parse().unwrap())
        );
        assert!(s.has_next && !s.rolled_out);
        assert_eq!(step(&s), RotationStep::AwaitRollout);
    }

    #[test]
    fn each_step_writes_its_phase_and_keys() {
        let now: Timestamp = "2026-11-22T00:00:00Z".parse().unwrap();
        let grace = Duration::from_secs(60);
        let mut keys = ApiKeys::generate(false).unwrap();
        let old = keys.api_key.clone();
        let advance = |step: &RotationStep, keys: &mut ApiKeys| {
            advance(step, keys, "vectors-api-key", grace, now)
                .unwrap()
                .expect("a write")
        };
        for idle in [
            RotationStep::Idle,
            RotationStep::AwaitRollout,
            RotationStep::Grace { until: now },
        ] {
            let before = keys.clone();
            assert!(advance_none(&idle, &mut keys, grace, now));
            assert_eq!(keys, before, "{idle:?} changes nothing");
        }
        let start = advance(
            &RotationStep::Start {
                request: "n1".into(),
            },
            &mut keys,
        );
        let next = keys.next.clone().expect("a new key");
        assert_ne!(next, old);
        assert_eq!(start.data[NEXT_API_KEY], data_value(&next));
        assert_eq!(start.annotations[PHASE_ANNOTATION], "Introduced");
        assert_eq!(start.annotations[HANDLED_ANNOTATION], "n1");
        assert!(start.annotations[ROLLED_OUT_AT_ANNOTATION].is_null());
        assert!(!start.notice.note.contains(next.expose()));

        let marked = advance(&RotationStep::MarkRolledOut, &mut keys);
        assert!(marked.data.is_empty());
        assert_eq!(
            marked.annotations[ROLLED_OUT_AT_ANNOTATION],
            "2026-11-22T00:00:00Z"
        );

        let swapped = advance(&RotationStep::Swap, &mut keys);
        assert!(swapped.data.is_empty(), "the data does not change");
        assert_eq!(keys.phase, Phase::Swapped);
        assert_eq!(swapped.annotations[PHASE_ANNOTATION], "Swapped");

        let promoted = advance(&RotationStep::Promote, &mut keys);
        assert_eq!((&keys.api_key, keys.phase), (&next, Phase::Promoted));
        assert_eq!(promoted.data[API_KEY], data_value(&next));
        assert_eq!(promoted.annotations[PHASE_ANNOTATION], "Promoted");

        let finished = advance(&RotationStep::Finish, &mut keys);
        assert_eq!((&keys.next, keys.phase), (&None, Phase::Introduced));
        assert!(finished.data[NEXT_API_KEY].is_null());
        assert!(finished.annotations[PHASE_ANNOTATION].is_null());
        assert_eq!(finished.notice.type_, EventType::Normal);
        // Finishing without a next key: it was removed by hand.
        let abandoned = advance(&RotationStep::Finish, &mut keys);
        assert_eq!(abandoned.notice.type_, EventType::Warning);
        assert_eq!(abandoned.notice.reason, "ApiKeyRotationAbandoned");
    }

    fn advance_none(
        step: &RotationStep,
        keys: &mut ApiKeys,
        grace: Duration,
        now: Timestamp,
    ) -> bool {
        advance(step, keys, "vectors-api-key", grace, now)
            .unwrap()
            .is_none()
    }

    #[test]
    fn the_metric_phase_is_the_phase_after_the_step() {
        let until: Timestamp = "2026-11-22T01:00:00Z".parse().unwrap();
        for (step, recorded, expected) in [
            (RotationStep::Idle, None, None),
            (RotationStep::Finish, Some(Phase::Promoted), None),
            (
                RotationStep::Start {
                    request: "n1".into(),
                },
                None,
                Some("Introduced"),
            ),
            (
                RotationStep::AwaitRollout,
                Some(Phase::Introduced),
                Some("Introduced"),
            ),
            (RotationStep::AwaitRollout, None, Some("Introduced")),
            (
                RotationStep::AwaitRollout,
                Some(Phase::Swapped),
                Some("Swapped"),
            ),
            (
                RotationStep::AwaitRollout,
                Some(Phase::Promoted),
                Some("Promoted"),
            ),
            (
                RotationStep::MarkRolledOut,
                Some(Phase::Introduced),
                Some("GracePeriod"),
            ),
            (
                RotationStep::Grace { until },
                Some(Phase::Introduced),
                Some("GracePeriod"),
            ),
            (RotationStep::Swap, Some(Phase::Introduced), Some("Swapped")),
            (
                RotationStep::Promote,
                Some(Phase::Swapped),
                Some("Promoted"),
            ),
        ] {
            assert_eq!(
                metric_phase(&step, recorded),
                expected,
                "{step:?} from {recorded:?}"
            );
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
        assert_eq!(step(&s), RotationStep::Swap);
        // A new request during a rotation waits for it to finish.
        s.requested = Some("n2");
        assert_eq!(step(&s), RotationStep::Swap);

        // Swapped and Promoted each wait for their own rollout.
        for (phase, next) in [
            (Phase::Swapped, RotationStep::Promote),
            (Phase::Promoted, RotationStep::Finish),
        ] {
            s.phase = Some(phase);
            s.rolled_out = false;
            assert_eq!(step(&s), RotationStep::AwaitRollout, "{phase:?}");
            s.rolled_out = true;
            assert_eq!(step(&s), next, "{phase:?}");
        }
        s.has_next = false;
        s.requested = Some("n1");
        assert_eq!(
            step(&s),
            RotationStep::Finish,
            "leftover annotations are cleared"
        );
        s.phase = None;
        s.rolled_out_at = None;
        assert_eq!(step(&s), RotationStep::Idle, "finished");
    }

    #[test]
    fn tokens_switch_to_the_new_key_once_every_pod_accepts_it() {
        assert!(!sign_with_next(false, None, false));
        assert!(!sign_with_next(true, Some(Phase::Introduced), false));
        assert!(sign_with_next(true, Some(Phase::Introduced), true));
        assert!(sign_with_next(true, Some(Phase::Swapped), false));
        assert!(sign_with_next(true, Some(Phase::Promoted), false));
        assert!(!sign_with_next(false, Some(Phase::Promoted), true));
    }

    /// Whether pods can go from `from` to `to` (a roll, or a change of the Secret's data alone)
    /// without a pod failing to start or two pods refusing each other's key: every pod of either
    /// template, started before or after the Secret changed, must find the Secret keys its env
    /// refers to, and accept the `api_key` every other pod sends (peers authenticate with it
    /// when `enforce_internal_auth` is on).
    fn step_is_safe(from: &ApiKeys, to: &ApiKeys) -> Result<(), String> {
        let slots = |k: &ApiKeys| {
            let (api, alt) = k.qdrant_keys();
            (api.0, alt.map(|a: KeySlot<'_>| a.0))
        };
        let mut pods = Vec::new();
        // (template, Secret data it started with)
        for (template, data) in [(from, from), (from, to), (to, to)] {
            let data = data.to_data();
            let (api, alt) = slots(template);
            let read = |slot: &str| {
                data.get(slot)
                    .map(|v| v.0.clone())
                    .ok_or(format!("a pod refers to {slot:?}, which the Secret lacks"))
            };
            pods.push((read(api)?, alt.map(read).transpose()?));
        }
        for (sender, _) in &pods {
            for (api, alt) in &pods {
                if sender != api && Some(sender) != alt.as_ref() {
                    return Err("a peer's api_key is refused by another pod".to_owned());
                }
            }
        }
        Ok(())
    }

    #[test]
    fn no_roll_of_a_rotation_splits_the_cluster() {
        let keys = |api: &str, next: Option<&str>, phase| ApiKeys {
            api_key: SecretValue::new(api),
            read_only: None,
            next: next.map(SecretValue::new),
            phase,
            salt: SecretValue::new("salt"),
        };
        let phases = [
            keys("old", None, Phase::Introduced),
            keys("old", Some("new"), Phase::Introduced),
            keys("old", Some("new"), Phase::Swapped),
            keys("new", Some("new"), Phase::Promoted),
            keys("new", None, Phase::Introduced),
        ];
        for pair in phases.windows(2) {
            assert_eq!(step_is_safe(&pair[0], &pair[1]), Ok(()), "{pair:?}");
        }
        // The last step changes the Secret only: the pods need not roll.
        assert_eq!(phases[3].fingerprint(), phases[4].fingerprint());
        // What the check catches: promoting straight after the grace period (old pods would
        // send the old key to promoted ones), or swapping the data under running templates.
        assert!(step_is_safe(&phases[1], &phases[4]).is_err());
        assert!(step_is_safe(&phases[1], &phases[3]).is_err());
        assert!(step_is_safe(&phases[2], &phases[4]).is_err());
    }
}
