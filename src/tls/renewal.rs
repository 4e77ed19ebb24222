//! When to renew what. Pure functions of (existing material, policy, now): each returns what to
//! do and, when nothing is due, the instant its answer changes, so the controller can requeue
//! for exactly that moment.
//!
//! Renewal times are pulled earlier by a deterministic per-instance jitter (a hash of
//! namespace/name/uid), bounded by 5% of the lifetime and by [`MAX_JITTER`], so a thousand
//! instances created together do not renew in the same second. Jitter never makes a renewal
//! later than `notAfter - renewBefore`.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use super::ca::CaMaterial;
use super::cert::Certificate;
use super::leaf::{LeafMaterial, same_names};
use super::names::TlsError;
use super::rollover::Signer;
use super::time::{add, signed, sub, whole_second};

/// The API defaults of the lifetimes are part of the API (`crate::crd`), read here.
pub use crate::crd::{DEFAULT_CA_LIFETIME, DEFAULT_CERTIFICATE_LIFETIME};

/// spec.tls.renewBefore when it is not set: a third of the certificate's lifetime.
pub fn default_renew_before(lifetime: Duration) -> Duration {
    lifetime / 3
}

/// The upper bound of the jitter, whatever the lifetime.
pub const MAX_JITTER: SignedDuration = SignedDuration::from_hours(1);

/// Lifetimes from spec.tls, defaults resolved by the caller (see [`TlsPolicy::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsPolicy {
    /// spec.tls.certificateLifetime: the serving certificate.
    pub certificate_lifetime: SignedDuration,
    /// spec.tls.renewBefore; None: [`default_renew_before`] of `certificate_lifetime`.
    pub renew_before: Option<SignedDuration>,
    /// spec.tls.caLifetime.
    pub ca_lifetime: SignedDuration,
}

impl Default for TlsPolicy {
    /// The API defaults: [`DEFAULT_CERTIFICATE_LIFETIME`] leaves, renewed
    /// [`default_renew_before`] the end, a [`DEFAULT_CA_LIFETIME`] CA.
    fn default() -> Self {
        TlsPolicy {
            certificate_lifetime: DEFAULT_CERTIFICATE_LIFETIME,
            renew_before: None,
            ca_lifetime: DEFAULT_CA_LIFETIME,
        }
    }
}

impl TlsPolicy {
    /// How long before its end a serving certificate is renewed: `renewBefore`, or a third of
    /// the lifetime; never more than 90% of the lifetime, so a new certificate is not already
    /// due.
    pub fn leaf_renew_before(&self) -> SignedDuration {
        let lifetime = self.certificate_lifetime;
        // A lifetime that is not positive leaves no window at all (`clamp_window`), whatever
        // is wanted.
        let wanted = self
            .renew_before
            .unwrap_or_else(|| signed(default_renew_before(lifetime.unsigned_abs())));
        clamp_window(wanted, lifetime)
    }

    /// How long before its end the CA is renewed: a third of its lifetime, but at least one
    /// serving-certificate lifetime, so every leaf it signs can live its full term; never more
    /// than 90% of the CA lifetime.
    pub fn ca_renew_before(&self) -> SignedDuration {
        let wanted = (self.ca_lifetime / 3).max(self.certificate_lifetime);
        clamp_window(wanted, self.ca_lifetime)
    }
}

fn clamp_window(wanted: SignedDuration, lifetime: SignedDuration) -> SignedDuration {
    let max = SignedDuration::from_secs(lifetime.as_secs().saturating_mul(9) / 10);
    wanted.clamp(SignedDuration::ZERO, max.max(SignedDuration::ZERO))
}

/// A per-instance, deterministic offset that pulls renewals earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter {
    seed: u64,
}

