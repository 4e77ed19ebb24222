//! The Helm chart (`charts/secure-qdrant-operator`) and the plain manifests rendered from it
//! (`deploy/secure-qdrant-operator.yaml`), checked without a helm binary: the chart is rendered
//! and linted by the Helm v4 Go SDK through `tests/tools/helm_render.py` (PyPI
//! `helm-python-sdk`, installed into ./.venv by ./tests/tools/setup.sh), which enforces
//! values.schema.json like `helm install` does.
//!
//! Three renderings are checked by helm lint (strict), `kubernetes-validate --strict` (Kubernetes
//! 1.33) and checkov (0 failed checks): the defaults, `watchNamespaces` set, and ServiceMonitor +
//! PrometheusRule + Grafana dashboard ConfigMap + NetworkPolicy with metrics peers + 2 replicas
//! (leader election).
//!
//! checkov checks skipped, and why (also in README.md, "Security model"):
//! - CKV_K8S_43 (image by digest): the chart cannot know the digest of the image a user's
//!   registry or mirror serves for a release; the default is the release tag (the chart's
//!   appVersion). Set `image.digest: sha256:...` to pull by digest: the rendering with a digest
//!   below passes checkov with no skip at all.
//! - CKV_K8S_15 (imagePullPolicy Always): `IfNotPresent` is right for a pinned tag or digest and
//!   keeps the operator starting when the registry is down. `image.pullPolicy: Always` is
//!   accepted (same rendering).

mod common;
#[path = "support/netpol.rs"]
#[allow(dead_code)]
mod netpol;

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use netpol::{Cluster, Endpoint, Flow, Namespace, Pod, Protocol, labels};
use secure_qdrant_operator::rbac::{self, LEADER_ELECTION, RBAC};

const CHECKOV_SKIPS: &[&str] = &["CKV_K8S_43", "CKV_K8S_15"];
/// The release namespace of the test renderings (not the default, so a hard-coded namespace in
/// a template shows).
const NS: &str = "qdrant-system";
const RELEASE: &str = "sqo";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn helm_render(args: &[&str]) -> (bool, String, String) {
    common::helm_render(args)
}

/// The chart rendered with `values` as release `sqo` in `qdrant-system` (panics on failure).
fn render(values: &Value) -> String {
    common::render_chart(values, RELEASE, NS)
}

/// Why the chart refuses `values` (panics when it renders).
fn refusal(values: &Value) -> String {
    let values = values.to_string();
    let (ok, out, err) = helm_render(&["render", "--values", &values]);
    assert!(!ok, "the chart accepted {values}:\n{out}");
    err
}

fn docs(yaml: &str) -> Vec<Value> {
    common::yaml_docs(yaml)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(docs)))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| format!("{} {}", d["kind"], d["metadata"]["name"]))
        .collect()
}

/// The three renderings every third-party check runs on, as (name, values).
fn scenarios() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        (
            "watch-namespaces",
            json!({"watchNamespaces": ["team-a", "team-b"]}),
        ),
        (
            "monitored-ha",
            json!({
                "replicas": 2,
                "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
                "prometheusRule": {"enabled": true, "labels": {"release": "prometheus"}},
                "grafanaDashboard": {"enabled": true, "namespace": "monitoring"},
                "networkPolicy": {
                    "enabled": true,
                    "apiServer": {"cidrs": ["172.18.0.0/24"], "ports": [6443]},
                    "metricsFrom": [prometheus_peer()],
                },
                "image": {"digest": DIGEST, "pullPolicy": "Always"},
            }),
        ),
    ]
}

fn prometheus_peer() -> Value {
    json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    })
}

