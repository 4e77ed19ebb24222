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

pub use crate::crd::{INSTANCE_SECRET_SUFFIXES, instance_of_secret_name, instance_secret_names};

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
