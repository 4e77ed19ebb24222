//! The one call the reconcile pipeline makes: from what the Secrets hold now, the policy and
//! the clock, to what they must hold and when to look again. Composes [`plan_ca`],
//! [`rollover::step`] and [`plan_leaf`] in the only safe order, and issues what they ask for.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::ca::{CaMaterial, CaSubject, issue_ca_for, permits, permitted_subtrees, renew_ca_for};
use super::cert::{Certificate, parse_bundle, secret_text};
use super::leaf::{LeafMaterial, issue_leaf};
use super::names::{
    CA_CRT, CA_ROTATION_HANDLED_ANNOTATION, ROLLOVER_PHASE_ANNOTATION, TLS_CRT, TlsError,
};
use super::renewal::{
    CaAction, CaState, Jitter, LeafAction, LeafState, TlsPolicy, plan_ca, plan_leaf, requeue_after,
};
use super::rollover::{self, Phase, RolloverDecision, RolloverInput, Signer, Transition};
use super::time::{add, whole_second};

/// While a rollover waits for a rollout, look again at least this often (StatefulSet events
/// normally trigger the reconcile sooner).
pub const ROLLOVER_POLL: Duration = Duration::from_secs(30);

/// Where the signing CA comes from.
#[derive(Clone, Copy, Debug)]
pub enum CaInput<'a> {
    /// The operator's own CA in `<n>-ca`.
    Managed {
        /// The data of `<n>-ca`; None when the Secret does not exist.
        secret: Option<&'a BTreeMap<String, ByteString>>,
        /// The SecureQdrant's [`super::names::ROTATE_CA_ANNOTATION`] value.
        rotation_requested: Option<&'a str>,
        /// `<n>-ca`'s [`CA_ROTATION_HANDLED_ANNOTATION`] value.
        rotation_handled: Option<&'a str>,
    },
    /// spec.tls.caSecretRef: the user's CA (`tls.crt`, `tls.key`). The operator signs with it
    /// and never changes it; when the user swaps it for another key, the rollover runs the same.
    External(&'a BTreeMap<String, ByteString>),
}

/// Everything [`converge`] looks at.
#[derive(Clone, Debug)]
pub struct TlsInputs<'a> {
    pub policy: TlsPolicy,
    pub subject: CaSubject,
    pub jitter: Jitter,
    /// [`super::serving_dns_names`] for the instance.
    pub dns_names: Vec<String>,
    pub ca: CaInput<'a>,
    /// The data of `<n>-tls`; None when the Secret does not exist.
    pub published: Option<&'a BTreeMap<String, ByteString>>,
    /// `<n>-tls`'s [`ROLLOVER_PHASE_ANNOTATION`] value.
    pub recorded_phase: Option<&'a str>,
    /// The [`PublishedTls::fingerprint`] every pod of the StatefulSet runs with, ready, once a
    /// rollout has finished (the pod template's [`super::names::TLS_FINGERPRINT_ANNOTATION`] when the
    /// StatefulSet's status shows updateRevision == currentRevision and all replicas ready and
    /// updated for its current generation); None while a rollout is in progress.
    pub rolled_out: Option<&'a str>,
    /// Every client certificate issued for the instance's applications chains to the CA that
    /// signs now (true when none are issued): the old CA of a key rollover is dropped only then.
    pub clients_on_current: bool,
    pub now: Timestamp,
}

/// A new `<n>-ca` to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaChange {
    pub material: CaMaterial,
    /// Why (Create or Renew).
    pub action: CaAction,
    /// The value for [`CA_ROTATION_HANDLED_ANNOTATION`].
    pub rotation_handled: Option<String>,
}

impl CaChange {
    /// The data of `<n>-ca`.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        self.material.to_secret_data()
    }

    /// The annotations of `<n>-ca`.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.rotation_handled
            .iter()
            .map(|v| (CA_ROTATION_HANDLED_ANNOTATION.to_owned(), v.clone()))
            .collect()
    }
}

