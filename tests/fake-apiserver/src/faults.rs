//! Fault injection (latency, error responses, dropped watches) with a seeded RNG, and the request
//! counters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to break, adjustable at run time ([`crate::FakeApiServer::set_faults`] or
/// `PUT /debug/faults` with this as JSON). Applies to resource requests only: discovery,
/// `/version` and `/debug/*` are never slowed down or failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// Seed of the RNG that decides which requests fail and which watch events end a stream.
    /// Setting faults reseeds it, so the same request sequence fails the same way every run.
    pub seed: u64,
    /// Added to every matching request before it is served.
    pub latency_ms: u64,
    /// Probability (0..=1) that a matching request is answered with an error instead.
    pub error_rate: f64,
    /// Status codes to pick from (uniformly) for injected errors; empty means `[500]`.
    /// 409 → Conflict, 429 → TooManyRequests, anything else → InternalError-like.
    pub error_codes: Vec<u16>,
    /// `Retry-After` seconds sent with injected 429s (kube-rs honours it); none by default.
    pub retry_after_seconds: Option<u64>,
    /// Only requests with these verbs (get, list, watch, create, update, patch, delete,
    /// deletecollection) are affected; empty means all.
    pub verbs: Vec<String>,
    /// Only requests for these resources (as counted: `secrets`, `statefulsets.apps`,
    /// `secureqdrants.secureqdrant.dev/status`, ...) are affected; empty means all.
    pub resources: Vec<String>,
    /// Close every watch stream after it has sent this many events (bookmarks not counted).
    pub watch_drop_after_events: Option<u64>,
    /// Probability (0..=1) that a watch stream is closed after each event it sends.
    pub watch_drop_rate: f64,
}

impl Faults {
    pub fn applies_to(&self, verb: &str, resource: &str) -> bool {
        (self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb))
            && (self.resources.is_empty() || self.resources.iter().any(|r| r == resource))
    }
}

/// SplitMix64: small, seedable, good enough to pick faults deterministically.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

/// A snapshot of what the server was asked and what it broke.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// (verb, resource) → requests received, injected errors included. `resource` is the plural,
    /// `.group` for non-core groups, `/status` for the subresource: `secrets`,
    /// `statefulsets.apps`, `secureqdrants.secureqdrant.dev/status`.
    pub requests: BTreeMap<(String, String), u64>,
    /// (verb, resource) → requests answered with an injected error.
    pub injected_errors: BTreeMap<(String, String), u64>,
    /// Watch streams closed by fault injection.
    pub dropped_watches: u64,
}

impl Counters {
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn errors(&self, verb: &str, resource: &str) -> u64 {
        self.injected_errors
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.injected_errors.values().sum()
    }

    /// Requests with this verb, over all resources.
    pub fn verb(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes (create, update, patch, delete, deletecollection), over all resources.
    pub fn writes(&self) -> u64 {
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .map(|v| self.verb(v))
            .sum()
    }

    /// The JSON served at `/debug/requests`.
    pub fn to_json(&self) -> serde_json::Value {
        let rows = |m: &BTreeMap<(String, String), u64>| {
            m.iter()
                .map(|((verb, resource), count)| {
                    serde_json::json!({"verb": verb, "resource": resource, "count": count})
                })
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "total": self.total(),
            "requests": rows(&self.requests),
            "injectedErrors": rows(&self.injected_errors),
            "droppedWatches": self.dropped_watches,
        })
    }
}

/// Duration of the configured latency.
pub fn latency(f: &Faults) -> Option<Duration> {
    (f.latency_ms > 0).then(|| Duration::from_millis(f.latency_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut r = Rng::new(1);
        let hits = (0..10_000).filter(|_| r.chance(0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
