//! The serving certificate: one ECDSA P-256 certificate for REST, gRPC and both ends of p2p
//! mTLS, so it carries EKU serverAuth AND clientAuth, and SANs for every name clients and peers
//! dial.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};

use super::ca::CaMaterial;
use super::cert::bundle_pem;
use super::cert::{Certificate, PrivateKey, random_serial, secret_text};
use super::names::{CA_CRT, TLS_CRT, TLS_KEY, TlsError};
use super::time::{BACKDATE, add, positive, sub, to_offset, whole_second};

/// The DNS names of an instance's serving certificate, in a stable order:
/// - the client Service `<n>`: `<n>`, `<n>.<ns>`, `<n>.<ns>.svc`, `<n>.<ns>.svc.<domain>`;
/// - the headless Service `<n>-headless`, with the same four forms;
/// - every pod behind it: `*.<n>-headless.<ns>.svc` and `*.<n>-headless.<ns>.svc.<domain>`
///   (the p2p peer URIs are `https://<pod>.<n>-headless.<ns>.svc:6335`), so scaling needs no
///   new certificate;
/// - `extra` (spec.tls.extraDnsNames), lowercased.
///
/// Duplicates are dropped, keeping the first occurrence.
pub fn serving_dns_names(
    name: &str,
    namespace: &str,
    cluster_domain: &str,
    extra: &[String],
) -> Vec<String> {
    let domain = cluster_domain.trim_end_matches('.');
    let headless = format!("{name}-headless");
    let mut names = Vec::new();
    for service in [name, headless.as_str()] {
        names.push(service.to_owned());
        names.push(format!("{service}.{namespace}"));
        names.push(format!("{service}.{namespace}.svc"));
        names.push(format!("{service}.{namespace}.svc.{domain}"));
    }
    names.push(format!("*.{headless}.{namespace}.svc"));
    names.push(format!("*.{headless}.{namespace}.svc.{domain}"));
    names.extend(
        extra
            .iter()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
    );
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// Checks a DNS name for a certificate: LDH labels of 1–63 characters, at most 253 in all; a
/// wildcard only as the whole leftmost label, followed by at least two labels (rustls refuses
/// `*.x-headless` but accepts `*.x-headless.ns.svc`).
pub fn check_dns_name(name: &str) -> Result<(), TlsError> {
    let bad = || TlsError::BadDnsName(name.to_owned());
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if i == 0 && *label == "*" {
            if labels.len() < 3 {
                return Err(bad());
            }
            continue;
        }
        let ldh = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !ldh
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// The two name lists hold the same names, ignoring order, case and duplicates.
pub fn same_names(a: &[String], b: &[String]) -> bool {
    let set =
        |v: &[String]| -> BTreeSet<String> { v.iter().map(|n| n.to_ascii_lowercase()).collect() };
    set(a) == set(b)
}

/// A serving certificate with its private key. `Debug` never shows the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafMaterial {
    cert: Certificate,
    key: PrivateKey,
}

impl LeafMaterial {
    /// Pairs a certificate with its key; the key must be the certificate's.
    pub fn new(cert: Certificate, key: PrivateKey) -> Result<Self, TlsError> {
        if !cert.matches_key(&key) {
            return Err(TlsError::KeyMismatch);
        }
        Ok(LeafMaterial { cert, key })
    }

    /// Reads PEM text: the first certificate of `cert_pem` is the leaf; PKCS#8 key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::new(
            Certificate::from_pem(cert_pem)?,
            PrivateKey::from_pem(key_pem)?,
        )
    }

    /// Reads `tls.crt` and `tls.key` of a Secret.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, TlsError> {
        Self::from_pem(secret_text(data, TLS_CRT)?, secret_text(data, TLS_KEY)?)
    }

    /// The data of a `kubernetes.io/tls` Secret: `tls.crt` (the leaf), `tls.key`, and `ca.crt`
    /// holding `trust_bundle`.
    pub fn to_secret_data(&self, trust_bundle: &[Certificate]) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            (TLS_CRT.to_owned(), ByteString(self.cert.pem().into_bytes())),
            (
                TLS_KEY.to_owned(),
                ByteString(self.key.expose_pem().as_bytes().to_vec()),
            ),
            (
                CA_CRT.to_owned(),
                ByteString(bundle_pem(trust_bundle).into_bytes()),
            ),
        ])
    }

    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// Issues a serving certificate from `ca` for `dns_names` (the first also becomes the CN):