impl Jitter {
    /// Jitter derived from the instance identity (use the custom resource's uid, so a
    /// re-created instance gets a new one).
    pub fn for_instance(namespace: &str, name: &str, uid: &str) -> Self {
        let digest = Sha256::digest(format!("{namespace}/{name}/{uid}").as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        Jitter {
            seed: u64::from_be_bytes(seed),
        }
    }

    /// No jitter: renewals at exactly `notAfter - renewBefore`.
    pub const NONE: Jitter = Jitter { seed: 0 };

    /// The offset for a certificate of `lifetime`: in `[0, min(5% of lifetime, MAX_JITTER)]`,
    /// whole seconds.
    pub fn amount(&self, lifetime: SignedDuration) -> SignedDuration {
        let bound = (lifetime.as_secs() / 20).min(MAX_JITTER.as_secs());
        if bound <= 0 {
            return SignedDuration::ZERO;
        }
        SignedDuration::from_secs((self.seed % (bound as u64 + 1)) as i64)
    }
}

/// `notAfter - renewBefore - jitter`.
pub fn renewal_time(
    cert: &Certificate,
    renew_before: SignedDuration,
    jitter: Jitter,
    lifetime: SignedDuration,
) -> Timestamp {
    sub(sub(cert.not_after(), renew_before), jitter.amount(lifetime))
}

/// What is known about the operator's CA Secret.
#[derive(Clone, Copy, Debug)]
pub enum CaState<'a> {
    /// `<n>-ca` does not exist.
    Missing,
    /// It exists but cannot be used (names the problem, never the key).
    Unusable(&'a TlsError),
    Present(&'a CaMaterial),
}

/// What to do with the operator's CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaAction {
    Keep,
    /// A new key and certificate.
    Create(CaCreateReason),
    /// The same key and subject with a new validity.
    Renew(CaRenewReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaCreateReason {
    Missing,
    Unusable(TlsError),
    /// The rotate-ca annotation asked for a new key.
    Requested,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaRenewReason {
    /// Found past its notAfter: renewed at once.
    Expired,
    /// Its renewal time has come.
    Due,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaDecision {
    pub action: CaAction,
    /// When the kept CA is to be renewed (None unless the action is Keep).
    pub renewal_time: Option<Timestamp>,
}

/// Decides about the operator's CA. A replacement request, or a renewal that is merely due,
/// waits while a key rollover runs; an expired CA is renewed at once regardless.
pub fn plan_ca(
    policy: &TlsPolicy,
    state: CaState<'_>,
    replacement_requested: bool,
    rollover_running: bool,
    jitter: Jitter,
    now: Timestamp,
) -> CaDecision {
    let now = whole_second(now);
    let act = |action| CaDecision {
        action,
        renewal_time: None,
    };
    let ca = match state {
        CaState::Missing => return act(CaAction::Create(CaCreateReason::Missing)),
        CaState::Unusable(e) => return act(CaAction::Create(CaCreateReason::Unusable(e.clone()))),
        CaState::Present(ca) => ca,
    };
    if now > ca.cert().not_after() {
        return act(CaAction::Renew(CaRenewReason::Expired));
    }
    if replacement_requested && !rollover_running {
        return act(CaAction::Create(CaCreateReason::Requested));
    }
    let due = renewal_time(
        ca.cert(),
        policy.ca_renew_before(),
        jitter,
        policy.ca_lifetime,
    );
    if now >= due && !rollover_running {
        return act(CaAction::Renew(CaRenewReason::Due));
    }
    CaDecision {
        action: CaAction::Keep,
        renewal_time: Some(due),
    }
}

/// What is known about the published serving certificate.
#[derive(Clone, Copy, Debug)]
pub enum LeafState<'a> {
    /// `<n>-tls` or its `tls.crt`/`tls.key` does not exist.
    Missing,
    Unusable(&'a TlsError),
    Present(&'a LeafMaterial),
}

/// Why a serving certificate is (re)issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafReason {
    Missing,
    Unusable(TlsError),
    /// Not signed by the CA that signs now (a new CA, or a rollover moved on).
    WrongIssuer,
    /// Found past its notAfter: replaced at once.
    Expired,
    /// NotBefore is in the future (a clock went wrong when it was issued).
    NotYetValid,
    /// Lacks EKU serverAuth or clientAuth.
    WrongUsage,
    /// The wanted DNS names changed (extraDnsNames, the cluster domain).
    NamesChanged,
    /// The CA was renewed after this certificate was issued.
    CaRenewed,
    /// Its renewal time has come.
    Due,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafAction {
    Keep,
    Issue(LeafReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafDecision {
    pub action: LeafAction,
    /// The kept certificate's renewal time (None unless the action is Keep).
    pub renewal_time: Option<Timestamp>,
    /// When this decision is next worth re-checking (None unless the action is Keep): the
    /// renewal time, or the expiry when renewing early could not gain anything.
    pub next_check: Option<Timestamp>,
}

/// Decides about the serving certificate. With [`Signer::Previous`] (a CA key rollover keeping
/// the old leaves) a usable certificate is kept whatever its age; otherwise it is reissued
/// from `signer` when anything is wrong with it or its renewal time has come. Renewing early
/// is skipped when a new certificate could not end later (the CA's end caps it): the CA has to
/// be renewed first.
pub fn plan_leaf(
    policy: &TlsPolicy,
    state: LeafState<'_>,
    signer: &Certificate,
    role: Signer,
    dns_names: &[String],
    jitter: Jitter,
    now: Timestamp,
) -> LeafDecision {
    let now = whole_second(now);
    let issue = |reason| LeafDecision {
        action: LeafAction::Issue(reason),
        renewal_time: None,
        next_check: None,
    };
    let leaf = match state {
        LeafState::Missing => return issue(LeafReason::Missing),
        LeafState::Unusable(e) => return issue(LeafReason::Unusable(e.clone())),
        LeafState::Present(leaf) => leaf.cert(),
    };
    if now > leaf.not_after() {
        return issue(LeafReason::Expired);
    }
    let due = renewal_time(
        leaf,
        policy.leaf_renew_before(),
        jitter,
        policy.certificate_lifetime,
    );
    let keep = |next: Timestamp| LeafDecision {
        action: LeafAction::Keep,
        renewal_time: Some(due),
        next_check: Some(next),
    };
    let expiry_check = add(leaf.not_after(), SignedDuration::from_secs(1));
    if role == Signer::Previous {
        return keep(if due > now { due } else { expiry_check });
    }
    if !leaf.is_signed_by(signer) {
        return issue(LeafReason::WrongIssuer);
    }
    if now < leaf.not_before() {
        return issue(LeafReason::NotYetValid);
    }
    let info = leaf.info();
    if !(info.server_auth && info.client_auth) {
        return issue(LeafReason::WrongUsage);
    }
    if !same_names(&info.dns_names, dns_names) {
        return issue(LeafReason::NamesChanged);
    }
    if leaf.not_before() < signer.not_before() {
        return issue(LeafReason::CaRenewed);
    }
    if now >= due {
        let fresh_end = add(now, policy.certificate_lifetime).min(signer.not_after());
        if fresh_end > leaf.not_after() {
            return issue(LeafReason::Due);
        }
        return keep(expiry_check);
    }
    keep(due)
}

/// How long to wait until the earliest of `deadlines` (zero when one has passed); None when
/// there is none.
pub fn requeue_after(
    now: Timestamp,
    deadlines: impl IntoIterator<Item = Option<Timestamp>>,
) -> Option<Duration> {
    deadlines.into_iter().flatten().min().map(|t| {
        if t > now {
            t.duration_since(now).unsigned_abs()
        } else {
            Duration::ZERO
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::ca::{CaSubject, issue_ca, renew_ca};
    use super::super::leaf::{issue_leaf, serving_dns_names};
    use super::*;

    const HOUR: SignedDuration = SignedDuration::from_hours(1);
    const DAY: SignedDuration = SignedDuration::from_hours(24);

    fn t0() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn policy() -> TlsPolicy {
        TlsPolicy::default()
    }

    fn names() -> Vec<String> {
        serving_dns_names("vectors", "search", "cluster.local", &[])
    }

    fn ca() -> CaMaterial {
        issue_ca(
            &CaSubject::new("search", "vectors"),
            policy().ca_lifetime,
            t0(),
        )
        .unwrap()
    }

    fn leaf(ca: &CaMaterial, at: Timestamp) -> LeafMaterial {
        issue_leaf(ca, &names(), policy().certificate_lifetime, at).unwrap()
    }

    fn decide(
        leaf: &LeafMaterial,
        ca: &CaMaterial,
        jitter: Jitter,
        now: Timestamp,
    ) -> LeafDecision {
        plan_leaf(
            &policy(),
            LeafState::Present(leaf),
            ca.cert(),
            Signer::Current,
            &names(),
            jitter,
            now,
        )
    }

    #[test]
    fn renew_before_defaults_to_a_third_and_is_clamped() {
        let mut p = policy();
        assert_eq!(p.leaf_renew_before(), SignedDuration::from_hours(720));
        p.renew_before = Some(SignedDuration::from_hours(100));
        assert_eq!(p.leaf_renew_before(), SignedDuration::from_hours(100));
        p.renew_before = Some(SignedDuration::from_hours(5000));
        assert_eq!(p.leaf_renew_before(), SignedDuration::from_hours(1944));
        p.renew_before = Some(SignedDuration::from_hours(-3));
        assert_eq!(p.leaf_renew_before(), SignedDuration::ZERO);
        // CA: a third of 8760h is 2920h, more than the 2160h leaf lifetime.
        assert_eq!(p.ca_renew_before(), SignedDuration::from_hours(2920));
        p.ca_lifetime = SignedDuration::from_hours(3000);
        assert_eq!(p.ca_renew_before(), SignedDuration::from_hours(2160));
        p.ca_lifetime = SignedDuration::from_hours(2000);
        assert_eq!(p.ca_renew_before(), SignedDuration::from_hours(1800));
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_spread() {
        let a = Jitter::for_instance("search", "vectors", "uid-1");
        assert_eq!(a, Jitter::for_instance("search", "vectors", "uid-1"));
        let lifetime = SignedDuration::from_hours(2160);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let j = Jitter::for_instance("ns", &format!("q{i}"), "uid").amount(lifetime);
            assert!(j >= SignedDuration::ZERO && j <= MAX_JITTER, "{j:?}");
            seen.insert(j.as_secs());
        }
        assert!(
            seen.len() > 800,
            "1000 instances spread over {} seconds",
            seen.len()
        );
        // Short lifetimes: at most 5%.
        let short = SignedDuration::from_mins(20);
        for i in 0..100 {
            let j = Jitter::for_instance("ns", &format!("q{i}"), "uid").amount(short);
            assert!(j <= SignedDuration::from_mins(1));
        }
        assert_eq!(Jitter::NONE.amount(lifetime), SignedDuration::ZERO);
        assert_eq!(
            a.amount(SignedDuration::from_secs(10)),
            SignedDuration::ZERO
        );
    }

    #[test]
    fn leaf_renews_at_renewal_time_and_not_before() {
        let ca = ca();
        let leaf = leaf(&ca, t0());
        let jitter = Jitter::for_instance("search", "vectors", "3c5e");
        let expected = sub(
            sub(leaf.cert().not_after(), SignedDuration::from_hours(720)),
            jitter.amount(policy().certificate_lifetime),
        );

        let before = sub(expected, SignedDuration::from_secs(1));
        let d = decide(&leaf, &ca, jitter, before);
        assert_eq!(d.action, LeafAction::Keep);
        assert_eq!(d.renewal_time, Some(expected));
        assert_eq!(d.next_check, Some(expected));
        assert_eq!(
            requeue_after(before, [d.next_check]),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&leaf, &ca, jitter, expected).action,
            LeafAction::Issue(LeafReason::Due)
        );
        // Fresh certificate: requeue exactly until renewal time.
        let d = decide(&leaf, &ca, jitter, t0());
        let wait = requeue_after(t0(), [d.next_check]).unwrap();
        assert_eq!(
            wait.as_secs() as i64,
            expected.duration_since(t0()).as_secs()
        );
    }

    #[test]
    fn jitter_only_moves_renewal_earlier() {
        let ca = ca();
        let leaf = leaf(&ca, t0());
        let deadline = sub(leaf.cert().not_after(), SignedDuration::from_hours(720));
        for i in 0..50 {
            let j = Jitter::for_instance("ns", &format!("q{i}"), "u");
            let d = decide(&leaf, &ca, j, t0());
            let r = d.renewal_time.unwrap();
            assert!(r <= deadline);
            assert!(r >= sub(deadline, MAX_JITTER));
            assert_eq!(
                decide(&leaf, &ca, j, deadline).action,
                LeafAction::Issue(LeafReason::Due)
            );
        }
    }

    #[test]
    fn leaf_reasons() {
        let ca = ca();
        let l = leaf(&ca, t0());
        let p = policy();
        let run = |state: LeafState<'_>, signer: &Certificate, names: &[String], now| {
            plan_leaf(&p, state, signer, Signer::Current, names, Jitter::NONE, now).action
        };
        assert_eq!(
            run(LeafState::Missing, ca.cert(), &names(), t0()),
            LeafAction::Issue(LeafReason::Missing)
        );
        let e = TlsError::KeyMismatch;
        assert_eq!(
            run(LeafState::Unusable(&e), ca.cert(), &names(), t0()),
            LeafAction::Issue(LeafReason::Unusable(TlsError::KeyMismatch))
        );
        let other = issue_ca(&CaSubject::new("search", "vectors"), p.ca_lifetime, t0()).unwrap();
        assert_eq!(
            run(LeafState::Present(&l), other.cert(), &names(), t0()),
            LeafAction::Issue(LeafReason::WrongIssuer)
        );
        let after = add(l.cert().not_after(), SignedDuration::from_secs(1));
        assert_eq!(
            run(LeafState::Present(&l), ca.cert(), &names(), after),
            LeafAction::Issue(LeafReason::Expired)
        );
        assert_eq!(
            run(
                LeafState::Present(&l),
                ca.cert(),
                &names(),
                l.cert().not_after()
            ),
            LeafAction::Issue(LeafReason::Due),
            "still valid at notAfter, but long due"
        );
        let early = sub(l.cert().not_before(), SignedDuration::from_secs(1));
        assert_eq!(
            run(LeafState::Present(&l), ca.cert(), &names(), early),
            LeafAction::Issue(LeafReason::NotYetValid)
        );
        let mut more = names();
        more.push("qdrant.example.com".into());
        assert_eq!(
            run(LeafState::Present(&l), ca.cert(), &more, t0()),
            LeafAction::Issue(LeafReason::NamesChanged)
        );
        let mut reordered = names();
        reordered.reverse();
        assert_eq!(
            run(LeafState::Present(&l), ca.cert(), &reordered, t0()),
            LeafAction::Keep
        );
        let renewed = renew_ca(&ca, p.ca_lifetime, add(t0(), HOUR)).unwrap();
        assert_eq!(
            run(
                LeafState::Present(&l),
                renewed.cert(),
                &names(),
                add(t0(), HOUR)
            ),
            LeafAction::Issue(LeafReason::CaRenewed)
        );
        let fresh = leaf(&renewed, add(t0(), HOUR));
        assert_eq!(
            run(
                LeafState::Present(&fresh),
                renewed.cert(),
                &names(),
                add(t0(), HOUR)
            ),
            LeafAction::Keep
        );
    }

    #[test]
    fn a_leaf_without_client_auth_is_replaced() {
        // A certificate with only serverAuth, as a generic tool would issue it.
        let ca = ca();
        let mut params = rcgen::CertificateParams::new(names()).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = super::super::time::to_offset(t0()).unwrap();
        params.not_after = super::super::time::to_offset(add(t0(), DAY * 30)).unwrap();
        let key = super::super::cert::PrivateKey::generate_p256().unwrap();
        let der = params
            .signed_by(&key.key_pair().unwrap(), &ca.issuer().unwrap())
            .unwrap();
        let l = LeafMaterial::new(Certificate::from_der(der.der().to_vec()).unwrap(), key).unwrap();
        assert_eq!(
            decide(&l, &ca, Jitter::NONE, t0()).action,
            LeafAction::Issue(LeafReason::WrongUsage)
        );
    }

    #[test]
    fn the_previous_signer_keeps_a_usable_leaf_even_when_due() {
        let ca = ca();
        let l = leaf(&ca, t0());
        let other = issue_ca(
            &CaSubject::new("search", "vectors"),
            policy().ca_lifetime,
            t0(),
        )
        .unwrap();
        let late = sub(l.cert().not_after(), HOUR);
        let d = plan_leaf(
            &policy(),
            LeafState::Present(&l),
            other.cert(),
            Signer::Previous,
            &[],
            Jitter::NONE,
            late,
        );
        assert_eq!(d.action, LeafAction::Keep);
        assert_eq!(
            d.next_check,
            Some(add(l.cert().not_after(), SignedDuration::from_secs(1)))
        );
        let expired = add(l.cert().not_after(), HOUR);
        let d = plan_leaf(
            &policy(),
            LeafState::Present(&l),
            other.cert(),
            Signer::Previous,
            &[],
            Jitter::NONE,
            expired,
        );
        assert_eq!(d.action, LeafAction::Issue(LeafReason::Expired));
    }

    #[test]
    fn a_leaf_capped_by_its_ca_is_not_reissued_in_a_loop() {
        // An external CA ending in 10 days: every leaf ends with it; renewing cannot help.
        let short_ca = issue_ca(&CaSubject::new("search", "vectors"), DAY * 10, t0()).unwrap();
        let l = leaf(&short_ca, t0());
        assert_eq!(l.cert().not_after(), short_ca.cert().not_after());
        let d = decide(&l, &short_ca, Jitter::NONE, add(t0(), DAY));
        assert_eq!(d.action, LeafAction::Keep);
        assert_eq!(
            d.next_check,
            Some(add(l.cert().not_after(), SignedDuration::from_secs(1)))
        );
    }

    #[test]
    fn ca_decisions() {
        let p = policy();
        let ca = ca();
        let j = Jitter::NONE;
        let due = sub(ca.cert().not_after(), p.ca_renew_before());
        let keep = plan_ca(&p, CaState::Present(&ca), false, false, j, t0());
        assert_eq!(keep.action, CaAction::Keep);
        assert_eq!(keep.renewal_time, Some(due));
        assert_eq!(
            plan_ca(
                &p,
                CaState::Present(&ca),
                false,
                false,
                j,
                sub(due, SignedDuration::from_secs(1))
            )
            .action,
            CaAction::Keep
        );
        assert_eq!(
            plan_ca(&p, CaState::Present(&ca), false, false, j, due).action,
            CaAction::Renew(CaRenewReason::Due)
        );
        assert_eq!(
            plan_ca(&p, CaState::Present(&ca), false, true, j, due).action,
            CaAction::Keep,
            "waits for the rollover"
        );
        let dead = add(ca.cert().not_after(), SignedDuration::from_secs(1));
        assert_eq!(
            plan_ca(&p, CaState::Present(&ca), true, true, j, dead).action,
            CaAction::Renew(CaRenewReason::Expired)
        );
        assert_eq!(
            plan_ca(&p, CaState::Present(&ca), true, false, j, t0()).action,
            CaAction::Create(CaCreateReason::Requested)
        );
        assert_eq!(
            plan_ca(&p, CaState::Present(&ca), true, true, j, t0()).action,
            CaAction::Keep
        );
        assert_eq!(
            plan_ca(&p, CaState::Missing, false, false, j, t0()).action,
            CaAction::Create(CaCreateReason::Missing)
        );
        let e = TlsError::NotCa;
        assert_eq!(
            plan_ca(&p, CaState::Unusable(&e), false, false, j, t0()).action,
            CaAction::Create(CaCreateReason::Unusable(TlsError::NotCa))
        );
        // With jitter the CA renews up to an hour earlier, never later.
        let jj = Jitter::for_instance("search", "vectors", "u");
        let r = plan_ca(&p, CaState::Present(&ca), false, false, jj, t0())
            .renewal_time
            .unwrap();
        assert!(r <= due && r >= sub(due, MAX_JITTER));
    }

    #[test]
    fn requeue_picks_the_earliest_deadline() {
        let now = t0();
        assert_eq!(requeue_after(now, []), None);
        assert_eq!(requeue_after(now, [None, None]), None);
        assert_eq!(
            requeue_after(now, [Some(add(now, DAY)), None, Some(add(now, HOUR))]),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            requeue_after(now, [Some(sub(now, HOUR)), Some(add(now, HOUR))]),
            Some(Duration::ZERO)
        );
    }
}
