//! The custom resources this operator serves, and the CRD documents generated from them.

mod access_token;
mod annotations;
mod instance_secrets;
mod rules;
mod secure_qdrant;
mod user_config;

pub use access_token::*;
pub use annotations::*;
pub use instance_secrets::*;
pub use secure_qdrant::*;
pub use user_config::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

use self::rules::on_create_only;

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
            .push(on_create_only(ValidationRule {
                rule: format!(
                    "self.metadata.name.size() <= {MAX_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
                ),
                message: Some(format!(
                    "metadata.name must be a DNS-1035 label of at most {MAX_NAME_LEN} characters \
                     (it names the StatefulSet, its pods and the Services)"
                )),
                ..ValidationRule::default()
            }));
        schema
            .x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .push(tls_switch_rule());
    }
    crd
}

/// `spec.tls.enabled` of the object `x`, with its default (true) when unset.
fn tls_enabled(x: &str) -> String {
    format!(
        "(!has({x}.spec) || !has({x}.spec.tls) || !has({x}.spec.tls.enabled) || {x}.spec.tls.enabled)"
    )
}

/// A transition rule at the root (it reads the status): `spec.tls.enabled` cannot change once
/// the instance has run more than one replica (`status.clustered`, which the operator never
/// clears). Qdrant keeps every peer's URI, scheme included, in its Raft state. The operator
/// refuses the same change itself ([`crate::reconcile::plan::tls_switch`]). A change back to
/// what the pods run with (the scheme of `status.endpoints.rest`) is allowed, so a switch that
/// got past an older CRD can be undone; an update that leaves the field alone (a status write
/// included) always passes.
fn tls_switch_rule() -> ValidationRule {
    let (new, old) = (tls_enabled("self"), tls_enabled("oldSelf"));
    ValidationRule {
        rule: format!(
            "!has(oldSelf.status) || !has(oldSelf.status.clustered) || !oldSelf.status.clustered \
             || {new} == {old} || (has(oldSelf.status.endpoints) && \
             {new} == oldSelf.status.endpoints.rest.startsWith('https://'))"
        ),
        message: Some(
            "spec.tls.enabled cannot change on an instance that has run more than one replica \
             (status.clustered): Qdrant keeps every peer's URI with its scheme in its Raft \
             state, so the cluster would split. Create a new SecureQdrant with the other setting \
             and move the collections to it with snapshots"
                .to_owned(),
        ),
        ..ValidationRule::default()
    }
}

/// Renders every CRD as one multi-document YAML stream (the content of `crds/`).
pub fn to_yaml() -> String {
    all()
        .iter()
        .map(|crd| serde_yaml_ng::to_string(crd).expect("a CRD always serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Paths of the properties under `schema` that have no description (`kubectl explain`
    /// shows nothing for them), walking into properties, array items and map values.
    fn undescribed(path: &str, schema: &Value, out: &mut Vec<String>) {
        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            let child_path = format!("{path}.{name}");
            let described = child["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                out.push(child_path.clone());
            }
            undescribed(&child_path, child, out);
        }
        if schema["items"].is_object() {
            undescribed(&format!("{path}[]"), &schema["items"], out);
        }
        if schema["additionalProperties"].is_object() {
            undescribed(&format!("{path}{{}}"), &schema["additionalProperties"], out);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for (i, sub) in schema[key].as_array().into_iter().flatten().enumerate() {
                undescribed(&format!("{path}<{key}{i}>"), sub, out);
            }
        }
    }

    #[test]
    fn every_property_of_every_crd_has_a_description() {
        let mut missing = Vec::new();
        let mut walked = 0;
        for crd in super::all() {
            let crd = serde_json::to_value(crd).expect("a CRD serializes");
            for version in crd["spec"]["versions"].as_array().expect("versions") {
                let schema = &version["schema"]["openAPIV3Schema"];
                assert!(schema["properties"]["spec"].is_object(), "{crd}");
                walked += 1;
                let root = format!(
                    "{}/{}",
                    crd["spec"]["names"]["kind"].as_str().unwrap_or_default(),
                    version["name"].as_str().unwrap_or_default()
                );
                undescribed(&root, schema, &mut missing);
            }
        }
        assert_eq!(walked, 2, "both CRDs walked");
        assert!(
            missing.is_empty(),
            "properties without a description:\n{}",
            missing.join("\n")
        );
    }

    /// A rule at the root of a schema runs on every write of the object, status writes
    /// included, and is never forgiven there (the root changes with the status): each one must
    /// be create-only or compare `oldSelf` with `self`, so an object created before the rule
    /// still gets its status. tests/real_api_legacy.rs shows it on the real API server.
    #[test]
    fn every_root_rule_is_create_only_or_a_transition_rule() {
        let mut seen = 0;
        for crd in super::all() {
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref());
                for rule in schema
                    .and_then(|s| s.x_kubernetes_validations.as_ref())
                    .into_iter()
                    .flatten()
                {
                    seen += 1;
                    let create_only = rule.optional_old_self == Some(true)
                        && rule.rule.starts_with("oldSelf.hasValue() || (");
                    let transition =
                        rule.optional_old_self.is_none() && rule.rule.contains("oldSelf");
                    assert!(
                        create_only || transition,
                        "{:?}: {}",
                        crd.metadata.name,
                        rule.rule
                    );
                }
            }
        }
        assert_eq!(seen, 3, "the root rules of both CRDs");
    }

    #[test]
    fn on_create_only_keeps_the_message_and_guards_the_rule() {
        let rule = super::on_create_only(super::ValidationRule {
            rule: "a || b".to_owned(),
            message: Some("m".to_owned()),
            ..Default::default()
        });
        assert_eq!(rule.rule, "oldSelf.hasValue() || (a || b)");
        assert_eq!(rule.optional_old_self, Some(true));
        assert_eq!(rule.message.as_deref(), Some("m"));
    }

    #[test]
    fn the_description_check_finds_a_bare_property() {
        let schema = serde_json::json!({"properties": {
            "a": {"description": "A.", "type": "object", "properties": {"b": {"type": "string"}}},
            "c": {"type": "array", "items": {"properties": {"d": {"type": "string"}}}}
        }});
        let mut missing = Vec::new();
        undescribed("x", &schema, &mut missing);
        assert_eq!(missing, ["x.a.b", "x.c", "x.c[].d"]);
    }
}
