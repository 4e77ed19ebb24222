//! Field ownership (`metadata.managedFields`) and server-side apply, simplified.
//!
//! A field is a path of map keys to a leaf: a scalar, a list, or an empty map. Lists are atomic
//! (owned and replaced as a whole: no merge keys, no sets), which is what makes this simpler than
//! the real structured-merge-diff. Ownership is kept in `metadata.managedFields` in the real
//! `FieldsV1` shape (`{"f:spec": {"f:replicas": {}}}`), one entry per (manager, operation,
//! subresource).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Which part of an object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `.status` is out of scope when the kind has a status subresource.
    Main { has_status: bool },
    /// The `/status` subresource: `.status` only.
    Status,
}

impl Scope {
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main { .. } => None,
            Scope::Status => Some("status"),
        }
    }
}

/// Metadata the server owns: never part of a field set, never taken from a write.
pub const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

fn in_scope(path: &[String], scope: Scope) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    match scope {
        Scope::Status => first == "status",
        Scope::Main { has_status } => {
            if first == "apiVersion" || first == "kind" || (has_status && first == "status") {
                return false;
            }
            if first == "metadata"
                && path
                    .get(1)
                    .is_some_and(|k| SYSTEM_METADATA.contains(&k.as_str()))
            {
                return false;
            }
            true
        }
    }
}

fn collect(v: &Value, prefix: &mut Path, scope: Scope, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                prefix.push(k.clone());
                if prefix.len() > 1 || in_scope(prefix, scope) {
                    collect(child, prefix, scope, out);
                }
                prefix.pop();
            }
        }
        _ => {
            // An empty `metadata: {}` is no field (it is always there).
            let bare_metadata = prefix.len() == 1 && prefix[0] == "metadata";
            if !prefix.is_empty() && !bare_metadata && in_scope(prefix, scope) {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The leaf paths of `v` within `scope`.
pub fn leaf_paths(v: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    collect(v, &mut Vec::new(), scope, &mut out);
    out
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.as_object()?.get(k))
}

/// Removes the field at `path`, then any map above it left empty (top-level keys excepted).
pub fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *v;
    for k in parents {
        match cur.as_object_mut().and_then(|m| m.get_mut(k)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
    if parents.len() > 1 {
        let parent_empty = get_path(v, parents)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if parent_empty {
            remove_path(v, parents);
        }
    }
}

/// True when one path is a prefix of the other (they name overlapping parts of an object).
pub fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// The shorter of two overlapping paths.
fn shorter<'a>(a: &'a [String], b: &'a [String]) -> &'a [String] {
    if a.len() <= b.len() { a } else { b }
}

/// `{"f:a": {"f:b": {}}}` from a field set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            cur = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are maps");
        }
    }
    Value::Object(root)
}

