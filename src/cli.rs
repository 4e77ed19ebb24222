//! Command line: `run`, `crd`, `render`.
//!
//! `run` wires the process: logs, the HTTP endpoints (`--http-addr`), the watched namespaces
//! (`--namespaces`), optional leader election (`--leader-election`), and SIGTERM/SIGINT for a
//! graceful stop (running reconciles finish, the Lease is released, exit code 0).

use std::io::Read;
use std::path::PathBuf;

use std::net::SocketAddr;

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};

use crate::controller::RunOptions;
use crate::controller::scope::WatchScope;
use crate::controller::shutdown::Shutdown;
use crate::leader::{self, LeaderElector, LeaseConfig};
use crate::settings::{self, Policy, Settings};
use crate::telemetry::{self, Health, LogFormat, Metrics, http};
use ipnet::IpNet;

#[derive(Parser, Debug)]
#[command(
    name = "secure-qdrant-operator",
    version,
    about = "Runs Qdrant on Kubernetes, secure by default"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (in-cluster config, or the current kubeconfig context).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print every object the operator would create for the SecureQdrants in FILE ("-" for
    /// standard input), in the order it writes them. Offline: generated secrets show as
    /// placeholders.
    Render {
        /// YAML file with one or more SecureQdrant documents.
        file: PathBuf,
        #[command(flatten)]
        operator: OperatorArgs,
    },
}

/// Settings that change what the operator builds.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// DNS domain of the cluster (used in certificate names and endpoints).
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Allow QdrantAccessTokens with global manage access (`access: {global: m}`, as powerful
    /// as the API key) for SecureQdrants that opt in (`spec.auth.allowManageTokens`). false
    /// refuses them cluster-wide: such a token gets Ready=False (ManageTokensForbidden) and its
    /// token Secret is removed.
    #[arg(
        long,
        env = "ALLOW_GLOBAL_MANAGE_TOKENS",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub allow_global_manage_tokens: bool,
    /// DNS suffixes (comma-separated, e.g. `example.com,corp.internal`) under which
    /// `spec.tls.extraDnsNames` may name hosts; a name is within `example.com` when it is
    /// `example.com` or ends with `.example.com`. Empty (the default): no extra names. Names
    /// under `.svc` and the cluster domain are never allowed.
    #[arg(
        long,
        env = "ALLOWED_DNS_SUFFIXES",
        value_delimiter = ',',
        value_parser = parse_dns_suffix
    )]
    pub allowed_dns_suffixes: Vec<String>,
    /// Image repositories spec.image may name (comma-separated, compared after normalising:
    /// `qdrant/qdrant` is `docker.io/qdrant/qdrant`); `registry/path/*` allows a whole tree.
    #[arg(long, env = "POLICY_ALLOWED_IMAGES", value_delimiter = ',',
          default_values_t = strs::<String>(settings::DEFAULT_IMAGE_REPOSITORIES))]
    pub allowed_images: Vec<String>,
    /// spec.image must be pinned by digest (`@sha256:...`).
    #[arg(long, env = "POLICY_REQUIRE_IMAGE_DIGEST", num_args = 0..=1,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub require_image_digest: bool,
    /// Ranges an ipBlock of spec.network.extraEgress must lie inside (comma-separated CIDRs).
    /// Add `0.0.0.0/0` and `::/0` to allow egress beyond the cluster's private ranges.
    /// Empty: no ipBlock egress at all.
    #[arg(long, env = "POLICY_EGRESS_CIDRS", value_delimiter = ',', value_parser = cidr_or_empty,
          default_values_t = strs::<String>(settings::DEFAULT_EGRESS_CIDRS))]
    pub egress_cidrs: Vec<String>,
    /// Node label/taint keys spec.pod may not select on or tolerate.
    #[arg(long, env = "POLICY_REFUSED_NODE_KEYS", value_delimiter = ',',
          default_values_t = strs::<String>(settings::DEFAULT_REFUSED_NODE_KEYS))]
    pub refused_node_keys: Vec<String>,
    /// PriorityClasses spec.pod.priorityClassName may not name.
    #[arg(long, env = "POLICY_REFUSED_PRIORITY_CLASSES", value_delimiter = ',',
          default_values_t = strs::<String>(settings::DEFAULT_REFUSED_PRIORITY_CLASSES))]
    pub refused_priority_classes: Vec<String>,
    /// Label/annotation key prefixes spec.pod may not use (`x/`, or `*.x/` for subdomains).
    #[arg(long, env = "POLICY_REFUSED_METADATA_PREFIXES", value_delimiter = ',',
          default_values_t = strs::<String>(settings::DEFAULT_REFUSED_METADATA_PREFIXES))]
    pub refused_metadata_prefixes: Vec<String>,
}

