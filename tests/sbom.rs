//! The SBOM (release/sbom.py, one CycloneDX document per target triple the image ships) and the
//! dependency list cargo-auditable embeds in the binary:
//! - the SBOM validates against the CycloneDX 1.6 JSON schema (cyclonedx-python-lib's strict
//!   validator, from the project's .venv);
//! - it lists exactly the crates cargo links into the operator binary for that triple (normal
//!   dependencies whose cfg holds there; no proc-macro, build or dev crate), with the versions
//!   and checksums of Cargo.lock;
//! - the list read back out of an auditable-built binary (rust-audit-info) is the SBOM's.
//!
//! The auditable binary is built with the dev profile, not release: the embedded list is made
//! from the same dependency resolution (profiles do not change which crates are linked), and a
//! release build of the operator costs minutes on two cores. It has its own target directory
//! (target/auditable) so the wrapper cargo-auditable installs does not rebuild the operator
//! crate of target/debug back and forth.

mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The triples of the platforms the image ships (release.yml builds linux/amd64, linux/arm64).
const TRIPLES: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];
const BIN: &str = "secure-qdrant-operator";

#[allow(dead_code)]
mod release {
    include!("support/release.rs");
}

fn python() -> PathBuf {
    let python = common::root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./tests/tools/setup.sh (./tests/run.sh does it for you)",
        python.display()
    );
    python
}

fn tool(name: &str) -> PathBuf {
    let path = common::root().join("target/tools/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./tests/tools/build-tools.sh (./tests/run.sh does it for you)",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The SBOM text for a triple, as the release workflow makes it.
fn sbom_text(triple: &str) -> String {
    run(Command::new(python())
        .args(["release/sbom.py", "--target", triple])
        .current_dir(common::root()))
}

fn sbom(triple: &str) -> Value {
    serde_json::from_str(&sbom_text(triple)).expect("the SBOM is JSON")
}

/// The components of an SBOM as `name version`.
fn components(sbom: &Value) -> BTreeSet<String> {
    sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Validation errors of a CycloneDX 1.6 JSON document (None when valid).
fn cyclonedx_errors(text: &str) -> Option<String> {
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(sys.stdin.read())\n\
        print(error if error is not None else 'valid')\n";
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    (said.trim() != "valid").then_some(said)
}

#[test]
fn the_sbom_validates_against_the_cyclonedx_schema() {
    for triple in TRIPLES {
        let text = sbom_text(triple);
        if let Some(errors) = cyclonedx_errors(&text) {
            panic!("{triple}: {errors}");
        }
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.6");
        assert_eq!(doc["metadata"]["component"]["name"], BIN);
        assert!(
            doc["metadata"]["properties"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "cdx:rust:target" && p["value"] == triple),
            "{triple}: the SBOM does not name its target"
        );
    }
}

/// The validator is not a rubber stamp: a document with a component of an unknown type, or
/// without a name, is refused.
#[test]
fn the_validator_refuses_a_broken_sbom() {
    let text = sbom_text(TRIPLES[0]);
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["components"][0]["type"] = "crate".into();
    assert!(
        cyclonedx_errors(&doc.to_string()).is_some(),
        "unknown type accepted"
    );
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["components"][0].as_object_mut().unwrap().remove("name");
    assert!(
        cyclonedx_errors(&doc.to_string()).is_some(),
        "nameless component accepted"
    );
}

/// The same Cargo.lock gives the same SBOM (serial number and timestamp included).
#[test]
fn the_sbom_is_reproducible() {
    assert_eq!(sbom_text(TRIPLES[1]), sbom_text(TRIPLES[1]));
}

/// What cargo links into the binary for a triple: `cargo tree` over normal edges only, without
/// proc-macros, with cargo's own feature resolution for this package.
fn linked_by_cargo(triple: &str) -> BTreeSet<String> {
    let out = run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "tree",
                "--locked",
                "-p",
                BIN,
                "-e",
                "normal,no-proc-macro",
                "--target",
                triple,
            ])
            .args(["--prefix", "none", "--format", "{p}"])
            .current_dir(common::root()),
    );
    out.lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next().unwrap();
            let version = w.next().unwrap().trim_start_matches('v');
            format!("{name} {version}")
        })
        .filter(|c| !c.starts_with(&format!("{BIN} ")))
        .collect()
}

