//! The kinds the server serves: a fixed table of built-in kinds, plus the kinds of every
//! CustomResourceDefinition created through the API.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Identifies a stored collection: API group ("" for core) and plural resource name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_owned(),
            resource: resource.to_owned(),
        }
    }

    /// `resource` or `resource.group`, as kubectl and RBAC spell it.
    pub fn display(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// One kind of object the server serves.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    /// Served versions; the first is the preferred (and storage) version.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource.
    pub status: bool,
    /// Whether `metadata.generation` is kept (custom resources, workloads, policies; not
    /// Secrets, ConfigMaps, Services, ...).
    pub generation: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// CRD `additionalPrinterColumns` per version (used for kubectl tables).
    pub printer_columns: BTreeMap<String, Vec<Value>>,
    /// CRD `openAPIV3Schema` per version (used for defaulting only).
    pub schemas: BTreeMap<String, Value>,
    /// Name of the CRD that defines this kind, if any.
    pub crd: Option<String>,
}

impl ResourceType {
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn preferred_version(&self) -> &str {
        &self.versions[0]
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    fn builtin(
        (group, version): (&str, &str),
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
        short_names: &[&str],
        categories: &[&str],
    ) -> Self {
        ResourceType {
            group: group.to_owned(),
            versions: vec![version.to_owned()],
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            namespaced,
            status,
            generation: matches!(
                plural,
                "statefulsets"
                    | "deployments"
                    | "networkpolicies"
                    | "poddisruptionbudgets"
                    | "customresourcedefinitions"
            ),
            short_names: short_names.iter().map(|s| (*s).to_owned()).collect(),
            categories: categories.iter().map(|s| (*s).to_owned()).collect(),
            printer_columns: BTreeMap::new(),
            schemas: BTreeMap::new(),
            crd: None,
        }
    }

    /// The resource types a CRD object defines (one per CRD; all served versions).
    pub fn from_crd(crd: &Value) -> Result<Self, String> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or("CRD without metadata.name")?;
        let spec = crd.get("spec").ok_or("CRD without spec")?;
        let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let group = s("/group").ok_or("CRD without spec.group")?;
        let plural = s("/names/plural").ok_or("CRD without spec.names.plural")?;
        let kind = s("/names/kind").ok_or("CRD without spec.names.kind")?;
        if name != format!("{plural}.{group}") {
            return Err(format!(
                "metadata.name must be spec.names.plural+\".\"+spec.group ({plural}.{group})"
            ));
        }
        let singular = s("/names/singular").unwrap_or_else(|| kind.to_lowercase());
        let strings = |p: &str| -> Vec<String> {
            spec.pointer(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let versions_v = spec
            .get("versions")
            .and_then(Value::as_array)
            .ok_or("CRD without spec.versions")?;
        let mut versions = Vec::new();
        let mut status = false;
        let mut printer_columns = BTreeMap::new();
        let mut schemas = BTreeMap::new();
        let mut storage = None;
        for v in versions_v {
            let Some(vname) = v.get("name").and_then(Value::as_str) else {
                continue;
            };
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            if v.get("storage").and_then(Value::as_bool) == Some(true) {
                storage = Some(vname.to_owned());
            }
            versions.push(vname.to_owned());
            if v.pointer("/subresources/status").is_some() {
                status = true;
            }
            if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
                printer_columns.insert(vname.to_owned(), cols.clone());
            }
            if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
                schemas.insert(vname.to_owned(), schema.clone());
            }
        }
        if versions.is_empty() {
            return Err("CRD serves no version".into());
        }
        if let Some(storage) = storage {
            versions.retain(|v| *v != storage);
            versions.insert(0, storage);
        }
        Ok(ResourceType {
            group,
            versions,
            plural,
            singular,
            kind,
            namespaced: s("/scope").as_deref() != Some("Cluster"),
            status,
            generation: true,
            short_names: strings("/names/shortNames"),
            categories: strings("/names/categories"),
            printer_columns,
            schemas,
            crd: Some(name.to_owned()),
        })
    }

