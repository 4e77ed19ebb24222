//! Secret material read on demand, and what reconciles remember of it.
//!
//! No cache of this process holds a Secret's data: the cache of managed Secrets shows their
//! metadata (name, uid, resourceVersion, labels, owners, annotations). A step that needs a
//! Secret's material (keys, CA, certificates) reads it with a GET, derives what it decides from
//! it, and drops the bytes. What it derived that is not secret (fingerprints, HMACs keyed with
//! the instance's salt, certificate status, when to decide again) is remembered per instance in
//! a [`Memo`], under a [`Key`]: a hash of the (uid, resourceVersion) of every Secret it was
//! derived from and of every other input of the decision. The next reconcile computes the key
//! from the cache's metadata: equal, the facts are reused without a request; a Secret edited
//! (a new resourceVersion), recreated (a new uid) or missing changes the key, and that
//! reconcile reads the Secrets again. Nothing is lost by a skipped read: a hit reuses a decision
//! taken on exactly the same Secrets, and a step that wrote anything does not remember what it
//! decided (the next reconcile reads what was written).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::stores::{Stores, cached};
use crate::crd::QdrantAccessTokenStatus;
use crate::error::{Error, Result};
use crate::validate::Instance;

/// The (uid, resourceVersion) of a Secret; None when it does not exist (or is not cached).
pub type Version = Option<(String, String)>;

/// The version of a Secret's metadata.
pub fn version_of(meta: &ObjectMeta) -> Version {
    Some((meta.uid.clone()?, meta.resource_version.clone()?))
}

/// The version of a Secret as read (None: it does not exist).
pub fn version_read(secret: Option<&Secret>) -> Version {
    secret.and_then(|s| version_of(&s.metadata))
}

/// The version of a managed Secret as the cache shows it.
pub fn version_cached(stores: &Stores, ns: &str, name: &str) -> Version {
    cached(&stores.secrets, ns, name)
        .and_then(|s| Some((s.uid()?.to_owned(), s.resource_version()?.to_owned())))
}

/// Reads the Secret `ns/name` from the API server (None: it does not exist).
pub async fn get(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Error::Read {
            kind: "Secret",
            name: name.to_owned(),
            source,
        })
}

/// What a token reconcile that wrote nothing decided (the status fields of the token and its
/// client certificate, ClientCertificateReady) and when it must decide again.
#[derive(Clone, Debug)]
pub struct TokenFacts {
    pub status: QdrantAccessTokenStatus,
    pub client: Option<(bool, &'static str, String)>,
    pub deadline: Timestamp,
}

/// What a remembered decision was derived from (see the module docs).
pub type Key = [u8; 32];

/// Builds a [`Key`]: every input, in a fixed order, each one framed.
pub struct Inputs(Sha256);

impl Inputs {
    /// The inputs of the decision `what`.
    pub fn new(what: &str) -> Self {
        let mut h = Sha256::new();
        h.update(what.as_bytes());
        Inputs(h)
    }

    /// A text input (framed by its length).
    pub fn text(mut self, text: &str) -> Self {
        self.0.update((text.len() as u64).to_le_bytes());
        self.0.update(text.as_bytes());
        self
    }

    /// An optional text input.
    pub fn opt(self, text: Option<&str>) -> Self {
        match text {
            Some(t) => self.text("some").text(t),
            None => self.text("none"),
        }
    }

    /// A Secret's version.
    pub fn version(self, version: &Version) -> Self {
        match version {
            Some((uid, rv)) => self.text("secret").text(uid).text(rv),
            None => self.text("absent"),
        }
    }

    /// Anything whose `Debug` form says all of it (a validated instance or token: a change of
    /// any field changes the key).
    pub fn debug(self, value: &impl std::fmt::Debug) -> Self {
        self.text(&format!("{value:?}"))
    }

    /// The validated instance, but for what the reconcile sets from its status and its
    /// generation (a spec change changes the spec fields): the decisions remembered here do not
    /// depend on them, and the formed cluster being recorded must not cost a read.
    pub fn instance(self, inst: &Instance) -> Self {
        let mut view = inst.clone();
        view.cluster_formed = false;
        view.generation = None;
        self.debug(&view)
    }

    pub fn finish(self) -> Key {
        self.0.finalize().into()
    }
}

/// Derived, non-secret facts remembered per instance (or token), each under the [`Key`] of what
/// it was derived from. One entry per instance: a newer decision replaces the older one.
pub struct Memo<V> {
    entries: Mutex<HashMap<String, (Key, V)>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Memo<V> {
    /// The facts remembered for `who` when they were derived from exactly `key`.
    pub fn get(&self, who: &str, key: &Key) -> Option<V> {
        let entries = self.entries.lock().expect("memo lock");
        entries
            .get(who)
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Remembers `facts` for `who`, derived from `key`.
    pub fn remember(&self, who: String, key: Key, facts: V) {
        self.entries
            .lock()
            .expect("memo lock")
            .insert(who, (key, facts));
    }

    /// Forgets what was remembered for `who`.
    pub fn forget(&self, who: &str) {
        self.entries.lock().expect("memo lock").remove(who);
    }

    /// How many instances have facts remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("memo lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(uid: &str, rv: &str) -> Version {
        Some((uid.to_owned(), rv.to_owned()))
    }

    #[test]
    fn facts_are_reused_only_for_the_same_versions() {
        let memo = Memo::default();
        let key = |version: &Version| Inputs::new("t").text("x").version(version).finish();
        memo.remember("ns/a".to_owned(), key(&v("u", "1")), 7);
        assert_eq!(memo.get("ns/a", &key(&v("u", "1"))), Some(7));
        // Edited (new resourceVersion), recreated (new uid), deleted: read again.
        assert_eq!(memo.get("ns/a", &key(&v("u", "2"))), None);
        assert_eq!(memo.get("ns/a", &key(&v("w", "1"))), None);
        assert_eq!(memo.get("ns/a", &key(&None)), None);
        assert_eq!(memo.get("ns/b", &key(&v("u", "1"))), None);
        memo.forget("ns/a");
        assert!(memo.is_empty());
    }

    #[test]
    fn inputs_are_framed() {
        let a = Inputs::new("t").text("ab").text("c").finish();
        let b = Inputs::new("t").text("a").text("bc").finish();
        assert_ne!(a, b);
        assert_ne!(
            Inputs::new("t").opt(None).finish(),
            Inputs::new("t").opt(Some("none")).finish()
        );
    }
}
