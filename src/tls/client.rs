//! Client certificates for applications, when an instance requires them on REST
//! (`spec.tls.clientCertificates`, Qdrant's `verify_https_client_certificate`).
//!
//! Each QdrantAccessToken of such an instance gets one: ECDSA P-256, EKU clientAuth only, CN
//! `<token>.<namespace>` (Qdrant checks only that the chain ends at its `tls.ca_cert`, never the
//! name), signed by the CA that signs the instance's serving certificate, with the instance's
//! certificate lifetime and renewBefore. It lives next to the token in the token Secret, as
//! `tls.crt` and `tls.key`, beside the `ca.crt` the application already trusts.
//!
//! During a CA key rollover the client certificates follow the serving certificate: kept from
//! the old CA while the pods learn to trust the new one, re-issued from the new CA once they do,
//! and the old CA is dropped from the pods' trust only after every client certificate moved
//! (see [`super::rollover::RolloverInput::clients_on_current`]).

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose};

use super::ca::CaMaterial;
use super::cert::Certificate;
use super::leaf::{LeafMaterial, sign_leaf};
use super::names::TlsError;
use super::renewal::{Jitter, LeafState, TlsPolicy, renewal_time};
use super::time::{add, whole_second};

/// The common name of the client certificate of the QdrantAccessToken `name` in `namespace`.
pub fn client_common_name(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}")
}

/// The common name of the client certificate metrics scrapers of the SecureQdrant `name` in
/// `namespace` present (`metrics.<name>.<namespace>`; a QdrantAccessToken's is `<token>.<ns>`).
pub fn metrics_client_common_name(namespace: &str, name: &str) -> String {
    format!("metrics.{name}.{namespace}")
}

/// Issues a client certificate from `ca`: fresh P-256 key, EKU clientAuth only, no subject
/// alternative names, NotBefore a few minutes before `now` (never before the CA's), NotAfter
/// `now + lifetime` but never after the CA's.
pub fn issue_client(
    ca: &CaMaterial,
    common_name: &str,
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<LeafMaterial, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // RFC 5280 bounds a CN to 64 characters; longer names are cut (the CN is informative).
    let cn: String = common_name.chars().take(64).collect();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "secureqdrant.dev client");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(ca, params, lifetime, now)
}

/// Why a client certificate is (re)issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReason {
    Missing,
    /// `tls.crt`/`tls.key` are there but unreadable or do not match.
    Unusable(TlsError),
    Expired,
    NotYetValid,
    /// Not usable for TLS client authentication (EKU).
    WrongUsage,
    /// Signed by a CA other than the one that signs now (a CA key rollover moved on, or the
    /// user swapped their CA).
    NotFromCurrentCa,
    /// Its renewal time has come.
    Due,
}

impl ClientReason {
    /// Words for an Event.
    pub fn describe(&self) -> String {
        match self {
            ClientReason::Missing => "none yet".into(),
            ClientReason::Unusable(e) => format!("the stored one is unusable: {e}"),
            ClientReason::Expired => "the stored one expired".into(),
            ClientReason::NotYetValid => "the stored one is not valid yet".into(),
            ClientReason::WrongUsage => "the stored one is not a client certificate".into(),
            ClientReason::NotFromCurrentCa => "the instance's CA changed".into(),
            ClientReason::Due => "renewal time".into(),
        }
    }
}

/// What to do with a client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDecision {
    /// Some(reason): issue a new one from the current CA.
    pub issue: Option<ClientReason>,
    /// When the kept certificate is to be renewed (None when one is issued now).
    pub renewal_time: Option<Timestamp>,
    /// When to look again at the kept certificate (its renewal time, or its expiry when it is
    /// kept past that).
    pub next_check: Option<Timestamp>,
}

