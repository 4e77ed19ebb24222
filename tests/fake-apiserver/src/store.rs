//! The object store: every object as JSON, keyed by (group/resource, namespace, name); one global
//! resourceVersion counter; a bounded history of changes for watch resumption; finalizers,
//! garbage collection, CRD registration and the StatefulSet PVC "controller".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::defaults;
use crate::error::ApiError;
use crate::faults::Rng;
use crate::fields::{self, Scope, Writer};
use crate::resources::{GroupResource, Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as watches see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub gr: GroupResource,
    pub namespace: String,
    pub kind: ChangeKind,
    pub object: Value,
    /// The object before a modification (to turn label-selector exits into DELETED).
    pub old: Option<Value>,
}

/// The kinds of non-apply patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    /// Treated exactly like a JSON merge patch (no patch strategies or merge keys).
    StrategicMerge,
    Json,
    Apply,
}

/// Who writes and how.
#[derive(Clone, Debug, Default)]
pub struct WriteCtx {
    /// Field manager (`fieldManager`, else the user agent's product name).
    pub manager: String,
    /// The apiVersion of the request (recorded in managedFields, echoed back).
    pub api_version: String,
    pub dry_run: bool,
    /// Writes to the `/status` subresource.
    pub status: bool,
    pub force: bool,
}

/// DELETE options.
#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    /// Background (default), Foreground or Orphan.
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

type Key = (String, String);

pub struct Store {
    pub rv: u64,
    pub registry: Registry,
    objects: HashMap<GroupResource, BTreeMap<Key, Value>>,
    uids: HashMap<String, (GroupResource, Key)>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Changes with resourceVersion <= this may be missing from the history (410 Gone).
    pub compacted: u64,
    pub tx: broadcast::Sender<Arc<Change>>,
    ids: Rng,
    pub gc: bool,
    pub statefulset_controller: bool,
    gc_pending: bool,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("just ensured")
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj)?.get(key)?.as_str()
}

