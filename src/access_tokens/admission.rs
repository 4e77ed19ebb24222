//! Whether a QdrantAccessToken may have a token at all: its spec against the facts about its
//! SecureQdrant ([`validate_token_spec`]) and the operator administrator's policy. Pure.

use super::outcome::{Blocked, blocked};
use crate::crd::{GlobalAccess, QdrantAccessToken};
use crate::settings::Settings;
use crate::tokens::{InstanceInfo, ValidToken, validate_token_spec};
use crate::validate::describe;

/// The validated token, or why it gets none. A refusal with `no_token` set also removes the
/// token Secret the QdrantAccessToken controls: a token that may no longer be issued is not
/// kept around.
pub(super) fn admit(
    qat: &QdrantAccessToken,
    info: &InstanceInfo,
    settings: &Settings,
) -> Result<ValidToken, Blocked> {
    match validate_token_spec(qat, info) {
        // Before anything else: no manage token is refreshed once the administrator forbids
        // them, whatever the SecureQdrant allows.
        _ if manage_token_forbidden(qat, settings) => Err(Blocked {
            no_token: true,
            ..blocked(
                "ManageTokensForbidden",
                "global manage access (spec.access.global: m) is forbidden in this cluster by \
                 the operator's administrator (--allow-global-manage-tokens=false, chart \
                 value policy.allowGlobalManageTokens): use spec.access.collections or \
                 global r; the token Secret is removed"
                    .to_owned(),
                None,
            )
        }),
        Err(problems) if info.exists && has_reserved_secret_name(qat) => {
            // A token created before such names were refused: its Secret is kept as it is (and
            // no longer renewed), the condition names the fix.
            Err(blocked(
                "InvalidSpec",
                format!(
                    "{}; the existing token Secret is kept but no longer renewed: recreate the \
                     QdrantAccessToken with another spec.secretName",
                    describe(&problems)
                ),
                None,
            ))
        }
        Err(problems) => {
            // A missing SecureQdrant is reported as such (creating it triggers this token).
            let reason = if info.exists {
                "InvalidSpec"
            } else {
                "InstanceMissing"
            };
            Err(Blocked {
                no_token: true,
                ..blocked(reason, describe(&problems), None)
            })
        }
        Ok(valid) => Ok(valid),
    }
}

/// Whether `qat` asks for global manage access while the operator's settings forbid it
/// cluster-wide (`--allow-global-manage-tokens=false`).
pub fn manage_token_forbidden(qat: &QdrantAccessToken, settings: &Settings) -> bool {
    !settings.allow_global_manage_tokens && qat.spec.access.global == Some(GlobalAccess::Manage)
}

/// Whether `spec.secretName` is the name of one of an instance's own Secrets.
fn has_reserved_secret_name(qat: &QdrantAccessToken) -> bool {
    qat.spec
        .secret_name
        .as_deref()
        .and_then(crate::children::meta::instance_of_secret_name)
        .is_some()
}
