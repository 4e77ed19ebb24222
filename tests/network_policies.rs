//! The NetworkPolicies the operator builds, checked by evaluating real flows with a small
//! Kubernetes NetworkPolicy evaluator (tests/support/netpol.rs). The evaluator is tested first on
//! hand-written policies, then used on the operator's output for several specs.

#[path = "support/netpol.rs"]
mod netpol;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use netpol::{Cluster, Endpoint, Flow, Labels, Namespace, Pod, Protocol, Verdict, labels};
use secure_qdrant_operator::children::{network_policies, statefulset};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::validate::{Instance, validate};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Parses a NetworkPolicy from YAML.
fn np(yaml: &str) -> NetworkPolicy {
    serde_yaml_ng::from_str(yaml).expect("valid NetworkPolicy YAML")
}

fn cluster(policies: &[&str]) -> Cluster {
    Cluster::new(policies.iter().map(|y| np(y))).expect("valid policies")
}

fn pod(name: &str, ns: &Namespace, pairs: Labels) -> Endpoint {
    Pod::new(name, ns, pairs).into()
}

fn ext(ip: &str) -> Endpoint {
    Endpoint::external(ip)
}

/// A validated instance from a SecureQdrant manifest (with a UID, as read from the API).
fn instance_from_manifest(yaml: &str) -> Instance {
    let mut sq: SecureQdrant = serde_yaml_ng::from_str(yaml).expect("valid SecureQdrant YAML");
    sq.metadata.uid = Some("0b7a3c1e-1111-4222-8333-444455556666".to_owned());
    validate(&sq, &Settings::default()).expect("a valid SecureQdrant")
}

/// An instance `vectors` in namespace `search` with the given spec (YAML, indented by 2).
fn instance(spec: &str) -> Instance {
    named_instance("vectors", spec)
}

fn named_instance(name: &str, spec: &str) -> Instance {
    instance_from_manifest(&format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\n\
         metadata: {{name: {name}, namespace: search}}\nspec:\n{spec}\n"
    ))
}

fn example(stem: &str) -> Instance {
    let path = format!("{}/deploy/examples/{stem}.yaml", env!("CARGO_MANIFEST_DIR"));
    instance_from_manifest(&std::fs::read_to_string(&path).expect("example exists"))
}

/// The operator's policies for these instances, validated like the API server would.
fn operator_cluster(instances: &[&Instance]) -> Cluster {
    Cluster::new(instances.iter().flat_map(|i| network_policies::build(i)))
        .expect("the operator's NetworkPolicies are valid")
}

fn search_ns() -> Namespace {
    Namespace::new("search")
}

/// The instance's pods as the StatefulSet controller creates them: the template's labels plus
/// the labels the controller adds, the Qdrant container's named ports and a pod IP.
fn qdrant_pods(inst: &Instance) -> Vec<Endpoint> {
    let sts = statefulset::build(
        inst,
        &secure_qdrant_operator::api_keys::ApiKeys::placeholder(true),
        "test-hash",
        None,
    );
    let spec = sts.spec.expect("statefulset spec");
    let template_labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .expect("template labels");
    let container = spec
        .template
        .spec
        .expect("pod spec")
        .containers
        .into_iter()
        .find(|c| c.name == statefulset::CONTAINER)
        .expect("qdrant container");
    let ns = Namespace::new(&inst.namespace);
    (0..inst.replicas)
        .map(|i| {
            let name = format!("{}-{i}", inst.name);
            let mut l = template_labels.clone();
            l.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
            l.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
            l.insert(
                "controller-revision-hash".into(),
                format!("{}-5d9f7c6b8", inst.name),
            );
            let mut p = Pod::new(&name, &ns, l).with_ip(&format!("10.244.1.{}", 10 + i));
            for cp in container.ports.iter().flatten() {
                p = p.with_port(
                    cp.name.as_deref().expect("named container port"),
                    cp.container_port,
                    match cp.protocol.as_deref() {
                        None | Some("TCP") => Protocol::Tcp,
                        Some("UDP") => Protocol::Udp,
                        Some(other) => panic!("unexpected protocol {other}"),
                    },
                );
            }
            p.into()
        })
        .collect()
}

/// The cluster DNS pod as kubeadm/CoreDNS deploys it.
fn kube_dns() -> Endpoint {
    let ns = Namespace::new("kube-system");
    Pod::new(
        "coredns-7db6d8ff4d-abcde",
        &ns,
        labels([("k8s-app", "kube-dns"), ("pod-template-hash", "7db6d8ff4d")]),
    )
    .with_port("dns", 53, Protocol::Udp)
    .with_port("dns-tcp", 53, Protocol::Tcp)
    .with_ip("10.244.0.2")
    .into()
}

/// Ports every exhaustive check probes (each with every protocol).
const PROBE_PORTS: [i32; 12] = [
    1, 22, 53, 80, 443, 5432, 6333, 6334, 6335, 8080, 9091, 65535,
];

