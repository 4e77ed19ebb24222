//! Operating the operator: logs (`init`), Prometheus metrics (`metrics`), readiness
//! (`health`) and the HTTP endpoints that serve them (`http`).

pub mod health;
pub mod http;
pub mod metrics;

use tracing_subscriber::EnvFilter;

pub use self::health::{Health, Role};
pub use self::metrics::Metrics;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level).
    Json,
}

/// Installs the global subscriber. `level` is an EnvFilter directive (`info`,
/// `secure_qdrant_operator=debug,kube=info`).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
