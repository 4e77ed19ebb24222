//! Generated files must match what the code generates today. Regenerate with
//! `./tests/regenerate.sh`; never edit them by hand.

mod common;

use secure_qdrant_operator::settings::Settings;

fn check(path: &std::path::Path, generated: &str) {
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is out of date with the code: run ./tests/regenerate.sh and commit the result",
        path.display()
    );
}

#[test]
fn crd_yaml_is_current() {
    check(
        &common::root().join("crds/secure-qdrant-operator.yaml"),
        &secure_qdrant_operator::crd::to_yaml(),
    );
}

#[test]
fn render_of_every_example_matches_its_golden_file() {
    let examples = common::examples();
    assert!(
        examples.len() >= 2,
        "expected the minimal and full examples"
    );
    for (stem, path) in examples {
        let input = std::fs::read_to_string(&path).unwrap();
        let rendered = secure_qdrant_operator::render::render(&input, &Settings::default())
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        check(
            &common::root().join(format!("tests/golden/{stem}.yaml")),
            &rendered,
        );
    }
}

#[test]
fn every_example_has_a_golden_file_and_no_golden_file_is_stale() {
    let stems: Vec<String> = common::examples().into_iter().map(|(s, _)| s).collect();
    for entry in std::fs::read_dir(common::root().join("tests/golden")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".yaml");
        assert!(
            stems.iter().any(|s| s == stem),
            "tests/golden/{name} has no example in deploy/examples: delete it"
        );
    }
}

/// The fields of SecureQdrant's own types (every property under `spec`, not descending into
/// the Kubernetes types passed through or into `spec.config`), as dotted paths, from the CRD.
fn spec_fields() -> Vec<String> {
    const OPAQUE: [&str; 3] = ["spec.resources", "spec.pod.affinity", "spec.config"];
    fn walk(path: &str, schema: &serde_json::Value, out: &mut Vec<String>) {
        let props = schema["properties"].as_object();
        match props {
            Some(props) if !OPAQUE.contains(&path) => {
                for (name, child) in props {
                    walk(&format!("{path}.{name}"), child, out);
                }
            }
            _ => out.push(path.to_owned()),
        }
    }
    let crd = serde_json::to_value(secure_qdrant_operator::crd::secure_qdrant_crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut out = Vec::new();
    walk("spec", spec, &mut out);
    out
}

#[test]
fn the_examples_together_set_every_spec_field() {
    let fields = spec_fields();
    assert!(
        fields.len() > 30
            && fields.contains(&"spec.tls.certificateLifetime".to_owned())
            && fields.contains(&"spec.auth.apiKeySecretRef.key".to_owned()),
        "the walk found too little: {fields:?}"
    );
    let examples: Vec<serde_json::Value> = common::examples()
        .into_iter()
        .map(|(_, path)| serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
        .collect();
    // Excludes tls.certificateSecretRef, which byo-secrets.yaml sets: its comment shows it.
    let in_a_comment = "spec.tls.caSecretRef.name";
    let byo =
        std::fs::read_to_string(common::root().join("deploy/examples/byo-secrets.yaml")).unwrap();
    assert!(
        byo.contains("# ") && byo.contains("spec.tls.caSecretRef: {name: "),
        "byo-secrets.yaml's comment shows {in_a_comment}"
    );
    let missing: Vec<&String> = fields
        .iter()
        .filter(|field| *field != in_a_comment)
        .filter(|field| {
            !examples
                .iter()
                .any(|e| field.split('.').try_fold(e, |v, k| v.get(k)).is_some())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "no example in deploy/examples sets {missing:?} (full.yaml sets every field that combines, \
         byo-secrets.yaml the ones that replace generated secrets)"
    );
}
