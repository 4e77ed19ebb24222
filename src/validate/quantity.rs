//! Quantities and durations as the spec writes them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::problems::{Invalid, invalid};

pub(super) fn duration(field: &str, value: &str, problems: &mut Vec<Invalid>) -> Option<Duration> {
    match value.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() && !Duration::from(d).is_zero() => Some(d.into()),
        Ok(_) => {
            problems.push(invalid(field, format!("must be positive, got {value:?}")));
            None
        }
        Err(_) => {
            problems.push(invalid(
                field,
                format!("{value:?} is not a duration (examples: 2160h, 90m)"),
            ));
            None
        }
    }
}

pub(super) fn positive_quantity(
    field: &str,
    value: &str,
    problems: &mut Vec<Invalid>,
) -> Option<Quantity> {
    match parse_quantity(value) {
        Some(v) if v > 0.0 => Some(Quantity(value.to_owned())),
        Some(_) => {
            problems.push(invalid(
                field,
                format!("must be greater than zero, got {value:?}"),
            ));
            None
        }
        None => {
            problems.push(invalid(
                field,
                format!("{value:?} is not a quantity (examples: 10Gi, 500Mi)"),
            ));
            None
        }
    }
}

/// Parses a Kubernetes quantity (`10Gi`, `500m`, `1.5`, `2e3`) to its value; None if malformed.
/// Only what validation needs: the sign and the order of magnitude of the value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suf, f)| s.strip_suffix(suf).map(|n| (n, *f)))
        .or_else(|| s.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((s, 1.0));
    let digits_ok = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'))
        && number
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-' || c == '.');
    if !digits_ok {
        return None;
    }
    let v: f64 = number.parse().ok()?;
    v.is_finite().then_some(v * factor)
}
