//! What this process wrote recently, and when: the one mechanism that stands in for a cache that
//! has not shown a write yet.
//!
//! The operator decides from its caches, and a cache lags behind the operator's own writes (the
//! watch event is on its way). A reconcile that starts from such a stale copy would write again,
//! or take a step back. Each user keeps a [`Recent`] of what it wrote (a hash, a status, the data
//! of a Secret, a replaced resourceVersion) and prefers it over a cached copy that does not show
//! it yet, for as long as a cache may reasonably lag (the TTL each user chooses). Time is read
//! from the reconciles' [`Clock`], so tests that move the clock move these memories with it.
//!
//! In production that clock is the wall clock (the one certificates and conditions are dated by),
//! where these memories used a monotonic `Instant` before: if the node's clock is stepped forward
//! by more than a TTL, a record expires early and a reconcile may start from a lagging cache once
//! more (the next watch event corrects it); stepped back, records are kept longer.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The time source of reconciles: the system clock, or a fixed/advancing one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Records `key → value` with the time they were written; a record is forgotten `ttl` after it
/// was written (as `clock` tells). A clock that steps back keeps records longer, never shorter.
///
/// Expired records are swept out by a write at most once per quarter TTL (a read drops the one
/// it finds expired): a sweep walks the whole map, and the first reconciles of many instances
/// write ten thousand records within seconds, so sweeping on every write was quadratic. The map
/// therefore holds at most what was written in the last 1¼ TTL.
pub struct Recent<K, V> {
    ttl: SignedDuration,
    sweep_every: SignedDuration,
    clock: Clock,
    entries: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    map: HashMap<K, (V, Timestamp)>,
    /// When the last sweep ran (`None` before the first write).
    swept: Option<Timestamp>,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
        Recent {
            ttl,
            sweep_every: ttl / 4,
            clock,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                swept: None,
            }),
        }
    }

    fn fresh(&self, at: Timestamp, now: Timestamp) -> bool {
        now.duration_since(at) < self.ttl
    }

    /// Remembers that `value` was just written under `key` (replacing an older record), and
    /// drops the records that expired when the last sweep is a quarter TTL old.
    pub fn remember(&self, key: K, value: V) {
        let now = (self.clock)();
        let mut entries = self.entries.lock().expect("recent writes lock");
        let due = entries
            .swept
            .is_none_or(|swept| now.duration_since(swept).abs() >= self.sweep_every);
        if due {
            entries.map.retain(|_, (_, at)| self.fresh(*at, now));
            entries.swept = Some(now);
        }
        entries.map.insert(key, (value, now));
    }

    /// What was written under `key`, unless that record expired (then it is dropped).
    pub fn get(&self, key: &K) -> Option<V> {
        let now = (self.clock)();
        let entries = &mut self.entries.lock().expect("recent writes lock").map;
        match entries.get(key) {
            Some((value, at)) if self.fresh(*at, now) => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Drops the record of `key`.
    pub fn forget(&self, key: &K) {
        self.entries
            .lock()
            .expect("recent writes lock")
            .map
            .remove(key);
    }

    /// Drops the record of `key` when `done` says the write it records is no longer pending.
    pub fn forget_if(&self, key: &K, done: impl FnOnce(&V) -> bool) {
        let entries = &mut self.entries.lock().expect("recent writes lock").map;
        if entries.get(key).is_some_and(|(value, _)| done(value)) {
            entries.remove(key);
        }
    }

    /// How many records are kept, expired ones not dropped yet included (tests, diagnosis).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("recent writes lock").map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that tests move by hand, and the Clock that reads it.
    fn clock() -> (Arc<Mutex<Timestamp>>, Clock) {
        let time = Arc::new(Mutex::new(Timestamp::UNIX_EPOCH));
        let reading = time.clone();
        (time, Arc::new(move || *reading.lock().unwrap()))
    }

    fn advance(time: &Mutex<Timestamp>, secs: i64) {
        let mut t = time.lock().unwrap();
        *t = t.checked_add(SignedDuration::from_secs(secs)).unwrap();
    }

    #[test]
    fn a_record_expires_when_the_injected_clock_passes_its_ttl() {
        let (time, clock) = clock();
        let recent = Recent::new(Duration::from_secs(30), clock);
        recent.remember("a", 1);
        advance(&time, 29);
        assert_eq!(recent.get(&"a"), Some(1), "within the TTL");
        advance(&time, 1);
        assert_eq!(recent.get(&"a"), None, "30 s after the write");
        assert!(recent.is_empty(), "an expired record is dropped when read");
    }

    #[test]
    fn a_new_write_restarts_the_ttl_and_expired_records_are_dropped() {
        let (time, clock) = clock();
        let recent = Recent::new(Duration::from_secs(30), clock);
        recent.remember("a", 1);
        recent.remember("b", 1);
        advance(&time, 20);
        recent.remember("a", 2);
        advance(&time, 20);
        assert_eq!(recent.get(&"a"), Some(2));
        assert_eq!(recent.get(&"b"), None);
        recent.remember("c", 3);
        advance(&time, 15);
        recent.remember("d", 4);
        assert_eq!(recent.len(), 2, "a expired when d was written");
    }

    #[test]
    fn writes_sweep_at_most_once_per_quarter_ttl() {
        let (time, clock) = clock();
        let recent = Recent::new(Duration::from_secs(40), clock);
        recent.remember("a", 1); // the first write sweeps (an empty map) at t=0
        advance(&time, 39);
        recent.remember("b", 2); // a sweep is due (39 s ≥ 10 s): "a" is still fresh
        advance(&time, 2);
        recent.remember("c", 3); // 2 s after the last sweep: none, so expired "a" is still held
        assert_eq!(
            recent.len(),
            3,
            "no sweep within a quarter TTL of the last one"
        );
        assert_eq!(
            recent.get(&"a"),
            None,
            "but an expired record is never returned"
        );
        recent.remember("a", 4);
        advance(&time, 40);
        recent.remember("d", 5); // a sweep is due: a, b and c expired
        assert_eq!(recent.len(), 1);
        for i in 0..1000 {
            recent.remember("x", i);
        }
        assert_eq!(recent.get(&"x"), Some(999));
    }

    #[test]
    fn a_clock_that_steps_back_keeps_records() {
        let (time, clock) = clock();
        let recent = Recent::new(Duration::from_secs(30), clock);
        recent.remember("a", 1);
        advance(&time, -3600);
        assert_eq!(recent.get(&"a"), Some(1));
    }

    #[test]
    fn records_are_forgotten_on_request() {
        let (_, clock) = clock();
        let recent = Recent::new(Duration::from_secs(30), clock);
        recent.remember("a", 1);
        recent.remember("b", 2);
        recent.forget(&"a");
        recent.forget_if(&"b", |v| *v == 3);
        assert_eq!((recent.get(&"a"), recent.get(&"b")), (None, Some(2)));
        recent.forget_if(&"b", |v| *v == 2);
        assert!(recent.is_empty());
    }
}
