//! `ChildMeta<K>`: a cached child as the caches keep it, compact. A metadata-only watch still
//! delivers a full `ObjectMeta` (about 1.4 KB per object once the label and annotation maps and
//! the owner references are counted); the caches keep only what the reconciles read of it: name,
//! namespace, uid, resourceVersion, the owner references, the labels the operator reads
//! (`app.kubernetes.io/instance`, `app.kubernetes.io/component`, `secureqdrant.dev/*`) and the
//! `secureqdrant.dev/*` annotations (the applied hash, the drift marks, phases, the adoption
//! consent), all in one text buffer with one index (two allocations per object instead of about
//! thirty). Anything else a user sets is not kept: nothing reads it, and
//! a foreign edit of it raises the drift mark anyway ([`super::drift`]).
//!
//! kube's `Store` needs only [`Lookup`] and `Clone`, so this type is cached as is; readers that
//! want the metadata in kube's form rebuild it ([`ChildMeta::object_meta`]) for the moment they
//! read it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::{Lookup, ObjectRef};
use kube::runtime::watcher;

use super::drift::{FOREIGN_WRITE, OWNED_FIELDS};
use super::stamp::APPLIED_HASH;
use crate::children::meta::{LABEL_COMPONENT, LABEL_INSTANCE};

/// The prefix of the operator's own labels and annotations.
const OURS: &str = "secureqdrant.dev/";

/// Texts most cached children carry, kept as a two-byte code ([`Texts::push`]) rather than
/// copied into every object.
const KNOWN: &[&str] = &[
    LABEL_INSTANCE,
    LABEL_COMPONENT,
    APPLIED_HASH,
    FOREIGN_WRITE,
    OWNED_FIELDS,
    // `references::ALLOWED_INSTANCE_LABEL`, `ownership::ADOPT_ANNOTATION` (those modules use
    // the caches, so this one does not use them).
    "secureqdrant.dev/allowed-instance",
    "secureqdrant.dev/adopt",
    "secureqdrant.dev/v1alpha1",
    "SecureQdrant",
    "QdrantAccessToken",
];

/// Marks a coded text (no label or annotation key, apiVersion or kind the API server accepts
/// starts with it; an odd one that would is escaped).
const CODE: char = '\0';

/// Every text of an object in one buffer, and where each one ends.
#[derive(Default)]
struct Texts {
    text: String,
    ends: Vec<u32>,
}

impl Texts {
    fn push(&mut self, s: &str) {
        match KNOWN.iter().position(|k| *k == s) {
            Some(i) => {
                self.text.push(CODE);
                self.text.push(char::from(b'a' + i as u8));
            }
            None => {
                if s.starts_with(CODE) {
                    self.text.push(CODE);
                    self.text.push(CODE);
                }
                self.text.push_str(s);
            }
        }
        self.ends
            .push(u32::try_from(self.text.len()).expect("metadata under 4 GiB"));
    }
}

/// An owner reference as [`ChildMeta`] keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

impl From<Owner<'_>> for OwnerReference {
    fn from(o: Owner<'_>) -> Self {
        OwnerReference {
            api_version: o.api_version.to_owned(),
            kind: o.kind.to_owned(),
            name: o.name.to_owned(),
            uid: o.uid.to_owned(),
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        }
    }
}