/// Each scenario rendered into its own directory (checkov scans directories).
fn rendered_scenarios() -> Vec<(&'static str, tempfile::TempDir, PathBuf)> {
    scenarios()
        .into_iter()
        .map(|(name, values)| {
            let dir = common::scratch_dir();
            let file = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&file, render(&values)).expect("rendering written");
            (name, dir, file)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Third-party checks
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rendering_passes_helm_lint_strict() {
    for (name, values) in scenarios() {
        let values = values.to_string();
        let (ok, out, err) = helm_render(&["lint", "--values", &values, "--namespace", NS]);
        assert!(ok, "{name}: helm lint failed:\n{out}\n{err}");
        let report: Value = serde_json::from_str(&out).expect("lint report is JSON");
        assert_eq!(report["total_charts_linted"], 1, "{name}: {report}");
    }
    // The check can fail: lint applies the schema too.
    let (ok, out, _) = helm_render(&["lint", "--values", r#"{"replicas": -1}"#]);
    assert!(!ok, "helm lint accepted replicas: -1:\n{out}");
    assert!(out.contains("replicas"), "{out}");
}

#[test]
fn every_rendering_passes_kubernetes_validate_strict() {
    for (name, _dir, file) in rendered_scenarios() {
        let text = common::kubernetes_validate(std::slice::from_ref(&file));
        for kind in [
            "deployment",
            "serviceaccount",
            "service",
            "validatingadmissionpolicy",
            "validatingadmissionpolicybinding",
        ] {
            assert!(
                text.contains(&format!("passed for resource {kind}/")),
                "{name}: no {kind} was validated:\n{text}"
            );
        }
        if name == "monitored-ha" {
            // Custom resources: kubernetes-validate has no schema for them and only warns.
            for kind in ["ServiceMonitor", "PrometheusRule"] {
                assert!(
                    text.contains("WARN") && text.contains(kind),
                    "{name}: {kind}: {text}"
                );
            }
            assert!(
                text.contains("passed for resource configmap/"),
                "{name}: the dashboard ConfigMap was not validated:\n{text}"
            );
        }
    }
}

#[test]
fn every_rendering_passes_checkov_with_zero_failed_checks() {
    for (name, dir, _file) in rendered_scenarios() {
        // The rendering with a digest and pullPolicy Always needs no skip at all.
        let skips = if name == "monitored-ha" {
            &[][..]
        } else {
            CHECKOV_SKIPS
        };
        let report = common::checkov(dir.path(), skips);
        let summary = &report["summary"];
        assert_eq!(
            summary["failed"],
            0,
            "{name}: checkov failed checks:\n{}",
            common::checkov_failures(&report).join("\n")
        );
        assert!(
            summary["passed"].as_u64().unwrap_or(0) > 80,
            "{name}: checkov passed suspiciously few checks: {summary}"
        );
    }
}

#[test]
fn checkov_skips_are_needed_only_for_the_default_image_reference() {
    // Without the skips, the defaults fail exactly the two skipped checks: the skips hide
    // nothing else (and the checkov run above can fail).
    let dir = common::scratch_dir();
    std::fs::write(dir.path().join("defaults.yaml"), render(&json!({}))).unwrap();
    let report = common::checkov(dir.path(), &[]);
    let failed: BTreeSet<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["check_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let skips: BTreeSet<String> = CHECKOV_SKIPS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        failed,
        skips,
        "{}",
        common::checkov_failures(&report).join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// values.schema.json
// ---------------------------------------------------------------------------------------------

#[test]
fn the_schema_rejects_bad_values_naming_them() {
    // (values, what the refusal must say: the JSON pointer of the bad value, or the unknown key)
    let cases = [
        (json!({"replicas": -1}), "at '/replicas'"),
        (json!({"replicas": 0}), "at '/replicas'"),
        (json!({"replicas": "2"}), "at '/replicas'"),
        (json!({"image": {"tag": 5}}), "at '/image/tag'"),
        (json!({"image": {"digest": "latest"}}), "at '/image/digest'"),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "at '/image/pullPolicy'",
        ),
        (json!({"logFormat": "xml"}), "at '/logFormat'"),
        // Not a level: the operator would refuse to start (src/telemetry).
        (json!({"logLevel": "warning"}), "at '/logLevel'"),
        (json!({"logLevel": "kube=loud"}), "at '/logLevel'"),
        (json!({"logLevel": ""}), "at '/logLevel'"),
        (json!({"watchNamespaces": "a"}), "at '/watchNamespaces'"),
        (
            json!({"watchNamespaces": ["Team_A"]}),
            "at '/watchNamespaces/0'",
        ),
        (
            json!({"watchNamespaces": ["a", "a"]}),
            "at '/watchNamespaces'",
        ),
        (json!({"replica": 2}), "'replica' not allowed"),
        (json!({"httpPort": 70000}), "at '/httpPort'"),
        (
            json!({"leaderElection": {"enabled": "yes"}}),
            "at '/leaderElection/enabled'",
        ),
        (
            json!({"networkPolicy": {"apiServer": {"cidrs": ["the api server"]}}}),
            "at '/networkPolicy/apiServer/cidrs/0'",
        ),
        (
            json!({"policy": {"allowedImages": ["docker.io/qdrant/qdrant:v1"]}}),
            "at '/policy/allowedImages/0'",
        ),
        (
            json!({"policy": {"allowGlobalManageTokens": "no"}}),
            "at '/policy/allowGlobalManageTokens'",
        ),
        (
            json!({"admissionPolicy": {"enabled": "yes"}}),
            "at '/admissionPolicy/enabled'",
        ),
        (
            json!({"networkPolicy": {"enable": true}}),
            "'enable' not allowed",
        ),
        (
            json!({"networkPolicy": {"metricsFrom": [{"pods": {}}]}}),
            "'pods' not allowed",
        ),
        (
            json!({"serviceMonitor": {"interval": "soon"}}),
            "at '/serviceMonitor/interval'",
        ),
        (
            json!({"prometheusRule": {"enable": true}}),
            "'enable' not allowed",
        ),
        (
            json!({"grafanaDashboard": {"namespace": "Not A Namespace"}}),
            "at '/grafanaDashboard/namespace'",
        ),
    ];
    for (values, needle) in cases {
        let err = refusal(&values);
        assert!(
            err.contains("schema") && err.contains(needle),
            "the refusal of {values} does not say {needle:?}:\n{err}"
        );
    }
    // Good values of the same keys render.
    render(&json!({
        "replicas": 3,
        "image": {"tag": "0.1.0-rc.1", "pullPolicy": "Always"},
        "logFormat": "text",
        "logLevel": "secure_qdrant_operator=debug, kube::runtime=WARN,info",
        "watchNamespaces": ["a", "b-2"],
        "leaderElection": {"enabled": true},
        "networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1/32", "fd00::/64"]}},
        "policy": {"allowedImages": ["registry.example:5000/mirror/qdrant"], "allowGlobalManageTokens": false},
        "admissionPolicy": {"enabled": false},
    }));
    // An empty CIDR list is the default: looked up.
    render(&json!({"networkPolicy": {"apiServer": {"cidrs": []}}}));
}

#[test]
fn leader_election_off_with_two_replicas_is_refused() {
    let err = refusal(&json!({"replicas": 2, "leaderElection": {"enabled": false}}));
    assert!(err.contains("leaderElection.enabled"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Generated files: deploy/ and the chart's CRDs
// ---------------------------------------------------------------------------------------------

#[test]
fn deploy_manifests_equal_the_default_rendering() {
    let (ok, rendered, err) = helm_render(&["render", "--plain"]);
    assert!(ok, "{err}");
    let committed =
        std::fs::read_to_string(common::root().join("deploy/secure-qdrant-operator.yaml"))
            .expect("deploy/secure-qdrant-operator.yaml exists");
    assert!(
        committed == rendered,
        "deploy/secure-qdrant-operator.yaml is not the chart's default rendering: run \
         ./tests/regenerate.sh"
    );
}

#[test]
fn chart_crds_equal_the_generated_crds() {
    let generated =
        std::fs::read_to_string(common::root().join("crds/secure-qdrant-operator.yaml"))
            .expect("crds/ exists");
    let in_chart = std::fs::read_to_string(
        common::root().join("charts/secure-qdrant-operator/crds/secure-qdrant-operator.yaml"),
    )
    .expect("the chart has its CRDs");
    assert!(
        generated == in_chart,
        "charts/secure-qdrant-operator/crds/ differs from crds/: run ./tests/regenerate.sh"
    );
    let names: Vec<String> = docs(&in_chart)
        .iter()
        .map(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = secure_qdrant_operator::crd::all()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, want);
}

#[test]
fn the_deploy_manifest_passes_kubernetes_validate_strict_namespace_and_crds_included() {
    // The renderings above are the chart's templates; deploy/ adds the CRDs and the Namespace.
    let text =
        common::kubernetes_validate(&[common::root().join("deploy/secure-qdrant-operator.yaml")]);
    for resource in [
        "namespace/secure-qdrant-operator",
        "customresourcedefinition/secureqdrants.secureqdrant.dev",
        "customresourcedefinition/qdrantaccesstokens.secureqdrant.dev",
        "deployment/secure-qdrant-operator",
    ] {
        assert!(
            text.contains(&format!("passed for resource {resource}")),
            "{resource} was not validated:\n{text}"
        );
    }
}

#[test]
fn kubectl_apply_of_deploy_gets_crds_then_namespace_then_the_operator() {
    // `kubectl apply -f deploy/` is not recursive: the only manifest file at the top is the
    // rendering; the examples live in deploy/examples/.
    let top: Vec<String> = std::fs::read_dir(common::root().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["secure-qdrant-operator.yaml"]);

    let text =
        std::fs::read_to_string(common::root().join("deploy/secure-qdrant-operator.yaml")).unwrap();
    let all = docs(&text);
    let order: Vec<&str> = all.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        &order[..3],
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Namespace"
        ],
        "{order:?}"
    );
    let ns = &all[2];
    assert_eq!(ns["metadata"]["name"], "secure-qdrant-operator");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    // Every namespaced object goes to that namespace; the operator comes last.
    for d in &all[3..] {
        let kind = d["kind"].as_str().unwrap();
        if !matches!(
            kind,
            "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        ) {
            assert_eq!(
                d["metadata"]["namespace"], "secure-qdrant-operator",
                "{kind}"
            );
        }
    }
    assert_eq!(order.last(), Some(&"Deployment"), "{order:?}");
    assert!(
        order.iter().position(|k| *k == "NetworkPolicy")
            < order.iter().position(|k| *k == "Deployment"),
        "the NetworkPolicy must exist before the operator pods start: {order:?}"
    );
    assert!(
        order
            .iter()
            .position(|k| *k == "ValidatingAdmissionPolicyBinding")
            < order.iter().position(|k| *k == "Deployment"),
        "the admission policy must bind before the operator pods start: {order:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The operator Deployment
// ---------------------------------------------------------------------------------------------

fn deployment(all: &[Value]) -> &Value {
    find(all, "Deployment", "sqo-secure-qdrant-operator")
}

fn container(all: &[Value]) -> &Value {
    let containers = deployment(all)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(all: &[Value]) -> Vec<String> {
    container(all)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_owned())
        .collect()
}

fn env(all: &[Value], name: &str) -> Value {
    container(all)["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn the_operator_pod_is_hardened_and_only_its_container_gets_a_token() {
    let all = docs(&render(&json!({})));
    let pod = &deployment(&all)["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["serviceAccountName"], "sqo-secure-qdrant-operator");
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_i64().unwrap() >= 10000, "{psc}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");

    let c = container(&all);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res}"
            );
        }
    }

    // The token: projected, short-lived, mounted read-only where client libraries look for it.
    let mount = &c["volumeMounts"][0];
    assert_eq!(
        mount["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(mount["readOnly"], true);
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    let sources = volume["projected"]["sources"]
        .as_array()
        .expect("projected");
    let token = &sources[0]["serviceAccountToken"];
    assert_eq!(token["path"], "token");
    assert!(token["expirationSeconds"].as_i64().unwrap() <= 3600);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let sa = find(&all, "ServiceAccount", "sqo-secure-qdrant-operator");
    assert_eq!(sa["automountServiceAccountToken"], false);
}

#[test]
fn the_operator_runs_with_its_http_port_probes_and_settings() {
    let all = docs(&render(&json!({"logFormat": "text", "logLevel": "debug"})));
    assert_eq!(args(&all), ["run", "--http-addr=0.0.0.0:8080"]);
    let c = container(&all);
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert_eq!(
        env(&all, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env(&all, "LOG_FORMAT")["value"], "text");
    assert_eq!(env(&all, "LOG_LEVEL")["value"], "debug");
    assert_eq!(env(&all, "CLUSTER_DOMAIN")["value"], "cluster.local");
    assert_eq!(env(&all, "ALLOW_GLOBAL_MANAGE_TOKENS")["value"], "true");
    let strict = docs(&render(
        &json!({"policy": {"allowGlobalManageTokens": false}}),
    ));
    assert_eq!(env(&strict, "ALLOW_GLOBAL_MANAGE_TOKENS")["value"], "false");
    assert_eq!(
        c["image"],
        "ghcr.io/secure-qdrant-operator/secure-qdrant-operator:0.1.0"
    );

    // One replica, no leader election: never two operators at once, even during an upgrade.
    let d = deployment(&all);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");

    // The metrics Service reaches that port by name.
    let svc = find(&all, "Service", "sqo-secure-qdrant-operator-metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert!(
        of_kind(&all, "ServiceMonitor").is_empty(),
        "ServiceMonitor is off by default"
    );

    let moved = docs(&render(
        &json!({"httpPort": 9000, "image": {"digest": DIGEST}}),
    ));
    assert_eq!(args(&moved), ["run", "--http-addr=0.0.0.0:9000"]);
    assert_eq!(container(&moved)["ports"][0]["containerPort"], 9000);
    assert_eq!(
        container(&moved)["image"],
        format!("ghcr.io/secure-qdrant-operator/secure-qdrant-operator@{DIGEST}")
    );
}

#[test]
fn more_than_one_replica_turns_leader_election_on_in_the_release_namespace() {
    let all = docs(&render(&json!({"replicas": 2})));
    assert_eq!(
        args(&all),
        [
            "run",
            "--http-addr=0.0.0.0:8080",
            "--leader-election",
            &format!("--lease-namespace={NS}"),
        ]
    );
    let d = deployment(&all);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");

    // Forced on with one replica; off by default.
    let forced = docs(&render(&json!({"leaderElection": {"enabled": true}})));
    assert!(args(&forced).contains(&"--leader-election".to_owned()));
    let single = docs(&render(&json!({})));
    assert!(!args(&single).iter().any(|a| a.contains("lease")));
}

#[test]
fn watch_namespaces_are_passed_to_the_operator() {
    let all = docs(&render(&json!({"watchNamespaces": ["team-a", "team-b"]})));
    assert_eq!(
        args(&all),
        [
            "run",
            "--http-addr=0.0.0.0:8080",
            "--namespaces=team-a,team-b"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// RBAC: the chart grants exactly `secure_qdrant_operator::rbac`
// ---------------------------------------------------------------------------------------------

type Triples = BTreeSet<(String, String, String)>;

/// Every (apiGroup, resource, verb) a Role or ClusterRole grants. Wildcards and resourceNames
/// would make the comparison meaningless: they fail here.
fn granted(role: &Value) -> Triples {
    let mut out = Triples::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let t = (
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    );
                    assert!(
                        !t.0.contains('*') && !t.1.contains('*') && t.2 != "*",
                        "wildcard in {rule}"
                    );
                    out.insert(t);
                }
            }
        }
    }
    out
}

/// Missing and extra rules of a role compared with a table; empty when equal.
fn diff(role: &Value, want: &Triples) -> String {
    let have = granted(role);
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(want).collect();
    if missing.is_empty() && extra.is_empty() {
        String::new()
    } else {
        format!(
            "{} {}: missing {missing:?}, extra {extra:?}",
            role["kind"], role["metadata"]["name"]
        )
    }
}

fn binds_the_operator(binding: &Value, role_kind: &str, role_name: &str) {
    assert_eq!(binding["roleRef"]["kind"], role_kind, "{binding}");
    assert_eq!(binding["roleRef"]["name"], role_name, "{binding}");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "sqo-secure-qdrant-operator", "namespace": NS}])
    );
}

