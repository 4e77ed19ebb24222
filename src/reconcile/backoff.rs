//! The retry schedule of a failing SecureQdrant: exponential backoff per object, grown by failed
//! retries only (the controller's error policy asks it; a successful reconcile resets it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::SecureQdrant;

/// Backoff after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(300))
}

/// The retry schedule of each object that is failing.
///
/// The backoff grows with failed *retries*, not with failed reconciles: while a retry is
/// scheduled, watch events (a child's update, the object's own status write) still start
/// reconciles, and during an API outage each of them fails too. Counting those would take an
/// object from 5 s to the 5-minute cap within a second of an outage and leave it waiting long
/// after the API is back. A failure before the scheduled retry keeps the schedule as it is.
#[derive(Default)]
pub struct Backoffs(Mutex<HashMap<String, (u32, Timestamp)>>);

impl Backoffs {
    /// Records a failure of `key` at `now`; returns how long to wait before the next attempt.
    pub fn failed(&self, key: &str, now: Timestamp) -> Duration {
        let mut entries = self.0.lock().expect("lock");
        // Objects that stopped failing without a success (deleted meanwhile) are dropped once
        // their retry is long past.
        let stale = k8s_openapi::jiff::SignedDuration::from_secs(3600);
        entries.retain(|k, (_, at)| k == key || at.checked_add(stale).is_ok_and(|t| t > now));
        let (failures, retry_at) = entries.entry(key.to_owned()).or_insert((0, now));
        let left = retry_at.duration_since(now);
        // Still waiting: keep the retry's time. (Further away than the backoff itself means the
        // clock stepped back: counted as the retry instead, so the backoff keeps growing.)
        if now < *retry_at && left.unsigned_abs() <= backoff(*failures) {
            return left.unsigned_abs();
        }
        *failures = failures.saturating_add(1);
        let delay = backoff(*failures);
        let delay_ = k8s_openapi::jiff::SignedDuration::try_from(delay).unwrap_or_default();
        *retry_at = now.checked_add(delay_).unwrap_or(Timestamp::MAX);
        delay
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.0.lock().expect("lock").remove(key);
    }
}

/// `namespace/name` of `sq`.
pub fn key(sq: &SecureQdrant) -> String {
    format!("{}/{}", sq.namespace().unwrap_or_default(), sq.name_any())
}

/// The object's backoff entry: by uid, so an object created anew under the same name starts
/// afresh.
pub fn backoff_key(sq: &SecureQdrant) -> String {
    sq.uid().unwrap_or_else(|| key(sq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(100), Duration::from_secs(300));
    }

    #[test]
    fn only_failed_retries_grow_the_backoff() {
        let backoffs = Backoffs::default();
        let at =
            |ms: i64| Timestamp::UNIX_EPOCH + k8s_openapi::jiff::SignedDuration::from_millis(ms);
        assert_eq!(backoffs.failed("a", at(0)), Duration::from_secs(5));
        // A burst of event-driven failures during the wait keeps the retry where it was.
        for ms in [10, 20, 300, 4_000] {
            let left = Duration::from_millis(5_000 - ms as u64);
            assert_eq!(backoffs.failed("a", at(ms)), left);
        }
        // The retry itself fails: the backoff doubles, and again after that.
        assert_eq!(backoffs.failed("a", at(5_000)), Duration::from_secs(10));
        assert_eq!(backoffs.failed("a", at(15_001)), Duration::from_secs(20));
        // Other objects have their own schedule; success starts over.
        assert_eq!(backoffs.failed("b", at(15_001)), Duration::from_secs(5));
        backoffs.succeeded("a");
        assert_eq!(backoffs.failed("a", at(15_002)), Duration::from_secs(5));

        // A clock that steps back an hour neither stretches the wait nor stops the backoff from
        // growing.
        assert_eq!(
            backoffs.failed("a", at(-3_600_000)),
            Duration::from_secs(10)
        );
        assert_eq!(
            backoffs.failed("a", at(-3_590_000)),
            Duration::from_secs(20)
        );
        // Entries whose retry is an hour past are dropped when another object fails.
        assert_eq!(backoffs.0.lock().unwrap().len(), 2);
        backoffs.failed("c", at(15_002 + 3_700_000));
        assert_eq!(backoffs.0.lock().unwrap().len(), 1);
    }
}
