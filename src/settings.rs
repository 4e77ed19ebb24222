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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_domain: "cluster.local".to_owned(),
            allow_global_manage_tokens: true,
        }
    }
}
