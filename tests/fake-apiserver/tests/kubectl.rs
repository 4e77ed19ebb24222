//! kubectl against the fake API server: discovery, `apply --server-side` of the project's CRD and
//! a SecureQdrant, `get` (tables with the CRD's printer columns, `-o json`), `create -f`,
//! `patch`, `label`, `delete`, `wait`. Skipped, saying so, when kubectl is not installed.

use std::path::Path;
use std::process::Output;

use fake_apiserver::{FakeApiServer, Options};
use serde_json::Value;

fn kubectl_present() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.expect("kubectl finishes")
}

async fn ok(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(kubeconfig, args, stdin).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crds/secure-qdrant-operator.yaml"
);

const INSTANCE: &str = "apiVersion: secureqdrant.dev/v1alpha1
kind: SecureQdrant
metadata:
  name: vectors
  namespace: search
spec:
  replicas: 3
";

const SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: s1
  labels: {team: search}
stringData:
  key: value
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_discovers_applies_gets_patches_and_deletes() {
    if !kubectl_present() {
        eprintln!(
            "SKIPPED: kubectl is not installed; this test would have checked kubectl discovery, \
             apply --server-side of the CRD and a SecureQdrant, get (table and JSON), create -f, \
             patch, label, wait and delete against the fake API server"
        );
        return;
    }
    let server = FakeApiServer::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();

    let v = ok(&kc, &["version", "-o", "json"], None).await;
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "33");

    let out = ok(&kc, &["apply", "--server-side", "-f", CRD], None).await;
    assert!(
        out.contains("secureqdrants.secureqdrant.dev serverside-applied"),
        "{out}"
    );
    ok(
        &kc,
        &[
            "wait",
            "--for=condition=Established",
            "crd/secureqdrants.secureqdrant.dev",
            "--timeout=10s",
        ],
        None,
    )
    .await;
    let resources = ok(&kc, &["api-resources"], None).await;
    assert!(resources.contains("secureqdrants"), "{resources}");

    let out = ok(&kc, &["apply", "--server-side", "-f", "-"], Some(INSTANCE)).await;
    assert!(out.contains("serverside-applied"), "{out}");
    // Tables use the CRD's printer columns.
    let table = ok(&kc, &["get", "sq", "-A"], None).await;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("DESIRED") && header.contains("CURRENT") && header.contains("PHASE"),
        "{table}"
    );
    assert!(table.contains("vectors"), "{table}");
    let json = ok(
        &kc,
        &[
            "get",
            "secureqdrants",
            "vectors",
            "-n",
            "search",
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let sq: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(sq["spec"]["replicas"], 3);
    assert_eq!(sq["metadata"]["generation"], 1);
    // Applying a change bumps the generation; fields kubectl stops sending go.
    let changed = INSTANCE.replace("replicas: 3", "image: example/qdrant:1");
    ok(&kc, &["apply", "--server-side", "-f", "-"], Some(&changed)).await;
    let sq: Value = serde_json::from_str(
        &ok(
            &kc,
            &["get", "sq", "vectors", "-n", "search", "-o", "json"],
            None,
        )
        .await,
    )
    .unwrap();
    assert_eq!(sq["spec"]["image"], "example/qdrant:1");
    assert_eq!(sq["metadata"]["generation"], 2);
    let managers = &sq["metadata"]["managedFields"];
    assert!(
        managers.is_null(),
        "kubectl hides managedFields unless asked"
    );

    // Built-in kinds from files (JSON bodies), patches, labels, selectors, delete.
    ok(&kc, &["create", "-f", "-"], Some(SECRET)).await;
    ok(
        &kc,
        &["patch", "secret", "s1", "-p", r#"{"data":{"b":"Yg=="}}"#],
        None,
    )
    .await;
    ok(
        &kc,
        &[
            "patch",
            "secret",
            "s1",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/key"}]"#,
        ],
        None,
    )
    .await;
    ok(&kc, &["label", "secret", "s1", "extra=yes"], None).await;
    let names = ok(
        &kc,
        &["get", "secrets", "-l", "extra=yes", "-o", "name"],
        None,
    )
    .await;
    assert_eq!(names.trim(), "secret/s1");
    let data = ok(
        &kc,
        &["get", "secret", "s1", "-o", "jsonpath={.data}"],
        None,
    )
    .await;
    assert_eq!(data, r#"{"b":"Yg=="}"#);
    ok(&kc, &["delete", "secret", "s1"], None).await;
    ok(
        &kc,
        &["delete", "sq", "vectors", "-n", "search", "--wait=true"],
        None,
    )
    .await;
    let left = ok(&kc, &["get", "sq", "-A", "-o", "name"], None).await;
    assert!(left.trim().is_empty(), "{left}");

    // Imperative generators send protobuf, which this server does not speak: a clear 415.
    let out = kubectl(
        &kc,
        &["create", "configmap", "x", "--from-literal=a=b"],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("protobuf"));

    let c = server.counters();
    assert!(
        c.get("patch", "secureqdrants.secureqdrant.dev") >= 2,
        "{c:?}"
    );
}
