//! The module graph of a crate's `src/`, parsed with `syn`, and its import cycles.
//!
//! - **Nodes** are files. The module tree is read as rustc reads it: from `lib.rs` (and
//!   `main.rs`, the binary's root) through every `mod x;` (`x.rs`, `x/mod.rs` or `#[path]`).
//!   `mod.rs`, `lib.rs` and `main.rs` are their directory's module; an inline `mod x { }`
//!   belongs to its file. Items under `#[cfg(test)]` (or `cfg(all(test, …))`) are skipped,
//!   out-of-line test modules included.
//! - **Edges** come from every path that names a module of the crate: `use crate::…`,
//!   `use super::…`, `use self::…`, `use <crate name>::…`, paths in expressions, types and
//!   patterns (`crate::a::f()`, `super::x::Y`), bare paths that start with a child module of the
//!   scope (`mod x;` then `x::f()`) or with a module brought in by `use` (`use crate::a;` then
//!   `a::b::f()`), and such paths inside macro invocations (`format!`, `json!`, …: their tokens
//!   are scanned for paths). An edge goes to the file of the longest module prefix of the path,
//!   so `crate::tls::ca::Ca` is an edge to `tls/ca.rs` and `super::Context` from
//!   `reconcile/apply.rs` is an edge to `reconcile/mod.rs`. A parent file using its child is an
//!   edge to the child and a child using an item of an ancestor's file is an edge to that file;
//!   declaring `mod x;` alone is not a use. Importing a module (`use crate::a;`) is not an edge
//!   by itself: the paths that go through it are.
//! - **Cycles** are the strongly connected components of more than one file (Tarjan).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Item, Meta, Token, UseTree};

/// A module path from the root of its crate; the library's root is `[]`.
type ModPath = Vec<String>;

/// The first segment of the binary's module paths (`main.rs` is the root of another crate).
const BIN_ROOT: &str = "<main.rs>";

/// One use of a module that made an edge: where it is and what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// `src/…/file.rs:line`.
    pub at: String,
    /// The path as written (`crate::a::f`, `super::Context`).
    pub path: String,
}

#[derive(Debug)]
pub struct Graph {
    /// Node index → file, relative to the directory above `src/` (`src/reconcile/apply.rs`).
    pub files: Vec<String>,
    /// Node index → the module the file is (`reconcile::apply`, `crate` for lib.rs).
    pub modules: Vec<String>,
    /// `.rs` files loaded only as `#[cfg(test)]` modules: not nodes.
    pub test_files: Vec<String>,
    /// (from, to) → the first use that made the edge (`from != to`).
    pub edges: BTreeMap<(usize, usize), Example>,
}

impl Graph {
    /// The edges as (from file, to file), for assertions.
    pub fn edge_files(&self) -> BTreeSet<(String, String)> {
        self.edges
            .keys()
            .map(|&(a, b)| (self.files[a].clone(), self.files[b].clone()))
            .collect()
    }

    /// Every strongly connected component of more than one file, each sorted by file, the list
    /// sorted by its first file.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = tarjan(self.files.len(), &self.edges)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|mut c| {
                c.sort_by(|a, b| self.files[*a].cmp(&self.files[*b]));
                c
            })
            .collect();
        out.sort_by(|a, b| self.files[a[0]].cmp(&self.files[b[0]]));
        out
    }

    /// The cycles as file lists, for assertions.
    pub fn cycle_files(&self) -> Vec<Vec<String>> {
        self.cycles()
            .iter()
            .map(|c| c.iter().map(|&n| self.files[n].clone()).collect())
            .collect()
    }

    /// Every cycle with one example use per edge inside it.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (i, cycle) in self.cycles().iter().enumerate() {
            let names: Vec<String> = cycle
                .iter()
                .map(|&n| format!("{} ({})", self.files[n], self.modules[n]))
                .collect();
            let _ = writeln!(out, "cycle {}: {}", i + 1, names.join(", "));
            let members: BTreeSet<usize> = cycle.iter().copied().collect();
            for (&(a, b), ex) in &self.edges {
                if members.contains(&a) && members.contains(&b) {
                    let _ = writeln!(
                        out,
                        "  {} -> {}  at {}: `{}`",
                        self.files[a], self.files[b], ex.at, ex.path
                    );
                }
            }
        }
        out
    }
}

