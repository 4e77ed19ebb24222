//! What every reconcile shares: the client, the caches, where Events and metrics go, the clock,
//! the memories of this process's own recent writes, and what reconciles derived from Secrets.

use std::time::Duration;

use kube::Client;

use super::backoff::Backoffs;
use super::expect::Expectations;
use super::memo::{Memo, TokenFacts};
use super::recent::{Clock, Recent, system_clock};
use super::status::WrittenStatus;
use super::stores::Stores;
use super::tls;
use crate::api_keys::KeyFacts;
use crate::events::Events;
use crate::settings::Settings;
use crate::telemetry::Metrics;

/// How long a healthy instance waits before it is looked at again (drift safety net; changes to
/// the resource or its children trigger a reconcile at once).
pub const RESYNC: Duration = Duration::from_secs(600);

/// Everything a reconcile needs, built once when the controller starts.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub events: Events,
    pub settings: Settings,
    /// Where reconciles read the time (certificate renewal, condition timestamps), and where
    /// the memories below read it.
    pub clock: Clock,
    /// Failures per object (namespace/name), for the backoff of the controller's error policy.
    pub failures: Backoffs,
    /// Where reconciles record what the metrics show (certificate and token expiry).
    pub metrics: Metrics,
    /// Child writes the caches have not shown yet (disabled unless the controller feeds them;
    /// it enables them with the same clock).
    pub expectations: Expectations,
    /// The status each SecureQdrant (by uid) was last given by this process, for
    /// [`WRITTEN_STATUS_TTL`]: the object a reconcile starts from may predate it (its watch event
    /// is on its way), and a status computed from that stale copy would write again, with new
    /// transition times.
    pub written_status: WrittenStatus,
    /// What the credentials step derived from `<n>-api-key` (no key), per instance.
    pub key_facts: Memo<KeyFacts>,
    /// What the TLS step derived from `<n>-ca`, `<n>-tls` and `<n>-metrics-client` (no key, no
    /// certificate), per instance.
    pub tls_facts: Memo<tls::TlsFacts>,
    /// What a token reconcile that wrote nothing decided, per QdrantAccessToken.
    pub token_facts: Memo<TokenFacts>,
}

/// How long the status a reconcile wrote is preferred over an object's older copy.
pub const WRITTEN_STATUS_TTL: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(client: Client, stores: Stores, events: Events, settings: Settings) -> Self {
        let clock = system_clock();
        Context {
            client,
            stores,
            events,
            settings,
            failures: Backoffs::default(),
            metrics: Metrics::default(),
            expectations: Expectations::default(),
            written_status: Recent::new(WRITTEN_STATUS_TTL, clock.clone()),
            key_facts: Memo::default(),
            tls_facts: Memo::default(),
            token_facts: Memo::default(),
            clock,
        }
    }

    /// The same context reading time from `clock` (its memories too: call it before the first
    /// reconcile, they start empty).
    pub fn with_clock(self, clock: Clock) -> Self {
        Context {
            written_status: Recent::new(WRITTEN_STATUS_TTL, clock.clone()),
            clock,
            ..self
        }
    }
}
