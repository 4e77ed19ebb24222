//! The names the TLS domain shares with its callers (Secret keys, annotations) and its error type:
//! a leaf of the module, so every file of `tls/` can use them without importing `tls/mod.rs`.

/// Secret key of a certificate chain (leaf first) in `<n>-ca` and `<n>-tls`.
pub const TLS_CRT: &str = "tls.crt";
/// Secret key of the PKCS#8 PEM private key in `<n>-ca` and `<n>-tls`.
pub const TLS_KEY: &str = "tls.key";
/// Secret key of the trust bundle (one or more CA certificates) in `<n>-tls`.
pub const CA_CRT: &str = "ca.crt";

/// Annotation on `<n>-tls`: the CA key rollover phase ([`Phase`]); absent when none is running.
pub const ROLLOVER_PHASE_ANNOTATION: &str = "secureqdrant.dev/ca-rollover-phase";
/// Annotation on the SecureQdrant: set it to any new value to ask for a new CA key.
pub const ROTATE_CA_ANNOTATION: &str = "secureqdrant.dev/rotate-ca";
/// Annotation on `<n>-ca`: the value of [`ROTATE_CA_ANNOTATION`] that produced the current key,
/// so one request replaces the key once.
pub const CA_ROTATION_HANDLED_ANNOTATION: &str = "secureqdrant.dev/ca-rotation-handled";
/// Pod-template annotation carrying [`PublishedTls::fingerprint`].
pub const TLS_FINGERPRINT_ANNOTATION: &str = "secureqdrant.dev/tls-fingerprint";

/// What went wrong with certificate material. Messages never include key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("Secret key {0:?} is missing")]
    MissingKey(&'static str),
    #[error("Secret key {0:?} is not UTF-8 PEM")]
    NotUtf8(&'static str),
    #[error("no PEM CERTIFICATE block found")]
    NoCertificate,
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error(
        "the private key cannot be read ({0}): it must be an unencrypted PKCS#8 PEM \
         (\"BEGIN PRIVATE KEY\") ECDSA P-256/P-384, RSA or Ed25519 key; convert other formats \
         with `openssl pkcs8 -topk8 -nocrypt`"
    )]
    BadKey(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the CA certificate is not a CA (basicConstraints cA is not set)")]
    NotCa,
    #[error("the CA certificate expired at {0}")]
    CaExpired(String),
    #[error("invalid DNS name {0:?} for a certificate")]
    BadDnsName(String),
    #[error("a renewed CA must keep subject and key identifier, and they changed")]
    RenewalChangedIdentity,
    #[error("the lifetime {0} is not positive")]
    BadLifetime(String),
    #[error("issuing a certificate failed: {0}")]
    Issue(String),
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    #[error(
        "the certificate has no clientAuth extended key usage, which {0} needs: issue it with \
         the usages server auth and client auth (cert-manager: usages [server auth, client auth])"
    )]
    NoClientAuth(&'static str),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Issue(e.to_string())
    }
}

impl From<getrandom::Error> for TlsError {
    fn from(e: getrandom::Error) -> Self {
        TlsError::Random(e.to_string())
    }
}
