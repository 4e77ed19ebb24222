//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas can run: the one holding
//! the Lease runs the controllers, the others wait and take over when it stops renewing.
//!
//! The algorithm is client-go's (`tools/leaderelection`), reduced to what this operator needs:
//!
//! - **Acquire/renew** is a read, then a write conditional on the read's `resourceVersion`
//!   (create when the Lease is missing, replace otherwise). Of two candidates acting on the same
//!   read, the API server accepts one write and answers the other 409 Conflict (or
//!   AlreadyExists): that one stays a standby.
//! - **Expiry is judged on the local clock**: a candidate notes *when it saw* the Lease record
//!   change, and treats it as expired once `leaseDurationSeconds` passed since, without a
//!   change. Clocks of different nodes are never compared (`renewTime` is informative).
//! - The leader renews every [`LeaseConfig::renew_period`] (5 s; the Lease lasts 15 s). When it
//!   cannot renew for [`LeaseConfig::renew_deadline`] (10 s), or finds another holder, it has
//!   **lost** the Lease: [`run`] returns [`Lost`], the caller stops the controllers and the
//!   process exits non-zero, so Kubernetes restarts it as a standby. A leader steps down before
//!   its Lease can expire for the others (10 s < 15 s), so two replicas never both run the
//!   controllers while their clocks advance at the same rate.
//! - On shutdown the leader **releases** the Lease (empty holder, conditional write), so a
//!   standby takes over at its next try (2 s) instead of after expiry.
//!
//! Why not a crate: `kube-lease-manager` 0.13 is the one maintained crate built on kube 5, but
//! (read in 0.13.1, and tried on a real API server) it allows two leaders at once, which is
//! what this module exists to prevent, and takes over late:
//! - its `watch()` leader whose renewals fail keeps reporting itself leader (it logs and retries
//!   with backoff, without a renew deadline); `changed()` returns the first failed renewal but
//!   never a successful one, so no caller can apply a deadline since the last renewal;
//! - an expired Lease is taken over by an unconditional patch that clears the holder, whatever
//!   the read just before it shows (another candidate may have taken the Lease since);
//! - expiry compares the holder's `renewTime` with the local clock, so a clock offset between
//!   nodes shortens (or lengthens) the Lease;
//! - a standby reads the Lease again only when the record it last read would expire, so it
//!   takes a released Lease up to a Lease duration later (here: at its next try), and cannot
//!   say in between whether the Lease is readable.
//!
//! It also writes the Lease with PATCH (server-side apply and strategic merge), a verb the
//! operator's Role does not grant. (`kube-leader-election` needs kube 4, `kubert` kube 1.)

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::controller::shutdown::Shutdown;
use crate::telemetry::{Health, Role};

/// Name of the operator's Lease.
pub const LEASE_NAME: &str = "secure-qdrant-operator";

/// Which Lease, who this candidate is, and the timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique among the candidates (the pod name).
    pub identity: String,
    /// How long a Lease stays valid after a renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// The leader gives up when it could not renew for this long; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often a standby looks at the Lease, and a leader retries a failed renewal.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The operator's Lease in `namespace`: 15 s, renewed every 5 s, given up after 10 s without
    /// a renewal; standbys look every 2 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: LEASE_NAME.to_owned(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// What one look at the Lease found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease (it acquired or renewed it just now).
    Leading,
    /// Someone else holds it (`holder`), or won the race for it.
    Standby { holder: String },
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// Someone else holds it and renews it.
    Wait { holder: String },
}

/// The decision of a candidate named `me`, given the Lease's spec (`None`: no Lease) and whether
/// it expired by this candidate's observation.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, expired: bool) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Step::Acquire,
        Some(holder) if holder == me => Step::Renew,
        Some(_) if expired => Step::Acquire,
        Some(holder) => Step::Wait {
            holder: holder.to_owned(),
        },
    }
}

/// The last Lease record a candidate saw, and when it first saw it (local clock).
#[derive(Clone, Debug, Default)]
pub struct Observer {
    last: Option<(LeaseSpec, Instant)>,
}

