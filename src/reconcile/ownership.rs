//! Who may be written: the ownership rule every child write goes through.
//!
//! An object the operator would write for a SecureQdrant (or a QdrantAccessToken) is written
//! only when it is absent (then created) or controlled by that very object: a controller owner
//! reference carrying its UID. Anything else — no controller, another controller, an owner of the
//! same name with another UID (an earlier incarnation whose children the garbage collector is
//! still removing) — is a conflict: nothing is written, and the caller reports the object's kind,
//! name and current owner. The one way to hand an orphaned child to an instance is an explicit
//! act by someone who may write the child: the [`ADOPT_ANNOTATION`] naming the instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::stores::Child;
use crate::children::meta::MANAGER;
use crate::error::{Error, Result};

/// Annotation on an orphaned child (no controller) naming the SecureQdrant that may adopt it:
/// `secureqdrant.dev/adopt: <instance name>`. The operator then adds its controller reference
/// and removes the annotation in the same guarded write (the consent is used up).
pub const ADOPT_ANNOTATION: &str = "secureqdrant.dev/adopt";

/// What the operator may do with an existing object that has the name of one of its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Controlled by the expected owner (same UID): may be updated.
    Ours,
    /// No controller, and annotated for adoption by the expected owner (a SecureQdrant).
    Adoptable,
    /// Anything else: never written. The current owner, described for a message.
    Foreign(String),
}

/// The controller owner reference of an object, if any.
pub fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The current owner of an object, for messages: `Kind/name (uid …)`, or `no owner`.
pub fn describe_owner<K: Resource>(obj: &K) -> String {
    match controller_of(obj) {
        Some(r) => format!("{}/{} (uid {})", r.kind, r.name, r.uid),
        None => "no owner".to_owned(),
    }
}

/// Classifies `obj` against the owner the operator writes it for.
pub fn ownership<K: Resource>(obj: &K, owner: &OwnerReference) -> Ownership {
    match controller_of(obj) {
        Some(r) if r.uid == owner.uid => Ownership::Ours,
        Some(r) if r.kind == owner.kind && r.name == owner.name => Ownership::Foreign(format!(
            "{} (an earlier {} of the same name: wait until the garbage collector has removed it)",
            describe_owner(obj),
            r.kind
        )),
        Some(_) => Ownership::Foreign(describe_owner(obj)),
        None if owner.kind == "SecureQdrant"
            && obj.annotations().get(ADOPT_ANNOTATION) == Some(&owner.name) =>
        {
            Ownership::Adoptable
        }
        None => Ownership::Foreign(describe_owner(obj)),
    }
}

/// The controller owner reference a desired object carries (every child is built with one).
pub fn expected_owner<K: Resource>(desired: &K) -> &OwnerReference {
    controller_of(desired).expect("every child is built with its controller reference")
}

/// The conflict error for `obj`.
pub fn conflict<K: Resource + k8s_openapi::Resource>(obj: &K, owner: String) -> Error {
    Error::ChildConflict {
        kind: <K as k8s_openapi::Resource>::KIND,
        name: obj.name_any(),
        owner,
    }
}

/// Takes over an orphaned child annotated with [`ADOPT_ANNOTATION`]: one merge patch, guarded by
/// the resourceVersion that was checked (a concurrent change fails it), that adds `owner` as the
/// controller, adds `labels` (so the operator's label-selected caches see it) and removes the
/// annotation. Returns the object as stored. Only `current`'s metadata is read (it may be all a
/// cache holds).
pub async fn adopt<K, M>(
    api: &Api<K>,
    current: &M,
    owner: &OwnerReference,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<K>
where
    K: Child,
    M: Resource,
{
    let mut refs: Vec<OwnerReference> = current
        .meta()
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.uid != owner.uid)
        .collect();
    refs.push(owner.clone());
    let patch = json!({
        "metadata": {
            "resourceVersion": current.meta().resource_version,
            "ownerReferences": refs,
            "labels": labels,
            "annotations": {ADOPT_ANNOTATION: null},
        }
    });
    let name = current.name_any();
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: <K as k8s_openapi::Resource>::KIND,
        name,
        source,
    })
}

