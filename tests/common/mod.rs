//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::validate::{Instance, validate};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example SecureQdrants under deploy/examples, as (file stem, path).
pub fn examples() -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("deploy/examples"))
        .expect("deploy/examples exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

/// Parses a SecureQdrant from YAML and gives it a UID, as the API server would.
pub fn sq_from_yaml(yaml: &str) -> SecureQdrant {
    let mut sq: SecureQdrant = serde_yaml_ng::from_str(yaml).expect("valid SecureQdrant YAML");
    sq.metadata.uid = Some("6f1b5a3e-0000-4000-8000-000000000001".to_owned());
    sq.metadata
        .namespace
        .get_or_insert_with(|| "search".to_owned());
    sq.metadata.generation = Some(1);
    sq
}

/// A validated instance from YAML (panics on invalid input: for tests of valid specs).
pub fn instance(yaml: &str) -> Instance {
    validate(&sq_from_yaml(yaml), &Settings::default()).expect("a valid spec")
}

/// A validated instance from an example file.
pub fn example_instance(path: &Path) -> Instance {
    instance(&std::fs::read_to_string(path).expect("readable example"))
}

// ---------------------------------------------------------------------------------------------
// Third-party checkers installed into ./.venv by ./tests/tools/setup.sh
// ---------------------------------------------------------------------------------------------

/// A tool from ./.venv/bin (panics with the way to install it when missing).
pub fn tool(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./tests/tools/setup.sh (./tests/run.sh does it for you)",
        path.display()
    );
    path
}

/// Runs a command; returns whether it succeeded, and its stdout then stderr.
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().expect("the tool starts");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kubernetes-validate --strict -k 1.33.0` over the files: panics on any error (an unknown field
/// or a wrong type of a built-in kind) or when nothing was checked. Returns its output (custom
/// resources without a schema only warn).
pub fn kubernetes_validate(files: &[PathBuf]) -> String {
    let (ok, text) = run(std::process::Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .args(files));
    assert!(ok, "kubernetes-validate failed:\n{text}");
    assert!(
        !text.contains("ERROR"),
        "kubernetes-validate reported errors:\n{text}"
    );
    assert!(
        text.contains("passed"),
        "kubernetes-validate checked nothing:\n{text}"
    );
    text
}

/// checkov's JSON report over every manifest under `dir`, skipping `skips`.
pub fn checkov(dir: &Path, skips: &[&str]) -> serde_json::Value {
    let mut cmd = std::process::Command::new(tool("checkov"));
    cmd.args([
        "--framework",
        "kubernetes",
        "--skip-download",
        "--quiet",
        "-o",
        "json",
    ]);
    if !skips.is_empty() {
        cmd.args(["--skip-check", &skips.join(",")]);
    }
    let (_, text) = run(cmd.arg("-d").arg(dir));
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON from checkov:\n{text}"));
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .expect("checkov JSON")
        .expect("checkov JSON parses")
}

/// The failed checks of a checkov report, one line each.
pub fn checkov_failures(report: &serde_json::Value) -> Vec<String> {
    report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["check_name"], c["resource"]))
        .collect()
}

/// A fresh directory checkov will scan (it skips hidden ones, like tempfile's default `.tmp*`).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sqo-manifests-")
        .tempdir()
        .expect("a temporary directory")
}

// ---------------------------------------------------------------------------------------------
// The Helm chart, rendered by the Helm SDK through tests/tools/helm_render.py
// ---------------------------------------------------------------------------------------------

/// Runs tests/tools/helm_render.py with ./.venv's Python; returns (success, stdout, stderr).
pub fn helm_render(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(tool("python"))
        .arg(root().join("tests/tools/helm_render.py"))
        .args(args)
        .output()
        .expect("python runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The chart rendered with `values` as release `name` in `namespace` (panics on failure).
pub fn render_chart(values: &serde_json::Value, name: &str, namespace: &str) -> String {
    let values = values.to_string();
    let (ok, out, err) = helm_render(&[
        "render",
        "--values",
        &values,
        "--name",
        name,
        "--namespace",
        namespace,
    ]);
    assert!(ok, "the chart does not render with {values}:\n{err}");
    out
}

/// The documents of a YAML stream, as JSON values.
pub fn yaml_docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).expect("YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}
