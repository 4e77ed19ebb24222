//! Writes: server-side apply under one field manager, skipped when the cluster already holds
//! exactly what would be sent (so an idle operator writes nothing), and deletion of children that
//! are no longer built.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;

use super::drift;
use super::expect::Expectations;
use super::ownership::{Ownership, adopt, conflict, expected_owner, ownership};
use super::stamp::{APPLIED_HASH, stamp};
use super::stores::{CachedMeta, Child, MetaStore, cached};
use crate::children::meta::{LABEL_INSTANCE, MANAGER};
use crate::error::{Error, Result};
use crate::validate::parse_quantity;

/// What a step did, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied,
    /// Not written: the same write was just made and the cache has not shown it yet. Look again
    /// within [`super::expect::EXPECTATION_TTL`].
    Pending,
}

/// True when every field of `want` is present in `have` with the same value (the API server adds
/// defaults and status, so `have` may hold more).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        // The API server rewrites quantities to canonical form (`1.5Gi` is stored as `1536Mi`):
        // equal values are equal, or every reconcile would re-apply them.
        (Value::String(w), Value::String(h)) => w == h || same_quantity(w, h),
        (w, h) => w == h,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0) * 4.0,
        _ => false,
    }
}

/// Decides whether `desired` (already carrying its applied-hash annotation) needs a write over
/// `current`, the object as the API server holds it (read in full, not a cached copy).
pub fn needs_apply<K: Serialize + Resource>(desired: &K, current: Option<&K>) -> bool {
    let Some(current) = current else { return true };
    let want_hash = desired
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH));
    let have_hash = current
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH));
    if want_hash.is_none() || want_hash != have_hash {
        return true;
    }
    let want = serde_json::to_value(desired).expect("k8s objects serialize");
    let have = serde_json::to_value(current).expect("k8s objects serialize");
    !is_subset(&want, &have)
}

/// What the cache says about a child, from its metadata alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Not in the cache.
    Missing,
    /// Another applied hash: what the operator would send changed (or someone edited the hash).
    Stale,
    /// The applied hash matches, and no write newer than the operator's apply shows
    /// ([`drift::foreign_write`]), or one does but the object was read at this version and found
    /// clean ([`super::verified`]): nothing to do.
    Current,
    /// The applied hash matches, but a foreign write shows that no read has checked yet: read the
    /// object and compare.
    Flagged,
}

/// Classifies the cached copy of a child (`meta`: its metadata) against `hash`, the applied hash
/// of the desired object, and `sent`, the fingerprint of its fields ([`drift::sent_fields`]);
/// `verified` says whether its version was already read and found clean.
pub fn classify(
    meta: Option<&ObjectMeta>,
    hash: &str,
    sent: &str,
    verified: impl Fn(&str) -> bool,
) -> Cached {
    let Some(meta) = meta else {
        return Cached::Missing;
    };
    let have = meta.annotations.as_ref().and_then(|a| a.get(APPLIED_HASH));
    if have.map(String::as_str) != Some(hash) {
        return Cached::Stale;
    }
    let drifted = drift::flagged(meta) || drift::fields_removed(meta, sent);
    if drifted && !verified(meta.resource_version.as_deref().unwrap_or_default()) {
        Cached::Flagged
    } else {
        Cached::Current
    }
}