/// Checks every flow sources × destinations × PROBE_PORTS × protocols against `expected`, and
/// reports every mismatch at once.
fn assert_exactly(
    cluster: &Cluster,
    sources: &[&Endpoint],
    destinations: &[&Endpoint],
    expected: impl Fn(Flow<'_>) -> bool,
) {
    assert_side(cluster, sources, destinations, Verdict::allowed, expected);
}

/// Like [`assert_exactly`], on what `observe` takes from each verdict (e.g. one side only).
fn assert_side(
    cluster: &Cluster,
    sources: &[&Endpoint],
    destinations: &[&Endpoint],
    observe: impl Fn(Verdict) -> bool,
    expected: impl Fn(Flow<'_>) -> bool,
) {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for from in sources {
        for to in destinations {
            for port in PROBE_PORTS {
                for protocol in Protocol::ALL {
                    let flow = Flow::new(from, to, port, protocol);
                    let want = expected(flow);
                    let got = cluster.verdict(flow);
                    checked += 1;
                    if observe(got) != want {
                        wrong.push(format!(
                            "{flow}: expected {}, got {got:?}",
                            if want { "allowed" } else { "denied" }
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 0, "no flow checked");
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn is_pod_in(e: &Endpoint, ns: &str) -> bool {
    matches!(e, Endpoint::Pod(p) if p.namespace.name == ns)
}

fn tcp_on(flow: Flow<'_>, ports: &[i32]) -> bool {
    flow.protocol == Protocol::Tcp && ports.contains(&flow.port)
}

// ---------------------------------------------------------------------------------------------
// The evaluator itself, on hand-written policies
// ---------------------------------------------------------------------------------------------

mod evaluator {
    use super::*;

    const DENY_ALL_INGRESS_A: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: a}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress]
";

    #[test]
    fn no_policy_allows_everything() {
        let c = cluster(&[]);
        let a = Namespace::new("a");
        let x = pod("x", &a, labels([]));
        let y = pod("y", &Namespace::new("b"), labels([]));
        let out = ext("8.8.8.8");
        for (from, to) in [(&x, &y), (&y, &x), (&x, &out), (&out, &x)] {
            for protocol in Protocol::ALL {
                assert!(c.allows(Flow::new(from, to, 443, protocol)));
            }
        }
    }

    #[test]
    fn namespaces_carry_their_name_label() {
        let ns = Namespace::new("team-a").with_label("env", "prod");
        assert_eq!(
            ns.labels,
            labels([("kubernetes.io/metadata.name", "team-a"), ("env", "prod")])
        );
    }

    #[test]
    #[should_panic(expected = "set by Kubernetes")]
    fn namespace_name_label_cannot_be_spoofed() {
        let _ = Namespace::new("evil").with_label("kubernetes.io/metadata.name", "kube-system");
    }

    #[test]
    fn isolation_is_per_pod_and_per_direction() {
        let c = cluster(&[DENY_ALL_INGRESS_A]);
        let a = Namespace::new("a");
        let db = pod("db", &a, labels([("role", "db")]));
        let web = pod("web", &a, labels([("role", "web")]));
        // db is isolated for ingress only.
        assert_eq!(
            c.verdict(Flow::tcp(&web, &db, 5432)),
            Verdict {
                egress: true,
                ingress: false
            }
        );
        assert!(
            c.allows(Flow::tcp(&db, &web, 80)),
            "db's egress is not isolated"
        );
        assert!(c.allows(Flow::tcp(&db, &ext("1.1.1.1"), 443)));
        // web is not selected at all.
        assert!(c.allows(Flow::tcp(&db, &web, 80)));
        assert!(c.allows(Flow::tcp(&ext("1.1.1.1"), &web, 80)));
    }

    #[test]
    fn policies_only_apply_in_their_namespace() {
        let c = cluster(&[DENY_ALL_INGRESS_A]);
        let db_b = pod("db", &Namespace::new("b"), labels([("role", "db")]));
        let web = pod("web", &Namespace::new("a"), labels([]));
        assert!(c.allows(Flow::tcp(&web, &db_b, 5432)));
    }

    #[test]
    fn policy_types_default_like_the_api_server() {
        // No policyTypes, no egress rules: Ingress only.
        let ingress_only = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
"]);
        // No policyTypes, egress rules: Ingress and Egress.
        let both = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  egress:
    - ports: [{port: 53, protocol: UDP}]
"]);
        let a = Namespace::new("a");
        let x = pod("x", &a, labels([]));
        let out = ext("9.9.9.9");
        assert!(ingress_only.allows(Flow::tcp(&x, &out, 443)));
        assert!(!ingress_only.allows(Flow::tcp(&out, &x, 443)));
        assert!(!both.allows(Flow::tcp(&x, &out, 443)));
        assert!(both.allows(Flow::udp(&x, &out, 53)));
        assert!(
            !both.allows(Flow::udp(&out, &x, 53)),
            "ingress is isolated too"
        );
    }

    #[test]
    fn both_sides_must_allow() {
        let c = cluster(&[
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-egress, namespace: a}
spec:
  podSelector: {matchLabels: {locked: 'yes'}}
  policyTypes: [Egress]
",
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-a, namespace: b}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: a}}}]
",
        ]);
        let a = Namespace::new("a");
        let locked = pod("locked", &a, labels([("locked", "yes")]));
        let free = pod("free", &a, labels([]));
        let target = pod("t", &Namespace::new("b"), labels([]));
        let other = pod("o", &Namespace::new("c"), labels([]));
        assert_eq!(
            c.verdict(Flow::tcp(&locked, &target, 80)),
            Verdict {
                egress: false,
                ingress: true
            }
        );
        assert!(c.allows(Flow::tcp(&free, &target, 80)));
        assert_eq!(
            c.verdict(Flow::tcp(&other, &target, 80)),
            Verdict {
                egress: true,
                ingress: false
            }
        );
    }

    #[test]
    fn policies_add_up() {
        let c = cluster(&[
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80}]}]
",
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tls, namespace: a}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 443}]}]
",
        ]);
        let x = pod("x", &Namespace::new("a"), labels([]));
        let out = ext("203.0.113.1");
        assert!(c.allows(Flow::tcp(&out, &x, 80)));
        assert!(c.allows(Flow::tcp(&out, &x, 443)));
        assert!(!c.allows(Flow::tcp(&out, &x, 8080)));
    }

    #[test]
    fn peer_kinds() {
        let c = cluster(&[
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: peers, namespace: a}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress:
    # podSelector only: pods of namespace a.
    - from: [{podSelector: {matchLabels: {role: web}}}]
      ports: [{port: 1}]
    # namespaceSelector only: every pod of matching namespaces.
    - from: [{namespaceSelector: {matchLabels: {team: x}}}]
      ports: [{port: 2}]
    # Both in one peer: AND.
    - from: [{namespaceSelector: {matchLabels: {team: x}}, podSelector: {matchLabels: {role: web}}}]
      ports: [{port: 3}]
    # Two peers: OR.
    - from: [{namespaceSelector: {matchLabels: {team: x}}}, {podSelector: {matchLabels: {role: web}}}]
      ports: [{port: 4}]
    # namespaceSelector {}: every pod of every namespace, but nothing outside the cluster.
    - from: [{namespaceSelector: {}}]
      ports: [{port: 5}]
    # podSelector {}: every pod of namespace a.
    - from: [{podSelector: {}}]
      ports: [{port: 6}]
    # from []: everything, external addresses included.
    - from: []
      ports: [{port: 7}]
    # from absent: everything.
    - ports: [{port: 8}]
",
        ]);
        let a = Namespace::new("a");
        let x = Namespace::new("x-ns").with_label("team", "x");
        let z = Namespace::new("z");
        let db = pod("db", &a, labels([("role", "db")]));
        let web_a = pod("web", &a, labels([("role", "web")]));
        let other_a = pod("other", &a, labels([]));
        let web_x = pod("web", &x, labels([("role", "web")]));
        let other_x = pod("other", &x, labels([]));
        let web_z = pod("web", &z, labels([("role", "web")]));
        let out = ext("198.51.100.4");
        let table: [(&Endpoint, [bool; 8]); 7] = [
            (&web_a, [true, false, false, true, true, true, true, true]),
            (
                &other_a,
                [false, false, false, false, true, true, true, true],
            ),
            (&web_x, [false, true, true, true, true, false, true, true]),
            (
                &other_x,
                [false, true, false, true, true, false, true, true],
            ),
            (
                &web_z,
                [false, false, false, false, true, false, true, true],
            ),
            (&out, [false, false, false, false, false, false, true, true]),
            (&db, [false, false, false, false, true, true, true, true]),
        ];
        for (from, want) in table {
            for (i, want) in want.into_iter().enumerate() {
                let port = i as i32 + 1;
                assert_eq!(
                    c.allows(Flow::tcp(from, &db, port)),
                    want,
                    "{from} -> db:{port}"
                );
            }
        }
    }

    #[test]
    fn label_selectors() {
        let c = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sel, namespace: a}