/// What `<n>-tls` holds: the serving certificate, the trust bundle and the rollover phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedTls {
    pub leaf: LeafMaterial,
    pub trust_bundle: Vec<Certificate>,
    pub phase: Phase,
}

impl PublishedTls {
    /// The data of `<n>-tls`: `tls.crt`, `tls.key`, `ca.crt`.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        self.leaf.to_secret_data(&self.trust_bundle)
    }

    /// The annotations of `<n>-tls`.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            ROLLOVER_PHASE_ANNOTATION.to_owned(),
            self.phase.as_str().to_owned(),
        )])
    }

    /// SHA-256 (hex) of the serving certificate and the trust bundle: what the pods must run
    /// with. Put it on the pod template; it changes whenever a restart is needed.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.leaf.cert(), &self.trust_bundle)
    }
}

fn fingerprint(leaf: &Certificate, bundle: &[Certificate]) -> String {
    let mut h = Sha256::new();
    h.update(b"leaf\0");
    h.update(leaf.der());
    for c in bundle {
        h.update(b"\0ca\0");
        h.update(c.der());
    }
    hex::encode(h.finalize())
}

/// What `<n>-tls` holds now, read leniently: a broken part is reported, not fatal.
#[derive(Clone, Debug)]
pub struct ReadTls {
    pub leaf: Result<LeafMaterial, TlsError>,
    /// Empty when `ca.crt` is missing or unreadable.
    pub bundle: Vec<Certificate>,
}

/// Reads `<n>-tls` (None: the Secret does not exist).
pub fn read_published(data: Option<&BTreeMap<String, ByteString>>) -> ReadTls {
    let Some(data) = data else {
        return ReadTls {
            leaf: Err(TlsError::MissingKey(TLS_CRT)),
            bundle: Vec::new(),
        };
    };
    ReadTls {
        leaf: LeafMaterial::from_secret_data(data),
        bundle: secret_text(data, CA_CRT)
            .and_then(parse_bundle)
            .unwrap_or_default(),
    }
}

/// What must be written, and when to look again.
#[derive(Clone, Debug)]
pub struct TlsOutcome {
    /// Write `<n>-ca` (data and annotations) when Some. Always None for an external CA.
    pub ca_change: Option<CaChange>,
    /// The CA that signs now.
    pub ca: CaMaterial,
    /// What `<n>-tls` must hold.
    pub published: PublishedTls,
    /// `<n>-tls` differs from what was read (material or phase): write it, data and
    /// annotations in one update.
    pub tls_changed: bool,
    /// Whether (and why) the serving certificate was reissued.
    pub leaf_action: LeafAction,
    pub transition: Transition,
    /// For status.certificate: the serving certificate's notAfter and renewal time, the CA's
    /// notAfter.
    pub not_after: Timestamp,
    pub renewal_time: Timestamp,
    pub ca_not_after: Timestamp,
    /// The operator CA's renewal time (None for an external CA).
    pub ca_renewal_time: Option<Timestamp>,
    /// Requeue after this long: the earliest renewal, or [`ROLLOVER_POLL`] during a rollover.
    pub requeue_after: Duration,
    /// Wanted names the signing CA's name constraints do not permit, left out of the serving
    /// certificate (a name added after the CA was issued: a new CA key, `rotate-ca`, brings it).
    pub uncovered_names: Vec<String>,
}