/// Server-side applies `desired` unless the cache shows it is already in place, or the same
/// write was just made and the cache has not caught up yet (`expectations`).
///
/// The cache (`store`) may hold a view of the objects or only their metadata (`C`: any cached
/// type of the same kind): only the metadata is read. The decision ([`classify`]): a missing or
/// differently-hashed child is written; a child the drift signal flags ([`super::drift`]) is read
/// in full (one GET) and compared ([`needs_apply`]): force-applied if it differs, else its
/// version is remembered as clean ([`super::verified`]); anything else is left alone with no
/// request.
///
/// Ownership (see [`super::ownership`]): `desired` carries its controller reference, and the
/// object is written only when it is absent (created) or controlled by that owner's UID
/// (updated); an orphan annotated for adoption is adopted first; anything else is an
/// [`Error::ChildConflict`] and nothing is written. The caches hold only objects labelled as
/// managed by the operator, so a miss is confirmed with a GET before anything is created.
/// The writes themselves are guarded too:
/// - an update carries the resourceVersion of the copy whose owner was checked, so it fails
///   (409) if the object changed since, e.g. was deleted and recreated by someone else; the
///   object is then read again, checked again, and written once more at most; a repair of drift
///   (the object was just read in full) carries its uid instead, so a status write in between
///   does not fail it, and a replacement by someone else still does (422: the uid is
///   immutable);
/// - a creation is an apply WITHOUT force: if someone created the object between the GET and
///   the apply, every field they set differently is a conflict (409), the object is read again
///   and refused as foreign. (A plain POST would be race-free, but it records the fields under
///   an Update entry of the operator's field manager, and later applies could then never remove
///   a field the operator stops sending.)
pub async fn apply<K, C>(
    client: &Client,
    expectations: &Expectations,
    store: &Store<C>,
    desired: K,
) -> Result<Outcome>
where
    K: Child,
    C: CachedMeta,
{
    // On the heap: the reads, adoption and retry make this future large, and the reconcile
    // awaits a dozen of them.
    Box::pin(apply_checked(client, expectations, store, desired)).await
}

async fn apply_checked<K, C>(
    client: &Client,
    expectations: &Expectations,
    store: &Store<C>,
    desired: K,
) -> Result<Outcome>
where
    K: Child,
    C: CachedMeta,
{
    let desired = stamp(desired);
    let kind = <K as k8s_openapi::Resource>::KIND;
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    // The cached metadata, in kube's form for the time of this step.
    let current: Option<PartialObjectMeta<K>> =
        cached(store, &namespace, &name).map(|c| c.object_meta().into_response_partial());
    let meta = current.as_ref().map(|c| &c.metadata);
    if let Some(c) = current.as_ref()
        && let Ownership::Foreign(by) = ownership(c, expected_owner(&desired))
    {
        // Checked before anything else: a foreign object is refused without a request.
        return Err(child_conflict(kind, &name, by));
    }
    let hash = desired
        .annotations()
        .get(APPLIED_HASH)
        .cloned()
        .unwrap_or_default();
    let verified = expectations.verified();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let sent = drift::sent_fields(&serde_json::to_value(&desired).expect("k8s objects serialize"));
    let seen = match classify(meta, &hash, &sent, |rv| {
        verified.at(kind, &namespace, &name, rv)
    }) {
        Cached::Current => return Ok(Outcome::Unchanged),
        Cached::Flagged => {
            debug!(kind, %namespace, %name, foreign_write = meta.is_some_and(drift::flagged),
                   "a write by someone else shows: reading the child to compare");
            return verify(&api, expectations, &desired, meta).await;
        }
        _ if expectations.pending(kind, &namespace, &name, &hash) => {
            return Ok(Outcome::Pending);
        }
        Cached::Missing => read(&api, &name).await?.map(Seen::Full),
        Cached::Stale => current.map(|m| Seen::Meta(Box::new(m))),
    };
    let (outcome, _) = write_checked(&api, expectations, &desired, seen, false).await?;
    Ok(outcome)
}

/// Server-side applies a Secret over `current`, the copy this reconcile has just read from the
/// API server (None: it does not exist): compared with that copy, never with the cache (the
/// cache of Secrets holds no data). Ownership, adoption and the guarded writes are those of
/// [`apply`]. Returns the outcome and the resourceVersion the Secret has now.
pub async fn apply_secret(
    client: &Client,
    expectations: &Expectations,
    desired: Secret,
    current: Option<Secret>,
) -> Result<(Outcome, Option<String>)> {
    let desired = stamp(desired);
    if let Some(c) = &current
        && let Ownership::Foreign(by) = ownership(c, expected_owner(&desired))
    {
        return Err(conflict(c, by));
    }
    if !needs_apply(&desired, current.as_ref()) {
        let rv = current.and_then(|c| c.metadata.resource_version);
        return Ok((Outcome::Unchanged, rv));
    }
    let api: Api<Secret> =
        Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
    Box::pin(write_checked(
        &api,
        expectations,
        &desired,
        current.map(Seen::Full),
        false,
    ))
    .await
}

