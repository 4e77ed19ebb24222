//! Qdrant access tokens: the pure part of `QdrantAccessToken`. No Kubernetes I/O and no clock:
//! the caller passes `now`, the existing Secret and the instance's API key.
//!
//! The pipeline the controller runs for one `QdrantAccessToken`:
//! 1. [`validate_token_spec`]: the custom resource and facts about its SecureQdrant
//!    ([`InstanceInfo`]) become a [`ValidToken`], or a list of problems naming fields.
//! 2. [`plan_token`]: from the existing token Secret, the API key and `now`, decide whether to
//!    sign a new token, when it expires, when it is renewed and when to look again.
//! 3. [`mint`] (only when the plan says so) signs [`ValidToken::claims`] with the API key.
//! 4. [`token_secret`] builds the Secret (token, URLs, CA) with [`token_annotations`], which let
//!    the next plan notice a changed spec or a rotated key without decoding anything.
//! 5. [`token_status`] fills the status.
//!
//! Tokens and keys only travel as [`SecretValue`](crate::material::SecretValue), whose `Debug`
//! is redacted; no error of this module carries either.

mod claims;
mod error;
mod plan;
mod secret;
mod sign;
mod spec;

pub use claims::{Access, Claims, CollectionClaim, MatchValue, PayloadMatchClaim, ValueExists};
pub use error::TokenError;
pub use plan::{
    CLAIMS_HASH_ANNOTATION, KEY_FINGERPRINT_ANNOTATION, MintReason, TokenPlan, key_fingerprint,
    plan_token, token_annotations, token_status,
};
pub use secret::{
    CA_CRT_KEY, CLIENT_CRT_KEY, CLIENT_KEY_KEY, COMPONENT_ACCESS_TOKEN, GRPC_URL_KEY, TOKEN_KEY,
    TokenEndpoints, URL_KEY, controlled_by, read_client_certificate, read_token, token_secret,
};
pub use sign::{LEEWAY_SECONDS, mint, verify};
pub use spec::{InstanceInfo, ValidToken, is_qdrant_json_path, validate_token_spec};