/// Packages of Cargo.lock's graph: name version -> (proc-macro?, checksum).
fn lock_packages() -> std::collections::BTreeMap<String, (bool, Option<String>)> {
    let meta: Value = serde_json::from_str(&run(Command::new(
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
    )
    .args(["metadata", "--locked", "--format-version", "1"])
    .current_dir(common::root())))
    .unwrap();
    let lock: toml_lock::Lock =
        toml_lock::parse(&std::fs::read_to_string(common::root().join("Cargo.lock")).unwrap());
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let key = format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            );
            let proc_macro = p["targets"].as_array().unwrap().iter().any(|t| {
                t["kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k == "proc-macro")
            });
            let checksum = lock.get(&key).cloned();
            (key, (proc_macro, checksum))
        })
        .collect()
}

/// Cargo.lock's checksums, read with the minimum: `name`, `version`, `checksum` lines
/// of each [[package]] table (the format cargo writes).
mod toml_lock {
    pub type Lock = std::collections::BTreeMap<String, String>;
    pub fn parse(text: &str) -> Lock {
        let mut out = Lock::new();
        for table in text.split("[[package]]").skip(1) {
            let field = |k: &str| {
                table.lines().find_map(|l| {
                    l.strip_prefix(&format!("{k} = \""))
                        .map(|v| v.trim_end_matches('"').to_owned())
                })
            };
            if let (Some(n), Some(v), Some(c)) =
                (field("name"), field("version"), field("checksum"))
            {
                out.insert(format!("{n} {v}"), c);
            }
        }
        out
    }
}

#[test]
fn the_sbom_lists_exactly_the_crates_linked_for_each_target() {
    let packages = lock_packages();
    let mut per_triple = Vec::new();
    for triple in TRIPLES {
        let doc = sbom(triple);
        let listed = components(&doc);
        let linked = linked_by_cargo(triple);
        let missing: Vec<_> = linked.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&linked).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{triple}: linked but not in the SBOM: {missing:?}; in the SBOM but not linked: \
             {extra:?}"
        );
        for c in doc["components"].as_array().unwrap() {
            let key = format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            );
            let (proc_macro, checksum) = packages
                .get(&key)
                .unwrap_or_else(|| panic!("{key} is not in Cargo.lock's graph"));
            assert!(!proc_macro, "{triple}: {key} is a proc-macro");
            assert_eq!(
                c["purl"],
                format!(
                    "pkg:cargo/{}@{}",
                    c["name"].as_str().unwrap(),
                    c["version"].as_str().unwrap()
                )
            );
            let hash = c["hashes"]
                .as_array()
                .and_then(|h| h.first())
                .map(|h| h["content"].as_str().unwrap().to_owned());
            assert_eq!(
                &hash, checksum,
                "{triple}: {key}: SHA-256 is Cargo.lock's checksum"
            );
        }
        // Crates only the tests (dev-dependencies) or the compiler (proc-macros, build
        // scripts) use are absent.
        for absent in [
            "tempfile",
            "pretty_assertions",
            "tower-test",
            "jsonschema",
            "serde_derive",
            "syn",
            "proc-macro2",
            "kube-cel",
        ] {
            assert!(
                !listed.iter().any(|c| c.split(' ').next() == Some(absent)),
                "{triple}: {absent} is listed"
            );
        }
        per_triple.push(listed);
    }
    // The lists are per target: a crate linked only on x86_64 (cpu-feature detection) is not in
    // the arm64 SBOM. If the two were ever equal, the target filter would be untested.
    assert_ne!(
        per_triple[0], per_triple[1],
        "the per-target SBOMs are identical"
    );
}

/// Builds the operator with `cargo auditable build` (dev profile) for the host and returns the
/// binary.
fn auditable_binary() -> PathBuf {
    tool("cargo-auditable");
    let tools = common::root().join("target/tools/bin");
    let path = std::env::join_paths(
        std::iter::once(tools).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let target_dir = common::root().join("target/auditable");
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["auditable", "build", "--locked", "--bin", BIN])
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(common::root()),
    );
    target_dir.join("debug").join(BIN)
}

fn host_triple() -> String {
    let out = run(Command::new("rustc").arg("-vV"));
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_owned()
}

