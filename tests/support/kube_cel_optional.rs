//! Where kube-cel differs from the apiserver for a rule with `optionalOldSelf: true` (the CRDs'
//! create-only rules, `oldSelf.hasValue() || …`): the apiserver binds `oldSelf` as a CEL
//! optional (none on create, of(old) on update); kube-cel binds it as null on create and as the
//! old value itself on update, so `oldSelf.hasValue()` fails to evaluate there. The test layers
//! that stand kube-cel in for the apiserver rewrite `oldSelf.hasValue()` to `oldSelf != null`,
//! which means the same under kube-cel's binding.

use serde_json::Value;

/// The optional-oldSelf test as kube-cel can evaluate it.
pub const APISERVER: &str = "oldSelf.hasValue()";
pub const KUBE_CEL: &str = "oldSelf != null";

/// `schema` with every `optionalOldSelf` rule rewritten for kube-cel (see the module).
pub fn kube_cel_optional_old_self(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "x-kubernetes-validations" {
                        let mut rules = v.clone();
                        for rule in rules.as_array_mut().into_iter().flatten() {
                            if rule["optionalOldSelf"] != Value::Bool(true) {
                                continue;
                            }
                            if let Some(Value::String(text)) = rule.get_mut("rule") {
                                *text = text.replace(APISERVER, KUBE_CEL);
                            }
                        }
                        rules
                    } else {
                        kube_cel_optional_old_self(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(kube_cel_optional_old_self).collect()),
        other => other.clone(),
    }
}
