//! Operator-wide settings (flags and environment of the operator process).

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_domain: "cluster.local".to_owned(),
            allow_global_manage_tokens: true,
            allowed_dns_suffixes: Vec::new(),
        }
    }
}