fn flag(b: Option<bool>) -> u32 {
    match b {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

fn unflag(f: u32) -> Option<bool> {
    match f & 3 {
        0 => None,
        1 => Some(false),
        _ => Some(true),
    }
}

/// Bits of [`ChildMeta::present`].
const HAS_NAMESPACE: u8 = 1;
const HAS_UID: u8 = 2;
const HAS_RESOURCE_VERSION: u8 = 4;

/// A cached child of kind `K`: its metadata, compact (see the module documentation). Every text
/// is in one buffer: name, namespace, uid, resourceVersion, then each owner's apiVersion, kind,
/// name and uid, each kept label's key and value, each kept annotation's key and value; `index`
/// holds where each ends, then each owner's two flags.
pub struct ChildMeta<K> {
    text: Box<str>,
    index: Box<[u32]>,
    owners: u16,
    labels: u16,
    annotations: u16,
    present: u8,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ChildMeta<K> {
    fn clone(&self) -> Self {
        ChildMeta {
            text: self.text.clone(),
            index: self.index.clone(),
            owners: self.owners,
            labels: self.labels,
            annotations: self.annotations,
            present: self.present,
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for ChildMeta<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildMeta")
            .field("name", &self.name())
            .field("namespace", &self.namespace())
            .field("uid", &self.uid())
            .field("resource_version", &self.resource_version())
            .field("owners", &self.owners().collect::<Vec<_>>())
            .field("labels", &self.labels().collect::<Vec<_>>())
            .field("annotations", &self.annotations().collect::<Vec<_>>())
            .finish()
    }
}

/// The pairs of `map` whose key `keep` accepts (in the map's order), at most `u16::MAX`.
fn kept(
    map: Option<&std::collections::BTreeMap<String, String>>,
    keep: impl Fn(&str) -> bool,
) -> Vec<(&String, &String)> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .take(usize::from(u16::MAX))
        .collect()
}

impl<K> ChildMeta<K> {
    /// What the caches keep of `meta`.
    pub fn new(meta: &ObjectMeta) -> Self {
        let owners: Vec<&OwnerReference> = meta
            .owner_references
            .iter()
            .flatten()
            .take(usize::from(u16::MAX))
            .collect();
        let labels = kept(meta.labels.as_ref(), |k| {
            k == LABEL_INSTANCE || k == LABEL_COMPONENT || k.starts_with(OURS)
        });
        let annotations = kept(meta.annotations.as_ref(), |k| k.starts_with(OURS));
        let mut t = Texts::default();
        let mut present = 0;
        for (i, (bit, s)) in [
            (0, meta.name.as_ref()),
            (HAS_NAMESPACE, meta.namespace.as_ref()),
            (HAS_UID, meta.uid.as_ref()),
            (HAS_RESOURCE_VERSION, meta.resource_version.as_ref()),
        ]
        .into_iter()
        .enumerate()
        {
            t.push(s.map(String::as_str).unwrap_or_default());
            if i > 0 && s.is_some() {
                present |= bit;
            }
        }
        for o in &owners {
            for s in [&o.api_version, &o.kind, &o.name, &o.uid] {
                t.push(s);
            }
        }
        for (k, v) in labels.iter().chain(&annotations) {
            t.push(k);
            t.push(v);
        }
        let mut index = t.ends;
        index.extend(
            owners
                .iter()
                .map(|o| flag(o.controller) | flag(o.block_owner_deletion) << 2),
        );
        ChildMeta {
            text: t.text.into_boxed_str(),
            index: index.into_boxed_slice(),
            owners: owners.len() as u16,
            labels: labels.len() as u16,
            annotations: annotations.len() as u16,
            present,
            kind: PhantomData,
        }
    }

    /// Text number `i` (see the type's documentation).
    fn at(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.index[i - 1] as usize
        };
        let s = &self.text[start..self.index[i] as usize];
        match s.strip_prefix(CODE) {
            Some(rest) => match rest.strip_prefix(CODE) {
                Some(escaped) => escaped,
                None => KNOWN[usize::from(rest.as_bytes()[0] - b'a')],
            },
            None => s,
        }
    }

    fn texts(&self) -> usize {
        4 + 4 * usize::from(self.owners)
            + 2 * (usize::from(self.labels) + usize::from(self.annotations))
    }

    fn pairs(&self, from: usize, n: u16) -> impl Iterator<Item = (&str, &str)> {
        (0..usize::from(n)).map(move |k| (self.at(from + 2 * k), self.at(from + 2 * k + 1)))
    }

    fn present(&self, bit: u8, i: usize) -> Option<&str> {
        (self.present & bit != 0).then(|| self.at(i))
    }

    pub fn name(&self) -> &str {
        self.at(0)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.present(HAS_NAMESPACE, 1)
    }

    pub fn uid(&self) -> Option<&str> {
        self.present(HAS_UID, 2)
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.present(HAS_RESOURCE_VERSION, 3)
    }

    /// The owner references, in their order.
    pub fn owners(&self) -> impl Iterator<Item = Owner<'_>> {
        let flags = self.texts();
        (0..usize::from(self.owners)).map(move |j| {
            let f = self.index[flags + j];
            Owner {
                api_version: self.at(4 + 4 * j),
                kind: self.at(5 + 4 * j),
                name: self.at(6 + 4 * j),
                uid: self.at(7 + 4 * j),
                controller: unflag(f),
                block_owner_deletion: unflag(f >> 2),
            }
        })
    }

    /// The kept labels, by key.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs(4 + 4 * usize::from(self.owners), self.labels)
    }

    /// The kept annotations, by key.
    pub fn annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        let from = 4 + 4 * usize::from(self.owners) + 2 * usize::from(self.labels);
        self.pairs(from, self.annotations)
    }

    /// Whether a controller reference carries `uid`.
    pub fn controlled_by(&self, uid: &str) -> bool {
        self.owners()
            .any(|o| o.uid == uid && o.controller == Some(true))
    }

    /// A kept label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A kept annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The metadata kept, in kube's form (for the time it is read).
    pub fn object_meta(&self) -> ObjectMeta {
        fn map<'a>(
            pairs: impl Iterator<Item = (&'a str, &'a str)>,
        ) -> Option<std::collections::BTreeMap<String, String>> {
            let map: std::collections::BTreeMap<String, String> =
                pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            (!map.is_empty()).then_some(map)
        }
        let owners: Vec<OwnerReference> = self.owners().map(OwnerReference::from).collect();
        ObjectMeta {
            name: Some(self.name().to_owned()),
            namespace: self.namespace().map(str::to_owned),
            uid: self.uid().map(str::to_owned),
            resource_version: self.resource_version().map(str::to_owned),
            owner_references: (!owners.is_empty()).then_some(owners),
            labels: map(self.labels()),
            annotations: map(self.annotations()),
            ..ObjectMeta::default()
        }
    }
}