/// A DNS suffix of `--allowed-dns-suffixes`: lowercase labels, no wildcard, not in-cluster.
fn parse_dns_suffix(s: &str) -> Result<String, String> {
    let suffix = s.trim().trim_start_matches('.').trim_end_matches('.');
    let ok = !suffix.is_empty()
        && suffix.len() <= 253
        && suffix.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        return Err(format!(
            "{s:?} is not a lowercase DNS suffix such as example.com"
        ));
    }
    if suffix == "svc" || suffix.ends_with(".svc") {
        return Err(format!(
            "{s:?} is in-cluster (.svc): those names are never allowed"
        ));
    }
    Ok(suffix.to_owned())
}

/// A CIDR, or nothing (an empty list from the chart or the environment).
fn cidr_or_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.parse::<IpNet>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a CIDR such as 10.0.0.0/8"))
    }
}

/// The non-empty entries of a list flag (an empty env var means an empty list).
fn entries(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn strs<T: std::str::FromStr>(items: &[&str]) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    items
        .iter()
        .map(|s| s.parse().expect("a valid default"))
        .collect()
}

impl OperatorArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            cluster_domain: self.cluster_domain.clone(),
            allow_global_manage_tokens: self.allow_global_manage_tokens,
            allowed_dns_suffixes: self.allowed_dns_suffixes.clone(),
            policy: Policy {
                image_repositories: entries(&self.allowed_images),
                require_image_digest: self.require_image_digest,
                egress_cidrs: entries(&self.egress_cidrs)
                    .iter()
                    .filter_map(|c| c.parse().ok())
                    .collect(),
                refused_node_keys: entries(&self.refused_node_keys),
                refused_priority_classes: entries(&self.refused_priority_classes),
                refused_metadata_prefixes: entries(&self.refused_metadata_prefixes),
            },
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter: comma-separated levels (trace, debug, info, warn, error, off) and
    /// `target=level` directives, e.g. `info` or `secure_qdrant_operator=debug,info`. An invalid
    /// one is refused at startup.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = telemetry::log_filter)]
    pub log_level: String,
    /// Address of the HTTP endpoints: /metrics (Prometheus), /healthz, /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Watch only these namespaces (comma-separated); all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Run the controllers only while holding the Lease `secure-qdrant-operator`, so several
    /// replicas can run (one leads, the others stand by).
    #[arg(
        long,
        env = "LEADER_ELECTION",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false",
        value_parser = BoolishValueParser::new(),
    )]
    pub leader_election: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
}

impl RunArgs {
    /// Where the Lease lives: the flag, else the pod's namespace, else `fallback`.
    pub fn lease_namespace(&self, fallback: &str) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| fallback.to_owned())
    }
}

/// This replica's name in leader election: the pod name, else the host name with a random
/// suffix (two processes on one host never share an identity).
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "secure-qdrant-operator".to_owned());
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    format!("{host}-{}", hex::encode(suffix))
}

