//! Validation: turns a `SecureQdrant` into an [`Instance`] with every default resolved, or into a
//! list of problems. Pure: no I/O, no clock. After this step the raw custom resource is only used
//! for its owner reference.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value};

use crate::crd::{
    AuditSpec, AuthSpec, ImagePullPolicy, MAX_NAME_LEN, MAX_REPLICAS, NetworkSpec,
    PodSpecOverrides, SecureQdrant, TlsSpec,
};
use crate::qdrant::FORBIDDEN_USER_CONFIG;
use crate::settings::Settings;

/// A validated SecureQdrant: everything the builders need, defaults resolved.
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

    /// Where Qdrant's full-access key comes from: (Secret, key).
    pub fn api_key_ref(&self) -> (String, String) {
        match &self.auth.api_key_secret_ref {
            Some(r) => (r.name.clone(), r.key.clone()),
            None => (
                self.api_key_secret_name(),
                crate::material::API_KEY.to_owned(),
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
            keys.push(crate::material::API_KEY);
        }
        if self.auth.read_only_api_key {
            keys.push(crate::material::READ_ONLY_API_KEY);
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

/// One problem with a spec, addressed to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// JSON path of the field, e.g. `spec.storage.size`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems of a spec joined into one message for a condition or an Event.
pub fn describe(problems: &[Invalid]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// Bounds the CRD schema sets with schemars attributes in `crate::crd` (kept equal by
// tests/bad_input.rs, which checks both layers at each bound).
const MAX_IMAGE_LEN: usize = 512;
const MAX_QUANTITY_LEN: usize = 64;
const MAX_STORAGE_CLASS_LEN: usize = 253;
const MAX_LOG_FILES: u32 = 10_000;
/// The shortest `spec.auth.keyRotationGracePeriod`: about how long kubelets take to refresh a
/// mounted Secret (the CRD's CEL rule says the same).
const MIN_KEY_ROTATION_GRACE: Duration = Duration::from_secs(60);

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Validates a SecureQdrant. Checks everything the CRD schema checks (an old CRD, a tool that
/// skips admission, or `render` must not get past) plus what the schema cannot see.
pub fn validate(sq: &SecureQdrant, settings: &Settings) -> Result<Instance, Vec<Invalid>> {
    let mut problems = Vec::new();
    let spec = &sq.spec;
    let name = sq.name_any();

    if name.is_empty() {
        problems.push(invalid("metadata.name", "is required"));
    } else if name.len() > MAX_NAME_LEN || !is_dns1035_label(&name) {
        problems.push(invalid(
            "metadata.name",
            format!(
                "must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) \
                 of at most {MAX_NAME_LEN} characters"
            ),
        ));
    }
    let namespace = sq.namespace().unwrap_or_default();
    if namespace.is_empty() {
        problems.push(invalid("metadata.namespace", "is required"));
    }
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        problems.push(invalid(
            "spec.replicas",
            format!(
                "must be between 1 and {MAX_REPLICAS}, got {}",
                spec.replicas
            ),
        ));
    }
    if spec.image.is_empty() || spec.image.chars().any(char::is_whitespace) {
        problems.push(invalid(
            "spec.image",
            "must be a non-empty image reference without spaces",
        ));
    }
    // The CRD schema's maxLength bounds (counted in characters, as the apiserver counts them).
    for (field, value, max) in [
        ("spec.image", Some(&spec.image), MAX_IMAGE_LEN),
        (
            "spec.storage.size",
            Some(&spec.storage.size),
            MAX_QUANTITY_LEN,
        ),
        (
            "spec.storage.storageClassName",
            spec.storage.storage_class_name.as_ref(),
            MAX_STORAGE_CLASS_LEN,
        ),
        (
            "spec.snapshots.size",
            spec.snapshots.size.as_ref(),
            MAX_QUANTITY_LEN,
        ),
    ] {
        if let Some(value) = value
            && value.chars().count() > max
        {
            problems.push(invalid(field, format!("may be at most {max} characters")));
        }
    }
    let storage_size = positive_quantity("spec.storage.size", &spec.storage.size, &mut problems);
    if let Some(class) = &spec.storage.storage_class_name
        && class.is_empty()
    {
        problems.push(invalid(
            "spec.storage.storageClassName",
            "may not be empty (omit it for the default class)",
        ));
    }
    let snapshots_size = spec
        .snapshots
        .size
        .as_deref()
        .and_then(|s| positive_quantity("spec.snapshots.size", s, &mut problems));
    if !(1..=MAX_LOG_FILES).contains(&spec.audit.max_log_files) {
        problems.push(invalid(
            "spec.audit.maxLogFiles",
            format!(
                "must be between 1 and {MAX_LOG_FILES}, got {}",
                spec.audit.max_log_files
            ),
        ));
    }
    check_user_config(&spec.config, &mut problems);
    let tls = check_tls(&spec.tls, &mut problems);
    let key_rotation_grace = duration(
        "spec.auth.keyRotationGracePeriod",
        &spec.auth.key_rotation_grace_period,
        &mut problems,
    )
    .filter(|grace| {
        let enough = *grace >= MIN_KEY_ROTATION_GRACE;
        if !enough {
            problems.push(invalid(
                "spec.auth.keyRotationGracePeriod",
                format!(
                    "must be at least 1m, got {:?}: kubelets take up to about a minute to \
                     refresh a mounted Secret, so a shorter grace period removes the old key \
                     before every consumer can have the new one",
                    spec.auth.key_rotation_grace_period
                ),
            ));
        }
        enough
    });
    if let Some(r) = &spec.auth.api_key_secret_ref
        && (r.name.is_empty() || r.key.is_empty())
    {
        problems.push(invalid(
            "spec.auth.apiKeySecretRef",
            "needs both name and key",
        ));
    }
    for key in spec.pod.labels.keys() {
        if key.starts_with("app.kubernetes.io/") {
            problems.push(invalid(
                format!("spec.pod.labels[{key}]"),
                "app.kubernetes.io/* labels are set by the operator",
            ));
        }
    }
    for key in spec.pod.annotations.keys() {
        if key.starts_with("secureqdrant.dev/") {
            problems.push(invalid(
                format!("spec.pod.annotations[{key}]"),
                "secureqdrant.dev/* annotations are set by the operator",
            ));
        }
    }
    if let Some(resources) = &spec.resources {
        check_resources(resources, &mut problems);
    }
    check_peers("spec.network.clients", &spec.network.clients, &mut problems);
    check_peers("spec.network.metrics", &spec.network.metrics, &mut problems);
    for (i, rule) in spec.network.extra_egress.iter().enumerate() {
        let field = format!("spec.network.extraEgress[{i}]");
        check_peers(
            &format!("{field}.to"),
            rule.to.as_deref().unwrap_or_default(),
            &mut problems,
        );
        check_ports(
            &format!("{field}.ports"),
            rule.ports.as_deref().unwrap_or_default(),
            &mut problems,
        );
    }

    let owner = sq.controller_owner_ref(&());
    if owner.is_none() {
        problems.push(invalid(
            "metadata.uid",
            "is missing (not read from the API)",
        ));
    }

    match (problems.is_empty(), owner, storage_size, key_rotation_grace) {
        (true, Some(owner), Some(size), Some(key_rotation_grace)) => Ok(Instance {
            name,
            namespace,
            owner,
            generation: sq.meta().generation,
            replicas: spec.replicas,
            image: spec.image.clone(),
            image_pull_policy: spec.image_pull_policy,
            image_pull_secrets: spec.image_pull_secrets.clone(),
            resources: resources_or_default(spec.resources.as_ref()),
            storage: Storage {
                size,
                class: spec.storage.storage_class_name.clone(),
                retain_on_delete: spec.storage.retain_on_delete,
            },
            snapshots_size,
            auth: spec.auth.clone(),
            key_rotation_grace,
            tls,
            network: spec.network.clone(),
            audit: spec.audit.clone(),
            user_config: spec.config.clone().into_iter().collect(),
            pod: spec.pod.clone(),
            cluster_domain: settings.cluster_domain.clone(),
            cluster_formed: false,
        }),
        _ => Err(problems),
    }
}

/// Requests and limits when the user gives none: enough for a small collection, and bounded.
pub fn resources_or_default(given: Option<&ResourceRequirements>) -> ResourceRequirements {
    match given {
        Some(r) if r.requests.is_some() || r.limits.is_some() => r.clone(),
        _ => ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("500m".to_owned())),
                ("memory".to_owned(), Quantity("1Gi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("2".to_owned())),
                ("memory".to_owned(), Quantity("2Gi".to_owned())),
            ])),
            ..ResourceRequirements::default()
        },
    }
}

fn check_resources(r: &ResourceRequirements, problems: &mut Vec<Invalid>) {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (res, q) in map.iter().flatten() {
            if parse_quantity(&q.0).is_none() {
                problems.push(invalid(
                    format!("spec.resources.{kind}.{res}"),
                    format!("{:?} is not a quantity", q.0),
                ));
            }
        }
    }
    if let (Some(req), Some(lim)) = (&r.requests, &r.limits) {
        for (res, want) in req {
            if let (Some(want), Some(cap)) = (
                parse_quantity(&want.0),
                lim.get(res).and_then(|q| parse_quantity(&q.0)),
            ) && want > cap
            {
                problems.push(invalid(
                    format!("spec.resources.requests.{res}"),
                    "may not exceed the limit",
                ));
            }
        }
    }
}

