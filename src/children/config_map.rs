//! ConfigMap `<n>-config`: Qdrant's config file. Never holds a secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta::{COMPONENT_DATABASE, object_meta};
use crate::qdrant::CONFIG_FILE;
use crate::validate::Instance;

pub fn build(inst: &Instance, config_yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(inst, inst.config_map_name(), COMPONENT_DATABASE),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            config_yaml.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}