fn has_finalizers(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything but metadata and status: what `metadata.generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

fn parse_body(body: &[u8], yaml: bool) -> Result<Value, ApiError> {
    let v: Value = if yaml {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    Ok(v)
}

impl Store {
    pub fn new(history_limit: usize, seed: u64) -> Self {
        let (tx, _) = broadcast::channel(history_limit.clamp(16, 65_536));
        let mut store = Store {
            rv: 0,
            registry: Registry::default(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            tx,
            ids: Rng::new(seed),
            gc: true,
            statefulset_controller: true,
            gc_pending: false,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            store.ensure_namespace(ns);
        }
        store
    }

    pub fn uid(&mut self) -> String {
        let a = self.ids.next_u64();
        let b = self.ids.next_u64();
        let x = ((a as u128) << 64) | b as u128;
        let x = (x & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let h = format!("{x:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.ids.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    // ----- reads -------------------------------------------------------------------------------

    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(gr)?.get(&(ns.to_owned(), name.to_owned()))
    }

    /// Objects of a kind, in one namespace (or all when `ns` is empty), by (namespace, name).
    pub fn list<'a>(
        &'a self,
        gr: &GroupResource,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(gr)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((n, _), _)| ns.is_empty() || n == ns)
            .map(|(_, v)| v)
    }

    /// Changes after `rv` still in the history, or `None` when some may be missing (410).
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted {
            return None;
        }
        Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    /// Forgets the watch history: every resourceVersion older than the current one becomes 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    // ----- commit ------------------------------------------------------------------------------

    fn commit(&mut self, gr: &GroupResource, key: Key, kind: ChangeKind, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let old = match kind {
            ChangeKind::Deleted => {
                let old = self.objects.get_mut(gr).and_then(|m| m.remove(&key));
                if let Some(uid) = old.as_ref().and_then(|o| meta_str(o, "uid")) {
                    self.uids.remove(uid);
                }
                self.gc_pending = true;
                old
            }
            _ => {
                // A dependent written with a missing owner is collected too (a real server's
                // garbage collector notices new dependents whose owners are gone).
                if owner_uids(&obj).iter().any(|u| !self.uids.contains_key(u)) {
                    self.gc_pending = true;
                }
                if let Some(uid) = meta_str(&obj, "uid") {
                    self.uids.insert(uid.to_owned(), (gr.clone(), key.clone()));
                }
                self.objects
                    .entry(gr.clone())
                    .or_default()
                    .insert(key.clone(), obj.clone())
            }
        };
        let change = Arc::new(Change {
            rv: self.rv,
            gr: gr.clone(),
            namespace: key.0.clone(),
            kind,
            object: obj.clone(),
            old: if kind == ChangeKind::Modified {
                old
            } else {
                None
            },
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
        let _ = self.tx.send(change);
        self.after_commit(gr, &key, kind, &obj);
        obj
    }

    fn after_commit(&mut self, gr: &GroupResource, key: &Key, kind: ChangeKind, obj: &Value) {
        match (gr.group.as_str(), gr.resource.as_str(), kind) {
            ("apiextensions.k8s.io", "customresourcedefinitions", ChangeKind::Deleted) => {
                if let Some(rt) = self.registry.unregister_crd(&key.1) {
                    let gone = rt.group_resource();
                    let keys: Vec<Key> = self
                        .objects
                        .get(&gone)
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    for k in keys {
                        if let Some(o) = self.get(&gone, &k.0, &k.1).cloned() {
                            self.commit(&gone, k, ChangeKind::Deleted, o);
                        }
                    }
                }
            }
            ("", "namespaces", ChangeKind::Deleted) => {
                let ns = key.1.clone();
                let victims: Vec<(GroupResource, String)> = self
                    .objects
                    .iter()
                    .flat_map(|(gr, m)| {
                        m.keys()
                            .filter(|(n, _)| *n == ns)
                            .map(|(_, name)| (gr.clone(), name.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for (gr, name) in victims {
                    let _ = self.delete_object(&gr, &ns, &name, &DeleteOpts::default());
                }
            }
            ("apps", "statefulsets", ChangeKind::Added | ChangeKind::Modified)
                if self.statefulset_controller =>
            {
                self.sync_statefulset_pvcs(obj);
            }
            _ => {}
        }
    }

    /// Creates the namespace object if it does not exist (namespaces are implicit here).
    pub fn ensure_namespace(&mut self, ns: &str) {
        let gr = GroupResource::new("", "namespaces");
        if ns.is_empty() || self.get(&gr, "", ns).is_some() {
            return;
        }
        let uid = self.uid();
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "uid": uid, "creationTimestamp": now(),
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        self.commit(&gr, (String::new(), ns.to_owned()), ChangeKind::Added, obj);
    }

    // ----- create ------------------------------------------------------------------------------

    fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "kind {kind} does not match the resource {} (kind {})",
                rt.plural, rt.kind
            )));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            let (g, v) = crate::resources::split_api_version(av);
            if g != rt.group || !rt.serves(v) {
                return Err(ApiError::bad_request(format!(
                    "apiVersion {av} does not match the resource {}",
                    rt.group_resource().display()
                )));
            }
        }
        Ok(())
    }

    fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
        if let Some(schema) = rt.schemas.get(rt.preferred_version()) {
            defaults::apply(schema, obj);
        }
    }

    /// What a real server's strategies do that clients rely on: a Secret's `stringData` is
    /// folded into `data` (base64).
    fn normalize(rt: &ResourceType, obj: &mut Value) {
        if rt.group.is_empty() && rt.plural == "secrets" {
            let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
            else {
                return;
            };
            if !obj.get("data").is_some_and(Value::is_object) {
                obj["data"] = json!({});
            }
            for (k, v) in sd {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
            }
        }
    }

    /// Validates a CRD being written and registers its kind; fills in its status.
    fn admit_crd(&mut self, obj: &mut Value) -> Result<(), ApiError> {
        let gr = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        let rt = ResourceType::from_crd(obj).map_err(|e| ApiError::invalid(&gr, &name, e))?;
        let accepted = obj
            .pointer("/spec/names")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let stored: Vec<String> = rt.versions.iter().take(1).cloned().collect();
        self.registry
            .register_crd(rt)
            .map_err(|e| ApiError::invalid(&gr, &name, e))?;
        let ts = now();
        obj["status"] = json!({
            "acceptedNames": accepted,
            "storedVersions": stored,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": ts},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": ts},
            ],
        });
        Ok(())
    }

    /// POST. `keep_status` is false for API requests (status is dropped on create for kinds with
    /// a status subresource) and true for the test helper `insert`.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        ctx: &WriteCtx,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        Self::check_type(rt, &obj)?;
        let gr = rt.group_resource();
        let m = meta_mut(&mut obj);
        let name = match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match m.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let prefix = prefix.to_owned();
                    format!("{prefix}{}", self.random_suffix())
                }
                _ => {
                    return Err(ApiError::invalid(
                        &gr,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        if name.contains('/') {
            return Err(ApiError::invalid(
                &gr,
                &name,
                "metadata.name may not contain '/'",
            ));
        }
        let ns = if rt.namespaced {
            let body_ns = meta_str(&obj, "namespace").unwrap_or_default();
            let ns = if ns.is_empty() { body_ns } else { ns };
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if ns.is_empty() {
                return Err(ApiError::bad_request("a namespace is required"));
            }
            ns.to_owned()
        } else {
            String::new()
        };
        let key = (ns.clone(), name.clone());
        if self.get(&gr, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&gr, &name));
        }
        let uid = self.uid();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if rt.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now()));
        if rt.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if rt.status && !keep_status {
            obj.as_object_mut().expect("object").remove("status");
        }
        obj["apiVersion"] = json!(rt.api_version(rt.preferred_version()));
        obj["kind"] = json!(rt.kind);
        Self::apply_defaults(rt, &mut obj);
        Self::normalize(rt, &mut obj);
        let ts = now();
        fields::record_update(
            None,
            &mut obj,
            &Writer {
                manager: &ctx.manager,
                api_version: &ctx.api_version,
                now: &ts,
                scope: Scope::Main {
                    has_status: rt.status,
                },
            },
        );
        self.finish_create(rt, key, obj, ctx)
    }

    fn finish_create(
        &mut self,
        rt: &ResourceType,
        key: Key,
        mut obj: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let gr = rt.group_resource();
        if ctx.dry_run {
            return Ok(obj);
        }
        if gr.resource == "customresourcedefinitions" && gr.group == "apiextensions.k8s.io" {
            self.admit_crd(&mut obj)?;
        }
        if rt.namespaced {
            self.ensure_namespace(&key.0);
        }
        let out = self.commit(&gr, key, ChangeKind::Added, obj);
        self.run_gc();
        Ok(out)
    }

    // ----- update ------------------------------------------------------------------------------

    /// Turns what a client asked for (`candidate`, a whole object) into the object to store:
    /// status/main separation, server-owned metadata kept, resourceVersion precondition,
    /// defaults, generation.
    fn prepare_update(
        &self,
        rt: &ResourceType,
        old: &Value,
        candidate: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let gr = rt.group_resource();
        let name = meta_str(old, "name").unwrap_or_default();
        if !candidate.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(n) = meta_str(&candidate, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta_str(&candidate, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::modified(&gr, name));
        }
        let mut new = if ctx.status {
            let mut n = old.clone();
            let m = n.as_object_mut().expect("stored objects are maps");
            match candidate.get("status") {
                Some(s) if !s.is_null() => {
                    m.insert("status".into(), s.clone());
                }
                _ => {
                    m.remove("status");
                }
            }
            n
        } else {
            let mut n = candidate;
            let m = n.as_object_mut().expect("checked above");
            if rt.status {
                match old.get("status") {
                    Some(s) => {
                        m.insert("status".into(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
            n
        };
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        let old_meta = meta(old).cloned().unwrap_or_default();
        let m = meta_mut(&mut new);
        for k in fields::SYSTEM_METADATA {
            match old_meta.get(*k) {
                Some(v) => {
                    m.insert((*k).to_owned(), v.clone());
                }
                None => {
                    m.remove(*k);
                }
            }
        }
        Self::apply_defaults(rt, &mut new);
        Self::normalize(rt, &mut new);
        if rt.generation && spec_part(&new) != spec_part(old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        Ok(new)
    }

    /// Stores an updated object (or nothing when it did not change).
    fn finish_update(
        &mut self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let gr = rt.group_resource();
        let ns = meta_str(old, "namespace").unwrap_or_default().to_owned();
        let name = meta_str(old, "name").unwrap_or_default().to_owned();
        if new == *old {
            return Ok(new);
        }
        if ctx.dry_run {
            return Ok(new);
        }
        if gr.resource == "customresourcedefinitions" && gr.group == "apiextensions.k8s.io" {
            self.admit_crd(&mut new)?;
        }
        let key = (ns, name);
        let being_deleted = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
        let out = if being_deleted && !has_finalizers(&new) {
            self.commit(&gr, key, ChangeKind::Deleted, new)
        } else {
            self.commit(&gr, key, ChangeKind::Modified, new)
        };
        self.run_gc();
        Ok(out)
    }

    fn writer<'a>(rt: &ResourceType, ctx: &'a WriteCtx, now: &'a str) -> Writer<'a> {
        Writer {
            manager: &ctx.manager,
            api_version: &ctx.api_version,
            now,
            scope: if ctx.status {
                Scope::Status
            } else {
                Scope::Main {
                    has_status: rt.status,
                }
            },
        }
    }

    /// PUT.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        candidate: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        Self::check_type(rt, &candidate)?;
        let gr = rt.group_resource();
        let old = self
            .get(&gr, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&gr, name))?;
        let mut new = self.prepare_update(rt, &old, candidate, ctx)?;
        let ts = now();
        fields::record_update(Some(&old), &mut new, &Self::writer(rt, ctx, &ts));
        self.finish_update(rt, &old, new, ctx)
    }

    /// PATCH (all four kinds). Returns the object and whether it was created (apply only).
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<(Value, bool), ApiError> {
        let gr = rt.group_resource();
        let ts = now();
        let old = self.get(&gr, ns, name).cloned();
        match kind {
            PatchKind::Apply => {
                let config = parse_body(body, true)?;
                Self::check_type(rt, &config)?;
                if config.get("apiVersion").is_none() || config.get("kind").is_none() {
                    return Err(ApiError::bad_request(
                        "apply patches must set apiVersion and kind",
                    ));
                }
                if let Some(n) = meta_str(&config, "name")
                    && n != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                if ctx.manager.is_empty() {
                    return Err(ApiError::invalid(
                        &gr,
                        name,
                        "metadata.managedFields.fieldManager: Required value: is required for apply patch",
                    ));
                }
                let writer = Self::writer(rt, ctx, &ts);
                let conflict = |c: Vec<fields::Conflict>| {
                    let causes: Vec<Value> = c
                        .iter()
                        .map(|c| {
                            json!({"type": "FieldManagerConflict", "field": c.field,
                                   "message": format!("conflict with \"{}\"", c.manager)})
                        })
                        .collect();
                    let list: Vec<String> = c
                        .iter()
                        .map(|c| format!("conflict with \"{}\": {}", c.manager, c.field))
                        .collect();
                    // A real server's apply conflicts say only this, no "Operation cannot...".
                    let mut e = ApiError::conflict(&gr, name, "");
                    e.message = format!(
                        "Apply failed with {} conflict{}: {}",
                        c.len(),
                        if c.len() == 1 { "" } else { "s" },
                        list.join("; ")
                    );
                    if let Some(d) = e.details.as_mut() {
                        d["causes"] = json!(causes);
                    }
                    e
                };
                match old {
                    None => {
                        if ctx.status {
                            return Err(ApiError::not_found(&gr, name));
                        }
                        let base = json!({"metadata": {"name": name, "namespace": ns}});
                        let merged =
                            fields::apply(&base, &config, &writer, ctx.force).map_err(conflict)?;
                        let mf = merged.pointer("/metadata/managedFields").cloned();
                        let mut created = self.create(
                            rt,
                            ns,
                            merged,
                            &WriteCtx {
                                manager: String::new(),
                                dry_run: true,
                                ..ctx.clone()
                            },
                            false,
                        )?;
                        if let Some(mf) = mf {
                            meta_mut(&mut created).insert("managedFields".into(), mf);
                        }
                        let key = (
                            meta_str(&created, "namespace")
                                .unwrap_or_default()
                                .to_owned(),
                            name.to_owned(),
                        );
                        Ok((self.finish_create(rt, key, created, ctx)?, true))
                    }
                    Some(old) => {
                        let merged =
                            fields::apply(&old, &config, &writer, ctx.force).map_err(conflict)?;
                        let entries = fields::read_entries(&merged);
                        let mut candidate = merged;
                        let want_rv = meta_str(&config, "resourceVersion").map(str::to_owned);
                        match want_rv {
                            Some(rv) => {
                                meta_mut(&mut candidate).insert("resourceVersion".into(), json!(rv))
                            }
                            None => meta_mut(&mut candidate).remove("resourceVersion"),
                        };
                        let mut new = self.prepare_update(rt, &old, candidate, ctx)?;
                        fields::write_entries(&mut new, &entries);
                        Ok((self.finish_update(rt, &old, new, ctx)?, false))
                    }
                }
            }
            PatchKind::Merge | PatchKind::StrategicMerge | PatchKind::Json => {
                let old = old.ok_or_else(|| ApiError::not_found(&gr, name))?;
                let mut candidate = old.clone();
                if kind == PatchKind::Json {
                    let ops: json_patch::Patch = serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut candidate, &ops)
                        .map_err(|e| ApiError::invalid(&gr, name, e.to_string()))?;
                } else {
                    let p = parse_body(body, false)?;
                    if !p.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    json_patch::merge(&mut candidate, &p);
                }
                let mut new = self.prepare_update(rt, &old, candidate, ctx)?;
                fields::record_update(Some(&old), &mut new, &Self::writer(rt, ctx, &ts));
                Ok((self.finish_update(rt, &old, new, ctx)?, false))
            }
        }
    }

    // ----- delete ------------------------------------------------------------------------------

    /// DELETE: objects with finalizers get a deletionTimestamp and stay until the finalizers are
    /// removed; others are removed at once and their dependents garbage-collected.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let gr = rt.group_resource();
        let obj = self
            .get(&gr, ns, name)
            .ok_or_else(|| ApiError::not_found(&gr, name))?;
        if let Some(uid) = &opts.precondition_uid
            && Some(uid.as_str()) != meta_str(obj, "uid")
        {
            return Err(ApiError::conflict(
                &gr,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(obj, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != meta_str(obj, "resourceVersion")
        {
            return Err(ApiError::modified(&gr, name));
        }
        if opts.dry_run {
            return Ok(obj.clone());
        }
        let out = self.delete_object(&gr, ns, name, opts);
        self.run_gc();
        out
    }

    fn dependents_of(&self, uid: &str) -> Vec<(GroupResource, String, String)> {
        self.objects
            .iter()
            .flat_map(|(gr, m)| {
                m.iter()
                    .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
                    .map(|((ns, name), _)| (gr.clone(), ns.clone(), name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn delete_object(
        &mut self,
        gr: &GroupResource,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let Some(obj) = self.get(gr, ns, name).cloned() else {
            return Err(ApiError::not_found(gr, name));
        };
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_owned();
        let key = (ns.to_owned(), name.to_owned());
        match opts.propagation.as_deref() {
            Some("Orphan") => {
                for (dgr, dns, dname) in self.dependents_of(&uid) {
                    if let Some(mut d) = self.get(&dgr, &dns, &dname).cloned() {
                        if let Some(refs) = meta_mut(&mut d)
                            .get_mut("ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(&uid));
                        }
                        self.commit(&dgr, (dns, dname), ChangeKind::Modified, d);
                    }
                }
            }
            Some("Foreground") if !has_finalizers(&obj) => {
                for (dgr, dns, dname) in self.dependents_of(&uid) {
                    let _ = self.delete_object(&dgr, &dns, &dname, opts);
                }
            }
            _ => {}
        }
        if has_finalizers(&obj) {
            if meta(&obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                return Ok(obj);
            }
            let mut o = obj;
            let g = meta(&o)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let m = meta_mut(&mut o);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if m.contains_key("generation") {
                m.insert("generation".into(), json!(g + 1));
            }
            return Ok(self.commit(gr, key, ChangeKind::Modified, o));
        }
        Ok(self.commit(gr, key, ChangeKind::Deleted, obj))
    }

    /// DELETE on a collection: deletes every matching object; returns them.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOpts,
    ) -> Result<Vec<Value>, ApiError> {
        let gr = rt.group_resource();
        let victims: Vec<(String, String)> = self
            .list(&gr, ns)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| {
                (
                    meta_str(o, "namespace").unwrap_or_default().to_owned(),
                    meta_str(o, "name").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (n, name) in victims {
            if opts.dry_run {
                out.extend(self.get(&gr, &n, &name).cloned());
            } else if let Ok(o) = self.delete_object(&gr, &n, &name, opts) {
                out.push(o);
            }
        }
        self.run_gc();
        Ok(out)
    }

    /// Garbage collection: an object none of whose owners (by uid) exist any more is deleted
    /// (finalizers respected); references to missing owners are dropped when others remain.
    pub fn run_gc(&mut self) {
        if !self.gc {
            self.gc_pending = false;
            return;
        }
        while std::mem::take(&mut self.gc_pending) {
            let mut orphans = Vec::new();
            let mut partial = Vec::new();
            for (gr, m) in &self.objects {
                for ((ns, name), o) in m {
                    let owners = owner_uids(o);
                    if owners.is_empty() {
                        continue;
                    }
                    let live = owners.iter().filter(|u| self.uids.contains_key(*u)).count();
                    if live == 0 {
                        let deleting = meta(o).is_some_and(|m| m.contains_key("deletionTimestamp"));
                        if !deleting {
                            orphans.push((gr.clone(), ns.clone(), name.clone()));
                        }
                    } else if live < owners.len() {
                        partial.push((gr.clone(), ns.clone(), name.clone()));
                    }
                }
            }
            for (gr, ns, name) in partial {
                if let Some(mut o) = self.get(&gr, &ns, &name).cloned() {
                    let uids = &self.uids;
                    if let Some(refs) = meta_mut(&mut o)
                        .get_mut("ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| {
                            r.get("uid")
                                .and_then(Value::as_str)
                                .is_some_and(|u| uids.contains_key(u))
                        });
                    }
                    self.commit(&gr, (ns, name), ChangeKind::Modified, o);
                }
            }
            for (gr, ns, name) in orphans {
                let _ = self.delete_object(&gr, &ns, &name, &DeleteOpts::default());
            }
        }
    }

    // ----- StatefulSet PVCs --------------------------------------------------------------------

    /// What the StatefulSet controller does for volumes, and nothing else (no pods): one PVC per
    /// volumeClaimTemplate and ordinal, owned by the StatefulSet when
    /// `persistentVolumeClaimRetentionPolicy.whenDeleted` is `Delete`; PVCs of ordinals scaled
    /// away are deleted at once when `whenScaled` is `Delete`.
    fn sync_statefulset_pvcs(&mut self, sts: &Value) {
        if meta(sts).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return;
        }
        let (Some(ns), Some(name), Some(uid)) = (
            meta_str(sts, "namespace").map(str::to_owned),
            meta_str(sts, "name").map(str::to_owned),
            meta_str(sts, "uid").map(str::to_owned),
        ) else {
            return;
        };
        let Some(templates) = sts
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .cloned()
        else {
            return;
        };
        let replicas = sts
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let policy = |k: &str| {
            sts.pointer(&format!("/spec/persistentVolumeClaimRetentionPolicy/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("Retain")
                == "Delete"
        };
        let (delete_with_sts, delete_on_scale) = (policy("whenDeleted"), policy("whenScaled"));
        let owner = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                           "uid": uid, "controller": true, "blockOwnerDeletion": true});
        let selector = sts
            .pointer("/spec/selector/matchLabels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let gr = GroupResource::new("", "persistentvolumeclaims");
        let ctx = WriteCtx {
            manager: "statefulset-controller".into(),
            api_version: "v1".into(),
            ..WriteCtx::default()
        };
        let Some(rt) = self.registry.by_group_resource(&gr).cloned() else {
            return;
        };
        for t in &templates {
            let Some(tname) = t.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let mut ordinal = 0;
            loop {
                let pvc_name = format!("{tname}-{name}-{ordinal}");
                let existing = self.get(&gr, &ns, &pvc_name).cloned();
                if ordinal >= replicas {
                    match existing {
                        Some(_) if delete_on_scale => {
                            let _ = self.delete_object(&gr, &ns, &pvc_name, &DeleteOpts::default());
                        }
                        Some(_) => {}
                        None => break,
                    }
                    ordinal += 1;
                    continue;
                }
                match existing {
                    None => {
                        let mut labels = t
                            .pointer("/metadata/labels")
                            .cloned()
                            .unwrap_or_else(|| json!({}));
                        json_patch::merge(&mut labels, &selector);
                        let mut pvc = json!({
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "metadata": {"name": pvc_name, "namespace": ns, "labels": labels},
                            "spec": t.get("spec").cloned().unwrap_or_else(|| json!({})),
                            "status": {"phase": "Pending"},
                        });
                        if let Some(a) = t.pointer("/metadata/annotations") {
                            pvc["metadata"]["annotations"] = a.clone();
                        }
                        if delete_with_sts {
                            pvc["metadata"]["ownerReferences"] = json!([owner]);
                        }
                        let _ = self.create(&rt, &ns, pvc, &ctx, true);
                    }
                    Some(pvc) => {
                        let refs = pvc
                            .pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        let owned = refs
                            .iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(&uid));
                        if owned != delete_with_sts {
                            let mut new_refs: Vec<Value> = refs
                                .into_iter()
                                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(&uid))
                                .collect();
                            if delete_with_sts {
                                new_refs.push(owner.clone());
                            }
                            let mut p = pvc.clone();
                            if new_refs.is_empty() {
                                meta_mut(&mut p).remove("ownerReferences");
                            } else {
                                meta_mut(&mut p).insert("ownerReferences".into(), json!(new_refs));
                            }
                            let _ = self.update(&rt, &ns, &pvc_name, p, &ctx);
                        }
                    }
                }
                ordinal += 1;
            }
        }
    }
}
