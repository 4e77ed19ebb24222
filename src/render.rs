//! `render`: what the operator would create for a SecureQdrant, computed offline. Generated
//! secret values are replaced by visible placeholders; nothing is generated or sent anywhere.

use kube::Resource;
use serde::Deserialize;

use crate::api_keys::ApiKeys;
use crate::children::{self, Material, PodTls};
use crate::crd::SecureQdrant;
use crate::settings::Settings;
use crate::validate::{self, describe};

/// The UID written in owner references: the real one is assigned by the API server.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index}: not YAML: {source}")]
    Parse {
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("document {index}: {path}: {message}")]
    Field {
        index: usize,
        path: String,
        message: String,
    },
    #[error(
        "document {index}: expected kind SecureQdrant (apiVersion secureqdrant.dev/v1alpha1), got {kind:?}"
    )]
    WrongKind { index: usize, kind: String },
    #[error("{name}: invalid spec: {problems}")]
    Invalid { name: String, problems: String },
    #[error("no SecureQdrant found in the input")]
    Empty,
}

/// Renders every SecureQdrant of a YAML stream into the objects the operator would create, in
/// the order it writes them (tests/render_matches_operator.rs holds both to that), as one
/// multi-document YAML stream.
pub fn render(input: &str, settings: &Settings) -> Result<String, RenderError> {
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|source| RenderError::Parse { index, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kind != "SecureQdrant" || api_version != "secureqdrant.dev/v1alpha1" {
            return Err(RenderError::WrongKind {
                index,
                kind: format!("{api_version}/{kind}"),
            });
        }
        let mut sq: SecureQdrant =
            serde_path_to_error::deserialize(value).map_err(|e| RenderError::Field {
                index,
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        // Like kubectl: an object without a namespace goes to the default namespace.
        sq.meta_mut()
            .namespace
            .get_or_insert_with(|| "default".to_owned());
        sq.meta_mut()
            .uid
            .get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
        let inst = validate::validate(&sq, settings).map_err(|problems| RenderError::Invalid {
            name: sq.metadata.name.clone().unwrap_or_default(),
            problems: describe(&problems),
        })?;
        let material = Material {
            api_keys: ApiKeys::placeholder(inst.auth.read_only_api_key),
            tls: inst.tls.as_ref().map(|t| PodTls {
                metrics_client: inst
                    .metrics_client_secret()
                    .map(|_| children::secrets::metrics_client_placeholder()),
                ..PodTls::placeholder(!matches!(
                    t.source,
                    crate::validate::TlsSource::UserCertificate(_)
                ))
            }),
        };
        let ca_secret = children::secrets::ca_placeholder(&inst);
        for mut value in children::build(&inst, &material).to_values(ca_secret.as_ref()) {
            readable_secret(&mut value);
            docs.push(serde_yaml_ng::to_string(&value).expect("JSON values serialize"));
        }
    }
    if docs.is_empty() {
        return Err(RenderError::Empty);
    }
    Ok(docs.join("---\n"))
}

/// Shows a Secret's placeholders as `stringData`, so they read as placeholders, not base64.
fn readable_secret(value: &mut serde_json::Value) {
    if value["kind"] != "Secret" {
        return;
    }
    let Some(serde_json::Value::Object(data)) =
        value.as_object_mut().and_then(|o| o.remove("data"))
    else {
        return;
    };
    let mut string_data = serde_json::Map::new();
    for (k, v) in data {
        let bytes: k8s_openapi::ByteString =
            serde_json::from_value(v).expect("Secret data is base64");
        string_data.insert(k, String::from_utf8_lossy(&bytes.0).into_owned().into());
    }
    value["stringData"] = serde_json::Value::Object(string_data);
}
