//! `SecureQdrant`: one hardened Qdrant cluster.
//!
//! Field names, defaults and descriptions here are the user-facing contract (`kubectl explain`).

// `printcolumn(type_ = ...)` repeats per column by design; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::SignedDuration;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::user_config::{ALLOWED_USER_CONFIG, FORBIDDEN_USER_CONFIG, MAX_CONFIG_STRING_LEN};

/// The longest `metadata.name` a SecureQdrant may have: the StatefulSet's controller-revision-hash
/// label (`<name>-<10 char hash>`) must fit in 63 characters.
pub const MAX_NAME_LEN: usize = 52;
/// Most replicas a SecureQdrant may ask for.
pub const MAX_REPLICAS: i32 = 100;
// Bounds of the schema that `crate::validate` checks too (an old CRD, a tool that skips
// admission, or `render` must not get past them; tests/bad_input.rs checks both layers).
/// Longest `spec.image`.
pub const MAX_IMAGE_LEN: usize = 512;
/// Longest `spec.storage.size` and `spec.snapshots.size`.
pub const MAX_QUANTITY_LEN: usize = 64;
/// Longest `spec.storage.storageClassName`.
pub const MAX_STORAGE_CLASS_LEN: usize = 253;
/// Most rotated audit log files kept.
pub const MAX_LOG_FILES: u32 = 10_000;
/// Most entries of `spec.pod.tolerations`.
pub const MAX_TOLERATIONS: usize = 32;
/// Default Qdrant image: pinned to a release, the variant built to run as non-root.
pub const DEFAULT_IMAGE: &str = "docker.io/qdrant/qdrant:v1.19.0-unprivileged";

/// A Qdrant vector database, run as a cluster that is secure by default: API keys, TLS,
/// NetworkPolicies and hardened pods are created and kept in place by the operator.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "secureqdrant.dev",
    version = "v1alpha1",
    kind = "SecureQdrant",
    namespaced,
    shortname = "sq",
    category = "secure-qdrant",
    status = "SecureQdrantStatus",
    derive = "PartialEq",
    doc = "A Qdrant vector database cluster that the operator keeps secure by default.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Summary: Pending, Progressing, Ready, Degraded or Failed."
    ),
    // As for ReplicaSets: asked for, running, ready. Desired and Current differ while a
    // scale-down is refused (the pods keep running) or a scale-up is in progress.
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Replicas asked for (spec.replicas)."
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Pods the StatefulSet runs (status.replicas)."
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Pods that are ready (status.readyReplicas)."
    ),
    // A `string` column, not `date`: the API server shows a `date` column as the time elapsed
    // since it (Kubernetes' HumanDuration), which is `<invalid>` for any time in the future, and
    // an expiry is always in the future while it matters. The RFC 3339 time reads as it is.
    printcolumn(
        name = "Cert-Expiry",
        type_ = "string",
        json_path = ".status.certificate.notAfter",
        description = "When the serving certificate expires (RFC 3339, UTC)."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the resource was created."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecureQdrantSpec {
    /// Number of Qdrant pods. 1 runs a single node; more than 1 runs a Qdrant cluster whose peers
    /// talk on port 6335. A scale-down is applied only when acknowledged (Qdrant keeps removed
    /// peers in its consensus and their shards would be lost): move the shards off the peers of
    /// pods `<name>-<k>`, k ≥ the new count, remove those peers with Qdrant's API
    /// (`DELETE /cluster/peer/<id>`), then set this field and the annotation
    /// `secureqdrant.dev/peers-removed` to the new count; the operator removes the annotation
    /// once the StatefulSet runs that count. The data volumes of removed pods are kept. A cluster is
    /// never scaled down to 1 (1 replica turns cluster mode off).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// Qdrant container image. The default is a pinned release of the non-root ("-unprivileged")
    /// image; pin a digest (`...@sha256:...`) for reproducible deployments.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = MAX_IMAGE_LEN), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// Secrets holding registry credentials for the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// CPU and memory of the Qdrant container. When unset: requests 500m CPU / 1Gi memory,
    /// limits 2 CPU / 2Gi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent storage of each pod (collections, raft state, audit log).
    #[serde(default)]
    pub storage: StorageSpec,

    /// Where snapshots are written.
    #[serde(default)]
    pub snapshots: SnapshotsSpec,

    /// API keys and JWT-based access control.
    #[serde(default)]
    pub auth: AuthSpec,

    /// TLS for REST, gRPC and peer-to-peer traffic, with certificates the operator issues and
    /// renews (or that you bring).
    #[serde(default)]
    pub tls: TlsSpec,

    /// Who may talk to Qdrant. The operator always denies every other ingress and all egress.
    #[serde(default)]
    pub network: NetworkSpec,

    /// Qdrant's audit log (JSON lines on the storage volume).
    #[serde(default)]
    pub audit: AuditSpec,

    // Tuning of Qdrant's config file, from an allow-list (`crate::crd::ALLOWED_USER_CONFIG`);
    // the schema's description (`user_config_description`) lists the keys. A doc comment here
    // would replace that description.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "user_config_schema")]
    pub config: BTreeMap<String, serde_json::Value>,

    /// Scheduling and metadata passed through to the Qdrant pods.
    #[serde(default)]
    pub pod: PodSpecOverrides,
}

