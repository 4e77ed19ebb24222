//! `spec.config`: the allow-list of Qdrant tuning keys.

use std::collections::BTreeMap;

use serde_json::Value;

use super::problems::{Invalid, invalid};
use crate::crd::{
    ALLOWED_USER_CONFIG, FORBIDDEN_USER_CONFIG, MAX_CONFIG_STRING_LEN, has_config_type,
};

/// Checks `spec.config` against [`ALLOWED_USER_CONFIG`] and [`FORBIDDEN_USER_CONFIG`].
pub(super) fn check_user_config(config: &BTreeMap<String, Value>, problems: &mut Vec<Invalid>) {
    let root = Value::Object(config.clone().into_iter().collect());
    walk("", &root, problems);
}

/// What a key of `spec.config` is.
enum Key {
    /// Refused, for this reason.
    Refused(String),
    /// An allowed leaf with a value of its type.
    Leaf,
    /// A section with allowed keys below it: its keys are checked in turn.
    Section,
}

/// Checks the keys of the section at `path` (`""`: the top level), and the sections below.
fn walk(path: &str, value: &Value, problems: &mut Vec<Invalid>) {
    let Value::Object(map) = value else { return };
    for (k, v) in map {
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match key(path, k, &child, v) {
            Key::Refused(message) => {
                problems.push(invalid(format!("spec.config.{child}"), message))
            }
            Key::Leaf => {}
            Key::Section => walk(&child, v, problems),
        }
    }
}

/// Decides key `k` (at path `child`) of the section at `path`, with value `v`.
fn key(path: &str, k: &str, child: &str, v: &Value) -> Key {
    if k.contains('.') || k.chars().any(|c| c.is_ascii_uppercase()) || k.is_empty() {
        return Key::Refused(
            "config keys must be lowercase and nested ({service: {x: 1}}, not 'service.x')"
                .to_owned(),
        );
    }
    if let Some((owned, _)) = FORBIDDEN_USER_CONFIG
        .iter()
        .find(|(p, _)| *p == child || child.starts_with(&format!("{p}.")))
    {
        return Key::Refused(format!(
            "`{owned}` is not allowed: the operator manages it or it reaches outside \
             the pod (`kubectl explain secureqdrant.spec.config.{owned}` says why and \
             what to use instead)"
        ));
    }
    if let Some((_, ty)) = ALLOWED_USER_CONFIG.iter().find(|(p, _)| *p == child) {
        return if !has_config_type(v, ty) {
            Key::Refused(format!("must be of Qdrant's type {ty} (`?`: or null)"))
        } else if v
            .as_str()
            .is_some_and(|s| s.chars().count() > MAX_CONFIG_STRING_LEN)
        {
            Key::Refused(format!("may be at most {MAX_CONFIG_STRING_LEN} characters"))
        } else {
            Key::Leaf
        };
    }
    let section = format!("{child}.");
    let mut below: Vec<&str> = ALLOWED_USER_CONFIG
        .iter()
        .filter_map(|(p, _)| p.strip_prefix(&section))
        .collect();
    if below.is_empty() {
        return Key::Refused(not_allowed(path, child));
    }
    if !v.is_object() {
        below.truncate(8);
        return Key::Refused(format!(
            "`{child}` is a section: set keys under it ({}, ...)",
            below.join(", ")
        ));
    }
    Key::Section
}

/// Why `child`, a key of the section at `path` with no allowed key at or below it, is refused:
/// names the keys allowed beside it.
fn not_allowed(path: &str, child: &str) -> String {
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
    format!(
        "`{child}` is not an allowed tuning key: spec.config accepts only the \
         keys listed in its description ({place}: {})",
        siblings.join(", ")
    )
}