fn duration(field: &str, value: &str, problems: &mut Vec<Invalid>) -> Option<Duration> {
    match value.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() && !Duration::from(d).is_zero() => Some(d.into()),
        Ok(_) => {
            problems.push(invalid(field, format!("must be positive, got {value:?}")));
            None
        }
        Err(_) => {
            problems.push(invalid(
                field,
                format!("{value:?} is not a duration (examples: 2160h, 90m)"),
            ));
            None
        }
    }
}

fn check_tls(tls: &TlsSpec, problems: &mut Vec<Invalid>) -> Option<TlsSettings> {
    let before = problems.len();
    if !tls.enabled {
        if tls.client_certificates
            || tls.ca_secret_ref.is_some()
            || tls.certificate_secret_ref.is_some()
        {
            problems.push(invalid(
                "spec.tls.enabled",
                "clientCertificates, caSecretRef and certificateSecretRef need TLS enabled",
            ));
        }
        return None;
    }
    let lifetime = duration(
        "spec.tls.certificateLifetime",
        &tls.certificate_lifetime,
        problems,
    );
    let ca_lifetime = duration("spec.tls.caLifetime", &tls.ca_lifetime, problems);
    let renew_before = match &tls.renew_before {
        Some(r) => duration("spec.tls.renewBefore", r, problems),
        None => lifetime.map(|l| l / 3),
    };
    if let Some(l) = lifetime
        && l < Duration::from_secs(3600)
    {
        problems.push(invalid(
            "spec.tls.certificateLifetime",
            "must be at least 1h",
        ));
    }
    if let (Some(l), Some(ca)) = (lifetime, ca_lifetime)
        && ca <= l
    {
        problems.push(invalid(
            "spec.tls.caLifetime",
            "must be longer than spec.tls.certificateLifetime",
        ));
    }
    if let (Some(l), Some(r), Some(_)) = (lifetime, renew_before, &tls.renew_before)
        && (r >= l || r < Duration::from_secs(300))
    {
        problems.push(invalid(
            "spec.tls.renewBefore",
            "must be at least 5m and shorter than spec.tls.certificateLifetime",
        ));
    }
    let source = match (&tls.ca_secret_ref, &tls.certificate_secret_ref) {
        (Some(_), Some(_)) => {
            problems.push(invalid(
                "spec.tls",
                "set caSecretRef or certificateSecretRef, not both",
            ));
            TlsSource::OperatorCa
        }
        (Some(ca), None) => TlsSource::UserCa(ca.name.clone()),
        (None, Some(cert)) => TlsSource::UserCertificate(cert.name.clone()),
        (None, None) => TlsSource::OperatorCa,
    };
    for (i, name) in tls.extra_dns_names.iter().enumerate() {
        let bare = name.strip_prefix("*.").unwrap_or(name);
        let ok = !bare.is_empty()
            && name.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            problems.push(invalid(
                format!("spec.tls.extraDnsNames[{i}]"),
                format!("{name:?} is not a lowercase DNS name"),
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(TlsSettings {
        certificate_lifetime: lifetime?,
        renew_before: renew_before?,
        ca_lifetime: ca_lifetime?,
        client_certificates: tls.client_certificates,
        source,
        extra_dns_names: tls.extra_dns_names.clone(),
    })
}

/// NetworkPolicy peers the API server would reject are reported here, before anything is applied.
fn check_peers(field: &str, peers: &[NetworkPolicyPeer], problems: &mut Vec<Invalid>) {
    for (i, peer) in peers.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match &peer.ip_block {
            None if !selectors => problems.push(invalid(
                &field,
                "a peer needs podSelector, namespaceSelector or ipBlock ({} is not allowed)",
            )),
            Some(_) if selectors => problems.push(invalid(
                &field,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            )),
            Some(block) => check_ip_block(&format!("{field}.ipBlock"), block, problems),
            None => {}
        }
        for (name, selector) in [
            ("podSelector", &peer.pod_selector),
            ("namespaceSelector", &peer.namespace_selector),
        ] {
            if let Some(sel) = selector {
                check_selector(&format!("{field}.{name}"), sel, problems);
            }
        }
    }
}

fn check_ip_block(field: &str, block: &IPBlock, problems: &mut Vec<Invalid>) {
    let Ok(cidr) = block.cidr.parse::<IpNet>() else {
        problems.push(invalid(
            format!("{field}.cidr"),
            format!("{:?} is not a CIDR such as 10.0.0.0/8", block.cidr),
        ));
        return;
    };
    for (j, except) in block.except.iter().flatten().enumerate() {
        match except.parse::<IpNet>() {
            Ok(net) if cidr.contains(&net) && net != cidr => {}
            Ok(_) => problems.push(invalid(
                format!("{field}.except[{j}]"),
                format!("{except} must lie strictly inside {cidr}"),
            )),
            Err(_) => problems.push(invalid(
                format!("{field}.except[{j}]"),
                format!("{except:?} is not a CIDR"),
            )),
        }
    }
}

fn check_selector(field: &str, sel: &LabelSelector, problems: &mut Vec<Invalid>) {
    for (j, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_ref().is_some_and(|v| !v.is_empty());
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" => values,
            "Exists" | "DoesNotExist" => !values,
            _ => false,
        };
        if !ok {
            problems.push(invalid(
                format!("{field}.matchExpressions[{j}]"),
                "operator must be In or NotIn with values, or Exists or DoesNotExist without",
            ));
        }
    }
}

fn check_ports(field: &str, ports: &[NetworkPolicyPort], problems: &mut Vec<Invalid>) {
    for (i, p) in ports.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            problems.push(invalid(
                format!("{field}.protocol"),
                "must be TCP, UDP or SCTP",
            ));
        }
        match (&p.port, p.end_port) {
            (Some(IntOrString::Int(n)), end) => {
                if !(1..=65535).contains(n) {
                    problems.push(invalid(
                        format!("{field}.port"),
                        "must be between 1 and 65535",
                    ));
                }
                if let Some(end) = end
                    && (end < *n || end > 65535)
                {
                    problems.push(invalid(
                        format!("{field}.endPort"),
                        "must be at least port and at most 65535",
                    ));
                }
            }
            (Some(IntOrString::String(_)), Some(_)) | (None, Some(_)) => {
                problems.push(invalid(format!("{field}.endPort"), "needs a numeric port"))
            }
            _ => {}
        }
    }
}