fn default_replicas() -> i32 {
    1
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

/// Image pull policy of the Qdrant container.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Persistent storage of each Qdrant pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0'))",
     "message": "storage.size must be a positive quantity such as 10Gi"},
    {"rule": "self.size == oldSelf.size",
     "message": "storage.size cannot be changed after creation (expand the PVCs yourself)"},
    {"rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
     "message": "storage.storageClassName cannot be changed after creation"}
]))]
pub struct StorageSpec {
    /// Size of each pod's data volume. Fixed at creation: a StatefulSet cannot change it.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = MAX_QUANTITY_LEN))]
    pub size: String,

    /// StorageClass of the data volumes; unset uses the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_STORAGE_CLASS_LEN))]
    pub storage_class_name: Option<String>,

    /// Keep the data volumes when the SecureQdrant is deleted. Set false to delete them with it.
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            retain_on_delete: true,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".to_owned()
}

fn default_true() -> bool {
    true
}

/// Where snapshots are written.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.size) || (isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0')))",
     "message": "snapshots.size must be a positive quantity such as 20Gi"},
    {"rule": "has(self.size) == has(oldSelf.size) && (!has(self.size) || self.size == oldSelf.size)",
     "message": "snapshots.size cannot be changed after creation"}
]))]
pub struct SnapshotsSpec {
    /// Size of a dedicated snapshots volume per pod. Unset: snapshots go to an emptyDir and are
    /// lost when the pod moves (download or upload them elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_QUANTITY_LEN))]
    pub size: Option<String>,
}

/// API keys and JWT-based access control.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "duration(self.keyRotationGracePeriod) >= duration('1m')",
     "message": "auth.keyRotationGracePeriod must be at least 1m: kubelets take up to about a minute to refresh a mounted Secret, so a shorter grace period removes the old key before every consumer can have the new one"}
]))]
pub struct AuthSpec {
    /// Also generate a global read-only API key (`read-only-api-key` in the API-key Secret).
    #[serde(default = "default_true")]
    pub read_only_api_key: bool,

    /// Accept JWTs signed with the API key (Qdrant's `service.jwt_rbac`).
    #[serde(default = "default_true")]
    pub jwt_rbac: bool,

    /// Allow QdrantAccessTokens with global manage access (`access: {global: m}`) for this
    /// instance. Such a token can do everything the API key can (create and delete
    /// collections, snapshots, cluster operations), so it is refused unless this is true.
    /// Read-only and per-collection tokens need no opt-in.
    #[serde(default)]
    pub allow_manage_tokens: bool,

    /// Use your own full-access API key from a Secret in the same namespace instead of a
    /// generated one. The operator re-reads it on every reconcile and rolls the pods when it
    /// changes; a missing Secret, a missing key, an empty value or one shorter than 32
    /// characters (it also signs the tokens) stops the rollout with a condition. Rotating it is
    /// then up to you (the rotate-api-key annotation applies only to generated keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,

