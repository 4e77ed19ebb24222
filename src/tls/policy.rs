//! The certificate lifetimes of an instance, from its validated TLS settings, for the pure
//! decisions of [`super::renewal`] and [`super::client`].
//!
//! Kept apart from `mod.rs` and `renewal.rs` (which validation uses for the defaults) so that
//! the TLS domain reads the validated settings without an import cycle.

use super::renewal::TlsPolicy;
use super::time::signed;
use crate::validate::TlsSettings;

/// The certificate lifetimes of an instance's TLS settings (defaults already resolved by
/// validation).
pub fn policy(settings: &TlsSettings) -> TlsPolicy {
    TlsPolicy {
        certificate_lifetime: signed(settings.certificate_lifetime),
        renew_before: Some(signed(settings.renew_before)),
        ca_lifetime: signed(settings.ca_lifetime),
    }
}
