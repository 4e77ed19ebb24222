//! Whole-second time arithmetic shared by the TLS modules. X.509 validity has second precision,
//! so every instant is truncated to a second before it is compared with a certificate.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::names::TlsError;

/// How far back a new certificate's NotBefore is set, so a peer whose clock lags a little
/// already accepts it.
pub const BACKDATE: SignedDuration = SignedDuration::from_mins(5);

/// `ts` truncated to a whole second.
pub fn whole_second(ts: Timestamp) -> Timestamp {
    from_second(ts.as_second())
}

/// `ts + d`, saturating at the ends of the representable range, in whole seconds.
pub fn add(ts: Timestamp, d: SignedDuration) -> Timestamp {
    from_second(ts.as_second().saturating_add(d.as_secs()))
}

/// `ts - d`, saturating, in whole seconds.
pub fn sub(ts: Timestamp, d: SignedDuration) -> Timestamp {
    from_second(ts.as_second().saturating_sub(d.as_secs()))
}

/// A std duration (as validation gives lifetimes) as a jiff one, saturating at
/// [`SignedDuration::MAX`].
pub fn signed(d: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn from_second(s: i64) -> Timestamp {
    let s = s.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    Timestamp::from_second(s).unwrap_or(Timestamp::MAX)
}

/// A jiff instant as the `time` type rcgen wants.
pub fn to_offset(ts: Timestamp) -> Result<::time::OffsetDateTime, TlsError> {
    ::time::OffsetDateTime::from_unix_timestamp(ts.as_second())
        .map_err(|e| TlsError::Issue(format!("time {ts} out of range: {e}")))
}

/// A positive lifetime, or an error naming it.
pub fn positive(lifetime: SignedDuration) -> Result<SignedDuration, TlsError> {
    if lifetime.as_secs() <= 0 {
        return Err(TlsError::BadLifetime(format!("{lifetime:#}")));
    }
    Ok(lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_whole_seconds_and_saturates() {
        let t: Timestamp = "2030-01-01T00:00:00.75Z".parse().unwrap();
        assert_eq!(whole_second(t).to_string(), "2030-01-01T00:00:00Z");
        assert_eq!(
            add(t, SignedDuration::from_hours(1)).to_string(),
            "2030-01-01T01:00:00Z"
        );
        assert_eq!(
            sub(t, SignedDuration::from_mins(5)).to_string(),
            "2029-12-31T23:55:00Z"
        );
        assert_eq!(
            add(t, SignedDuration::MAX).as_second(),
            Timestamp::MAX.as_second()
        );
        assert_eq!(
            sub(t, SignedDuration::MAX).as_second(),
            Timestamp::MIN.as_second()
        );
    }

    #[test]
    fn lifetimes_must_be_positive() {
        assert!(positive(SignedDuration::from_secs(1)).is_ok());
        assert!(matches!(
            positive(SignedDuration::ZERO),
            Err(TlsError::BadLifetime(_))
        ));
        assert!(positive(SignedDuration::from_secs(-5)).is_err());
        assert!(to_offset("2030-01-01T00:00:00Z".parse().unwrap()).is_ok());
    }
}