    /// During a key rotation (annotation `secureqdrant.dev/rotate-api-key`), how long the old
    /// and the new key both work once every pod accepts the new one, before the old one is
    /// removed. Go duration syntax, at least 1m (kubelets take up to about a minute to refresh
    /// a mounted Secret, and consumers need that long to see the new key).
    #[serde(default = "default_rotation_grace")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub key_rotation_grace_period: String,
}

fn default_rotation_grace() -> String {
    "1h".to_owned()
}

impl Default for AuthSpec {
    fn default() -> Self {
        AuthSpec {
            read_only_api_key: true,
            jwt_rbac: true,
            allow_manage_tokens: false,
            api_key_secret_ref: None,
            key_rotation_grace_period: default_rotation_grace(),
        }
    }
}

/// A key of a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// TLS settings. Durations use Go syntax (`2160h`, `90m`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "duration(self.certificateLifetime) >= duration('1h')",
     "message": "tls.certificateLifetime must be at least 1h"},
    {"rule": "duration(self.caLifetime) > duration(self.certificateLifetime)",
     "message": "tls.caLifetime must be longer than tls.certificateLifetime"},
    {"rule": "!has(self.renewBefore) || (duration(self.renewBefore) >= duration('5m') && duration(self.renewBefore) < duration(self.certificateLifetime))",
     "message": "tls.renewBefore must be at least 5m and shorter than tls.certificateLifetime"},
    {"rule": "self.enabled || (!self.clientCertificates && !has(self.caSecretRef) && !has(self.certificateSecretRef))",
     "message": "tls.clientCertificates, tls.caSecretRef and tls.certificateSecretRef need tls.enabled"},
    {"rule": "!(has(self.caSecretRef) && has(self.certificateSecretRef))",
     "message": "set tls.caSecretRef (the operator signs with your CA) or tls.certificateSecretRef (you bring the certificate), not both"},
    {"rule": "!has(self.extraDnsNames) || self.extraDnsNames.all(n, !(n == 'svc' || n.endsWith('.svc') || n == 'cluster.local' || n.endsWith('.cluster.local')))",
     "message": "tls.extraDnsNames may not hold in-cluster names (under .svc or .cluster.local): the instance's own Service names are always in the certificate, and other ones belong to other Services"}
]))]
pub struct TlsSpec {
    /// Serve REST, gRPC and peer traffic over TLS. Turning it off must be explicit and keeps a
    /// `TLSDisabled` warning condition on the resource.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Lifetime of the serving certificates the operator issues.
    #[serde(default = "default_certificate_lifetime")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub certificate_lifetime: String,

    /// How long before expiry a certificate is renewed. Default: a third of its lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub renew_before: Option<String>,

    /// Lifetime of the operator's CA. Renewed on the same key a third of its lifetime before
    /// expiry, so existing trust holds.
    #[serde(default = "default_ca_lifetime")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub ca_lifetime: String,

    /// Require client certificates on the REST port (mutual TLS). Every QdrantAccessToken of
    /// this instance then gets one in its Secret (tls.crt, tls.key), signed by the instance's
    /// CA and renewed like the serving certificate; kubelet probes switch to TCP checks.
    #[serde(default)]
    pub client_certificates: bool,

    /// Bring your own CA: a Secret with `tls.crt` and `tls.key` in the same namespace. The
    /// operator signs the serving certificates with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,

    /// Bring your own serving certificate (e.g. from cert-manager): a `kubernetes.io/tls`
    /// Secret with `tls.crt`, `tls.key` and `ca.crt`. The operator mounts it, rolls the pods
    /// when it changes, and warns before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret_ref: Option<SecretRef>,

    /// Extra DNS names for the serving certificate (e.g. an Ingress host), also the only names
    /// besides the instance's own the CA may sign (X.509 name constraints). Each must lie within
    /// a DNS suffix the operator's administrator allows (`--allowed-dns-suffixes`; none by
    /// default); in-cluster names (`.svc`, the cluster domain) other than the instance's own are
    /// refused. A wildcard only as a leftmost `*.` followed by such a name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 253)),
        inner(regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        ))
    )]
    pub extra_dns_names: Vec<String>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            enabled: true,
            certificate_lifetime: default_certificate_lifetime(),
            renew_before: None,
            ca_lifetime: default_ca_lifetime(),
            client_certificates: false,
            ca_secret_ref: None,
            certificate_secret_ref: None,
            extra_dns_names: Vec::new(),
        }
    }
}

