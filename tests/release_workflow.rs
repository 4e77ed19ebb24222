//! .github/workflows/release.yml cannot run here (it pushes to a registry and signs with GitHub's
//! OIDC token), so it is checked statically: actionlint passes; every action is pinned by a full
//! commit SHA annotated with its release tag; `permissions:` are least (read-only at the top,
//! write only where a job pushes or signs); and README "Verify a release" gives cosign commands
//! that match the workflow's settings (registry, image, chart repository, signing identity) and
//! the chart's default image.

mod common;

#[allow(dead_code)]
mod release {
    include!("support/release.rs");
}

use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::process::Command;

// ---------------------------------------------------------------------------------------------
// actionlint
// ---------------------------------------------------------------------------------------------

fn actionlint(file: &std::path::Path) -> (bool, String) {
    let tool = common::root().join("target/tools/bin/actionlint");
    assert!(
        tool.exists(),
        "{} is missing: run ./tests/tools/build-tools.sh (./tests/run.sh does it for you)",
        tool.display()
    );
    let out = Command::new(tool)
        .arg("-no-color")
        .arg(file)
        .current_dir(common::root())
        .output()
        .expect("actionlint runs");
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
fn the_release_workflow_passes_actionlint() {
    let (ok, text) = actionlint(&release::workflow_path());
    assert!(ok, "actionlint:\n{text}");
}

#[test]
fn actionlint_reports_a_bad_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope.x }}\n        timeout: 3\n",
    )
    .unwrap();
    let (ok, text) = actionlint(&file);
    assert!(!ok, "a bad workflow passed:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------------------------

/// Why a `uses:` line is not `uses: owner/repo[/path]@<40 hex> # vX[.Y[.Z]]`, or None.
fn pin_problem(line: &str) -> Option<String> {
    let rest = line.trim().trim_start_matches("- ").trim_start();
    let Some(rest) = rest.strip_prefix("uses:") else {
        return Some(format!("not a uses: line: {line}"));
    };
    let (reference, comment) = match rest.split_once('#') {
        Some((r, c)) => (r.trim(), c.trim()),
        None => (rest.trim(), ""),
    };
    let Some((action, sha)) = reference.split_once('@') else {
        return Some(format!("{reference} has no @ref"));
    };
    let parts: Vec<&str> = action.split('/').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) || action.starts_with('.') {
        return Some(format!("{action} is not owner/repo"));
    }
    if sha.len() != 40
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Some(format!("{reference} is not pinned by a full commit SHA"));
    }
    let tag = comment.split_whitespace().next().unwrap_or("");
    let version = tag.strip_prefix('v').unwrap_or("");
    if version.is_empty()
        || version.split('.').count() > 3
        || !version
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(format!(
            "{reference} is not annotated with its tag (# vX.Y.Z): {comment:?}"
        ));
    }
    None
}

#[test]
fn the_pin_check_refuses_tags_short_shas_and_missing_annotations() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        pin_problem(&format!("      - uses: actions/checkout@{sha} # v4.2.2")),
        None
    );
    assert_eq!(pin_problem(&format!("uses: a/b/sub@{sha} # v1")), None);
    for bad in [
        "- uses: actions/checkout@v4".to_owned(),
        "- uses: actions/checkout@v4 # v4".to_owned(),
        format!("- uses: actions/checkout@{} # v4", &sha[..12]),
        format!("- uses: actions/checkout@{sha}"),
        format!("- uses: actions/checkout@{sha} # main"),
        format!("- uses: actions/checkout@{} # v4", sha.to_uppercase()),
        format!("- uses: ./local@{sha} # v1"),
        "- uses: docker://alpine:3".to_owned(),
    ] {
        assert!(pin_problem(&bad).is_some(), "{bad} was accepted");
    }
}

