//! A small, faithful evaluator of Kubernetes NetworkPolicies (`networking.k8s.io/v1`) over flows.
//!
//! Semantics implemented (as documented at
//! <https://kubernetes.io/docs/concepts/services-networking/network-policies/>):
//! - a pod is isolated for ingress (egress) when ANY policy of its own namespace selects it
//!   (`spec.podSelector`, absent or `{}` = every pod of the namespace) and has that policy type; a
//!   direction that is not isolated allows everything;
//! - `policyTypes` absent or empty defaults as the API server does: `Ingress`, plus `Egress` when
//!   the policy has egress rules;
//! - policies are additive: an isolated direction allows what ANY rule of ANY selecting policy
//!   allows;
//! - a flow is allowed only if the source's egress side (policies of the source's namespace) AND
//!   the destination's ingress side (policies of the destination's namespace) allow it. An
//!   external endpoint (an IP outside the cluster) has no side of its own;
//! - `from`/`to` absent or empty = every peer (pods and external IPs); `ports` absent or empty =
//!   every port and protocol;
//! - a peer with only `podSelector` = pods of the policy's namespace; only `namespaceSelector` =
//!   every pod of the matching namespaces; both in one peer = both must match; `ipBlock` = the
//!   addresses in `cidr` minus those in `except`;
//! - label selectors: `matchLabels` AND `matchExpressions` (`In`, `NotIn`, `Exists`,
//!   `DoesNotExist`; `NotIn` and `DoesNotExist` match a pod without the key); `{}` matches all;
//! - a port is a number or a named port; `protocol` defaults to TCP; `endPort` makes a range; a
//!   port entry without `port` matches every port of its protocol;
//! - named ports resolve against the DESTINATION pod's container ports (name and protocol must
//!   both match, in both directions as in Kubernetes); toward an external IP a named port never
//!   matches.
//!
//! Modelling choices (documented, deliberate):
//! - namespaces always carry `kubernetes.io/metadata.name: <name>`, which the API server sets
//!   and does not let anyone change; [`Namespace::with_label`] refuses to touch it;
//! - `ipBlock` is matched against a pod only if the pod is given an IP. Whether CNIs apply
//!   `ipBlock` to pod IPs is implementation-defined; matching them is the permissive reading,
//!   so "denied" verdicts stay sound. Positive `ipBlock` verdicts in tests use external IPs;
//! - policies are validated like the API server does (a peer needs exactly one of `ipBlock` or
//!   selectors, `except` inside `cidr`, known protocols and selector operators, `endPort` only
//!   with a numeric `port`, ...). An invalid policy would be rejected at apply time, so the
//!   evaluator refuses it instead of guessing;
//! - not modelled: host-network pods, node/kubelet traffic (always allowed by CNIs), a pod's
//!   loopback, Services (policies see pod IPs after DNAT), `AdminNetworkPolicy`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label keys and values.
pub type Labels = BTreeMap<String, String>;

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Builds labels from pairs.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A transport protocol NetworkPolicies know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Every protocol, for exhaustive checks.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    fn parse(s: Option<&str>) -> Result<Protocol, String> {
        match s {
            None | Some("TCP") => Ok(Protocol::Tcp),
            Some("UDP") => Ok(Protocol::Udp),
            Some("SCTP") => Ok(Protocol::Sctp),
            Some(other) => Err(format!("unsupported protocol {other:?}")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A namespace with its labels (always including `kubernetes.io/metadata.name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    pub fn new(name: &str) -> Namespace {
        Namespace {
            name: name.to_owned(),
            labels: labels([(NAMESPACE_NAME_LABEL, name)]),
        }
    }

    /// Adds a label. The API server owns `kubernetes.io/metadata.name`: setting it is a test bug.
    pub fn with_label(mut self, key: &str, value: &str) -> Namespace {
        assert_ne!(
            key, NAMESPACE_NAME_LABEL,
            "{NAMESPACE_NAME_LABEL} is set by Kubernetes and cannot be changed"
        );
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// A container port a named policy port can resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: i32,
    pub protocol: Protocol,
}

/// A pod: where it lives, its labels, its named container ports and (optionally) its IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: Namespace,
    pub labels: Labels,
    pub ports: Vec<NamedPort>,
    pub ip: Option<IpAddr>,
}

impl Pod {
    pub fn new(name: &str, namespace: &Namespace, labels: Labels) -> Pod {
        Pod {
            name: name.to_owned(),
            namespace: namespace.clone(),
            labels,
            ports: Vec::new(),
            ip: None,
        }
    }

    pub fn with_port(mut self, name: &str, port: i32, protocol: Protocol) -> Pod {
        self.ports.push(NamedPort {
            name: name.to_owned(),
            port,
            protocol,
        });
        self
    }

    pub fn with_ip(mut self, ip: &str) -> Pod {
        self.ip = Some(ip.parse().expect("a valid IP"));
        self
    }
}

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Pod(Pod),
    /// An address outside the cluster (the internet, a database VM, ...).
    External(IpAddr),
}

impl Endpoint {
    pub fn external(ip: &str) -> Endpoint {
        Endpoint::External(ip.parse().expect("a valid IP"))
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Pod(p) => p.ip,
            Endpoint::External(ip) => Some(*ip),
        }
    }

    fn pod(&self) -> Option<&Pod> {
        match self {
            Endpoint::Pod(p) => Some(p),
            Endpoint::External(_) => None,
        }
    }
}

impl From<Pod> for Endpoint {
    fn from(p: Pod) -> Endpoint {
        Endpoint::Pod(p)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(p) => write!(f, "{}/{}", p.namespace.name, p.name),
            Endpoint::External(ip) => write!(f, "{ip}"),
        }
    }
}

/// A connection attempt: `from` opens a connection to `to` on `port`/`protocol`.
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    pub from: &'a Endpoint,
    pub to: &'a Endpoint,
    pub port: i32,
    pub protocol: Protocol,
}

impl<'a> Flow<'a> {
    pub fn new(from: &'a Endpoint, to: &'a Endpoint, port: i32, protocol: Protocol) -> Flow<'a> {
        Flow {
            from,
            to,
            port,
            protocol,
        }
    }

    pub fn tcp(from: &'a Endpoint, to: &'a Endpoint, port: i32) -> Flow<'a> {
        Flow::new(from, to, port, Protocol::Tcp)
    }

    pub fn udp(from: &'a Endpoint, to: &'a Endpoint, port: i32) -> Flow<'a> {
        Flow::new(from, to, port, Protocol::Udp)
    }
}

impl fmt::Display for Flow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}:{}/{}",
            self.from, self.to, self.port, self.protocol
        )
    }
}

/// What each side says about a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The source pod's egress side (true for an external source or a non-isolated pod).
    pub egress: bool,
    /// The destination pod's ingress side (true for an external destination or a non-isolated pod).
    pub ingress: bool,
}

impl Verdict {
    pub fn allowed(self) -> bool {
        self.egress && self.ingress
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// A set of (validated) NetworkPolicies across namespaces.
#[derive(Clone, Debug)]
pub struct Cluster {
    policies: Vec<NetworkPolicy>,
}

impl Cluster {
    /// Takes policies, refusing any the API server would reject.
    pub fn new(policies: impl IntoIterator<Item = NetworkPolicy>) -> Result<Cluster, String> {
        let policies: Vec<NetworkPolicy> = policies.into_iter().collect();
        for p in &policies {
            validate_policy(p).map_err(|e| {
                format!(
                    "NetworkPolicy {:?}: {e}",
                    p.metadata.name.as_deref().unwrap_or("<unnamed>")
                )
            })?;
        }
        Ok(Cluster { policies })
    }

    /// Is the flow allowed (both sides)?
    pub fn allows(&self, flow: Flow<'_>) -> bool {
        self.verdict(flow).allowed()
    }

    /// Each side's decision.
    pub fn verdict(&self, flow: Flow<'_>) -> Verdict {
        Verdict {
            egress: flow
                .from
                .pod()
                .is_none_or(|src| self.side_allows(Direction::Egress, src, flow.to, flow)),
            ingress: flow
                .to
                .pod()
                .is_none_or(|dst| self.side_allows(Direction::Ingress, dst, flow.from, flow)),
        }
    }

    /// Is the pod isolated in that direction (selected by a policy with that type)?
    fn selecting(&self, dir: Direction, pod: &Pod) -> Vec<&NetworkPolicy> {
        self.policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(pod.namespace.name.as_str()))
            .filter(|p| {
                let spec = p.spec.as_ref().expect("validated");
                selector_matches(spec.pod_selector.as_ref(), &pod.labels)
                    && policy_types(p).contains(&dir)
            })
            .collect()
    }

    /// `subject` is the pod whose policies are evaluated; `peer` the other end of the flow.
    fn side_allows(&self, dir: Direction, subject: &Pod, peer: &Endpoint, flow: Flow<'_>) -> bool {
        let selecting = self.selecting(dir, subject);
        if selecting.is_empty() {
            return true;
        }
        let policy_ns = subject.namespace.name.as_str();
        selecting.iter().any(|p| {
            let spec = p.spec.as_ref().expect("validated");
            match dir {
                Direction::Ingress => spec.ingress.iter().flatten().any(|r| {
                    peers_match(r.from.as_deref(), peer, policy_ns)
                        && ports_match(r.ports.as_deref(), flow)
                }),
                Direction::Egress => spec.egress.iter().flatten().any(|r| {
                    peers_match(r.to.as_deref(), peer, policy_ns)
                        && ports_match(r.ports.as_deref(), flow)
                }),
            }
        })
    }
}

/// `policyTypes` with the API server's defaulting.
fn policy_types(p: &NetworkPolicy) -> Vec<Direction> {
    let spec = p.spec.as_ref().expect("validated");
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types
            .iter()
            .map(|t| match t.as_str() {
                "Ingress" => Direction::Ingress,
                "Egress" => Direction::Egress,
                other => panic!("unvalidated policy type {other}"),
            })
            .collect(),
        _ => {
            let mut out = vec![Direction::Ingress];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                out.push(Direction::Egress);
            }
            out
        }
    }
}

/// Does a label selector match? `None` (a field left out) is treated like `{}` here; callers
/// that give `None` a different meaning handle it before calling.
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(sel) = selector else { return true };
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let have = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("unvalidated selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

fn peers_match(peers: Option<&[NetworkPolicyPeer]>, endpoint: &Endpoint, policy_ns: &str) -> bool {
    match peers {
        None | Some([]) => true,
        Some(peers) => peers.iter().any(|p| peer_matches(p, endpoint, policy_ns)),
    }
}

fn peer_matches(peer: &NetworkPolicyPeer, endpoint: &Endpoint, policy_ns: &str) -> bool {
    if let Some(block) = &peer.ip_block {
        return endpoint.ip().is_some_and(|ip| ip_block_contains(block, ip));
    }
    let Some(pod) = endpoint.pod() else {
        return false;
    };
    match (&peer.namespace_selector, &peer.pod_selector) {
        (Some(ns), pods) => {
            selector_matches(Some(ns), &pod.namespace.labels)
                && selector_matches(pods.as_ref(), &pod.labels)
        }
        (None, Some(pods)) => {
            pod.namespace.name == policy_ns && selector_matches(Some(pods), &pod.labels)
        }
        (None, None) => panic!("unvalidated empty peer"),
    }
}

fn ports_match(ports: Option<&[NetworkPolicyPort]>, flow: Flow<'_>) -> bool {
    match ports {
        None | Some([]) => true,
        Some(ports) => ports.iter().any(|p| port_matches(p, flow)),
    }
}

fn port_matches(rule: &NetworkPolicyPort, flow: Flow<'_>) -> bool {
    let protocol = Protocol::parse(rule.protocol.as_deref()).expect("validated");
    if protocol != flow.protocol {
        return false;
    }
    match &rule.port {
        None => true,
        Some(IntOrString::Int(start)) => {
            let end = rule.end_port.unwrap_or(*start);
            (*start..=end).contains(&flow.port)
        }
        // Named ports resolve against the destination pod's container ports.
        Some(IntOrString::String(name)) => flow.to.pod().is_some_and(|dst| {
            dst.ports
                .iter()
                .any(|cp| &cp.name == name && cp.protocol == protocol && cp.port == flow.port)
        }),
    }
}

/// An IP network: address bits (IPv4 in the low 32 bits) and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    v6: bool,
    bits: u128,
    prefix: u32,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/prefix)"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let prefix: u32 = len.parse().map_err(|_| format!("{s:?}: bad prefix"))?;
        let (v6, bits, max) = split_ip(addr);
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Cidr { v6, bits, prefix })
    }

    fn width(self) -> u32 {
        if self.v6 { 128 } else { 32 }
    }

    fn mask(self) -> u128 {
        let host_bits = self.width() - self.prefix;
        let all = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        if host_bits >= 128 {
            0
        } else {
            all & !((1u128 << host_bits) - 1)
        }
    }

    fn contains(self, ip: IpAddr) -> bool {
        let (v6, bits, _) = split_ip(ip);
        v6 == self.v6 && bits & self.mask() == self.bits & self.mask()
    }

    /// Is `inner` a strict subset of `self`?
    fn strictly_contains(self, inner: Cidr) -> bool {
        inner.v6 == self.v6
            && inner.prefix > self.prefix
            && inner.bits & self.mask() == self.bits & self.mask()
    }
}

fn split_ip(ip: IpAddr) -> (bool, u128, u32) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (true, u128::from(v6), 128),
    }
}

fn ip_block_contains(block: &IPBlock, ip: IpAddr) -> bool {
    let cidr = Cidr::parse(&block.cidr).expect("validated");
    cidr.contains(ip)
        && !block
            .except
            .iter()
            .flatten()
            .any(|e| Cidr::parse(e).expect("validated").contains(ip))
}

/// The subset of the API server's NetworkPolicy validation this evaluator relies on.
pub fn validate_policy(p: &NetworkPolicy) -> Result<(), String> {
    if p.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        return Err("metadata.namespace is required".to_owned());
    }
    let spec = p.spec.as_ref().ok_or("spec is required")?;
    if let Some(sel) = &spec.pod_selector {
        validate_selector(sel)?;
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    if types.len() > 2 {
        return Err("at most two policyTypes".to_owned());
    }
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            return Err(format!("unknown policy type {t:?}"));
        }
        if types[..i].contains(t) {
            return Err(format!("duplicate policy type {t:?}"));
        }
    }
    for rule in spec.ingress.iter().flatten() {
        rule.from.iter().flatten().try_for_each(validate_peer)?;
        rule.ports.iter().flatten().try_for_each(validate_port)?;
    }
    for rule in spec.egress.iter().flatten() {
        rule.to.iter().flatten().try_for_each(validate_peer)?;
        rule.ports.iter().flatten().try_for_each(validate_port)?;
    }
    Ok(())
}

fn validate_selector(sel: &LabelSelector) -> Result<(), String> {
    for req in sel.match_expressions.iter().flatten() {
        let n = req.values.as_ref().map_or(0, Vec::len);
        match req.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                return Err(format!("{}: values required for {}", req.key, req.operator));
            }
            "Exists" | "DoesNotExist" if n != 0 => {
                return Err(format!(
                    "{}: no values allowed for {}",
                    req.key, req.operator
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => return Err(format!("unknown selector operator {other:?}")),
        }
    }
    Ok(())
}

fn validate_peer(peer: &NetworkPolicyPeer) -> Result<(), String> {
    let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match (&peer.ip_block, selectors) {
        (None, false) => {
            Err("a peer must specify a podSelector, namespaceSelector or ipBlock".to_owned())
        }
        (Some(_), true) => Err("ipBlock may not be combined with selectors".to_owned()),
        (Some(block), false) => {
            let cidr = Cidr::parse(&block.cidr)?;
            for e in block.except.iter().flatten() {
                if !cidr.strictly_contains(Cidr::parse(e)?) {
                    return Err(format!(
                        "except {e:?} must be strictly within {:?}",
                        block.cidr
                    ));
                }
            }
            Ok(())
        }
        (None, true) => {
            peer.pod_selector.iter().try_for_each(validate_selector)?;
            peer.namespace_selector
                .iter()
                .try_for_each(validate_selector)
        }
    }
}

fn validate_port(port: &NetworkPolicyPort) -> Result<(), String> {
    Protocol::parse(port.protocol.as_deref())?;
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            if !(1..=65535).contains(n) {
                return Err(format!("port {n} out of range"));
            }
            if let Some(end) = end
                && !(*n..=65535).contains(&end)
            {
                return Err(format!("endPort {end} must be within {n}..=65535"));
            }
            Ok(())
        }
        (Some(IntOrString::String(name)), None) => {
            let ok = (1..=15).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if ok {
                Ok(())
            } else {
                Err(format!("{name:?} is not a valid port name"))
            }
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            Err("endPort requires a numeric port".to_owned())
        }
        (None, Some(_)) => Err("endPort requires port".to_owned()),
        (None, None) => Ok(()),
    }
}
