//! The Kubernetes permissions the operator needs: every (API group, resource, verb) it calls.
//!
//! The Helm chart grants exactly these (`charts/secure-qdrant-operator/templates/_helpers.tpl`,
//! `sqo.rules`). Two tests keep the three in step: `tests/rbac.rs` runs the operator against the
//! real control plane (tests/control-plane) and compares what it called, read from the API
//! server's audit log, with these tables (a missing or an unused
//! rule fails), and `tests/helm.rs` compares the chart's rendered ClusterRole, Roles and
//! leader-election Role with them. When a call is added or removed, change this file next to it,
//! then the chart.
//!
//! One API-server rule is not visible in a request log: a server-side apply that creates a
//! missing object is authorized as `create` as well as `patch`
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply>), so every
//! kind the operator applies has both.

/// One rule: API group (`""` for the core group), resource (`plural` or `plural/subresource`),
/// verbs.
pub type Rule = (&'static str, &'static str, &'static [&'static str]);

/// What the operator calls in every namespace it watches: a ClusterRole by default, a Role in
/// each namespace of `--namespaces`.
pub const RBAC: &[Rule] = &[
    // The controllers' caches (`controller::run`; `controller::preflight` lists SecureQdrants);
    // `patch`: a merge patch of metadata only, removing the `secureqdrant.dev/peers-removed`
    // acknowledgment once its scale-down is applied (`reconcile::remove_peers_removed_annotation`).
    (
        "secureqdrant.dev",
        "secureqdrants",
        &["list", "watch", "patch"],
    ),
    ("secureqdrant.dev", "qdrantaccesstokens", &["list", "watch"]),
    // Status through server-side apply (`reconcile::status::write`, `access_tokens`).
    ("secureqdrant.dev", "secureqdrants/status", &["patch"]),
    ("secureqdrant.dev", "qdrantaccesstokens/status", &["patch"]),
    // Secrets: cache (list/watch); `get` of a Secret not in the cache (a user's referenced
    // Secret, or a fresh one); `create` of the API-key and CA Secrets (never overwritten);
    // `patch` to complete the API-key Secret (merge) and to apply the TLS and token Secrets;
    // `update` of the CA Secret guarded by its resourceVersion (renewal, key rollover);
    // `delete` of a token Secret whose QdrantAccessToken became invalid.
    (
        "",
        "secrets",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    // Children applied with server-side apply (`reconcile::apply::apply`) and cached; `get` of
    // one the cache does not hold before creating it (the caches see only the operator's own
    // objects: someone else's of that name is found this way, and left alone); `patch` also
    // adopts an orphan annotated for adoption (`reconcile::ownership`).
    (
        "",
        "serviceaccounts",
        &["get", "list", "watch", "create", "patch"],
    ),
    (
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch"],
    ),
    ("", "services", &["get", "list", "watch", "create", "patch"]),
    (
        "apps",
        "statefulsets",
        &["get", "list", "watch", "create", "patch"],
    ),
    // Also pruned when no longer built (`reconcile::apply::delete_orphans`).
    (
        "networking.k8s.io",
        "networkpolicies",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // Events (`events::Publisher`: a new Event, then a patch of its series).
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// What leader election calls, in the operator's own namespace only (`--lease-namespace`): a
/// Role there, granted only when leader election is on.
pub const LEADER_ELECTION: &[Rule] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
)];

/// Every (group, resource, verb) of a table, one per verb.
pub fn expand(rules: &[Rule]) -> std::collections::BTreeSet<(String, String, String)> {
    rules
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs.iter().map(|verb| {
                (
                    (*group).to_owned(),
                    (*resource).to_owned(),
                    (*verb).to_owned(),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rule_is_listed_twice_or_uses_a_wildcard() {
        let all: Vec<Rule> = RBAC.iter().chain(LEADER_ELECTION).copied().collect();
        let mut seen = std::collections::BTreeSet::new();
        for (group, resource, verbs) in &all {
            assert!(
                seen.insert((group, resource)),
                "{group}/{resource} listed twice"
            );
            assert!(!verbs.is_empty(), "{group}/{resource} has no verb");
            assert!(!resource.contains('*') && !group.contains('*') && !verbs.contains(&"*"));
            let unique: std::collections::BTreeSet<_> = verbs.iter().collect();
            assert_eq!(
                unique.len(),
                verbs.len(),
                "{group}/{resource}: a verb twice"
            );
        }
        assert_eq!(
            expand(&all).len(),
            all.iter().map(|r| r.2.len()).sum::<usize>()
        );
    }
}
