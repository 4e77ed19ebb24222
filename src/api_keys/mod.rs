//! The API keys of an instance: the generated keys ([`keys`]), the phase of a key rotation
//! ([`phase`]), the rotation itself ([`rotation`]: its steps and what each writes), what the
//! user hears when keys are generated into `<n>-api-key` ([`secret`]) and the key a token is
//! signed with ([`signing`]). All pure apart from the OS random source; the pipeline step that
//! reads and writes the Secrets is `reconcile::credentials`.

pub mod keys;
pub mod phase;
pub mod rotation;
pub mod secret;
pub mod signing;

pub use keys::{
    API_KEY, ApiKeys, FINGERPRINT_SALT, KeyFacts, KeyProblem, KeySlot, NEXT_API_KEY,
    READ_ONLY_API_KEY, generate_key, read_key, unsendable,
};
pub use phase::{PHASE_ANNOTATION, Phase};
pub use rotation::{
    HANDLED_ANNOTATION, KEYS_FINGERPRINT_ANNOTATION, ROLLED_OUT_AT_ANNOTATION,
    ROTATE_API_KEY_ANNOTATION,
};
pub use signing::signing_key;
