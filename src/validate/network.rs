//! `spec.network`: NetworkPolicy peers and ports, and the openings the owner is told about.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::instance::Instance;
use super::problems::{Invalid, invalid};

/// NetworkPolicy peers the API server would reject are reported here, before anything is applied;
/// so are address ranges the policy refuses: `egress` (for `extraEgress`) is where the
/// administrator allows ipBlocks to point.
pub(super) fn check_peers(
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

pub(super) fn check_ports(field: &str, ports: &[NetworkPolicyPort], problems: &mut Vec<Invalid>) {
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
