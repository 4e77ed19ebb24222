//! The shape of the code, checked mechanically (issue 15):
//! - no import cycle between the files of `src/` (the module graph is parsed with `syn`, see
//!   `support/module_graph.rs` for what counts as an edge), the checker itself tested on small
//!   synthetic crates;
//! - every use points down the layers of `ARCHITECTURE.md` (commands → controllers → pipeline →
//!   pure domains → API types);
//! - `ARCHITECTURE.md` names only paths that exist and names every file of `src/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[path = "support/module_graph.rs"]
mod module_graph;

const CRATE_NAME: &str = "secure_qdrant_operator";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, relative to the repository root, `/`-separated.
fn rust_files(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable dir entry").path();
        if path.is_dir() {
            rust_files(&path, base, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(base).expect("under base");
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layers: commands → controllers → pipeline → pure domains → API types (ARCHITECTURE.md).

/// The layer of a file of `src/` (0 = commands … 4 = API types), or None for the modules that
/// operate the process beside the layers (telemetry, leader election, Events, settings, RBAC,
/// errors, the offline renderer) and the crate roots.
fn layer(file: &str) -> Option<u8> {
    let rest = file.strip_prefix("src/")?;
    let top = rest.split(['/', '.']).next()?;
    match top {
        "cli" => Some(0),
        "controller" | "access_tokens" => Some(1),
        "reconcile" => Some(2),
        "crd" => Some(4),
        "lib" | "main" | "telemetry" | "leader" | "events" | "settings" | "rbac" | "error"
        | "render" => None,
        _ => Some(3),
    }
}

#[test]
fn src_dependencies_point_down_the_layers() {
    let graph = module_graph::build(&root().join("src"), CRATE_NAME).expect("src/ parses");
    let upward: Vec<String> = graph
        .edges
        .iter()
        .filter_map(|(&(a, b), example)| {
            let (from, to) = (&graph.files[a], &graph.files[b]);
            match (layer(from), layer(to)) {
                (Some(x), Some(y)) if y < x => Some(format!(
                    "{from} (layer {x}) -> {to} (layer {y}) at {}: `{}`",
                    example.at, example.path
                )),
                _ => None,
            }
        })
        .collect();
    assert!(
        upward.is_empty(),
        "uses that point up the layers (commands 0 → controllers 1 → pipeline 2 → pure domains 3 \
         → API types 4; move the item down):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layer_check_knows_every_layer() {
    assert_eq!(layer("src/cli.rs"), Some(0));
    assert_eq!(layer("src/controller/caches.rs"), Some(1));
    assert_eq!(layer("src/access_tokens/mod.rs"), Some(1));
    assert_eq!(layer("src/reconcile/apply.rs"), Some(2));
    assert_eq!(layer("src/tls/names.rs"), Some(3));
    assert_eq!(layer("src/validate/instance.rs"), Some(3));
    assert_eq!(layer("src/crd/secure_qdrant.rs"), Some(4));
    assert_eq!(layer("src/telemetry/metrics.rs"), None);
    assert_eq!(layer("src/lib.rs"), None);
}

// ---------------------------------------------------------------------------------------------
// Import cycles in src/.

#[test]
fn src_has_no_import_cycle() {
    let graph = module_graph::build(&root().join("src"), CRATE_NAME).expect("src/ parses");
    let report = graph.report();
    assert!(
        report.is_empty(),
        "import cycles between files of src/ (each a strongly connected component, with one use \
         per edge; move what both sides need into a file that neither uses):\n{report}"
    );
}

/// The cycle check sees every file: each `.rs` file of `src/` is a module reached from lib.rs or
/// main.rs (or a `#[cfg(test)]` module), so none is silently left out of the graph.
#[test]
fn module_graph_covers_every_file_of_src() {
    let graph = module_graph::build(&root().join("src"), CRATE_NAME).expect("src/ parses");
    let mut on_disk = BTreeSet::new();
    rust_files(&root().join("src"), &root(), &mut on_disk);
    let in_graph: BTreeSet<String> = graph
        .files
        .iter()
        .chain(&graph.test_files)
        .cloned()
        .collect();
    assert_eq!(
        on_disk, in_graph,
        "files of src/ that are not modules of the crate (or the other way)"
    );
    assert!(!graph.edges.is_empty());
}

/// The binary crate polls no future: every async body is compiled once, into the library
/// (`cli::run_blocking` builds the runtime). A `#[tokio::main]` or an `.await` in `src/main.rs` compiles
/// the operator's whole async code a second time into the binary (see `cli::run_blocking`).
#[test]
fn the_binary_crate_polls_no_future() {
    let source =
        std::fs::read_to_string(root().join("src/main.rs")).expect("src/main.rs is readable");
    let tokens: proc_macro2::TokenStream = source.parse().expect("src/main.rs tokenizes");
    let idents = identifiers(tokens);
    assert!(
        idents.iter().any(|i| i == "main"),
        "the check reads src/main.rs"
    );
    for banned in ["async", "await", "tokio"] {
        assert!(
            !idents.iter().any(|i| i == banned),
            "src/main.rs uses `{banned}`: call `cli::run_blocking` instead of awaiting in the binary"
        );
    }
}

/// The identifiers of a token stream, nested groups included (comments are not tokens).
fn identifiers(stream: proc_macro2::TokenStream) -> Vec<String> {
    let mut out = Vec::new();
    for tree in stream {
        match tree {
            proc_macro2::TokenTree::Ident(i) => out.push(i.to_string()),
            proc_macro2::TokenTree::Group(g) => out.extend(identifiers(g.stream())),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The checker on synthetic crates.

/// A crate in a temporary directory: `files` are (path under src/, text).
fn synthetic(files: &[(&str, &str)]) -> (tempfile::TempDir, module_graph::Graph) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
    let graph = module_graph::build(&dir.path().join("src"), "demo").expect("parses");
    (dir, graph)
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn checker_finds_a_two_file_cycle_with_the_line_of_each_edge() {
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
        (
            "b.rs",
            "pub struct B;\n\npub fn make() -> crate::a::A {\n    crate::a::A(B)\n}\n",
        ),
        ("c.rs", "pub fn f() -> crate::a::A { todo!() }\n"),
    ]);
    assert_eq!(graph.cycle_files(), vec![vec!["src/a.rs", "src/b.rs"]]);
    let report = graph.report();
    assert!(
        report.contains("src/a.rs -> src/b.rs  at src/a.rs:1: `crate::b::B`"),
        "{report}"
    );
    assert!(
        report.contains("src/b.rs -> src/a.rs  at src/b.rs:3: `crate::a::A`"),
        "{report}"
    );
    assert!(!report.contains("src/c.rs"), "{report}");
}

#[test]
fn checker_finds_a_cycle_through_a_parent_mod_rs() {
    // The parent calls its child, the child uses the parent's Context: a cycle, although each
    // file is small. The fix is a sibling file holding Context.
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "pub mod pipeline;\n"),
        (
            "pipeline/mod.rs",
            "mod step;\npub struct Context;\npub fn run(ctx: &Context) {\n    step::go(ctx)\n}\n",
        ),
        (
            "pipeline/step.rs",
            "use super::Context;\npub fn go(_: &Context) {}\n",
        ),
    ]);
    assert_eq!(
        graph.cycle_files(),
        vec![vec!["src/pipeline/mod.rs", "src/pipeline/step.rs"]]
    );
    let report = graph.report();
    assert!(
        report.contains("at src/pipeline/mod.rs:4: `step::go`"),
        "{report}"
    );
    assert!(
        report.contains("at src/pipeline/step.rs:1: `super::Context`"),
        "{report}"
    );

    // The same through `crate::` and the non-mod.rs layout (pipeline.rs + pipeline/step.rs).
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "pub mod pipeline;\n"),
        (
            "pipeline.rs",
            "pub mod step;\npub struct Context;\npub use self::step::go;\n",
        ),
        (
            "pipeline/step.rs",
            "pub fn go(_: &crate::pipeline::Context) {}\n",
        ),
    ]);
    assert_eq!(
        graph.cycle_files(),
        vec![vec!["src/pipeline.rs", "src/pipeline/step.rs"]]
    );
}

