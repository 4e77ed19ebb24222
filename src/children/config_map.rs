//! ConfigMap `<n>-config`: Qdrant's config file. Never holds a secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta::{COMPONENT_DATABASE, object_meta};
use crate::qdrant::CONFIG_FILE;
use crate::validate::Instance;

/// Key present (`"true"`) once the cluster has formed ([`Instance::cluster_formed`]). The pods
/// read it as an optional env var at each container start, so writing it rolls nothing (it is
/// not part of the restart hash, which covers the config file only).
pub const CLUSTER_FORMED_KEY: &str = "cluster-formed";

pub fn build(inst: &Instance, config_yaml: &str) -> ConfigMap {
    let mut data = BTreeMap::from([(CONFIG_FILE.to_owned(), config_yaml.to_owned())]);
    if inst.cluster_formed {
        data.insert(CLUSTER_FORMED_KEY.to_owned(), "true".to_owned());
    }
    ConfigMap {
        metadata: object_meta(inst, inst.config_map_name(), COMPONENT_DATABASE),
        data: Some(data),
        ..ConfigMap::default()
    }
}
