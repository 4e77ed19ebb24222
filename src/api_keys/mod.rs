//! The API keys of an instance: the generated keys ([`keys`]) and their rotation
//! ([`rotation`]).

pub mod keys;
pub mod rotation;
