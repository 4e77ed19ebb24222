//! The Dockerfile: hadolint passes; the build stage's context (its COPY instructions, filtered by
//! .dockerignore) holds everything cargo needs to build the operator; the build steps are ones
//! that check models; the runtime image is distroless, non-root and has no shell.
//!
//! The image itself cannot be built here (no container engine), so the build stage is
//! reproduced instead: its COPY instructions are replayed from the repository into a temporary
//! directory and `cargo check --locked` runs there. Whatever this reproduction does not model
//! (ADD, COPY --from, wildcards, .dockerignore exceptions, RUN steps other than `cargo build`
//! and copying the binary out) fails the tests loudly rather than being skipped.

mod common;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The binary the image ships.
const BIN: &str = "secure-qdrant-operator";

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

// ---------------------------------------------------------------------------------------------
// A small Dockerfile parser: instructions, stages
// ---------------------------------------------------------------------------------------------

/// One instruction: its keyword in upper case and its arguments (continuation lines joined).
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
    /// The line it starts on (1-based), for messages.
    line: usize,
}

/// A stage: from one FROM to the next.
#[derive(Debug)]
struct Stage {
    /// The FROM arguments (image, then `AS name` if any).
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    /// The image reference of the FROM line.
    fn image(&self) -> &str {
        self.from
            .split_whitespace()
            .find(|w| !w.starts_with("--"))
            .expect("FROM names an image")
    }
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        // Comments (and parser directives) and blank lines, also inside a continuation.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        let (start, mut joined) = current.take().unwrap_or((i + 1, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continues {
            current = Some((start, joined));
            continue;
        }
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
            line: start,
        });
    }
    assert!(
        current.is_none(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

fn stages(text: &str) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for ins in instructions(text) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .map(|i| words.get(i + 1).expect("a name after AS").to_string());
            out.push(Stage {
                from: ins.args.clone(),
                name,
                instructions: Vec::new(),
            });
        } else {
            out.last_mut()
                .unwrap_or_else(|| panic!("line {}: {} before any FROM", ins.line, ins.keyword))
                .instructions
                .push(ins);
        }
    }
    assert!(!out.is_empty(), "the Dockerfile has no FROM");
    out
}

/// The flags (`--name=value`) and the remaining words of an instruction's arguments.
fn flags_and_words(args: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut flags = Vec::new();
    let mut words = args.split_whitespace().peekable();
    while let Some(w) = words.next_if(|w| w.starts_with("--")) {
        let (k, v) = w[2..].split_once('=').unwrap_or((&w[2..], ""));
        flags.push((k.to_owned(), v.to_owned()));
    }
    (flags, words.map(str::to_owned).collect())
}

/// The runtime stage (the last one) and the build stage it copies from (exactly one).
fn runtime_and_build(stages: &[Stage]) -> (&Stage, &Stage) {
    let runtime = stages.last().unwrap();
    let froms: Vec<String> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "COPY")
        .filter_map(|i| {
            flags_and_words(&i.args)
                .0
                .into_iter()
                .find(|(k, _)| k == "from")
                .map(|(_, v)| v)
        })
        .collect();
    assert_eq!(
        froms.len(),
        1,
        "the runtime stage copies from exactly one build stage: {froms:?}"
    );
    let build = stages[..stages.len() - 1]
        .iter()
        .enumerate()
        .find(|(i, s)| s.name.as_deref() == Some(froms[0].as_str()) || i.to_string() == froms[0])
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no stage {} before the runtime stage", froms[0]));
    (runtime, build)
}

/// The cargo-auditable version tests/tools/build-tools.sh installs (and the Dockerfile must
/// install too).
fn cargo_auditable_version() -> String {
    let script = std::fs::read_to_string(common::root().join("tests/tools/build-tools.sh"))
        .expect("tests/tools/build-tools.sh");
    script
        .lines()
        .find_map(|l| l.strip_prefix("CARGO_AUDITABLE_VERSION="))
        .expect("CARGO_AUDITABLE_VERSION= in tests/tools/build-tools.sh")
        .trim()
        .to_owned()
}

