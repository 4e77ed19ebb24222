//! Operator-wide settings (flags and environment of the operator process).

use ipnet::IpNet;

/// Settings that shape every instance the operator builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's DNS domain (`cluster.local` unless the cluster was set up otherwise).
    pub cluster_domain: String,
    /// Whether QdrantAccessTokens with global manage access (`access: {global: m}`) may be
    /// issued at all (`--allow-global-manage-tokens`). When false they are refused cluster-wide,
    /// whatever their SecureQdrant's `spec.auth.allowManageTokens` says.
    pub allow_global_manage_tokens: bool,
    /// DNS suffixes under which `spec.tls.extraDnsNames` may name hosts (an administrator's
    /// choice: `--allowed-dns-suffixes`, chart value `policy.allowedDnsSuffixes`). Empty: no
    /// extra name at all besides the instance's own Service names.
    pub allowed_dns_suffixes: Vec<String>,
    /// What a SecureQdrant author may ask for beyond the hardened defaults.
    pub policy: Policy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_domain: "cluster.local".to_owned(),
            allow_global_manage_tokens: true,
            allowed_dns_suffixes: Vec::new(),
            policy: Policy::default(),
        }
    }
}

/// The administrator's policy: what `spec.image`, `spec.network` and `spec.pod` may contain.
/// Set with the operator's flags (`--allowed-images`, ...) or the chart's `policy.*` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Image repositories `spec.image` may name, normalised (`docker.io/qdrant/qdrant`); an entry
    /// ending in `/*` allows every repository below it.
    pub image_repositories: Vec<String>,
    /// `spec.image` must carry a digest (`@sha256:...`).
    pub require_image_digest: bool,
    /// Ranges an `ipBlock` of `spec.network.extraEgress` must lie inside. Default: the private
    /// ranges (RFC 1918 and fc00::/7), so no instance reaches the internet unless an admin adds
    /// a range. Link-local and cloud metadata addresses are refused whatever this says.
    pub egress_cidrs: Vec<IpNet>,
    /// Node label keys `spec.pod` may not select on or tolerate (control-plane nodes).
    pub refused_node_keys: Vec<String>,
    /// PriorityClasses `spec.pod.priorityClassName` may not name.
    pub refused_priority_classes: Vec<String>,
    /// Label and annotation key prefixes `spec.pod.labels`/`annotations` may not use: `x/`
    /// matches keys starting with `x/`, `*.x/` keys whose prefix is a subdomain of `x`.
    pub refused_metadata_prefixes: Vec<String>,
}

/// `--allowed-images` default: the official Qdrant images only.
pub const DEFAULT_IMAGE_REPOSITORIES: &[&str] = &["docker.io/qdrant/qdrant"];
/// `--egress-cidrs` default: the private ranges.
pub const DEFAULT_EGRESS_CIDRS: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];
/// `--refused-node-keys` default: the control-plane node labels and taints.
pub const DEFAULT_REFUSED_NODE_KEYS: &[&str] = &[
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];
/// `--refused-priority-classes` default: the classes reserved for the cluster's own pods.
pub const DEFAULT_REFUSED_PRIORITY_CLASSES: &[&str] =
    &["system-node-critical", "system-cluster-critical"];
/// `--refused-metadata-prefixes` default. Kubernetes' own prefixes (AppArmor, seccomp and other
/// `*.kubernetes.io/` annotations change the pod's confinement; `app.kubernetes.io/` labels are
/// the operator's own selectors), the operator's own, and the injectors that add containers or
/// volumes to a pod (Istio, Linkerd, Kuma, Vault agent): an author could otherwise weaken the
/// pod or make it match a NetworkPolicy or an injector meant for other pods.
pub const DEFAULT_REFUSED_METADATA_PREFIXES: &[&str] = &[
    "kubernetes.io/",
    "*.kubernetes.io/",
    "k8s.io/",
    "*.k8s.io/",
    "secureqdrant.dev/",
    "*.secureqdrant.dev/",
    "istio.io/",
    "*.istio.io/",
    "linkerd.io/",
    "*.linkerd.io/",
    "kuma.io/",
    "*.kuma.io/",
    // Vault agent (vault.hashicorp.com) and Consul Connect (consul.hashicorp.com) injectors.
    "*.hashicorp.com/",
    "dapr.io/",
    "*.dapr.io/",
    // OpenTelemetry operator injection (instrumentation.opentelemetry.io, sidecar.opentelemetry.io).
    "*.opentelemetry.io/",
    "openservicemesh.io/",
    "*.openservicemesh.io/",
    "appmesh.k8s.aws/",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            image_repositories: strings(DEFAULT_IMAGE_REPOSITORIES),
            require_image_digest: false,
            egress_cidrs: DEFAULT_EGRESS_CIDRS
                .iter()
                .map(|c| c.parse().expect("a valid default CIDR"))
                .collect(),
            refused_node_keys: strings(DEFAULT_REFUSED_NODE_KEYS),
            refused_priority_classes: strings(DEFAULT_REFUSED_PRIORITY_CLASSES),
            refused_metadata_prefixes: strings(DEFAULT_REFUSED_METADATA_PREFIXES),
        }
    }
}

impl Policy {
    /// Whether a label or annotation key falls under a refused prefix.
    pub fn refuses_metadata_key(&self, key: &str) -> Option<&str> {
        let (prefix, _) = key.split_once('/')?;
        self.refused_metadata_prefixes
            .iter()
            .find(|entry| {
                let entry = entry.trim_end_matches('/');
                match entry.strip_prefix("*.") {
                    Some(domain) => prefix
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                    None => prefix == entry,
                }
            })
            .map(String::as_str)
    }
}