/// Decides about a client certificate. `keep_previous_ca` is true while a CA key rollover is in
/// its first phase (the pods do not trust the new CA yet): a usable certificate from the old CA
/// is then kept. Otherwise it must chain to `current`, the CA that signs now.
pub fn plan_client(
    policy: &TlsPolicy,
    state: LeafState<'_>,
    current: &Certificate,
    keep_previous_ca: bool,
    jitter: Jitter,
    now: Timestamp,
) -> ClientDecision {
    let now = whole_second(now);
    let issue = |reason| ClientDecision {
        issue: Some(reason),
        renewal_time: None,
        next_check: None,
    };
    let cert = match state {
        LeafState::Missing => return issue(ClientReason::Missing),
        LeafState::Unusable(e) => return issue(ClientReason::Unusable(e.clone())),
        LeafState::Present(leaf) => leaf.cert(),
    };
    if now > cert.not_after() {
        return issue(ClientReason::Expired);
    }
    if now < cert.not_before() {
        return issue(ClientReason::NotYetValid);
    }
    if !cert.info().client_auth {
        return issue(ClientReason::WrongUsage);
    }
    let from_current = cert.is_signed_by(current);
    if !from_current && !keep_previous_ca {
        return issue(ClientReason::NotFromCurrentCa);
    }
    let due = renewal_time(
        cert,
        policy.leaf_renew_before(),
        jitter,
        policy.certificate_lifetime,
    );
    let expiry_check = add(cert.not_after(), SignedDuration::from_secs(1));
    let keep = |next: Timestamp| ClientDecision {
        issue: None,
        renewal_time: Some(due),
        next_check: Some(next),
    };
    if now < due {
        return keep(due);
    }
    // Due. A new certificate from the current CA must end later than this one, or renewing
    // gains nothing (the CA's end caps it: the CA is renewed first).
    let fresh_end = add(now, policy.certificate_lifetime).min(current.not_after());
    if fresh_end > cert.not_after() {
        return issue(ClientReason::Due);
    }
    keep(expiry_check)
}

#[cfg(test)]
mod tests {
    use super::super::ca::{CaSubject, issue_ca, renew_ca};
    use super::super::cert::PrivateKey;
    use super::super::leaf::{issue_leaf, serving_dns_names};
    use super::super::time::{BACKDATE, sub, to_offset};
    use super::*;

    fn t0() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn ca() -> CaMaterial {
        issue_ca(
            &CaSubject::new("search", "vectors"),
            SignedDuration::from_hours(8760),
            t0(),
        )
        .unwrap()
    }

    fn policy() -> TlsPolicy {
        TlsPolicy {
            certificate_lifetime: SignedDuration::from_hours(90),
            renew_before: Some(SignedDuration::from_hours(30)),
            ca_lifetime: SignedDuration::from_hours(8760),
        }
    }

    fn plan(
        leaf: &LeafMaterial,
        ca: &CaMaterial,
        keep_previous: bool,
        now: Timestamp,
    ) -> ClientDecision {
        plan_client(
            &policy(),
            LeafState::Present(leaf),
            ca.cert(),
            keep_previous,
            Jitter::NONE,
            now,
        )
    }

    #[test]
    fn issues_a_client_only_certificate_from_the_ca() {
        let ca = ca();
        let c = issue_client(
            &ca,
            &client_common_name("search", "frontend"),
            SignedDuration::from_hours(90),
            t0(),
        )
        .unwrap();
        let info = c.cert().info();
        assert!(info.client_auth);
        assert!(!info.server_auth, "a client certificate must not serve");
        assert!(!info.is_ca);
        assert!(info.dns_names.is_empty());
        assert!(
            info.subject.contains("CN=frontend.search"),
            "{}",
            info.subject
        );
        assert!(c.cert().is_signed_by(ca.cert()));
        assert_eq!(info.authority_key_id, ca.cert().info().subject_key_id);
        assert!(info.not_before < t0());
        assert_eq!(
            c.cert().not_after(),
            add(t0(), SignedDuration::from_hours(90))
        );
        assert!(c.cert().matches_key(c.key()));
    }

    #[test]
    fn never_outlives_its_ca_and_refuses_an_expired_ca() {
        let ca = ca();
        let c = issue_client(&ca, "x.y", SignedDuration::from_hours(100_000), t0()).unwrap();
        assert_eq!(c.cert().not_after(), ca.cert().not_after());
        let late = add(ca.cert().not_after(), SignedDuration::from_secs(1));
        assert!(matches!(
            issue_client(&ca, "x.y", SignedDuration::from_hours(1), late),
            Err(TlsError::CaExpired(_))
        ));
        assert!(matches!(
            issue_client(&ca, "x.y", SignedDuration::ZERO, t0()),
            Err(TlsError::BadLifetime(_))
        ));
    }

    #[test]
    fn a_long_name_is_cut_to_the_common_name_limit() {
        let name = "a".repeat(63);
        let c = issue_client(
            &ca(),
            &client_common_name("namespace", &name),
            SignedDuration::from_hours(1),
            t0(),
        )
        .unwrap();
        let subject = &c.cert().info().subject;
        let cn = subject
            .split(", ")
            .find_map(|part| part.strip_prefix("CN="))
            .expect("a CN");
        assert_eq!(cn, &format!("{name}.namespace")[..64], "{subject}");
    }

