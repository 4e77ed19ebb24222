//! `spec.pod`: scheduling and metadata pass-through the policy refuses.

use super::problems::{Invalid, invalid};
use crate::crd::{MAX_TOLERATIONS, PodSpecOverrides};

pub(super) fn check_pod(
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
    check_node_affinity(pod, &refused_node_key, problems);
    if let Some(class) = &pod.priority_class_name
        && policy.refused_priority_classes.contains(class)
    {
        problems.push(invalid(
            "spec.pod.priorityClassName",
            format!("{class} is reserved for the cluster's own pods (operator policy)"),
        ));
    }
    check_metadata_keys(pod, policy, problems);
}

/// Node affinity terms that would select control-plane nodes.
fn check_node_affinity(
    pod: &PodSpecOverrides,
    refused_node_key: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Invalid>,
) {
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
}

/// Pod labels and annotations under prefixes the policy refuses (the operator's own prefixes are
/// reported with their own message).
fn check_metadata_keys(
    pod: &PodSpecOverrides,
    policy: &crate::settings::Policy,
    problems: &mut Vec<Invalid>,
) {
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
