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