/// Every `uses:` of the workflow, from the YAML (steps and reusable-workflow jobs).
fn uses_in_yaml(workflow: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (_, job) in workflow["jobs"].as_mapping().expect("jobs") {
        if let Some(u) = job["uses"].as_str() {
            out.push(u.to_owned());
        }
        for step in job["steps"].as_sequence().into_iter().flatten() {
            if let Some(u) = step["uses"].as_str() {
                out.push(u.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_action_is_pinned_by_commit_sha_and_tag() {
    let text = std::fs::read_to_string(release::workflow_path()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim().trim_start_matches("- ").trim_start();
            t.starts_with("uses:")
        })
        .collect();
    // The line scan sees every `uses:` the YAML has (no flow-style or multi-line form hides one).
    assert_eq!(
        lines.len(),
        uses_in_yaml(&release::workflow()).len(),
        "uses: lines and uses: keys differ"
    );
    assert!(!lines.is_empty());
    let mut sha_of: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in &lines {
        if let Some(problem) = pin_problem(line) {
            panic!("{problem}");
        }
        let rest = line.split_once("uses:").unwrap().1;
        let (reference, comment) = rest.split_once('#').unwrap();
        let (action, sha) = reference.trim().split_once('@').unwrap();
        let tag = comment.split_whitespace().next().unwrap().to_owned();
        // One action, one pin: the same SHA and tag wherever it is used.
        let previous = sha_of
            .entry(action.to_owned())
            .or_insert((sha.to_owned(), tag.clone()));
        assert_eq!(
            previous,
            &(sha.to_owned(), tag),
            "{action} is pinned twice differently"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

/// The write permissions a job may hold, and what it must do to need each.
const WRITES: [(&str, &[&str]); 2] = [
    // Pushing images, charts, signatures or attestations to ghcr.io.
    (
        "packages",
        &[
            "docker/build-push-action",
            "helm push",
            "cosign sign",
            "cosign attest",
        ],
    ),
    // The OIDC token for keyless signing.
    ("id-token", &["cosign sign", "cosign attest"]),
];

/// What is wrong with the workflow's permissions, if anything.
fn permission_problems(workflow: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let top = &workflow["permissions"];
    let expected: Value = serde_yaml_ng::from_str("contents: read").unwrap();
    if top != &expected {
        problems.push(format!(
            "top-level permissions must be exactly `contents: read`: {top:?}"
        ));
    }
    for (name, job) in workflow["jobs"].as_mapping().expect("jobs") {
        let name = name.as_str().unwrap_or("?");
        let Some(perms) = job["permissions"].as_mapping() else {
            problems.push(format!(
                "job {name}: no permissions: mapping (it would inherit, or a string like \
                 write-all)"
            ));
            continue;
        };
        // What the job does: its steps' `uses:` and `run:` text.
        let mut does = String::new();
        for step in job["steps"].as_sequence().into_iter().flatten() {
            for key in ["uses", "run"] {
                if let Some(s) = step[key].as_str() {
                    does.push_str(s);
                    does.push('\n');
                }
            }
        }
        for (scope, level) in perms {
            let scope = scope.as_str().unwrap_or("?");
            let level = level.as_str().unwrap_or("?");
            match level {
                "read" | "none" => {
                    if scope != "contents" && level == "read" {
                        problems.push(format!("job {name}: {scope}: read is not needed"));
                    }
                }
                "write" => match WRITES.iter().find(|(s, _)| *s == scope) {
                    None => problems.push(format!("job {name}: {scope}: write is never needed")),
                    Some((_, needs)) => {
                        if !needs.iter().any(|n| does.contains(n)) {
                            problems.push(format!(
                                "job {name}: {scope}: write, but it does none of {needs:?}"
                            ));
                        }
                    }
                },
                other => problems.push(format!("job {name}: {scope}: {other}")),
            }
        }
    }
    problems
}

#[test]
fn permissions_are_least() {
    let problems = permission_problems(&release::workflow());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_permission_check_refuses_broad_permissions() {
    let ok = "permissions:\n  contents: read\njobs:\n  a:\n    permissions:\n      contents: read\n      id-token: write\n    steps:\n      - run: cosign sign x\n";
    assert_eq!(
        permission_problems(&serde_yaml_ng::from_str(ok).unwrap()),
        Vec::<String>::new()
    );
    for bad in [
        // write-all at the top
        ok.replacen(
            "permissions:\n  contents: read",
            "permissions: write-all",
            1,
        ),
        // contents: write at the top
        ok.replacen("  contents: read\njobs", "  contents: write\njobs", 1),
        // a job that inherits
        ok.replacen(
            "    permissions:\n      contents: read\n      id-token: write\n",
            "",
            1,
        ),
        // id-token: write in a job that signs nothing
        ok.replace("cosign sign x", "echo hi"),
        // a write scope no job needs
        ok.replace("id-token: write", "id-token: write\n      actions: write"),
        ok.replace("id-token: write", "id-token: write\n      issues: read"),
    ] {
        assert!(
            !permission_problems(&serde_yaml_ng::from_str(&bad).unwrap()).is_empty(),
            "accepted:\n{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// README "Verify a release"
// ---------------------------------------------------------------------------------------------

/// The shell commands of a README section's ```sh blocks, continuation lines joined, comments
/// dropped.
fn section_commands(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading}"));
    let body = &readme[start + heading.len() + 2..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in body.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim_start_matches('`').starts_with("sh");
            continue;
        }
        if !in_block || line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (text, continues) = match line.trim_end().strip_suffix('\\') {
            Some(t) => (t, true),
            None => (line.trim_end(), false),
        };
        current.push_str(text.trim());
        current.push(' ');
        if !continues {
            commands.push(current.trim().to_owned());
            current.clear();
        }
    }
    commands
}

/// Splits a command into words; single quotes group (the README quotes the regexp).
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '\'' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    assert!(!quoted, "unbalanced quote in {command}");
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn flag<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    words
        .windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
}

/// Whether Go's regexp.MatchString (what cosign uses; unanchored, RE2 syntax) matches, tried with
/// Python's `re.search`, which agrees with RE2 on the syntax the README uses.
fn regexp_matches(pattern: &str, text: &str) -> bool {
    let out = Command::new("python3")
        .args([
            "-c",
            "import re, sys; sys.exit(0 if re.search(sys.argv[1], sys.argv[2]) else 1)",
            pattern,
            text,
        ])
        .output()
        .expect("python3 runs");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("python3: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn values_image_repository() -> String {
    let text =
        std::fs::read_to_string(common::root().join("charts/secure-qdrant-operator/values.yaml"))
            .unwrap();
    let values: Value = serde_yaml_ng::from_str(&text).unwrap();
    values["image"]["repository"].as_str().unwrap().to_owned()
}

fn chart_app_version() -> String {
    let text =
        std::fs::read_to_string(common::root().join("charts/secure-qdrant-operator/Chart.yaml"))
            .unwrap();
    let chart: Value = serde_yaml_ng::from_str(&text).unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}

#[test]
fn the_readme_verify_commands_match_the_workflow_and_the_chart() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let commands = section_commands(&readme, "## Verify a release");
    let image = release::setting("IMAGE");
    let chart_repository = release::setting("CHART_REPOSITORY");
    let issuer = release::setting("OIDC_ISSUER");
    let signer = release::signer_repository();
    let workflow_file = release::setting("SIGNER_WORKFLOW");
    let version = chart_app_version();

    // The registry setting is the image's and the chart repository's host.
    let registry = release::setting("REGISTRY");
    assert!(image.starts_with(&format!("{registry}/")), "{image}");
    assert!(
        chart_repository.starts_with(&format!("oci://{registry}/")),
        "{chart_repository}"
    );
    // The chart's default image is the one the workflow pushes and signs.
    assert_eq!(values_image_repository(), image);
    // The workflow file is where the identity says.
    assert!(
        common::root().join(&workflow_file).is_file(),
        "SIGNER_WORKFLOW {workflow_file} does not exist"
    );
    let chart_ref = format!(
        "{}/secure-qdrant-operator",
        chart_repository.trim_start_matches("oci://")
    );

    // The identity the workflow signs with on a release tag, and ones it must not accept.
    let identity =
        |repo: &str, r#ref: &str| format!("https://github.com/{repo}/{workflow_file}@{ref}");
    let signed = identity(&signer, &format!("refs/tags/v{version}"));
    let not_signed = [
        identity("someone/fork", &format!("refs/tags/v{version}")),
        identity(&format!("{signer}-evil"), &format!("refs/tags/v{version}")),
        identity(&signer, "refs/heads/main"),
        identity(&signer, &format!("refs/tags/v{version}-evil")),
        format!("https://github.com/{signer}/.github/workflows/other.yml@refs/tags/v{version}"),
        format!("https://evil.example/?{signed}"),
    ];

    let mut verified = Vec::new();
    for command in &commands {
        let words = words(command);
        if words.first().map(String::as_str) != Some("cosign") {
            continue;
        }
        let sub = words[1].as_str();
        assert!(
            sub == "verify" || sub == "verify-attestation",
            "unexpected cosign command: {command}"
        );
        let target = words
            .iter()
            .skip(2)
            .zip(words.iter().skip(1))
            .find(|(w, prev)| {
                // Not a flag, and not the value of a `--flag value` pair.
                !w.starts_with("--") && (!prev.starts_with("--") || prev.contains('='))
            })
            .map(|(w, _)| w.as_str())
            .unwrap_or_else(|| panic!("no image in {command}"));
        assert_eq!(
            flag(&words, "--certificate-oidc-issuer"),
            Some(issuer.as_str()),
            "{command}"
        );
        let regexp = flag(&words, "--certificate-identity-regexp")
            .unwrap_or_else(|| panic!("no --certificate-identity-regexp in {command}"));
        assert!(
            regexp.starts_with('^') && regexp.ends_with('$'),
            "cosign matches the regexp anywhere in the identity: anchor it: {regexp}"
        );
        assert!(regexp_matches(regexp, &signed), "{regexp} refuses {signed}");
        for other in &not_signed {
            assert!(!regexp_matches(regexp, other), "{regexp} accepts {other}");
        }
        if sub == "verify-attestation" {
            assert_eq!(flag(&words, "--type"), Some("cyclonedx"), "{command}");
        }
        verified.push((sub.to_owned(), target.to_owned()));
    }
    let expected = [
        ("verify", format!("{image}:{version}")),
        ("verify-attestation", format!("{image}:{version}")),
        ("verify", format!("{chart_ref}:{version}")),
    ];
    for (sub, target) in &expected {
        assert!(
            verified.iter().any(|(s, t)| s == sub && t == target),
            "README \"Verify a release\" has no `cosign {sub} {target}`: {verified:?}"
        );
    }
    // The helm install names the chart that was verified.
    assert!(
        commands.iter().any(|c| c.starts_with("helm install")
            && c.contains(&format!("oci://{chart_ref} "))
            && c.contains(&format!("--version {version}"))),
        "README \"Verify a release\" installs another chart than it verifies"
    );
}

/// The workflow uses its settings rather than repeating them: the registry, image, chart
/// repository and identity are written in release.yml only in its top-level `env:`.
#[test]
fn the_release_settings_are_in_one_place() {
    let text = std::fs::read_to_string(release::workflow_path()).unwrap();
    let start = text.find("\nenv:\n").expect("a top-level env:");
    let end = start
        + 1
        + text[start + 1..]
            .match_indices('\n')
            .map(|(i, _)| i)
            .find(|&i| {
                let next = &text[start + 1 + i + 1..];
                !next.is_empty() && !next.starts_with(' ') && !next.starts_with('\n')
            })
            .expect("something after env:");
    let outside = format!("{}{}", &text[..start], &text[end..]);
    for key in [
        "REGISTRY",
        "IMAGE",
        "CHART_REPOSITORY",
        "SIGNER_REPOSITORY",
        "SIGNER_WORKFLOW",
        "OIDC_ISSUER",
    ] {
        let value = release::setting(key);
        assert!(
            !outside.contains(value.trim_start_matches("oci://")),
            "{value} ({key}) is written outside env: in release.yml: use ${key}"
        );
    }
}