/// A flagged child: reads it, and writes it if it differs from `desired` (else remembers its
/// version as clean). `cached` is the metadata the cache showed; once a write is made for that
/// version, it counts as handled too (the watch shows the written version soon).
async fn verify<K>(
    api: &Api<K>,
    expectations: &Expectations,
    desired: &K,
    cached: Option<&ObjectMeta>,
) -> Result<Outcome>
where
    K: Child,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let full = read(api, &name).await?;
    if let Some(f) = &full
        && !needs_apply(desired, Some(f))
    {
        let rv = f.resource_version().unwrap_or_default();
        expectations.verified().record(kind, &namespace, &name, &rv);
        return Ok(Outcome::Unchanged);
    }
    let (outcome, _) =
        write_checked(api, expectations, desired, full.map(Seen::Full), true).await?;
    if let Some(rv) = cached.and_then(|m| m.resource_version.as_deref()) {
        expectations.verified().record(kind, &namespace, &name, rv);
    }
    Ok(outcome)
}

/// An existing object as the write path knows it: its metadata (what a cache may hold), or the
/// whole object as read.
enum Seen<K> {
    Meta(Box<PartialObjectMeta<K>>),
    Full(K),
}

impl<K: Resource<DynamicType = ()>> Seen<K> {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Seen::Meta(m) => &m.metadata,
            Seen::Full(k) => k.meta(),
        }
    }

    fn ownership(&self, owner: &OwnerReference) -> Ownership {
        match self {
            Seen::Meta(m) => ownership(m.as_ref(), owner),
            Seen::Full(k) => ownership(k, owner),
        }
    }
}

fn child_conflict(kind: &'static str, name: &str, owner: String) -> Error {
    Error::ChildConflict {
        kind,
        name: name.to_owned(),
        owner,
    }
}