#[test]
fn checker_finds_no_cycle_in_a_layered_crate() {
    let (_dir, graph) = synthetic(&[
        (
            "lib.rs",
            "pub mod api;\npub mod domain;\npub mod pipeline;\n",
        ),
        (
            "api.rs",
            "pub struct Spec;\npub mod inner { pub struct Deep; }\n",
        ),
        (
            "domain/mod.rs",
            "pub mod build;\npub mod names;\npub use build::build;\n",
        ),
        // A child using its sibling through `super::` depends on the sibling, not on mod.rs.
        (
            "domain/names.rs",
            "pub fn name(_: &crate::api::Spec) -> String { String::new() }\n",
        ),
        (
            "domain/build.rs",
            "use super::names;\nuse crate::api::{self, inner::Deep};\n\
             pub fn build(s: &api::Spec) -> Deep {\n    let _ = names::name(s);\n    Deep\n}\n",
        ),
        // The pipeline imports the domain module and goes through it, and names the API in a macro.
        (
            "pipeline/mod.rs",
            "mod context;\nmod step;\npub use context::Context;\n",
        ),
        ("pipeline/context.rs", "pub struct Context;\n"),
        (
            "pipeline/step.rs",
            "use crate::domain;\nuse super::context::Context;\n\
             pub fn go(_: &Context, s: &crate::api::Spec) {\n    \
             let _ = format!(\"{:?}\", domain::build::build(s).0);\n    \
             let _ = vec![crate::api::inner::Deep];\n}\n",
        ),
        (
            "main.rs",
            "fn main() {\n    let _ = demo::pipeline::Context;\n}\n",
        ),
    ]);
    assert_eq!(
        graph.cycle_files(),
        Vec::<Vec<String>>::new(),
        "{}",
        graph.report()
    );
    assert_eq!(
        graph.edge_files(),
        pairs(&[
            ("src/domain/build.rs", "src/api.rs"),
            ("src/domain/build.rs", "src/domain/names.rs"),
            ("src/domain/mod.rs", "src/domain/build.rs"),
            ("src/domain/names.rs", "src/api.rs"),
            ("src/main.rs", "src/pipeline/mod.rs"),
            ("src/pipeline/mod.rs", "src/pipeline/context.rs"),
            ("src/pipeline/step.rs", "src/api.rs"),
            ("src/pipeline/step.rs", "src/domain/build.rs"),
            ("src/pipeline/step.rs", "src/pipeline/context.rs"),
        ])
    );
}

