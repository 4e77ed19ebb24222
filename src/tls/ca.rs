//! The instance's certificate authority: ECDSA P-256, self-signed, path length 0. Renewal keeps
//! the key, the subject and the key identifier, so everything the old certificate signed still
//! chains to the new one and the other way round.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, DnValue,
    GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::FromDer;

use super::cert::{Certificate, PrivateKey, random_serial, secret_text};
use super::names::{TLS_CRT, TLS_KEY, TlsError};
use super::time::{BACKDATE, add, positive, sub, to_offset, whole_second};

/// Organization written into the operator's CA subjects.
pub const CA_ORGANIZATION: &str = "secure-qdrant-operator";
/// Longest CommonName X.509 allows (RFC 5280 ub-common-name).
const MAX_CN: usize = 64;

/// Whose CA this is: the subject names the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSubject {
    pub namespace: String,
    pub name: String,
}

impl CaSubject {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        CaSubject {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `<name>.<namespace> Qdrant CA <key id>`, the instance part cut so the whole fits in 64
    /// characters. The key id (8 hex digits of the subject key identifier) gives each CA key
    /// its own subject, so a trust bundle holding an old and a new CA never has two anchors
    /// with one name; a renewal keeps the key and so the name.
    pub fn common_name(&self, key_id: &[u8]) -> String {
        let suffix = format!(" Qdrant CA {}", hex::encode(&key_id[..key_id.len().min(4)]));
        let mut instance = format!("{}.{}", self.name, self.namespace);
        let room = MAX_CN.saturating_sub(suffix.len());
        if instance.len() > room {
            let mut cut = room;
            while !instance.is_char_boundary(cut) {
                cut -= 1;
            }
            instance.truncate(cut);
        }
        instance + &suffix
    }

    fn distinguished_name(&self, key_id: &[u8]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, CA_ORGANIZATION);
        dn.push(DnType::CommonName, self.common_name(key_id));
        dn
    }
}

/// A CA certificate with its private key. `Debug` shows the certificate, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaMaterial {
    cert: Certificate,
    key: PrivateKey,
}

impl CaMaterial {
    /// Pairs a certificate with its key: it must be a CA and the key must be its own.
    pub fn new(cert: Certificate, key: PrivateKey) -> Result<Self, TlsError> {
        if !cert.info().is_ca {
            return Err(TlsError::NotCa);
        }
        if !cert.matches_key(&key) {
            return Err(TlsError::KeyMismatch);
        }
        Ok(CaMaterial { cert, key })
    }

    /// Reads a CA from PEM text (the first certificate; PKCS#8 key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::new(
            Certificate::from_pem(cert_pem)?,
            PrivateKey::from_pem(key_pem)?,
        )
    }

    /// Reads a CA from Secret data (`tls.crt`, `tls.key`): `<n>-ca`, or the user's
    /// `caSecretRef`.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, TlsError> {
        Self::from_pem(secret_text(data, TLS_CRT)?, secret_text(data, TLS_KEY)?)
    }

    /// The data of the `<n>-ca` Secret: `tls.crt`, `tls.key`.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            (TLS_CRT.to_owned(), ByteString(self.cert.pem().into_bytes())),
            (
                TLS_KEY.to_owned(),
                ByteString(self.key.expose_pem().as_bytes().to_vec()),
            ),
        ])
    }

    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// An rcgen issuer signing with this CA (subject and key identifier taken from the
    /// certificate, so leaves name it exactly).
    pub(crate) fn issuer(&self) -> Result<Issuer<'static, KeyPair>, TlsError> {
        Ok(Issuer::from_ca_cert_der(
            &self.cert.der().to_vec().into(),
            self.key.key_pair()?,
        )?)
    }
}

/// The DNS subtrees that permit exactly `names` (a wildcard `*.x` through the subtree `x`),
/// deduplicated, in order.
pub fn permitted_subtrees(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let bare = name.strip_prefix("*.").unwrap_or(name).to_ascii_lowercase();
        if !out.contains(&bare) {
            out.push(bare);
        }
    }
    out
}

/// Whether a CA whose name constraints permit the DNS subtrees `permitted` (None: no
/// constraints) may sign `name` (a wildcard `*.x` as the names under `x`).
pub fn permits(permitted: Option<&[String]>, name: &str) -> bool {
    let Some(permitted) = permitted else {
        return true;
    };
    let bare = name.strip_prefix("*.").unwrap_or(name).to_ascii_lowercase();
    permitted.iter().any(|s| {
        let s = s.trim_start_matches('.').to_ascii_lowercase();
        bare == s || bare.ends_with(&format!(".{s}"))
    })
}

