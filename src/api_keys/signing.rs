//! The key a token of an instance is signed with (Qdrant checks JWTs against its `api_key` and
//! `alt_api_key`).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::keys::{NEXT_API_KEY, read_key};
use super::phase::Phase;
use super::rotation::{ROLLED_OUT_AT_ANNOTATION, sign_with_next};
use crate::material::SecretValue;

/// The signing key, read from `secret`, the Secret holding Qdrant's full-access key under
/// `key` (`Instance::api_key_ref`): that key; during a rotation of a key the operator generates
/// (`generated`), the new key (`next-api-key`) once every pod accepts it
/// ([`sign_with_next`]). None while the Secret holds no usable key.
pub fn signing_key(secret: &Secret, key: &str, generated: bool) -> Option<SecretValue> {
    let rotated_in = generated
        && sign_with_next(
            true,
            Phase::recorded(secret),
            secret.annotations().contains_key(ROLLED_OUT_AT_ANNOTATION),
        );
    if let Some(next) = rotated_in
        .then(|| read_key(secret, NEXT_API_KEY).ok())
        .flatten()
    {
        return Some(next);
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .filter(|v| !v.trim().is_empty())
        .map(SecretValue::new)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::api_keys::keys::API_KEY;
    use crate::api_keys::phase::PHASE_ANNOTATION;

    const OLD: &str = "old-key-old-key-old-key-old-key-old-key-old";
    const NEW: &str = "new-key-new-key-new-key-new-key-new-key-new";

    fn secret(next: Option<&str>, annotations: &[(&str, &str)]) -> Secret {
        let mut data = BTreeMap::from([(API_KEY.to_owned(), ByteString(OLD.into()))]);
        if let Some(next) = next {
            data.insert(NEXT_API_KEY.to_owned(), ByteString(next.into()));
        }
        let mut s = Secret {
            data: Some(data),
            ..Secret::default()
        };
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        s
    }

    fn key(s: &Secret, generated: bool) -> Option<String> {
        signing_key(s, API_KEY, generated).map(|k| k.expose().to_owned())
    }

    #[test]
    fn tokens_are_signed_with_the_new_key_once_every_pod_accepts_it() {
        let rolled_out = (ROLLED_OUT_AT_ANNOTATION, "2026-11-22T00:00:00Z");
        let introduced = (PHASE_ANNOTATION, Phase::Introduced.as_str());
        assert_eq!(key(&secret(None, &[]), true).as_deref(), Some(OLD));
        assert_eq!(
            key(&secret(Some(NEW), &[introduced]), true).as_deref(),
            Some(OLD),
            "the pods do not all accept the new key yet"
        );
        assert_eq!(
            key(&secret(Some(NEW), &[introduced, rolled_out]), true).as_deref(),
            Some(NEW)
        );
        for later in [Phase::Swapped, Phase::Promoted] {
            let s = secret(Some(NEW), &[(PHASE_ANNOTATION, later.as_str())]);
            assert_eq!(key(&s, true).as_deref(), Some(NEW), "{later:?}");
        }
        // A next key that is unusable (edited by hand) is not used.
        let s = secret(Some("new key"), &[introduced, rolled_out]);
        assert_eq!(key(&s, true).as_deref(), Some(OLD));
    }

    #[test]
    fn a_users_key_signs_whatever_its_secret_says_about_rotations() {
        let s = secret(Some(NEW), &[(PHASE_ANNOTATION, Phase::Swapped.as_str())]);
        assert_eq!(key(&s, false).as_deref(), Some(OLD));
        let mut empty = secret(None, &[]);
        empty.data = Some(BTreeMap::from([(
            API_KEY.to_owned(),
            ByteString(b" ".to_vec()),
        )]));
        assert_eq!(key(&empty, false), None);
        assert_eq!(key(&Secret::default(), true), None);
    }
}