fn dockerfile() -> String {
    std::fs::read_to_string(common::root().join("Dockerfile")).expect("Dockerfile")
}

// ---------------------------------------------------------------------------------------------
// .dockerignore: only the pattern forms this repository uses
// ---------------------------------------------------------------------------------------------

/// .dockerignore patterns, each as path segments (a segment may hold `*`, which matches within
/// the segment). A pattern excludes a path when it matches the path's leading segments: the path
/// itself or one of its parent directories.
struct Ignore(Vec<Vec<String>>);

impl Ignore {
    fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for unsupported in ["!", "**", "?", "[", "\\", ".."] {
                assert!(
                    !line.contains(unsupported),
                    ".dockerignore pattern {line:?} uses {unsupported:?}, which this test does \
                     not model: extend Ignore in tests/dockerfile.rs"
                );
            }
            let segments: Vec<String> = line
                .trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned)
                .collect();
            assert!(
                !segments.is_empty(),
                ".dockerignore pattern {line:?} is empty"
            );
            patterns.push(segments);
        }
        Ignore(patterns)
    }

    fn excludes(&self, relative: &Path) -> bool {
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        self.0.iter().any(|p| {
            p.len() <= parts.len() && p.iter().zip(&parts).all(|(pat, part)| glob(pat, part))
        })
    }
}

/// `*` matches any run of characters (within one path segment); everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(text) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .any(|i| glob(rest, &text[i..]))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replaying the build stage's COPYs
// ---------------------------------------------------------------------------------------------

/// A path of the build context: relative, normal components only.
fn context_path(source: &str) -> PathBuf {
    for unsupported in ['*', '?', '['] {
        assert!(
            !source.contains(unsupported),
            "COPY source {source:?} has a wildcard, which this test does not model"
        );
    }
    let path = Path::new(source);
    assert!(
        path.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "COPY source {source:?} leaves the build context"
    );
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Copies the context path `rel` (file, directory or symlink) to `dest`, leaving out what
/// .dockerignore excludes. A directory's contents are copied into `dest`, as COPY does.
fn copy_from_context(root: &Path, rel: &Path, dest: &Path, ignore: &Ignore) {
    let src = root.join(rel);
    let meta = std::fs::symlink_metadata(&src)
        .unwrap_or_else(|e| panic!("COPY source {} is not in the context: {e}", rel.display()));
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&src).unwrap();
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, dest).unwrap();
    } else if meta.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let name = entry.unwrap().file_name();
            let child = rel.join(&name);
            if !ignore.excludes(&child) {
                copy_from_context(root, &child, &dest.join(&name), ignore);
            }
        }
    } else {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&src, dest)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dest.display()));
    }
}

/// An absolute path inside the image, resolved against the working directory.
fn image_path(workdir: &Path, path: &str) -> PathBuf {
    let joined = workdir.join(path);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Replays the stage's WORKDIR and COPY instructions from the context `root` into `into` (which
/// stands for the image's `/`). Returns the final working directory, as an image path.
fn replay_copies(stage: &Stage, root: &Path, ignore: &Ignore, into: &Path) -> PathBuf {
    let mut workdir = PathBuf::from("/");
    let host = |image: &Path| into.join(image.strip_prefix("/").unwrap());
    for ins in &stage.instructions {
        match ins.keyword.as_str() {
            "WORKDIR" => {
                workdir = image_path(&workdir, &ins.args);
                std::fs::create_dir_all(host(&workdir)).unwrap();
            }
            "ADD" => panic!("line {}: ADD is not modelled by this test", ins.line),
            "COPY" => {
                assert!(
                    !ins.args.starts_with('['),
                    "line {}: the JSON form of COPY is not modelled by this test",
                    ins.line
                );
                let (flags, mut words) = flags_and_words(&ins.args);
                assert!(
                    flags.is_empty(),
                    "line {}: COPY flags {flags:?} are not modelled by this test",
                    ins.line
                );
                assert!(words.len() >= 2, "line {}: COPY needs a source", ins.line);
                let dest_arg = words.pop().unwrap();
                let dest = image_path(&workdir, &dest_arg);
                let into_dir = dest_arg.ends_with('/') || words.len() > 1;
                for source in &words {
                    let rel = context_path(source);
                    assert!(
                        !ignore.excludes(&rel),
                        "line {}: COPY {source}: .dockerignore excludes it, so docker build \
                         fails",
                        ins.line
                    );
                    let src = root.join(&rel);
                    let target = if src.is_dir() || !into_dir {
                        dest.clone()
                    } else {
                        dest.join(rel.file_name().unwrap())
                    };
                    copy_from_context(root, &rel, &host(&target), ignore);
                }
            }
            _ => {}
        }
    }
    workdir
}

/// Where the check of the reproduced context builds: not the target directory of the running
/// `cargo test` (it holds that directory's lock).
fn docker_context_target_dir() -> PathBuf {
    // A relative CARGO_TARGET_DIR is relative to where cargo test runs, not to the context.
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| std::env::current_dir().unwrap().join(dir))
        .unwrap_or_else(|| common::root().join("target"))
        .join("docker-context")
}

