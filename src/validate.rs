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
    PodSpecOverrides, SecureQdrant, SecureQdrantSpec, TlsSpec,
};
use crate::qdrant::{ALLOWED_USER_CONFIG, FORBIDDEN_USER_CONFIG};
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
const MAX_TOLERATIONS: usize = 32;
/// The CRD's maxLength of an allowed string key of `spec.config` (`log_level`).
const MAX_CONFIG_STRING_LEN: usize = 64;
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
    if let Some(why) = name_covers_cluster_names(&name, &settings.cluster_domain) {
        problems.push(invalid("metadata.name", why));
    }
    check_secret_refs(spec, &name, &mut problems);
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
    let tls = check_tls(&spec.tls, &name, &namespace, settings, &mut problems);
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
    check_image(&spec.image, &settings.policy, &mut problems);
    check_pod(&spec.pod, &settings.policy, &mut problems);
    check_peers(
        "spec.network.clients",
        &spec.network.clients,
        None,
        &mut problems,
    );
    check_peers(
        "spec.network.metrics",
        &spec.network.metrics,
        None,
        &mut problems,
    );
    for (i, rule) in spec.network.extra_egress.iter().enumerate() {
        let field = format!("spec.network.extraEgress[{i}]");
        check_peers(
            &format!("{field}.to"),
            rule.to.as_deref().unwrap_or_default(),
            Some(&settings.policy.egress_cidrs),
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

/// Why `name` may not name an instance: its CA's name constraints permit the single-label
/// Service names `<name>` and `<name>-headless`, and a dNSName constraint `x` permits every name
/// under `x` too, so a name equal to `svc` or to a label of the cluster domain would let the
/// CA's key sign `kubernetes.default.svc` or `*.svc.cluster.local`.
pub fn name_covers_cluster_names(name: &str, cluster_domain: &str) -> Option<String> {
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    let headless = format!("{name}-headless");
    let taken = std::iter::once("svc").chain(domain.split('.').filter(|l| !l.is_empty()));
    for label in taken {
        if let Some(service) = [name, headless.as_str()].into_iter().find(|s| *s == label) {
            return Some(format!(
                "may not be {name:?}: the instance's CA may sign for the Service name \
                 {service:?} and every name under it, and {label:?} is a label of every \
                 in-cluster Service name (svc.{domain}); choose another name"
            ));
        }
    }
    None
}

/// Refuses a referenced Secret (API key, CA, certificate, image pull) whose name is one of
/// the instance's own Secret names, which the operator writes itself.
fn check_secret_refs(spec: &SecureQdrantSpec, name: &str, problems: &mut Vec<Invalid>) {
    let own = crate::children::meta::instance_secret_names(name);
    let mut refs: Vec<(String, &str)> = Vec::new();
    if let Some(r) = &spec.auth.api_key_secret_ref {
        refs.push(("spec.auth.apiKeySecretRef.name".to_owned(), &r.name));
    }
    if let Some(r) = &spec.tls.ca_secret_ref {
        refs.push(("spec.tls.caSecretRef.name".to_owned(), &r.name));
    }
    if let Some(r) = &spec.tls.certificate_secret_ref {
        refs.push(("spec.tls.certificateSecretRef.name".to_owned(), &r.name));
    }
    for (i, r) in spec.image_pull_secrets.iter().enumerate() {
        refs.push((format!("spec.imagePullSecrets[{i}].name"), &r.name));
    }
    for (field, secret) in refs {
        if own.iter().any(|o| o == secret) {
            problems.push(invalid(
                field,
                format!(
                    "{secret:?} is a name the operator uses for this instance's own Secrets \
                     ({}): rename your Secret",
                    own.join(", ")
                ),
            ));
        }
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

fn check_tls(
    tls: &TlsSpec,
    name: &str,
    namespace: &str,
    settings: &Settings,
    problems: &mut Vec<Invalid>,
) -> Option<TlsSettings> {
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
        None => lifetime.map(crate::tls::default_renew_before),
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
    let instance = name;
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
        } else if let Err(why) = check_extra_dns_name(name, instance, namespace, settings) {
            problems.push(invalid(format!("spec.tls.extraDnsNames[{i}]"), why));
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

/// Whether `name` (a well-formed DNS name, maybe `*.`-prefixed) may go into the serving
/// certificate of instance `instance` in `namespace`, and so into its CA's name constraints:
/// - the instance's own Service names (always in the certificate anyway) are accepted;
/// - any other name under `.svc`, `svc.<cluster domain>` or the cluster domain is refused: it
///   is another Service (another instance, `kubernetes.default.svc`), and a certificate for it
///   would let this instance's pods impersonate that Service to its clients;
/// - any other name must lie within a suffix the administrator allows
///   ([`Settings::allowed_dns_suffixes`]; none by default): a name outside the cluster belongs
///   to someone, and only the administrator knows which domains this cluster's tenants own;
/// - a wildcard is only a leftmost `*.` followed by a name within an allowed suffix
///   (`*.vectors.example.com`, or `*.example.com` itself, with `example.com` allowed): it then
///   covers names of that subtree only, which the administrator allowed as a whole; never an
///   in-cluster wildcard (`*.search.svc` would cover every Service of the namespace).
pub fn check_extra_dns_name(
    name: &str,
    instance: &str,
    namespace: &str,
    settings: &Settings,
) -> Result<(), String> {
    let domain = settings.cluster_domain.trim_end_matches('.');
    let own = crate::tls::serving_dns_names(instance, namespace, domain, &[]);
    if own.iter().any(|n| n == name) {
        return Ok(());
    }
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let under = |suffix: &str| bare == suffix || bare.ends_with(&format!(".{suffix}"));
    if under("svc") || under(domain) {
        return Err(format!(
            "{name:?} is an in-cluster name that is not one of this instance's own Service \
             names (those are always in the certificate): it names another Service, which \
             this instance may not impersonate"
        ));
    }
    if !settings.allowed_dns_suffixes.iter().any(|s| under(s)) {
        let allowed = if settings.allowed_dns_suffixes.is_empty() {
            "the operator allows no extra names (an administrator sets them with \
             --allowed-dns-suffixes, chart value policy.allowedDnsSuffixes)"
                .to_owned()
        } else {
            format!(
                "the operator allows names only under {}",
                settings.allowed_dns_suffixes.join(", ")
            )
        };
        return Err(format!(
            "{name:?} is not within an allowed DNS suffix: {allowed}"
        ));
    }
    Ok(())
}

/// NetworkPolicy peers the API server would reject are reported here, before anything is applied;
/// so are address ranges the policy refuses: `egress` (for `extraEgress`) is where the
/// administrator allows ipBlocks to point.
fn check_peers(
    field: &str,
    peers: &[NetworkPolicyPeer],
    egress: Option<&[IpNet]>,
    problems: &mut Vec<Invalid>,
) {
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
            Some(block) => check_ip_block(&format!("{field}.ipBlock"), block, egress, problems),
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

/// Link-local and cloud metadata ranges no ipBlock may reach (169.254.169.254 and
/// fd00:ec2::254 are the metadata services of the big clouds; `::ffff:169.254.0.0/112` is the
/// IPv4-mapped form of the first). A block that contains one must list it in `except`.
pub const LINK_LOCAL_RANGES: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "::ffff:169.254.0.0/112",
];

fn check_ip_block(
    field: &str,
    block: &IPBlock,
    egress: Option<&[IpNet]>,
    problems: &mut Vec<Invalid>,
) {
    let Ok(cidr) = block.cidr.parse::<IpNet>() else {
        problems.push(invalid(
            format!("{field}.cidr"),
            format!("{:?} is not a CIDR such as 10.0.0.0/8", block.cidr),
        ));
        return;
    };
    let mut excepts = Vec::new();
    for (j, except) in block.except.iter().flatten().enumerate() {
        match except.parse::<IpNet>() {
            Ok(net) if cidr.contains(&net) && net != cidr => excepts.push(net),
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
    // Compared by overlap, not by string: two CIDR blocks overlap exactly when one contains
    // the other (with the host bits cleared).
    let cidr = cidr.trunc();
    for range in LINK_LOCAL_RANGES {
        let range: IpNet = range.parse().expect("a valid constant");
        if range.contains(&cidr) {
            problems.push(invalid(
                format!("{field}.cidr"),
                format!(
                    "{cidr} lies inside the link-local range {range} (cloud metadata services): \
                     not allowed"
                ),
            ));
        } else if cidr.contains(&range) && !excepts.iter().any(|e| e.trunc().contains(&range)) {
            problems.push(invalid(
                format!("{field}.cidr"),
                format!(
                    "{cidr} contains the link-local range {range} (cloud metadata services): \
                     add {range} to except"
                ),
            ));
        }
    }
    if let Some(allowed) = egress
        && !allowed.iter().any(|a| a.contains(&cidr))
    {
        problems.push(invalid(
            format!("{field}.cidr"),
            format!(
                "{cidr} is outside the ranges the operator's policy allows for egress ({}); an \
                 administrator can allow more (chart value policy.egressCidrs)",
                allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
}

/// Network openings the instance's owner should know about, as (condition type, message):
/// egress beyond its peers and DNS, and clients or scrapers from every namespace. They are
/// allowed (within the policy) and reported as True conditions.
pub fn network_warnings(inst: &Instance) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !inst.network.extra_egress.is_empty() {
        out.push((
            "EgressBeyondPeers",
            format!(
                "spec.network.extraEgress opens {} egress rule(s) beyond the instance's peers and \
                 DNS",
                inst.network.extra_egress.len()
            ),
        ));
    }
    let everywhere = |peers: &[NetworkPolicyPeer]| {
        peers.iter().any(|p| {
            p.namespace_selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                    && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
            })
        })
    };
    let mut open = Vec::new();
    if everywhere(&inst.network.clients) {
        open.push("spec.network.clients");
    }
    if everywhere(&inst.network.metrics) {
        open.push("spec.network.metrics");
    }
    if !open.is_empty() {
        out.push((
            "IngressFromAllNamespaces",
            format!(
                "{} select(s) pods in every namespace (namespaceSelector: {{}})",
                open.join(" and ")
            ),
        ));
    }
    out
}

/// An image reference, normalised as container runtimes read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry/path`, with `docker.io` and `library/` filled in (`docker.io/library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

/// Parses an image reference (the distribution reference grammar): None when malformed.
pub fn parse_image(image: &str) -> Option<ImageRef> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':')?;
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !alg_ok || !hex_ok || (alg == "sha256" && hex.len() != 64) {
            return None;
        }
    }
    let name_start = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[name_start..].rfind(':') {
        Some(i) => (&rest[..name_start + i], Some(&rest[name_start + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return None;
        }
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_ascii_lowercase(), path.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => registry,
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if registry.is_empty() || !path.split('/').all(component_ok) {
        return None;
    }
    let path = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Some(ImageRef {
        repository: format!("{registry}/{path}"),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// Whether the policy's list allows a normalised repository.
pub fn image_allowed(repository: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| match entry.strip_suffix("/*") {
        // Normalised through a child (`tree/x`), so a bare registry (`registry.example.com/*`)
        // stays a registry and `qdrant/*` means `docker.io/qdrant/*`.
        Some(tree) => parse_image(&format!("{tree}/x")).is_some_and(|t| {
            let prefix = t.repository.strip_suffix('x').unwrap_or(&t.repository);
            repository.starts_with(prefix)
        }),
        None => parse_image(entry).is_some_and(|e| e.repository == repository),
    })
}

fn check_image(image: &str, policy: &crate::settings::Policy, problems: &mut Vec<Invalid>) {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return; // reported above
    }
    let Some(reference) = parse_image(image) else {
        problems.push(invalid(
            "spec.image",
            format!("{image:?} is not an image reference (registry/path:tag or @sha256:...)"),
        ));
        return;
    };
    if !image_allowed(&reference.repository, &policy.image_repositories) {
        problems.push(invalid(
            "spec.image",
            format!(
                "repository {} is not allowed by the operator's policy (allowed: {}; chart value \
                 policy.allowedImages)",
                reference.repository,
                policy.image_repositories.join(", ")
            ),
        ));
    }
    if policy.require_image_digest && reference.digest.is_none() {
        problems.push(invalid(
            "spec.image",
            "the operator's policy requires a digest (image@sha256:...)",
        ));
    }
}

fn check_pod(
    pod: &PodSpecOverrides,
    policy: &crate::settings::Policy,
    problems: &mut Vec<Invalid>,
) {
    let refused_node_key = |key: &str| policy.refused_node_keys.iter().any(|k| k == key);
    if pod.tolerations.len() > MAX_TOLERATIONS {
        problems.push(invalid(
            "spec.pod.tolerations",
            format!("may hold at most {MAX_TOLERATIONS} entries"),
        ));
    }
    for (i, t) in pod.tolerations.iter().enumerate() {
        let key = t.key.as_deref().unwrap_or_default();
        if key.is_empty() && t.operator.as_deref() == Some("Exists") {
            problems.push(invalid(
                format!("spec.pod.tolerations[{i}]"),
                "a toleration with operator Exists and no key tolerates every taint (control \
                 plane, NoExecute evictions): not allowed; name the taint's key",
            ));
        } else if refused_node_key(key) {
            problems.push(invalid(
                format!("spec.pod.tolerations[{i}].key"),
                format!("{key} is refused by the operator's policy (control-plane nodes)"),
            ));
        }
    }
    for key in pod.node_selector.keys() {
        if refused_node_key(key) {
            problems.push(invalid(
                format!("spec.pod.nodeSelector[{key}]"),
                format!("{key} is refused by the operator's policy (control-plane nodes)"),
            ));
        }
    }
    if let Some(node) = pod.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
        let required = node
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flat_map(|r| r.node_selector_terms.iter());
        let preferred = node
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|p| &p.preference);
        for term in required.chain(preferred) {
            for expr in term
                .match_expressions
                .iter()
                .flatten()
                .chain(term.match_fields.iter().flatten())
            {
                if refused_node_key(&expr.key)
                    && !matches!(expr.operator.as_str(), "NotIn" | "DoesNotExist")
                {
                    problems.push(invalid(
                        "spec.pod.affinity.nodeAffinity",
                        format!(
                            "selects on {} ({}), refused by the operator's policy \
                             (control-plane nodes)",
                            expr.key, expr.operator
                        ),
                    ));
                }
            }
        }
    }
    if let Some(class) = &pod.priority_class_name
        && policy.refused_priority_classes.contains(class)
    {
        problems.push(invalid(
            "spec.pod.priorityClassName",
            format!("{class} is reserved for the cluster's own pods (operator policy)"),
        ));
    }
    for (what, keys) in [
        ("labels", pod.labels.keys().collect::<Vec<_>>()),
        ("annotations", pod.annotations.keys().collect()),
    ] {
        for key in keys {
            if key.starts_with("app.kubernetes.io/")
                || (what == "annotations" && key.starts_with("secureqdrant.dev/"))
            {
                continue; // reported with its own message
            }
            if let Some(prefix) = policy.refuses_metadata_key(key) {
                problems.push(invalid(
                    format!("spec.pod.{what}[{key}]"),
                    format!(
                        "keys under {prefix} are refused by the operator's policy (they change \
                         how Kubernetes or an injector treats the pod)"
                    ),
                ));
            }
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
            let field = format!("spec.config.{child}");
            if k.contains('.') || k.chars().any(|c| c.is_ascii_uppercase()) || k.is_empty() {
                problems.push(invalid(
                    field,
                    "config keys must be lowercase and nested ({service: {x: 1}}, not 'service.x')",
                ));
                continue;
            }
            if let Some((owned, _)) = FORBIDDEN_USER_CONFIG
                .iter()
                .find(|(p, _)| *p == child || child.starts_with(&format!("{p}.")))
            {
                problems.push(invalid(
                    field,
                    format!(
                        "`{owned}` is not allowed: the operator manages it or it reaches outside \
                         the pod (`kubectl explain secureqdrant.spec.config.{owned}` says why and \
                         what to use instead)"
                    ),
                ));
                continue;
            }
            if let Some((_, ty)) = ALLOWED_USER_CONFIG.iter().find(|(p, _)| *p == child) {
                if !crate::qdrant::has_config_type(v, ty) {
                    problems.push(invalid(
                        field,
                        format!("must be of Qdrant's type {ty} (`?`: or null)"),
                    ));
                } else if v
                    .as_str()
                    .is_some_and(|s| s.chars().count() > MAX_CONFIG_STRING_LEN)
                {
                    problems.push(invalid(
                        field,
                        format!("may be at most {MAX_CONFIG_STRING_LEN} characters"),
                    ));
                }
                continue;
            }
            let section = format!("{child}.");
            let mut below: Vec<&str> = ALLOWED_USER_CONFIG
                .iter()
                .filter_map(|(p, _)| p.strip_prefix(&section))
                .collect();
            if below.is_empty() {
                let prefix = if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                };
                let mut siblings: Vec<&str> = ALLOWED_USER_CONFIG
                    .iter()
                    .filter_map(|(p, _)| p.strip_prefix(&prefix))
                    .map(|rest| rest.split('.').next().unwrap_or(rest))
                    .collect();
                siblings.dedup();
                let place = if path.is_empty() {
                    "at the top".to_owned()
                } else {
                    format!("under `{path}`")
                };
                problems.push(invalid(
                    field,
                    format!(
                        "`{child}` is not an allowed tuning key: spec.config accepts only the \
                         keys listed in its description ({place}: {})",
                        siblings.join(", ")
                    ),
                ));
                continue;
            }
            if !v.is_object() {
                below.truncate(8);
                problems.push(invalid(
                    field,
                    format!(
                        "`{child}` is a section: set keys under it ({}, ...)",
                        below.join(", ")
                    ),
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
        assert!(fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {namespaceSelector: {matchExpressions: [{key: a, operator: Exists}]}}], extraEgress: [{to: [{ipBlock: {cidr: 'fd12::/16'}}], ports: [{port: 443, endPort: 444}]}]}}").is_empty());
    }

    fn messages(spec: &str) -> Vec<String> {
        match validate(&sq(spec), &Settings::default()) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn config_keys_that_reach_outside_the_pod_are_refused_by_name() {
        for (spec, field) in [
            (
                "{config: {service: {static_content_dir: /qdrant/tls, enable_static_content: true}}}",
                "spec.config.service.enable_static_content",
            ),
            (
                "{config: {service: {static_content_dir: /qdrant/tls}}}",
                "spec.config.service.static_content_dir",
            ),
            (
                "{config: {storage: {snapshots_config: {snapshots_storage: s3, s3_config: {bucket: b, endpoint_url: 'https://evil.example'}}}}}",
                "spec.config.storage.snapshots_config",
            ),
            (
                "{config: {inference: {address: 'http://169.254.169.254/'}}}",
                "spec.config.inference",
            ),
            (
                "{config: {feature_flags: {all: true}}}",
                "spec.config.feature_flags",
            ),
            (
                "{config: {service: {max_request_size_mb: 100000}}}",
                "spec.config.service.max_request_size_mb",
            ),
            (
                "{config: {storage: {performance: {io_uring: true}}}}",
                "spec.config.storage.performance.io_uring",
            ),
            (
                "{config: {logger: {on_disk: {enabled: true, log_file: /qdrant/storage/x}}}}",
                "spec.config.logger",
            ),
        ] {
            let got = messages(spec);
            assert!(
                got.iter()
                    .any(|m| m.starts_with(&format!("{field}: ")) && m.contains("not allowed")),
                "{spec}: {got:?}"
            );
        }
    }

    #[test]
    fn config_cluster_peer_id_is_refused_because_every_pod_shares_the_config() {
        let got = messages("{replicas: 3, config: {cluster: {peer_id: 1}}}");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("spec.config.cluster.peer_id: `cluster.peer_id` is not allowed"),
            "{got:?}"
        );
        // Not even nested under an allowed section's sibling, nor as null.
        assert!(!messages("{config: {cluster: {peer_id: null}}}").is_empty());
    }

    #[test]
    fn config_is_an_allow_list() {
        // Keys Qdrant reads that are not on the list, and keys nobody reads.
        for (spec, field, says) in [
            (
                "{config: {service: {hardware_reporting: true}}}",
                "spec.config.service.hardware_reporting",
                "under `service`: max_workers",
            ),
            (
                "{config: {storage: {node_type: Listener}}}",
                "spec.config.storage.node_type",
                "under `storage`: on_disk_payload",
            ),
            (
                "{config: {storage: {performance: {async_scorer: true}}}}",
                "spec.config.storage.performance.async_scorer",
                "not allowed",
            ),
            (
                "{config: {loglevel: DEBUG}}",
                "spec.config.loglevel",
                "at the top: log_level, service, cluster, storage",
            ),
            (
                "{config: {storage: {hnsw_index: {m: -1}}}}",
                "spec.config.storage.hnsw_index.m",
                "type uint",
            ),
            (
                "{config: {storage: {optimizers: 5}}}",
                "spec.config.storage.optimizers",
                "is a section",
            ),
            (
                "{config: {storage: {hnsw_index: {m: null}}}}",
                "spec.config.storage.hnsw_index.m",
                "type uint",
            ),
        ] {
            let got = messages(spec);
            assert!(
                got.iter()
                    .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(says)),
                "{spec}: {got:?}"
            );
        }
        // Every allowed key with a value of its type passes.
        let mut config = serde_json::json!({});
        for (path, ty) in ALLOWED_USER_CONFIG {
            let leaf = match ty.trim_end_matches('?') {
                "uint" => serde_json::json!(4),
                "int" => serde_json::json!(-1),
                "number" => serde_json::json!(0.25),
                "bool" => serde_json::json!(true),
                _ => serde_json::json!("INFO"),
            };
            let mut node = &mut config;
            for part in path.split('.') {
                node = &mut node[part];
            }
            *node = leaf;
        }
        assert_eq!(
            messages(&format!("{{config: {config}}}")),
            Vec::<String>::new()
        );
        assert!(
            messages("{config: {storage: {max_collections: null, hnsw_index: {on_disk: null}}}}")
                .is_empty()
        );
    }

    fn messages_with(spec: &str, settings: &Settings) -> Vec<String> {
        match validate(&sq(spec), settings) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    fn assert_refused(spec: &str, field: &str, says: &str) {
        let got = messages(spec);
        assert!(
            got.iter()
                .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(says)),
            "{spec}: expected {field} ({says}), got {got:?}"
        );
    }

    /// Everything beyond the cluster allowed by the admin (for the link-local cases alone).
    fn open_egress() -> Settings {
        let mut s = Settings::default();
        s.policy.egress_cidrs = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        s
    }

    #[test]
    fn ip_blocks_overlapping_link_local_or_metadata_are_refused_unless_excepted() {
        for (cidr, range) in [
            ("0.0.0.0/0", "169.254.0.0/16"),
            ("169.254.169.254/32", "169.254.0.0/16"),
            ("169.254.0.0/15", "169.254.0.0/16"),
            ("168.0.0.0/6", "169.254.0.0/16"),
            ("::/0", "fe80::/10"),
            ("::/0", "fd00:ec2::254/128"),
            ("fd00:ec2::254/128", "fd00:ec2::254/128"),
            ("fd00::/8", "fd00:ec2::254/128"),
            ("::ffff:0:0/96", "::ffff:169.254.0.0/112"),
        ] {
            for list in ["clients", "metrics"] {
                let spec = format!("{{network: {{{list}: [{{ipBlock: {{cidr: '{cidr}'}}}}]}}}}");
                let got = messages_with(&spec, &open_egress());
                let field = format!("spec.network.{list}[0].ipBlock.cidr");
                assert!(
                    got.iter()
                        .any(|m| m.starts_with(&field) && m.contains(range)),
                    "{spec}: {got:?}"
                );
            }
            let spec = format!(
                "{{network: {{extraEgress: [{{to: [{{ipBlock: {{cidr: '{cidr}'}}}}]}}]}}}}"
            );
            let got = messages_with(&spec, &open_egress());
            assert!(
                got.iter().any(
                    |m| m.starts_with("spec.network.extraEgress[0].to[0].ipBlock.cidr")
                        && m.contains(range)
                ),
                "{spec}: {got:?}"
            );
        }
        // An except that covers the range (or a wider one) makes it acceptable.
        for spec in [
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}}]}]}}",
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.0.0.0/8]}}]}]}}",
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: '::/0', except: ['fe80::/10', 'fd00::/8', '::ffff:0:0/96']}}]}]}}",
            "{network: {clients: [{ipBlock: {cidr: 169.254.0.0/15, except: [169.254.0.0/16]}}]}}",
        ] {
            assert_eq!(
                messages_with(spec, &open_egress()),
                Vec::<String>::new(),
                "{spec}"
            );
        }
        // An except that covers only part of it does not.
        assert!(!messages_with(
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]}]}}",
            &open_egress()
        )
        .is_empty());
    }

    #[test]
    fn egress_beyond_the_admins_ranges_is_refused_by_default() {
        // 0.0.0.0/0 minus the metadata range is still the internet: the default policy (private
        // ranges) refuses it, and an administrator can allow it.
        let spec = "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}}]}]}}";
        assert_refused(
            spec,
            "spec.network.extraEgress[0].to[0].ipBlock.cidr",
            "policy.egressCidrs",
        );
        assert!(messages_with(spec, &open_egress()).is_empty());
        assert_refused(
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 8.8.8.8/32}}]}]}}",
            "spec.network.extraEgress[0].to[0].ipBlock.cidr",
            "outside the ranges",
        );
        assert!(
            messages("{network: {extraEgress: [{to: [{ipBlock: {cidr: 10.20.0.0/16}}]}]}}")
                .is_empty()
        );
    }

    #[test]
    fn openings_are_reported_as_warnings() {
        let inst = validate(
            &sq("{network: {clients: [{namespaceSelector: {}}], metrics: [{namespaceSelector: {}, podSelector: {matchLabels: {app: prometheus}}}], extraEgress: [{to: [{namespaceSelector: {}}]}]}}"),
            &Settings::default(),
        )
        .expect("allowed, with warnings");
        let types: Vec<&str> = network_warnings(&inst).iter().map(|(t, _)| *t).collect();
        assert_eq!(types, ["EgressBeyondPeers", "IngressFromAllNamespaces"]);
        let (_, message) = &network_warnings(&inst)[1];
        assert!(
            message.contains("spec.network.clients and spec.network.metrics"),
            "{message}"
        );
        let quiet = validate(&sq("{}"), &Settings::default()).unwrap();
        assert!(network_warnings(&quiet).is_empty());
    }

    #[test]
    fn image_references_are_normalised() {
        let repo = |image: &str| parse_image(image).map(|r| r.repository);
        assert_eq!(
            repo("qdrant/qdrant:v1.19.0"),
            Some("docker.io/qdrant/qdrant".into())
        );
        assert_eq!(
            repo("index.docker.io/qdrant/qdrant"),
            Some("docker.io/qdrant/qdrant".into())
        );
        assert_eq!(repo("busybox"), Some("docker.io/library/busybox".into()));
        assert_eq!(
            repo("localhost:5000/qdrant/qdrant:v1"),
            Some("localhost:5000/qdrant/qdrant".into())
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let full = parse_image(&format!(
            "docker.io/qdrant/qdrant:v1.19.0-unprivileged@{digest}"
        ))
        .unwrap();
        assert_eq!(
            full,
            ImageRef {
                repository: "docker.io/qdrant/qdrant".into(),
                tag: Some("v1.19.0-unprivileged".into()),
                digest: Some(digest.clone()),
            }
        );
        for bad in [
            "Qdrant/Qdrant",
            "qdrant/qdrant@sha256:abc",
            "qdrant/qdrant:",
            "qdrant//qdrant",
            "qdrant/qdrant:-x",
        ] {
            assert_eq!(parse_image(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_allowed_image_repositories_run() {
        for image in [
            "qdrant/qdrant:v1.19.0-unprivileged",
            "docker.io/qdrant/qdrant:v1.18.3-unprivileged",
            "registry-1.docker.io/qdrant/qdrant",
        ] {
            assert!(
                messages(&format!("{{image: '{image}'}}")).is_empty(),
                "{image}"
            );
        }
        for image in [
            "qdrant/qdrant-evil:v1.19.0",
            "evil.example.com/qdrant/qdrant:v1.19.0",
            "docker.io/qdrant/qdrant/evil:v1",
            "docker.io/qdrantt/qdrant:v1",
            "qdrant:v1",
            "ghcr.io/qdrant/qdrant:v1",
        ] {
            assert_refused(
                &format!("{{image: '{image}'}}"),
                "spec.image",
                "not allowed by the operator's policy",
            );
        }
        let mut registry = Settings::default();
        registry.policy.image_repositories =
            vec!["registry.example.com/*".into(), "qdrant/*".into()];
        assert!(messages_with("{image: 'registry.example.com/a/b:v1'}", &registry).is_empty());
        assert!(messages_with("{image: 'qdrant/other:v1'}", &registry).is_empty());
        assert!(
            !messages_with("{image: 'registry.example.com.evil.io/a:v1'}", &registry).is_empty()
        );
        assert!(!messages_with("{image: 'qdrantevil/other:v1'}", &registry).is_empty());
        // A tree an admin allows; a digest an admin requires.
        let mut s = Settings::default();
        s.policy.image_repositories = vec!["registry.example.com/mirror/*".into()];
        s.policy.require_image_digest = true;
        let digest = format!("sha256:{}", "b".repeat(64));
        assert!(
            messages_with(
                &format!("{{image: 'registry.example.com/mirror/qdrant@{digest}'}}"),
                &s
            )
            .is_empty()
        );
        let got = messages_with("{image: 'registry.example.com/mirror/qdrant:v1'}", &s);
        assert!(
            got.iter().any(|m| m.contains("requires a digest")),
            "{got:?}"
        );
        let got = messages_with(
            &format!("{{image: 'registry.example.com/mirrored@{digest}'}}"),
            &s,
        );
        assert!(got.iter().any(|m| m.contains("not allowed")), "{got:?}");
    }

    #[test]
    fn pod_passthrough_attacks_are_refused() {
        assert_refused(
            "{pod: {tolerations: [{operator: Exists}]}}",
            "spec.pod.tolerations[0]",
            "every taint",
        );
        assert_refused(
            "{pod: {tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]}}",
            "spec.pod.tolerations[0].key",
            "control-plane",
        );
        assert_refused(
            "{pod: {nodeSelector: {node-role.kubernetes.io/control-plane: ''}}}",
            "spec.pod.nodeSelector[node-role.kubernetes.io/control-plane]",
            "control-plane",
        );
        assert_refused(
            "{pod: {affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-role.kubernetes.io/master, operator: Exists}]}]}}}}}",
            "spec.pod.affinity.nodeAffinity",
            "node-role.kubernetes.io/master",
        );
        assert_refused(
            "{pod: {priorityClassName: system-node-critical}}",
            "spec.pod.priorityClassName",
            "reserved",
        );
        assert_refused(
            "{pod: {priorityClassName: system-cluster-critical}}",
            "spec.pod.priorityClassName",
            "reserved",
        );
        assert_refused(
            "{pod: {annotations: {container.apparmor.security.beta.kubernetes.io/qdrant: unconfined}}}",
            "spec.pod.annotations[container.apparmor.security.beta.kubernetes.io/qdrant]",
            "*.kubernetes.io/",
        );
        assert_refused(
            "{pod: {annotations: {sidecar.istio.io/userVolume: '[{\"name\":\"h\",\"hostPath\":{\"path\":\"/\"}}]'}}}",
            "spec.pod.annotations[sidecar.istio.io/userVolume]",
            "*.istio.io/",
        );
        assert_refused(
            "{pod: {annotations: {vault.hashicorp.com/agent-inject: 'true'}}}",
            "spec.pod.annotations[vault.hashicorp.com/agent-inject]",
            "*.hashicorp.com/",
        );
        for (key, prefix) in [
            ("consul.hashicorp.com/connect-inject", "*.hashicorp.com/"),
            ("dapr.io/enabled", "dapr.io/"),
            (
                "instrumentation.opentelemetry.io/inject-sdk",
                "*.opentelemetry.io/",
            ),
            ("sidecar.opentelemetry.io/inject", "*.opentelemetry.io/"),
            (
                "openservicemesh.io/sidecar-injection",
                "openservicemesh.io/",
            ),
            ("appmesh.k8s.aws/sidecarInjectorWebhook", "appmesh.k8s.aws/"),
        ] {
            assert_refused(
                &format!("{{pod: {{annotations: {{{key}: 'true'}}}}}}"),
                &format!("spec.pod.annotations[{key}]"),
                prefix,
            );
        }
        assert_refused(
            "{pod: {labels: {linkerd.io/control-plane-ns: linkerd}}}",
            "spec.pod.labels[linkerd.io/control-plane-ns]",
            "linkerd.io/",
        );
        assert_refused(
            "{pod: {labels: {kubernetes.io/metadata.name: kube-system}}}",
            "spec.pod.labels[kubernetes.io/metadata.name]",
            "kubernetes.io/",
        );
        // Allowed: a keyed toleration, an ordinary class, prefixes outside the list, and a
        // NotIn on the control-plane label.
        assert!(messages("{pod: {tolerations: [{key: dedicated, operator: Exists}], priorityClassName: vectors-high, labels: {team: search, example.com/kubernetes.io: x}, annotations: {notkubernetes.io/x: y}, affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}]}}}}}").is_empty());
        let many: Vec<String> = (0..33)
            .map(|i| format!("{{key: k{i}, operator: Exists}}"))
            .collect();
        assert_refused(
            &format!("{{pod: {{tolerations: [{}]}}}}", many.join(", ")),
            "spec.pod.tolerations",
            "at most 32",
        );
    }

    #[test]
    fn extra_dns_names_are_the_instances_own_or_within_an_allowed_suffix() {
        let strict = Settings::default();
        let allowing = Settings {
            allowed_dns_suffixes: vec!["example.com".to_owned()],
            ..Settings::default()
        };
        let check = |name: &str, settings: &Settings| {
            check_extra_dns_name(name, "vectors", "search", settings)
        };
        // The instance's own names: accepted (they are in the certificate anyway).
        for own in [
            "vectors",
            "vectors.search",
            "vectors.search.svc",
            "vectors.search.svc.cluster.local",
            "*.vectors-headless.search.svc",
        ] {
            assert_eq!(check(own, &strict), Ok(()), "{own}");
        }
        // Other Services, the API server, in-cluster wildcards: never, whatever is allowed.
        for other in [
            "other.search.svc",
            "other.search.svc.cluster.local",
            "vectors.other.svc",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "*.search.svc",
            "*.svc",
            "svc",
            "cluster.local",
            "*.cluster.local",
            "vectors-0.vectors-headless.other.svc",
        ] {
            let err = check(other, &allowing).expect_err(other);
            assert!(err.contains("in-cluster"), "{other}: {err}");
        }
        // Outside the cluster: only within an allowed suffix.
        for name in [
            "qdrant.example.com",
            "example.com",
            "*.vectors.example.com",
            "*.example.com",
        ] {
            assert!(check(name, &strict).is_err(), "{name}");
            assert_eq!(check(name, &allowing), Ok(()), "{name}");
        }
        for name in [
            "other.search",
            "qdrant.example.org",
            "example.com.evil.org",
            "notexample.com",
            "*.com",
        ] {
            let err = check(name, &allowing).expect_err(name);
            assert!(err.contains("only under example.com"), "{name}: {err}");
        }
        assert!(
            check("qdrant.example.com", &strict)
                .unwrap_err()
                .contains("--allowed-dns-suffixes")
        );
    }

    fn named(name: &str, settings: &Settings) -> Vec<String> {
        let mut sq = sq("{}");
        sq.metadata.name = Some(name.to_owned());
        match validate(&sq, settings) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn names_whose_ca_would_cover_cluster_service_names_are_refused() {
        let default = Settings::default();
        for name in ["svc", "local", "cluster"] {
            let got = named(name, &default);
            assert!(
                got.iter()
                    .any(|m| m.starts_with("metadata.name: ") && m.contains("choose another name")),
                "{name}: {got:?}"
            );
        }
        let custom = Settings {
            cluster_domain: "corp-headless.example.".to_owned(),
            ..Settings::default()
        };
        for name in ["corp", "example", "svc"] {
            assert!(
                named(name, &custom)
                    .iter()
                    .any(|m| m.starts_with("metadata.name: ")),
                "{name}"
            );
        }
        for name in ["vectors", "svc1", "locals", "my-svc"] {
            assert_eq!(named(name, &default), Vec::<String>::new(), "{name}");
        }
        assert_eq!(named("local", &custom), Vec::<String>::new());
    }

    #[test]
    fn referenced_secrets_may_not_be_the_instances_own() {
        for (spec, field) in [
            (
                "{auth: {apiKeySecretRef: {name: v-api-key, key: k}}}",
                "spec.auth.apiKeySecretRef.name",
            ),
            (
                "{tls: {caSecretRef: {name: v-ca}}}",
                "spec.tls.caSecretRef.name",
            ),
            (
                "{tls: {caSecretRef: {name: v-tls}}}",
                "spec.tls.caSecretRef.name",
            ),
            (
                "{tls: {certificateSecretRef: {name: v-tls}}}",
                "spec.tls.certificateSecretRef.name",
            ),
            (
                "{tls: {certificateSecretRef: {name: v-metrics-client}}}",
                "spec.tls.certificateSecretRef.name",
            ),
            (
                "{imagePullSecrets: [{name: pull}, {name: v-api-key}]}",
                "spec.imagePullSecrets[1].name",
            ),
        ] {
            assert_refused(spec, field, "rename your Secret");
        }
        // Another instance's names and names merely alike are not this rule's business.
        for spec in [
            "{auth: {apiKeySecretRef: {name: w-api-key, key: k}}}",
            "{auth: {apiKeySecretRef: {name: v-api-keys, key: k}}}",
            "{tls: {caSecretRef: {name: my-ca}}}",
            "{imagePullSecrets: [{name: v-pull}]}",
        ] {
            assert!(
                !messages(spec)
                    .iter()
                    .any(|m| m.contains("rename your Secret")),
                "{spec}"
            );
        }
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
