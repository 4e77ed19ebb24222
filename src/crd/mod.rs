//! The custom resources this operator serves, and the CRD documents generated from them.

mod access_token;
mod secure_qdrant;

pub use access_token::*;
pub use secure_qdrant::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

/// API group of every resource this operator serves.
pub const GROUP: &str = "secureqdrant.dev";

/// Every CRD the operator serves, in the order they are printed by `crd`.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![secure_qdrant_crd(), access_token_crd()]
}

/// The `SecureQdrant` CRD, with the rules that need the object's metadata added at the root.
pub fn secure_qdrant_crd() -> CustomResourceDefinition {
    let mut crd = SecureQdrant::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        schema
            .x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .push(ValidationRule {
                rule: format!(
                    "self.metadata.name.size() <= {MAX_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
                ),
                message: Some(format!(
                    "metadata.name must be a DNS-1035 label of at most {MAX_NAME_LEN} characters \
                     (it names the StatefulSet, its pods and the Services)"
                )),
                ..ValidationRule::default()
            });
    }
    crd
}

/// Renders every CRD as one multi-document YAML stream (the content of `crds/`).
pub fn to_yaml() -> String {
    all()
        .iter()
        .map(|crd| serde_yaml_ng::to_string(crd).expect("a CRD always serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}
