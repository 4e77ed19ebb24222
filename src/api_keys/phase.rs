//! The phase of an API-key rotation: the ONE model of it (the roles `api-key` and
//! `next-api-key` play for Qdrant), recorded on `<n>-api-key` as [`PHASE_ANNOTATION`] and
//! parsed from it in one place, [`Phase::recorded`].

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

/// Annotation on `<n>-api-key`: the rotation phase ([`Phase::as_str`]), absent when none runs.
pub const PHASE_ANNOTATION: &str = "secureqdrant.dev/api-key-rotation-phase";

/// The roles of `api-key` and `next-api-key` during a key rotation (see
/// [`super::rotation`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Phases 1-2: `api_key` from `api-key`, `alt_api_key` from `next-api-key` (the new key).
    #[default]
    Introduced,
    /// Phase 3: `api_key` from `next-api-key` (the new key), `alt_api_key` from `api-key`.
    Swapped,
    /// Phase 4: `api_key` from `api-key` (which now holds the new key) alone.
    Promoted,
}

impl Phase {
    /// The value recorded in [`PHASE_ANNOTATION`].
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Introduced => "Introduced",
            Phase::Swapped => "Swapped",
            Phase::Promoted => "Promoted",
        }
    }

    /// The phase recorded on the API-key Secret; None when no rotation runs. A value this
    /// operator does not know counts as `Introduced` (a rotation runs, and the keys the Secret
    /// holds tell the same).
    pub fn recorded(secret: &Secret) -> Option<Phase> {
        Some(match secret.annotations().get(PHASE_ANNOTATION)?.as_str() {
            "Swapped" => Phase::Swapped,
            "Promoted" => Phase::Promoted,
            _ => Phase::Introduced,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn with_phase(value: Option<&str>) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.annotations =
            value.map(|v| BTreeMap::from([(PHASE_ANNOTATION.to_owned(), v.to_owned())]));
        secret
    }

    #[test]
    fn the_recorded_phase_reads_back_what_is_written() {
        assert_eq!(Phase::recorded(&with_phase(None)), None);
        for phase in [Phase::Introduced, Phase::Swapped, Phase::Promoted] {
            assert_eq!(
                Phase::recorded(&with_phase(Some(phase.as_str()))),
                Some(phase)
            );
        }
        // Lost or garbled: a rotation runs; the keys tell the phase apart.
        assert_eq!(
            Phase::recorded(&with_phase(Some("swapped"))),
            Some(Phase::Introduced)
        );
        assert_eq!(
            Phase::recorded(&with_phase(Some(""))),
            Some(Phase::Introduced)
        );
    }
}
