//! Structural-schema defaulting of custom resources: a missing property whose schema has a
//! `default` gets it, recursively. No pruning, no validation.

use serde_json::Value;

pub fn apply(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    if !map.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply(sub, child);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                let known = schema.get("properties").and_then(Value::as_object);
                for (k, child) in map.iter_mut() {
                    if !known.is_some_and(|p| p.contains_key(k)) {
                        apply(extra, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn fills_nested_defaults() {
        let schema = json!({"properties": {"spec": {"properties": {
            "a": {"default": 1},
            "b": {"default": {"x": true}, "properties": {"x": {}, "y": {"default": "z"}}},
            "list": {"items": {"properties": {"p": {"default": 80}}}}
        }}}});
        let mut v = json!({"spec": {"list": [{}, {"p": 1}]}});
        super::apply(&schema, &mut v);
        assert_eq!(
            v,
            json!({"spec": {"a": 1, "b": {"x": true, "y": "z"}, "list": [{"p": 80}, {"p": 1}]}})
        );
    }
}