/// Reads the crate whose sources are in `src` (`src/lib.rs`, `src/main.rs`) and builds its graph.
/// `crate_name` is the library's name as the binary writes it (`secure_qdrant_operator`).
pub fn build(src: &Path, crate_name: &str) -> Result<Graph, String> {
    let base = src.parent().unwrap_or(Path::new(""));
    let mut tree = Tree {
        base: base.to_path_buf(),
        files: Vec::new(),
        modules: HashMap::new(),
        test_files: Vec::new(),
    };
    let roots = [
        ("lib.rs", ModPath::new()),
        ("main.rs", vec![BIN_ROOT.to_string()]),
    ];
    for (file, module) in roots {
        let path = src.join(file);
        if path.exists() {
            tree.load(&path, module, true)?;
        }
    }
    if tree.files.is_empty() {
        return Err(format!("{}: neither lib.rs nor main.rs", src.display()));
    }
    let mut edges = BTreeMap::new();
    for node in 0..tree.files.len() {
        let file = &tree.files[node];
        let root = crate_root(&file.module);
        let mut scopes = Vec::new();
        collect_scopes(&file.ast.items, file.module.clone(), &mut scopes);
        for scope in scopes {
            resolve_scope(&tree, node, &root, crate_name, &scope, &mut edges);
        }
    }
    Ok(Graph {
        files: tree.files.iter().map(|f| f.rel.clone()).collect(),
        modules: tree
            .files
            .iter()
            .map(|f| display_module(&f.module))
            .collect(),
        test_files: tree.test_files,
        edges,
    })
}

fn display_module(module: &ModPath) -> String {
    match module.split_first() {
        None => "crate".to_string(),
        Some((first, [])) if first == BIN_ROOT => "main (the binary)".to_string(),
        Some((first, rest)) if first == BIN_ROOT => format!("main::{}", rest.join("::")),
        Some(_) => module.join("::"),
    }
}

