//! Smaller caches. The operator reads most of what it caches only to compare it with what it
//! would apply ([`super::apply::needs_apply`]). Deserialized into k8s-openapi structs (every
//! optional field inline), a StatefulSet's pod spec takes ~20 KB of memory for ~3 KB of JSON; at
//! 1,000 instances the caches were most of the operator's memory (BENCHMARKS.md). So, as a watch
//! event enters the cache, the parts read only for comparison are moved into a cache-only
//! annotation as compact JSON, and put back into the JSON form before a comparison.
//!
//! The annotation never reaches the API server: it exists only in the operator's cached copies
//! (the operator applies objects it builds, never cached ones).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Cache-only annotation: `{"<JSON pointer>": <value>, ...}` of the parts moved out.
pub const CACHED_JSON: &str = "secureqdrant.dev/cached-json";

/// What to move out of a cached object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compact {
    /// Nothing (the operator reads the object's fields, e.g. a Secret's data).
    Nothing,
    /// These JSON pointers (e.g. a StatefulSet's pod spec; its replicas, claim templates,
    /// template annotations and status stay readable).
    Paths(&'static [&'static str]),
}

/// Moves the parts `how` names into [`CACHED_JSON`]. An object that cannot be converted is
/// left as it is (it is then only bigger).
pub fn compact<K: Serialize + DeserializeOwned>(obj: &mut K, how: Compact) {
    if how == Compact::Nothing {
        return;
    }
    let Ok(mut value) = serde_json::to_value(&*obj) else {
        return;
    };
    let mut moved = Map::new();
    match how {
        Compact::Nothing => {}
        Compact::Paths(paths) => {
            for path in paths {
                if let Some((parent, last)) = path.rsplit_once('/')
                    && let Some(Value::Object(p)) = value.pointer_mut(parent)
                    && let Some(v) = p.remove(last)
                {
                    moved.insert((*path).to_owned(), v);
                }
            }
        }
    }
    if moved.is_empty() {
        return;
    }
    let Ok(text) = serde_json::to_string(&moved) else {
        return;
    };
    let annotations = &mut value["metadata"]["annotations"];
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations[CACHED_JSON] = Value::String(text);
    if let Ok(small) = serde_json::from_value(value) {
        *obj = small;
    }
}

/// Puts the moved parts back into the JSON form of a cached object (no-op for an object that
/// was not compacted).
pub fn restore(value: &mut Value) {
    let Some(text) = value
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove(CACHED_JSON))
    else {
        return;
    };
    // The annotation map was added for it when the object had none.
    if value
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
        && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("annotations");
    }
    let Some(Ok(Value::Object(moved))) = text.as_str().map(serde_json::from_str::<Value>) else {
        return;
    };
    for (path, v) in moved {
        if let Some((parent, last)) = path.rsplit_once('/') {
            let target = if parent.is_empty() {
                Some(&mut *value)
            } else {
                value.pointer_mut(parent)
            };
            if let Some(Value::Object(p)) = target {
                p.insert(last.to_owned(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;

    fn sts() -> StatefulSet {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "v", "namespace": "ns", "annotations": {"a": "b"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "q"}},
                "serviceName": "v-headless",
                "template": {
                    "metadata": {"annotations": {"secureqdrant.dev/tls-fingerprint": "f"}},
                    "spec": {"containers": [{"name": "qdrant", "image": "q:1",
                                             "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                             "volumes": [{"name": "s", "emptyDir": {}}]}
                },
                "volumeClaimTemplates": [{"metadata": {"name": "storage"}}]
            },
            "status": {"replicas": 3, "readyReplicas": 2}
        }))
        .unwrap()
    }

    #[test]
    fn a_statefulset_keeps_what_is_read_and_compares_as_before() {
        let full = sts();
        let mut cached = full.clone();
        compact(&mut cached, Compact::Paths(&["/spec/template/spec"]));
        let spec = cached.spec.as_ref().unwrap();
        assert!(spec.template.spec.is_none(), "the pod spec moved out");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.volume_claim_templates.as_ref().unwrap().len(), 1);
        assert_eq!(
            spec.template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()["secureqdrant.dev/tls-fingerprint"],
            "f"
        );
        assert_eq!(cached.status, full.status);
        let mut value = serde_json::to_value(&cached).unwrap();
        restore(&mut value);
        assert_eq!(value, serde_json::to_value(&full).unwrap());
    }

    #[test]
    fn nothing_to_move_adds_nothing() {
        let mut svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "v"}
        }))
        .unwrap();
        let before = svc.clone();
        compact(&mut svc, Compact::Paths(&["/spec/template/spec"]));
        assert_eq!(svc, before);
        compact(&mut svc, Compact::Nothing);
        assert_eq!(svc, before);
        let mut value = json!({"metadata": {"name": "v"}});
        restore(&mut value);
        assert_eq!(value, json!({"metadata": {"name": "v"}}));
    }
}
