//! The Dockerfile passes hadolint (the image itself cannot be built here: no container engine).

mod common;

use std::process::Command;

fn hadolint(file: &std::path::Path) -> (bool, String) {
    let tool = common::root().join(".venv/bin/hadolint");
    assert!(
        tool.exists(),
        "{} is missing: run ./tests/tools/setup.sh (./tests/run.sh does it for you)",
        tool.display()
    );
    let out = Command::new(tool)
        .arg(file)
        .output()
        .expect("hadolint runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn dockerfile_passes_hadolint() {
    let (ok, text) = hadolint(&common::root().join("Dockerfile"));
    assert!(ok, "hadolint:\n{text}");
}

#[test]
fn hadolint_reports_a_bad_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    std::fs::write(
        &file,
        "FROM debian:latest\nRUN apt-get install curl\nUSER root\n",
    )
    .unwrap();
    let (ok, text) = hadolint(&file);
    assert!(!ok, "a bad Dockerfile passed:\n{text}");
}

#[test]
fn the_runtime_image_is_non_root_and_has_no_shell() {
    let dockerfile = std::fs::read_to_string(common::root().join("Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit("FROM ").next().unwrap();
    assert!(
        runtime.starts_with("gcr.io/distroless/"),
        "distroless runtime: {runtime}"
    );
    assert!(runtime.contains("USER 65532:65532"));
    assert!(dockerfile.contains("cargo build --locked --release"));
}