/// The API default of spec.tls.certificateLifetime (the CRD schema writes it as a Go duration).
pub const DEFAULT_CERTIFICATE_LIFETIME: SignedDuration = SignedDuration::from_hours(2160);
/// The API default of spec.tls.caLifetime (the CRD schema writes it as a Go duration).
pub const DEFAULT_CA_LIFETIME: SignedDuration = SignedDuration::from_hours(8760);

fn default_certificate_lifetime() -> String {
    format!("{}h", DEFAULT_CERTIFICATE_LIFETIME.as_hours())
}

fn default_ca_lifetime() -> String {
    format!("{}h", DEFAULT_CA_LIFETIME.as_hours())
}

/// A Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Who may reach Qdrant. Everything not listed is denied by NetworkPolicies.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Peers (NetworkPolicyPeer) allowed to reach the REST (6333) and gRPC (6334) ports.
    /// Default: every pod of the same namespace. An empty list admits no client at all.
    #[serde(default = "default_clients")]
    pub clients: Vec<NetworkPolicyPeer>,

    /// Peers allowed to scrape metrics. When set, Qdrant serves `/metrics` on its own port (9091)
    /// without authentication, reachable only from these peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<NetworkPolicyPeer>,

    /// Egress rules added to the default (which allows nothing but peer traffic and DNS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_egress: Vec<NetworkPolicyEgressRule>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            clients: default_clients(),
            metrics: Vec::new(),
            extra_egress: Vec::new(),
        }
    }
}

fn default_clients() -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        pod_selector: Some(Default::default()),
        ..NetworkPolicyPeer::default()
    }]
}

/// Qdrant's audit log.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    /// Write an audit log of API calls (JSON lines under `audit/` on the storage volume).
    #[serde(default)]
    pub enabled: bool,

    /// How often the audit file is rotated.
    #[serde(default)]
    pub rotation: AuditRotation,

    /// Number of rotated audit files kept.
    #[serde(default = "default_max_log_files")]
    #[schemars(range(min = 1, max = MAX_LOG_FILES))]
    pub max_log_files: u32,

    /// Take the client address from X-Forwarded-For. Only safe behind a proxy that sets it.
    #[serde(default)]
    pub trust_forwarded_headers: bool,
}

impl Default for AuditSpec {
    fn default() -> Self {
        AuditSpec {
            enabled: false,
            rotation: AuditRotation::Daily,
            max_log_files: default_max_log_files(),
            trust_forwarded_headers: false,
        }
    }
}

fn default_max_log_files() -> u32 {
    7
}

/// Rotation period of the audit log.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditRotation {
    #[default]
    Daily,
    Hourly,
}

impl AuditRotation {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditRotation::Daily => "daily",
            AuditRotation::Hourly => "hourly",
        }
    }
}