#[test]
fn the_cluster_role_grants_exactly_the_rbac_table() {
    let all = docs(&render(&json!({})));
    let role = find(&all, "ClusterRole", "sqo-secure-qdrant-operator");
    let d = diff(role, &rbac::expand(RBAC));
    assert!(d.is_empty(), "{d}");
    binds_the_operator(
        find(&all, "ClusterRoleBinding", "sqo-secure-qdrant-operator"),
        "ClusterRole",
        "sqo-secure-qdrant-operator",
    );
    // No leader election: no Lease permission at all.
    assert!(of_kind(&all, "Role").is_empty(), "{:?}", kinds(&all));

    // The comparison can fail: one verb more or less is reported.
    let mut widened = role.clone();
    widened["rules"][0]["verbs"]
        .as_array_mut()
        .unwrap()
        .push(json!("delete"));
    assert!(diff(&widened, &rbac::expand(RBAC)).contains("extra"));
    let mut narrowed = role.clone();
    narrowed["rules"][0]["verbs"].as_array_mut().unwrap().pop();
    assert!(diff(&narrowed, &rbac::expand(RBAC)).contains("missing [("));
}

#[test]
fn watch_namespaces_get_a_role_each_and_nothing_cluster_wide() {
    let all = docs(&render(&json!({"watchNamespaces": ["team-a", "team-b"]})));
    assert!(of_kind(&all, "ClusterRole").is_empty(), "{:?}", kinds(&all));
    assert!(of_kind(&all, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&all, "Role");
    let namespaces: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["team-a", "team-b"]);
    for role in roles {
        let d = diff(role, &rbac::expand(RBAC));
        assert!(d.is_empty(), "{d}");
    }
    let bindings = of_kind(&all, "RoleBinding");
    assert_eq!(bindings.len(), 2);
    for b in bindings {
        binds_the_operator(b, "Role", "sqo-secure-qdrant-operator");
    }
}