/// Brings the TLS material to where the policy, the clock and the rollover want it. Pure apart
/// from the random source for new keys and serials. Errors: an unusable external CA, or an
/// issuing failure (an expired external CA, a bad DNS name).
pub fn converge(input: &TlsInputs<'_>) -> Result<TlsOutcome, TlsError> {
    let now = whole_second(input.now);
    let read = read_published(input.published);
    // 1. The CA.
    let (ca, ca_change, managed) = converge_ca(input, now)?;
    // 2. The rollover phase: which CAs to trust, who signs.
    let rollover = step_rollover(input, &read, ca.cert(), now);
    // 3. The serving certificate.
    let serving = converge_leaf(input, &read, &ca, rollover.signer, now)?;
    let published = PublishedTls {
        leaf: serving.leaf,
        trust_bundle: rollover.trust_bundle,
        phase: rollover.phase,
    };
    let tls_changed = tls_changed(&read, input.recorded_phase, &published);
    // 4. When to look again.
    let next = next_look(
        input,
        &ca,
        managed,
        &published,
        rollover.signer,
        &serving.dns_names,
        now,
    );
    Ok(TlsOutcome {
        uncovered_names: serving.uncovered_names,
        ca_change,
        not_after: published.leaf.cert().not_after(),
        ca_not_after: ca.cert().not_after(),
        ca,
        tls_changed,
        leaf_action: serving.action,
        transition: rollover.transition,
        renewal_time: next.renewal_time,
        ca_renewal_time: next.ca_renewal_time,
        requeue_after: next.requeue_after,
        published,
    })
}

/// The CA that signs now, the `<n>-ca` to write when it changes, and whether the operator
/// manages it.
fn converge_ca(
    input: &TlsInputs<'_>,
    now: Timestamp,
) -> Result<(CaMaterial, Option<CaChange>, bool), TlsError> {
    match input.ca {
        CaInput::External(data) => Ok((CaMaterial::from_secret_data(data)?, None, false)),
        CaInput::Managed {
            secret,
            rotation_requested,
            rotation_handled,
        } => {
            let (ca, change) =
                converge_managed_ca(input, secret, rotation_requested, rotation_handled, now)?;
            Ok((ca, change, true))
        }
    }
}

/// The operator's CA: kept, renewed on the same key, or replaced by a new key (missing,
/// unusable, or asked for through the rotate-ca annotation and not yet handled).
fn converge_managed_ca(
    input: &TlsInputs<'_>,
    secret: Option<&BTreeMap<String, ByteString>>,
    rotation_requested: Option<&str>,
    rotation_handled: Option<&str>,
    now: Timestamp,
) -> Result<(CaMaterial, Option<CaChange>), TlsError> {
    let policy = &input.policy;
    let recorded_rollover = input
        .recorded_phase
        .is_some_and(|p| p != Phase::Stable.as_str());
    let parsed = secret.map(CaMaterial::from_secret_data);
    let state = match &parsed {
        None => CaState::Missing,
        Some(Err(e)) => CaState::Unusable(e),
        Some(Ok(ca)) => CaState::Present(ca),
    };
    let requested = rotation_requested.is_some_and(|r| Some(r) != rotation_handled);
    let decision = plan_ca(
        policy,
        state,
        requested,
        recorded_rollover,
        input.jitter,
        now,
    );
    match (&decision.action, parsed) {
        (CaAction::Keep, Some(Ok(ca))) => Ok((ca, None)),
        (CaAction::Renew(_), Some(Ok(ca))) => {
            let renewed = renew_ca_for(
                &ca,
                &permitted_subtrees(&input.dns_names),
                policy.ca_lifetime,
                now,
            )?;
            let change = CaChange {
                material: renewed.clone(),
                action: decision.action.clone(),
                rotation_handled: rotation_handled.map(str::to_owned),
            };
            Ok((renewed, Some(change)))
        }
        _ => {
            let created = issue_ca_for(
                &input.subject,
                &permitted_subtrees(&input.dns_names),
                policy.ca_lifetime,
                now,
            )?;
            let change = CaChange {
                material: created.clone(),
                action: decision.action.clone(),
                rotation_handled: rotation_requested.or(rotation_handled).map(str::to_owned),
            };
            Ok((created, Some(change)))
        }
    }
}