/// Refuses an existing child that this instance does not control (adoption goes through the
/// write path, [`own_secret`] or the apply step, never through a read).
pub fn ensure_ours<K: Resource + k8s_openapi::Resource>(
    obj: &K,
    inst: &crate::validate::Instance,
) -> Result<()> {
    match ownership(obj, &inst.owner) {
        Ownership::Ours => Ok(()),
        Ownership::Adoptable => Err(conflict(obj, describe_owner(obj))),
        Ownership::Foreign(by) => Err(conflict(obj, by)),
    }
}

/// A credentials Secret of the instance (`<n>-api-key`, `<n>-ca`, `<n>-tls`) that exists: kept
/// when controlled by this instance, adopted when annotated for it, else a conflict (a
/// QdrantAccessToken named its Secret like that, say, and an application mounts it; or a user
/// created it ahead of time). Returns the Secret as it is now stored.
pub async fn own_secret(
    client: &kube::Client,
    inst: &crate::validate::Instance,
    secret: k8s_openapi::api::core::v1::Secret,
) -> Result<k8s_openapi::api::core::v1::Secret> {
    own_secret_as(
        client,
        inst,
        secret,
        crate::children::meta::COMPONENT_CREDENTIALS,
    )
    .await
}

/// [`own_secret`] for a Secret of another component (its labels on adoption).
pub async fn own_secret_as(
    client: &kube::Client,
    inst: &crate::validate::Instance,
    secret: k8s_openapi::api::core::v1::Secret,
    component: &str,
) -> Result<k8s_openapi::api::core::v1::Secret> {
    match ownership(&secret, &inst.owner) {
        Ownership::Ours => Ok(secret),
        Ownership::Adoptable => {
            let api = Api::namespaced(client.clone(), &inst.namespace);
            let labels = crate::children::meta::labels(inst, component);
            adopt(&api, &secret, &inst.owner, &labels).await
        }
        Ownership::Foreign(by) => Err(conflict(&secret, by)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "secureqdrant.dev/v1alpha1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn object(refs: Vec<OwnerReference>, adopt: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("x-config".into()),
                owner_references: Some(refs),
                annotations: adopt.map(|a| [(ADOPT_ANNOTATION.to_owned(), a.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn only_the_same_uid_is_ours_and_only_an_annotated_orphan_is_adoptable() {
        let me = owner("SecureQdrant", "x", "u1");
        assert_eq!(
            ownership(&object(vec![me.clone()], None), &me),
            Ownership::Ours
        );
        // An earlier incarnation of the same name is not this instance.
        let earlier = object(vec![owner("SecureQdrant", "x", "u0")], Some("x"));
        assert!(matches!(ownership(&earlier, &me), Ownership::Foreign(m) if m.contains("earlier")));
        let other = object(vec![owner("Deployment", "app", "u9")], Some("x"));
        assert!(
            matches!(ownership(&other, &me), Ownership::Foreign(m) if m.starts_with("Deployment/app"))
        );
        // A non-controller reference does not make it ours.
        let mut weak = me.clone();
        weak.controller = None;
        assert_eq!(
            ownership(&object(vec![weak], None), &me),
            Ownership::Foreign("no owner".into())
        );
        assert_eq!(
            ownership(&object(vec![], Some("x")), &me),
            Ownership::Adoptable
        );
        assert_eq!(
            ownership(&object(vec![], Some("y")), &me),
            Ownership::Foreign("no owner".into())
        );
        // Tokens never adopt.
        let token = owner("QdrantAccessToken", "x", "u2");
        assert_eq!(
            ownership(&object(vec![], Some("x")), &token),
            Ownership::Foreign("no owner".into())
        );
    }
}
