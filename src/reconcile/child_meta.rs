//! `ChildMeta<K>`: a cached child as the caches keep it, compact. A metadata-only watch still
//! delivers a full `ObjectMeta` (about 1.4 KB per object once the label and annotation maps and
//! the owner references are counted); the caches keep only what the reconciles read of it: name,
//! namespace, uid, resourceVersion, the owner references, the labels the operator reads
//! (`app.kubernetes.io/instance`, `app.kubernetes.io/component`, `secureqdrant.dev/*`) and the
//! `secureqdrant.dev/*` annotations (the applied hash, the drift marks, phases, the adoption
//! consent), each in a boxed slice. Anything else a user sets is not kept: nothing reads it, and
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

/// Keys kept without an allocation of their own (any other key of [`OURS`] is kept too, owned).
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
];

const SECURE_QDRANT_API_VERSION: &str = "secureqdrant.dev/v1alpha1";
const KINDS: &[&str] = &["SecureQdrant", "QdrantAccessToken"];

/// A text the operator knows by heart (shared, static) or another (owned).
type Text = Cow<'static, str>;

fn text(s: &str, known: &[&'static str]) -> Text {
    match known.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_owned()),
    }
}

fn boxed(s: Option<&String>) -> Option<Box<str>> {
    s.map(|s| s.as_str().into())
}

/// An owner reference, compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub api_version: Text,
    pub kind: Text,
    pub name: Box<str>,
    pub uid: Box<str>,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

impl From<&OwnerReference> for Owner {
    fn from(r: &OwnerReference) -> Self {
        Owner {
            api_version: text(&r.api_version, &[SECURE_QDRANT_API_VERSION]),
            kind: text(&r.kind, KINDS),
            name: r.name.as_str().into(),
            uid: r.uid.as_str().into(),
            controller: r.controller,
            block_owner_deletion: r.block_owner_deletion,
        }
    }
}

impl From<&Owner> for OwnerReference {
    fn from(o: &Owner) -> Self {
        OwnerReference {
            api_version: o.api_version.to_string(),
            kind: o.kind.to_string(),
            name: o.name.to_string(),
            uid: o.uid.to_string(),
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        }
    }
}

/// A cached child of kind `K`: its metadata, compact (see the module documentation).
pub struct ChildMeta<K> {
    name: Box<str>,
    namespace: Option<Box<str>>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    owners: Box<[Owner]>,
    labels: Box<[(Text, Box<str>)]>,
    annotations: Box<[(Text, Box<str>)]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ChildMeta<K> {
    fn clone(&self) -> Self {
        ChildMeta {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
            owners: self.owners.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for ChildMeta<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildMeta")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("uid", &self.uid)
            .field("resource_version", &self.resource_version)
            .field("owners", &self.owners)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .finish()
    }
}

/// The pairs of `map` whose key `keep` accepts, sorted by key (as the map is).
fn kept(
    map: Option<&std::collections::BTreeMap<String, String>>,
    keep: impl Fn(&str) -> bool,
) -> Box<[(Text, Box<str>)]> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (text(k, KNOWN), v.as_str().into()))
        .collect()
}

impl<K> ChildMeta<K> {
    /// What the caches keep of `meta`.
    pub fn new(meta: &ObjectMeta) -> Self {
        ChildMeta {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: boxed(meta.namespace.as_ref()),
            uid: boxed(meta.uid.as_ref()),
            resource_version: boxed(meta.resource_version.as_ref()),
            owners: meta
                .owner_references
                .iter()
                .flatten()
                .map(Owner::from)
                .collect(),
            labels: kept(meta.labels.as_ref(), |k| {
                k == LABEL_INSTANCE || k == LABEL_COMPONENT || k.starts_with(OURS)
            }),
            annotations: kept(meta.annotations.as_ref(), |k| k.starts_with(OURS)),
            kind: PhantomData,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    pub fn owners(&self) -> &[Owner] {
        &self.owners
    }

    /// Whether a controller reference carries `uid`.
    pub fn controlled_by(&self, uid: &str) -> bool {
        self.owners
            .iter()
            .any(|o| &*o.uid == uid && o.controller == Some(true))
    }

    /// A kept label.
    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }

    /// A kept annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    /// The metadata kept, in kube's form (for the time it is read).
    pub fn object_meta(&self) -> ObjectMeta {
        let map = |pairs: &[(Text, Box<str>)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        ObjectMeta {
            name: Some(self.name.to_string()),
            namespace: self.namespace.as_deref().map(str::to_owned),
            uid: self.uid.as_deref().map(str::to_owned),
            resource_version: self.resource_version.as_deref().map(str::to_owned),
            owner_references: (!self.owners.is_empty())
                .then(|| self.owners.iter().map(OwnerReference::from).collect()),
            labels: map(&self.labels),
            annotations: map(&self.annotations),
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

fn find<'a>(pairs: &'a [(Text, Box<str>)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
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
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        self.resource_version.as_deref().map(Cow::Borrowed)
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        self.uid.as_deref().map(Cow::Borrowed)
    }

    /// The key of the cache: name and namespace only (kube's default copies the
    /// resourceVersion and uid into every key too, which no lookup compares).
    fn to_object_ref(&self, dyntype: ()) -> ObjectRef<Self> {
        let key = ObjectRef::new_with(&self.name, dyntype);
        match self.namespace.as_deref() {
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
}