/// Reproduces the build stage's context in a temporary directory and runs
/// `cargo check --locked --bin secure-qdrant-operator` in its working directory. Returns
/// whether it succeeded and the output.
fn check_build_context(dockerfile: &str, root: &Path) -> (bool, String) {
    let stages = stages(dockerfile);
    let (_, build) = runtime_and_build(&stages);
    let ignore =
        Ignore::parse(&std::fs::read_to_string(root.join(".dockerignore")).unwrap_or_default());
    let image = tempfile::Builder::new()
        .prefix("sqo-docker-context-")
        .tempdir()
        .expect("a temporary directory");
    let workdir = replay_copies(build, root, &ignore, image.path());
    let dir = image.path().join(workdir.strip_prefix("/").unwrap());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["check", "--locked", "--bin", BIN])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", docker_context_target_dir())
        .output()
        .expect("cargo runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

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

/// The context `docker build .` gives the build stage compiles: every file cargo needs (the
/// manifest's benches, the sources) is copied and
/// not excluded by .dockerignore. Costs a `cargo check` of the operator in its own target
/// directory (about a minute and 400 MB the first time).
#[test]
fn the_build_stage_context_compiles() {
    let (ok, text) = check_build_context(&dockerfile(), &common::root());
    assert!(
        ok,
        "cargo check --locked --bin {BIN} fails in the build stage's context:\n{text}"
    );
}

/// The check above replays only COPY and WORKDIR, which is right only if the build stage's RUN
/// steps build and copy the binary out without touching the sources. It also checks the binary
/// leaves a cache-mounted target/ in the RUN that builds it (the cache is not in the image),
/// and that this copy is what the runtime stage takes.
#[test]
fn the_build_steps_only_build_and_copy_the_binary_out() {
    let text = dockerfile();
    let stages = stages(&text);
    let (runtime, build) = runtime_and_build(&stages);
    let mut workdir = PathBuf::from("/");
    let mut built_and_copied = Vec::new();
    for ins in &build.instructions {
        match ins.keyword.as_str() {
            "WORKDIR" => workdir = image_path(&workdir, &ins.args),
            "RUN" => {
                let (flags, words) = flags_and_words(&ins.args);
                let mut cache_mounts = Vec::new();
                for (k, v) in &flags {
                    assert_eq!(k, "mount", "line {}: RUN --{k} is not modelled", ins.line);
                    let opts: Vec<(&str, &str)> =
                        v.split(',').filter_map(|o| o.split_once('=')).collect();
                    assert!(
                        opts.contains(&("type", "cache")),
                        "line {}: only cache mounts are modelled: {v}",
                        ins.line
                    );
                    let target = opts
                        .iter()
                        .find(|(k, _)| *k == "target" || *k == "dst" || *k == "destination")
                        .unwrap_or_else(|| {
                            panic!("line {}: a cache mount without target", ins.line)
                        })
                        .1;
                    cache_mounts.push(image_path(&workdir, target));
                }
                let command = words.join(" ");
                let mut built = false;
                for step in command.split("&&").map(str::trim) {
                    let argv: Vec<&str> = step.split_whitespace().collect();
                    match argv.first() {
                        Some(&"cargo") if argv.get(1) == Some(&"install") => {
                            // Installs a tool into $CARGO_HOME/bin, outside the sources.
                            assert_eq!(
                                argv,
                                [
                                    "cargo",
                                    "install",
                                    "--locked",
                                    &format!("cargo-auditable@{}", cargo_auditable_version())
                                ],
                                "line {}: the only cargo install modelled is `cargo install \
                                 --locked cargo-auditable@VERSION`, VERSION as pinned in \
                                 tests/tools/build-tools.sh: {step}",
                                ins.line
                            );
                        }
                        Some(&"cargo") => {
                            assert!(
                                step.starts_with("cargo auditable build --locked --release")
                                    && argv.windows(2).any(|w| w == ["--bin", BIN]),
                                "line {}: the only cargo build modelled is `cargo auditable \
                                 build --locked --release --bin {BIN}` (the binary embeds its \
                                 dependency list): {step}",
                                ins.line
                            );
                            built = true;
                        }
                        Some(&"cp") => {
                            assert_eq!(argv.len(), 3, "line {}: cp SRC DEST: {step}", ins.line);
                            let src = image_path(&workdir, argv[1]);
                            let dest = image_path(&workdir, argv[2]);
                            assert!(
                                !dest.starts_with(&workdir),
                                "line {}: cp writes into the sources at {}",
                                ins.line,
                                dest.display()
                            );
                            let target = image_path(&workdir, "target");
                            assert_eq!(
                                src,
                                target.join("release").join(BIN),
                                "line {}: cp copies the release binary",
                                ins.line
                            );
                            assert!(
                                built,
                                "line {}: the binary is copied before it is built",
                                ins.line
                            );
                            assert!(
                                cache_mounts.iter().any(|m| target.starts_with(m)),
                                "line {}: target/ is not a cache mount of this RUN ({:?}): \
                                 dependencies would be rebuilt on every source change",
                                ins.line,
                                cache_mounts
                            );
                            built_and_copied.push(dest);
                        }
                        _ => panic!(
                            "line {}: RUN step `{step}` is not modelled: the build context \
                             check replays only COPY and WORKDIR, so a step that creates or \
                             deletes files would make it wrong",
                            ins.line
                        ),
                    }
                }
            }
            _ => {}
        }
    }
    let taken: Vec<PathBuf> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "COPY")
        .flat_map(|i| {
            let (_, mut words) = flags_and_words(&i.args);
            words.pop();
            words.into_iter().map(|w| image_path(Path::new("/"), &w))
        })
        .collect();
    assert!(
        !taken.is_empty() && taken.iter().all(|t| built_and_copied.contains(t)),
        "the runtime stage takes {taken:?}, the build stage copies the built binary to \
         {built_and_copied:?}"
    );
}