/// Scheduling and metadata passed through to the Qdrant pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.labels) || self.labels.all(k, !k.startsWith('app.kubernetes.io/'))",
     "message": "pod.labels may not set app.kubernetes.io/* labels: the operator owns them"},
    {"rule": "!has(self.annotations) || self.annotations.all(k, !k.startsWith('secureqdrant.dev/'))",
     "message": "pod.annotations may not set secureqdrant.dev/* annotations: the operator owns them"},
    {"rule": "!has(self.tolerations) || self.tolerations.all(t, (has(t.key) && t.key != '') || !has(t.operator) || t.operator != 'Exists')",
     "message": "pod.tolerations may not hold an entry with operator Exists and no key: it tolerates every taint"}
]))]
pub struct PodSpecOverrides {
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate (at most 32; never every taint: an entry needs a key, and the
    /// operator's policy refuses control-plane taints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TOLERATIONS))]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the pods. Unset: the operator prefers spreading pods over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Extra labels on the pods (not app.kubernetes.io/*).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations on the pods (not secureqdrant.dev/*).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What `kubectl explain` says about each operator-owned `spec.config` key: who sets it, and the
/// spec field to use instead where there is one. Every key of [`FORBIDDEN_USER_CONFIG`] has one
/// (the schema is not built otherwise).
const MANAGED_CONFIG_DOCS: &[(&str, &str)] = &[
    (
        "service.host",
        "Set by the operator (0.0.0.0, so the Services reach the pod).",
    ),
    (
        "service.http_port",
        "Set by the operator (6333: the Services, probes and NetworkPolicies use it).",
    ),
    (
        "service.grpc_port",
        "Set by the operator (6334: the Services and NetworkPolicies use it).",
    ),
    (
        "service.metrics_port",
        "Set by the operator (9091) when spec.network.metrics lists scrapers; use that field.",
    ),
    (
        "service.api_key",
        "Set by the operator from a Secret (generated, or spec.auth.apiKeySecretRef); use \
         spec.auth.apiKeySecretRef for your own key.",
    ),
    (
        "service.alt_api_key",
        "Set by the operator during a key rotation (annotation secureqdrant.dev/rotate-api-key).",
    ),
    (
        "service.read_only_api_key",
        "Set by the operator from a generated Secret; use spec.auth.readOnlyApiKey.",
    ),
    (
        "service.jwt_rbac",
        "Set by the operator; use spec.auth.jwtRbac.",
    ),
    (
        "service.enable_tls",
        "Set by the operator; use spec.tls.enabled.",
    ),
    (
        "service.verify_https_client_certificate",
        "Set by the operator; use spec.tls.clientCertificates.",
    ),
    (
        "service.enable_cors",
        "Set by the operator (always false: no browser origin may call Qdrant).",
    ),
    (
        "service.enforce_internal_auth",
        "Set by the operator (true in cluster mode, spec.replicas > 1).",
    ),
    (
        "service.enable_snapshot_url_recovery",
        "Set by the operator (always false: recovering from a URL would let a caller make Qdrant \
         fetch any address).",
    ),
    (
        "service.enable_static_content",
        "Set by the operator (always false: static files are served without any API key).",
    ),
    (
        "service.static_content_dir",
        "Not allowed: files under it are served at /dashboard without any API key (pointed at \
         the TLS mount it publishes the private key). The operator turns static content off.",
    ),
    (
        "service.max_request_size_mb",
        "Not allowed: memory per request is a denial-of-service knob; Qdrant's default (32) \
         applies.",
    ),
    (
        "tls",
        "Set by the operator (the mounted certificate files); use spec.tls.",
    ),
    (
        "cluster.enabled",
        "Set by the operator (true when spec.replicas > 1); use spec.replicas.",
    ),
    (
        "cluster.p2p",
        "Set by the operator (port 6335, TLS as spec.tls.enabled says).",
    ),
    (
        "cluster.peer_id",
        "Not allowed: every pod reads the same config file, so every pod would claim the same \
         peer id at its first start. Qdrant picks a random id per pod.",
    ),
    (
        "telemetry_disabled",
        "Set by the operator (always true: nothing leaves the cluster).",
    ),
    (
        "storage.storage_path",
        "Set by the operator (the data volume, spec.storage).",
    ),
    (
        "storage.snapshots_path",
        "Set by the operator (the snapshots volume, spec.snapshots).",
    ),
    (
        "storage.temp_path",
        "Left to Qdrant's default on the data volume: the root filesystem is read-only, so no \
         other path is writable.",
    ),
    (
        "storage.snapshots_config",
        "Not allowed: it sends snapshots to any S3 endpoint with credentials in the config. \
         Snapshots stay on the snapshots volume (spec.snapshots).",
    ),
    (
        "storage.recovery_mode",
        "Not allowed: it stops the instance from accepting data.",
    ),
    (
        "storage.async_scorer",
        "Not allowed: it uses io_uring, which the RuntimeDefault seccomp profile blocks.",
    ),
    (
        "storage.quotas",
        "Not allowed: honoured only at Qdrant's first start, so changing it later does nothing.",
    ),
    (
        "storage.performance.io_uring",
        "Not allowed: io_uring is blocked by the RuntimeDefault seccomp profile.",
    ),
    (
        "storage.performance.async_scorer",
        "Not allowed: it uses io_uring, which the RuntimeDefault seccomp profile blocks.",
    ),
    ("audit", "Set by the operator; use spec.audit."),
    (
        "inference",
        "Not allowed: inference.address makes Qdrant call any URL (an SSRF path, e.g. the cloud \
         metadata address).",
    ),
    (
        "feature_flags",
        "Not allowed: unreleased Qdrant behaviour, untested with this operator.",
    ),
    (
        "logger",
        "Not allowed: logger.on_disk writes a log file to a path of your choice; Qdrant logs to \
         stdout (use log_level).",
    ),
    ("gpu", "Not allowed: the pods get no GPU device."),
];

/// The description of an operator-owned `spec.config` key.
fn managed_config_description(path: &str) -> String {
    let (_, why) = MANAGED_CONFIG_DOCS
        .iter()
        .find(|(p, _)| *p == path)
        .unwrap_or_else(|| panic!("spec.config.{path} is refused but not documented"));
    format!("{why} Refused in spec.config.")
}

/// The description of a section of Qdrant's config.
fn config_section_description(section: &str) -> String {
    format!(
        "Qdrant's `{section}` section. Only the tuning keys declared here without \"Refused\" \
         may be set; the operator refuses every other key."
    )
}

/// The description of `spec.config`: the allow-list, key by key.
pub fn user_config_description() -> String {
    let keys: Vec<String> = ALLOWED_USER_CONFIG
        .iter()
        .map(|(path, ty)| format!("{path} ({ty})"))
        .collect();
    format!(
        "Tuning of Qdrant's config file (the YAML of Qdrant's config, nested: \
         `{{storage: {{performance: {{max_search_threads: 4}}}}}}`). Only these keys may be set \
         (uint: an integer >= 0; `?`: null means Qdrant's automatic choice): {}. Every other key \
         is refused: the ones the operator sets (keys, TLS, ports, CORS, telemetry, static \
         content, cluster, storage paths, audit) and any that could reach outside the pod or \
         differ per pod (snapshots_config, inference, feature_flags, cluster.peer_id, ...).",
        keys.join(", ")
    )
}

/// The schema of `spec.config`: the allow-listed tuning keys with their Qdrant types, and the
/// refused keys Qdrant reads, each with a CEL `!has()` rule on its parent.
///
/// The apiserver hides fields kept by `x-kubernetes-preserve-unknown-fields` from CEL, so every
/// refused key is declared (with its Qdrant type) and its parent carries a `!has()` rule (a
/// constant-cost rule: no iteration). A value of another type fails the type check instead:
/// either way the object is rejected. Unknown keys are kept (not pruned), so the operator sees
/// them and refuses them with a condition: a running instance whose spec the allow-list now
/// refuses keeps running untouched instead of losing a setting silently. The operator's own
/// validation (`crate::validate`) refuses every key not on the allow-list, including dotted and
/// upper-case keys, which CEL cannot see.
fn user_config_schema(_: &mut SchemaGenerator) -> Schema {
    let mut root = serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": user_config_description(),
    });
    for (path, ty) in ALLOWED_USER_CONFIG {
        let node = config_node(&mut root, path);
        *node = allowed_leaf_schema(ty);
        node["description"] = format!("Qdrant's `{path}` ({ty}).").into();
    }
    for (path, json_type) in FORBIDDEN_USER_CONFIG {
        let (parent, leaf) = match path.rsplit_once('.') {
            Some((parent, leaf)) => (Some(parent), leaf),
            None => (None, *path),
        };
        let parent_node = match parent {
            Some(parent) => config_node(&mut root, parent),
            None => &mut root,
        };
        let rule = serde_json::json!({
            "rule": format!("!has(self.{leaf})"),
            "message": format!("spec.config may not set `{path}`: see its description"),
        });
        match parent_node["x-kubernetes-validations"].as_array_mut() {
            Some(rules) => rules.push(rule),
            None => parent_node["x-kubernetes-validations"] = serde_json::json!([rule]),
        }
        let node = &mut parent_node["properties"][leaf];
        *node = leaf_schema(json_type);
        node["description"] = managed_config_description(path).into();
    }
    Schema::try_from(root).expect("a JSON object is a schema")
}