spec:
  podSelector:
    matchLabels: {app: api}
    matchExpressions:
      - {key: tier, operator: In, values: [gold, silver]}
      - {key: env, operator: NotIn, values: [dev]}
      - {key: owner, operator: Exists}
      - {key: quarantine, operator: DoesNotExist}
  policyTypes: [Ingress]
"]);
        let a = Namespace::new("a");
        let out = ext("192.0.2.1");
        let selected = |l: Labels| !c.verdict(Flow::tcp(&out, &pod("p", &a, l), 80)).ingress;
        let base = [("app", "api"), ("tier", "gold"), ("owner", "me")];
        assert!(
            selected(labels(base)),
            "NotIn and DoesNotExist match absent keys"
        );
        assert!(selected(labels([
            ("app", "api"),
            ("tier", "silver"),
            ("owner", ""),
            ("env", "prod")
        ])));
        assert!(
            !selected(labels([("tier", "gold"), ("owner", "me")])),
            "matchLabels"
        );
        assert!(!selected(labels([
            ("app", "web"),
            ("tier", "gold"),
            ("owner", "me")
        ])));
        assert!(
            !selected(labels([
                ("app", "api"),
                ("tier", "bronze"),
                ("owner", "me")
            ])),
            "In"
        );
        assert!(
            !selected(labels([("app", "api"), ("owner", "me")])),
            "In needs the key"
        );
        assert!(
            !selected(labels([("app", "api"), ("tier", "gold")])),
            "Exists"
        );
        assert!(
            !selected(labels([
                ("app", "api"),
                ("tier", "gold"),
                ("owner", "me"),
                ("env", "dev")
            ])),
            "NotIn"
        );
        assert!(
            !selected(labels([
                ("app", "api"),
                ("tier", "gold"),
                ("owner", "me"),
                ("quarantine", "")
            ])),
            "DoesNotExist"
        );
    }

    #[test]
    fn ports_protocols_and_ranges() {
        let c = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
    - ports:
        - port: 80                 # TCP by default
        - {port: 53, protocol: UDP}
        - {port: 8000, endPort: 8010}
        - {protocol: SCTP}         # every SCTP port
"]);
        let x = pod("x", &Namespace::new("a"), labels([]));
        let out = ext("192.0.2.1");
        let ok = |port, protocol| c.allows(Flow::new(&out, &x, port, protocol));
        assert!(ok(80, Protocol::Tcp));
        assert!(!ok(80, Protocol::Udp), "protocol defaults to TCP, not any");
        assert!(ok(53, Protocol::Udp));
        assert!(!ok(53, Protocol::Tcp));
        assert!(!ok(7999, Protocol::Tcp));
        assert!(ok(8000, Protocol::Tcp));
        assert!(ok(8005, Protocol::Tcp));
        assert!(ok(8010, Protocol::Tcp));
        assert!(!ok(8011, Protocol::Tcp));
        assert!(!ok(8005, Protocol::Udp));
        assert!(ok(1, Protocol::Sctp));
        assert!(ok(65535, Protocol::Sctp));
        assert!(!ok(81, Protocol::Tcp));

        // ports: [] (and absent) = every port of every protocol.
        let all = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: all, namespace: a}