/// fresh P-256 key, EKU serverAuth + clientAuth, NotBefore a few minutes before `now` (never
/// before the CA's), NotAfter `now + lifetime` but never after the CA's.
pub fn issue_leaf(
    ca: &CaMaterial,
    dns_names: &[String],
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<LeafMaterial, TlsError> {
    let Some(first) = dns_names.first() else {
        return Err(TlsError::BadDnsName(String::new()));
    };
    let mut sans = Vec::with_capacity(dns_names.len());
    for name in dns_names {
        check_dns_name(name)?;
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(|_| TlsError::BadDnsName(name.clone()))?;
        sans.push(SanType::DnsName(ia5));
    }

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if first.len() <= 64 {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign_leaf(ca, params, lifetime, now)
}

/// Completes `params` (subject, SANs and EKU set by the caller) into an end-entity certificate
/// signed by `ca`: not a CA, digitalSignature, the CA's key identifier, a random serial,
/// NotBefore a few minutes before `now` (never before the CA's), NotAfter `now + lifetime` but
/// never after the CA's, and a fresh P-256 key.
pub(super) fn sign_leaf(
    ca: &CaMaterial,
    mut params: CertificateParams,
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<LeafMaterial, TlsError> {
    let lifetime = positive(lifetime)?;
    let now = whole_second(now);
    let ca_cert = ca.cert();
    if now > ca_cert.not_after() {
        return Err(TlsError::CaExpired(ca_cert.not_after().to_string()));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = to_offset(sub(now, BACKDATE).max(ca_cert.not_before()))?;
    params.not_after = to_offset(add(now, lifetime).min(ca_cert.not_after()))?;

    let key = PrivateKey::generate_p256()?;
    let cert = params.signed_by(&key.key_pair()?, &ca.issuer()?)?;
    LeafMaterial::new(Certificate::from_der(cert.der().to_vec())?, key)
}

#[cfg(test)]
mod tests {
    use super::super::ca::{CaSubject, issue_ca, renew_ca};
    use super::*;

    const YEAR: SignedDuration = SignedDuration::from_hours(8760);
    const NINETY_DAYS: SignedDuration = SignedDuration::from_hours(2160);

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn ca() -> CaMaterial {
        issue_ca(&CaSubject::new("search", "vectors"), YEAR, now()).unwrap()
    }

    fn names() -> Vec<String> {
        serving_dns_names("vectors", "search", "cluster.local", &[])
    }

    #[test]
    fn names_cover_services_and_headless_pods() {
        assert_eq!(
            names(),
            vec![
                "vectors",
                "vectors.search",
                "vectors.search.svc",
                "vectors.search.svc.cluster.local",
                "vectors-headless",
                "vectors-headless.search",
                "vectors-headless.search.svc",
                "vectors-headless.search.svc.cluster.local",
                "*.vectors-headless.search.svc",
                "*.vectors-headless.search.svc.cluster.local",
            ]
        );
        for n in names() {
            check_dns_name(&n).unwrap();
        }
    }

    #[test]
    fn extra_names_are_appended_lowercased_and_deduplicated() {
        let extra = vec![
            "Qdrant.Example.com.".to_owned(),
            "vectors.search.svc".to_owned(),
        ];
        let n = serving_dns_names("vectors", "search", "corp.internal.", &extra);
        assert_eq!(n.len(), 11);
        assert_eq!(n[3], "vectors.search.svc.corp.internal");
        assert_eq!(n.last().unwrap(), "qdrant.example.com");
    }

    #[test]
    fn dns_name_rules() {
        for ok in [
            "a",
            "vectors-0.vectors-headless.search.svc",
            "*.x-headless.ns.svc",
            "*.a.b",
        ] {
            assert!(check_dns_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*.x-headless",
            "a..b",
            "-a.b",
            "a-.b",
            "a.*.b",
            "*x.a.b",
            "ünicode.example",
            "under_score.example",
            &"a".repeat(64),
            &format!("{}.b", "a.".repeat(130)),
        ] {
            assert_eq!(
                check_dns_name(bad),
                Err(TlsError::BadDnsName(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn name_sets_compare_without_order_or_case() {
        let a = vec!["A.b".to_owned(), "c".to_owned()];
        let b = vec!["c".to_owned(), "a.B".to_owned(), "c".to_owned()];
        assert!(same_names(&a, &b));
        assert!(!same_names(&a, &["c".to_owned()]));
    }

    #[test]
    fn leaf_carries_names_ekus_and_validity() {
        let ca = ca();
        let leaf = issue_leaf(&ca, &names(), NINETY_DAYS, now()).unwrap();
        let info = leaf.cert().info();
        assert_eq!(info.dns_names, names());
        assert!(info.server_auth && info.client_auth);
        assert!(!info.is_ca);
        assert_eq!(info.subject, "CN=vectors");
        assert_eq!(info.not_before.to_string(), "2029-12-31T23:55:00Z");
        assert_eq!(info.not_after.to_string(), "2030-04-01T00:00:00Z");
        assert_eq!(info.authority_key_id, ca.cert().info().subject_key_id);
        assert!(leaf.cert().is_signed_by(ca.cert()));
        assert!(!leaf.cert().is_signed_by(leaf.cert()));
        let other = issue_ca(&CaSubject::new("search", "vectors"), YEAR, now()).unwrap();
        assert!(
            !leaf.cert().is_signed_by(other.cert()),
            "same subject, other key: not the issuer"
        );
    }

    #[test]
    fn leaf_never_outlives_or_predates_its_ca() {
        let ca = ca();
        let late = add(now(), SignedDuration::from_hours(8700));
        let leaf = issue_leaf(&ca, &names(), NINETY_DAYS, late).unwrap();
        assert_eq!(leaf.cert().not_after(), ca.cert().not_after());
        let early = issue_leaf(
            &ca,
            &names(),
            NINETY_DAYS,
            sub(now(), SignedDuration::from_mins(2)),
        )
        .unwrap();
        assert_eq!(early.cert().not_before(), ca.cert().not_before());
        let after = add(ca.cert().not_after(), SignedDuration::from_secs(1));
        assert!(matches!(
            issue_leaf(&ca, &names(), NINETY_DAYS, after),
            Err(TlsError::CaExpired(_))
        ));
    }

    #[test]
    fn leaves_from_a_renewed_ca_verify_against_the_old_one() {
        let ca = ca();
        let renewed = renew_ca(&ca, YEAR, add(now(), SignedDuration::from_hours(5000))).unwrap();
        let leaf = issue_leaf(
            &renewed,
            &names(),
            NINETY_DAYS,
            add(now(), SignedDuration::from_hours(5000)),
        )
        .unwrap();
        assert!(leaf.cert().is_signed_by(ca.cert()));
        assert!(leaf.cert().is_signed_by(renewed.cert()));
    }

    #[test]
    fn bad_input_is_refused() {
        let ca = ca();
        assert!(matches!(
            issue_leaf(&ca, &[], NINETY_DAYS, now()),
            Err(TlsError::BadDnsName(_))
        ));
        assert_eq!(
            issue_leaf(&ca, &["bad name".to_owned()], NINETY_DAYS, now()),
            Err(TlsError::BadDnsName("bad name".to_owned()))
        );
        assert!(matches!(
            issue_leaf(&ca, &names(), SignedDuration::from_secs(-1), now()),
            Err(TlsError::BadLifetime(_))
        ));
    }

    #[test]
    fn secret_data_round_trips_and_keys_must_match() {
        let ca = ca();
        let leaf = issue_leaf(&ca, &names(), NINETY_DAYS, now()).unwrap();
        let data = leaf.to_secret_data(std::slice::from_ref(ca.cert()));
        assert_eq!(LeafMaterial::from_secret_data(&data).unwrap(), leaf);
        assert_eq!(
            super::super::parse_bundle(std::str::from_utf8(&data[CA_CRT].0).unwrap()).unwrap(),
            vec![ca.cert().clone()]
        );
        let other = issue_leaf(&ca, &names(), NINETY_DAYS, now()).unwrap();
        assert_eq!(
            LeafMaterial::new(leaf.cert().clone(), other.key().clone()),
            Err(TlsError::KeyMismatch)
        );
        let long = vec![format!("{}.example.com", "a".repeat(60))];
        let leaf = issue_leaf(&ca, &long, NINETY_DAYS, now()).unwrap();
        assert_eq!(
            leaf.cert().info().subject,
            "",
            "no CN when the name is too long for one"
        );
        assert_eq!(leaf.cert().info().dns_names, long);
    }
}
