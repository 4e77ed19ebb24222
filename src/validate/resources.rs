//! Compute resources: the defaults and the checks of `spec.resources`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::problems::{Invalid, invalid};
use super::quantity::parse_quantity;

/// Requests and limits when the user gives none: enough for a small collection, and bounded.
pub fn resources_or_default(given: Option<&ResourceRequirements>) -> ResourceRequirements {
    match given {
        Some(r) if r.requests.is_some() || r.limits.is_some() => r.clone(),
        _ => ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("500m".to_owned())),
                ("memory".to_owned(), Quantity("1Gi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("2".to_owned())),
                ("memory".to_owned(), Quantity("2Gi".to_owned())),
            ])),
            ..ResourceRequirements::default()
        },
    }
}

pub(super) fn check_resources(r: &ResourceRequirements, problems: &mut Vec<Invalid>) {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (res, q) in map.iter().flatten() {
            if parse_quantity(&q.0).is_none() {
                problems.push(invalid(
                    format!("spec.resources.{kind}.{res}"),
                    format!("{:?} is not a quantity", q.0),
                ));
            }
        }
    }
    if let (Some(req), Some(lim)) = (&r.requests, &r.limits) {
        for (res, want) in req {
            if let (Some(want), Some(cap)) = (
                parse_quantity(&want.0),
                lim.get(res).and_then(|q| parse_quantity(&q.0)),
            ) && want > cap
            {
                problems.push(invalid(
                    format!("spec.resources.requests.{res}"),
                    "may not exceed the limit",
                ));
            }
        }
    }
}