    /// The discovery entries (`APIResource`) of this kind: the kind and its status subresource.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let verbs = [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

/// Every kind served, built-in first, then the CRD-defined ones.
#[derive(Clone, Debug)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let b = ResourceType::builtin;
        Registry {
            types: vec![
                b(
                    ("", "v1"),
                    "namespaces",
                    "Namespace",
                    false,
                    true,
                    &["ns"],
                    &[],
                ),
                b(("", "v1"), "secrets", "Secret", true, false, &[], &[]),
                b(
                    ("", "v1"),
                    "configmaps",
                    "ConfigMap",
                    true,
                    false,
                    &["cm"],
                    &[],
                ),
                b(
                    ("", "v1"),
                    "services",
                    "Service",
                    true,
                    true,
                    &["svc"],
                    &["all"],
                ),
                b(
                    ("", "v1"),
                    "serviceaccounts",
                    "ServiceAccount",
                    true,
                    false,
                    &["sa"],
                    &[],
                ),
                b(("", "v1"), "events", "Event", true, false, &["ev"], &[]),
                b(("", "v1"), "pods", "Pod", true, true, &["po"], &["all"]),
                b(
                    ("", "v1"),
                    "persistentvolumeclaims",
                    "PersistentVolumeClaim",
                    true,
                    true,
                    &["pvc"],
                    &[],
                ),
                b(
                    ("", "v1"),
                    "endpoints",
                    "Endpoints",
                    true,
                    false,
                    &["ep"],
                    &[],
                ),
                b(
                    ("apps", "v1"),
                    "statefulsets",
                    "StatefulSet",
                    true,
                    true,
                    &["sts"],
                    &["all"],
                ),
                b(
                    ("apps", "v1"),
                    "deployments",
                    "Deployment",
                    true,
                    true,
                    &["deploy"],
                    &["all"],
                ),
                b(
                    ("networking.k8s.io", "v1"),
                    "networkpolicies",
                    "NetworkPolicy",
                    true,
                    false,
                    &["netpol"],
                    &[],
                ),
                b(
                    ("policy", "v1"),
                    "poddisruptionbudgets",
                    "PodDisruptionBudget",
                    true,
                    true,
                    &["pdb"],
                    &[],
                ),
                b(
                    ("events.k8s.io", "v1"),
                    "events",
                    "Event",
                    true,
                    false,
                    &["ev"],
                    &[],
                ),
                b(
                    ("coordination.k8s.io", "v1"),
                    "leases",
                    "Lease",
                    true,
                    false,
                    &[],
                    &[],
                ),
                b(
                    ("apiextensions.k8s.io", "v1"),
                    "customresourcedefinitions",
                    "CustomResourceDefinition",
                    false,
                    true,
                    &["crd", "crds"],
                    &[],
                ),
            ],
        }
    }
}

impl Registry {
    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    /// The kind served at `/apis/<group>/<version>/<plural>`.
    pub fn by_path(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.serves(version))
    }

    pub fn by_group_resource(&self, gr: &GroupResource) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == gr.group && t.plural == gr.resource)
    }

    /// The kind an object's `apiVersion` and `kind` name. `kind` may also be the plural, the
    /// singular or a short name (case-insensitive), for the test helpers.
    pub fn by_api_version(&self, api_version: &str, kind: &str) -> Option<(&ResourceType, String)> {
        let (group, version) = split_api_version(api_version);
        let k = kind.to_lowercase();
        self.types
            .iter()
            .filter(|t| t.group == group && t.serves(version))
            .find(|t| {
                t.kind.to_lowercase() == k
                    || t.plural == k
                    || t.singular == k
                    || t.short_names.contains(&k)
            })
            .map(|t| (t, version.to_owned()))
    }

    /// Adds or replaces the kind a CRD defines. Errors when it would shadow a built-in kind.
    pub fn register_crd(&mut self, rt: ResourceType) -> Result<(), String> {
        let crd = rt.crd.clone();
        if let Some(existing) = self
            .types
            .iter()
            .find(|t| t.group == rt.group && t.plural == rt.plural)
            && existing.crd != crd
        {
            return Err(format!(
                "{}.{} is already served by this server",
                rt.plural, rt.group
            ));
        }
        self.types.retain(|t| t.crd.is_none() || t.crd != crd);
        self.types.push(rt);
        Ok(())
    }

    /// Removes the kind a CRD defined; returns it.
    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<ResourceType> {
        let idx = self
            .types
            .iter()
            .position(|t| t.crd.as_deref() == Some(crd_name))?;
        Some(self.types.remove(idx))
    }

    /// API groups other than core, each with its versions (preferred first), in first-seen order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            if t.group.is_empty() {
                continue;
            }
            let entry = match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some(e) => e,
                None => {
                    out.push((t.group.clone(), Vec::new()));
                    out.last_mut().expect("just pushed")
                }
            };
            for v in &t.versions {
                if !entry.1.contains(v) {
                    entry.1.push(v.clone());
                }
            }
        }
        out
    }
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}
