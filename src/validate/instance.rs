//! The validated SecureQdrant: what every later step reads instead of the raw resource.

use std::time::Duration;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Map, Value};

use crate::crd::{AuditSpec, AuthSpec, ImagePullPolicy, NetworkSpec, PodSpecOverrides};

/// A validated SecureQdrant: everything the later steps need (the builders, the plan, the
/// credentials and certificates), defaults resolved, the user's requests (annotations) included.
/// After validation the raw resource is read only for its owner reference (in [`Self::owner`]),
/// for the status it already has (`crate::reconcile::status::desired` keeps its conditions and
/// history) and, when validation fails, to report that on it (there is no Instance then).
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub generation: Option<i64>,
    pub replicas: i32,
    pub image: String,
    pub image_pull_policy: ImagePullPolicy,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub resources: ResourceRequirements,
    pub storage: Storage,
    /// Size of the dedicated snapshots volume; None: an emptyDir.
    pub snapshots_size: Option<Quantity>,
    pub auth: AuthSpec,
    /// How long both keys work during a key rotation.
    pub key_rotation_grace: Duration,
    /// None when `spec.tls.enabled` is false.
    pub tls: Option<TlsSettings>,
    pub network: NetworkSpec,
    pub audit: AuditSpec,
    pub user_config: Map<String, Value>,
    pub pod: PodSpecOverrides,
    pub cluster_domain: String,
    /// The user's acknowledgment of a scale-down: the value of
    /// [`crate::crd::PEERS_REMOVED_ANNOTATION`] as written (the plan parses and checks it).
    pub peers_removed: Option<String>,
    /// A request to rotate the generated API key: the value of
    /// [`crate::api_keys::ROTATE_API_KEY_ANNOTATION`]; each new value asks for one rotation.
    pub api_key_rotation_request: Option<String>,
    /// A request for a new CA key: the value of [`crate::tls::ROTATE_CA_ANNOTATION`]; each new
    /// value asks for one new key.
    pub ca_rotation_request: Option<String>,
    /// The cluster has formed (`status.clusterFormed`): a pod 0 without Raft state joins it
    /// through pod 1. Not from the spec: false here, set by the reconcile from the status.
    pub cluster_formed: bool,
}

/// TLS settings with durations parsed and defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    pub certificate_lifetime: Duration,
    pub renew_before: Duration,
    pub ca_lifetime: Duration,
    pub client_certificates: bool,
    pub source: TlsSource,
    pub extra_dns_names: Vec<String>,
}

/// Where the certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// The operator's own CA (`<n>-ca`) signs the serving certificate (`<n>-tls`).
    OperatorCa,
    /// The user's CA (a Secret with tls.crt and tls.key) signs the serving certificate.
    UserCa(String),
    /// The user brings the serving certificate (tls.crt, tls.key, ca.crt); nothing is issued.
    UserCertificate(String),
}

/// Data volume settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Storage {
    pub size: Quantity,
    pub class: Option<String>,
    pub retain_on_delete: bool,
}

impl Instance {
    /// More than one replica: Qdrant runs in cluster mode with p2p on 6335.
    pub fn cluster_mode(&self) -> bool {
        self.replicas > 1
    }

    /// Metrics get their own unauthenticated port only when scrapers are listed.
    pub fn metrics_port_enabled(&self) -> bool {
        !self.network.metrics.is_empty()
    }

    /// Name of the headless Service the pods' DNS names hang off.
    pub fn headless_service_name(&self) -> String {
        format!("{}-headless", self.name)
    }

    /// Name of the Secret holding the API keys.
    pub fn api_key_secret_name(&self) -> String {
        format!("{}-api-key", self.name)
    }

    /// Name of the Secret holding the client certificate for metrics scrapers
    /// (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`). Reserved for the instance whether
    /// or not it is issued: nothing else may take the name.
    pub fn metrics_client_secret_name(&self) -> String {
        format!("{}-metrics-client", self.name)
    }

    /// Whether scrapers need a client certificate: client certificates are required
    /// (`spec.tls.clientCertificates`, which Qdrant also enforces on its metrics port) and
    /// scrapers are listed (`spec.network.metrics`).
    pub fn metrics_need_client_certificate(&self) -> bool {
        self.metrics_port_enabled() && self.tls.as_ref().is_some_and(|t| t.client_certificates)
    }

    /// `<n>-metrics-client` when the operator issues the metrics client certificate: scrapers
    /// need one and the operator holds the signing CA (its own, or `spec.tls.caSecretRef`; not
    /// with `spec.tls.certificateSecretRef`). None: the operator writes no such Secret.
    pub fn metrics_client_secret(&self) -> Option<String> {
        self.tls
            .as_ref()
            .filter(|t| !matches!(t.source, TlsSource::UserCertificate(_)))
            .filter(|_| self.metrics_need_client_certificate())
            .map(|_| self.metrics_client_secret_name())
    }

    /// Where Qdrant's full-access key comes from: (Secret, key).
    pub fn api_key_ref(&self) -> (String, String) {
        match &self.auth.api_key_secret_ref {
            Some(r) => (r.name.clone(), r.key.clone()),
            None => (
                self.api_key_secret_name(),
                crate::api_keys::API_KEY.to_owned(),
            ),
        }
    }

    /// Whether the operator generates (and may rotate) the full-access key.
    pub fn generates_api_key(&self) -> bool {
        self.auth.api_key_secret_ref.is_none()
    }

    /// The keys the operator generates into `<n>-api-key`, in the order it generates them:
    /// `api-key` unless `spec.auth.apiKeySecretRef` is set, `read-only-api-key` when
    /// `spec.auth.readOnlyApiKey` is on. Empty: the operator writes no `<n>-api-key` at all.
    pub fn generated_api_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.generates_api_key() {
            keys.push(crate::api_keys::API_KEY);
        }
        if self.auth.read_only_api_key {
            keys.push(crate::api_keys::READ_ONLY_API_KEY);
        }
        keys
    }

    /// Name of the Secret holding the operator's CA.
    pub fn ca_secret_name(&self) -> String {
        format!("{}-ca", self.name)
    }

    /// `<n>-ca` when the operator runs its own CA: TLS on, and neither `spec.tls.caSecretRef`
    /// nor `spec.tls.certificateSecretRef` set. None: the operator writes no CA Secret.
    pub fn operator_ca_secret_name(&self) -> Option<String> {
        self.tls
            .as_ref()
            .filter(|t| t.source == TlsSource::OperatorCa)
            .map(|_| self.ca_secret_name())
    }

    /// Name of the Secret the pods mount for TLS: the operator's `<n>-tls`, or the user's own.
    pub fn tls_secret_name(&self) -> Option<String> {
        self.tls.as_ref().map(|t| match &t.source {
            TlsSource::UserCertificate(name) => name.clone(),
            _ => format!("{}-tls", self.name),
        })
    }

    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Name of the ConfigMap holding Qdrant's config file.
    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name)
    }
}
