//! Prometheus metrics (prometheus-client, OpenMetrics text format at `/metrics`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `secure_qdrant_reconciles_total` | counter | `controller` |
//! | `secure_qdrant_reconcile_failures_total` | counter | `controller`, `step` ([`Step::label`]), `error` ([`Error::metric_label`]) |
//! | `secure_qdrant_reconcile_duration_seconds` | histogram | `controller` |
//! | `secure_qdrant_certificate_expiry_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_certificate_renewal_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_ca_expiry_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_ca_renewal_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_token_expiry_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_token_renewal_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_rotation_phase_since_timestamp_seconds` | gauge | `namespace`, `name`, `rotation`, `phase` |
//! | `secure_qdrant_leader` | gauge | |
//!
//! `controller` is `secureqdrant` or `qdrantaccesstoken`. The expiry and renewal gauges are Unix
//! times (seconds) read from the status the operator just computed (`status.certificate.notAfter`,
//! `.renewalTime` and `.caNotAfter` of a SecureQdrant with TLS, `status.expiresAt` and
//! `.renewalTime` of a QdrantAccessToken); the CA renewal time exists only for a CA the operator
//! generated (a CA you bring is renewed by you). Their series are removed when the object is
//! deleted, or, for the certificate and CA, when TLS is turned off.
//!
//! `secure_qdrant_rotation_phase_since_timestamp_seconds` has one series per SecureQdrant while an
//! API-key rotation (`rotation="api-key"`, phases `Introduced`, `GracePeriod`, `Swapped`,
//! `Promoted`) or a CA key rollover (`rotation="ca"`, phases `TrustBoth`, `SignWithNew`,
//! `DropOld`) runs: the Unix time at which this process first saw the instance in that phase. A
//! restarted operator starts counting again. `secure_qdrant_leader` is 1 while this replica runs
//! the controllers (leader election off, or this replica holds the Lease), 0 as a standby.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::health::Role;
use crate::crd::{QdrantAccessToken, QdrantAccessTokenStatus, SecureQdrant, SecureQdrantStatus};
use crate::error::{Error, Step};

/// `rotation` label of an API-key rotation.
pub const API_KEY_ROTATION: &str = "api-key";
/// `rotation` label of a CA key rollover.
pub const CA_ROLLOVER: &str = "ca";

/// `controller` label of the SecureQdrant controller.
pub const SECURE_QDRANT: &str = "secureqdrant";
/// `controller` label of the QdrantAccessToken controller.
pub const ACCESS_TOKEN: &str = "qdrantaccesstoken";

/// Upper bounds of the reconcile duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: &'static str,
    step: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    rotation: &'static str,
    phase: &'static str,
}