    #[test]
    fn kept_until_its_renewal_time_then_renewed() {
        let ca = ca();
        let c = issue_client(&ca, "a.b", SignedDuration::from_hours(90), t0()).unwrap();
        let due = add(t0(), SignedDuration::from_hours(60));
        let d = plan(&c, &ca, false, t0());
        assert_eq!(d.issue, None);
        assert_eq!(d.renewal_time, Some(due));
        assert_eq!(d.next_check, Some(due));
        let d = plan(&c, &ca, false, sub(due, SignedDuration::from_secs(1)));
        assert_eq!(d.issue, None);
        assert_eq!(plan(&c, &ca, false, due).issue, Some(ClientReason::Due));
        let after = add(c.cert().not_after(), SignedDuration::from_secs(1));
        assert_eq!(
            plan(&c, &ca, false, after).issue,
            Some(ClientReason::Expired)
        );
    }

    #[test]
    fn missing_or_unusable_material_is_issued() {
        let ca = ca();
        let missing = plan_client(
            &policy(),
            LeafState::Missing,
            ca.cert(),
            false,
            Jitter::NONE,
            t0(),
        );
        assert_eq!(missing.issue, Some(ClientReason::Missing));
        let err = TlsError::KeyMismatch;
        let bad = plan_client(
            &policy(),
            LeafState::Unusable(&err),
            ca.cert(),
            true,
            Jitter::NONE,
            t0(),
        );
        assert_eq!(
            bad.issue,
            Some(ClientReason::Unusable(TlsError::KeyMismatch))
        );
    }

    #[test]
    fn the_usage_must_allow_client_authentication() {
        let ca = ca();
        // The serving leaf (serverAuth + clientAuth) would do as a client certificate.
        let both = issue_leaf(
            &ca,
            &serving_dns_names("vectors", "search", "cluster.local", &[]),
            SignedDuration::from_hours(90),
            t0(),
        )
        .unwrap();
        assert_eq!(plan(&both, &ca, false, t0()).issue, None);
        // A serverAuth-only certificate would be refused by Qdrant: replaced.
        let mut params = CertificateParams::default();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = to_offset(sub(t0(), BACKDATE)).unwrap();
        params.not_after = to_offset(add(t0(), SignedDuration::from_hours(90))).unwrap();
        let key = PrivateKey::generate_p256().unwrap();
        let cert = params
            .signed_by(&key.key_pair().unwrap(), &ca.issuer().unwrap())
            .unwrap();
        let server_only =
            LeafMaterial::new(Certificate::from_der(cert.der().to_vec()).unwrap(), key).unwrap();
        assert_eq!(
            plan(&server_only, &ca, false, t0()).issue,
            Some(ClientReason::WrongUsage)
        );
    }

    #[test]
    fn follows_the_ca_except_in_the_first_rollover_phase() {
        let old = ca();
        let new = ca();
        let c = issue_client(&old, "a.b", SignedDuration::from_hours(90), t0()).unwrap();
        // TrustBoth: the pods do not trust the new CA yet; keep the old CA's certificate.
        assert_eq!(plan(&c, &new, true, t0()).issue, None);
        // Later phases: re-issued from the new CA.
        assert_eq!(
            plan(&c, &new, false, t0()).issue,
            Some(ClientReason::NotFromCurrentCa)
        );
        // A renewed CA (same key and subject) still signs it.
        let renewed = renew_ca(
            &old,
            SignedDuration::from_hours(8760),
            add(t0(), SignedDuration::from_hours(1)),
        )
        .unwrap();
        assert_eq!(plan(&c, &renewed, false, t0()).issue, None);
    }

    #[test]
    fn renewal_waits_for_the_ca_when_it_cannot_end_later() {
        let ca = issue_ca(
            &CaSubject::new("s", "v"),
            SignedDuration::from_hours(100),
            t0(),
        )
        .unwrap();
        let c = issue_client(&ca, "a.b", SignedDuration::from_hours(90), t0()).unwrap();
        // At 95 h the certificate (ends at 90 h) has expired; at 70 h it is due but a new one
        // would end with the CA at 100 h: later, so renewed.
        let at = add(t0(), SignedDuration::from_hours(70));
        assert_eq!(plan(&c, &ca, false, at).issue, Some(ClientReason::Due));
        // Capped by the CA: a certificate ending with the CA is kept until its expiry check.
        let capped = issue_client(&ca, "a.b", SignedDuration::from_hours(500), t0()).unwrap();
        let at = add(t0(), SignedDuration::from_hours(80));
        let d = plan(&capped, &ca, false, at);
        assert_eq!(d.issue, None);
        assert_eq!(
            d.next_check,
            Some(add(capped.cert().not_after(), SignedDuration::from_secs(1)))
        );
    }
}
