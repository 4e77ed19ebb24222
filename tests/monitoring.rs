//! The chart's alert rules and Grafana dashboard (README.md, "Alerts and runbooks"):
//!
//! - the rules (charts/secure-qdrant-operator/files/prometheus-rules.yaml, the spec of the
//!   chart's PrometheusRule) pass `promtool check rules` and the `promtool test rules` unit tests
//!   of tests/monitoring/alerts_test.yaml (series that fire and series that must not); every
//!   alert has a firing unit test, a severity and a runbook section in the README its
//!   `runbook_url` points to;
//! - the chart renders that same file as its PrometheusRule, and the dashboard file as a
//!   ConfigMap for the Grafana sidecar, both off by default;
//! - every dashboard query parses (Prometheus's parser: `promtool check rules` on a rule file
//!   made of the queries with the dashboard's variables substituted), and every metric name of
//!   the queries and the rules (read by tests/tools/promtool/promql-names, the same parser) is one
//!   the operator serves on `/metrics` after reconciling a SecureQdrant and a QdrantAccessToken
//!   against the real control plane, or one Qdrant exports (tests/monitoring/qdrant-metrics.txt,
//!   from Qdrant's source).
//!
//! promtool and promql-names come from the Go module proxy (tests/tools/promtool/go.mod pins the
//! version), built by tests/tools/promtool/build.sh on first use: never skipped.

#[path = "support/control_plane.rs"]
mod control_plane;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use control_plane::{Scope, eventually};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use serde_json::{Value, json};

const RULES: &str = "charts/secure-qdrant-operator/files/prometheus-rules.yaml";
const RULE_TESTS: &str = "tests/monitoring/alerts_test.yaml";
const DASHBOARD: &str = "charts/secure-qdrant-operator/files/grafana-dashboard.json";
const QDRANT_METRICS: &str = "tests/monitoring/qdrant-metrics.txt";
const RUNBOOKS: &str =
    "https://github.com/secure-qdrant-operator/secure-qdrant-operator/blob/main/README.md#";

fn path(p: &str) -> PathBuf {
    control_plane::repo_file_path(p)
}

/// Builds promtool and promql-names once per test binary; returns their directory.
fn tools() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(path("tests/tools/promtool/build.sh"))
            .output()
            .expect("bash runs tests/tools/promtool/build.sh");
        assert!(
            out.status.success(),
            "tests/tools/promtool/build.sh failed (Go >= 1.26 and the Go module proxy are \
             needed):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::env::var_os("PROMTOOL_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| path("target/promtool"))
    })
}

/// Runs promtool with `args`: (success, stdout + stderr).
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(tools().join("promtool"))
        .args(args)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Parses `exprs` with Prometheus's parser: per expression, (error or "", metric names).
