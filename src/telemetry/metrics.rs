//! Prometheus metrics (prometheus-client, OpenMetrics text format at `/metrics`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `secure_qdrant_reconciles_total` | counter | `controller` |
//! | `secure_qdrant_reconcile_failures_total` | counter | `controller`, `error` ([`Error::metric_label`]) |
//! | `secure_qdrant_reconcile_duration_seconds` | histogram | `controller` |
//! | `secure_qdrant_certificate_expiry_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `secure_qdrant_token_expiry_timestamp_seconds` | gauge | `namespace`, `name` |
//!
//! `controller` is `secureqdrant` or `qdrantaccesstoken`. The expiry gauges are Unix times
//! (seconds) read from the status the operator just computed (`status.certificate.notAfter` of
//! a SecureQdrant with TLS, `status.expiresAt` of a QdrantAccessToken); their series are removed
//! when the object is deleted, or, for the certificate, when TLS is turned off.

use std::sync::Arc;
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

use crate::crd::{QdrantAccessToken, QdrantAccessTokenStatus, SecureQdrant, SecureQdrantStatus};
use crate::error::Error;

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
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

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
    token_expiry: Family<ObjectLabels, Gauge>,
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
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let certificate_expiry = Family::<ObjectLabels, Gauge>::default();
        let token_expiry = Family::<ObjectLabels, Gauge>::default();

        let mut registry = Registry::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "secure_qdrant_reconciles",
            "Reconciles started, by controller",
            reconciles.clone(),
        );
        registry.register(
            "secure_qdrant_reconcile_failures",
            "Reconciles that failed, by controller and failed step",
            failures.clone(),
        );
        registry.register(
            "secure_qdrant_reconcile_duration_seconds",
            "How long reconciles take, by controller",
            duration.clone(),
        );
        registry.register(
            "secure_qdrant_certificate_expiry_timestamp_seconds",
            "When the serving certificate of a SecureQdrant expires (Unix time)",
            certificate_expiry.clone(),
        );
        registry.register(
            "secure_qdrant_token_expiry_timestamp_seconds",
            "When the token of a QdrantAccessToken expires (Unix time)",
            token_expiry.clone(),
        );
        // Both controllers' series exist from the start (at 0), so rates work from the first
        // scrape.
        for controller in [SECURE_QDRANT, ACCESS_TOKEN] {
            let labels = ControllerLabels { controller };
            let _ = reconciles.get_or_create(&labels);
            let _ = duration.get_or_create(&labels);
        }
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            certificate_expiry,
            token_expiry,
        }
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

    /// Counts one failed reconcile of `controller`, labelled with the step that failed.
    pub fn failed(&self, controller: &'static str, error: &Error) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Sets the certificate expiry of `sq` from the status just computed for it (removes the
    /// series when the status has no certificate, e.g. TLS off).
    pub fn observe_instance(&self, sq: &SecureQdrant, status: &SecureQdrantStatus) {
        let not_after = status
            .certificate
            .as_ref()
            .and_then(|c| c.not_after.as_deref())
            .and_then(|t| t.parse::<Timestamp>().ok());
        set_or_remove(&self.certificate_expiry, object(sq), not_after);
    }

    /// Sets the token expiry of `qat` from the status just computed for it.
    pub fn observe_token(&self, qat: &QdrantAccessToken, status: &QdrantAccessTokenStatus) {
        let expires_at = status.expires_at.as_ref().map(|Time(t)| *t);
        set_or_remove(&self.token_expiry, object(qat), expires_at);
    }

    /// Forgets the per-object series of a deleted object of `controller`'s kind.
    pub fn forget(&self, controller: &str, namespace: &str, name: &str) {
        let family = match controller {
            SECURE_QDRANT => &self.certificate_expiry,
            ACCESS_TOKEN => &self.token_expiry,
            _ => return,
        };
        family.remove(&labels(namespace, name));
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
        m.failed(SECURE_QDRANT, &Error::CacheNotReady);
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
                r#"controller="secureqdrant",error="cache""#
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
            ..Default::default()
        };
        m.observe_token(&qat, &status);
        let metric = "secure_qdrant_token_expiry_timestamp_seconds";
        let labels = r#"namespace="search",name="frontend""#;
        assert_eq!(
            sample(&m.encode(), metric, labels).as_deref(),
            Some("1893553445")
        );
        m.forget(SECURE_QDRANT, "search", "frontend");
        assert!(
            sample(&m.encode(), metric, labels).is_some(),
            "another kind's series"
        );
        m.forget(ACCESS_TOKEN, "search", "frontend");
        assert_eq!(sample(&m.encode(), metric, labels), None);
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
