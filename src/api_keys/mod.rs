//! The API keys of an instance: the generated keys ([`keys`]) and their rotation
//! ([`rotation`]).

pub mod keys;
pub mod rotation;

pub use keys::{
    API_KEY, ApiKeys, FINGERPRINT_SALT, KeyPhase, KeyProblem, KeySlot, NEXT_API_KEY,
    READ_ONLY_API_KEY, generate_key, read_key, unsendable,
};
pub use rotation::{
    HANDLED_ANNOTATION, KEYS_FINGERPRINT_ANNOTATION, PHASE_ANNOTATION, ROLLED_OUT_AT_ANNOTATION,
    ROTATE_API_KEY_ANNOTATION,
};
