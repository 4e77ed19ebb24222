//! Command line: `run`, `crd`, `render`.

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::settings::Settings;
use crate::telemetry::{self, LogFormat};

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
    /// standard input), in apply order. Offline: generated secrets show as placeholders.
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
}

impl OperatorArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            cluster_domain: self.cluster_domain.clone(),
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
    /// Log filter, e.g. `info` or `secure_qdrant_operator=debug,info`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
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
        Command::Run(args) => {
            telemetry::init(args.log_format, &args.log_level);
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "no Kubernetes configuration (in-cluster or kubeconfig) found");
                    return 1;
                }
            };
            match crate::controller::run(client, args.operator.settings()).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "the operator cannot run");
                    1
                }
            }
        }
    }
}