/// Runs the command line on a new multi-threaded Tokio runtime (what `#[tokio::main]` builds);
/// returns the process exit code.
///
/// The binary calls this plain function instead of awaiting [`main`] itself: a future is compiled
/// into each crate that polls it, so a `#[tokio::main]` in `src/main.rs` compiled every watch,
/// deserializer and reconcile step a second time into the binary crate, next to the library's
/// own copy (1.5 MB of machine code, resident in the operator's memory).
pub fn run_blocking(cli: Cli) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(main(cli));
            // Like `process::exit` inside `#[tokio::main]`: exit without waiting for tasks
            // still running (a blocking DNS lookup, say).
            runtime.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    }
}

/// Runs the command line; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::crd::to_yaml());
            0
        }
        Command::Render { file, operator } => {
            let input = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map(|_| s)
            } else {
                std::fs::read_to_string(&file)
            };
            let input = match input {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return 2;
                }
            };
            match crate::render::render(&input, &operator.settings()) {
                Ok(out) => {
                    print!("{out}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Command::Run(args) => run(args).await,
    }
}

/// The User-Agent of every request the operator makes: `secure-qdrant-operator/<version>`. The
/// API server's audit log records it (it omits an empty one), so the operator's requests can be
/// told apart from anyone else's.
pub const USER_AGENT: &str = concat!("secure-qdrant-operator/", env!("CARGO_PKG_VERSION"));

/// `config` (in-cluster or kubeconfig) with the operator's User-Agent.
fn with_user_agent(mut config: kube::Config) -> kube::Config {
    config
        .headers
        .retain(|(name, _)| name != hyper::header::USER_AGENT);
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    config
}

/// `run`: telemetry, the HTTP endpoints, then the controllers (directly, or while leading).
async fn run(args: RunArgs) -> i32 {
    if let Err(e) = telemetry::init(args.log_format, &args.log_level) {
        eprintln!("error: {e}");
        return 2;
    }
    let client = match kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)
        .and_then(|c| kube::Client::try_from(with_user_agent(c)))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes configuration (in-cluster or kubeconfig) found");
            return 1;
        }
    };
    let scope = WatchScope::from_list(&args.namespaces);
    if let Err(e) = crate::controller::preflight(&client, &scope).await {
        tracing::error!(error = %e, "the operator cannot run");
        return 1;
    }
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for signals");
            return 1;
        }
    };
    let listener = match http::bind(args.http_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, addr = %args.http_addr, "cannot serve the HTTP endpoints (--http-addr)");
            return 1;
        }
    };
    let metrics = Metrics::new();
    let health = Health::default();
    let (stop_http, http_stop) = Shutdown::new();
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async move { http_stop.requested().await },
    ));
    {
        // Not ready from the first signal on, while running reconciles finish.
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.requested().await;
            health.set_stopping();
        });
    }
    let options = RunOptions {
        settings: args.operator.settings(),
        scope,
        metrics,
        health: health.clone(),
        shutdown: shutdown.clone(),
    };

    let code = controllers(&args, client, options, &health, &shutdown).await;
    stop_http.fire();
    let _ = server.await;
    tracing::info!(code, "exiting");
    code
}