/// The node of a config path in the schema tree, creating the sections on the way.
fn config_node<'a>(root: &'a mut serde_json::Value, path: &str) -> &'a mut serde_json::Value {
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let child = &mut node["properties"][*part];
        if child.is_null() {
            *child = serde_json::json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "description": config_section_description(&parts[..=i].join(".")),
            });
        }
        node = child;
    }
    node
}

fn allowed_leaf_schema(ty: &str) -> serde_json::Value {
    let (base, nullable) = match ty.strip_suffix('?') {
        Some(base) => (base, true),
        None => (ty, false),
    };
    let mut schema = match base {
        "uint" => serde_json::json!({"type": "integer", "minimum": 0}),
        "int" => serde_json::json!({"type": "integer"}),
        "number" => serde_json::json!({"type": "number"}),
        "bool" => serde_json::json!({"type": "boolean"}),
        "string" => serde_json::json!({"type": "string", "maxLength": MAX_CONFIG_STRING_LEN}),
        other => panic!("unknown config type {other}"),
    };
    if nullable {
        schema["nullable"] = true.into();
    }
    schema
}

fn leaf_schema(json_type: &str) -> serde_json::Value {
    match json_type {
        "object" => {
            serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        }
        other => serde_json::json!({ "type": other }),
    }
}

