//! Reading certificates and keys: x509-parser for certificates, rcgen (ring) for keys, the `pem`
//! crate for the text form. No hand-written ASN.1.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

use k8s_openapi::jiff::Timestamp;
use rcgen::{KeyPair, PublicKeyData};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::names::TlsError;
use crate::material::SecretValue;

const CERTIFICATE: &str = "CERTIFICATE";
const PRIVATE_KEY: &str = "PRIVATE KEY";

/// Unix line endings, as Kubernetes tooling and Qdrant expect.
fn pem_config() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

/// A parsed X.509 certificate: its DER and the facts the operator decides on.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    info: CertInfo,
}

/// What the operator reads from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject as text (for messages).
    pub subject: String,
    /// The subject Name exactly as encoded: issuers are matched on these bytes.
    pub subject_der: Vec<u8>,
    /// The issuer Name exactly as encoded.
    pub issuer_der: Vec<u8>,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// DNS subjectAltNames, as written.
    pub dns_names: Vec<String>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    /// The DNS subtrees of a CA's name constraints (permittedSubtrees); None without name
    /// constraints (the CA may sign any name).
    pub permitted_dns: Option<Vec<String>>,
    /// The SubjectPublicKeyInfo, DER: two certificates with equal SPKI share a key.
    pub spki_der: Vec<u8>,
    /// Usable for TLS servers (EKU serverAuth, anyExtendedKeyUsage, or no EKU extension).
    pub server_auth: bool,
    /// Usable for TLS clients (EKU clientAuth, anyExtendedKeyUsage, or no EKU extension).
    pub client_auth: bool,
    /// The subject public key bits, to match a private key against.
    public_key: Vec<u8>,
}

impl Certificate {
    /// Parses one DER certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, TlsError> {
        let der = der.into();
        let info = {
            let (rest, x509) = X509Certificate::from_der(&der)
                .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
            if !rest.is_empty() {
                return Err(TlsError::BadCertificate(
                    "trailing bytes after the certificate".into(),
                ));
            }
            CertInfo::read(&x509)?
        };
        Ok(Certificate { der, info })
    }

    /// Parses the first certificate of a PEM text (a chain file holds the leaf first).
    pub fn from_pem(text: &str) -> Result<Self, TlsError> {
        parse_bundle(text)?
            .into_iter()
            .next()
            .ok_or(TlsError::NoCertificate)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text, LF line endings.
    pub fn pem(&self) -> String {
        pem::encode_config(&pem::Pem::new(CERTIFICATE, self.der.clone()), pem_config())
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    pub fn not_before(&self) -> Timestamp {
        self.info.not_before
    }

    pub fn not_after(&self) -> Timestamp {
        self.info.not_after
    }

    /// Within its validity period at `now` (both ends inclusive, as RFC 5280 says).
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.info.not_before <= now && now <= self.info.not_after
    }

    /// Both certificates carry the same public key.
    pub fn same_key(&self, other: &Certificate) -> bool {
        self.info.spki_der == other.info.spki_der
    }

    /// Issued by `issuer`: the issuer Name matches its subject and the signature verifies with
    /// its public key.
    pub fn is_signed_by(&self, issuer: &Certificate) -> bool {
        if self.info.issuer_der != issuer.info.subject_der {
            return false;
        }
        let Ok((_, me)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&issuer.info.spki_der) else {
            return false;
        };
        me.verify_signature(Some(&spki)).is_ok()
    }

    /// `key` is the private half of this certificate's public key.
    pub fn matches_key(&self, key: &PrivateKey) -> bool {
        key.key_pair()
            .map(|kp| kp.der_bytes() == self.info.public_key.as_slice())
            .unwrap_or(false)
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.info.subject)
            .field("serial", &self.info.serial)
            .field("not_before", &self.info.not_before)
            .field("not_after", &self.info.not_after)
            .field("is_ca", &self.info.is_ca)
            .field("dns_names", &self.info.dns_names)
            .finish()
    }
}

impl CertInfo {
    fn read(x509: &X509Certificate<'_>) -> Result<Self, TlsError> {
        let bad = |e: &dyn fmt::Display| TlsError::BadCertificate(e.to_string());
        let mut dns_names = Vec::new();
        if let Some(san) = x509.subject_alternative_name().map_err(|e| bad(&e))? {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(n) = name {
                    dns_names.push((*n).to_owned());
                }
            }
        }
        let (server_auth, client_auth) = match x509.extended_key_usage().map_err(|e| bad(&e))? {
            None => (true, true),
            Some(eku) => (
                eku.value.any || eku.value.server_auth,
                eku.value.any || eku.value.client_auth,
            ),
        };
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        let mut permitted_dns = None;
        for ext in x509.iter_extensions() {
            match ext.parsed_extension() {
                ParsedExtension::NameConstraints(nc) => {
                    permitted_dns = Some(
                        nc.permitted_subtrees
                            .iter()
                            .flatten()
                            .filter_map(|t| match t.base {
                                GeneralName::DNSName(n) => Some(n.to_owned()),
                                _ => None,
                            })
                            .collect(),
                    )
                }
                ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => {}
            }
        }
        let validity = x509.validity();
        let time = |t: i64| Timestamp::from_second(t).map_err(|e| bad(&e));
        Ok(CertInfo {
            subject: x509.subject().to_string(),
            subject_der: x509.subject().as_raw().to_vec(),
            issuer_der: x509.issuer().as_raw().to_vec(),
            serial: hex::encode(x509.raw_serial()),
            not_before: time(validity.not_before.timestamp())?,
            not_after: time(validity.not_after.timestamp())?,
            is_ca: x509.is_ca(),
            dns_names,
            subject_key_id,
            authority_key_id,
            permitted_dns,
            spki_der: x509.public_key().raw.to_vec(),
            server_auth,
            client_auth,
            public_key: x509.public_key().subject_public_key.data.to_vec(),
        })
    }
}

