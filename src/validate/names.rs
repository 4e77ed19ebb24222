//! Rules on the instance's name and on the Secret names its spec references.

use super::problems::{Invalid, invalid};
use crate::crd::{SecureQdrantSpec, instance_secret_names};

/// Why `name` may not name an instance: its CA's name constraints permit the single-label
/// Service names `<name>` and `<name>-headless`, and a dNSName constraint `x` permits every name
/// under `x` too, so a name equal to `svc` or to a label of the cluster domain would let the
/// CA's key sign `kubernetes.default.svc` or `*.svc.cluster.local`.
pub fn name_covers_cluster_names(name: &str, cluster_domain: &str) -> Option<String> {
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    let headless = format!("{name}-headless");
    let taken = std::iter::once("svc").chain(domain.split('.').filter(|l| !l.is_empty()));
    for label in taken {
        if let Some(service) = [name, headless.as_str()].into_iter().find(|s| *s == label) {
            return Some(format!(
                "may not be {name:?}: the instance's CA may sign for the Service name \
                 {service:?} and every name under it, and {label:?} is a label of every \
                 in-cluster Service name (svc.{domain}); choose another name"
            ));
        }
    }
    None
}

/// Refuses a referenced Secret (API key, CA, certificate, image pull) whose name is one of
/// the instance's own Secret names, which the operator writes itself.
pub(super) fn check_secret_refs(spec: &SecureQdrantSpec, name: &str, problems: &mut Vec<Invalid>) {
    let own = instance_secret_names(name);
    let mut refs: Vec<(String, &str)> = Vec::new();
    if let Some(r) = &spec.auth.api_key_secret_ref {
        refs.push(("spec.auth.apiKeySecretRef.name".to_owned(), &r.name));
    }
    if let Some(r) = &spec.tls.ca_secret_ref {
        refs.push(("spec.tls.caSecretRef.name".to_owned(), &r.name));
    }
    if let Some(r) = &spec.tls.certificate_secret_ref {
        refs.push(("spec.tls.certificateSecretRef.name".to_owned(), &r.name));
    }
    for (i, r) in spec.image_pull_secrets.iter().enumerate() {
        refs.push((format!("spec.imagePullSecrets[{i}].name"), &r.name));
    }
    for (field, secret) in refs {
        if own.iter().any(|o| o == secret) {
            problems.push(invalid(
                field,
                format!(
                    "{secret:?} is a name the operator uses for this instance's own Secrets \
                     ({}): rename your Secret",
                    own.join(", ")
                ),
            ));
        }
    }
}

pub(super) fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}
