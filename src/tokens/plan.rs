//! When to sign a new token. Pure: the caller passes `now`, the existing Secret and the key.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::secret::read_token;
use super::sign::verify;
use super::spec::ValidToken;
use crate::crd::QdrantAccessTokenStatus;
use crate::material::SecretValue;

/// Token Secret annotation: [`ValidToken::claims_hash`] of the spec the token was signed for.
pub const CLAIMS_HASH_ANNOTATION: &str = "secureqdrant.dev/token-claims-hash";
/// Token Secret annotation: [`key_fingerprint`] of the API key that signed the token.
pub const KEY_FINGERPRINT_ANNOTATION: &str = "secureqdrant.dev/token-key-fingerprint";

/// Why a new token is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// No Secret, or no readable `token` in it.
    Missing,
    /// The API key changed since the token was signed (a rotated key invalidates every token).
    KeyChanged,
    /// The spec (access, valueExists, lifetime) changed since the token was signed.
    SpecChanged,
    /// The token does not verify under the current key, or its claims are not exactly the
    /// spec's.
    Unverifiable,
    /// The token has expired.
    Expired,
    /// The renewal time has come.
    RenewalDue,
    /// The token expires later than `now + lifetime` (the clock went back, or the Secret was
    /// edited): it would outlive what the spec allows.
    ExpiryTooFar,
}

impl MintReason {
    /// A short reason for an Event (`TokenIssued: ...`).
    pub fn describe(self) -> &'static str {
        match self {
            MintReason::Missing => "the token Secret had no token",
            MintReason::KeyChanged => "the instance's API key changed",
            MintReason::SpecChanged => "the access, valueExists or lifetime changed",
            MintReason::Unverifiable => "the stored token does not verify under the API key",
            MintReason::Expired => "the token had expired",
            MintReason::RenewalDue => "the token reached its renewal time",
            MintReason::ExpiryTooFar => "the token expired later than its lifetime allows",
        }
    }
}

/// The decision for one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPlan {
    /// `Some(reason)`: sign `token.claims(expires_at)` now and store it. `None`: keep the
    /// token in the Secret.
    pub mint: Option<MintReason>,
    /// `exp` of the token the Secret holds after this reconcile.
    pub expires_at: Timestamp,
    /// When that token is renewed ([`ValidToken::renewal_time`]).
    pub renewal_time: Timestamp,
    /// Reconcile again after this long: exactly at `renewal_time` (at least a second).
    pub requeue_after: StdDuration,
}

impl TokenPlan {
    /// Whether a new token must be signed now.
    pub fn mint_now(&self) -> bool {
        self.mint.is_some()
    }
}

/// Decides whether to sign a new token at `now`.
///
/// A new token is signed when the Secret is missing or holds no token; when its annotations
/// show another API key ([`KEY_FINGERPRINT_ANNOTATION`]) or another spec
/// ([`CLAIMS_HASH_ANNOTATION`]); when the token does not verify under `api_key` or its claims
/// are not exactly the spec's; when it has expired, reached its renewal time, or expires later
/// than `now + lifetime`. Otherwise the token is kept.
pub fn plan_token(
    now: Timestamp,
    existing: Option<&Secret>,
    token: &ValidToken,
    api_key: &SecretValue,
) -> TokenPlan {
    let now = whole_second(now);
    match keep(now, existing, token, api_key) {
        Ok(expires_at) => plan(now, None, token, expires_at),
        Err(reason) => plan(now, Some(reason), token, add(now, token.lifetime)),
    }
}

/// The `exp` of the existing token when it can be kept, or why not.
fn keep(
    now: Timestamp,
    existing: Option<&Secret>,
    token: &ValidToken,
    api_key: &SecretValue,
) -> Result<Timestamp, MintReason> {
    let secret = existing.ok_or(MintReason::Missing)?;
    let current = read_token(secret).ok_or(MintReason::Missing)?;
    let annotation = |key: &str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    if annotation(KEY_FINGERPRINT_ANNOTATION) != Some(key_fingerprint(api_key).as_str()) {
        return Err(MintReason::KeyChanged);
    }
    if annotation(CLAIMS_HASH_ANNOTATION) != Some(token.claims_hash().as_str()) {
        return Err(MintReason::SpecChanged);
    }
    let claims = verify(&current, api_key).map_err(|_| MintReason::Unverifiable)?;
    let expires_at = i64::try_from(claims.exp)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .ok_or(MintReason::Unverifiable)?;
    if claims != token.claims(expires_at) {
        return Err(MintReason::Unverifiable);
    }
    if now >= expires_at {
        return Err(MintReason::Expired);
    }
    if now >= token.renewal_time(expires_at) {
        return Err(MintReason::RenewalDue);
    }
    if expires_at > add(now, token.lifetime) {
        return Err(MintReason::ExpiryTooFar);
    }
    Ok(expires_at)
}

fn plan(
    now: Timestamp,
    mint: Option<MintReason>,
    token: &ValidToken,
    expires_at: Timestamp,
) -> TokenPlan {
    let renewal_time = token.renewal_time(expires_at);
    let wait = now.duration_until(renewal_time).as_secs().max(1);
    TokenPlan {
        mint,
        expires_at,
        renewal_time,
        requeue_after: StdDuration::from_secs(wait.unsigned_abs()),
    }
}