#[test]
fn checker_ignores_test_only_code() {
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            "pub struct A;\npub fn f() -> crate::b::B { crate::b::B }\n",
        ),
        (
            "b.rs",
            "pub struct B;\n\
             #[cfg(test)]\nfn helper() -> crate::a::A { crate::a::A }\n\
             #[cfg(all(test, unix))]\nuse crate::a::A as _;\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::a::A;\n}\n\
             #[cfg(test)]\nmod more_tests;\n\
             pub fn g() {\n    #[cfg(test)]\n    let _ = crate::a::A;\n}\n",
        ),
        ("b/more_tests.rs", "use crate::a::A;\n"),
    ]);
    assert_eq!(
        graph.cycle_files(),
        Vec::<Vec<String>>::new(),
        "{}",
        graph.report()
    );
    assert_eq!(graph.edge_files(), pairs(&[("src/a.rs", "src/b.rs")]));
    assert_eq!(graph.test_files, vec!["src/b/more_tests.rs"]);

    // Without cfg(test) the same uses are a cycle: the check above is not vacuous.
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            "pub struct A;\npub fn f() -> crate::b::B { crate::b::B }\n",
        ),
        (
            "b.rs",
            "pub struct B;\nmod tests {\n    use crate::a::A;\n}\n",
        ),
    ]);
    assert_eq!(graph.cycle_files(), vec![vec!["src/a.rs", "src/b.rs"]]);
}

#[test]
fn checker_reports_an_inline_module_as_part_of_its_file() {
    // `qdrant::env` is inline in qdrant.rs: a use of it is a use of qdrant.rs.
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "pub mod qdrant;\npub mod validate;\n"),
        (
            "qdrant.rs",
            "pub mod env {\n    pub const K: &str = \"k\";\n}\n\
             pub fn render(_: &crate::validate::Instance) {}\n",
        ),
        (
            "validate.rs",
            "pub struct Instance;\nconst X: &str = crate::qdrant::env::K;\n",
        ),
    ]);
    assert_eq!(
        graph.cycle_files(),
        vec![vec!["src/qdrant.rs", "src/validate.rs"]]
    );
    assert!(
        graph.report().contains("`crate::qdrant::env::K`"),
        "{}",
        graph.report()
    );
}

// ---------------------------------------------------------------------------------------------
// ARCHITECTURE.md.

/// Every path ARCHITECTURE.md names: runs that start with `src/` or `tests/` at a word boundary
/// and go on over path characters; a trailing `.` or `/` (end of a sentence, a directory) is cut.
fn named_paths(text: &str) -> BTreeSet<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    let mut out = BTreeSet::new();
    for (i, _) in text.char_indices() {
        let rest = &text[i..];
        if !(rest.starts_with("src/") || rest.starts_with("tests/")) {
            continue;
        }
        if text[..i].chars().next_back().is_some_and(is_path_char) {
            continue;
        }
        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(['.', '/']);
        out.insert(path.to_string());
    }
    out
}

fn architecture_md() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md exists")
}

#[test]
fn named_paths_reads_paths_out_of_markdown() {
    let text = "See `src/a.rs`, src/b/ and tests/c.rs. Not charts/x/tests/y.rs or mysrc/z.rs; \
                | `src/reconcile/mod.rs` | src/children/* |";
    assert_eq!(
        named_paths(text),
        [
            "src/a.rs",
            "src/b",
            "tests/c.rs",
            "src/reconcile/mod.rs",
            "src/children"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
}

#[test]
fn architecture_md_names_only_paths_that_exist() {
    let missing: Vec<String> = named_paths(&architecture_md())
        .into_iter()
        .filter(|p| !root().join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn architecture_md_names_every_file_of_src() {
    let named = named_paths(&architecture_md());
    let mut files = BTreeSet::new();
    rust_files(&root().join("src"), &root(), &mut files);
    let unnamed: Vec<&String> = files.iter().filter(|f| !named.contains(*f)).collect();
    assert!(
        unnamed.is_empty(),
        "ARCHITECTURE.md does not name these files of src/ (one line each, by path): {unnamed:?}"
    );
}