fn crate_root(module: &ModPath) -> ModPath {
    match module.first() {
        Some(first) if first == BIN_ROOT => vec![BIN_ROOT.to_string()],
        _ => ModPath::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The module tree.

struct SourceFile {
    rel: String,
    module: ModPath,
    ast: syn::File,
}

struct Tree {
    base: PathBuf,
    files: Vec<SourceFile>,
    /// Every module (inline ones too) → the node of the file it is written in.
    modules: HashMap<ModPath, usize>,
    test_files: Vec<String>,
}

impl Tree {
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.base)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    }

    /// Loads `path` as `module`; `owns_dir`: a lib.rs/main.rs/mod.rs (or `#[path]`) file, whose
    /// child modules live next to it rather than in a directory named after it.
    fn load(&mut self, path: &Path, module: ModPath, owns_dir: bool) -> Result<(), String> {
        let rel = self.rel(path);
        let text = std::fs::read_to_string(path).map_err(|e| format!("{rel}: {e}"))?;
        let ast = syn::parse_file(&text).map_err(|e| {
            let at = e.span().start();
            format!("{rel}:{}:{}: {e}", at.line, at.column + 1)
        })?;
        let node = self.files.len();
        self.modules.insert(module.clone(), node);
        let dir = match (owns_dir, path.file_stem()) {
            (false, Some(stem)) => path.with_file_name(stem),
            _ => path.parent().unwrap_or(Path::new("")).to_path_buf(),
        };
        // The node's number is taken before its child modules take theirs.
        let empty = syn::File {
            shebang: None,
            attrs: Vec::new(),
            items: Vec::new(),
        };
        self.files.push(SourceFile {
            rel,
            module: module.clone(),
            ast: empty,
        });
        self.load_mods(&ast.items, &module, &dir, node)?;
        self.files[node].ast = ast;
        Ok(())
    }

    fn load_mods(
        &mut self,
        items: &[Item],
        module: &ModPath,
        dir: &Path,
        node: usize,
    ) -> Result<(), String> {
        for item in items {
            let Item::Mod(m) = item else { continue };
            let name = m.ident.to_string();
            let mut child = module.clone();
            child.push(name.clone());
            let test_only = is_test_only(&m.attrs);
            match &m.content {
                Some(_) if test_only => {}
                Some((_, inner)) => {
                    self.modules.insert(child.clone(), node);
                    self.load_mods(inner, &child, &dir.join(&name), node)?;
                }
                None => {
                    let (file, owns_dir) = self.find_mod_file(&m.attrs, dir, &name)?;
                    if test_only {
                        if file.exists() {
                            let rel = self.rel(&file);
                            self.test_files.push(rel);
                        }
                    } else {
                        self.load(&file, child, owns_dir)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn find_mod_file(
        &self,
        attrs: &[Attribute],
        dir: &Path,
        name: &str,
    ) -> Result<(PathBuf, bool), String> {
        for attr in attrs {
            if let Meta::NameValue(nv) = &attr.meta
                && nv.path.is_ident("path")
                && let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) = &nv.value
            {
                return Ok((dir.join(s.value()), true));
            }
        }
        let flat = dir.join(format!("{name}.rs"));
        let nested = dir.join(name).join("mod.rs");
        match (flat.exists(), nested.exists()) {
            (true, false) => Ok((flat, false)),
            (false, true) => Ok((nested, true)),
            (true, true) => Err(format!(
                "both {} and {} exist",
                flat.display(),
                nested.display()
            )),
            (false, false) => Ok((flat, false)), // reported by `load` when not test-only
        }
    }
}

/// `#[cfg(test)]`, or a `cfg(all(…))` that needs `test`.
fn is_test_only(attrs: &[Attribute]) -> bool {
    fn needs_test(meta: &Meta) -> bool {
        match meta {
            Meta::Path(p) => p.is_ident("test"),
            Meta::List(list) if list.path.is_ident("all") => list
                .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .is_ok_and(|inner| inner.iter().any(needs_test)),
            _ => false,
        }
    }
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.parse_args::<Meta>().is_ok_and(|m| needs_test(&m)))
}

// ---------------------------------------------------------------------------------------------
// What each module scope of a file imports and names.

/// A path as written, with the line of its first segment.
#[derive(Clone, Debug)]
struct Written {
    segments: Vec<String>,
    line: usize,
}

/// One leaf of a `use` tree.
#[derive(Debug)]
struct UseLeaf {
    /// The full path (`use a::b::{self}` gives `a::b`; a glob gives the path before `*`).
    path: Written,
    /// The name it binds (`None` for a glob or `as _`).
    binds: Option<String>,
    glob: bool,
}

/// One module of a file (the file's own, or an inline `mod x { }`): its uses and other paths.
#[derive(Debug, Default)]
struct Scope {
    module: ModPath,
    uses: Vec<UseLeaf>,
    paths: Vec<Written>,
}

fn collect_scopes(items: &[Item], module: ModPath, out: &mut Vec<Scope>) {
    let mut walker = ScopeWalker {
        scope: Scope {
            module: module.clone(),
            ..Scope::default()
        },
        inline: Vec::new(),
    };
    for item in items {
        walker.visit_item(item);
    }
    let inline = std::mem::take(&mut walker.inline);
    out.push(walker.scope);
    for (name, inner) in inline {
        let mut child = module.clone();
        child.push(name);
        collect_scopes(inner, child, out);
    }
}

struct ScopeWalker<'ast> {
    scope: Scope,
    /// Inline modules met in this scope, walked as scopes of their own.
    inline: Vec<(String, &'ast [Item])>,
}

impl<'ast> Visit<'ast> for ScopeWalker<'ast> {
    fn visit_item(&mut self, item: &'ast Item) {
        let attrs = match item {
            Item::Const(i) => &i.attrs,
            Item::Enum(i) => &i.attrs,
            Item::ExternCrate(i) => &i.attrs,
            Item::Fn(i) => &i.attrs,
            Item::ForeignMod(i) => &i.attrs,
            Item::Impl(i) => &i.attrs,
            Item::Macro(i) => &i.attrs,
            Item::Mod(i) => &i.attrs,
            Item::Static(i) => &i.attrs,
            Item::Struct(i) => &i.attrs,
            Item::Trait(i) => &i.attrs,
            Item::TraitAlias(i) => &i.attrs,
            Item::Type(i) => &i.attrs,
            Item::Union(i) => &i.attrs,
            Item::Use(i) => &i.attrs,
            _ => return visit::visit_item(self, item),
        };
        if is_test_only(attrs) {
            return;
        }
        match item {
            Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    self.inline.push((m.ident.to_string(), inner));
                }
            }
            Item::Use(u) if u.leading_colon.is_none() => {
                use_leaves(&u.tree, &mut Vec::new(), &mut self.scope.uses);
            }
            Item::Use(_) => {}
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !is_test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast syn::TraitItem) {
        let attrs = match item {
            syn::TraitItem::Const(i) => &i.attrs,
            syn::TraitItem::Fn(i) => &i.attrs,
            syn::TraitItem::Type(i) => &i.attrs,
            syn::TraitItem::Macro(i) => &i.attrs,
            _ => return visit::visit_trait_item(self, item),
        };
        if !is_test_only(attrs) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if !is_test_only(&local.attrs) {
            visit::visit_local(self, local);
        }
    }

    fn visit_stmt_macro(&mut self, mac: &'ast syn::StmtMacro) {
        if !is_test_only(&mac.attrs) {
            visit::visit_stmt_macro(self, mac);
        }
    }

    fn visit_field(&mut self, field: &'ast syn::Field) {
        if !is_test_only(&field.attrs) {
            visit::visit_field(self, field);
        }
    }

    fn visit_variant(&mut self, variant: &'ast syn::Variant) {
        if !is_test_only(&variant.attrs) {
            visit::visit_variant(self, variant);
        }
    }

    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if !is_test_only(&arm.attrs) {
            visit::visit_arm(self, arm);
        }
    }

    fn visit_field_value(&mut self, fv: &'ast syn::FieldValue) {
        if !is_test_only(&fv.attrs) {
            visit::visit_field_value(self, fv);
        }
    }

    // Attributes (`#[derive]`, `#[serde]`, docs) and `pub(in path)` name no dependency.
    fn visit_attribute(&mut self, _: &'ast Attribute) {}
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first()
        {
            self.scope.paths.push(Written {
                segments: path.segments.iter().map(|s| s.ident.to_string()).collect(),
                line: first.ident.span().start().line,
            });
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        scan_tokens(mac.tokens.clone(), &mut self.scope.paths);
    }
}

fn use_leaves(tree: &UseTree, prefix: &mut Vec<(String, usize)>, out: &mut Vec<UseLeaf>) {
    let leaf = |prefix: &[(String, usize)], last: Option<&syn::Ident>| {
        let mut all = prefix.to_vec();
        if let Some(ident) = last.filter(|i| *i != "self") {
            all.push((ident.to_string(), ident.span().start().line));
        }
        Written {
            line: all.first().map_or(0, |s| s.1),
            segments: all.into_iter().map(|s| s.0).collect(),
        }
    };
    match tree {
        UseTree::Path(p) => {
            prefix.push((p.ident.to_string(), p.ident.span().start().line));
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(n) => {
            let path = leaf(prefix, Some(&n.ident));
            let binds = path.segments.last().cloned();
            out.push(UseLeaf {
                path,
                binds,
                glob: false,
            });
        }
        UseTree::Rename(r) => {
            let binds = (r.rename != "_").then(|| r.rename.to_string());
            out.push(UseLeaf {
                path: leaf(prefix, Some(&r.ident)),
                binds,
                glob: false,
            });
        }
        UseTree::Glob(_) => out.push(UseLeaf {
            path: leaf(prefix, None),
            binds: None,
            glob: true,
        }),
        UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// Paths in a macro's tokens: every `a::b::c` run of identifiers (`$crate::x` included).
fn scan_tokens(tokens: TokenStream, out: &mut Vec<Written>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let is_colon = |t: Option<&TokenTree>, spacing: Spacing| matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == spacing);
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(g) => {
                scan_tokens(g.stream(), out);
                i += 1;
            }
            TokenTree::Ident(first) => {
                let mut segments = vec![first.to_string()];
                let mut j = i + 1;
                while is_colon(tokens.get(j), Spacing::Joint)
                    && is_colon(tokens.get(j + 1), Spacing::Alone)
                    && let Some(TokenTree::Ident(next)) = tokens.get(j + 2)
                {
                    segments.push(next.to_string());
                    j += 3;
                }
                if segments.len() > 1 {
                    out.push(Written {
                        segments,
                        line: first.span().start().line,
                    });
                }
                i = j;
            }
            TokenTree::Punct(_) | TokenTree::Literal(_) => i += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution: which module (and so which file) a path names.

fn resolve_scope(
    tree: &Tree,
    node: usize,
    root: &ModPath,
    crate_name: &str,
    scope: &Scope,
    edges: &mut BTreeMap<(usize, usize), Example>,
) {
    let mut names = Names {
        tree,
        root,
        crate_name,
        module: &scope.module,
        aliases: HashMap::new(),
    };
    names.bind_aliases(&scope.uses);
    let rel = &tree.files[node].rel;
    let mut add = |target: Option<ModPath>, written: &Written| {
        let Some(target) = target else { return };
        let to = tree.modules[&target];
        if to != node {
            edges.entry((node, to)).or_insert_with(|| Example {
                at: format!("{rel}:{}", written.line),
                path: written.segments.join("::"),
            });
        }
    };
    for leaf in &scope.uses {
        // Importing a module binds a name; the paths through it make the edges.
        if leaf.glob || names.whole_module(&leaf.path.segments).is_none() {
            add(names.longest_module(&leaf.path.segments, true), &leaf.path);
        }
    }
    for path in &scope.paths {
        // A single segment is a local name (a variable, a type), never a module's item.
        if path.segments.len() > 1 {
            add(names.longest_module(&path.segments, false), path);
        }
    }
}

/// How the names of one scope resolve to modules.
struct Names<'a> {
    tree: &'a Tree,
    /// The crate's root module (`[]`, or the binary's).
    root: &'a ModPath,
    crate_name: &'a str,
    module: &'a ModPath,
    /// Names bound to modules by `use` in this scope.
    aliases: HashMap<String, ModPath>,
}

impl Names<'_> {
    fn is_module(&self, m: &ModPath) -> bool {
        self.tree.modules.contains_key(m)
    }

    /// The module the path starts from and how many segments that took (`super::super` = 2);
    /// `None` when it starts outside the crate (`std::…`, another crate, a local type).
    fn start(&self, segments: &[String]) -> Option<(ModPath, usize)> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" => Some((self.root.clone(), 1)),
            "self" => Some((self.module.clone(), 1)),
            "super" => {
                let mut m = self.module.clone();
                let mut used = 0;
                while segments.get(used).is_some_and(|s| s == "super") {
                    if m.len() <= self.root.len() {
                        return None;
                    }
                    m.pop();
                    used += 1;
                }
                Some((m, used))
            }
            name if name == self.crate_name => Some((ModPath::new(), 1)),
            name => {
                let mut child = self.module.clone();
                child.push(name.to_string());
                if self.is_module(&child) {
                    Some((child, 1))
                } else {
                    self.aliases.get(name).map(|m| (m.clone(), 1))
                }
            }
        }
    }

    /// The longest prefix of the path that is a module of the crate. `last_may_be_module`: in a
    /// `use`, the last segment may name a module; in an expression or a type it names an item.
    fn longest_module(&self, segments: &[String], last_may_be_module: bool) -> Option<ModPath> {
        let (mut module, used) = self.start(segments)?;
        let end = if last_may_be_module {
            segments.len()
        } else {
            segments.len() - 1
        };
        for seg in segments.iter().take(end).skip(used) {
            let mut next = module.clone();
            next.push(seg.clone());
            if !self.is_module(&next) {
                break;
            }
            module = next;
        }
        self.is_module(&module).then_some(module)
    }

    /// The module the whole path names, if every segment is a module (`use crate::a::b;`).
    fn whole_module(&self, segments: &[String]) -> Option<ModPath> {
        let (mut m, used) = self.start(segments)?;
        for seg in &segments[used..] {
            m.push(seg.clone());
            if !self.is_module(&m) {
                return None;
            }
        }
        self.is_module(&m).then_some(m)
    }

    /// Binds the names `use` items give to modules (`use crate::a;`, `use super::b as c;`), to a
    /// fixed point, since one may go through another (`use crate::a; use a::b;`).
    fn bind_aliases(&mut self, uses: &[UseLeaf]) {
        loop {
            let mut changed = false;
            for leaf in uses.iter().filter(|l| !l.glob) {
                let Some(name) = &leaf.binds else { continue };
                if self.aliases.contains_key(name) {
                    continue;
                }
                if let Some(m) = self.whole_module(&leaf.path.segments) {
                    self.aliases.insert(name.clone(), m);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Tarjan's strongly connected components.
fn tarjan(n: usize, edges: &BTreeMap<(usize, usize), Example>) -> Vec<Vec<usize>> {
    struct State {
        next: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    fn connect(s: &mut State, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for w in s.next[v].clone() {
            match s.index[w] {
                None => {
                    connect(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut next = vec![Vec::new(); n];
    for &(a, b) in edges.keys() {
        next[a].push(b);
    }
    let mut s = State {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            connect(&mut s, v);
        }
    }
    s.out
}
