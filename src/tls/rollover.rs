//! Replacing a CA key without a moment where two peers distrust each other.
//!
//! Qdrant reads its CA and its gRPC/p2p certificate only at start, and a StatefulSet rolls one
//! pod at a time, so old and new pods always coexist. The key changes in three rolled phases:
//!
//! | phase | trust bundle (`ca.crt`) | serving certificates from | safe because, during its roll |
//! |---|---|---|---|
//! | [`Phase::TrustBoth`] | old + new | old CA (kept as they are) | every leaf is old, every pod trusts old |
//! | [`Phase::SignWithNew`] | old + new | new CA | every pod already trusts old and new |
//! | [`Phase::DropOld`] | new | new CA | every leaf is already new |
//!
//! then [`Phase::Stable`] again. A phase advances only when the caller reports that every pod
//! runs the material the current phase published ([`RolloverInput::rolled_out`]). With client
//! certificates required, SignWithNew also waits until every client certificate the operator
//! issued to applications comes from the new CA ([`RolloverInput::clients_on_current`]): the
//! old CA leaves the pods' trust only when no client depends on it.
//!
//! The decision is made from the material itself (the published bundle and leaf, and the CA
//! that signs now); the phase recorded in the `<n>-tls` annotation must agree before anything
//! advances. So a restart at any point resumes where it stopped, a lost or edited annotation is
//! repaired rather than trusted, and a CA that changes again mid-rollover (a second request, a
//! user's new CA) restarts at TrustBoth with every CA still in use.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::cert::Certificate;
use super::time::whole_second;

/// A CA key rollover phase, stored as its name in the `<n>-tls` annotation
/// [`super::names::ROLLOVER_PHASE_ANNOTATION`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// No rollover: the bundle holds the current CA only.
    #[default]
    Stable,
    /// The bundle holds old and new CA; serving certificates are still the old CA's.
    TrustBoth,
    /// The bundle holds old and new CA; serving certificates come from the new CA.
    SignWithNew,
    /// The bundle holds the new CA only.
    DropOld,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Stable,
        Phase::TrustBoth,
        Phase::SignWithNew,
        Phase::DropOld,
    ];

    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "Stable",
            Phase::TrustBoth => "TrustBoth",
            Phase::SignWithNew => "SignWithNew",
            Phase::DropOld => "DropOld",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An annotation value that names no phase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown CA rollover phase {0:?}")]
pub struct UnknownPhase(pub String);

impl FromStr for Phase {
    type Err = UnknownPhase;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPhase(s.to_owned()))
    }
}

/// Which CA the serving certificate must come from in this phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// Keep the published serving certificate as it is (it was signed by a CA being retired).
    Previous,
    /// The current CA.
    Current,
}

/// How the phase moved, for Events and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Same phase as recorded.
    Stay,
    /// A rollover starts: the CA that signs now is not yet trusted by the pods.
    Started,
    /// The previous phase rolled out; the next one begins.
    Advanced,
    /// The rollover is over.
    Finished,
    /// The CA changed again during a rollover: back to TrustBoth with every CA still in use.
    Restarted,
    /// The published certificate is expired, missing or not trusted by the published bundle:
    /// there is no working trust to preserve, so the new CA takes over at once.
    Aborted,
    /// The recorded phase was missing, unknown or disagreed with the material; it is
    /// rewritten from the material before anything advances.
    Recovered,
}

/// What the rollover step looks at.
#[derive(Clone, Copy, Debug)]
pub struct RolloverInput<'a> {
    /// The `<n>-tls` annotation value; None when absent (Stable).
    pub recorded: Option<&'a str>,
    /// The published trust bundle (`ca.crt` of `<n>-tls`); empty when there is none.
    pub bundle: &'a [Certificate],
    /// The published serving certificate; None when missing or unreadable.
    pub leaf: Option<&'a Certificate>,
    /// The CA that signs from now on (the operator's current CA, or the user's).
    pub current: &'a Certificate,
    /// Every pod runs, ready, with the material currently published (the caller compares the
    /// pod-template fingerprint of a finished StatefulSet rollout with the published one).
    pub rolled_out: bool,
    /// Every client certificate the operator issued for this instance's applications chains to
    /// `current` (true when it issues none). The old CA leaves the pods' trust only then:
    /// a client still holding an old-CA certificate would be refused.
    pub clients_on_current: bool,
    pub now: Timestamp,
}