fn ca_params(
    dn: DistinguishedName,
    key_id: KeyIdMethod,
    permitted: &[String],
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<CertificateParams, TlsError> {
    let lifetime = positive(lifetime)?;
    let now = whole_second(now);
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = key_id;
    if !permitted.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted
                .iter()
                .map(|s| GeneralSubtree::DnsName(s.clone()))
                .collect(),
            // No IP address at all: the operator's certificates carry DNS names only, and
            // permitted DNS subtrees alone leave IP SANs unconstrained (RFC 5280 4.2.1.10).
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });
    }
    params.serial_number = Some(random_serial()?);
    params.not_before = to_offset(sub(now, BACKDATE))?;
    params.not_after = to_offset(add(now, lifetime))?;
    Ok(params)
}

/// A new CA: fresh P-256 key, valid from a few minutes before `now` for `lifetime`, without
/// name constraints.
pub fn issue_ca(
    subject: &CaSubject,
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<CaMaterial, TlsError> {
    issue_ca_for(subject, &[], lifetime, now)
}

/// A new CA whose name constraints permit only the DNS subtrees `permitted` (none: no
/// constraints), so its key cannot sign for any other name a verifier would accept.
pub fn issue_ca_for(
    subject: &CaSubject,
    permitted: &[String],
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<CaMaterial, TlsError> {
    let key = PrivateKey::generate_p256()?;
    let pair = key.key_pair()?;
    let key_id = CertificateParams::default().key_identifier(&pair);
    let params = ca_params(
        subject.distinguished_name(&key_id),
        KeyIdMethod::PreSpecified(key_id),
        permitted,
        lifetime,
        now,
    )?;
    let cert = params.self_signed(&pair)?;
    CaMaterial::new(Certificate::from_der(cert.der().to_vec())?, key)
}

/// The same CA for another `lifetime` from `now`: same key, same subject (byte for byte), same
/// subject key identifier, same name constraints, new serial. Certificates signed by either
/// verify against the other.
pub fn renew_ca(
    ca: &CaMaterial,
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<CaMaterial, TlsError> {
    renew_ca_for(ca, &[], lifetime, now)
}

/// Like [`renew_ca`]; a CA without name constraints (issued before they existed) gets
/// `permitted` (when not empty). A CA with constraints keeps its own: widening them on the same
/// key would make the new leaf fail on pods that still hold the old CA certificate in memory
/// (gRPC and p2p load it at start), so new names come with a new CA key through the rollover.
pub fn renew_ca_for(
    ca: &CaMaterial,
    permitted: &[String],
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<CaMaterial, TlsError> {
    let old = ca.cert.info();
    let dn = {
        let (_, x509) = X509Certificate::from_der(ca.cert.der())
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        dn_from_x509(x509.subject())?
    };
    let key_id = match &old.subject_key_id {
        Some(id) => KeyIdMethod::PreSpecified(id.clone()),
        None => KeyIdMethod::Sha256,
    };
    let permitted = old.permitted_dns.as_deref().unwrap_or(permitted);
    let params = ca_params(dn, key_id, permitted, lifetime, now)?;
    let cert = params.self_signed(&ca.key.key_pair()?)?;
    let renewed = CaMaterial::new(Certificate::from_der(cert.der().to_vec())?, ca.key.clone())?;
    let new = renewed.cert.info();
    if new.subject_der != old.subject_der
        || (old.subject_key_id.is_some() && new.subject_key_id != old.subject_key_id)
    {
        return Err(TlsError::RenewalChangedIdentity);
    }
    Ok(renewed)
}

/// The subject of an existing certificate as rcgen's type, keeping each value's string type so
/// the encoding comes out identical.
fn dn_from_x509(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName, TlsError> {
    let unsupported = || TlsError::RenewalChangedIdentity;
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported());
        };
        let oid: Vec<u64> = attr.attr_type().iter().ok_or_else(unsupported)?.collect();
        let value = attr.attr_value();
        let text = std::str::from_utf8(value.data).map_err(|_| unsupported())?;
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text.try_into().map_err(|_| unsupported())?)
            }
            Tag::Ia5String => DnValue::Ia5String(text.try_into().map_err(|_| unsupported())?),
            _ => return Err(unsupported()),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    const YEAR: SignedDuration = SignedDuration::from_hours(8760);

    #[test]
    fn issues_a_p256_ca_with_the_lifetime_asked_for() {
        let ca = issue_ca(&CaSubject::new("search", "vectors"), YEAR, now()).unwrap();
        let info = ca.cert().info();
        assert!(info.is_ca);
        let key_id = hex::encode(&info.subject_key_id.as_ref().unwrap()[..4]);
        assert_eq!(
            info.subject,
            format!("O=secure-qdrant-operator, CN=vectors.search Qdrant CA {key_id}")
        );
        assert_eq!(info.subject_der, info.issuer_der, "self-signed");
        assert!(ca.cert().is_signed_by(ca.cert()));
        assert_eq!(info.not_before.to_string(), "2029-12-31T23:55:00Z");
        assert_eq!(info.not_after.to_string(), "2031-01-01T00:00:00Z");
        assert!(info.subject_key_id.is_some());
        let (_, x509) = X509Certificate::from_der(ca.cert().der()).unwrap();
        assert_eq!(
            x509.public_key()
                .algorithm
                .parameters
                .as_ref()
                .map(|p| p.as_oid().unwrap().to_id_string()),
            Some("1.2.840.10045.3.1.7".to_owned()),
            "the key is on P-256"
        );
        let bc = x509.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = x509.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
    }

    #[test]
    fn rejects_a_lifetime_that_is_not_positive() {
        let err = issue_ca(
            &CaSubject::new("search", "vectors"),
            SignedDuration::ZERO,
            now(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::BadLifetime(_)));
    }

    #[test]
    fn long_names_keep_the_common_name_within_64_characters() {
        let subject = CaSubject::new("n".repeat(63), "q".repeat(50));
        let cn = subject.common_name(&[0xab, 0xcd, 0xef, 0x01, 0x23]);
        assert_eq!(cn.len(), 64);
        assert!(cn.starts_with(&"q".repeat(45)));
        assert!(cn.ends_with(" Qdrant CA abcdef01"));
        let ca = issue_ca(&subject, YEAR, now()).unwrap();
        assert!(ca.cert().info().subject.contains(" Qdrant CA "));
    }

    #[test]
    fn each_new_key_gets_its_own_subject() {
        let subject = CaSubject::new("search", "vectors");
        let a = issue_ca(&subject, YEAR, now()).unwrap();
        let b = issue_ca(&subject, YEAR, now()).unwrap();
        assert_ne!(a.cert().info().subject_der, b.cert().info().subject_der);
        assert!(!a.cert().same_key(b.cert()));
    }

    #[test]
    fn renewal_keeps_key_subject_and_key_id_and_extends_validity() {
        let ca = issue_ca(&CaSubject::new("search", "vectors"), YEAR, now()).unwrap();
        let later = add(now(), SignedDuration::from_hours(6000));
        let renewed = renew_ca(&ca, YEAR, later).unwrap();
        let (a, b) = (ca.cert().info(), renewed.cert().info());
        assert_eq!(a.subject_der, b.subject_der);
        assert_eq!(a.subject_key_id, b.subject_key_id);
        assert_eq!(a.spki_der, b.spki_der);
        assert_eq!(renewed.key(), ca.key());
        assert_ne!(a.serial, b.serial);
        assert_eq!(b.not_after, add(later, YEAR));
        // Each certificate verifies under the other: same name, same key.
        assert!(renewed.cert().is_signed_by(ca.cert()));
        assert!(ca.cert().is_signed_by(renewed.cert()));
    }

    #[test]
    fn secret_data_round_trips_and_detects_foreign_keys() {
        let ca = issue_ca(&CaSubject::new("search", "vectors"), YEAR, now()).unwrap();
        let data = ca.to_secret_data();
        assert_eq!(CaMaterial::from_secret_data(&data).unwrap(), ca);

        let other = issue_ca(&CaSubject::new("search", "other"), YEAR, now()).unwrap();
        let mut mixed = data.clone();
        mixed.insert(TLS_KEY.into(), other.to_secret_data()[TLS_KEY].clone());
        assert_eq!(
            CaMaterial::from_secret_data(&mixed),
            Err(TlsError::KeyMismatch)
        );
        let mut missing = data.clone();
        missing.remove(TLS_KEY);
        assert_eq!(
            CaMaterial::from_secret_data(&missing),
            Err(TlsError::MissingKey(TLS_KEY))
        );
        let printed = format!("{ca:?}");
        assert!(printed.contains("<redacted>"));
        assert!(!printed.contains(ca.key().expose_pem().lines().nth(1).unwrap()));
    }
}