/// Why a runtime base image is refused, or `None` for a distroless non-root image without a
/// shell.
fn runtime_image_problem(image: &str) -> Option<String> {
    let name = image.split('@').next().unwrap();
    let Some(rest) = name.strip_prefix("gcr.io/distroless/") else {
        return Some(format!("{image} is not a distroless image"));
    };
    let Some((_, tag)) = rest.rsplit_once(':') else {
        return Some(format!(
            "{image} has no tag (that is :latest, which runs as root)"
        ));
    };
    if tag.split('-').any(|part| part == "debug") {
        return Some(format!(
            "{image} is a :debug variant, which has a busybox shell"
        ));
    }
    if tag != "nonroot" && !tag.ends_with("-nonroot") {
        return Some(format!("{image} is not the nonroot variant"));
    }
    None
}

#[test]
fn the_runtime_image_check_refuses_shells_and_root() {
    assert_eq!(
        runtime_image_problem("gcr.io/distroless/cc-debian12:nonroot"),
        None
    );
    assert_eq!(
        runtime_image_problem("gcr.io/distroless/cc-debian12:latest-nonroot@sha256:0123"),
        None
    );
    for refused in [
        "gcr.io/distroless/cc-debian12:debug",
        "gcr.io/distroless/cc-debian12:debug-nonroot",
        "gcr.io/distroless/cc-debian12:latest",
        "gcr.io/distroless/cc-debian12",
        "docker.io/library/debian:bookworm-slim",
    ] {
        assert!(
            runtime_image_problem(refused).is_some(),
            "{refused} was accepted"
        );
    }
}