/// Annotations of the token Secret that let the next [`plan_token`] notice a changed spec or a
/// rotated key without decoding the token.
pub fn token_annotations(token: &ValidToken, api_key: &SecretValue) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLAIMS_HASH_ANNOTATION.to_owned(), token.claims_hash()),
        (
            KEY_FINGERPRINT_ANNOTATION.to_owned(),
            key_fingerprint(api_key),
        ),
    ])
}

/// A hash of the API key's SHA-256 fingerprint, domain-separated. It reveals nothing the token
/// in the same Secret does not (both are deterministic functions of the key).
pub fn key_fingerprint(api_key: &SecretValue) -> String {
    let mut h = Sha256::new();
    h.update(b"secureqdrant.dev/token-signing-key/v1\0");
    h.update(api_key.fingerprint());
    hex::encode(&h.finalize()[..16])
}

/// The status fields a plan determines (the caller adds the conditions).
pub fn token_status(token: &ValidToken, plan: &TokenPlan) -> QdrantAccessTokenStatus {
    QdrantAccessTokenStatus {
        observed_generation: token.generation,
        secret_name: Some(token.secret_name.clone()),
        access: Some(token.access_summary()),
        expires_at: Some(Time(plan.expires_at)),
        renewal_time: Some(Time(plan.renewal_time)),
        client_certificate_not_after: None,
        client_certificate_renewal_time: None,
        conditions: Vec::new(),
    }
}

fn whole_second(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

fn add(ts: Timestamp, d: SignedDuration) -> Timestamp {
    ts.saturating_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::crd::GlobalAccess;
    use crate::tokens::{Access, TOKEN_KEY, mint};

    fn valid() -> ValidToken {
        ValidToken {
            name: "frontend".into(),
            namespace: "search".into(),
            owner: OwnerReference::default(),
            generation: Some(1),
            instance: "vectors".into(),
            access: Access::Global(GlobalAccess::Read),
            value_exists: None,
            subject: "search/frontend".into(),
            lifetime: SignedDuration::from_hours(24),
            renew_before: SignedDuration::from_hours(8),
            secret_name: "frontend-qdrant-token".into(),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secret_for(token: &ValidToken, key: &SecretValue, exp: Timestamp) -> Secret {
        let jwt = mint(&token.claims(exp), key).unwrap();
        let mut s = Secret::default();
        s.metadata.annotations = Some(token_annotations(token, key));
        s.data = Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(jwt.expose().as_bytes().to_vec()),
        )]));
        s
    }

    #[test]
    fn fresh_token_is_kept_until_its_renewal_time() {
        let token = valid();
        let key = SecretValue::new("key");
        let issued = t("2030-01-01T00:00:00Z");
        let first = plan_token(issued, None, &token, &key);
        assert_eq!(first.mint, Some(MintReason::Missing));
        assert_eq!(first.expires_at, t("2030-01-02T00:00:00Z"));
        let jitter = token.jitter();
        assert!(jitter <= SignedDuration::from_mins(1));
        assert_eq!(
            first.renewal_time,
            t("2030-01-01T16:00:00Z").checked_sub(jitter).unwrap()
        );
        assert_eq!(
            first.requeue_after,
            StdDuration::from_secs((16 * 3600 - jitter.as_secs()) as u64)
        );

        let secret = secret_for(&token, &key, first.expires_at);
        let before = first
            .renewal_time
            .checked_sub(SignedDuration::from_secs(1))
            .unwrap();
        let kept = plan_token(before, Some(&secret), &token, &key);
        assert_eq!(kept.mint, None);
        assert_eq!(kept.expires_at, first.expires_at);
        assert_eq!(kept.renewal_time, first.renewal_time);
        assert_eq!(kept.requeue_after, StdDuration::from_secs(1));

        let at = plan_token(first.renewal_time, Some(&secret), &token, &key);
        assert_eq!(at.mint, Some(MintReason::RenewalDue));
        assert_eq!(at.expires_at, add(first.renewal_time, token.lifetime));
    }

    #[test]
    fn fractions_of_a_second_are_dropped() {
        let p = plan_token(
            t("2030-01-01T00:00:00.9Z"),
            None,
            &valid(),
            &SecretValue::new("k"),
        );
        assert_eq!(p.expires_at, t("2030-01-02T00:00:00Z"));
    }

    #[test]
    fn jitter_is_deterministic_small_and_varies_by_name() {
        let a = valid();
        assert_eq!(a.jitter(), valid().jitter());
        let jitters: std::collections::BTreeSet<i64> = (0..50)
            .map(|i| {
                let mut t = valid();
                t.name = format!("t{i}");
                let j = t.jitter().as_secs();
                assert!((0..60).contains(&j), "{j}");
                j
            })
            .collect();
        assert!(jitters.len() > 10, "{jitters:?}");
        let mut short = valid();
        short.renew_before = SignedDuration::from_mins(2);
        for i in 0..50 {
            short.name = format!("t{i}");
            assert!(short.jitter().as_secs() < 12);
        }
    }
}
