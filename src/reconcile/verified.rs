//! Children flagged by the drift signal ([`super::drift`]) that a full read found clean, by the
//! resourceVersion read: the same version is not read again (a label someone added, a
//! `kubectl rollout restart`, a foreign write in the same second as the operator's apply stay
//! flagged until the next change of the object, and cost one read, not one per reconcile).
//!
//! An entry is only good for the resourceVersion it names, so a stale one is harmless; the watch
//! drops an entry when it shows the object at another version or deleted, and the memo holds at
//! most [`CAPACITY`] entries (the oldest goes first). Lost at a restart: a flagged-but-clean child
//! then costs one read again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most this many verified versions are remembered.
pub const CAPACITY: usize = 4096;

/// (kind, namespace, name) of an object.
type Key = (Cow<'static, str>, String, String);

#[derive(Default)]
struct Memo {
    /// key → (the last two resourceVersions found clean, insertion number)
    entries: HashMap<Key, (Vec<String>, u64)>,
    next: u64,
}

/// The memo; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Verified(Arc<Mutex<Memo>>);

impl Verified {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that the object was read at `rv` and found as the operator would apply it (or
    /// was handled at `rv`: written). The last two versions recorded are kept: the one a repair
    /// was made for, and the one it wrote.
    pub fn record(&self, kind: &'static str, namespace: &str, name: &str, rv: &str) {
        let mut memo = self.lock();
        let key = (Cow::Borrowed(kind), namespace.to_owned(), name.to_owned());
        if memo.entries.len() >= CAPACITY
            && !memo.entries.contains_key(&key)
            && let Some(oldest) = memo
                .entries
                .iter()
                .min_by_key(|(_, (_, n))| *n)
                .map(|(k, _)| k.clone())
        {
            memo.entries.remove(&oldest);
        }
        let n = memo.next;
        memo.next += 1;
        let entry = memo.entries.entry(key).or_insert_with(|| (Vec::new(), n));
        entry.1 = n;
        if !entry.0.iter().any(|v| v == rv) {
            if entry.0.len() == 2 {
                entry.0.remove(0);
            }
            entry.0.push(rv.to_owned());
        }
    }

    /// Whether the object was found clean at exactly `rv`.
    pub fn at(&self, kind: &str, namespace: &str, name: &str, rv: &str) -> bool {
        let key = (
            Cow::Owned(kind.to_owned()),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.lock()
            .entries
            .get(&key)
            .is_some_and(|(v, _)| v.iter().any(|v| v == rv))
    }

    /// The watch showed the object at `rv` (None: deleted): an entry for other versions goes.
    pub fn observe(&self, kind: &str, namespace: &str, name: &str, rv: Option<&str>) {
        let mut memo = self.lock();
        if memo.entries.is_empty() {
            return;
        }
        let key = (
            Cow::Owned(kind.to_owned()),
            namespace.to_owned(),
            name.to_owned(),
        );
        if memo
            .entries
            .get(&key)
            .is_some_and(|(v, _)| !v.iter().any(|v| Some(v.as_str()) == rv))
        {
            memo.entries.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_found_clean_is_remembered_for_that_version_only() {
        let v = Verified::default();
        v.record("ConfigMap", "ns", "c", "7");
        assert!(v.at("ConfigMap", "ns", "c", "7"));
        assert!(!v.at("ConfigMap", "ns", "c", "8"));
        assert!(!v.at("Service", "ns", "c", "7"));
        assert!(!v.at("ConfigMap", "ns", "d", "7"));
    }

    #[test]
    fn a_repair_keeps_the_version_it_was_made_for_and_the_one_it_wrote() {
        let v = Verified::default();
        v.record("ConfigMap", "ns", "c", "7");
        v.record("ConfigMap", "ns", "c", "8");
        assert!(v.at("ConfigMap", "ns", "c", "7") && v.at("ConfigMap", "ns", "c", "8"));
        v.observe("ConfigMap", "ns", "c", Some("8"));
        assert!(v.at("ConfigMap", "ns", "c", "8"));
        v.record("ConfigMap", "ns", "c", "9");
        assert!(!v.at("ConfigMap", "ns", "c", "7"), "two at most");
    }

    #[test]
    fn the_watch_drops_an_entry_when_the_object_changes_or_goes() {
        let v = Verified::default();
        v.record("ConfigMap", "ns", "c", "7");
        v.observe("ConfigMap", "ns", "c", Some("7"));
        assert!(v.at("ConfigMap", "ns", "c", "7"), "the same version stays");
        v.observe("ConfigMap", "ns", "c", Some("9"));
        assert!(v.is_empty());
        v.record("ConfigMap", "ns", "c", "9");
        v.observe("ConfigMap", "ns", "c", None);
        assert!(v.is_empty());
    }

    #[test]
    fn the_memo_is_bounded_and_drops_the_oldest_first() {
        let v = Verified::default();
        for i in 0..CAPACITY {
            v.record("ConfigMap", "ns", &format!("c{i}"), "1");
        }
        v.record("ConfigMap", "ns", "c0", "2");
        assert_eq!(
            v.len(),
            CAPACITY,
            "a known key is replaced, nothing dropped"
        );
        v.record("ConfigMap", "ns", "new", "1");
        assert_eq!(v.len(), CAPACITY);
        assert!(!v.at("ConfigMap", "ns", "c1", "1"), "the oldest went");
        assert!(v.at("ConfigMap", "ns", "c0", "2"));
        assert!(v.at("ConfigMap", "ns", "new", "1"));
    }
}