impl Observer {
    /// Notes the record seen at `now`; returns whether it has not changed for its
    /// `leaseDurationSeconds` (`default` when it has none).
    pub fn expired(&mut self, spec: &LeaseSpec, now: Instant, default: Duration) -> bool {
        let since = match &self.last {
            Some((seen, since)) if seen == spec => *since,
            _ => {
                self.last = Some((spec.clone(), now));
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(default);
        now.duration_since(since) >= duration
    }

    pub fn forget(&mut self) {
        self.last = None;
    }
}

/// The spec a write puts in the Lease.
fn next_spec(
    old: Option<&LeaseSpec>,
    step: &Step,
    config: &LeaseConfig,
    now: Timestamp,
) -> LeaseSpec {
    let old = old.cloned().unwrap_or_default();
    let transitions = old.lease_transitions.unwrap_or(0);
    match step {
        Step::Renew => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(config.duration_seconds()),
            ..old
        },
        _ => LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(config.duration_seconds()),
            // Every change of holder is a transition; a new Lease starts at 0.
            lease_transitions: Some(if *step == Step::Create {
                0
            } else {
                transitions.saturating_add(1)
            }),
            ..old
        },
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observer: Observer,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observer: Observer::default(),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Reads the Lease and acquires or renews it if this candidate may.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.config.name).await?;
        self.act_on(current).await
    }

    /// Acquires or renews the Lease as `current` shows it (`None`: it does not exist). The write
    /// is conditional on `current`'s resourceVersion: if the Lease changed since, the API server
    /// refuses it and this candidate stays a standby.
    pub async fn act_on(&mut self, current: Option<Lease>) -> Result<Attempt, kube::Error> {
        let now = Instant::now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let expired = match &spec {
            Some(spec) => self.observer.expired(spec, now, self.config.lease_duration),
            None => {
                self.observer.forget();
                true
            }
        };
        let step = decide(spec.as_ref(), &self.config.identity, expired);
        debug!(?step, lease = %self.config.name, "leader election");
        let holder = spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if let Step::Wait { holder } = step {
            return Ok(Attempt::Standby { holder });
        }
        let desired = next_spec(spec.as_ref(), &step, &self.config, Timestamp::now());
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(desired),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.metadata.managed_fields = None;
                lease.spec = Some(desired);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                self.observer
                    .expired(&spec, Instant::now(), self.config.lease_duration);
                Ok(Attempt::Leading)
            }
            Err(e) if conflict(&e) => {
                debug!(lease = %self.config.name, "another candidate wrote the Lease first");
                Ok(Attempt::Standby { holder })
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this candidate holds it. Returns whether it did.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        lease.metadata.managed_fields = None;
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            acquire_time: None,
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_duration_seconds: Some(1),
            ..spec
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The Lease was lost while leading: the controllers were stopped.
#[derive(Debug, thiserror::Error)]
#[error("lost the Lease {namespace}/{name}: {reason}")]
pub struct Lost {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Waits until this candidate holds the Lease (or shutdown is requested), then runs `lead`
/// while renewing, and releases the Lease when `lead` returns. `lead` should return soon after
/// `shutdown` fires; it is dropped (stopped at its next await point) when the Lease is lost.
///
/// `Ok(None)`: shut down as a standby. `Ok(Some(output))`: led until `lead` returned.
pub async fn run<F>(
    mut elector: LeaderElector,
    health: &Health,
    shutdown: &Shutdown,
    lead: F,
) -> Result<Option<F::Output>, Lost>
where
    F: Future,
{
    let config = elector.config().clone();
    health.set_role(Role::Standby {
        lease_reachable: false,
    });
    let acquired = tokio::select! {
        _ = shutdown.requested() => false,
        () = acquire(&mut elector, health) => true,
    };
    if !acquired {
        // A write cut short by the shutdown may still have reached the API server.
        release(&mut elector).await;
        info!("shut down as a standby");
        return Ok(None);
    }
    info!(
        lease = %format!("{}/{}", config.namespace, config.name),
        identity = %config.identity,
        "became the leader"
    );
    health.set_role(Role::Leader);
    let result = {
        let keep = keep(&mut elector);
        tokio::pin!(keep);
        tokio::pin!(lead);
        tokio::select! {
            out = &mut lead => Ok(out),
            lost = &mut keep => Err(lost),
        }
    };
    match result {
        Ok(out) => {
            release(&mut elector).await;
            Ok(Some(out))
        }
        Err(reason) => {
            error!(%reason, "lost the Lease: stopping the controllers");
            Err(Lost {
                namespace: config.namespace,
                name: config.name,
                reason,
            })
        }
    }
}

/// Tries every retry period until this candidate leads; reports on `health` whether the Lease
/// can be read.
async fn acquire(elector: &mut LeaderElector, health: &Health) {
    let retry = elector.config().retry_period;
    let mut last_holder: Option<String> = None;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(Attempt::Leading) => return,
            Ok(Attempt::Standby { holder }) => {
                health.set_role(Role::Standby {
                    lease_reachable: true,
                });
                if last_holder.as_ref() != Some(&holder) {
                    info!(leader = %holder, "standing by: another replica leads");
                    last_holder = Some(holder);
                }
            }
            Err(e) => {
                health.set_role(Role::Standby {
                    lease_reachable: false,
                });
                warn!(error = %e, "cannot read or write the Lease");
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// Renews every renew period while leading; returns why leadership was lost.
async fn keep(elector: &mut LeaderElector) -> String {
    let config = elector.config().clone();
    let mut renewed = Instant::now();
    let mut wait = config.renew_period;
    loop {
        tokio::time::sleep(wait).await;
        let left = config.renew_deadline.saturating_sub(renewed.elapsed());
        match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
            Ok(Ok(Attempt::Leading)) => {
                renewed = Instant::now();
                wait = config.renew_period;
            }
            Ok(Ok(Attempt::Standby { holder })) => {
                return format!("{holder:?} holds it now");
            }
            Ok(Err(e)) => {
                warn!(error = %e, "cannot renew the Lease");
                if renewed.elapsed() >= config.renew_deadline {
                    return format!(
                        "not renewed for {:?} (last error: {e})",
                        config.renew_deadline
                    );
                }
                wait = config
                    .retry_period
                    .min(config.renew_deadline.saturating_sub(renewed.elapsed()));
            }
            Err(_) => {
                return format!(
                    "not renewed for {:?} (the API server did not answer)",
                    config.renew_deadline
                );
            }
        }
    }
}

/// Releases the Lease if held, within 2 s; failures are logged (the Lease then expires).
async fn release(elector: &mut LeaderElector) {
    match tokio::time::timeout(Duration::from_secs(2), elector.release()).await {
        Ok(Ok(true)) => info!("released the Lease"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(error = %e, "could not release the Lease; it expires on its own"),
        Err(_) => warn!("could not release the Lease in time; it expires on its own"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", false), Step::Create);
        assert_eq!(decide(Some(&held_by(None)), "a", false), Step::Acquire);
        assert_eq!(decide(Some(&held_by(Some(""))), "a", false), Step::Acquire);
        assert_eq!(decide(Some(&held_by(Some("a"))), "a", false), Step::Renew);
        // Our own Lease is renewed even when it looks expired (a restart with the same name).
        assert_eq!(decide(Some(&held_by(Some("a"))), "a", true), Step::Renew);
        assert_eq!(
            decide(Some(&held_by(Some("b"))), "a", false),
            Step::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&held_by(Some("b"))), "a", true), Step::Acquire);
    }

    #[test]
    fn written_specs() {
        let config = LeaseConfig::new("ns", "a");
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().expect("time");
        let created = next_spec(None, &Step::Create, &config, now);
        assert_eq!(created.holder_identity.as_deref(), Some("a"));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.acquire_time, Some(MicroTime(now)));
        assert_eq!(created.renew_time, Some(MicroTime(now)));

        let taken = next_spec(Some(&held_by(Some("b"))), &Step::Acquire, &config, now);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));

        let later: Timestamp = "2030-01-01T00:00:05Z".parse().expect("time");
        let renewed = next_spec(Some(&created), &Step::Renew, &config, later);
        assert_eq!(
            renewed.acquire_time,
            Some(MicroTime(now)),
            "acquire time kept"
        );
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(0));
    }

    #[test]
    fn expiry_is_judged_from_when_the_record_last_changed() {
        let mut o = Observer::default();
        let default = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut spec = held_by(Some("b"));
        assert!(!o.expired(&spec, t0, default));
        assert!(!o.expired(&spec, t0 + Duration::from_secs(14), default));
        assert!(o.expired(&spec, t0 + Duration::from_secs(15), default));
        // b renewed: a fresh 15 s from when it was seen.
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        assert!(!o.expired(&spec, t0 + Duration::from_secs(16), default));
        assert!(!o.expired(&spec, t0 + Duration::from_secs(30), default));
        assert!(o.expired(&spec, t0 + Duration::from_secs(31), default));
        // A record without a duration uses ours.
        spec.lease_duration_seconds = None;
        assert!(!o.expired(&spec, t0 + Duration::from_secs(40), default));
        assert!(o.expired(&spec, t0 + Duration::from_secs(55), default));
    }
}