impl<K: Resource<DynamicType = ()>> ChildMeta<K> {
    /// The metadata kept, as a `PartialObjectMeta` of its kind (for the time it is read).
    pub fn to_partial(&self) -> PartialObjectMeta<K> {
        self.object_meta().into_response_partial()
    }
}

impl<K> From<&PartialObjectMeta<K>> for ChildMeta<K> {
    fn from(p: &PartialObjectMeta<K>) -> Self {
        ChildMeta::new(&p.metadata)
    }
}

impl<K: Resource<DynamicType = ()>> Lookup for ChildMeta<K> {
    type DynamicType = ();

    fn kind(dyntype: &()) -> Cow<'_, str> {
        K::kind(dyntype)
    }

    fn group(dyntype: &()) -> Cow<'_, str> {
        K::group(dyntype)
    }

    fn version(dyntype: &()) -> Cow<'_, str> {
        K::version(dyntype)
    }

    fn plural(dyntype: &()) -> Cow<'_, str> {
        K::plural(dyntype)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(ChildMeta::name(self)))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        ChildMeta::namespace(self).map(Cow::Borrowed)
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        ChildMeta::resource_version(self).map(Cow::Borrowed)
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        ChildMeta::uid(self).map(Cow::Borrowed)
    }

    /// The key of the cache: name and namespace only (kube's default copies the
    /// resourceVersion and uid into every key too, which no lookup compares).
    fn to_object_ref(&self, dyntype: ()) -> ObjectRef<Self> {
        let key = ObjectRef::new_with(ChildMeta::name(self), dyntype);
        match ChildMeta::namespace(self) {
            Some(ns) => key.within(ns),
            None => key,
        }
    }
}