/// One step of the rollover phase machine, given whether the pods run what `<n>-tls` holds.
fn step_rollover(
    input: &TlsInputs<'_>,
    read: &ReadTls,
    current: &Certificate,
    now: Timestamp,
) -> RolloverDecision {
    let rolled_out = match (&read.leaf, input.rolled_out) {
        (Ok(leaf), Some(running)) => running == fingerprint(leaf.cert(), &read.bundle),
        _ => false,
    };
    rollover::step(RolloverInput {
        recorded: input.recorded_phase,
        bundle: &read.bundle,
        leaf: read.leaf.as_ref().ok().map(LeafMaterial::cert),
        current,
        rolled_out,
        clients_on_current: input.clients_on_current,
        now,
    })
}

/// The serving certificate to publish, and the wanted names it carries or leaves out.
struct ServingLeaf {
    leaf: LeafMaterial,
    action: LeafAction,
    /// The wanted names the signing CA permits: the ones in the certificate.
    dns_names: Vec<String>,
    uncovered_names: Vec<String>,
}

/// The serving certificate, kept or issued for the wanted names the signing CA's name
/// constraints permit (a name added to extraDnsNames after the operator's CA was issued comes
/// with the next CA key: see [`TlsOutcome::uncovered_names`]).
fn converge_leaf(
    input: &TlsInputs<'_>,
    read: &ReadTls,
    ca: &CaMaterial,
    signer: Signer,
    now: Timestamp,
) -> Result<ServingLeaf, TlsError> {
    let permitted = ca.cert().info().permitted_dns.clone();
    let (dns_names, uncovered_names): (Vec<String>, Vec<String>) = input
        .dns_names
        .iter()
        .cloned()
        .partition(|n| permits(permitted.as_deref(), n));
    let leaf_state = match &read.leaf {
        Ok(leaf) => LeafState::Present(leaf),
        Err(TlsError::MissingKey(_)) => LeafState::Missing,
        Err(e) => LeafState::Unusable(e),
    };
    let decision = plan_leaf(
        &input.policy,
        leaf_state,
        ca.cert(),
        signer,
        &dns_names,
        input.jitter,
        now,
    );
    let leaf = match (&decision.action, &read.leaf) {
        (LeafAction::Keep, Ok(leaf)) => leaf.clone(),
        _ => issue_leaf(ca, &dns_names, input.policy.certificate_lifetime, now)?,
    };
    Ok(ServingLeaf {
        leaf,
        action: decision.action,
        dns_names,
        uncovered_names,
    })
}

/// `<n>-tls` must be written: its material or phase differs from what was read.
fn tls_changed(read: &ReadTls, recorded_phase: Option<&str>, published: &PublishedTls) -> bool {
    match &read.leaf {
        Ok(old) => {
            *old != published.leaf
                || read.bundle != published.trust_bundle
                || recorded_phase.unwrap_or(Phase::Stable.as_str()) != published.phase.as_str()
        }
        Err(_) => true,
    }
}

/// The renewal times of the result, and when to look again.
struct NextLook {
    renewal_time: Timestamp,
    ca_renewal_time: Option<Timestamp>,
    requeue_after: Duration,
}

