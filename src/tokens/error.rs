//! The error of the pure token functions.

/// Why a token could not be signed or read. Never carries a token or a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Qdrant treats an empty key as a key (v1.18) or as no authentication (v1.19): never sign
    /// with one.
    #[error("the API key is empty: refusing to sign a token with it")]
    EmptyKey,
    #[error("the token claims are out of range: {0}")]
    Claims(&'static str),
    #[error("signing the token failed: {0}")]
    Sign(&'static str),
    #[error("the token does not verify: {0}")]
    Verify(&'static str),
}
