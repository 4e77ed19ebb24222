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
