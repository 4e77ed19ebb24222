//! Names, labels and metadata shared by every child object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::validate::Instance;

/// Field manager of every write, and value of the managed-by label.
pub const MANAGER: &str = "secure-qdrant-operator";
/// Label key: what application.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label key: which SecureQdrant.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label key: who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label key: the object's role.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Pod-template annotation: hash of everything that needs a Qdrant restart.
pub const RESTART_HASH: &str = "secureqdrant.dev/restart-hash";
/// Label selector matching every object this operator manages (used by its watches).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=secure-qdrant-operator";

/// The suffixes of every Secret name a SecureQdrant `<x>` uses or may come to use: `<x>-api-key`
/// (generated keys), `<x>-ca` (its CA), `<x>-tls` (its serving certificate), `<x>-metrics-client`
/// (the client certificate of metrics scrapes). The one place to extend: QdrantAccessToken
/// validation and its CRD rule refuse `spec.secretName`s ending in any of them, so no token can
/// take (and so block) a Secret an instance, existing or future, needs.
pub const INSTANCE_SECRET_SUFFIXES: [&str; 4] = ["-api-key", "-ca", "-tls", "-metrics-client"];

/// Every Secret name instance `instance` uses or may come to use (see
/// [`INSTANCE_SECRET_SUFFIXES`]).
pub fn instance_secret_names(instance: &str) -> Vec<String> {
    INSTANCE_SECRET_SUFFIXES
        .iter()
        .map(|suffix| format!("{instance}{suffix}"))
        .collect()
}

/// The SecureQdrant name whose Secret `secret` would be, if its name is one an instance uses.
pub fn instance_of_secret_name(secret: &str) -> Option<&str> {
    INSTANCE_SECRET_SUFFIXES
        .iter()
        .find_map(|suffix| secret.strip_suffix(suffix))
        .filter(|instance| !instance.is_empty())
}

/// Component label of the Qdrant pods and the objects serving them.
pub const COMPONENT_DATABASE: &str = "database";
/// Component label of credential Secrets.
pub const COMPONENT_CREDENTIALS: &str = "credentials";

/// Component label of the metrics scrapers' client certificate Secret (`<n>-metrics-client`).
pub const COMPONENT_METRICS_CLIENT: &str = "metrics-client";

/// Labels that select the instance's Qdrant pods (immutable StatefulSet selector).
pub fn selector_labels(inst: &Instance) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "qdrant".to_owned()),
        (LABEL_INSTANCE.to_owned(), inst.name.clone()),
        (LABEL_COMPONENT.to_owned(), COMPONENT_DATABASE.to_owned()),
    ])
}

/// The instance's Qdrant pods as a LabelSelector.
pub fn pod_selector(inst: &Instance) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(inst)),
        ..LabelSelector::default()
    }
}

/// Labels of a child object of the given component.
pub fn labels(inst: &Instance, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "qdrant".to_owned()),
        (LABEL_INSTANCE.to_owned(), inst.name.clone()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_COMPONENT.to_owned(), component.to_owned()),
    ])
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
pub fn object_meta(inst: &Instance, name: impl Into<String>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(inst.namespace.clone()),
        labels: Some(labels(inst, component)),
        owner_references: Some(vec![inst.owner.clone()]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_secret_names_cover_the_instance_and_not_the_token_default() {
        assert_eq!(
            instance_secret_names("x"),
            ["x-api-key", "x-ca", "x-tls", "x-metrics-client"]
        );
        assert_eq!(instance_of_secret_name("a-b-tls"), Some("a-b"));
        assert_eq!(instance_of_secret_name("x-ca"), Some("x"));
        assert_eq!(instance_of_secret_name("-ca"), None);
        assert_eq!(instance_of_secret_name("x-cab"), None);
        // A token's default Secret name can never be one an instance uses.
        let default = format!("x{}", crate::crd::SECRET_NAME_SUFFIX);
        assert_eq!(instance_of_secret_name(&default), None);
    }
}