fn positive_quantity(field: &str, value: &str, problems: &mut Vec<Invalid>) -> Option<Quantity> {
    match parse_quantity(value) {
        Some(v) if v > 0.0 => Some(Quantity(value.to_owned())),
        Some(_) => {
            problems.push(invalid(
                field,
                format!("must be greater than zero, got {value:?}"),
            ));
            None
        }
        None => {
            problems.push(invalid(
                field,
                format!("{value:?} is not a quantity (examples: 10Gi, 500Mi)"),
            ));
            None
        }
    }
}

/// Parses a Kubernetes quantity (`10Gi`, `500m`, `1.5`, `2e3`) to its value; None if malformed.
/// Only what validation needs: the sign and the order of magnitude of the value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suf, f)| s.strip_suffix(suf).map(|n| (n, *f)))
        .or_else(|| s.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((s, 1.0));
    let digits_ok = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'))
        && number
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-' || c == '.');
    if !digits_ok {
        return None;
    }
    let v: f64 = number.parse().ok()?;
    v.is_finite().then_some(v * factor)
}

fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}

fn check_user_config(config: &BTreeMap<String, Value>, problems: &mut Vec<Invalid>) {
    fn walk(path: &str, value: &Value, problems: &mut Vec<Invalid>) {
        let Value::Object(map) = value else { return };
        for (k, v) in map {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('.') || k.chars().any(|c| c.is_ascii_uppercase()) || k.is_empty() {
                problems.push(invalid(
                    format!("spec.config.{child}"),
                    "config keys must be lowercase and nested ({service: {x: 1}}, not 'service.x')",
                ));
                continue;
            }
            if let Some((owned, _)) = FORBIDDEN_USER_CONFIG
                .iter()
                .find(|(p, _)| *p == child || child.starts_with(&format!("{p}.")))
            {
                problems.push(invalid(
                    format!("spec.config.{child}"),
                    format!("`{owned}` is managed by the operator and cannot be set"),
                ));
                continue;
            }
            walk(&child, v, problems);
        }
    }
    let root = Value::Object(config.clone().into_iter().collect());
    walk("", &root, problems);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("0"), Some(0.0));
        for bad in ["", "Gi", "ten", "10 Gi", "10GB", "--1", "1Gi "] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    fn sq(spec: &str) -> SecureQdrant {
        let mut sq: SecureQdrant = serde_yaml_ng::from_str(&format!(
            "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {{name: v, namespace: n, uid: u}}\nspec: {spec}\n"
        ))
        .unwrap();
        sq.metadata.generation = Some(1);
        sq
    }

    fn fields(spec: &str) -> Vec<String> {
        match validate(&sq(spec), &Settings::default()) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.field).collect(),
        }
    }

    #[test]
    fn network_peers_the_api_server_would_reject_are_reported() {
        assert_eq!(
            fields("{network: {clients: [{}]}}"),
            ["spec.network.clients[0]"]
        );
        assert_eq!(
            fields("{network: {metrics: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}}"),
            ["spec.network.metrics[0]"]
        );
        assert_eq!(
            fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/33}}]}}"),
            ["spec.network.clients[0].ipBlock.cidr"]
        );
        assert_eq!(
            fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}}"),
            ["spec.network.clients[0].ipBlock.except[0]"]
        );
        assert_eq!(
            fields(
                "{network: {clients: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}}"
            ),
            ["spec.network.clients[0].podSelector.matchExpressions[0]"]
        );
        assert_eq!(
            fields(
                "{network: {extraEgress: [{ports: [{port: 70000}, {port: 80, endPort: 79}, {protocol: ICMP}]}]}}"
            ),
            [
                "spec.network.extraEgress[0].ports[0].port",
                "spec.network.extraEgress[0].ports[1].endPort",
                "spec.network.extraEgress[0].ports[2].protocol"
            ]
        );
        // Valid peers pass.
        assert!(fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {namespaceSelector: {matchExpressions: [{key: a, operator: Exists}]}}], extraEgress: [{to: [{ipBlock: {cidr: '::/0'}}], ports: [{port: 443, endPort: 444}]}]}}").is_empty());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns1035_label("vectors"));
        assert!(is_dns1035_label("a-1"));
        for bad in ["", "1abc", "Abc", "a_b", "a-", "a.b"] {
            assert!(!is_dns1035_label(bad), "{bad}");
        }
    }
}