fn from_node(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let children: Vec<(&String, &Value)> = node
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| *k != ".").collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        match k.strip_prefix("f:") {
            Some(field) => {
                prefix.push(field.to_owned());
                from_node(child, prefix, out);
                prefix.pop();
            }
            // k:, v:, i: (list items, from a real server's format): the list is the leaf here.
            None => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    from_node(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    fn same_slot(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
            Entry {
                manager: s("manager").unwrap_or_default(),
                operation: s("operation").unwrap_or_else(|| "Update".into()),
                api_version: s("apiVersion").unwrap_or_default(),
                time: s("time").unwrap_or_default(),
                subresource: s("subresource"),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes the entries (empty ones dropped; no entries → no `managedFields`).
pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Who writes, and when.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
    pub scope: Scope,
}

/// Records a non-apply write (create, update, merge/JSON patch): the writer's `Update` entry gains
/// every field that changed, other entries lose them, and removed fields are owned by nobody.
/// Entries are read from `new` (the caller copies them from the stored object).
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    if w.manager.is_empty() {
        return;
    }
    let null = Value::Null;
    let old_v = old.unwrap_or(&null);
    let changed: FieldSet = leaf_paths(new, w.scope)
        .into_iter()
        .filter(|p| get_path(old_v, p) != get_path(new, p))
        .collect();
    let removed: FieldSet = leaf_paths(old_v, w.scope)
        .into_iter()
        .filter(|p| get_path(new, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    let sub = w.scope.subresource();
    let mut entries = read_entries(new);
    for e in entries.iter_mut() {
        let before = e.fields.len();
        e.fields.retain(|q| {
            !changed.iter().any(|p| overlaps(p, q)) && !removed.iter().any(|p| overlaps(p, q))
        });
        if e.fields.len() != before {
            e.time = w.now.to_owned();
        }
    }
    match entries
        .iter_mut()
        .find(|e| e.same_slot(w.manager, "Update", sub))
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = w.now.to_owned();
            e.api_version = w.api_version.to_owned();
        }
        None => entries.push(Entry {
            manager: w.manager.to_owned(),
            operation: "Update".into(),
            api_version: w.api_version.to_owned(),
            time: w.now.to_owned(),
            subresource: sub.map(str::to_owned),
            fields: changed,
        }),
    }
    write_entries(new, &entries);
}

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// The part of an applied configuration that the apply may write.
pub fn scoped_config(config: &Value, scope: Scope) -> Value {
    let mut cfg = config.clone();
    if let Some(m) = cfg.as_object_mut() {
        match scope {
            Scope::Status => {
                m.retain(|k, _| k == "status");
            }
            Scope::Main { has_status } => {
                m.remove("apiVersion");
                m.remove("kind");
                if has_status {
                    m.remove("status");
                }
                if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                    for k in SYSTEM_METADATA {
                        meta.remove(*k);
                    }
                }
            }
        }
    }
    cfg
}

/// Server-side apply of `config` by `w.manager` onto `live`. Returns the merged object with its
/// new `managedFields`, or the conflicts (unless `force`, which takes the conflicting fields over).
///
/// Merge rules: maps merge key by key, lists and scalars are replaced; a field this manager
/// applied before and no longer sends is removed unless another manager also owns it.
pub fn apply(
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let cfg = scoped_config(config, w.scope);
    let sent = leaf_paths(&cfg, w.scope);
    let sub = w.scope.subresource();
    let mut entries = read_entries(live);

    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.manager == w.manager || e.subresource.as_deref() != sub {
            continue;
        }
        for q in &e.fields {
            for p in &sent {
                if !overlaps(p, q) {
                    continue;
                }
                let at = shorter(p, q);
                let (lv, cv) = (get_path(live, at), get_path(&cfg, at));
                if lv.is_some() && lv != cv {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        field: format!(".{}", q.join(".")),
                    });
                    taken.push((i, q.clone()));
                    break;
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, q) in taken {
        entries[i].fields.remove(&q);
        entries[i].time = w.now.to_owned();
    }

    let previous: FieldSet = entries
        .iter()
        .find(|e| e.same_slot(w.manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others_own = |p: &Path| {
        entries
            .iter()
            .filter(|e| !e.same_slot(w.manager, "Apply", sub))
            .any(|e| e.fields.iter().any(|q| overlaps(p, q)))
    };
    let removed: Vec<&Path> = previous
        .iter()
        .filter(|p| !sent.iter().any(|s| overlaps(s, p)) && !others_own(p))
        .collect();

    let mut out = live.clone();
    for p in removed {
        remove_path(&mut out, p);
    }
    json_patch::merge(&mut out, &cfg);

    match entries
        .iter_mut()
        .find(|e| e.same_slot(w.manager, "Apply", sub))
    {
        Some(e) => {
            if e.fields != sent {
                e.fields = sent;
                e.time = w.now.to_owned();
                e.api_version = w.api_version.to_owned();
            }
        }
        None => entries.push(Entry {
            manager: w.manager.to_owned(),
            operation: "Apply".into(),
            api_version: w.api_version.to_owned(),
            time: w.now.to_owned(),
            subresource: sub.map(str::to_owned),
            fields: sent,
        }),
    }
    write_entries(&mut out, &entries);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main { has_status: true };

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            now: "2026-01-01T00:00:00Z",
            scope: MAIN,
        }
    }

    fn p(s: &str) -> Path {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn leaf_paths_skip_system_metadata_and_status() {
        let o = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"x": "1"}},
                       "spec": {"a": [1], "b": {}, "c": {"d": 1}}, "status": {"s": 1}});
        let got = leaf_paths(&o, MAIN);
        let want: FieldSet = ["metadata.labels.x", "spec.a", "spec.b", "spec.c.d"]
            .iter()
            .map(|s| p(s))
            .collect();
        assert_eq!(got, want);
        assert_eq!(leaf_paths(&o, Scope::Status), [p("status.s")].into());
        assert_eq!(from_fields_v1(&to_fields_v1(&want)), want);
    }

    #[test]
    fn apply_removes_fields_no_longer_sent_but_keeps_others() {
        let live = json!({"metadata": {"name": "a"}});
        let one = apply(&live, &json!({"spec": {"a": 1, "b": 2}}), &w("m1"), false).unwrap();
        let mut two = one.clone();
        two["spec"]["c"] = json!(3);
        record_update(Some(&one), &mut two, &w("m2"));
        let three = apply(&two, &json!({"spec": {"a": 1}}), &w("m1"), false).unwrap();
        assert_eq!(three["spec"], json!({"a": 1, "c": 3}));
        let conflict = apply(&three, &json!({"spec": {"c": 4}}), &w("m1"), false).unwrap_err();
        assert_eq!(conflict[0].manager, "m2");
        assert_eq!(conflict[0].field, ".spec.c");
        let forced = apply(&three, &json!({"spec": {"c": 4}}), &w("m1"), true).unwrap();
        assert_eq!(forced["spec"], json!({"c": 4}));
        let managers: Vec<_> = read_entries(&forced)
            .into_iter()
            .map(|e| e.manager)
            .collect();
        assert_eq!(managers, ["m1"]);
    }

    #[test]
    fn remove_path_prunes_empty_maps() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": {"y": 1}}});
        remove_path(&mut v, &p("metadata.labels.a"));
        remove_path(&mut v, &p("spec.x.y"));
        assert_eq!(v, json!({"metadata": {}, "spec": {}}));
    }
}