/// Observed state, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureQdrantStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Summary: Pending, Progressing, Ready, Degraded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Pods the StatefulSet runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Conditions: Ready, Reconciled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Where clients reach Qdrant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// Names of the Secrets applications and administrators use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretNames>,

    /// The serving certificate and its CA (absent when TLS is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,

    /// True once the StatefulSet has run (or been asked to run) more than one replica; never
    /// cleared. Qdrant stores each peer's URI, scheme included, in its Raft state, so from then on
    /// `spec.tls.enabled` cannot change (a CEL rule and the operator refuse it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clustered: bool,

    /// True once the operator saw at least two peers of the cluster ready, every pod running the
    /// current template; never cleared. From
    /// then on a pod 0 that starts without Raft state (a wiped volume) joins the cluster through
    /// pod 1 instead of starting a new one-peer cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_formed: bool,
}

/// Validity of the serving certificate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// When the serving certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When the operator renews it (or, for a certificate you bring, starts warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// When the CA expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<String>,
}

/// Summary of a SecureQdrant's state.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Degraded,
    Failed,
}

/// Client endpoints.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Endpoints {
    /// REST URL.
    pub rest: String,
    /// gRPC URL.
    pub grpc: String,
}

/// Secrets of an instance.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretNames {
    /// Secret holding `api-key` and `read-only-api-key`.
    pub api_key: String,
    /// Secret the pods mount for TLS (`tls.crt`, `tls.key`, `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Secret holding the operator's CA (absent when you bring a CA or a certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Secret holding the client certificate metrics scrapers present (`tls.crt`, `tls.key`,
    /// `ca.crt`): only with spec.tls.clientCertificates and spec.network.metrics, when the
    /// operator signs certificates (not with spec.tls.certificateSecretRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_client: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_config_key_is_documented_once_and_no_other() {
        let refused: Vec<&str> = FORBIDDEN_USER_CONFIG.iter().map(|(p, _)| *p).collect();
        let documented: Vec<&str> = MANAGED_CONFIG_DOCS.iter().map(|(p, _)| *p).collect();
        assert_eq!(documented, refused);
        let schema = serde_json::to_value(user_config_schema(&mut SchemaGenerator::default()))
            .expect("a schema serializes");
        assert_eq!(
            schema["properties"]["service"]["properties"]["jwt_rbac"]["description"],
            "Set by the operator; use spec.auth.jwtRbac. Refused in spec.config."
        );
    }
}
