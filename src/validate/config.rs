//! `spec.config`: the allow-list of Qdrant tuning keys.

use std::collections::BTreeMap;

use serde_json::Value;

use super::problems::{Invalid, invalid};
use crate::crd::{ALLOWED_USER_CONFIG, FORBIDDEN_USER_CONFIG, has_config_type};

/// The CRD's maxLength of an allowed string key of `spec.config` (`log_level`).
const MAX_CONFIG_STRING_LEN: usize = 64;
pub(super) fn check_user_config(config: &BTreeMap<String, Value>, problems: &mut Vec<Invalid>) {
    fn walk(path: &str, value: &Value, problems: &mut Vec<Invalid>) {
        let Value::Object(map) = value else { return };
        for (k, v) in map {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            let field = format!("spec.config.{child}");
            if k.contains('.') || k.chars().any(|c| c.is_ascii_uppercase()) || k.is_empty() {
                problems.push(invalid(
                    field,
                    "config keys must be lowercase and nested ({service: {x: 1}}, not 'service.x')",
                ));
                continue;
            }
            if let Some((owned, _)) = FORBIDDEN_USER_CONFIG
                .iter()
                .find(|(p, _)| *p == child || child.starts_with(&format!("{p}.")))
            {
                problems.push(invalid(
                    field,
                    format!(
                        "`{owned}` is not allowed: the operator manages it or it reaches outside \
                         the pod (`kubectl explain secureqdrant.spec.config.{owned}` says why and \
                         what to use instead)"
                    ),
                ));
                continue;
            }
            if let Some((_, ty)) = ALLOWED_USER_CONFIG.iter().find(|(p, _)| *p == child) {
                if !has_config_type(v, ty) {
                    problems.push(invalid(
                        field,
                        format!("must be of Qdrant's type {ty} (`?`: or null)"),
                    ));
                } else if v
                    .as_str()
                    .is_some_and(|s| s.chars().count() > MAX_CONFIG_STRING_LEN)
                {
                    problems.push(invalid(
                        field,
                        format!("may be at most {MAX_CONFIG_STRING_LEN} characters"),
                    ));
                }
                continue;
            }
            let section = format!("{child}.");
            let mut below: Vec<&str> = ALLOWED_USER_CONFIG
                .iter()
                .filter_map(|(p, _)| p.strip_prefix(&section))
                .collect();
            if below.is_empty() {
                let prefix = if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                };
                let mut siblings: Vec<&str> = ALLOWED_USER_CONFIG
                    .iter()
                    .filter_map(|(p, _)| p.strip_prefix(&prefix))
                    .map(|rest| rest.split('.').next().unwrap_or(rest))
                    .collect();
                siblings.dedup();
                let place = if path.is_empty() {
                    "at the top".to_owned()
                } else {
                    format!("under `{path}`")
                };
                problems.push(invalid(
                    field,
                    format!(
                        "`{child}` is not an allowed tuning key: spec.config accepts only the \
                         keys listed in its description ({place}: {})",
                        siblings.join(", ")
                    ),
                ));
                continue;
            }
            if !v.is_object() {
                below.truncate(8);
                problems.push(invalid(
                    field,
                    format!(
                        "`{child}` is a section: set keys under it ({}, ...)",
                        below.join(", ")
                    ),
                ));
                continue;
            }
            walk(&child, v, problems);
        }
    }
    let root = Value::Object(config.clone().into_iter().collect());
    walk("", &root, problems);
}