fn promql_names(exprs: &[String]) -> Vec<(String, BTreeSet<String>)> {
    let mut child = Command::new(tools().join("promql-names"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("promql-names runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!(exprs).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promql-names failed");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(results.len(), exprs.len());
    results
        .iter()
        .map(|r| {
            let names = r["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (r["error"].as_str().unwrap().to_owned(), names)
        })
        .collect()
}

fn rules() -> Value {
    serde_yaml_ng::from_str(&control_plane::repo_file(RULES)).expect("the rules file is YAML")
}

/// Every alerting rule of the rules file.
fn alerts() -> Vec<Value> {
    rules()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&control_plane::repo_file(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every query of the dashboard: the panels' targets, and the metric selectors of its
/// `label_values(SELECTOR, label)` variables.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"].as_str().expect("a variable's query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .unwrap_or_else(|| panic!("a variable query that is not label_values: {q}"));
        out.push(inner.to_owned());
    }
    out
}

/// A query with the dashboard's variables substituted as Grafana would.
fn substitute(q: &str) -> String {
    let q = q
        .replace("$__rate_interval", "5m")
        .replace("${namespace}", "search")
        .replace("${instance}", "vectors")
        .replace("$namespace", "search")
        .replace("$instance", "vectors");
    assert!(!q.contains('$'), "a variable left in {q}");
    q
}

/// The series names of the families in an OpenMetrics text, by type (a counter `x` has the
/// series `x_total`, a histogram `x_bucket`, `x_sum` and `x_count`).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

fn qdrant_names() -> BTreeSet<String> {
    control_plane::repo_file(QDRANT_METRICS)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let rules = path(RULES);
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "{out}");
    let n = alerts().len();
    assert!(
        out.contains(&format!("SUCCESS: {n} rules found")),
        "{n} alerts: {out}"
    );
    // The check can fail.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        control_plane::repo_file(RULES).replace(
            "absent(secure_qdrant_leader)",
            "absent(secure_qdrant_leader",
        ),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", bad.to_str().unwrap()]);
    assert!(!ok, "a broken expression passed: {out}");
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let tests = path(RULE_TESTS);
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // The unit tests can fail: without the failures, SecureQdrantReconcileFailing must not fire,
    // and the test that expects it fails.
    let dir = tempfile::tempdir().unwrap();
    let text = control_plane::repo_file(RULE_TESTS)
        .replace(
            "../../charts/secure-qdrant-operator/files/prometheus-rules.yaml",
            path(RULES).to_str().unwrap(),
        )
        .replace("values: 0+6x40", "values: 0x40");
    let mutated = dir.path().join("alerts_test.yaml");
    std::fs::write(&mutated, text).unwrap();
    let (ok, out) = promtool(&["test", "rules", mutated.to_str().unwrap()]);
    assert!(!ok, "a rule test without failures passed: {out}");
    assert!(out.contains("SecureQdrantReconcileFailing"), "{out}");
}

#[test]
fn every_alert_fires_in_a_unit_test_has_a_severity_and_a_runbook_in_the_readme() {
    let tests: Value =
        serde_yaml_ng::from_str(&control_plane::repo_file(RULE_TESTS)).expect("YAML");
    let firing: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().clone())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().unwrap().to_owned())
        .collect();
    let readme = control_plane::repo_file("README.md");
    let section = readme
        .split("\n## Alerts and runbooks\n")
        .nth(1)
        .expect("README has a section \"Alerts and runbooks\"");
    let section = section.split("\n## ").next().unwrap();
    let alerts = alerts();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        assert!(firing.contains(name), "{name} fires in no unit test");
        assert!(
            matches!(
                alert["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{name}: severity"
        );
        assert!(alert["for"].is_string(), "{name}: no `for`");
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(url, format!("{RUNBOOKS}{}", name.to_lowercase()), "{name}");
        // GitHub's anchor of a heading `### Name` is its lower-cased text.
        assert!(
            section.contains(&format!("\n### {name}\n")),
            "README \"Alerts and runbooks\" has no section ### {name}"
        );
        assert!(alert["annotations"]["summary"].is_string(), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// The chart
// ---------------------------------------------------------------------------------------------

fn rendered(values: Value) -> Vec<Value> {
    control_plane::render_chart(&values, "sqo", "operators")
}

#[test]
fn the_chart_renders_the_rules_file_as_its_prometheus_rule_only_when_asked() {
    let off = rendered(json!({}));
    assert!(
        !off.iter()
            .any(|d| d["kind"] == "PrometheusRule" || d["kind"] == "ConfigMap"),
        "on by default"
    );
    let docs =
        rendered(json!({"prometheusRule": {"enabled": true, "labels": {"release": "prom"}}}));
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "operators");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let spec: Value = serde_json::to_value(rule["spec"].clone()).unwrap();
    assert_eq!(spec, rules(), "the PrometheusRule is the rules file");
    // Prometheus's templates are data to Helm: they arrive untouched.
    assert!(
        rule.to_string().contains("{{ $labels.namespace }}"),
        "{rule}"
    );
}

#[test]
fn the_chart_renders_the_dashboard_for_the_grafana_sidecar_only_when_asked() {
    let docs = rendered(json!({"grafanaDashboard": {
        "enabled": true,
        "namespace": "grafana",
        "annotations": {"grafana_folder": "Databases"},
    }}));
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "grafana");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Databases");
    let json: Value = serde_json::from_str(
        cm["data"]["secure-qdrant-operator.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(json, dashboard(), "the ConfigMap holds the dashboard file");
    let default_ns = rendered(json!({"grafanaDashboard": {"enabled": true}}));
    let cm = default_ns
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(cm["metadata"]["namespace"], "operators");
}

// ---------------------------------------------------------------------------------------------
// Dashboard queries, and every metric name against the real /metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn every_dashboard_query_parses_with_its_variables_substituted() {
    let d = dashboard();
    let queries: Vec<String> = dashboard_queries(&d)
        .iter()
        .map(|q| substitute(q))
        .collect();
    assert!(queries.len() >= 15, "{queries:?}");
    // As recording rules, so that promtool parses and checks each one.
    let rules = json!({"groups": [{
        "name": "dashboard",
        "rules": queries.iter().enumerate()
            .map(|(i, q)| json!({"record": format!("dashboard:query_{i}"), "expr": q}))
            .collect::<Vec<_>>(),
    }]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&rules).unwrap()).unwrap();
    let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    for (q, (error, names)) in queries.iter().zip(promql_names(&queries)) {
        assert_eq!(error, "", "{q}");
        assert!(!names.is_empty(), "{q} selects no metric");
    }
    // The parser route can fail.
    let bad = promql_names(&["sum(rate(x[5m])".to_owned(), "{job=\"a\"}".to_owned()]);
    assert!(bad.iter().all(|(e, _)| !e.is_empty()), "{bad:?}");
}

fn get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_owned());
    }
    Ok(body.to_owned())
}