/// A watch event with `cached(object)` in place of its object (what a cache keeps of it).
pub fn map_event<K, C>(event: &watcher::Event<K>, cached: impl Fn(&K) -> C) -> watcher::Event<C> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(cached(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(cached(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(cached(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;
    use crate::reconcile::drift;

    /// A managed client Service as a metadata-only watch delivers it (managed fields of the
    /// operator's apply and of the endpoints controller's status-free update included).
    pub fn watched_service() -> PartialObjectMeta<Service> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "vectors-0042-client", "namespace": "tenant-0042",
                "uid": "0b6f1a8e-3f7c-4a51-9d0e-6f1c2b7a9e42", "resourceVersion": "1048576",
                "creationTimestamp": "2026-12-05T10:00:00Z",
                "labels": {
                    "app.kubernetes.io/name": "qdrant",
                    "app.kubernetes.io/instance": "vectors-0042",
                    "app.kubernetes.io/managed-by": "secure-qdrant-operator",
                    "app.kubernetes.io/component": "database",
                },
                "annotations": {"secureqdrant.dev/applied-hash": "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c"},
                "ownerReferences": [{
                    "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
                    "name": "vectors-0042", "uid": "5e1d7c3b-9a8f-4e6d-b2c1-0a9f8e7d6c42",
                    "controller": true, "blockOwnerDeletion": true,
                }],
                "managedFields": [{
                    "manager": "secure-qdrant-operator", "operation": "Apply",
                    "apiVersion": "v1", "time": "2026-12-05T10:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}},
                        "f:annotations": {"f:secureqdrant.dev/applied-hash": {}}},
                        "f:spec": {"f:ports": {"k:{\"port\":6333,\"protocol\":\"TCP\"}": {}}}},
                }],
            },
        }))
        .expect("a watched Service")
    }

    #[test]
    fn what_the_readers_use_is_kept_and_the_rest_is_not() {
        let mut watched = watched_service();
        let meta = &mut watched.metadata;
        let labels = meta.labels.as_mut().unwrap();
        labels.insert("team".into(), "search".into());
        labels.insert("secureqdrant.dev/allowed-instance".into(), "vectors".into());
        let annotations = meta.annotations.as_mut().unwrap();
        annotations.insert("secureqdrant.dev/adopt".into(), "vectors".into());
        annotations.insert("note".into(), "x".repeat(1000));
        meta.owner_references
            .as_mut()
            .unwrap()
            .push(OwnerReference {
                api_version: "example.com/v1".into(),
                kind: "Other".into(),
                name: "o".into(),
                uid: "u-other".into(),
                ..OwnerReference::default()
            });
        drift::mark_and_trim(meta);
        let kept = ChildMeta::<Service>::from(&watched);
        assert_eq!(kept.name(), "vectors-0042-client");
        assert_eq!(kept.namespace(), Some("tenant-0042"));
        assert_eq!(kept.uid(), Some("0b6f1a8e-3f7c-4a51-9d0e-6f1c2b7a9e42"));
        assert_eq!(kept.resource_version(), Some("1048576"));
        assert!(kept.controlled_by("5e1d7c3b-9a8f-4e6d-b2c1-0a9f8e7d6c42"));
        assert!(!kept.controlled_by("u-other"), "not a controller");
        assert_eq!(kept.label(LABEL_INSTANCE), Some("vectors-0042"));
        assert_eq!(kept.label(LABEL_COMPONENT), Some("database"));
        assert_eq!(
            kept.label("secureqdrant.dev/allowed-instance"),
            Some("vectors")
        );
        assert_eq!(kept.label("team"), None);
        assert_eq!(kept.annotation("secureqdrant.dev/adopt"), Some("vectors"));
        assert!(kept.annotation(OWNED_FIELDS).is_some(), "the drift marks");
        assert_eq!(kept.annotation("note"), None);
        // Rebuilt in kube's form: what the readers of ObjectMeta read is all there, the owner
        // references complete (an adoption writes them back).
        let rebuilt = kept.object_meta();
        assert_eq!(rebuilt.owner_references, watched.metadata.owner_references);
        assert_eq!(
            rebuilt.annotations.as_ref().unwrap().get(APPLIED_HASH),
            watched
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(APPLIED_HASH)
        );
        assert_eq!(drift::flagged(&rebuilt), drift::flagged(&watched.metadata));
        assert_eq!(rebuilt.resource_version, watched.metadata.resource_version);
        // The cache's key: name and namespace.
        let key = ObjectRef::from_obj(&kept);
        assert_eq!(
            key,
            ObjectRef::new("vectors-0042-client").within("tenant-0042")
        );
        assert_eq!(key.extra.resource_version, None);
    }

    #[test]
    fn odd_texts_come_back_as_they_were() {
        let meta: ObjectMeta = serde_json::from_value(json!({
            "name": "\u{0}a", "uid": "",
            "labels": {"secureqdrant.dev/\u{0}": "\u{0}\u{0}", LABEL_INSTANCE: ""},
            "annotations": {APPLIED_HASH: "secureqdrant.dev/adopt"},
            "ownerReferences": [
                {"apiVersion": "\u{0}", "kind": "SecureQdrant", "name": "n", "uid": "u",
                 "controller": false},
                {"apiVersion": "v1", "kind": "", "name": "", "uid": "w",
                 "blockOwnerDeletion": true},
            ],
        }))
        .unwrap();
        let kept = ChildMeta::<Service>::new(&meta);
        assert_eq!(kept.name(), "\u{0}a");
        assert_eq!(kept.namespace(), None);
        assert_eq!(kept.uid(), Some(""));
        assert_eq!(kept.resource_version(), None);
        assert_eq!(kept.label("secureqdrant.dev/\u{0}"), Some("\u{0}\u{0}"));
        assert_eq!(kept.label(LABEL_INSTANCE), Some(""));
        assert_eq!(
            kept.annotation(APPLIED_HASH),
            Some("secureqdrant.dev/adopt")
        );
        assert_eq!(kept.object_meta().owner_references, meta.owner_references);
        assert_eq!(kept.object_meta().labels, meta.labels);
        assert_eq!(kept.object_meta().annotations, meta.annotations);
        assert_eq!(kept.object_meta().name, meta.name);
        assert!(!kept.controlled_by("u"));
        let none = ChildMeta::<Service>::new(&ObjectMeta::default());
        assert_eq!(none.name(), "");
        assert_eq!(none.owners().count(), 0);
        assert_eq!(none.object_meta().labels, None);
    }
}