#[test]
fn the_runtime_image_is_non_root_and_has_no_shell() {
    let text = dockerfile();
    let stages = stages(&text);
    let runtime = stages.last().unwrap();
    if let Some(problem) = runtime_image_problem(runtime.image()) {
        panic!("runtime stage: {problem}");
    }
    let users: Vec<&str> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "USER")
        .map(|i| i.args.as_str())
        .collect();
    assert_eq!(
        users.last(),
        Some(&"65532:65532"),
        "USER of the runtime stage"
    );
    // There is no shell to run a RUN (or a shell-form ENTRYPOINT) with.
    for ins in &runtime.instructions {
        assert_ne!(
            ins.keyword, "RUN",
            "line {}: RUN in the runtime stage",
            ins.line
        );
        if ins.keyword == "ENTRYPOINT" || ins.keyword == "CMD" {
            assert!(
                ins.args.starts_with('['),
                "line {}: {} in shell form needs /bin/sh",
                ins.line,
                ins.keyword
            );
        }
    }
    assert!(text.contains("cargo auditable build --locked --release"));
}

// ---------------------------------------------------------------------------------------------
// The test machinery itself
// ---------------------------------------------------------------------------------------------

#[test]
fn dockerignore_patterns_match_like_docker() {
    let ignore = Ignore::parse("# comment\ntarget\n/tests/golden/\n*.md\n");
    for excluded in [
        "target",
        "target/debug/x",
        "tests/golden/a.yaml",
        "README.md",
    ] {
        assert!(ignore.excludes(Path::new(excluded)), "{excluded}");
    }
    // `*.md` is anchored at the context root; `target` only names the top-level directory.
    for kept in [
        "tests/control-plane/README.md",
        "src/target.rs",
        "src/target",
        "tests/goldenfile",
        "Cargo.toml",
    ] {
        assert!(!ignore.excludes(Path::new(kept)), "{kept}");
    }
}

#[test]
fn dockerignore_forms_not_modelled_fail_loudly() {
    for pattern in ["!keep.md", "**/*.md", "file?.rs", "[ab].rs"] {
        let result = std::panic::catch_unwind(|| Ignore::parse(pattern));
        assert!(result.is_err(), "{pattern} was accepted");
    }
}

#[test]
fn dockerfile_instructions_and_stages_parse() {
    let text = "# syntax=docker/dockerfile:1\nFROM a:1 AS build\nWORKDIR /src\nRUN one \\\n    # a comment\n    && two\nFROM b:2\ncopy --from=build /x /y\n";
    let stages = stages(text);
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].name.as_deref(), Some("build"));
    assert_eq!(stages[0].image(), "a:1");
    assert_eq!(stages[0].instructions[1].args, "one && two");
    assert_eq!(stages[0].instructions[1].line, 4);
    assert_eq!(stages[1].instructions[0].keyword, "COPY");
    let (runtime, build) = runtime_and_build(&stages);
    assert_eq!(runtime.image(), "b:2");
    assert_eq!(build.image(), "a:1");
}

