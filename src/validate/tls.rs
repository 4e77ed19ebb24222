//! `spec.tls`: the certificate settings and the extra names a certificate may carry.

use std::time::Duration;

use super::instance::{TlsSettings, TlsSource};
use super::problems::{Invalid, invalid};
use super::quantity::duration;
use crate::crd::TlsSpec;
use crate::settings::Settings;

pub(super) fn check_tls(
    tls: &TlsSpec,
    name: &str,
    namespace: &str,
    settings: &Settings,
    problems: &mut Vec<Invalid>,
) -> Option<TlsSettings> {
    let before = problems.len();
    if !tls.enabled {
        if tls.client_certificates
            || tls.ca_secret_ref.is_some()
            || tls.certificate_secret_ref.is_some()
        {
            problems.push(invalid(
                "spec.tls.enabled",
                "clientCertificates, caSecretRef and certificateSecretRef need TLS enabled",
            ));
        }
        return None;
    }
    let lifetime = duration(
        "spec.tls.certificateLifetime",
        &tls.certificate_lifetime,
        problems,
    );
    let ca_lifetime = duration("spec.tls.caLifetime", &tls.ca_lifetime, problems);
    let renew_before = match &tls.renew_before {
        Some(r) => duration("spec.tls.renewBefore", r, problems),
        None => lifetime.map(crate::tls::default_renew_before),
    };
    if let Some(l) = lifetime
        && l < Duration::from_secs(3600)
    {
        problems.push(invalid(
            "spec.tls.certificateLifetime",
            "must be at least 1h",
        ));
    }
    if let (Some(l), Some(ca)) = (lifetime, ca_lifetime)
        && ca <= l
    {
        problems.push(invalid(
            "spec.tls.caLifetime",
            "must be longer than spec.tls.certificateLifetime",
        ));
    }
    if let (Some(l), Some(r), Some(_)) = (lifetime, renew_before, &tls.renew_before)
        && (r >= l || r < Duration::from_secs(300))
    {
        problems.push(invalid(
            "spec.tls.renewBefore",
            "must be at least 5m and shorter than spec.tls.certificateLifetime",
        ));
    }
    let source = source(tls, problems);
    check_extra_dns_names(tls, name, namespace, settings, problems);
    if problems.len() > before {
        return None;
    }
    Some(TlsSettings {
        certificate_lifetime: lifetime?,
        renew_before: renew_before?,
        ca_lifetime: ca_lifetime?,
        client_certificates: tls.client_certificates,
        source,
        extra_dns_names: tls.extra_dns_names.clone(),
    })
}

/// Where the certificates come from: `caSecretRef`, `certificateSecretRef` (not both), or the
/// operator's own CA.
fn source(tls: &TlsSpec, problems: &mut Vec<Invalid>) -> TlsSource {
    match (&tls.ca_secret_ref, &tls.certificate_secret_ref) {
        (Some(_), Some(_)) => {
            problems.push(invalid(
                "spec.tls",
                "set caSecretRef or certificateSecretRef, not both",
            ));
            TlsSource::OperatorCa
        }
        (Some(ca), None) => TlsSource::UserCa(ca.name.clone()),
        (None, Some(cert)) => TlsSource::UserCertificate(cert.name.clone()),
        (None, None) => TlsSource::OperatorCa,
    }
}

/// `spec.tls.extraDnsNames`: lowercase DNS names the instance may carry in its certificate (see
/// [`check_extra_dns_name`]).
fn check_extra_dns_names(
    tls: &TlsSpec,
    instance: &str,
    namespace: &str,
    settings: &Settings,
    problems: &mut Vec<Invalid>,
) {
    for (i, name) in tls.extra_dns_names.iter().enumerate() {
        let bare = name.strip_prefix("*.").unwrap_or(name);
        let ok = !bare.is_empty()
            && name.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            problems.push(invalid(
                format!("spec.tls.extraDnsNames[{i}]"),
                format!("{name:?} is not a lowercase DNS name"),
            ));
        } else if let Err(why) = check_extra_dns_name(name, instance, namespace, settings) {
            problems.push(invalid(format!("spec.tls.extraDnsNames[{i}]"), why));
        }
    }
}

/// Whether `name` (a well-formed DNS name, maybe `*.`-prefixed) may go into the serving
/// certificate of instance `instance` in `namespace`, and so into its CA's name constraints:
/// - the instance's own Service names (always in the certificate anyway) are accepted;
/// - any other name under `.svc`, `svc.<cluster domain>` or the cluster domain is refused: it
///   is another Service (another instance, `kubernetes.default.svc`), and a certificate for it
///   would let this instance's pods impersonate that Service to its clients;
/// - any other name must lie within a suffix the administrator allows
///   ([`Settings::allowed_dns_suffixes`]; none by default): a name outside the cluster belongs
///   to someone, and only the administrator knows which domains this cluster's tenants own;
/// - a wildcard is only a leftmost `*.` followed by a name within an allowed suffix
///   (`*.vectors.example.com`, or `*.example.com` itself, with `example.com` allowed): it then
///   covers names of that subtree only, which the administrator allowed as a whole; never an
///   in-cluster wildcard (`*.search.svc` would cover every Service of the namespace).
pub fn check_extra_dns_name(
    name: &str,
    instance: &str,
    namespace: &str,
    settings: &Settings,
) -> Result<(), String> {
    let domain = settings.cluster_domain.trim_end_matches('.');
    let own = crate::tls::serving_dns_names(instance, namespace, domain, &[]);
    if own.iter().any(|n| n == name) {
        return Ok(());
    }
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let under = |suffix: &str| bare == suffix || bare.ends_with(&format!(".{suffix}"));
    if under("svc") || under(domain) {
        return Err(format!(
            "{name:?} is an in-cluster name that is not one of this instance's own Service \
             names (those are always in the certificate): it names another Service, which \
             this instance may not impersonate"
        ));
    }
    if !settings.allowed_dns_suffixes.iter().any(|s| under(s)) {
        let allowed = if settings.allowed_dns_suffixes.is_empty() {
            "the operator allows no extra names (an administrator sets them with \
             --allowed-dns-suffixes, chart value policy.allowedDnsSuffixes)"
                .to_owned()
        } else {
            format!(
                "the operator allows names only under {}",
                settings.allowed_dns_suffixes.join(", ")
            )
        };
        return Err(format!(
            "{name:?} is not within an allowed DNS suffix: {allowed}"
        ));
    }
    Ok(())
}
