//! Writes the caches have not shown yet ("expectations", as Kubernetes' own controllers keep
//! them).
//!
//! A reconcile decides from the caches whether a child needs a write. Right after a write, the
//! watch that feeds the cache may still be behind: without a record of the write, the next
//! reconcile (triggered by the write itself, or by a sibling's event) sees the child missing or
//! old and writes it again. At 1,000 instances created at once that tripled the writes of a
//! first reconcile (BENCHMARKS.md). So every apply records (kind, namespace, name) → the hash it
//! sent (before sending it, so the watch event cannot arrive first; forgotten if the write
//! fails); while that record is pending, a cache that does not show the object yet is not taken
//! as "missing". The watch clears the record when it shows the object with that hash (or its
//! deletion), and a record expires after [`EXPECTATION_TTL`] in any case; a reconcile that
//! skipped a write for a pending record looks again by then, so a lost event delays a repair by
//! at most that long.
//!
//! Disabled (every check says "not pending") unless the controller turns it on and feeds the
//! watch events in: in-process tests with plain reflectors keep the cache-only behaviour.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::recent::{Clock, Recent};
use super::stamp::APPLIED_HASH;
use super::verified::Verified;

/// How long a write is trusted to be on its way to the cache.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// (kind, namespace, name) of an object.
type Key = (Cow<'static, str>, String, String);

fn key(kind: impl Into<Cow<'static, str>>, namespace: &str, name: &str) -> Key {
    (kind.into(), namespace.to_owned(), name.to_owned())
}

/// The pending writes: object → the hash written; and the children flagged by the drift signal
/// that were read and found clean ([`Verified`], fed by the same watch events). Cheap to clone
/// (shared).
#[derive(Clone, Default)]
pub struct Expectations {
    written: Option<Arc<Recent<Key, String>>>,
    verified: Verified,
}

impl Expectations {
    /// Expectations that are recorded and checked (the controller's), reading the time from
    /// `clock` (the reconciles' clock).
    pub fn enabled(clock: Clock) -> Self {
        Expectations {
            written: Some(Arc::new(Recent::new(EXPECTATION_TTL, clock))),
            verified: Verified::default(),
        }
    }

    /// The flagged children found clean, by version (always on).
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// Records that `hash` was just applied to the `kind` object `namespace/name`.
    pub fn expect(&self, kind: &'static str, namespace: &str, name: &str, hash: &str) {
        if let Some(written) = &self.written {
            written.remember(key(kind, namespace, name), hash.to_owned());
        }
    }

    /// Drops the record of a write that failed.
    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        if let Some(written) = &self.written {
            written.forget(&key(kind, namespace, name));
        }
    }

    /// Whether a write of `hash` to that object is on its way to the cache.
    pub fn pending(&self, kind: &'static str, namespace: &str, name: &str, hash: &str) -> bool {
        let Some(written) = &self.written else {
            return false;
        };
        written
            .get(&key(kind, namespace, name))
            .is_some_and(|h| h == hash)
    }

    /// Feeds a watch event of the cache, after the cache applied it: an object that shows the
    /// expected hash, or is deleted, fulfils its expectation. Objects of a (re-)list are not
    /// looked at: the reflector holds them back until the list is complete, so they are not in
    /// the cache yet (a pending record then simply expires).
    pub fn observe<K>(&self, event: &watcher::Event<K>)
    where
        K: Resource<DynamicType = ()>,
    {
        let (obj, deleted) = match event {
            watcher::Event::Apply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {
                return;
            }
        };
        let key = key(
            K::kind(&()),
            &obj.namespace().unwrap_or_default(),
            &obj.name_any(),
        );
        let rv = obj.resource_version();
        let rv = rv.as_deref().filter(|_| !deleted);
        self.verified.observe(&key.0, &key.1, &key.2, rv);
        let Some(written) = &self.written else { return };
        written.forget_if(&key, |hash| {
            deleted || obj.annotations().get(APPLIED_HASH) == Some(hash)
        });
    }

    /// How many writes are pending (for tests and diagnosis).
    pub fn len(&self) -> usize {
        self.written.as_ref().map_or(0, |written| written.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::reconcile::recent::system_clock;

    fn cm(hash: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                annotations: Some(BTreeMap::from([(APPLIED_HASH.to_owned(), hash.to_owned())])),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn disabled_expectations_never_pend() {
        let e = Expectations::default();
        e.expect("ConfigMap", "ns", "c", "h1");
        assert!(!e.pending("ConfigMap", "ns", "c", "h1"));
        assert!(e.is_empty());
    }

    #[test]
    fn a_write_pends_until_the_watch_shows_it_with_its_hash() {
        let e = Expectations::enabled(system_clock());
        e.expect("ConfigMap", "ns", "c", "h1");
        assert!(e.pending("ConfigMap", "ns", "c", "h1"));
        // Another hash, object, or kind: not this write.
        assert!(!e.pending("ConfigMap", "ns", "c", "h2"));
        assert!(!e.pending("ConfigMap", "ns", "d", "h1"));
        assert!(!e.pending("Secret", "ns", "c", "h1"));
        // An older version of the object arrives: still pending.
        e.observe(&watcher::Event::Apply(cm("h0")));
        assert!(e.pending("ConfigMap", "ns", "c", "h1"));
        // A re-list is not in the cache before it completes: still pending.
        e.observe(&watcher::Event::InitApply(cm("h1")));
        assert!(e.pending("ConfigMap", "ns", "c", "h1"));
        // The written version arrives: fulfilled.
        e.observe(&watcher::Event::Apply(cm("h1")));
        assert!(!e.pending("ConfigMap", "ns", "c", "h1"));
        assert!(e.is_empty());
    }

    #[test]
    fn a_failed_write_is_forgotten() {
        let e = Expectations::enabled(system_clock());
        e.expect("ConfigMap", "ns", "c", "h1");
        e.forget("ConfigMap", "ns", "c");
        assert!(!e.pending("ConfigMap", "ns", "c", "h1"));
    }

    #[test]
    fn a_deletion_fulfils_the_expectation_so_the_child_is_recreated() {
        let e = Expectations::enabled(system_clock());
        e.expect("ConfigMap", "ns", "c", "h1");
        e.observe(&watcher::Event::Delete(cm("h0")));
        assert!(!e.pending("ConfigMap", "ns", "c", "h1"));
    }

    #[test]
    fn a_write_stops_pending_when_the_reconciles_clock_passes_the_ttl() {
        use k8s_openapi::jiff::{SignedDuration, Timestamp};
        use std::sync::Mutex;
        let time = Arc::new(Mutex::new(Timestamp::UNIX_EPOCH));
        let reading = time.clone();
        let e = Expectations::enabled(Arc::new(move || *reading.lock().unwrap()));
        e.expect("ConfigMap", "ns", "c", "h1");
        let ttl = SignedDuration::try_from(EXPECTATION_TTL).unwrap();
        let advance = |by: SignedDuration| {
            let mut t = time.lock().unwrap();
            *t = t.checked_add(by).unwrap();
        };
        advance(ttl - SignedDuration::from_secs(1));
        assert!(e.pending("ConfigMap", "ns", "c", "h1"));
        advance(SignedDuration::from_secs(1));
        assert!(!e.pending("ConfigMap", "ns", "c", "h1"));
    }
}
