//! `fake-apiserver --port N --kubeconfig PATH [--load FILE.yaml ...]`: runs the in-memory API
//! server for kubectl, manual tries and benchmarks until Ctrl-C.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fake_apiserver::{FakeApiServer, Faults, Options};
use serde::Deserialize;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(about = "In-memory Kubernetes API server for tests (never for production)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig for this server here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// YAML files (multi-document) of objects to create at start, CRDs first.
    #[arg(long = "load")]
    load: Vec<PathBuf>,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability of an injected error per request.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Status codes to inject (comma-separated), default 500.
    #[arg(long, value_delimiter = ',')]
    error_codes: Vec<u16>,
    /// Close watch streams after this many events.
    #[arg(long)]
    watch_drop_after: Option<u64>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
}

fn load(path: &PathBuf) -> anyhow_like::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

#[tokio::main]
async fn main() -> anyhow_like::Result<()> {
    let args = Args::parse();
    let mut objects = Vec::new();
    for p in &args.load {
        objects.extend(load(p)?);
    }
    // CRDs first so their kinds exist when the other objects are created.
    objects
        .sort_by_key(|o| o.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition"));
    let options = Options {
        host: args.host,
        port: args.port,
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
        faults: Faults {
            seed: args.seed,
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            error_codes: args.error_codes,
            watch_drop_after_events: args.watch_drop_after,
            ..Faults::default()
        },
        objects,
        ..Options::default()
    };
    let server = FakeApiServer::start(options).await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", server.url());
    eprintln!(
        "fake-apiserver listening on {}; /debug/requests, /debug/faults; Ctrl-C stops",
        server.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
