//! Signing and verifying tokens: HS256 over the API key's raw UTF-8 bytes, as Qdrant does.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::claims::Claims;
use super::error::TokenError;
use crate::material::SecretValue;

/// Qdrant's leeway on `exp`, in seconds: a token is still accepted this long after it expired.
pub const LEEWAY_SECONDS: u64 = 30;

/// Signs `claims` with the instance's API key (HS256, the key's raw UTF-8 bytes).
pub fn mint(claims: &Claims, api_key: &SecretValue) -> Result<SecretValue, TokenError> {
    if api_key.expose().is_empty() {
        return Err(TokenError::EmptyKey);
    }
    if claims.exp == 0 || i64::try_from(claims.exp).is_err() {
        return Err(TokenError::Claims("exp must be a positive Unix time"));
    }
    let key = EncodingKey::from_secret(api_key.expose().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .map(SecretValue::new)
        .map_err(|e| TokenError::Sign(reason(e.kind())))
}

/// Checks a token's signature (HS256 only) under `api_key` and returns its claims. Expiry is
/// NOT checked here: [`super::plan_token`] compares `exp` with its own `now`.
pub fn verify(token: &SecretValue, api_key: &SecretValue) -> Result<Claims, TokenError> {
    if api_key.expose().is_empty() {
        return Err(TokenError::EmptyKey);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(api_key.expose().as_bytes());
    jsonwebtoken::decode::<Claims>(token.expose(), &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| TokenError::Verify(reason(e.kind())))
}

/// A fixed description of a jsonwebtoken error: its own messages may quote parts of the token.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not match the key",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "it is not signed with HS256"
        }
        ErrorKind::ExpiredSignature => "it has expired",
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            "a claim is missing or malformed"
        }
        ErrorKind::Json(_) => "its claims are not the ones the operator writes",
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "it is not a well-formed JWT"
        }
        ErrorKind::InvalidKeyFormat => "the key cannot be used for HS256",
        _ => "it was rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GlobalAccess;
    use crate::tokens::Access;

    fn claims(exp: u64) -> Claims {
        Claims {
            exp,
            access: Access::Global(GlobalAccess::Read),
            value_exists: None,
            subject: Some("ns/t".into()),
        }
    }

    #[test]
    fn round_trips_under_the_same_key_only() {
        let key = SecretValue::new("k1");
        let token = mint(&claims(4_000_000_000), &key).unwrap();
        assert_eq!(verify(&token, &key).unwrap(), claims(4_000_000_000));
        assert_eq!(
            verify(&token, &SecretValue::new("k2")),
            Err(TokenError::Verify("the signature does not match the key"))
        );
        assert_eq!(
            verify(&SecretValue::new("not.a.jwt"), &key),
            Err(TokenError::Verify("it is not a well-formed JWT"))
        );
    }

    #[test]
    fn refuses_empty_keys_and_unbounded_expiry() {
        assert_eq!(
            mint(&claims(10), &SecretValue::new("")),
            Err(TokenError::EmptyKey)
        );
        assert!(matches!(
            mint(&claims(0), &SecretValue::new("k")),
            Err(TokenError::Claims(_))
        ));
        assert!(matches!(
            mint(&claims(u64::MAX), &SecretValue::new("k")),
            Err(TokenError::Claims(_))
        ));
    }

    #[test]
    fn expired_tokens_still_verify_their_signature() {
        let key = SecretValue::new("k");
        let token = mint(&claims(1), &key).unwrap();
        assert_eq!(verify(&token, &key).unwrap().exp, 1);
    }

    #[test]
    fn other_algorithms_are_refused() {
        let key = SecretValue::new("k");
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(4_000_000_000),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(
            verify(&SecretValue::new(token), &key),
            Err(TokenError::Verify("it is not signed with HS256"))
        );
    }
}
