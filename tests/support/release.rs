// The release settings: the `env:` of .github/workflows/release.yml, the one place that names
// the registry, the image, the chart repository and the signing identity. Included (include!)
// by the tests that check other files against them.

#[allow(dead_code)]
pub fn workflow_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml")
}

#[allow(dead_code)]
pub fn workflow() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(workflow_path()).expect(".github/workflows/release.yml");
    serde_yaml_ng::from_str(&text).expect("release.yml is YAML")
}

/// One setting of the workflow's top-level `env:`.
#[allow(dead_code)]
pub fn setting(key: &str) -> String {
    workflow()["env"][key]
        .as_str()
        .unwrap_or_else(|| panic!("release.yml env: has no {key}"))
        .to_owned()
}

/// owner/name of the repository whose release workflow signs.
#[allow(dead_code)]
pub fn signer_repository() -> String {
    setting("SIGNER_REPOSITORY")
}