/// The dependency list embedded in the binary (rust-audit-info), as `name version` of the
/// crates linked at run time: cargo-auditable records build-time crates (build scripts,
/// proc-macros and their dependencies) with `"kind": "build"`, and the root package itself.
fn embedded_runtime_crates(binary: &std::path::Path) -> BTreeSet<String> {
    let text = run(Command::new(tool("rust-audit-info")).arg(binary));
    let info: Value = serde_json::from_str(&text).expect("rust-audit-info prints JSON");
    info["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["kind"].as_str().unwrap_or("runtime") == "runtime")
        .filter(|p| !p["root"].as_bool().unwrap_or(false))
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Crate names (as in paths: `-` is `_`) that have at least one symbol in the binary, from
/// `nm --demangle`: a symbol `kube_core::...` is code of kube-core.
fn crates_with_symbols(binary: &std::path::Path) -> BTreeSet<String> {
    let text = run(Command::new("nm").arg("--demangle").arg(binary));
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut start = None;
        for (i, c) in line.char_indices() {
            let ident = c.is_ascii_alphanumeric() || c == '_';
            match (ident, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    // A crate name begins a path: `kube_core::x`, `<kube_core::X as ..>`,
                    // not `jiff::..::iana_time_zone::{{closure}}` (a function).
                    if line[i..].starts_with("::") && !line[..s].ends_with("::") {
                        out.insert(line[s..i].to_owned());
                    }
                    start = None;
                }
                _ => {}
            }
        }
    }
    out
}

/// The list read back out of an auditable-built binary agrees with the SBOM of the host's
/// triple. cargo-auditable (0.7.7) records what `cargo metadata` resolves, which is a superset
/// of what is linked: proc-macros (and their dependencies) as run-time crates, and features
/// unified over the whole workspace and the dev-dependencies (kube's `cel` feature, which only
/// the tests turn on, brings kube-cel, cel, chrono, url...). So:
/// - every crate of the SBOM is in the binary's list, at the same version;
/// - every crate of the binary's list that the SBOM leaves out has no code in the binary (no
///   symbol `crate_name::...`), while crates of the SBOM do (serde_json, kube_core, rcgen), so
///   the symbol check is not vacuous.
///
/// Costs a dev build of the operator in target/auditable (about 20 minutes on two busy cores the
/// first time, seconds after).
#[test]
fn the_binary_embeds_the_dependency_list_of_its_sbom() {
    let host = host_triple();
    assert!(
        TRIPLES.contains(&host.as_str()),
        "the host {host} is not a triple the image ships"
    );
    let binary = auditable_binary();
    let embedded = embedded_runtime_crates(&binary);
    let listed = components(&sbom(&host));
    let not_embedded: Vec<_> = listed.difference(&embedded).collect();
    assert!(
        not_embedded.is_empty(),
        "the SBOM lists crates (or versions) the binary does not record: {not_embedded:?}"
    );
    let symbols = crates_with_symbols(&binary);
    for linked in ["serde_json", "kube_core", "rcgen"] {
        assert!(
            symbols.contains(linked),
            "no {linked}:: symbol in the binary"
        );
    }
    // A crate whose other version the SBOM lists (thiserror 1 and 2) cannot be told apart by
    // its symbols: only names the SBOM does not list at all are checked.
    let listed_names: BTreeSet<&str> = listed
        .iter()
        .map(|c| c.split(' ').next().unwrap())
        .collect();
    let left_out: Vec<&String> = embedded.difference(&listed).collect();
    assert!(
        !left_out.is_empty(),
        "cargo-auditable now records exactly the linked crates: compare the lists as equal"
    );
    let left_out_but_present: Vec<_> = left_out
        .into_iter()
        .filter(|c| !listed_names.contains(c.split(' ').next().unwrap()))
        .filter(|c| symbols.contains(&c.split(' ').next().unwrap().replace('-', "_")))
        .collect();
    assert!(
        left_out_but_present.is_empty(),
        "the binary has code of crates the SBOM leaves out: {left_out_but_present:?}"
    );
}

/// The Dockerfile and tests/tools/build-tools.sh install the same cargo-auditable, and the
/// workflow makes one SBOM per platform it builds, for the triples checked here.
#[test]
fn the_release_makes_an_sbom_per_shipped_platform() {
    let platforms = release::setting("PLATFORMS");
    let pairs: Vec<(&str, &str)> = platforms
        .split_whitespace()
        .map(|p| p.split_once('=').expect("platform=triple"))
        .collect();
    assert_eq!(
        pairs,
        [("linux/amd64", TRIPLES[0]), ("linux/arm64", TRIPLES[1])]
    );
    let workflow = std::fs::read_to_string(release::workflow_path()).unwrap();
    let built = workflow
        .lines()
        .find_map(|l| l.trim().strip_prefix("platforms: "))
        .expect("build-push-action platforms:");
    let shipped: Vec<&str> = built.split(',').collect();
    assert_eq!(
        shipped,
        pairs.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        "the image's platforms and the SBOMs' differ"
    );
    assert!(workflow.contains("release/sbom.py --target \"$triple\""));
    assert!(workflow.contains("cosign attest --yes --type cyclonedx"));
}