/// When to look again: re-plans on the result (both answer Keep with their deadlines), and
/// polls while a rollover runs.
fn next_look(
    input: &TlsInputs<'_>,
    ca: &CaMaterial,
    managed: bool,
    published: &PublishedTls,
    signer: Signer,
    dns_names: &[String],
    now: Timestamp,
) -> NextLook {
    let policy = &input.policy;
    let ca_renewal_time = managed
        .then(|| {
            plan_ca(
                policy,
                CaState::Present(ca),
                false,
                published.phase != Phase::Stable,
                input.jitter,
                now,
            )
            .renewal_time
        })
        .flatten();
    let after = plan_leaf(
        policy,
        LeafState::Present(&published.leaf),
        ca.cert(),
        signer,
        dns_names,
        input.jitter,
        now,
    );
    let renewal_time = after
        .renewal_time
        .unwrap_or(published.leaf.cert().not_after());
    let poll = (published.phase != Phase::Stable).then(|| {
        add(
            now,
            k8s_openapi::jiff::SignedDuration::from_secs(ROLLOVER_POLL.as_secs() as i64),
        )
    });
    let requeue_after = requeue_after(now, [after.next_check, ca_renewal_time, poll])
        .unwrap_or(ROLLOVER_POLL)
        .max(Duration::from_secs(1));
    NextLook {
        renewal_time,
        ca_renewal_time,
        requeue_after,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::super::ca::issue_ca;
    use super::super::leaf::serving_dns_names;
    use super::super::renewal::{CaCreateReason, CaRenewReason, LeafReason};
    use super::super::time::sub;
    use super::*;

    fn t0() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    /// The Secrets as the API server would hold them, and the pods' rollout state.
    #[derive(Clone, Default)]
    struct World {
        ca: Option<BTreeMap<String, ByteString>>,
        ca_annotations: BTreeMap<String, String>,
        tls: Option<BTreeMap<String, ByteString>>,
        tls_annotations: BTreeMap<String, String>,
        request: Option<String>,
        /// The fingerprint every pod runs with, once a rollout finished.
        running: Option<String>,
    }

    impl World {
        fn inputs(&self, now: Timestamp) -> TlsInputs<'_> {
            TlsInputs {
                policy: TlsPolicy::default(),
                subject: CaSubject::new("search", "vectors"),
                jitter: Jitter::for_instance("search", "vectors", "0b7c"),
                dns_names: serving_dns_names("vectors", "search", "cluster.local", &[]),
                ca: CaInput::Managed {
                    secret: self.ca.as_ref(),
                    rotation_requested: self.request.as_deref(),
                    rotation_handled: self
                        .ca_annotations
                        .get(CA_ROTATION_HANDLED_ANNOTATION)
                        .map(String::as_str),
                },
                published: self.tls.as_ref(),
                recorded_phase: self
                    .tls_annotations
                    .get(ROLLOVER_PHASE_ANNOTATION)
                    .map(String::as_str),
                rolled_out: self.running.as_deref(),
                clients_on_current: true,
                now,
            }
        }

        /// One reconcile: converge, then write what it says.
        fn reconcile(&mut self, now: Timestamp) -> TlsOutcome {
            let out = converge(&self.inputs(now)).unwrap();
            if let Some(change) = &out.ca_change {
                self.ca = Some(change.secret_data());
                self.ca_annotations = change.annotations();
            }
            if out.tls_changed {
                self.tls = Some(out.published.to_secret_data());
                self.tls_annotations = out.published.annotations();
            }
            out
        }

        /// The StatefulSet finished rolling out the published material.
        fn roll(&mut self) {
            let read = read_published(self.tls.as_ref());
            let leaf = read.leaf.unwrap();
            self.running = Some(fingerprint(leaf.cert(), &read.bundle));
        }

        fn phase(&self) -> &str {
            &self.tls_annotations[ROLLOVER_PHASE_ANNOTATION]
        }
    }

    #[test]
    fn a_fresh_instance_gets_a_ca_and_a_leaf_and_then_nothing_changes() {
        let mut w = World::default();
        let out = w.reconcile(t0());
        let change = out.ca_change.as_ref().unwrap();
        assert_eq!(change.action, CaAction::Create(CaCreateReason::Missing));
        assert_eq!(out.leaf_action, LeafAction::Issue(LeafReason::Missing));
        assert!(out.tls_changed);
        assert_eq!(out.published.phase, Phase::Stable);
        assert_eq!(out.published.trust_bundle, vec![out.ca.cert().clone()]);
        assert!(out.published.leaf.cert().is_signed_by(out.ca.cert()));
        assert_eq!(out.not_after, add(t0(), SignedDuration::from_hours(2160)));
        assert_eq!(
            out.requeue_after.as_secs() as i64,
            out.renewal_time.duration_since(t0()).as_secs()
        );
        // Renewal a third before the end, pulled earlier by at most the jitter.
        let deadline = sub(out.not_after, SignedDuration::from_hours(720));
        assert!(out.renewal_time <= deadline);
        assert!(out.renewal_time >= sub(deadline, SignedDuration::from_hours(1)));

        let later = add(t0(), SignedDuration::from_hours(10));
        let again = w.reconcile(later);
        assert!(again.ca_change.is_none());
        assert!(!again.tls_changed);
        assert_eq!(again.leaf_action, LeafAction::Keep);
        assert_eq!(again.transition, Transition::Stay);
        assert_eq!(again.published, out.published);
        assert_eq!(
            again.requeue_after.as_secs() as i64,
            out.renewal_time.duration_since(later).as_secs()
        );
    }

    #[test]
    fn leaf_renewal_happens_at_renewal_time_and_not_a_second_before() {
        let mut w = World::default();
        let first = w.reconcile(t0());
        let before = sub(first.renewal_time, SignedDuration::from_secs(1));
        let out = w.reconcile(before);
        assert_eq!(out.leaf_action, LeafAction::Keep);
        assert_eq!(out.requeue_after, Duration::from_secs(1));
        let out = w.reconcile(first.renewal_time);
        assert_eq!(out.leaf_action, LeafAction::Issue(LeafReason::Due));
        assert!(out.tls_changed && out.ca_change.is_none());
        assert_eq!(out.published.phase, Phase::Stable);
        assert_eq!(
            out.not_after,
            add(first.renewal_time, SignedDuration::from_hours(2160))
        );
    }

    #[test]
    fn ca_renewal_keeps_the_key_and_reissues_the_leaf() {
        let mut w = World {
            request: Some("r1".into()),
            ..World::default()
        };
        let first = w.reconcile(t0());
        assert_eq!(
            first
                .ca_change
                .as_ref()
                .unwrap()
                .rotation_handled
                .as_deref(),
            Some("r1"),
            "a request present at creation is already satisfied"
        );
        let due = first.ca_renewal_time.unwrap();
        // The leaf renews several times before; keep it current.
        let mut now = first.renewal_time;
        while now < due {
            let out = w.reconcile(now);
            now = out.renewal_time.min(due);
        }
        let out = w.reconcile(due);
        let change = out.ca_change.as_ref().unwrap();
        assert_eq!(change.action, CaAction::Renew(CaRenewReason::Due));
        assert!(change.material.cert().same_key(first.ca.cert()));
        assert_eq!(change.rotation_handled.as_deref(), Some("r1"));
        assert_eq!(out.leaf_action, LeafAction::Issue(LeafReason::CaRenewed));
        assert_eq!(out.published.phase, Phase::Stable, "same key: no rollover");
        assert_eq!(out.published.trust_bundle, vec![out.ca.cert().clone()]);
        assert_eq!(out.ca_not_after, add(due, SignedDuration::from_hours(8760)));
    }

    #[test]
    fn expired_material_is_replaced_at_once() {
        let mut w = World::default();
        let first = w.reconcile(t0());
        // Nobody ran the operator for two years.
        let late = add(first.ca_not_after, SignedDuration::from_hours(24 * 365));
        let out = w.reconcile(late);
        assert_eq!(
            out.ca_change.as_ref().unwrap().action,
            CaAction::Renew(CaRenewReason::Expired)
        );
        assert_eq!(out.leaf_action, LeafAction::Issue(LeafReason::Expired));
        assert_eq!(out.published.phase, Phase::Stable);
        assert!(out.published.leaf.cert().valid_at(late));
        assert!(out.ca.cert().valid_at(late));
    }

    #[test]
    fn a_lost_ca_key_rolls_over_through_every_phase() {
        let mut w = World::default();
        let first = w.reconcile(t0());
        w.roll();
        let old_leaf = first.published.leaf.clone();
        w.ca = None; // someone deleted <n>-ca
        let mut now = add(t0(), SignedDuration::from_hours(1));

        let out = w.reconcile(now);
        assert_eq!(
            out.ca_change.as_ref().unwrap().action,
            CaAction::Create(CaCreateReason::Missing)
        );
        assert_eq!(out.transition, Transition::Started);
        assert_eq!(w.phase(), "TrustBoth");
        assert_eq!(
            out.published.leaf, old_leaf,
            "leaves stay until all trust both"
        );
        assert_eq!(
            out.published.trust_bundle,
            vec![first.ca.cert().clone(), out.ca.cert().clone()]
        );
        let new_ca = out.ca.clone();

        // Not rolled out: reconciles change nothing, the poll is short.
        now = add(now, SignedDuration::from_mins(1));
        let out = w.reconcile(now);
        assert!(!out.tls_changed && out.ca_change.is_none());
        assert_eq!(out.requeue_after, ROLLOVER_POLL);

        w.roll();
        let out = w.reconcile(now);
        assert_eq!(out.transition, Transition::Advanced);
        assert_eq!(w.phase(), "SignWithNew");
        assert!(out.published.leaf.cert().is_signed_by(new_ca.cert()));
        assert_eq!(out.leaf_action, LeafAction::Issue(LeafReason::WrongIssuer));
        assert_eq!(out.published.trust_bundle.len(), 2);

        // The fingerprint of the previous phase does not count for this one.
        let out = w.reconcile(now);
        assert_eq!((out.transition, out.tls_changed), (Transition::Stay, false));

        w.roll();
        let out = w.reconcile(now);
        assert_eq!(w.phase(), "DropOld");
        assert_eq!(out.published.trust_bundle, vec![new_ca.cert().clone()]);
        assert_eq!(out.leaf_action, LeafAction::Keep);

        w.roll();
        let out = w.reconcile(now);
        assert_eq!(
            (out.transition, w.phase()),
            (Transition::Finished, "Stable")
        );
        assert!(out.tls_changed, "the phase annotation changes");
        let out = w.reconcile(now);
        assert!(!out.tls_changed && out.ca_change.is_none());
        assert!(out.requeue_after > ROLLOVER_POLL);
    }

    #[test]
    fn a_rotation_request_replaces_the_key_once_and_waits_for_a_running_rollover() {
        let mut w = World::default();
        let first = w.reconcile(t0());
        w.roll();
        w.request = Some("2030-01-02".into());
        let out = w.reconcile(t0());
        let change = out.ca_change.as_ref().unwrap();
        assert_eq!(change.action, CaAction::Create(CaCreateReason::Requested));
        assert!(!change.material.cert().same_key(first.ca.cert()));
        assert_eq!(w.phase(), "TrustBoth");

        // The same request again does nothing; a new one waits for the rollover to end.
        assert!(w.reconcile(t0()).ca_change.is_none());
        w.request = Some("2030-01-03".into());
        assert!(w.reconcile(t0()).ca_change.is_none());
        for _ in 0..3 {
            w.roll();
            w.reconcile(t0());
        }
        assert_eq!(w.phase(), "Stable");
        let out = w.reconcile(t0());
        assert_eq!(
            out.ca_change.as_ref().unwrap().action,
            CaAction::Create(CaCreateReason::Requested)
        );
        assert_eq!(w.phase(), "TrustBoth");
    }

    #[test]
    fn an_interrupted_rollover_resumes_from_what_was_written() {
        // Crash after writing <n>-ca but before <n>-tls: the next run starts the rollover.
        let mut w = World::default();
        w.reconcile(t0());
        w.roll();
        w.ca = None;
        let out = converge(&w.inputs(t0())).unwrap();
        w.ca = Some(out.ca_change.unwrap().secret_data()); // only <n>-ca got written
        let out = w.reconcile(t0());
        assert!(out.ca_change.is_none(), "the new CA is kept");
        assert_eq!(out.transition, Transition::Started);
        assert_eq!(w.phase(), "TrustBoth");

        // Crash after each later phase: a fresh World with the same Secrets continues.
        for expected in ["SignWithNew", "DropOld", "Stable"] {
            w.roll();
            let restarted = w.clone(); // a new operator process reads the same objects
            let mut w2 = restarted;
            w2.reconcile(t0());
            assert_eq!(w2.phase(), expected);
            w = w2;
        }
    }

    #[test]
    fn an_external_ca_is_used_and_never_written() {
        let user_ca = issue_ca(
            &CaSubject::new("pki", "corp"),
            SignedDuration::from_hours(8760),
            t0(),
        )
        .unwrap();
        let data = user_ca.to_secret_data();
        let world = World::default();
        let mut input = world.inputs(t0());
        input.ca = CaInput::External(&data);
        let out = converge(&input).unwrap();
        assert!(out.ca_change.is_none());
        assert_eq!(out.ca_renewal_time, None);
        assert!(out.published.leaf.cert().is_signed_by(user_ca.cert()));

        let broken = BTreeMap::new();
        input.ca = CaInput::External(&broken);
        assert_eq!(
            converge(&input).unwrap_err(),
            TlsError::MissingKey(super::super::names::TLS_CRT)
        );
        // An expired external CA cannot sign.
        let mut input = world.inputs(add(
            user_ca.cert().not_after(),
            SignedDuration::from_hours(1),
        ));
        input.ca = CaInput::External(&data);
        assert!(matches!(converge(&input), Err(TlsError::CaExpired(_))));
    }

    #[test]
    fn changed_names_reissue_the_leaf_within_the_cas_name_constraints() {
        let mut w = World::default();
        w.reconcile(t0());
        let mut input = w.inputs(t0());
        // A name removed: the leaf is reissued without it.
        let removed = input.dns_names.remove(0);
        let out = converge(&input).unwrap();
        assert_eq!(out.leaf_action, LeafAction::Issue(LeafReason::NamesChanged));
        assert!(
            !out.published
                .leaf
                .cert()
                .info()
                .dns_names
                .contains(&removed)
        );
        // A name the CA's constraints do not permit (added after it was issued): left out and
        // reported, never signed by this CA.
        let mut input = w.inputs(t0());
        input.dns_names.push("qdrant.example.com".into());
        let out = converge(&input).unwrap();
        assert_eq!(out.leaf_action, LeafAction::Keep);
        assert_eq!(out.uncovered_names, ["qdrant.example.com"]);
        assert!(out.ca_change.is_none());
    }

    #[test]
    fn a_broken_ca_secret_is_replaced_through_a_rollover() {
        let mut w = World::default();
        w.reconcile(t0());
        w.roll();
        let mut ca = w.ca.clone().unwrap();
        ca.insert("tls.key".into(), ByteString(b"not a key".to_vec()));
        w.ca = Some(ca);
        let out = w.reconcile(t0());
        assert!(matches!(
            out.ca_change.unwrap().action,
            CaAction::Create(CaCreateReason::Unusable(TlsError::BadKey(_)))
        ));
        assert_eq!(w.phase(), "TrustBoth");
    }

    #[test]
    fn the_fingerprint_follows_leaf_and_bundle() {
        let mut w = World::default();
        let a = w.reconcile(t0()).published;
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.phase = Phase::DropOld;
        assert_eq!(
            a.fingerprint(),
            b.fingerprint(),
            "the phase alone needs no restart"
        );
        b.trust_bundle.push(b.trust_bundle[0].clone());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }
}
