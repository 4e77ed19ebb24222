//! Status: computed from what was decided and what the StatefulSet reports (pure), then written
//! to the status subresource only when it changed.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use super::metrics_client::METRICS_CLIENT_CERTIFICATE_READY;
use super::plan::{History, Refusal};
use super::recent::Recent;
use super::tls::TlsReport;
use crate::children::meta::MANAGER;
pub use crate::conditions::{CHILD_CONFLICT, SECRET_NOT_ALLOWED, set_condition};
use crate::crd::{Endpoints, Phase, SecretNames, SecureQdrant, SecureQdrantStatus};
use crate::error::{Error, Result};
use crate::qdrant::{GRPC_PORT, HTTP_PORT};
use crate::statefulset_view::StatefulSetView;
use crate::validate::{Instance, Invalid, describe};

/// Condition type: all replicas run the current spec and are ready.
pub const READY: &str = "Ready";
/// Condition type: the spec was validated and every child applied as asked.
pub const RECONCILED: &str = "Reconciled";
/// Condition type: the serving certificate is valid and not about to expire.
pub const CERTIFICATE_READY: &str = "CertificateReady";
/// Condition type (a warning, True while it applies): TLS is turned off.
pub const TLS_DISABLED: &str = "TLSDisabled";
/// What the TLSDisabled condition and Event say.
pub const TLS_DISABLED_MESSAGE: &str = "spec.tls.enabled is false: API keys, JWTs and data \
     cross the network in clear text, between clients and Qdrant and between Qdrant peers";

