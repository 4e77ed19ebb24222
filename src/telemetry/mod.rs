//! Operating the operator: logs (`init`), Prometheus metrics (`metrics`), readiness
//! (`health`) and the HTTP endpoints that serve them (`http`).

pub mod health;
pub mod http;
pub mod metrics;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

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

/// The level names a filter directive may use (case-insensitive; `0`..`5` work too).
const LEVELS: &str = "trace, debug, info, warn, error, off";

/// Parses a log filter (`--log-level`, `LOG_LEVEL`): comma-separated EnvFilter directives,
/// each a level (`info`) or `target=level` (`secure_qdrant_operator=debug`, `kube=warn`).
///
/// Stricter than EnvFilter, which reads a bare word that is not a level as a target with every
/// level on (`warning` or `verbose` would silently turn off every log line but that target's),
/// and `target=` as that target at every level. Here every directive ends in a level.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    let invalid = |why: String| format!("invalid log filter {filter:?}: {why}");
    if filter.trim().is_empty() {
        return Err(invalid(format!("empty (use a level: {LEVELS})")));
    }
    // Trimmed here: EnvFilter reads " warn" as a target named " warn".
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    for &directive in &directives {
        if directive.is_empty() {
            return Err(invalid("an empty directive between commas".to_owned()));
        }
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level)
            .trim();
        // LevelFilter reads "" as `error`: refuse it here.
        if level.is_empty() || level.parse::<LevelFilter>().is_err() {
            return Err(invalid(format!(
                "{directive:?} is neither a level ({LEVELS}) nor target=level"
            )));
        }
    }
    EnvFilter::builder()
        .parse(directives.join(","))
        .map_err(|e| invalid(format!("{e} (each directive is a level or target=level)")))
}

/// [`parse_filter`] as a clap value parser: keeps the text, refuses it when it does not parse.
pub fn log_filter(filter: &str) -> Result<String, String> {
    parse_filter(filter).map(|_| filter.to_owned())
}

/// Installs the global subscriber. `level` is a filter as [`parse_filter`] reads it (`info`,
/// `secure_qdrant_operator=debug,kube=info`); an invalid one is an error, never a silent
/// fallback.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = parse_filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_with_levels_and_targets_parse() {
        for ok in [
            "info",
            "INFO",
            "3",
            "off",
            "secure_qdrant_operator=debug,info",
            "secure_qdrant_operator=debug,kube=debug,info",
            "secure_qdrant_operator=debug, warn",
            "kube::runtime=trace",
            "secure_qdrant_operator[reconcile]=debug",
            "[reconcile{name}]=debug",
        ] {
            assert!(
                parse_filter(ok).is_ok(),
                "{ok}: {:?}",
                parse_filter(ok).err()
            );
            assert_eq!(log_filter(ok).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn invalid_filters_are_refused_naming_the_value() {
        for (bad, says) in [
            ("warning", "\"warning\" is neither a level"),
            ("verbose", "neither a level"),
            ("info,debugg", "\"debugg\" is neither a level"),
            ("secure_qdrant_operator=loud", "neither a level"),
            ("secure_qdrant_operator=", "neither a level"),
            ("!info", "neither a level"),
            ("=info", "invalid log filter"),
            ("info;debug", "neither a level"),
            ("", "empty"),
            ("  ", "empty"),
            ("info,,debug", "empty directive"),
        ] {
            let err = parse_filter(bad).expect_err(bad);
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains(says),
                "{bad}: {err}"
            );
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }
}