spec:
  podSelector: {}
  ingress: [{ports: []}]
"]);
        for protocol in Protocol::ALL {
            assert!(all.allows(Flow::new(&out, &x, 12345, protocol)));
        }
    }

    #[test]
    fn named_ports_resolve_against_the_destination() {
        let c = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
    - ports: [{port: http}]
  egress:
    - ports: [{port: metrics}, {port: dns, protocol: UDP}]
"]);
        let a = Namespace::new("a");
        let b = Namespace::new("b");
        let web: Endpoint = Pod::new("web", &a, labels([]))
            .with_port("http", 8080, Protocol::Tcp)
            .into();
        let plain = pod("plain", &a, labels([]));
        let exporter: Endpoint = Pod::new("exp", &b, labels([]))
            .with_port("metrics", 9100, Protocol::Tcp)
            .into();
        let dns: Endpoint = Pod::new("dns", &b, labels([]))
            .with_port("dns", 53, Protocol::Udp)
            .with_port("metrics", 9153, Protocol::Udp)
            .into();
        let out = ext("192.0.2.1");
        // Ingress: resolved on the destination (web): only 8080/TCP.
        assert!(c.allows(Flow::tcp(&out, &web, 8080)));
        assert!(!c.allows(Flow::tcp(&out, &web, 80)));
        assert!(!c.allows(Flow::udp(&out, &web, 8080)));
        assert!(
            !c.allows(Flow::tcp(&out, &plain, 8080)),
            "plain has no port named http"
        );
        // Egress: also resolved on the destination.
        assert!(c.allows(Flow::tcp(&plain, &exporter, 9100)));
        assert!(!c.allows(Flow::tcp(&plain, &exporter, 9153)));
        assert!(c.allows(Flow::udp(&plain, &dns, 53)));
        assert!(
            !c.allows(Flow::udp(&plain, &dns, 9153)),
            "the rule's protocol (TCP) must match the container port's (UDP)"
        );
        assert!(
            !c.allows(Flow::tcp(&plain, &out, 9100)),
            "named ports never match external IPs"
        );
    }

    #[test]
    fn ip_blocks() {
        let c = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ips, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to:
        - ipBlock: {cidr: 10.0.0.0/8, except: [10.96.0.0/12, 10.1.2.3/32]}
        - ipBlock: {cidr: '2001:db8::/32'}
"]);
        let a = Namespace::new("a");
        let x = pod("x", &a, labels([]));
        let ok = |to: &Endpoint| c.allows(Flow::tcp(&x, to, 443));
        assert!(ok(&ext("10.0.0.1")));
        assert!(ok(&ext("10.255.255.255")));
        assert!(ok(&ext("10.95.255.255")));
        assert!(!ok(&ext("10.96.0.1")), "except");
        assert!(!ok(&ext("10.111.255.255")), "except");
        assert!(ok(&ext("10.112.0.0")));
        assert!(!ok(&ext("10.1.2.3")), "except /32");
        assert!(ok(&ext("10.1.2.4")));
        assert!(!ok(&ext("11.0.0.0")));
        assert!(!ok(&ext("9.255.255.255")));
        assert!(ok(&ext("2001:db8::1")));
        assert!(!ok(&ext("2001:db9::1")));
        assert!(!ok(&ext("::ffff:10.0.0.1")), "address families do not mix");
        // Pods match an ipBlock only through a modelled IP.
        let y = Pod::new("y", &Namespace::new("b"), labels([]));
        assert!(!ok(&y.clone().into()));
        assert!(ok(&y.clone().with_ip("10.244.0.7").into()));
        assert!(!ok(&y.with_ip("10.100.0.7").into()));

        // An ipBlock of everything does not make selectors match external addresses.
        let sel = cluster(&["
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sel, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to: [{namespaceSelector: {}}]
    - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
      ports: [{port: 53, protocol: UDP}]
"]);
        assert!(!sel.allows(Flow::tcp(&x, &ext("8.8.8.8"), 443)));
        assert!(sel.allows(Flow::udp(&x, &ext("8.8.8.8"), 53)));
        assert!(sel.allows(Flow::tcp(
            &x,
            &pod("z", &Namespace::new("z"), labels([])),
            443
        )));
    }

    #[test]
    fn invalid_policies_are_refused() {
        let head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                    metadata: {name: bad, namespace: a}\nspec:\n  podSelector: {}\n";
        for (body, why) in [
            ("  ingress: [{from: [{}]}]\n", "a peer must specify"),
            (
                "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
                "may not be combined",
            ),
            (
                "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]\n",
                "strictly within",
            ),
            (
                "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0}}]}]\n",
                "not a CIDR",
            ),
            (
                "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n",
                "prefix",
            ),
            (
                "  ingress: [{ports: [{port: 80, protocol: ICMP}]}]\n",
                "protocol",
            ),
            (
                "  ingress: [{ports: [{port: http, endPort: 90}]}]\n",
                "numeric port",
            ),
            (
                "  ingress: [{ports: [{port: 90, endPort: 80}]}]\n",
                "endPort",
            ),
            ("  ingress: [{ports: [{port: 0}]}]\n", "out of range"),
            ("  ingress: [{ports: [{port: Http}]}]\n", "port name"),
            (
                "  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}]\n",
                "values required",
            ),
            (
                "  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}]}]\n",
                "no values allowed",
            ),
            (
                "  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Gt, values: ['1']}]}}]}]\n",
                "unknown selector operator",
            ),
            ("  policyTypes: [Inbound]\n", "unknown policy type"),
        ] {
            let err = Cluster::new([np(&format!("{head}{body}"))])
                .expect_err(&format!("must be refused: {body}"));
            assert!(err.contains(why), "{body}: {err}");
        }
        let mut no_ns = np(DENY_ALL_INGRESS_A);
        no_ns.metadata.namespace = None;
        assert!(Cluster::new([no_ns]).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The operator's policies
// ---------------------------------------------------------------------------------------------

/// Default spec (minimal example): one node, clients = every pod of the namespace.
#[test]
fn default_spec_admits_the_namespace_on_rest_and_grpc_only() {
    let inst = example("minimal");
    assert_eq!(inst.replicas, 1);
    let c = operator_cluster(&[&inst]);
    let search = search_ns();
    let qdrant = qdrant_pods(&inst);
    let q0 = &qdrant[0];
    let client = pod("app-1", &search, labels([("app", "frontend")]));
    let unlabelled = pod("job-1", &search, labels([]));
    let elsewhere = pod(
        "app-1",
        &Namespace::new("other"),
        labels([("app", "frontend")]),
    );
    let out = ext("203.0.113.9");

    assert!(c.allows(Flow::tcp(&client, q0, 6333)));
    assert!(c.allows(Flow::tcp(&client, q0, 6334)));
    assert!(!c.allows(Flow::tcp(&client, q0, 6335)));
    assert!(!c.allows(Flow::udp(&client, q0, 6333)));
    assert!(!c.allows(Flow::tcp(&elsewhere, q0, 6333)));
    assert!(!c.allows(Flow::tcp(&elsewhere, q0, 6334)));
    assert!(!c.allows(Flow::tcp(&out, q0, 6333)));

    assert_exactly(&c, &[&client, &unlabelled, &elsewhere, &out], &[q0], |f| {
        is_pod_in(f.from, "search") && tcp_on(f, &[6333, 6334])
    });
}

/// Full example: only the listed clients, the cross-namespace indexer and the metrics scraper.
#[test]
fn full_example_admits_exactly_the_listed_peers() {
    let inst = example("full");
    assert_eq!(inst.replicas, 3);
    let c = operator_cluster(&[&inst]);
    let search = search_ns();
    let ingest = Namespace::new("ingest");
    let monitoring = Namespace::new("monitoring");
    let other = Namespace::new("other");
    let qdrant = qdrant_pods(&inst);

    let search_api = pod("search-api-1", &search, labels([("app", "search-api")]));
    let stranger = pod("batch-1", &search, labels([("app", "batch")]));
    let unlabelled = pod("debug", &search, labels([]));
    let search_api_elsewhere = pod("search-api-1", &other, labels([("app", "search-api")]));
    let search_api_in_ingest = pod("search-api-2", &ingest, labels([("app", "search-api")]));
    let indexer = pod("indexer-1", &ingest, labels([("app", "indexer")]));
    let indexer_elsewhere = pod("indexer-1", &other, labels([("app", "indexer")]));
    let indexer_in_search = pod("indexer-2", &search, labels([("app", "indexer")]));
    let ingest_other = pod("loader", &ingest, labels([("app", "loader")]));
    let prometheus = pod(
        "prometheus-0",
        &monitoring,
        labels([("app.kubernetes.io/name", "prometheus")]),
    );
    let prometheus_elsewhere = pod(
        "prometheus-0",
        &other,
        labels([("app.kubernetes.io/name", "prometheus")]),
    );
    let grafana = pod(
        "grafana-0",
        &monitoring,
        labels([("app.kubernetes.io/name", "grafana")]),
    );
    let out = ext("198.51.100.20");

    // The headline flows.
    for q in &qdrant {
        for port in [6333, 6334] {
            assert!(
                c.allows(Flow::tcp(&search_api, q, port)),
                "search-api -> {q}:{port}"
            );
            assert!(
                c.allows(Flow::tcp(&indexer, q, port)),
                "indexer -> {q}:{port}"
            );
            assert!(!c.allows(Flow::tcp(&stranger, q, port)));
            assert!(!c.allows(Flow::tcp(&prometheus, q, port)));
        }
        assert!(c.allows(Flow::tcp(&prometheus, q, 9091)));
        assert!(!c.allows(Flow::tcp(&search_api, q, 9091)));
        assert!(!c.allows(Flow::tcp(&indexer, q, 9091)));
        assert!(!c.allows(Flow::tcp(&search_api, q, 6335)));
    }

    // Exhaustive: every source, every probed port and protocol.
    let sources = [
        &search_api,
        &stranger,
        &unlabelled,
        &search_api_elsewhere,
        &search_api_in_ingest,
        &indexer,
        &indexer_elsewhere,
        &indexer_in_search,
        &ingest_other,
        &prometheus,
        &prometheus_elsewhere,
        &grafana,
        &out,
    ];
    let dests: Vec<&Endpoint> = qdrant.iter().collect();
    assert_exactly(&c, &sources, &dests, |f| {
        let is = |e: &Endpoint| std::ptr::eq(f.from, e);
        if is(&search_api) || is(&indexer) {
            tcp_on(f, &[6333, 6334])
        } else if is(&prometheus) {
            tcp_on(f, &[9091])
        } else {
            false
        }
    });

    // Between the instance's own pods (cluster mode): 6333/6335 both sides, never metrics.
    assert_exactly(&c, &[&qdrant[0]], &[&qdrant[1], &qdrant[2]], |f| {
        tcp_on(f, &[6333, 6335])
    });
}

/// Cluster mode: peers talk on 6333/6335, DNS reaches kube-dns, nothing else leaves the pods.
#[test]
fn cluster_mode_peers_dns_and_nothing_else() {
    let inst = instance("  replicas: 3");
    let c = operator_cluster(&[&inst]);
    let qdrant = qdrant_pods(&inst);
    let (q0, q1, q2) = (&qdrant[0], &qdrant[1], &qdrant[2]);
    let both = Verdict {
        egress: true,
        ingress: true,
    };

    // Peers, both sides explicitly.
    for (from, to) in [(q0, q1), (q1, q0), (q2, q0), (q1, q2)] {
        assert_eq!(
            c.verdict(Flow::tcp(from, to, 6335)),
            both,
            "{from} -> {to}:6335"
        );
        assert_eq!(
            c.verdict(Flow::tcp(from, to, 6333)),
            both,
            "{from} -> {to}:6333"
        );
        // gRPC between peers is admitted on the ingress side but not needed on egress.
        assert_eq!(
            c.verdict(Flow::tcp(from, to, 6334)),
            Verdict {
                egress: false,
                ingress: true
            }
        );
        assert!(!c.allows(Flow::udp(from, to, 6335)));
    }

    // DNS.
    let dns = kube_dns();
    assert_eq!(c.verdict(Flow::udp(q0, &dns, 53)), both);
    assert_eq!(c.verdict(Flow::tcp(q0, &dns, 53)), both);
    assert!(!c.allows(Flow::tcp(q0, &dns, 80)));
    assert!(!c.allows(Flow::udp(q0, &dns, 5353)));
    let fake_dns = pod("fake-dns", &search_ns(), labels([("k8s-app", "kube-dns")]));
    assert!(
        !c.allows(Flow::udp(q0, &fake_dns, 53)),
        "kube-dns labels outside kube-system are not DNS"
    );
    let other_system = pod(
        "metrics-server",
        &Namespace::new("kube-system"),
        labels([("k8s-app", "metrics-server")]),
    );
    assert!(!c.allows(Flow::udp(q0, &other_system, 53)));
    assert!(
        !c.allows(Flow::udp(q0, &ext("8.8.8.8"), 53)),
        "no public resolvers"
    );

    // The internet.
    for (ip, port) in [("8.8.8.8", 443), ("1.1.1.1", 80), ("140.82.112.3", 443)] {
        let v = c.verdict(Flow::tcp(q0, &ext(ip), port));
        assert!(!v.egress, "{ip}:{port} must be denied on the egress side");
    }

    // A random pod of the same namespace, and one elsewhere.
    let random = pod("random", &search_ns(), labels([("app", "random")]));
    let elsewhere = pod("random", &Namespace::new("other"), labels([]));
    for port in PROBE_PORTS {
        assert!(!c.allows(Flow::tcp(q0, &random, port)), "random:{port}");
        assert!(
            !c.allows(Flow::tcp(q0, &elsewhere, port)),
            "elsewhere:{port}"
        );
    }

    // Exhaustive egress: only peers on 6333/6335 TCP and kube-dns on 53.
    let dests = [
        q1,
        q2,
        &dns,
        &fake_dns,
        &other_system,
        &random,
        &elsewhere,
        &ext("8.8.8.8"),
        &ext("1.1.1.1"),
        &ext("10.0.0.1"),
        &ext("169.254.169.254"),
    ];
    assert_exactly(&c, &[q0], &dests, |f| {
        if std::ptr::eq(f.to, &dns) {
            f.port == 53 && f.protocol != Protocol::Sctp
        } else if std::ptr::eq(f.to, q1) || std::ptr::eq(f.to, q2) {
            tcp_on(f, &[6333, 6335])
        } else {
            false
        }
    });

    // Ingress to a peer: the namespace's clients on 6333/6334, the peers on 6333/6335 (their
    // egress) — never from outside the namespace, never p2p from a non-peer.
    let sources = [q0, q1, &random, &elsewhere, &ext("203.0.113.1")];
    assert_exactly(&c, &sources, &[q2], |f| {
        let peer = std::ptr::eq(f.from, q0) || std::ptr::eq(f.from, q1);
        if peer {
            tcp_on(f, &[6333, 6335])
        } else {
            is_pod_in(f.from, "search") && tcp_on(f, &[6333, 6334])
        }
    });
}

/// Two instances in one namespace do not form one cluster: no p2p between them.
#[test]
fn instances_in_one_namespace_are_isolated_from_each_other() {
    let a = instance("  replicas: 3");
    let b = named_instance("images", "  replicas: 3");
    let c = operator_cluster(&[&a, &b]);
    let pa = qdrant_pods(&a);
    let pb = qdrant_pods(&b);
    for port in [6333, 6334, 6335] {
        for (x, y) in [(&pa[0], &pb[0]), (&pb[1], &pa[2])] {
            let v = c.verdict(Flow::tcp(x, y, port));
            assert!(!v.egress, "{x} -> {y}:{port}");
        }
        // p2p ingress is peers-only: another instance's pod is no peer.
        let v = c.verdict(Flow::tcp(&pb[0], &pa[0], 6335));
        assert!(!v.ingress);
    }
    assert!(c.allows(Flow::tcp(&pa[0], &pa[1], 6335)));
    assert!(c.allows(Flow::tcp(&pb[0], &pb[1], 6335)));
}

/// A single node: no egress at all, no p2p ingress.
#[test]
fn single_node_has_no_egress_and_no_p2p() {
    for inst in [example("minimal"), instance("  replicas: 1"), {
        // The full example's clients and metrics, as one node.
        let mut i = example("full");
        i.replicas = 1;
        i
    }] {
        let c = operator_cluster(&[&inst]);
        let q0 = &qdrant_pods(&inst)[0];
        // A second pod carrying every label of the instance's pods (e.g. during a scale-down):
        // still no p2p with a single-node policy set.
        let twin: Endpoint = match q0 {
            Endpoint::Pod(p) => Pod {
                name: format!("{}-1", inst.name),
                ..p.clone()
            }
            .with_ip("10.244.1.99")
            .into(),
            Endpoint::External(_) => unreachable!(),
        };
        let search = search_ns();
        let dns = kube_dns();
        let dests = [
            q0,
            &twin,
            &dns,
            &pod("client", &search, labels([("app", "search-api")])),
            &pod("x", &Namespace::new("other"), labels([])),
            &ext("8.8.8.8"),
            &ext("1.1.1.1"),
            &ext("10.0.0.1"),
        ];
        let mut checked = 0;
        for to in dests {
            for port in PROBE_PORTS {
                for protocol in Protocol::ALL {
                    let v = c.verdict(Flow::new(q0, to, port, protocol));
                    assert!(
                        !v.egress,
                        "{}: {}",
                        inst.name,
                        Flow::new(q0, to, port, protocol)
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked,
            dests.len() * PROBE_PORTS.len() * Protocol::ALL.len()
        );
        assert!(!c.allows(Flow::udp(q0, &dns, 53)), "not even DNS");
        assert!(
            !c.allows(Flow::tcp(q0, q0, 6335)),
            "not even itself on 6335"
        );

        // No p2p ingress, from anyone.
        let outsider = pod("x", &Namespace::new("other"), labels([]));
        for from in [&twin, &pod("any", &search, labels([])), &outsider] {
            let v = c.verdict(Flow::tcp(from, q0, 6335));
            assert!(!v.ingress, "{from} -> {q0}:6335");
        }
    }
}

/// `clients: []` admits no client at all.
#[test]
fn empty_clients_admit_nobody() {
    let search = search_ns();
    let sources_for = |ns: &Namespace| {
        vec![
            pod("app", ns, labels([("app", "search-api")])),
            pod("bare", ns, labels([])),
        ]
    };
    let mut sources: Vec<Endpoint> = sources_for(&search);
    sources.extend(sources_for(&Namespace::new("other")));
    sources.extend(sources_for(&Namespace::new("kube-system")));
    sources.push(ext("203.0.113.5"));
    sources.push(ext("10.0.0.5"));
    let sources: Vec<&Endpoint> = sources.iter().collect();

    // One node: nothing reaches the pod.
    let single = instance("  network: {clients: []}");
    assert!(single.network.clients.is_empty());
    let c = operator_cluster(&[&single]);
    let q0 = &qdrant_pods(&single)[0];
    assert_exactly(&c, &sources, &[q0], |_| false);

    // Cluster mode: only the peers, on the ports they need.
    let clustered = instance("  replicas: 3\n  network: {clients: []}");
    let c = operator_cluster(&[&clustered]);
    let qdrant = qdrant_pods(&clustered);
    assert_exactly(&c, &sources, &[&qdrant[0]], |_| false);
    assert_exactly(&c, &[&qdrant[1]], &[&qdrant[0]], |f| {
        tcp_on(f, &[6333, 6335])
    });
}

/// `extraEgress` adds exactly its own rule: the differential against the same spec without it
/// is the rule's flows and nothing else, and ingress does not change.
#[test]
fn extra_egress_adds_exactly_what_it_says() {
    let extra = "  network:\n    extraEgress:\n      \
                 - to: [{ipBlock: {cidr: 10.0.0.0/8}}]\n        ports: [{port: 5432}]";
    for replicas in [1, 3] {
        let base = instance(&format!("  replicas: {replicas}"));
        let with = instance(&format!("  replicas: {replicas}\n{extra}"));
        assert_eq!(with.network.extra_egress.len(), 1);
        let c_base = operator_cluster(&[&base]);
        let c_with = operator_cluster(&[&with]);
        let qdrant = qdrant_pods(&with);
        let q0 = &qdrant[0];
        let search = search_ns();
        let dests = [
            &ext("10.0.0.1"),
            &ext("10.20.30.40"),
            &ext("10.255.255.255"),
            &ext("11.0.0.1"),
            &ext("9.255.255.255"),
            &ext("8.8.8.8"),
            &ext("192.168.1.10"),
            &ext("172.16.0.1"),
            &kube_dns(),
            &pod("pg", &search, labels([("app", "postgres")])),
            &Pod::new("pg-ip", &search, labels([("app", "postgres")]))
                .with_ip("10.244.3.3")
                .into(),
            &Pod::new("pg-out", &Namespace::new("db"), labels([]))
                .with_ip("192.168.0.3")
                .into(),
        ];
        let mut dests: Vec<&Endpoint> = dests.to_vec();
        dests.extend(qdrant.iter().skip(1));
        let in_extra = |f: Flow<'_>| {
            let ip = match f.to {
                Endpoint::External(ip) => Some(*ip),
                Endpoint::Pod(p) => p.ip,
            };
            let in_10 = matches!(ip, Some(std::net::IpAddr::V4(v4)) if v4.octets()[0] == 10);
            in_10 && tcp_on(f, &[5432])
        };
        // On the egress side (the destination's own ingress policies are not extraEgress's
        // business: a peer's ingress still refuses 5432).
        assert_side(
            &c_with,
            &[q0],
            &dests,
            |v| v.egress,
            |f| c_base.verdict(f).egress || in_extra(f),
        );
        // And end to end.
        assert_exactly(&c_with, &[q0], &dests, |f| {
            c_base.allows(f) || in_extra(f) && c_with.verdict(f).ingress
        });
        // The headline flows.
        assert!(c_with.allows(Flow::tcp(q0, &ext("10.1.2.3"), 5432)));
        assert!(!c_with.allows(Flow::tcp(q0, &ext("10.1.2.3"), 5433)));
        assert!(!c_with.allows(Flow::udp(q0, &ext("10.1.2.3"), 5432)));
        assert!(!c_with.allows(Flow::tcp(q0, &ext("11.1.2.3"), 5432)));
        assert!(!c_with.allows(Flow::tcp(q0, &ext("8.8.8.8"), 443)));
        assert_eq!(
            c_with.allows(Flow::udp(q0, &kube_dns(), 53)),
            replicas > 1,
            "extraEgress does not add DNS to a single node"
        );

        // Ingress is untouched.
        let sources = [
            &pod("c", &search, labels([])),
            &pod("c", &Namespace::new("other"), labels([])),
            &ext("10.1.2.3"),
        ];
        let mut sources: Vec<&Endpoint> = sources.to_vec();
        sources.extend(qdrant.iter().skip(1));
        assert_exactly(&c_with, &sources, &[q0], |f| c_base.allows(f));
    }
}

/// The operator's policies as Kubernetes sees them: valid, in the instance's namespace, and
/// selecting exactly the instance's pods.
#[test]
fn policies_select_exactly_the_instance_pods() {
    let inst = example("full");
    let c = operator_cluster(&[&inst]);
    let qdrant = qdrant_pods(&inst);
    let out = ext("203.0.113.1");
    // Every Qdrant pod is isolated in both directions.
    for q in &qdrant {
        let v = c.verdict(Flow::tcp(&out, q, 1));
        assert!(!v.ingress, "{q} is isolated for ingress");
        let v = c.verdict(Flow::tcp(q, &out, 1));
        assert!(!v.egress, "{q} is isolated for egress");
    }
    // Other pods of the namespace, including ones sharing some of the labels, are not.
    let search = search_ns();
    for l in [
        labels([]),
        labels([("app.kubernetes.io/name", "qdrant")]),
        labels([
            ("app.kubernetes.io/name", "qdrant"),
            ("app.kubernetes.io/instance", "other"),
            ("app.kubernetes.io/component", "database"),
        ]),
        labels([
            ("app.kubernetes.io/instance", "vectors"),
            ("team", "search"),
        ]),
    ] {
        let p = pod("p", &search, l);
        assert_eq!(
            c.verdict(Flow::tcp(&out, &p, 1)),
            Verdict {
                egress: true,
                ingress: true
            },
            "{p} must not be selected"
        );
        assert!(c.allows(Flow::tcp(&p, &out, 1)));
    }
    // Every policy lives in the instance's namespace.
    for p in network_policies::build(&inst) {
        assert_eq!(p.metadata.namespace.as_deref(), Some("search"));
    }
}
