//! NetworkPolicies `<n>-*`. Policies add up, so each concern is its own object:
//! - `<n>-default-deny`: no ingress, no egress for the instance's pods;
//! - `<n>-ingress`: REST/gRPC from `spec.network.clients`, all Qdrant ports between peers;
//! - `<n>-egress` (cluster mode or extra egress): peers on 6333/6335 and DNS; nothing else;
//! - `<n>-metrics` (when scrapers are listed): the metrics port from `spec.network.metrics`.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{COMPONENT_DATABASE, object_meta, pod_selector};
use crate::qdrant::{GRPC_PORT, HTTP_PORT, METRICS_PORT, P2P_PORT};
use crate::validate::Instance;

fn ports(protocol: &str, numbers: &[i32]) -> Vec<NetworkPolicyPort> {
    numbers
        .iter()
        .map(|n| NetworkPolicyPort {
            port: Some(IntOrString::Int(*n)),
            protocol: Some(protocol.to_owned()),
            ..NetworkPolicyPort::default()
        })
        .collect()
}

fn peers(inst: &Instance) -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        pod_selector: Some(pod_selector(inst)),
        ..NetworkPolicyPeer::default()
    }]
}

fn policy(
    inst: &Instance,
    suffix: &str,
    types: &[&str],
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(inst, format!("{}-{suffix}", inst.name), COMPONENT_DATABASE),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector(inst)),
            policy_types: Some(types.iter().map(|t| (*t).to_owned()).collect()),
            ingress,
            egress,
        }),
    }
}

/// The cluster DNS (kube-dns / CoreDNS pods in kube-system, which keep the `k8s-app: kube-dns`
/// label on every common distribution).
fn dns_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    "kube-system".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_owned(),
                    "kube-dns".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some([ports("UDP", &[53]), ports("TCP", &[53])].concat()),
    }
}

pub fn build(inst: &Instance) -> Vec<NetworkPolicy> {
    let mut out = vec![policy(
        inst,
        "default-deny",
        &["Ingress", "Egress"],
        None,
        None,
    )];

    let mut ingress = Vec::new();
    if !inst.network.clients.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(inst.network.clients.clone()),
            ports: Some(ports("TCP", &[HTTP_PORT, GRPC_PORT])),
        });
    }
    if inst.cluster_mode() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(peers(inst)),
            ports: Some(ports("TCP", &[HTTP_PORT, GRPC_PORT, P2P_PORT])),
        });
    }
    if !ingress.is_empty() {
        out.push(policy(inst, "ingress", &["Ingress"], Some(ingress), None));
    }

    let mut egress = Vec::new();
    if inst.cluster_mode() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(peers(inst)),
            ports: Some(ports("TCP", &[HTTP_PORT, P2P_PORT])),
        });
        egress.push(dns_rule());
    }
    egress.extend(inst.network.extra_egress.iter().cloned());
    if !egress.is_empty() {
        out.push(policy(inst, "egress", &["Egress"], None, Some(egress)));
    }

    if inst.metrics_port_enabled() {
        out.push(policy(
            inst,
            "metrics",
            &["Ingress"],
            Some(vec![NetworkPolicyIngressRule {
                from: Some(inst.network.metrics.clone()),
                ports: Some(ports("TCP", &[METRICS_PORT])),
            }]),
            None,
        ));
    }
    out
}
