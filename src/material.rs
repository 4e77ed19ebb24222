//! Secret values: wrapped so they cannot reach a log line, an Event or an error by accident
//! (API keys, token signing keys, private keys). The API keys themselves are in
//! [`crate::api_keys`].

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret string. `Debug` and `Display` print a redaction marker, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The value itself: only for writing it where it belongs (a Secret, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A plain SHA-256 fingerprint: changes whenever the value does. Anyone who sees it can test
    /// guesses of the value offline, so it never goes where the value may not (pod templates
    /// use `ApiKeys::keyed`).
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}