/// The phase each running rotation is in, and since when: (namespace, name, rotation) ->
/// (phase, Unix time first seen).
type Phases = HashMap<(String, String, &'static str), (&'static str, i64)>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The operator's metrics. Cheap to clone: every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    certificate_expiry: Family<ObjectLabels, Gauge>,
    certificate_renewal: Family<ObjectLabels, Gauge>,
    ca_expiry: Family<ObjectLabels, Gauge>,
    ca_renewal: Family<ObjectLabels, Gauge>,
    token_expiry: Family<ObjectLabels, Gauge>,
    token_renewal: Family<ObjectLabels, Gauge>,
    phase_since: Family<PhaseLabels, Gauge>,
    phases: Arc<Mutex<Phases>>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics {
            registry: Arc::default(),
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            certificate_expiry: Family::default(),
            certificate_renewal: Family::default(),
            ca_expiry: Family::default(),
            ca_renewal: Family::default(),
            token_expiry: Family::default(),
            token_renewal: Family::default(),
            phase_since: Family::default(),
            phases: Arc::default(),
            leader: Gauge::default(),
        };
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        // Both controllers' series exist from the start (at 0), so rates work from the first
        // scrape.
        for controller in [SECURE_QDRANT, ACCESS_TOKEN] {
            let labels = ControllerLabels { controller };
            let _ = metrics.reconciles.get_or_create(&labels);
            let _ = metrics.duration.get_or_create(&labels);
        }
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// Registers every metric, with its name and help, in `registry`.
    fn register(&self, registry: &mut Registry) {
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "secure_qdrant_reconciles",
            "Reconciles started, by controller",
            self.reconciles.clone(),
        );
        registry.register(
            "secure_qdrant_reconcile_failures",
            "Reconciles that failed, by controller, failed step and kind of error",
            self.failures.clone(),
        );
        registry.register(
            "secure_qdrant_reconcile_duration_seconds",
            "How long reconciles take, by controller",
            self.duration.clone(),
        );
        registry.register(
            "secure_qdrant_certificate_expiry_timestamp_seconds",
            "When the serving certificate of a SecureQdrant expires (Unix time)",
            self.certificate_expiry.clone(),
        );
        registry.register(
            "secure_qdrant_certificate_renewal_timestamp_seconds",
            "When the serving certificate of a SecureQdrant is renewed (Unix time)",
            self.certificate_renewal.clone(),
        );
        registry.register(
            "secure_qdrant_ca_expiry_timestamp_seconds",
            "When the CA of a SecureQdrant expires (Unix time)",
            self.ca_expiry.clone(),
        );
        registry.register(
            "secure_qdrant_ca_renewal_timestamp_seconds",
            "When the operator renews the CA it generated for a SecureQdrant (Unix time)",
            self.ca_renewal.clone(),
        );
        registry.register(
            "secure_qdrant_token_expiry_timestamp_seconds",
            "When the token of a QdrantAccessToken expires (Unix time)",
            self.token_expiry.clone(),
        );
        registry.register(
            "secure_qdrant_token_renewal_timestamp_seconds",
            "When the token of a QdrantAccessToken is renewed (Unix time)",
            self.token_renewal.clone(),
        );
        registry.register(
            "secure_qdrant_rotation_phase_since_timestamp_seconds",
            "Since when (Unix time) a running API-key rotation or CA key rollover of a SecureQdrant \
             is in its phase",
            self.phase_since.clone(),
        );
        registry.register(
            "secure_qdrant_leader",
            "1 while this replica runs the controllers, 0 as a standby",
            self.leader.clone(),
        );
    }

    /// Sets `secure_qdrant_leader` from this replica's part in leader election.
    pub fn set_role(&self, role: Role) {
        let leads = matches!(role, Role::Single | Role::Leader);
        self.leader.set(i64::from(leads));
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts one reconcile of `controller` and records how long it took.
    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one failed reconcile of `controller`, labelled with the step that failed and the
    /// kind of error.
    pub fn failed(&self, controller: &'static str, step: Step, error: &Error) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                step: step.label(),
                error: error.metric_label(),
            })
            .inc();
    }

    /// Sets the certificate and CA expiry and renewal times of `sq` from the status just
    /// computed for it (removes the series when the status has no certificate, e.g. TLS off).
    pub fn observe_instance(&self, sq: &SecureQdrant, status: &SecureQdrantStatus) {
        let cert = status.certificate.as_ref();
        let at = |field: Option<&String>| field.and_then(|t| t.parse::<Timestamp>().ok());
        set_or_remove(
            &self.certificate_expiry,
            object(sq),
            at(cert.and_then(|c| c.not_after.as_ref())),
        );
        set_or_remove(
            &self.certificate_renewal,
            object(sq),
            at(cert.and_then(|c| c.renewal_time.as_ref())),
        );
        set_or_remove(
            &self.ca_expiry,
            object(sq),
            at(cert.and_then(|c| c.ca_not_after.as_ref())),
        );
    }

    /// Sets what the reconcile of `sq` learnt about its key material: when the CA the operator
    /// generated is renewed (None: TLS off, or a CA the user brings), and the phase of a running
    /// API-key rotation and CA key rollover (None: none runs).
    pub fn observe_rotations(
        &self,
        sq: &SecureQdrant,
        ca_renewal: Option<Timestamp>,
        api_key_phase: Option<&'static str>,
        ca_phase: Option<&'static str>,
        now: Timestamp,
    ) {
        set_or_remove(&self.ca_renewal, object(sq), ca_renewal);
        let ObjectLabels { namespace, name } = object(sq);
        let mut phases = self.phases.lock().expect("phases lock");
        for (rotation, phase) in [(API_KEY_ROTATION, api_key_phase), (CA_ROLLOVER, ca_phase)] {
            let key = (namespace.clone(), name.clone(), rotation);
            let previous = phases.get(&key).copied();
            if previous.map(|(p, _)| p) == phase {
                continue;
            }
            if let Some((old, _)) = previous {
                self.phase_since
                    .remove(&phase_labels(&namespace, &name, rotation, old));
                phases.remove(&key);
            }
            if let Some(phase) = phase {
                let since = now.as_second();
                self.phase_since
                    .get_or_create(&phase_labels(&namespace, &name, rotation, phase))
                    .set(since);
                phases.insert(key, (phase, since));
            }
        }
    }

    /// Sets the token expiry and renewal time of `qat` from the status just computed for it.
    pub fn observe_token(&self, qat: &QdrantAccessToken, status: &QdrantAccessTokenStatus) {
        let expires_at = status.expires_at.as_ref().map(|Time(t)| *t);
        set_or_remove(&self.token_expiry, object(qat), expires_at);
        let renewal = status.renewal_time.as_ref().map(|Time(t)| *t);
        set_or_remove(&self.token_renewal, object(qat), renewal);
    }

    /// Forgets the per-object series of a deleted object of `controller`'s kind.
    pub fn forget(&self, controller: &str, namespace: &str, name: &str) {
        let families = match controller {
            SECURE_QDRANT => {
                let mut phases = self.phases.lock().expect("phases lock");
                for rotation in [API_KEY_ROTATION, CA_ROLLOVER] {
                    let key = (namespace.to_owned(), name.to_owned(), rotation);
                    if let Some((phase, _)) = phases.remove(&key) {
                        self.phase_since
                            .remove(&phase_labels(namespace, name, rotation, phase));
                    }
                }
                vec![
                    &self.certificate_expiry,
                    &self.certificate_renewal,
                    &self.ca_expiry,
                    &self.ca_renewal,
                ]
            }
            ACCESS_TOKEN => vec![&self.token_expiry, &self.token_renewal],
            _ => return,
        };
        for family in families {
            family.remove(&labels(namespace, name));
        }
    }
}