/// What to publish in this phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloverDecision {
    pub phase: Phase,
    /// The certificates for `ca.crt`: retired CAs still in use first, the current CA last.
    pub trust_bundle: Vec<Certificate>,
    pub signer: Signer,
    pub transition: Transition,
}

/// One step of the phase machine. Call it on every reconcile; it advances at most one phase.
pub fn step(input: RolloverInput<'_>) -> RolloverDecision {
    let now = whole_second(input.now);
    let current = input.current;
    let (recorded, record_valid) = match input.recorded.map(Phase::from_str) {
        None => (Phase::Stable, true),
        Some(Ok(p)) => (p, true),
        Some(Err(_)) => (Phase::Stable, false),
    };

    let mut old: Vec<Certificate> = Vec::new();
    for c in input.bundle {
        if !c.same_key(current) && !old.iter().any(|o| o.der() == c.der()) {
            old.push(c.clone());
        }
    }
    let current_trusted = input.bundle.iter().any(|c| c.same_key(current));
    let leaf_live = input.leaf.is_some_and(|l| l.valid_at(now));
    let leaf_trusted = input
        .leaf
        .is_some_and(|l| input.bundle.iter().any(|c| l.is_signed_by(c)));
    let leaf_from_current = input.leaf.is_some_and(|l| l.is_signed_by(current));

    let decide = |phase: Phase, signer: Signer, transition: Transition| {
        let mut trust_bundle = match phase {
            Phase::TrustBoth | Phase::SignWithNew => old.clone(),
            Phase::Stable | Phase::DropOld => Vec::new(),
        };
        trust_bundle.push(current.clone());
        let transition = match transition {
            Transition::Stay if phase != recorded || !record_valid => Transition::Recovered,
            t => t,
        };
        RolloverDecision {
            phase,
            trust_bundle,
            signer,
            transition,
        }
    };
    let agrees = |phase: Phase| record_valid && recorded == phase;

    if !leaf_live || !leaf_trusted {
        let t = if agrees(Phase::Stable) {
            Transition::Stay
        } else {
            Transition::Aborted
        };
        return decide(Phase::Stable, Signer::Current, t);
    }
    if !current_trusted {
        let t = if agrees(Phase::Stable) {
            Transition::Started
        } else {
            Transition::Restarted
        };
        return decide(Phase::TrustBoth, Signer::Previous, t);
    }
    if old.is_empty() {
        // Only the current CA is published and the leaf chains to it.
        return if agrees(Phase::Stable) {
            decide(Phase::Stable, Signer::Current, Transition::Stay)
        } else if agrees(Phase::DropOld) && input.rolled_out {
            decide(Phase::Stable, Signer::Current, Transition::Finished)
        } else {
            decide(Phase::DropOld, Signer::Current, Transition::Stay)
        };
    }
    if !leaf_from_current {
        // Old and new trusted, old leaf: TrustBoth material.
        if agrees(Phase::TrustBoth) && input.rolled_out {
            return decide(Phase::SignWithNew, Signer::Current, Transition::Advanced);
        }
        return decide(Phase::TrustBoth, Signer::Previous, Transition::Stay);
    }
    // Old and new trusted, new leaf: SignWithNew material.
    if agrees(Phase::SignWithNew) && input.rolled_out && input.clients_on_current {
        return decide(Phase::DropOld, Signer::Current, Transition::Advanced);
    }
    decide(Phase::SignWithNew, Signer::Current, Transition::Stay)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::super::ca::{CaMaterial, CaSubject, issue_ca};
    use super::super::leaf::{LeafMaterial, issue_leaf, serving_dns_names};
    use super::super::time::add;
    use super::*;

    fn t0() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn new_ca() -> CaMaterial {
        issue_ca(
            &CaSubject::new("search", "vectors"),
            SignedDuration::from_hours(8760),
            t0(),
        )
        .unwrap()
    }

    fn leaf(ca: &CaMaterial) -> LeafMaterial {
        issue_leaf(
            ca,
            &serving_dns_names("vectors", "search", "cluster.local", &[]),
            SignedDuration::from_hours(2160),
            t0(),
        )
        .unwrap()
    }

    fn run(
        recorded: Option<&str>,
        bundle: &[&CaMaterial],
        leaf: Option<&LeafMaterial>,
        current: &CaMaterial,
        rolled_out: bool,
    ) -> RolloverDecision {
        let bundle: Vec<Certificate> = bundle.iter().map(|c| c.cert().clone()).collect();
        step(RolloverInput {
            recorded,
            bundle: &bundle,
            leaf: leaf.map(|l| l.cert()),
            current: current.cert(),
            rolled_out,
            clients_on_current: true,
            now: add(t0(), SignedDuration::from_hours(1)),
        })
    }

    fn certs(cas: &[&CaMaterial]) -> Vec<Certificate> {
        cas.iter().map(|c| c.cert().clone()).collect()
    }

    #[test]
    fn phases_round_trip_through_their_annotation_value() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(
            "trustboth".parse::<Phase>(),
            Err(UnknownPhase("trustboth".into()))
        );
        assert_eq!(Phase::default(), Phase::Stable);
    }

    #[test]
    fn stable_stays_stable() {
        let a = new_ca();
        let l = leaf(&a);
        for recorded in [None, Some("Stable")] {
            let d = run(recorded, &[&a], Some(&l), &a, false);
            assert_eq!(
                (d.phase, d.signer, d.transition),
                (Phase::Stable, Signer::Current, Transition::Stay)
            );
            assert_eq!(d.trust_bundle, certs(&[&a]));
        }
    }

    #[test]
    fn the_full_rollover_advances_only_after_each_rollout() {
        let (a, b) = (new_ca(), new_ca());
        let (la, lb) = (leaf(&a), leaf(&b));

        // The signing CA became B while pods trust only A and hold A's leaf.
        let d = run(Some("Stable"), &[&a], Some(&la), &b, true);
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::TrustBoth, Signer::Previous, Transition::Started)
        );
        assert_eq!(d.trust_bundle, certs(&[&a, &b]));

        // Published TrustBoth, not rolled out yet: stay.
        let d = run(Some("TrustBoth"), &[&a, &b], Some(&la), &b, false);
        assert_eq!((d.phase, d.signer), (Phase::TrustBoth, Signer::Previous));
        assert_eq!(d.transition, Transition::Stay);

        // Rolled out: leaves from B now.
        let d = run(Some("TrustBoth"), &[&a, &b], Some(&la), &b, true);
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::SignWithNew, Signer::Current, Transition::Advanced)
        );
        assert_eq!(d.trust_bundle, certs(&[&a, &b]));

        // Published SignWithNew with B's leaf; waiting, then drop A.
        let d = run(Some("SignWithNew"), &[&a, &b], Some(&lb), &b, false);
        assert_eq!(
            (d.phase, d.transition),
            (Phase::SignWithNew, Transition::Stay)
        );
        let d = run(Some("SignWithNew"), &[&a, &b], Some(&lb), &b, true);
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::DropOld, Signer::Current, Transition::Advanced)
        );
        assert_eq!(d.trust_bundle, certs(&[&b]));

        // Published DropOld; waiting, then Stable.
        let d = run(Some("DropOld"), &[&b], Some(&lb), &b, false);
        assert_eq!((d.phase, d.transition), (Phase::DropOld, Transition::Stay));
        let d = run(Some("DropOld"), &[&b], Some(&lb), &b, true);
        assert_eq!(
            (d.phase, d.transition),
            (Phase::Stable, Transition::Finished)
        );
        assert_eq!(d.trust_bundle, certs(&[&b]));
    }

    #[test]
    fn signwithnew_before_its_leaf_is_published_does_not_advance() {
        // Recorded SignWithNew but the published leaf is still A's (the caller has not yet
        // written the new leaf): that is TrustBoth material, so nothing advances.
        let (a, b) = (new_ca(), new_ca());
        let la = leaf(&a);
        let d = run(Some("SignWithNew"), &[&a, &b], Some(&la), &b, true);
        assert_eq!(d.phase, Phase::TrustBoth);
        assert_eq!(d.signer, Signer::Previous);
        assert_eq!(d.transition, Transition::Recovered);
    }

    #[test]
    fn the_old_ca_stays_trusted_until_every_client_certificate_moved() {
        let (a, b) = (new_ca(), new_ca());
        let lb = leaf(&b);
        let bundle = certs(&[&a, &b]);
        let input = |clients_on_current| RolloverInput {
            recorded: Some("SignWithNew"),
            bundle: &bundle,
            leaf: Some(lb.cert()),
            current: b.cert(),
            rolled_out: true,
            clients_on_current,
            now: add(t0(), SignedDuration::from_hours(1)),
        };
        let d = step(input(false));
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::SignWithNew, Signer::Current, Transition::Stay)
        );
        assert_eq!(d.trust_bundle, certs(&[&a, &b]), "A still trusted");
        let d = step(input(true));
        assert_eq!(
            (d.phase, d.transition),
            (Phase::DropOld, Transition::Advanced)
        );
        // The earlier phases do not wait for clients (they still hold A's certificates, which
        // both bundles trust).
        let la = leaf(&a);
        let d = step(RolloverInput {
            recorded: Some("TrustBoth"),
            leaf: Some(la.cert()),
            ..input(false)
        });
        assert_eq!(
            (d.phase, d.transition),
            (Phase::SignWithNew, Transition::Advanced)
        );
    }

    #[test]
    fn nothing_to_preserve_means_no_rollover() {
        let (a, b) = (new_ca(), new_ca());
        // No published material at all: a fresh instance.
        let d = run(None, &[], None, &b, false);
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::Stable, Signer::Current, Transition::Stay)
        );
        assert_eq!(d.trust_bundle, certs(&[&b]));
        // An expired leaf: peers cannot talk anyway, so the new CA takes over at once.
        let la = leaf(&a);
        let bundle = certs(&[&a, &b]);
        let d = step(RolloverInput {
            recorded: Some("TrustBoth"),
            bundle: &bundle,
            leaf: Some(la.cert()),
            current: b.cert(),
            rolled_out: false,
            clients_on_current: true,
            now: add(la.cert().not_after(), SignedDuration::from_secs(1)),
        });
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::Stable, Signer::Current, Transition::Aborted)
        );
        // A leaf the published bundle does not trust.
        let c = new_ca();
        let lc = leaf(&c);
        let d = run(None, &[&a], Some(&lc), &b, false);
        assert_eq!((d.phase, d.transition), (Phase::Stable, Transition::Stay));
    }

    #[test]
    fn a_ca_change_mid_rollover_restarts_with_every_ca_in_use() {
        let (a, b, c) = (new_ca(), new_ca(), new_ca());
        let lb = leaf(&b);
        // In SignWithNew (bundle A+B, B's leaf) the signing CA becomes C.
        let d = run(Some("SignWithNew"), &[&a, &b], Some(&lb), &c, true);
        assert_eq!(
            (d.phase, d.signer, d.transition),
            (Phase::TrustBoth, Signer::Previous, Transition::Restarted)
        );
        assert_eq!(d.trust_bundle, certs(&[&a, &b, &c]));
        // In DropOld (bundle B) the signing CA becomes C.
        let d = run(Some("DropOld"), &[&b], Some(&lb), &c, false);
        assert_eq!(d.phase, Phase::TrustBoth);
        assert_eq!(d.trust_bundle, certs(&[&b, &c]));
    }

    #[test]
    fn lost_or_garbled_records_are_recovered_from_the_material() {
        let (a, b) = (new_ca(), new_ca());
        let (la, lb) = (leaf(&a), leaf(&b));
        for recorded in [None, Some("garbage"), Some("Stable"), Some("DropOld")] {
            // TrustBoth material.
            let d = run(recorded, &[&a, &b], Some(&la), &b, true);
            assert_eq!(
                (d.phase, d.signer, d.transition),
                (Phase::TrustBoth, Signer::Previous, Transition::Recovered),
                "{recorded:?}"
            );
            // SignWithNew material.
            let d = run(recorded, &[&a, &b], Some(&lb), &b, true);
            assert_eq!(
                (d.phase, d.transition),
                (Phase::SignWithNew, Transition::Recovered),
                "{recorded:?}"
            );
        }
        // New-only material with a garbled record: DropOld first, Stable after the rollout.
        let d = run(Some("garbage"), &[&b], Some(&lb), &b, true);
        assert_eq!(
            (d.phase, d.transition),
            (Phase::DropOld, Transition::Recovered)
        );
        // Duplicated bundle entries collapse.
        let d = run(Some("TrustBoth"), &[&a, &a, &b], Some(&la), &b, false);
        assert_eq!(d.trust_bundle, certs(&[&a, &b]));
    }
}
