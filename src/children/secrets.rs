//! Secrets: `<n>-api-key` (generated API keys: created once, never overwritten) and `<n>-tls`
//! (the serving certificate, renewed by the operator).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::meta::{COMPONENT_CREDENTIALS, object_meta};
use crate::material::ApiKeys;
use crate::validate::Instance;

pub fn api_key(inst: &Instance, keys: &ApiKeys) -> Secret {
    Secret {
        metadata: object_meta(inst, inst.api_key_secret_name(), COMPONENT_CREDENTIALS),
        type_: Some("Opaque".to_owned()),
        data: Some(keys.to_data()),
        ..Secret::default()
    }
}

/// `<n>-tls`: `tls.crt`, `tls.key`, `ca.crt`, and the rollover phase annotation, written in one
/// object so material and phase never disagree.
pub fn tls(
    inst: &Instance,
    data: BTreeMap<String, ByteString>,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut metadata = object_meta(
        inst,
        inst.tls_secret_name().expect("TLS is on"),
        COMPONENT_CREDENTIALS,
    );
    metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}
