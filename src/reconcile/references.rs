//! Secrets a SecureQdrant references but does not own (`spec.auth.apiKeySecretRef`,
//! `spec.tls.caSecretRef`, `spec.tls.certificateSecretRef`, `spec.imagePullSecrets`): used only
//! when whoever controls the Secret opted in on the Secret itself.
//!
//! The opt-in is the label [`ALLOWED_INSTANCE_LABEL`], whose value names the SecureQdrant(s) of
//! the Secret's namespace allowed to use it: `secureqdrant.dev/allowed-instance: vectors`, or
//! several names joined by `_` (`vectors_docs`; a SecureQdrant name is a DNS-1035 label, so it
//! holds no `_`). One label key with a list rather than one key per instance because the
//! operator's watch of referenced Secrets selects on that key (a label selector cannot match a
//! key prefix), and a label value holds at most 63 characters: enough for a few instances; a
//! Secret shared more widely than that is better copied. Whoever may add that label may write
//! the Secret, and so could hand its content to anyone anyway: the operator never becomes the
//! way around RBAC for an author who may only create SecureQdrants.
//!
//! A Secret controlled by a SecureQdrant or a QdrantAccessToken (another instance's `<x>-ca` or
//! `<x>-api-key`, a token's Secret) is refused, label or not: those belong to the operator's own
//! bookkeeping, and their controller is not a person who can opt in. The operator never writes
//! a referenced Secret, not even a label.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use super::stores::{Stores, cached};
use crate::error::{Error, Result};
use crate::validate::{Instance, TlsSource};

/// The label on a Secret naming the SecureQdrant(s) allowed to use it (see the module docs).
pub const ALLOWED_INSTANCE_LABEL: &str = "secureqdrant.dev/allowed-instance";

/// Separates instance names in the value of [`ALLOWED_INSTANCE_LABEL`].
pub const ALLOWED_INSTANCE_SEPARATOR: char = '_';

const PULL_SECRETS: &str = "spec.imagePullSecrets";

/// The fields of a spec that name a Secret the instance does not own, with the Secret's name.
pub fn referenced_secrets(inst: &Instance) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(r) = &inst.auth.api_key_secret_ref {
        out.push(("spec.auth.apiKeySecretRef", r.name.clone()));
    }
    match inst.tls.as_ref().map(|t| &t.source) {
        Some(TlsSource::UserCa(name)) => out.push(("spec.tls.caSecretRef", name.clone())),
        Some(TlsSource::UserCertificate(name)) => {
            out.push(("spec.tls.certificateSecretRef", name.clone()))
        }
        _ => {}
    }
    for r in &inst.image_pull_secrets {
        out.push((PULL_SECRETS, r.name.clone()));
    }
    out
}

/// Whether the label value allows the instance `name`.
pub fn allows(value: &str, name: &str) -> bool {
    value.split(ALLOWED_INSTANCE_SEPARATOR).any(|n| n == name)
}

/// Checks that `secret`, named by `field` of `inst`, may be used by it (pure).
pub fn check<S: kube::Resource>(secret: &S, inst: &Instance, field: &'static str) -> Result<()> {
    let refuse = |why: String| Error::SecretNotAllowed {
        field,
        name: secret.name_any(),
        instance: inst.name.clone(),
        why,
    };
    if let Some(owner) = secret.owner_references().iter().find(|r| {
        r.controller == Some(true)
            && r.api_version.starts_with("secureqdrant.dev/")
            && matches!(r.kind.as_str(), "SecureQdrant" | "QdrantAccessToken")
    }) {
        return Err(refuse(format!(
            "it belongs to {} {}, and a Secret the operator manages for one resource is never \
             used by another; reference a Secret of your own",
            owner.kind, owner.name
        )));
    }
    match secret.labels().get(ALLOWED_INSTANCE_LABEL) {
        Some(value) if allows(value, &inst.name) => Ok(()),
        Some(value) => Err(refuse(format!(
            "its label {ALLOWED_INSTANCE_LABEL}={value} does not name {}",
            inst.name
        ))),
        None => Err(refuse(format!("it has no label {ALLOWED_INSTANCE_LABEL}"))),
    }
}

/// Reads every Secret `inst` references and checks it, before the reconcile writes anything
/// (the API key, CA and certificate are checked again where they are read). A pull Secret that
/// does not exist is refused too: the kubelet would use whatever Secret of that name appears
/// later. A missing key, CA or certificate Secret is left to the step that reads it, which says
/// what it needs.
pub async fn ensure_allowed(client: &Client, stores: &Stores, inst: &Instance) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &inst.namespace);
    for (field, name) in referenced_secrets(inst) {
        // Labels and owners only: the metadata, from the cache or the API server.
        let secret = match cached(&stores.secrets, &inst.namespace, &name) {
            Some(s) => Some(s.to_partial()),
            None => api
                .get_metadata_opt(&name)
                .await
                .map_err(|source| Error::Read {
                    kind: "Secret",
                    name: name.clone(),
                    source,
                })?,
        };
        match secret {
            Some(secret) => check(&secret, inst, field)?,
            None if field == PULL_SECRETS => {
                return Err(Error::SecretNotAllowed {
                    field,
                    name,
                    instance: inst.name.clone(),
                    why: "it does not exist".to_owned(),
                });
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_value_is_one_name_or_several_joined_by_underscores() {
        assert!(allows("vectors", "vectors"));
        assert!(allows("docs_vectors", "vectors"));
        assert!(allows("vectors_docs", "docs"));
        assert!(!allows("vectors2", "vectors"));
        assert!(!allows("vectors-docs", "vectors"));
        assert!(!allows("true", "vectors"));
        assert!(!allows("", "vectors"));
    }
}