/// Runs the controllers until shutdown: directly, or while this replica leads (leader election).
/// Returns the exit code.
async fn controllers(
    args: &RunArgs,
    client: kube::Client,
    options: RunOptions,
    health: &Health,
    shutdown: &Shutdown,
) -> i32 {
    if args.leader_election {
        let config = LeaseConfig::new(args.lease_namespace(client.default_namespace()), identity());
        tracing::info!(
            lease = %format!("{}/{}", config.namespace, config.name),
            identity = %config.identity,
            "leader election on"
        );
        let elector = LeaderElector::new(client.clone(), config);
        let controllers = crate::controller::run(client, options);
        match leader::run(elector, health, shutdown, controllers).await {
            Ok(None) | Ok(Some(Ok(()))) => 0,
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "the operator cannot run");
                1
            }
            // Logged by the elector; a restart makes this replica a standby.
            Err(_lost) => 1,
        }
    } else {
        match crate::controller::run(client, options).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "the operator cannot run");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_config_carries_the_operators_user_agent() {
        let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        let config = with_user_agent(with_user_agent(config));
        let agents: Vec<&str> = config
            .headers
            .iter()
            .filter(|(name, _)| name == hyper::header::USER_AGENT)
            .map(|(_, v)| v.to_str().unwrap())
            .collect();
        assert_eq!(
            agents,
            [format!(
                "secure-qdrant-operator/{}",
                env!("CARGO_PKG_VERSION")
            )]
        );
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let mut argv = vec!["secure-qdrant-operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(r) => r,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn policy_flags_default_to_the_settings_defaults_and_parse_lists() {
        assert_eq!(run_args(&[]).operator.settings(), Settings::default());
        let s = run_args(&[
            "--allowed-images",
            "registry.example.com/mirror/*,qdrant/qdrant",
            "--require-image-digest",
            "--egress-cidrs",
            "",
            "--refused-priority-classes",
            "a,b",
        ])
        .operator
        .settings();
        assert_eq!(
            s.policy.image_repositories,
            ["registry.example.com/mirror/*", "qdrant/qdrant"]
        );
        assert!(s.policy.require_image_digest);
        assert!(
            s.policy.egress_cidrs.is_empty(),
            "an empty list: no ipBlock egress"
        );
        assert_eq!(s.policy.refused_priority_classes, ["a", "b"]);
        let mut argv = vec![
            "secure-qdrant-operator",
            "run",
            "--egress-cidrs",
            "10.0.0.0/33",
        ];
        assert!(
            Cli::try_parse_from(argv.drain(..)).is_err(),
            "a bad CIDR stops the start"
        );
    }

    // Environment variables are process-wide: these tests only pass flags, so they hold whatever
    // the environment of the test process says.
    #[test]
    fn operations_flags() {
        let r = run_args(&[
            "--http-addr",
            "127.0.0.1:9090",
            "--namespaces",
            "a,b",
            "--leader-election",
            "--lease-namespace",
            "ops",
        ]);
        assert_eq!(r.http_addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(r.namespaces, ["a", "b"]);
        assert!(r.leader_election);
        assert_eq!(r.lease_namespace("fallback"), "ops");
        assert_eq!(
            WatchScope::from_list(&r.namespaces),
            WatchScope::Namespaces(vec!["a".into(), "b".into()])
        );

        for (value, expected) in [("true", true), ("false", false), ("1", true), ("no", false)] {
            let r = run_args(&[&format!("--leader-election={value}")]);
            assert_eq!(r.leader_election, expected, "{value}");
        }
        assert!(Cli::try_parse_from(["x", "run", "--http-addr", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["x", "run", "--leader-election=maybe"]).is_err());
    }

    #[test]
    fn global_manage_tokens_are_allowed_unless_the_flag_says_false() {
        if std::env::var("ALLOW_GLOBAL_MANAGE_TOKENS").is_ok() {
            return; // the environment decides the default
        }
        assert!(run_args(&[]).operator.settings().allow_global_manage_tokens);
        assert!(Settings::default().allow_global_manage_tokens);
        for (value, expected) in [("false", false), ("0", false), ("true", true)] {
            let r = run_args(&[&format!("--allow-global-manage-tokens={value}")]);
            assert_eq!(
                r.operator.settings().allow_global_manage_tokens,
                expected,
                "{value}"
            );
        }
        assert!(Cli::try_parse_from(["x", "run", "--allow-global-manage-tokens=perhaps"]).is_err());
    }

    #[test]
    fn two_identities_on_one_host_differ() {
        if std::env::var("POD_NAME").is_ok() {
            return; // the pod name is the identity
        }
        assert_ne!(identity(), identity());
    }
}