/// Every certificate of a PEM text, in order. Other PEM blocks are ignored; none at all is an
/// error.
pub fn parse_bundle(text: &str) -> Result<Vec<Certificate>, TlsError> {
    let blocks = pem::parse_many(text).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let certs = blocks
        .into_iter()
        .filter(|b| b.tag() == CERTIFICATE)
        .map(|b| Certificate::from_der(b.into_contents()))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// The PEM text of a list of certificates (a trust bundle or a chain).
pub fn bundle_pem(certs: &[Certificate]) -> String {
    certs.iter().map(Certificate::pem).collect()
}

/// A private key as unencrypted PKCS#8 PEM. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(SecretValue);

impl PrivateKey {
    /// Reads a PKCS#8 PEM key (`BEGIN PRIVATE KEY`). SEC1, PKCS#1 and encrypted keys are
    /// refused with a message saying how to convert them.
    pub fn from_pem(text: &str) -> Result<Self, TlsError> {
        let blocks = pem::parse_many(text).map_err(|e| TlsError::BadKey(e.to_string()))?;
        let block = match blocks.as_slice() {
            [one] => one,
            [] => return Err(TlsError::BadKey("no PEM block".into())),
            _ => return Err(TlsError::BadKey("more than one PEM block".into())),
        };
        if block.tag() != PRIVATE_KEY {
            return Err(TlsError::BadKey(format!("found a {:?} block", block.tag())));
        }
        let pair = KeyPair::try_from(block.contents())
            .map_err(|e| TlsError::BadKey(format!("unsupported or malformed: {e}")))?;
        Ok(Self::from_key_pair(&pair))
    }

    /// A fresh ECDSA P-256 key.
    pub fn generate_p256() -> Result<Self, TlsError> {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Self::from_key_pair(&pair))
    }

    pub(crate) fn from_key_pair(pair: &KeyPair) -> Self {
        let text = pem::encode_config(
            &pem::Pem::new(PRIVATE_KEY, pair.serialize_der()),
            pem_config(),
        );
        PrivateKey(SecretValue::new(text))
    }

    pub(crate) fn key_pair(&self) -> Result<KeyPair, TlsError> {
        KeyPair::from_pem(self.0.expose()).map_err(|e| TlsError::BadKey(e.to_string()))
    }

    /// The PEM text: only for writing it into a Secret.
    pub fn expose_pem(&self) -> &str {
        self.0.expose()
    }

    /// A SHA-256 fingerprint of the key, safe for hashes that must change with it.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.0.fingerprint()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// The UTF-8 text stored under `key` in a Secret's data.
pub(crate) fn secret_text<'a>(
    data: &'a BTreeMap<String, ByteString>,
    key: &'static str,
) -> Result<&'a str, TlsError> {
    let bytes = data.get(key).ok_or(TlsError::MissingKey(key))?;
    std::str::from_utf8(&bytes.0).map_err(|_| TlsError::NotUtf8(key))
}

/// A fresh random serial number: 16 bytes, positive, never zero.
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_pkcs8_and_debug_hides_them() {
        let key = PrivateKey::generate_p256().unwrap();
        assert!(
            key.expose_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(!key.expose_pem().contains('\r'));
        let again = PrivateKey::from_pem(key.expose_pem()).unwrap();
        assert_eq!(again, key);
        let printed = format!("{key:?}");
        assert_eq!(printed, "PrivateKey(<redacted>)");
        let body: String = key.expose_pem().lines().nth(1).unwrap().to_owned();
        assert!(!printed.contains(&body));
    }

    #[test]
    fn non_pkcs8_keys_are_refused_with_advice() {
        let key = PrivateKey::generate_p256().unwrap();
        let sec1 = key
            .expose_pem()
            .replace("BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY")
            .replace("END PRIVATE KEY", "END EC PRIVATE KEY");
        let err = PrivateKey::from_pem(&sec1).unwrap_err();
        assert!(matches!(&err, TlsError::BadKey(m) if m.contains("EC PRIVATE KEY")));
        assert!(err.to_string().contains("openssl pkcs8 -topk8 -nocrypt"));
        assert!(PrivateKey::from_pem("").is_err());
        let two = format!("{}{}", key.expose_pem(), key.expose_pem());
        assert!(PrivateKey::from_pem(&two).is_err());
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(garbage),
            Err(TlsError::BadKey(_))
        ));
    }

    #[test]
    fn bundles_need_a_certificate() {
        assert_eq!(parse_bundle(""), Err(TlsError::NoCertificate));
        let key = PrivateKey::generate_p256().unwrap();
        assert_eq!(parse_bundle(key.expose_pem()), Err(TlsError::NoCertificate));
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_bundle(bad),
            Err(TlsError::BadCertificate(_))
        ));
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(a[0] & 0x80, 0);
        assert_ne!(a[0], 0);
    }
}
