//! The certificate lifetimes of an instance as the pure `tls` functions take them: from the
//! durations validation resolved (the instance's TLS settings) to a [`TlsPolicy`].

use std::time::Duration;

use k8s_openapi::jiff::SignedDuration;

use super::rotation::TlsPolicy;

/// `d` as a signed duration (saturating: a duration beyond the range is the longest one).
pub fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl TlsPolicy {
    /// The policy of the lifetimes in an instance's spec, defaults already resolved:
    /// `spec.tls.certificateLifetime`, `spec.tls.renewBefore` and `spec.tls.caLifetime`.
    pub fn from_lifetimes(
        certificate_lifetime: Duration,
        renew_before: Duration,
        ca_lifetime: Duration,
    ) -> Self {
        TlsPolicy {
            certificate_lifetime: signed(certificate_lifetime),
            renew_before: Some(signed(renew_before)),
            ca_lifetime: signed(ca_lifetime),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_become_the_policy_and_overflow_saturates() {
        let policy = TlsPolicy::from_lifetimes(
            Duration::from_secs(3600),
            Duration::from_secs(600),
            Duration::MAX,
        );
        assert_eq!(policy.certificate_lifetime, SignedDuration::from_secs(3600));
        assert_eq!(policy.renew_before, Some(SignedDuration::from_secs(600)));
        assert_eq!(policy.ca_lifetime, SignedDuration::MAX);
    }
}