/// Writes `desired` over `current` (None: absent) when the operator may: adopting an orphan
/// annotated for adoption first, refusing a foreign object, and reading and checking once more
/// when the object changed since it was read (see [`apply`]). With `remember` (a repair of drift),
/// the version written is recorded as clean ([`super::verified`]). Returns the outcome and the
/// object's resourceVersion after it (None when unknown).
async fn write_checked<K>(
    api: &Api<K>,
    expectations: &Expectations,
    desired: &K,
    mut current: Option<Seen<K>>,
    remember: bool,
) -> Result<(Outcome, Option<String>)>
where
    K: Child,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let hash = desired
        .annotations()
        .get(APPLIED_HASH)
        .cloned()
        .unwrap_or_default();
    for attempt in 0..2 {
        if let Some(c) = current.take() {
            let c = match c.ownership(expected_owner(desired)) {
                Ownership::Ours => c,
                Ownership::Adoptable => {
                    let labels = desired.labels().clone();
                    let adopted = match &c {
                        Seen::Meta(m) => {
                            adopt(api, m.as_ref(), expected_owner(desired), &labels).await
                        }
                        Seen::Full(k) => adopt(api, k, expected_owner(desired), &labels).await,
                    };
                    match adopted {
                        Ok(adopted) => Seen::Full(adopted),
                        // A stale copy (adopted or changed since it was cached): read and check
                        // again.
                        Err(Error::Apply {
                            source: kube::Error::Api(e),
                            ..
                        }) if e.code == 409 && attempt == 0 => {
                            current = read(api, &name).await?.map(Seen::Full);
                            continue;
                        }
                        Err(error) => return Err(error),
                    }
                }
                Ownership::Foreign(by) => return Err(child_conflict(kind, &name, by)),
            };
            if attempt > 0
                && let Seen::Full(full) = &c
                && !needs_apply(desired, Some(full))
            {
                return Ok((Outcome::Unchanged, full.resource_version()));
            }
            current = Some(c);
        }
        // Recorded before the write, so its watch event cannot arrive before the record.
        expectations.expect(kind, &namespace, &name, &hash);
        let mut body = serde_json::to_value(desired).expect("k8s objects serialize");
        let params = match &current {
            // A repair of what was just read: guarded by its uid. Its resourceVersion would
            // make the write fail whenever a controller wrote the status in between (a
            // StatefulSet rolling out after an edit of its pod template does, repeatedly).
            Some(c) if remember => {
                body["metadata"]["uid"] = c.meta().uid.clone().into();
                PatchParams::apply(MANAGER).force()
            }
            Some(c) => {
                body["metadata"]["resourceVersion"] = c.meta().resource_version.clone().into();
                PatchParams::apply(MANAGER).force()
            }
            None => PatchParams::apply(MANAGER),
        };
        match api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(written) => {
                if remember {
                    // What was just written is clean at its new version, even if its managed
                    // fields show a write in the same second as this one (a tie is flagged).
                    let rv = written.resource_version().unwrap_or_default();
                    expectations.verified().record(kind, &namespace, &name, &rv);
                }
                return Ok((Outcome::Applied, written.resource_version()));
            }
            Err(kube::Error::Api(e)) if (e.code == 409 || uid_changed(&e)) && attempt == 0 => {
                // Changed (or created, or replaced) by someone else since it was read: read and
                // check again.
                expectations.forget(kind, &namespace, &name);
                current = read(api, &name).await?.map(Seen::Full);
            }
            Err(source) => {
                expectations.forget(kind, &namespace, &name);
                return Err(Error::Apply {
                    kind,
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    unreachable!("the second attempt returns")
}

/// The API server's answer to a write naming a uid the object does not have (it was replaced):
/// `metadata.uid` is immutable.
fn uid_changed(e: &kube::core::Status) -> bool {
    e.code == 422 && e.message.contains("metadata.uid")
}

async fn read<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Resource + k8s_openapi::Resource + Clone + Debug + DeserializeOwned,
{
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind: <K as k8s_openapi::Resource>::KIND,
        name: name.to_owned(),
        source,
    })
}

/// Deletes the cached children of one instance (by its labels and controller owner UID) whose
/// names are not in `keep`: never an object this instance does not control. Returns the names
/// deleted. `K` is the kind deleted; its cache holds compact metadata.
pub async fn delete_orphans<K>(
    client: &Client,
    store: &MetaStore<K>,
    namespace: &str,
    instance: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<Vec<String>>
where
    K: Child,
{
    let orphans: Vec<(String, String)> = store
        .state()
        .iter()
        .filter(|o| o.namespace() == Some(namespace))
        .filter(|o| o.label(LABEL_INSTANCE) == Some(instance))
        .filter(|o| o.controlled_by(owner_uid))
        .map(|o| (o.name().to_owned(), o.uid().unwrap_or_default().to_owned()))
        .filter(|(n, _)| !keep.contains(n))
        .collect();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for (name, uid) in &orphans {
        // The uid precondition: an object recreated by someone else under the same name since
        // the cache saw it is not deleted (409).
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            // Gone, or replaced by an object this instance does not control: left alone.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: <K as k8s_openapi::Resource>::KIND,
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(orphans.into_iter().map(|(n, _)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_added_fields_but_not_changed_ones() {
        let want = json!({"a": 1, "b": {"c": [1, {"d": 2}]}});
        let have = json!({"a": 1, "x": 0, "b": {"c": [1, {"d": 2, "e": 3}], "z": 1}});
        assert!(is_subset(&want, &have));
        assert!(!is_subset(&json!({"a": 2}), &have));
        assert!(!is_subset(&json!({"b": {"c": [1]}}), &have));
        assert!(!is_subset(&json!({"missing": null}), &have));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(&json!({"q": "1.5Gi"}), &json!({"q": "1536Mi"})));
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(!is_subset(&json!({"q": "1Gi"}), &json!({"q": "1G"})));
        assert!(!is_subset(&json!({"name": "a"}), &json!({"name": "b"})));
    }
}