/// The address of the operator's endpoints, from its (text) log line "serving /metrics ...
/// addr=...".
fn http_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    // Strip ANSI colour sequences (ESC [ ... letter).
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let rest = plain.split("addr=").nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_use_only_metrics_the_operator_serves_after_a_reconcile_or_qdrant_exports()
 {
    let cp = control_plane::get();
    let client = cp.admin().await;
    cp.install_crds(&client).await;
    let ns = cp.namespace(&client, "monitoring").await;
    let op = cp
        .start_operator(&client, Scope::Namespaces(vec![ns.clone()]))
        .await;

    // A SecureQdrant (TLS on by default) and a token for it.
    let text = control_plane::repo_file("deploy/examples/minimal.yaml");
    let mut sq: Value = serde_yaml_ng::from_str(&text).unwrap();
    sq["metadata"]["namespace"] = json!(ns);
    sq["metadata"]["name"] = json!("vectors");
    let sqs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<SecureQdrant>(&()),
    );
    sqs.create(&PostParams::default(), &serde_json::from_value(sq).unwrap())
        .await
        .expect("SecureQdrant created");
    let tokens: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<QdrantAccessToken>(&()),
    );
    let token = json!({
        "apiVersion": "secureqdrant.dev/v1alpha1",
        "kind": "QdrantAccessToken",
        "metadata": {"name": "frontend", "namespace": ns},
        "spec": {"qdrantRef": {"name": "vectors"}, "access": {"global": "r"}},
    });
    tokens
        .create(
            &PostParams::default(),
            &serde_json::from_value(token).unwrap(),
        )
        .await
        .expect("QdrantAccessToken created");

    let addr = eventually(Duration::from_secs(30), || {
        let addr = http_addr(&op.log());
        async move { addr.ok_or_else(|| "no address in the log yet".to_owned()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    // After the reconciles: the per-object series of both objects are there.
    let metrics = eventually(Duration::from_secs(120), || {
        let got = get(&addr, "/metrics");
        let ns = ns.clone();
        async move {
            let m = got?;
            let of = |metric: &str, name: &str| {
                m.lines().any(|l| {
                    l.starts_with(&format!("{metric}{{"))
                        && l.contains(&format!("namespace=\"{ns}\""))
                        && l.contains(&format!("name=\"{name}\""))
                })
            };
            let wanted = [
                (
                    "secure_qdrant_certificate_expiry_timestamp_seconds",
                    "vectors",
                ),
                (
                    "secure_qdrant_certificate_renewal_timestamp_seconds",
                    "vectors",
                ),
                ("secure_qdrant_ca_expiry_timestamp_seconds", "vectors"),
                ("secure_qdrant_ca_renewal_timestamp_seconds", "vectors"),
                ("secure_qdrant_token_expiry_timestamp_seconds", "frontend"),
                ("secure_qdrant_token_renewal_timestamp_seconds", "frontend"),
            ];
            match wanted.iter().find(|(metric, name)| !of(metric, name)) {
                None => Ok(m),
                Some((metric, name)) => Err(format!("no {metric} of {name} yet:\n{m}")),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    assert!(
        metrics.lines().any(|l| l == "secure_qdrant_leader 1"),
        "the only replica leads:\n{metrics}"
    );

    // The families that have series only while something happens (prometheus-client writes no
    // `# TYPE` line for an empty family): an API-key rotation, and a reconcile that fails (a
    // SecureQdrant whose API-key Secret does not exist).
    sqs.patch(
        "vectors",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"secureqdrant.dev/rotate-api-key": "1"}}}),
        ),
    )
    .await
    .expect("rotation requested");
    let mut broken: Value = serde_yaml_ng::from_str(&text).unwrap();
    broken["metadata"]["namespace"] = json!(ns);
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["auth"]["apiKeySecretRef"] = json!({"name": "missing", "key": "api-key"});
    sqs.create(
        &PostParams::default(),
        &serde_json::from_value(broken).unwrap(),
    )
    .await
    .expect("SecureQdrant created");
    let metrics = eventually(Duration::from_secs(120), || {
        let got = get(&addr, "/metrics");
        async move {
            let m = got?;
            let rotating = m.lines().any(|l| {
                l.starts_with("secure_qdrant_rotation_phase_since_timestamp_seconds{")
                    && l.contains("name=\"vectors\"")
                    && l.contains("rotation=\"api-key\"")
            });
            let failed = m
                .lines()
                .any(|l| l.starts_with("secure_qdrant_reconcile_failures_total{"));
            if rotating && failed {
                Ok(m)
            } else {
                Err(format!("rotating {rotating}, failed {failed}:\n{m}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let operator = exported_names(&metrics);
    let qdrant = qdrant_names();

    // The rules: operator metrics only.
    let rule_exprs: Vec<String> = alerts()
        .iter()
        .map(|a| a["expr"].as_str().unwrap().to_owned())
        .collect();
    let mut used = BTreeSet::new();
    for (expr, (error, names)) in rule_exprs.iter().zip(promql_names(&rule_exprs)) {
        assert_eq!(error, "", "{expr}");
        for n in names {
            assert!(
                operator.contains(&n),
                "alert expression {expr} uses {n}, which the operator does not serve:\n{metrics}"
            );
            used.insert(n);
        }
    }
    // The dashboard: the operator's metrics, or Qdrant's.
    let queries: Vec<String> = dashboard_queries(&dashboard())
        .iter()
        .map(|q| substitute(q))
        .collect();
    for (q, (error, names)) in queries.iter().zip(promql_names(&queries)) {
        assert_eq!(error, "", "{q}");
        for n in names {
            if n.starts_with("secure_qdrant_") {
                assert!(
                    operator.contains(&n),
                    "{q}: the operator does not serve {n}"
                );
            } else {
                assert!(qdrant.contains(&n), "{q}: Qdrant does not export {n}");
            }
            used.insert(n);
        }
    }
    // The check can fail: a made-up name is neither.
    assert!(!operator.contains("secure_qdrant_made_up") && !qdrant.contains("made_up_total"));
    eprintln!("metric names used by the rules and the dashboard: {used:?}");
    cp.delete_namespace(&client, &ns).await;
    cp.delete_namespace(&client, &op.namespace).await;
}