/// The reproduction copies what the build stage's COPYs name, and honours .dockerignore in
/// `COPY . .`: a context of a few files with one ignored.
#[test]
fn copies_are_replayed_with_dockerignore() {
    let root = tempfile::tempdir().unwrap();
    let write = |p: &str| {
        let path = root.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, p).unwrap();
    };
    for p in [
        "Cargo.toml",
        "README.md",
        "src/main.rs",
        "target/big",
        "docs/a.md",
    ] {
        write(p);
    }
    let ignore = Ignore::parse("target\n*.md\n");
    let image = tempfile::tempdir().unwrap();
    let stages = stages(
        "FROM x AS build\nWORKDIR /w\nCOPY . .\nCOPY Cargo.toml src/main.rs other/\nFROM y\nCOPY --from=build /a /a\n",
    );
    let workdir = replay_copies(&stages[0], root.path(), &ignore, image.path());
    assert_eq!(workdir, Path::new("/w"));
    let w = image.path().join("w");
    for present in [
        "Cargo.toml",
        "src/main.rs",
        "docs/a.md",
        "other/Cargo.toml",
        "other/main.rs",
    ] {
        assert!(w.join(present).is_file(), "{present} missing");
    }
    for absent in ["README.md", "target"] {
        assert!(!w.join(absent).exists(), "{absent} copied");
    }
    // COPY of an ignored path fails, as it does in docker build.
    let stages =
        self::stages("FROM x AS build\nCOPY README.md ./\nFROM y\nCOPY --from=build /a /a\n");
    let result =
        std::panic::catch_unwind(|| replay_copies(&stages[0], root.path(), &ignore, image.path()));
    assert!(result.is_err(), "COPY of an ignored file was replayed");
}

// ---------------------------------------------------------------------------------------------
// OCI labels
// ---------------------------------------------------------------------------------------------

/// The `key="value"` pairs of a LABEL instruction's arguments (double-quoted values only, the
/// form the Dockerfile uses; anything else fails loudly).
fn label_pairs(args: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("LABEL {args}: only key=\"value\" is modelled"));
        let (value, after) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("LABEL {args}: unterminated value"));
        out.push((key.trim().to_owned(), value.to_owned()));
        rest = after.trim_start();
    }
    out
}

/// `[package] license` of Cargo.toml.
fn cargo_license() -> String {
    let text = std::fs::read_to_string(common::root().join("Cargo.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("license = "))
        .expect("license in Cargo.toml")
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// The runtime image carries the OCI labels: where the source is, which commit and version it
/// was built from (build arguments the release workflow passes), and its licence (Cargo.toml's).
#[test]
fn the_runtime_image_carries_the_oci_labels() {
    let text = dockerfile();
    let stages = stages(&text);
    let runtime = stages.last().unwrap();
    let labels: std::collections::BTreeMap<String, String> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "LABEL")
        .flat_map(|i| label_pairs(&i.args))
        .collect();
    let args: Vec<&str> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "ARG")
        .map(|i| i.args.split('=').next().unwrap())
        .collect();
    let label = |k: &str| {
        labels
            .get(&format!("org.opencontainers.image.{k}"))
            .unwrap_or_else(|| panic!("no org.opencontainers.image.{k} label: {labels:?}"))
            .as_str()
    };
    assert_eq!(label("licenses"), cargo_license());
    assert_eq!(
        label("source"),
        format!("https://github.com/{}", common_release::signer_repository()),
        "the source label names the repository whose release workflow signs the image"
    );
    for (key, arg) in [("version", "VERSION"), ("revision", "REVISION")] {
        assert_eq!(
            label(key),
            format!("${{{arg}}}"),
            "{key} comes from a build argument"
        );
        assert!(
            args.contains(&arg),
            "ARG {arg} is declared in the runtime stage (an ARG of the build stage is not \
             visible there): {args:?}"
        );
    }
}

#[test]
fn label_pairs_parse() {
    assert_eq!(
        label_pairs(r#"a.b="x y" c="${V}""#),
        [("a.b".into(), "x y".into()), ("c".into(), "${V}".into())]
    );
    assert!(std::panic::catch_unwind(|| label_pairs("a=b")).is_err());
}

mod common_release {
    include!("support/release.rs");
}
