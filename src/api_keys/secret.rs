//! The operator's `<n>-api-key` Secret: what to tell the user when the operator generates keys
//! into it (created, or completed after a key went missing).

use kube::runtime::events::EventType;

use super::keys::{FINGERPRINT_SALT, KeyProblem};
use crate::events::Notice;

/// The notice for `<n>-api-key` (`name`) created with the keys `wanted`. `created_before`: the
/// operator created it before (a missing one was deleted, so new keys change credentials).
pub fn created_notice(name: &str, wanted: &[&'static str], created_before: bool) -> Notice {
    if wanted.iter().all(|k| *k == FINGERPRINT_SALT) {
        Notice {
            type_: EventType::Normal,
            reason: "FingerprintSaltGenerated",
            note: format!(
                "generated the fingerprint salt in Secret {name} (it keys the hashes \
                 of the API keys on the pod template)"
            ),
        }
    } else if created_before {
        Notice {
            type_: EventType::Warning,
            reason: "CredentialsChanged",
            note: format!(
                "Secret {name} was deleted: generated new API keys; pods restart and \
                 clients need the new keys"
            ),
        }
    } else {
        Notice {
            type_: EventType::Normal,
            reason: "CredentialsGenerated",
            note: format!("generated API keys in Secret {name}"),
        }
    }
}

/// The notice for `<n>-api-key` (`name`) completed with generated replacements of the keys
/// `replaced` (each with what was wrong with it; never empty).
pub fn completed_notice(name: &str, replaced: &[(&'static str, KeyProblem)]) -> Notice {
    // A Secret written before the salt existed (an upgrade) gets one: the pods roll once.
    if replaced.iter().all(|(k, _)| *k == FINGERPRINT_SALT) {
        return Notice {
            type_: EventType::Normal,
            reason: "FingerprintSaltAdded",
            note: format!(
                "added the fingerprint salt to Secret {name}: the hashes of the API keys on \
                 the pod template are now keyed with it, so the pods restart once"
            ),
        };
    }
    let what = replaced
        .iter()
        .map(|(_, p)| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Notice {
        type_: EventType::Warning,
        reason: "CredentialsChanged",
        note: format!("Secret {name}: {what}; generated a replacement, pods restart"),
    }
}