fn phase_labels(
    namespace: &str,
    name: &str,
    rotation: &'static str,
    phase: &'static str,
) -> PhaseLabels {
    PhaseLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        rotation,
        phase,
    }
}

fn labels(namespace: &str, name: &str) -> ObjectLabels {
    ObjectLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn object<K: ResourceExt>(obj: &K) -> ObjectLabels {
    labels(&obj.namespace().unwrap_or_default(), &obj.name_any())
}

fn set_or_remove(
    family: &Family<ObjectLabels, Gauge>,
    labels: ObjectLabels,
    at: Option<Timestamp>,
) {
    match at {
        Some(t) => {
            family.get_or_create(&labels).set(t.as_second());
        }
        None => {
            family.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CertificateStatus, QdrantAccessTokenSpec, SecureQdrantSpec};

    fn instance(ns: &str, name: &str) -> SecureQdrant {
        let spec: SecureQdrantSpec = serde_json::from_value(serde_json::json!({})).expect("spec");
        let mut sq = SecureQdrant::new(name, spec);
        sq.metadata.namespace = Some(ns.to_owned());
        sq
    }

    fn with_cert(not_after: &str) -> SecureQdrantStatus {
        SecureQdrantStatus {
            certificate: Some(CertificateStatus {
                not_after: Some(not_after.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The value of the series of `metric` whose labels include `labels`, from the text format.
    fn sample(text: &str, metric: &str, labels: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    }

    #[test]
    fn counts_reconciles_failures_and_durations_by_controller() {
        let m = Metrics::new();
        m.reconciled(SECURE_QDRANT, Duration::from_millis(30));
        m.reconciled(SECURE_QDRANT, Duration::from_millis(70));
        m.reconciled(ACCESS_TOKEN, Duration::from_millis(1));
        m.failed(SECURE_QDRANT, Step::Cache, &Error::CacheNotReady);
        let text = m.encode();
        let sq = r#"controller="secureqdrant""#;
        assert_eq!(
            sample(&text, "secure_qdrant_reconciles_total", sq).as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "secure_qdrant_reconciles_total",
                r#"controller="qdrantaccesstoken""#
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "secure_qdrant_reconcile_failures_total",
                r#"controller="secureqdrant",step="cache",error="cache""#
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "secure_qdrant_reconcile_duration_seconds_count", sq).as_deref(),
            Some("2")
        );
        // 30 ms and 70 ms: one under 50 ms, both under 100 ms.
        assert_eq!(
            sample(
                &text,
                "secure_qdrant_reconcile_duration_seconds_bucket",
                r#"le="0.05",controller="secureqdrant""#
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
        assert!(text.contains("# TYPE secure_qdrant_reconcile_duration_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn certificate_expiry_follows_the_status_and_is_forgotten() {
        let m = Metrics::new();
        let sq = instance("search", "vectors");
        m.observe_instance(&sq, &with_cert("2030-01-02T03:04:05Z"));
        let labels = r#"namespace="search",name="vectors""#;
        let metric = "secure_qdrant_certificate_expiry_timestamp_seconds";
        assert_eq!(
            sample(&m.encode(), metric, labels).as_deref(),
            Some("1893553445")
        );
        // Renewed: the gauge moves.
        m.observe_instance(&sq, &with_cert("2030-02-02T03:04:05Z"));
        assert_eq!(
            sample(&m.encode(), metric, labels).as_deref(),
            Some("1896231845")
        );
        // TLS turned off: no certificate, no series.
        m.observe_instance(&sq, &SecureQdrantStatus::default());
        assert_eq!(sample(&m.encode(), metric, labels), None);
        m.observe_instance(&sq, &with_cert("2030-01-02T03:04:05Z"));
        m.forget(SECURE_QDRANT, "search", "vectors");
        assert_eq!(sample(&m.encode(), metric, labels), None);
    }

    #[test]
    fn token_expiry_follows_the_status_and_is_forgotten() {
        let m = Metrics::new();
        let spec: QdrantAccessTokenSpec = serde_json::from_value(
            serde_json::json!({"qdrantRef": {"name": "vectors"}, "access": {"global": "r"}}),
        )
        .expect("spec");
        let mut qat = QdrantAccessToken::new("frontend", spec);
        qat.metadata.namespace = Some("search".into());
        let status = QdrantAccessTokenStatus {
            expires_at: Some(Time("2030-01-02T03:04:05Z".parse().expect("time"))),
            renewal_time: Some(Time("2030-01-01T03:04:05Z".parse().expect("time"))),
            ..Default::default()
        };
        m.observe_token(&qat, &status);
        let metric = "secure_qdrant_token_expiry_timestamp_seconds";
        let labels = r#"namespace="search",name="frontend""#;
        assert_eq!(
            sample(&m.encode(), metric, labels).as_deref(),
            Some("1893553445")
        );
        let renewal = "secure_qdrant_token_renewal_timestamp_seconds";
        assert_eq!(
            sample(&m.encode(), renewal, labels).as_deref(),
            Some("1893467045")
        );
        m.forget(SECURE_QDRANT, "search", "frontend");
        assert!(
            sample(&m.encode(), metric, labels).is_some(),
            "another kind's series"
        );
        m.forget(ACCESS_TOKEN, "search", "frontend");
        assert_eq!(sample(&m.encode(), metric, labels), None);
        assert_eq!(sample(&m.encode(), renewal, labels), None);
    }

    #[test]
    fn certificate_and_ca_renewal_and_ca_expiry_follow_the_status() {
        let m = Metrics::new();
        let sq = instance("search", "vectors");
        let status = SecureQdrantStatus {
            certificate: Some(CertificateStatus {
                not_after: Some("2030-01-02T03:04:05Z".into()),
                renewal_time: Some("2029-12-02T03:04:05Z".into()),
                ca_not_after: Some("2031-01-02T03:04:05Z".into()),
            }),
            ..Default::default()
        };
        m.observe_instance(&sq, &status);
        let now: Timestamp = "2029-06-01T00:00:00Z".parse().unwrap();
        m.observe_rotations(
            &sq,
            Some("2030-09-01T00:00:00Z".parse().unwrap()),
            None,
            None,
            now,
        );
        let labels = r#"namespace="search",name="vectors""#;
        let text = m.encode();
        for (metric, value) in [
            (
                "secure_qdrant_certificate_renewal_timestamp_seconds",
                "1890875045",
            ),
            ("secure_qdrant_ca_expiry_timestamp_seconds", "1925089445"),
            ("secure_qdrant_ca_renewal_timestamp_seconds", "1914451200"),
        ] {
            assert_eq!(
                sample(&text, metric, labels).as_deref(),
                Some(value),
                "{metric}: {text}"
            );
        }
        // A CA the user brings: no renewal time. TLS off: nothing.
        m.observe_rotations(&sq, None, None, None, now);
        assert_eq!(
            sample(
                &m.encode(),
                "secure_qdrant_ca_renewal_timestamp_seconds",
                labels
            ),
            None
        );
        m.observe_instance(&sq, &SecureQdrantStatus::default());
        let text = m.encode();
        for metric in [
            "secure_qdrant_certificate_renewal_timestamp_seconds",
            "secure_qdrant_ca_expiry_timestamp_seconds",
        ] {
            assert_eq!(sample(&text, metric, labels), None, "{metric}");
        }
        m.observe_instance(&sq, &status);
        m.observe_rotations(&sq, Some(now), None, None, now);
        m.forget(SECURE_QDRANT, "search", "vectors");
        let text = m.encode();
        assert!(!text.contains(labels), "{text}");
    }

    #[test]
    fn a_rotation_phase_keeps_its_start_until_it_changes() {
        let m = Metrics::new();
        let sq = instance("search", "vectors");
        let metric = "secure_qdrant_rotation_phase_since_timestamp_seconds";
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let series = |rotation: &str, phase: &str| {
            format!(r#"namespace="search",name="vectors",rotation="{rotation}",phase="{phase}""#)
        };
        m.observe_rotations(
            &sq,
            None,
            Some("Introduced"),
            None,
            t("2030-01-01T00:00:00Z"),
        );
        m.observe_rotations(
            &sq,
            None,
            Some("Introduced"),
            Some("TrustBoth"),
            t("2030-01-01T00:10:00Z"),
        );
        let text = m.encode();
        assert_eq!(
            sample(&text, metric, &series("api-key", "Introduced")).as_deref(),
            Some("1893456000"),
            "the same phase keeps the time it was first seen: {text}"
        );
        assert_eq!(
            sample(&text, metric, &series("ca", "TrustBoth")).as_deref(),
            Some("1893456600")
        );
        // The next phase: the old series goes, the new one starts now.
        m.observe_rotations(
            &sq,
            None,
            Some("GracePeriod"),
            Some("TrustBoth"),
            t("2030-01-01T00:20:00Z"),
        );
        let text = m.encode();
        assert_eq!(
            sample(&text, metric, &series("api-key", "Introduced")),
            None,
            "{text}"
        );
        assert_eq!(
            sample(&text, metric, &series("api-key", "GracePeriod")).as_deref(),
            Some("1893457200")
        );
        // Over: no series at all.
        m.observe_rotations(
            &sq,
            None,
            None,
            Some("TrustBoth"),
            t("2030-01-01T00:30:00Z"),
        );
        assert!(!m.encode().contains(r#"rotation="api-key""#));
        m.forget(SECURE_QDRANT, "search", "vectors");
        assert!(!m.encode().contains(r#"rotation="ca""#));
        // Started again after forget: counts from the new time.
        m.observe_rotations(
            &sq,
            None,
            None,
            Some("TrustBoth"),
            t("2030-01-02T00:00:00Z"),
        );
        assert_eq!(
            sample(&m.encode(), metric, &series("ca", "TrustBoth")).as_deref(),
            Some("1893542400")
        );
    }

    #[test]
    fn leader_is_one_while_this_replica_runs_the_controllers() {
        let m = Metrics::new();
        let leader = |m: &Metrics| {
            m.encode()
                .lines()
                .find_map(|l| l.strip_prefix("secure_qdrant_leader ").map(str::to_owned))
        };
        assert_eq!(leader(&m).as_deref(), Some("0"), "before any role is known");
        m.set_role(Role::Single);
        assert_eq!(leader(&m).as_deref(), Some("1"));
        m.set_role(Role::Standby {
            lease_reachable: true,
        });
        assert_eq!(leader(&m).as_deref(), Some("0"));
        m.set_role(Role::Leader);
        assert_eq!(leader(&m).as_deref(), Some("1"));
    }

    #[test]
    fn both_controllers_count_from_zero() {
        let text = Metrics::new().encode();
        for controller in ["secureqdrant", "qdrantaccesstoken"] {
            let labels = format!(r#"controller="{controller}""#);
            assert_eq!(
                sample(&text, "secure_qdrant_reconciles_total", &labels).as_deref(),
                Some("0"),
                "{text}"
            );
            assert_eq!(
                sample(
                    &text,
                    "secure_qdrant_reconcile_duration_seconds_count",
                    &labels
                )
                .as_deref(),
                Some("0")
            );
        }
    }

    #[test]
    fn clones_record_into_one_registry() {
        let m = Metrics::new();
        m.clone().reconciled(ACCESS_TOKEN, Duration::ZERO);
        assert!(
            m.encode()
                .contains(r#"secure_qdrant_reconciles_total{controller="qdrantaccesstoken"} 1"#)
        );
    }
}
