//! What every reconcile shares: the client, the caches, where Events and metrics go, the clock,
//! and the memories of this process's own recent writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::Client;

use super::credentials;
use super::expect::Expectations;
use super::status;
use super::stores::Stores;
use crate::events::Events;
use crate::settings::Settings;
use crate::telemetry::Metrics;

/// The time source of reconciles: the system clock, or a fixed/advancing one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything a reconcile needs, built once when the controller starts.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub events: Events,
    pub settings: Settings,
    /// Where reconciles read the time (certificate renewal, condition timestamps).
    pub clock: Clock,
    /// Where reconciles record what the metrics show (certificate and token expiry).
    pub metrics: Metrics,
    /// Child writes the caches have not shown yet (disabled unless the controller feeds them).
    pub expectations: Expectations,
    /// The status each SecureQdrant was last given by this process (see [`status::WrittenStatus`]).
    pub written_status: status::WrittenStatus,
    /// The data each token Secret (namespace/name) was last given, and when: for the same reason,
    /// so a stale cached copy never makes a token or client certificate be issued twice.
    pub written_token_data: Mutex<HashMap<String, (TokenSecretData, std::time::Instant)>>,
    /// When this process last wrote each API-key Secret (see [`credentials::RecentWrites`]).
    pub key_secret_writes: credentials::RecentWrites,
}

/// The data of a token Secret.
pub type TokenSecretData = std::collections::BTreeMap<String, k8s_openapi::ByteString>;

impl Context {
    pub fn new(client: Client, stores: Stores, events: Events, settings: Settings) -> Self {
        Context {
            client,
            stores,
            events,
            settings,
            clock: Arc::new(Timestamp::now),
            metrics: Metrics::default(),
            expectations: Expectations::default(),
            written_status: Mutex::new(HashMap::new()),
            written_token_data: Mutex::new(HashMap::new()),
            key_secret_writes: credentials::RecentWrites::default(),
        }
    }

    /// The same context reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}
