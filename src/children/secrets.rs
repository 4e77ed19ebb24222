//! Secret `<n>-api-key`: the generated API keys. Created once, never overwritten.

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