#[test]
fn leader_election_gets_a_lease_role_in_the_release_namespace_only() {
    for values in [
        json!({"replicas": 2}),
        json!({"replicas": 2, "watchNamespaces": ["team-a"]}),
    ] {
        let all = docs(&render(&values));
        let name = "sqo-secure-qdrant-operator-leader-election";
        let role = find(&all, "Role", name);
        assert_eq!(role["metadata"]["namespace"], NS);
        let d = diff(role, &rbac::expand(LEADER_ELECTION));
        assert!(d.is_empty(), "{values}: {d}");
        let binding = find(&all, "RoleBinding", name);
        assert_eq!(binding["metadata"]["namespace"], NS);
        binds_the_operator(binding, "Role", name);
        // Leases are granted nowhere else.
        for r in of_kind(&all, "Role")
            .into_iter()
            .chain(of_kind(&all, "ClusterRole"))
        {
            if r["metadata"]["name"] != name {
                assert!(
                    !granted(r).iter().any(|t| t.1 == "leases"),
                    "{values}: {}",
                    r["metadata"]["name"]
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The operator's NetworkPolicy, evaluated over flows
// ---------------------------------------------------------------------------------------------

fn operator_policies(values: &Value) -> Vec<NetworkPolicy> {
    of_kind(&docs(&render(values)), "NetworkPolicy")
        .into_iter()
        .map(|p| serde_json::from_value(p.clone()).expect("a NetworkPolicy"))
        .collect()
}

struct World {
    operator: Endpoint,
    dns: Endpoint,
    prometheus: Endpoint,
    other_monitoring: Endpoint,
    qdrant: Endpoint,
    neighbour: Endpoint,
}

fn world() -> World {
    let ns = Namespace::new(NS);
    let kube_system = Namespace::new("kube-system");
    let monitoring = Namespace::new("monitoring");
    let search = Namespace::new("search");
    World {
        operator: Pod::new(
            "operator",
            &ns,
            labels([
                ("app.kubernetes.io/name", "secure-qdrant-operator"),
                ("app.kubernetes.io/instance", RELEASE),
            ]),
        )
        .with_port("http", 8080, Protocol::Tcp)
        .into(),
        dns: Pod::new("coredns", &kube_system, labels([("k8s-app", "kube-dns")])).into(),
        prometheus: Pod::new(
            "prometheus",
            &monitoring,
            labels([("app.kubernetes.io/name", "prometheus")]),
        )
        .into(),
        other_monitoring: Pod::new("grafana", &monitoring, labels([("app", "grafana")])).into(),
        qdrant: Pod::new(
            "vectors-0",
            &search,
            labels([("app.kubernetes.io/name", "qdrant")]),
        )
        .with_port("http", 6333, Protocol::Tcp)
        .into(),
        neighbour: Pod::new("other", &ns, labels([("app", "other")])).into(),
    }
}

#[test]
fn the_network_policy_allows_the_api_server_and_dns_and_only_listed_scrapers() {
    let w = world();
    let api = Endpoint::external("172.18.0.2");
    let internet = Endpoint::external("93.184.216.34");
    let c = Cluster::new(operator_policies(&json!({
        "networkPolicy": {
            "apiServer": {"cidrs": ["172.18.0.0/24"], "ports": [443, 6443]},
            "metricsFrom": [prometheus_peer()],
        }
    })))
    .expect("a valid NetworkPolicy");
    // Egress: the API server on its ports, DNS; nothing else.
    assert!(c.allows(Flow::tcp(&w.operator, &api, 6443)));
    assert!(c.allows(Flow::tcp(&w.operator, &api, 443)));
    assert!(
        !c.allows(Flow::tcp(&w.operator, &api, 10250)),
        "kubelet port"
    );
    assert!(!c.allows(Flow::tcp(&w.operator, &internet, 443)));
    assert!(c.allows(Flow::udp(&w.operator, &w.dns, 53)));
    assert!(c.allows(Flow::tcp(&w.operator, &w.dns, 53)));
    assert!(!c.allows(Flow::tcp(&w.operator, &w.dns, 9153)));
    assert!(!c.allows(Flow::tcp(&w.operator, &w.qdrant, 6333)));
    assert!(!c.allows(Flow::tcp(&w.operator, &w.prometheus, 9090)));
    // Ingress: the listed scraper on the HTTP port only.
    assert!(c.allows(Flow::tcp(&w.prometheus, &w.operator, 8080)));
    assert!(!c.allows(Flow::tcp(&w.prometheus, &w.operator, 9090)));
    assert!(!c.allows(Flow::tcp(&w.other_monitoring, &w.operator, 8080)));
    assert!(!c.allows(Flow::tcp(&w.neighbour, &w.operator, 8080)));
    assert!(!c.allows(Flow::tcp(&internet, &w.operator, 8080)));
    for p in Protocol::ALL {
        assert!(!c.allows(Flow::new(&w.operator, &internet, 53, p)));
    }
}

/// The chart's `sqo.apiServerCidrs` helper, rendered by the Helm SDK in a probe chart that holds
/// the chart's own `_helpers.tpl`, fed what `lookup` returns from a cluster (the SDK's `lookup`
/// returns nothing without one).
fn api_server_cidrs(configured: Value, slice: Value, endpoints: Value) -> Vec<String> {
    let dir = common::scratch_dir();
    let chart = dir.path().join("probe");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: probe\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::copy(
        common::root().join("charts/secure-qdrant-operator/templates/_helpers.tpl"),
        chart.join("templates/_helpers.tpl"),
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/probe.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n  cidrs: {{ include \"sqo.apiServerCidrs\" (dict \"configured\" .Values.configured \"slice\" .Values.slice \"endpoints\" .Values.endpoints) | quote }}\n",
    )
    .unwrap();
    let values =
        json!({"configured": configured, "slice": slice, "endpoints": endpoints}).to_string();
    let chart = chart.to_string_lossy().into_owned();
    let (ok, out, err) = helm_render(&["render", "--chart", &chart, "--values", &values]);
    assert!(ok, "{err}");
    let cm = docs(&out).pop().expect("the probe");
    serde_json::from_str(cm["data"]["cidrs"].as_str().unwrap()).expect("a JSON list")
}

#[test]
fn api_server_egress_narrows_to_the_looked_up_endpoints_else_stays_broad() {
    // What `lookup` returns for the `kubernetes` Service of a kind cluster (one API server) and
    // of an HA dual-stack control plane.
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "endpoints": [{"addresses": ["172.18.0.2"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
    });
    assert_eq!(
        api_server_cidrs(json!([]), slice, json!({})),
        ["172.18.0.2/32"]
    );
    let ha = json!({
        "addressType": "IPv6",
        "endpoints": [{"addresses": ["fd00::3"]}, {"addresses": ["fd00::2"]}],
    });
    assert_eq!(
        api_server_cidrs(json!(null), ha, json!({})),
        ["fd00::2/128", "fd00::3/128"]
    );
    // No EndpointSlice (an old cluster): the Endpoints.
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "subsets": [{"addresses": [{"ip": "10.0.0.10"}, {"ip": "10.0.0.11"}], "ports": [{"port": 443}]}],
    });
    assert_eq!(
        api_server_cidrs(json!([]), json!({}), endpoints.clone()),
        ["10.0.0.10/32", "10.0.0.11/32"]
    );
    // The value wins over anything looked up.
    assert_eq!(
        api_server_cidrs(json!(["192.168.0.0/24"]), json!({}), endpoints),
        ["192.168.0.0/24"]
    );
    // Nothing found (`helm template`, a client-side dry run): the broad rule.
    assert_eq!(
        api_server_cidrs(json!([]), json!({}), json!({})),
        ["0.0.0.0/0"]
    );
    assert_eq!(
        api_server_cidrs(json!([]), json!({"endpoints": []}), json!({"subsets": []})),
        ["0.0.0.0/0"]
    );
}

#[test]
fn the_chart_tells_when_api_server_egress_could_not_be_narrowed() {
    // The SDK's `lookup` finds nothing: the policy allows any address on the ports, and NOTES
    // says so and how to fix it.
    let broad = operator_policies(&json!({}));
    let peers = &broad[0].spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    let cidrs: Vec<_> = peers
        .to
        .iter()
        .flatten()
        .map(|p| p.ip_block.as_ref().unwrap().cidr.clone())
        .collect();
    assert_eq!(cidrs, ["0.0.0.0/0"]);
    let text = notes(&json!({}));
    for needle in [
        "at 0.0.0.0/0",
        "could not be looked up",
        "networkPolicy.apiServer.cidrs",
        "kubectl get endpointslice kubernetes -n default",
    ] {
        assert!(text.contains(needle), "NOTES.txt lacks {needle:?}:\n{text}");
    }
    // Set explicitly: the policy has exactly those, and NOTES has no warning.
    let values =
        json!({"networkPolicy": {"apiServer": {"cidrs": ["172.18.0.2/32", "fd00::2/128"]}}});
    let narrow = operator_policies(&values);
    let peers = &narrow[0].spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    let cidrs: Vec<_> = peers
        .to
        .iter()
        .flatten()
        .map(|p| p.ip_block.as_ref().unwrap().cidr.clone())
        .collect();
    assert_eq!(cidrs, ["172.18.0.2/32", "fd00::2/128"]);
    let text = notes(&values);
    assert!(text.contains("at 172.18.0.2/32, fd00::2/128"), "{text}");
    assert!(!text.contains("could not be looked up"), "{text}");
    let w = world();
    let c = Cluster::new(narrow).unwrap();
    assert!(c.allows(Flow::tcp(
        &w.operator,
        &Endpoint::external("172.18.0.2"),
        6443
    )));
    assert!(!c.allows(Flow::tcp(
        &w.operator,
        &Endpoint::external("172.18.0.3"),
        6443
    )));
}

#[test]
fn the_default_network_policy_narrows_egress_by_port_and_admits_nobody() {
    let w = world();
    let anywhere = Endpoint::external("10.20.30.40");
    let c = Cluster::new(operator_policies(&json!({}))).expect("a valid NetworkPolicy");
    // The API server's address is unknown by default (here: `lookup` finds nothing, as in
    // `helm template`): any address, API-server ports only.
    assert!(c.allows(Flow::tcp(&w.operator, &anywhere, 443)));
    assert!(c.allows(Flow::tcp(&w.operator, &anywhere, 6443)));
    assert!(!c.allows(Flow::tcp(&w.operator, &anywhere, 80)));
    assert!(!c.allows(Flow::udp(&w.operator, &anywhere, 443)));
    assert!(c.allows(Flow::udp(&w.operator, &w.dns, 53)));
    assert!(!c.allows(Flow::tcp(&w.prometheus, &w.operator, 8080)));
    assert!(!c.allows(Flow::tcp(&w.neighbour, &w.operator, 8080)));

    // Turned off, there is none (and everything is allowed: the evaluator is not vacuous).
    let none = operator_policies(&json!({"networkPolicy": {"enabled": false}}));
    assert!(none.is_empty());
    let open = Cluster::new(none).unwrap();
    assert!(open.allows(Flow::tcp(&w.neighbour, &w.operator, 8080)));
}

// ---------------------------------------------------------------------------------------------
// ServiceMonitor and NOTES.txt
// ---------------------------------------------------------------------------------------------

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let all = docs(&render(&json!({
        "serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}}
    })));
    let sm = find(&all, "ServiceMonitor", "sqo-secure-qdrant-operator");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    let svc = find(&all, "Service", "sqo-secure-qdrant-operator-metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "{k}");
    }
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([NS]));
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], svc["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    // The per-object series keep their own `namespace` label (the alerts and the dashboard
    // select and name instances by it), instead of Prometheus's `exported_namespace`.
    assert_eq!(endpoint["honorLabels"], true);
}

fn notes(values: &Value) -> String {
    let values = values.to_string();
    let (ok, out, err) = helm_render(&["notes", "--values", &values, "--namespace", NS]);
    assert!(ok, "{err}");
    out
}

#[test]
fn notes_tell_what_to_do_next() {
    let text = notes(&json!({}));
    for needle in [
        "rollout status deployment/secure-qdrant-operator",
        "kind: SecureQdrant",
        "namespace: search",
        "get secret vectors-api-key -o jsonpath='{.data.api-key}' | base64 -d",
        "kind: QdrantAccessToken",
        "It watches every namespace",
        "networkPolicy.apiServer.cidrs",
    ] {
        assert!(text.contains(needle), "NOTES.txt lacks {needle:?}:\n{text}");
    }
    assert!(!text.contains("WARNING: serviceMonitor"), "{text}");

    let scoped = notes(&json!({
        "watchNamespaces": ["team-a", "team-b"],
        "serviceMonitor": {"enabled": true},
    }));
    assert!(
        scoped.contains("only these namespaces: team-a, team-b"),
        "{scoped}"
    );
    assert!(scoped.contains("namespace: team-a"), "{scoped}");
    assert!(
        scoped.contains("WARNING: serviceMonitor is on but networkPolicy.metricsFrom is empty"),
        "{scoped}"
    );
}

/// The admin policy reaches the operator as the env vars its flags read, and the operator parses
/// what the chart renders into the same settings as its own defaults.
#[test]
fn policy_values_reach_the_operator() {
    use clap::Parser;
    use secure_qdrant_operator::cli::{Cli, Command};
    use secure_qdrant_operator::settings::Settings;

    let all = docs(&render(&json!({})));
    let names = [
        ("POLICY_ALLOWED_IMAGES", "--allowed-images"),
        ("POLICY_REQUIRE_IMAGE_DIGEST", "--require-image-digest"),
        ("POLICY_EGRESS_CIDRS", "--egress-cidrs"),
        ("POLICY_REFUSED_NODE_KEYS", "--refused-node-keys"),
        (
            "POLICY_REFUSED_PRIORITY_CLASSES",
            "--refused-priority-classes",
        ),
        (
            "POLICY_REFUSED_METADATA_PREFIXES",
            "--refused-metadata-prefixes",
        ),
    ];
    let mut argv = vec!["secure-qdrant-operator".to_owned(), "run".to_owned()];
    for (var, flag) in names {
        let value = env(&all, var)["value"]
            .as_str()
            .expect("a value")
            .to_owned();
        argv.push(format!("{flag}={value}"));
    }
    let Command::Run(run) = Cli::try_parse_from(argv).expect("parses").command else {
        panic!("not run")
    };
    assert_eq!(run.operator.settings(), Settings::default());

    let all = docs(&render(&json!({"policy": {
        "allowedImages": ["registry.example.com/mirror/*"],
        "requireImageDigest": true,
        "egressCidrs": [],
        "refusedNodeKeys": [], "refusedPriorityClasses": [], "refusedMetadataPrefixes": []
    }})));
    assert_eq!(
        env(&all, "POLICY_ALLOWED_IMAGES")["value"],
        "registry.example.com/mirror/*"
    );
    assert_eq!(env(&all, "POLICY_REQUIRE_IMAGE_DIGEST")["value"], "true");
    assert_eq!(env(&all, "POLICY_EGRESS_CIDRS")["value"], "");
    let err = refusal(&json!({"policy": {"allowedImages": []}}));
    assert!(err.contains("allowedImages"), "{err}");
}
