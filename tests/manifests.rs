//! Third-party checks of the manifests the operator creates: kubernetes-validate (schema of
//! Kubernetes 1.33, strict: unknown fields fail) and checkov (security policy). The tools live in
//! ./.venv, installed by ./tests/tools/setup.sh (./tests/run.sh runs it).
//!
//! checkov checks skipped, and why (also in README.md, "Security model"):
//! - CKV_K8S_43 (image by digest): the default image is a pinned release tag; a digest cannot be
//!   known for every registry mirror users pull from. Users who want digests set
//!   `spec.image: ...@sha256:...`, which the operator passes through unchanged.
//! - CKV_K8S_15 (imagePullPolicy Always): the API default is IfNotPresent, which is right for a
//!   pinned tag or digest and keeps pods starting when the registry is down. Users may set Always.
//! - CKV_K8S_35 (Secrets as files, not env): Qdrant reads its API keys only from its config file
//!   or `QDRANT__SERVICE__*` env vars. A file would need a second copy of the keys in another
//!   Secret; the env vars come from `secretKeyRef`, so no key is ever written into the pod spec.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use secure_qdrant_operator::settings::Settings;

const CHECKOV_SKIPS: &[&str] = &["CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35"];

fn tool(name: &str) -> PathBuf {
    let path = common::root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./tests/tools/setup.sh (./tests/run.sh does it for you)",
        path.display()
    );
    path
}

/// Renders every example into its own file under a fresh temporary directory.
fn rendered_examples() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = scratch_dir();
    let mut files = Vec::new();
    for (stem, path) in common::examples() {
        let input = std::fs::read_to_string(&path).unwrap();
        let out = secure_qdrant_operator::render::render(&input, &Settings::default()).unwrap();
        let file = dir.path().join(format!("{stem}.yaml"));
        std::fs::write(&file, out).unwrap();
        files.push(file);
    }
    (dir, files)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the tool starts");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn kubernetes_validate(files: &[PathBuf]) {
    let (ok, text) = run(Command::new(tool("kubernetes-validate"))
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
}

#[test]
fn rendered_examples_pass_kubernetes_validate_strict() {
    let (_dir, files) = rendered_examples();
    kubernetes_validate(&files);
}

#[test]
fn crd_passes_kubernetes_validate_strict() {
    kubernetes_validate(&[common::root().join("crds/secure-qdrant-operator.yaml")]);
}

#[test]
fn kubernetes_validate_catches_an_unknown_field() {
    // The check above can fail: an unknown field in a StatefulSet is rejected.
    let dir = scratch_dir();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  replicas: 1\n  \
         selector: {matchLabels: {a: b}}\n  serviceName: x\n  template:\n    metadata: {labels: {a: b}}\n    \
         spec:\n      containers: [{name: c, image: i, readOnlyRootFs: true}]\n",
    )
    .unwrap();
    let (ok, text) = run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file));
    assert!(
        !ok || text.contains("ERROR"),
        "an unknown field passed:\n{text}"
    );
}

fn checkov(dir: &Path) -> serde_json::Value {
    let (_, text) = run(Command::new(tool("checkov"))
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ])
        .args(["--skip-check", &CHECKOV_SKIPS.join(",")])
        .arg("-d")
        .arg(dir));
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON from checkov:\n{text}"));
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .expect("checkov JSON")
        .expect("checkov JSON parses")
}

#[test]
fn rendered_examples_pass_checkov_with_zero_failed_checks() {
    let (dir, _files) = rendered_examples();
    let report = checkov(dir.path());
    let summary = &report["summary"];
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["check_name"], c["resource"]))
        .collect();
    assert_eq!(
        summary["failed"],
        0,
        "checkov failed checks:\n{}",
        failed.join("\n")
    );
    assert!(
        summary["passed"].as_u64().unwrap_or(0) > 100,
        "checkov passed suspiciously few checks: {summary}"
    );
}

#[test]
fn checkov_fails_a_root_pod() {
    // The check above can fail: a pod running as root with privilege escalation is reported.
    let dir = scratch_dir();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\nspec:\n  containers:\n  - name: c\n    \
         image: nginx\n    securityContext: {privileged: true, runAsUser: 0}\n",
    )
    .unwrap();
    let report = checkov(dir.path());
    assert!(
        report["summary"]["failed"].as_u64().unwrap_or(0) > 5,
        "{}",
        report["summary"]
    );
}

/// A fresh directory checkov will scan (it skips hidden ones, like tempfile's default `.tmp*`).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sqo-manifests-")
        .tempdir()
        .expect("a temporary directory")
}
