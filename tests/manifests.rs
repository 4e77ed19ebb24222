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

use std::path::PathBuf;
use std::process::Command;

use secure_qdrant_operator::settings::Settings;

const CHECKOV_SKIPS: &[&str] = &["CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35"];

/// Renders every example into its own file under a fresh temporary directory.
fn rendered_examples() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = common::scratch_dir();
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

#[test]
fn rendered_examples_pass_kubernetes_validate_strict() {
    let (_dir, files) = rendered_examples();
    common::kubernetes_validate(&files);
}

#[test]
fn crd_passes_kubernetes_validate_strict() {
    common::kubernetes_validate(&[common::root().join("crds/secure-qdrant-operator.yaml")]);
}

#[test]
fn kubernetes_validate_catches_an_unknown_field() {
    // The check above can fail: an unknown field in a StatefulSet is rejected.
    let dir = common::scratch_dir();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  replicas: 1\n  \
         selector: {matchLabels: {a: b}}\n  serviceName: x\n  template:\n    metadata: {labels: {a: b}}\n    \
         spec:\n      containers: [{name: c, image: i, readOnlyRootFs: true}]\n",
    )
    .unwrap();
    let (ok, text) = common::run(
        Command::new(common::tool("kubernetes-validate"))
            .args(["--strict", "-k", "1.33.0"])
            .arg(&file),
    );
    assert!(
        !ok || text.contains("ERROR"),
        "an unknown field passed:\n{text}"
    );
}

#[test]
fn rendered_examples_pass_checkov_with_zero_failed_checks() {
    let (dir, _files) = rendered_examples();
    let report = common::checkov(dir.path(), CHECKOV_SKIPS);
    let summary = &report["summary"];
    let failed = common::checkov_failures(&report);
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
    let dir = common::scratch_dir();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\nspec:\n  containers:\n  - name: c\n    \
         image: nginx\n    securityContext: {privileged: true, runAsUser: 0}\n",
    )
    .unwrap();
    let report = common::checkov(dir.path(), CHECKOV_SKIPS);
    assert!(
        report["summary"]["failed"].as_u64().unwrap_or(0) > 5,
        "{}",
        report["summary"]
    );
}