/// How a reconcile ended, as far as status is concerned.
pub enum Verdict<'a> {
    Invalid(&'a [Invalid]),
    /// A step failed (the API refused a write, a Secret could not be read...): retried with
    /// backoff; the rest of the status stays as it was.
    Failed(&'a Error),
    /// A change the operator refuses outright ([`Refusal::TlsSwitch`]): nothing was applied, the
    /// children stay as they are.
    Refused(&'a Refusal),
    Applied {
        instance: &'a Instance,
        refusals: &'a [Refusal],
        statefulset: Option<&'a StatefulSetView>,
        tls: Option<&'a TlsReport>,
    },
}

/// Warning conditions (True when the spec opens the network that way): egress beyond the peers
/// and DNS (`spec.network.extraEgress`), clients or scrapers from every namespace.
pub const NETWORK_WARNINGS: &[&str] = &["EgressBeyondPeers", "IngressFromAllNamespaces"];

/// The conditions of a status being computed, with what every condition set now records.
struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: Timestamp,
}

impl Conditions<'_> {
    /// Sets condition `type_` (see [`set_condition`]).
    fn set(&mut self, type_: &str, status: bool, reason: &str, message: String) {
        set_condition(
            self.list,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    /// Removes condition `type_`.
    fn remove(&mut self, type_: &str) {
        self.list.retain(|c| c.type_ != type_);
    }
}

/// The status a SecureQdrant should have now. `sq` is the raw resource, read only for the status
/// it has (whose conditions and recorded history are kept) and its generation: the verdicts
/// other than [`Verdict::Applied`] carry no validated instance to take it from.
pub fn desired(sq: &SecureQdrant, verdict: &Verdict<'_>, now: Timestamp) -> SecureQdrantStatus {
    let previous = sq.status.clone().unwrap_or_default();
    let generation = match verdict {
        Verdict::Applied { instance, .. } => instance.generation,
        _ => sq.metadata.generation,
    };
    let mut status = SecureQdrantStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    let mut conditions = std::mem::take(&mut status.conditions);
    let mut set = Conditions {
        list: &mut conditions,
        generation,
        now,
    };
    match verdict {
        Verdict::Invalid(problems) => invalid(&mut status, &mut set, &previous, problems),
        Verdict::Failed(error) => failed(&mut set, error),
        Verdict::Refused(refusal) => {
            status.phase = Some(Phase::Degraded);
            // Only an instance that has run more than one replica is refused this way.
            status.clustered = true;
            set.set(RECONCILED, false, refusal.reason(), refusal.message());
        }
        Verdict::Applied {
            instance,
            refusals,
            statefulset,
            tls,
        } => {
            set.remove(CHILD_CONFLICT);
            let history = History::observe(Some(&previous), *statefulset);
            status.clustered = history.clustered || instance.replicas > 1;
            status.cluster_formed = history.formed || instance.cluster_formed;
            status.certificate = certificate(&mut set, *tls);
            network_warnings(&mut set, instance);
            rollout(
                &mut status,
                &mut set,
                &previous,
                instance,
                refusals,
                *statefulset,
            );
            status.endpoints = Some(endpoints(instance));
            status.secrets = Some(SecretNames {
                api_key: instance.api_key_secret_name(),
                tls: instance.tls_secret_name(),
                ca: instance.operator_ca_secret_name(),
                metrics_client: instance.metrics_client_secret(),
            });
        }
    }
    status.conditions = conditions;
    status
}

/// An invalid spec: nothing changed; Ready stays as it was when it was True (the pods run on).
fn invalid(
    status: &mut SecureQdrantStatus,
    set: &mut Conditions<'_>,
    previous: &SecureQdrantStatus,
    problems: &[Invalid],
) {
    status.phase = Some(Phase::Failed);
    let message = format!("invalid spec, nothing changed: {}", describe(problems));
    set.set(RECONCILED, false, "InvalidSpec", message);
    let ready = previous
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    if !ready {
        set.set(
            READY,
            false,
            "InvalidSpec",
            "the spec must be fixed first".to_owned(),
        );
    }
}

/// A failed step: Reconciled=False with the step's reason (ChildConflict also as its own
/// condition); the rest stays as it was.
fn failed(set: &mut Conditions<'_>, error: &Error) {
    if let Error::ChildConflict { .. } = error {
        set.set(CHILD_CONFLICT, true, "ObjectNotOwned", error.to_string());
    }
    set.set(
        RECONCILED,
        false,
        &failure_reason(error),
        format!("{error}; retrying"),
    );
}

/// The certificate conditions (CertificateReady, MetricsClientCertificateReady) or, without TLS,
/// the TLSDisabled warning; returns what `status.certificate` shows.
fn certificate(
    set: &mut Conditions<'_>,
    tls: Option<&TlsReport>,
) -> Option<crate::crd::CertificateStatus> {
    let Some(report) = tls else {
        set.set(
            TLS_DISABLED,
            true,
            "TLSDisabledBySpec",
            TLS_DISABLED_MESSAGE.to_owned(),
        );
        set.remove(CERTIFICATE_READY);
        set.remove(METRICS_CLIENT_CERTIFICATE_READY);
        return None;
    };
    let (ok, reason, message) = &report.ready;
    set.set(CERTIFICATE_READY, *ok, reason, message.clone());
    set.remove(TLS_DISABLED);
    match &report.metrics_client {
        Some((ok, reason, message)) => set.set(
            METRICS_CLIENT_CERTIFICATE_READY,
            *ok,
            reason,
            message.clone(),
        ),
        None => set.remove(METRICS_CLIENT_CERTIFICATE_READY),
    }
    Some(report.certificate.clone())
}

/// Openings the spec may make within the operator's policy, shown as True conditions (removed
/// when the spec closes them again).
fn network_warnings(set: &mut Conditions<'_>, instance: &Instance) {
    let warnings = crate::validate::network_warnings(instance);
    for type_ in NETWORK_WARNINGS {
        match warnings.iter().find(|(t, _)| t == type_) {
            Some((_, message)) => set.set(type_, true, "OpenedBySpec", message.clone()),
            None => set.remove(type_),
        }
    }
}

/// The replicas, the phase, Reconciled and Ready from what the StatefulSet reports.
fn rollout(
    status: &mut SecureQdrantStatus,
    set: &mut Conditions<'_>,
    previous: &SecureQdrantStatus,
    instance: &Instance,
    refusals: &[Refusal],
    statefulset: Option<&StatefulSetView>,
) {
    let replicas = instance.replicas;
    let sts_status = statefulset.and_then(|s| s.status.as_ref());
    let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    status.replicas = Some(sts_status.map(|s| s.replicas).unwrap_or(0));
    status.ready_replicas = Some(ready);
    let rolled_out = match (statefulset, sts_status) {
        (Some(sts), Some(s)) => {
            s.observed_generation >= sts.metadata.generation
                && s.updated_replicas == Some(replicas)
                && s.current_revision == s.update_revision
        }
        _ => false,
    };
    let all_ready = rolled_out && ready == replicas;
    status.phase = Some(phase(
        previous,
        refusals,
        all_ready,
        sts_status.is_some(),
        rolled_out,
    ));
    reconciled(set, refusals);
    let (reason, message) = if all_ready {
        (
            "AllReplicasReady",
            format!("{ready}/{replicas} replicas ready"),
        )
    } else if rolled_out {
        (
            "ReplicasNotReady",
            format!("{ready}/{replicas} replicas ready"),
        )
    } else {
        (
            "RollingOut",
            format!("{ready}/{replicas} replicas ready, rollout in progress"),
        )
    };
    set.set(READY, all_ready, reason, message);
}

/// The phase of an applied instance.
fn phase(
    previous: &SecureQdrantStatus,
    refusals: &[Refusal],
    all_ready: bool,
    reported: bool,
    rolled_out: bool,
) -> Phase {
    if !refusals.is_empty() {
        Phase::Degraded
    } else if all_ready {
        Phase::Ready
    } else if !reported {
        Phase::Pending
    } else if !rolled_out {
        Phase::Progressing
    } else if matches!(previous.phase, Some(Phase::Ready | Phase::Degraded)) {
        // It was ready since its last roll and lost pods.
        Phase::Degraded
    } else {
        // Pods still starting: a fresh StatefulSet reports itself rolled out at once (its
        // current and update revisions are the first one).
        Phase::Progressing
    }
}

/// Reconciled: True when every child was applied as asked, else False with the refusals.
fn reconciled(set: &mut Conditions<'_>, refusals: &[Refusal]) {
    match refusals.first() {
        Some(r) => {
            let message = refusals
                .iter()
                .map(Refusal::message)
                .collect::<Vec<_>>()
                .join("; ");
            set.set(RECONCILED, false, r.reason(), message);
        }
        None => set.set(
            RECONCILED,
            true,
            "Applied",
            "every child object is applied".to_owned(),
        ),
    }
}

/// Where clients reach the instance.
fn endpoints(instance: &Instance) -> Endpoints {
    let host = format!("{}.{}.svc", instance.name, instance.namespace);
    Endpoints {
        rest: format!("{}://{host}:{HTTP_PORT}", instance.scheme()),
        grpc: format!("{}://{host}:{GRPC_PORT}", instance.scheme()),
    }
}

/// Condition reason for a failed step, e.g. `ApplyFailed`.
pub fn failure_reason(error: &Error) -> String {
    if let Error::ChildConflict { .. } = error {
        return CHILD_CONFLICT.to_owned();
    }

    if let Error::SecretNotAllowed { .. } = error {
        return SECRET_NOT_ALLOWED.to_owned();
    }
    let mut out = String::new();
    for part in error.metric_label().split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out.push_str("Failed");
    out
}

/// A status this process wrote, and the resourceVersion the write returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub status: SecureQdrantStatus,
    pub version: Option<String>,
}

/// The status each SecureQdrant (by uid) was last given by this process (`Context::written_status`).
pub type WrittenStatus = Recent<String, Written>;

/// `sq` with the status this process last wrote for it, when the copy in hand does not show it
/// yet (only this operator writes the status, so the one it wrote last is the latest). Once the
/// copy in hand is the very object that write returned (same resourceVersion), the watch has
/// delivered the write and the record is dropped, so a burst of first reconciles does not keep
/// a status per instance for the TTL. A copy that only shows an equal status (an older object,
/// e.g. from a re-list an API server served from a cache that lags, or the same status written
/// twice) keeps the record.
pub fn with_latest(written: &WrittenStatus, sq: Arc<SecureQdrant>) -> Arc<SecureQdrant> {
    let Some(uid) = &sq.metadata.uid else {
        return sq;
    };
    match written.get(uid) {
        Some(w) if sq.status.as_ref() != Some(&w.status) => {
            let mut fresh = (*sq).clone();
            fresh.status = Some(w.status);
            Arc::new(fresh)
        }
        Some(_) => {
            written.forget_if(uid, |w| {
                w.version.is_some() && w.version == sq.metadata.resource_version
            });
            sq
        }
        None => sq,
    }
}

/// Writes the status (server-side apply on the status subresource, under the operator's field
/// manager) if it differs from the object's current one, and remembers it in `written`. Returns
/// whether it wrote.
pub async fn write(
    client: &Client,
    written: &WrittenStatus,
    sq: &SecureQdrant,
    status: SecureQdrantStatus,
) -> Result<bool> {
    if sq.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<SecureQdrant> =
        Api::namespaced(client.clone(), &sq.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": SecureQdrant::api_version(&()),
        "kind": SecureQdrant::kind(&()),
        "status": status,
    });
    let stored = api
        .patch_status(
            &sq.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Status)?;
    if let Some(uid) = sq.metadata.uid.clone() {
        let version = stored.metadata.resource_version;
        written.remember(uid, Written { status, version });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::recent::system_clock;

    fn instance(status: Option<SecureQdrantStatus>, version: &str) -> Arc<SecureQdrant> {
        let mut sq =
            SecureQdrant::new("db", serde_json::from_value(serde_json::json!({})).unwrap());
        sq.metadata.namespace = Some("ns".into());
        sq.metadata.uid = Some("uid-1".into());
        sq.metadata.resource_version = Some(version.into());
        sq.status = status;
        Arc::new(sq)
    }

    fn status(observed: i64) -> SecureQdrantStatus {
        SecureQdrantStatus {
            observed_generation: Some(observed),
            ..SecureQdrantStatus::default()
        }
    }

    /// The write of `status(2)` returned resourceVersion 12.
    fn written() -> WrittenStatus {
        let written = WrittenStatus::new(std::time::Duration::from_secs(300), system_clock());
        let version = Some("12".to_owned());
        written.remember(
            "uid-1".into(),
            Written {
                status: status(2),
                version,
            },
        );
        written
    }

    #[test]
    fn a_lagging_copy_gets_the_written_status_and_the_record_is_kept() {
        let written = written();
        let sq = with_latest(&written, instance(Some(status(1)), "11"));
        assert_eq!(sq.status, Some(status(2)));
        assert_eq!(written.len(), 1, "the cache does not show the write yet");
    }

    #[test]
    fn the_record_is_dropped_once_the_cache_shows_the_object_the_write_returned() {
        let written = written();
        let sq = with_latest(&written, instance(Some(status(2)), "12"));
        assert_eq!(sq.status, Some(status(2)));
        assert!(
            written.is_empty(),
            "the cache shows it: nothing left to remember"
        );
    }

    /// A re-list served from a lagging API-server cache can bring back an older object whose
    /// status happens to equal the one written: the record stays, for the copies after it.
    #[test]
    fn an_older_copy_with_an_equal_status_keeps_the_record() {
        let written = written();
        let sq = with_latest(&written, instance(Some(status(2)), "9"));
        assert_eq!(sq.status, Some(status(2)));
        assert_eq!(written.len(), 1);
        let sq = with_latest(&written, instance(Some(status(1)), "10"));
        assert_eq!(
            sq.status,
            Some(status(2)),
            "the stale copy still gets the written status"
        );
    }
}
