//! ServiceAccount `<n>`: the pods' identity, with no API token mounted.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::meta::{COMPONENT_DATABASE, object_meta};
use crate::validate::Instance;

pub fn build(inst: &Instance) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(inst, &inst.name, COMPONENT_DATABASE),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
