//! Scale benchmark (issue 3): the release operator binary against the in-memory fake API server
//! (started in this process).
//!
//! ```sh
//! cargo bench --bench scale                       # 1,000 instances, 60 s idle, 10,000 unrelated
//! cargo bench --bench scale -- 200 --idle 10      # smaller
//! ```
//!
//! Options (after `--`): `N` instances (default 1000), `--idle SECS` (default 60),
//! `--unrelated COUNT` Secrets and as many ConfigMaps in the second run (default 10000; 0 skips
//! that run), `--example minimal|full` (default minimal), `--operator-env KEY=VALUE` (repeatable;
//! extra environment for the operator, for diagnosis), `--operator PATH` (another build of the
//! operator, to compare a change).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs as a smoke test: 20
//! instances, 2 s idle, 500 unrelated objects; it fails only when an instance does not converge.
//!
//! `cargo bench` builds the operator binary with the bench profile (= release) and passes its
//! path as `CARGO_BIN_EXE_secure-qdrant-operator`. Each run:
//! 1. starts a fake API server with the CRDs (and, for the second run, the unrelated objects),
//! 2. starts the operator and waits until it watches,
//! 3. creates N SecureQdrants at once and measures the wall time until every one has its
//!    StatefulSet and a status for its generation with `Reconciled=True`; then checks that every
//!    instance has all its children,
//! 4. counts the API requests of that first reconcile (until 2 s pass without a write),
//! 5. (first run only) counts the requests of `--idle` seconds of steady state,
//! 6. reads the operator's CPU time (`/proc/<pid>/stat`) and peak RSS (`VmHWM`).
//!
//! Prints markdown tables and checks the issue's targets (reported, never fatal).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_apiserver::{Counters, FakeApiServer, Options};
use serde_json::{Value, json};

use secure_qdrant_operator::children::{self, Material, PodTls};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::material::ApiKeys;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::validate;

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
const NAMESPACES: usize = 10;
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
const TARGET_CONVERGE: Duration = Duration::from_secs(15);
const TARGET_RSS_MIB: f64 = 48.0;

struct Args {
    n: usize,
    idle: Duration,
    unrelated: usize,
    example: String,
    /// Extra environment of the operator (diagnosis, e.g. `MALLOC_ARENA_MAX=2`).
    operator_env: Vec<(String, String)>,
    /// The operator binary (default: the one `cargo bench` built).
    operator: String,
    /// Run by `cargo bench` (else a smoke run under `cargo test`).
    benched: bool,
}

fn args() -> Args {
    let mut out = Args {
        n: 1000,
        idle: Duration::from_secs(60),
        unrelated: 10_000,
        example: "minimal".into(),
        operator_env: Vec::new(),
        operator: OPERATOR.to_owned(),
        benched: false,
    };
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it:
    // then a small smoke run (20 instances, 2 s idle, 500 unrelated objects) checks that the
    // benchmark still works without spending minutes of every test run on it.
    out.benched = std::env::args().any(|a| a == "--bench");
    if !out.benched {
        out.n = 20;
        out.idle = Duration::from_secs(2);
        out.unrelated = 500;
    }
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--idle" => out.idle = Duration::from_secs(num(it.next())),
            "--unrelated" => out.unrelated = num(it.next()) as usize,
            "--example" => out.example = it.next().expect("--example minimal|full"),
            "--operator" => out.operator = it.next().expect("--operator PATH"),
            "--operator-env" => {
                let kv = it.next().expect("--operator-env KEY=VALUE");
                let (k, v) = kv.split_once('=').expect("--operator-env KEY=VALUE");
                out.operator_env.push((k.to_owned(), v.to_owned()));
            }
            // Added by `cargo bench`.
            "--bench" => {}
            other => match other.parse() {
                Ok(n) => out.n = n,
                Err(_) => panic!("unknown argument {other:?}"),
            },
        }
    }
    out
}

fn num(s: Option<String>) -> u64 {
    s.and_then(|s| s.parse().ok())
        .expect("a number after the option")
}

/// What one run measured.
struct Report {
    label: String,
    n: usize,
    children_per_instance: usize,
    insert: Duration,
    converge: Option<Duration>,
    cpu_converge: f64,
    cpu_total: f64,
    /// CPU of this process (the fake API server, the polling) until converged.
    server_cpu_converge: f64,
    /// Time from convergence until 2 s passed without a write.
    settle: Duration,
    writes_at_converge: u64,
    rss_start_mib: f64,
    /// Highest VmRSS sampled (every 100 ms) and when, from the creation of the instances.
    rss_peak_sampled: (f64, Duration),
    rss_end_mib: f64,
    peak_rss_mib: f64,
    first: Counters,
    idle: Option<(Duration, Counters)>,
    all_children: Result<(), String>,
}

#[tokio::main]
async fn main() {
    let args = args();
    let machine = machine();
    println!("# Scale benchmark\n");
    println!("Machine: {machine}\n");
    println!(
        "Operator: {}\nInstances: {} ({} example, in {NAMESPACES} namespaces)\n",
        args.operator, args.n, args.example
    );

    let idle = Some(args.idle).filter(|d| !d.is_zero());
    let mut reports = vec![run(&args, 0, idle).await];
    if args.unrelated > 0 {
        reports.push(run(&args, args.unrelated, None).await);
    }
    for r in &reports {
        print_report(r);
    }
    print_targets(&reports);
    if !args.benched {
        // The smoke run checks that the benchmark works: every instance converged, with every
        // child, and nothing was written at idle. The timing targets are for `cargo bench`.
        for r in &reports {
            assert!(r.converge.is_some(), "{}: did not converge", r.label);
            if let Err(e) = &r.all_children {
                panic!("{}: {e}", r.label);
            }
            if let Some((_, idle)) = &r.idle {
                assert_eq!(idle.writes(), 0, "{}: writes at idle", r.label);
            }
            // One write per child and one status write: no write repeated because a cache
            // had not caught up yet (Events aside).
            let writes = r.first.writes() - event_writes(&r.first);
            assert!(
                writes as usize <= r.n * (r.children_per_instance + 1),
                "{}: {writes} first-reconcile writes for {} instances of {} children",
                r.label,
                r.n,
                r.children_per_instance
            );
        }
    }
}

async fn run(args: &Args, unrelated: usize, idle: Option<Duration>) -> Report {
    let label = if unrelated == 0 {
        format!("{} instances", args.n)
    } else {
        format!(
            "{} instances + {unrelated} unrelated Secrets and {unrelated} ConfigMaps",
            args.n
        )
    };
    eprintln!("== {label}");
    let objects = secure_qdrant_operator::crd::all()
        .into_iter()
        .map(|c| serde_json::to_value(c).expect("CRD serializes"))
        .collect();
    let server = Arc::new(
        FakeApiServer::start(Options {
            objects,
            // Enough history that no watch ever resumes from a compacted version.
            watch_history: 1_000_000,
            ..Options::default()
        })
        .await
        .expect("fake API server starts"),
    );
    for i in 0..unrelated {
        let ns = format!("other-{}", i % NAMESPACES);
        let filler = "x".repeat(512);
        server
            .insert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("unrelated-{i}"), "namespace": ns,
                             "labels": {"app": "unrelated"}},
                "stringData": {"password": filler},
            }))
            .expect("secret inserted");
        server
            .insert(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("unrelated-{i}"), "namespace": ns,
                             "labels": {"app": "unrelated"}},
                "data": {"settings": filler},
            }))
            .expect("configmap inserted");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let log_path = dir.path().join("operator.log");
    let mut operator = Operator(
        Command::new(&args.operator)
            .args(["run", "--log-format", "json"])
            .env("KUBECONFIG", &kubeconfig)
            .env("LOG_LEVEL", "info")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .envs(args.operator_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("log file"))
            .spawn()
            .expect("operator starts (build it with `cargo bench`)"),
    );
    let pid = operator.0.id();

    // Started: the SecureQdrant watch is open and every cache has listed.
    let started = Instant::now();
    while server
        .counters()
        .get("watch", "secureqdrants.secureqdrant.dev")
        == 0
        || server.counters().verb("watch") < 8
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the operator did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start_mib = proc_status_kib(pid, "VmRSS:") / 1024.0;

    // Every SecureQdrant at once.
    let template = example(&args.example);
    let children_per_instance = children_of(&template);
    server.reset_counters();
    let self_cpu_start = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    for i in 0..args.n {
        let mut sq = template.clone();
        sq["metadata"]["namespace"] = json!(format!("bench-{}", i % NAMESPACES));
        sq["metadata"]["name"] = json!(format!("q{i:05}"));
        server.insert(&sq).expect("SecureQdrant inserted");
    }
    let insert = t0.elapsed();

    let mut converge = None;
    let mut last_report = Instant::now();
    let mut rss_peak_sampled = (0.0, Duration::ZERO);
    let sample = |rss_peak_sampled: &mut (f64, Duration)| {
        let rss = proc_status_kib(pid, "VmRSS:") / 1024.0;
        if rss > rss_peak_sampled.0 {
            *rss_peak_sampled = (rss, t0.elapsed());
        }
    };
    while t0.elapsed() < Duration::from_secs(300) {
        sample(&mut rss_peak_sampled);
        let done = converged(&server);
        if done >= args.n {
            converge = Some(t0.elapsed());
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {:>6.1}s: {done}/{} converged",
                t0.elapsed().as_secs_f64(),
                args.n
            );
            last_report = Instant::now();
        }
        if let Ok(Some(exit)) = operator.0.try_wait() {
            panic!("the operator exited ({exit})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_converge = cpu_seconds(pid);
    let server_cpu_converge = cpu_seconds(std::process::id()) - self_cpu_start;
    let writes_at_converge = server.counters().writes();
    eprintln!("  converged: {converge:?}, operator CPU {cpu_converge:.2}s");

    // The first reconcile is over when 2 s pass without a write.
    let mut writes = server.counters().writes();
    let mut quiet_since = Instant::now();
    let settle_start = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2)
        && settle_start.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sample(&mut rss_peak_sampled);
        let now = server.counters().writes();
        if now != writes {
            writes = now;
            quiet_since = Instant::now();
        }
    }
    let settle = quiet_since.duration_since(settle_start);
    eprintln!("  writes stopped {settle:?} after convergence");
    let first = server.counters();
    let all_children = check_children(&server, args.n, children_per_instance);

    let idle = match idle {
        Some(d) => {
            eprintln!("  idle for {d:?}");
            server.reset_counters();
            let idle_start = Instant::now();
            while idle_start.elapsed() < d {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sample(&mut rss_peak_sampled);
            }
            Some((d, server.counters()))
        }
        None => None,
    };
    let cpu_total = cpu_seconds(pid);
    let rss_end_mib = proc_status_kib(pid, "VmRSS:") / 1024.0;
    let peak_rss_mib = proc_status_kib(pid, "VmHWM:") / 1024.0;
    if let Ok(Some(exit)) = operator.0.try_wait() {
        panic!("the operator exited ({exit})");
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked");
    drop(operator);
    Report {
        label,
        n: args.n,
        children_per_instance,
        insert,
        converge,
        cpu_converge,
        cpu_total,
        server_cpu_converge,
        settle,
        writes_at_converge,
        rss_start_mib,
        rss_peak_sampled,
        rss_end_mib,
        peak_rss_mib,
        first,
        idle,
        all_children,
    }
}

/// Instances whose status describes their generation with Reconciled=True and whose StatefulSet
/// exists.
fn converged(server: &FakeApiServer) -> usize {
    let statefulsets: BTreeSet<(String, String)> = server
        .list("apps/v1", "StatefulSet", "")
        .iter()
        .map(ns_name)
        .collect();
    server
        .list("secureqdrant.dev/v1alpha1", "SecureQdrant", "")
        .iter()
        .filter(|sq| {
            let generation = &sq["metadata"]["generation"];
            let status = &sq["status"];
            status["observedGeneration"] == *generation
                && status["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Reconciled" && c["status"] == "True")
                })
                && statefulsets.contains(&ns_name(sq))
        })
        .count()
}

/// Every instance has exactly the children the builders make (plus its CA Secret).
fn check_children(server: &FakeApiServer, n: usize, per_instance: usize) -> Result<(), String> {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (api, kind) in secure_qdrant_operator::children::CHILD_KINDS {
        for o in server.list(api, kind, "") {
            if let Some(instance) = o["metadata"]["labels"]["app.kubernetes.io/instance"].as_str() {
                let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
                *counts
                    .entry((ns.to_owned(), instance.to_owned()))
                    .or_default() += 1;
            }
        }
    }
    let complete = counts.values().filter(|c| **c == per_instance).count();
    if counts.len() == n && complete == n {
        Ok(())
    } else {
        Err(format!(
            "{complete}/{n} instances have all {per_instance} children ({} have some)",
            counts.len()
        ))
    }
}

fn ns_name(o: &Value) -> (String, String) {
    (
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn example(name: &str) -> Value {
    let path = format!("{}/deploy/examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example readable");
    let mut sq: Value = serde_yaml_ng::from_str(&text).expect("example parses");
    // Drop the example's name-bound topology spread selector (it names "vectors").
    if let Some(pod) = sq.pointer_mut("/spec/pod").and_then(Value::as_object_mut) {
        pod.remove("topologySpreadConstraints");
    }
    sq
}

/// Objects one instance owns: what the builders make, and the CA Secret of the TLS step.
fn children_of(sq: &Value) -> usize {
    let mut sq: SecureQdrant = serde_json::from_value(sq.clone()).expect("example is typed");
    sq.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let inst = validate::validate(&sq, &Settings::default()).expect("example is valid");
    let material = Material {
        api_keys: ApiKeys::placeholder(inst.auth.read_only_api_key),
        tls: inst.tls.as_ref().map(|_| PodTls::placeholder(true)),
    };
    let ca = children::secrets::ca_placeholder(&inst);
    children::build(&inst, &material)
        .to_values(ca.as_ref())
        .len()
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start with field 3, the state.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `kB` line of /proc/<pid>/status, in KiB.
fn proc_status_kib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    format!(
        "{cpus} CPUs ({model}), {:.1} GiB RAM, {}",
        mem_kib / 1024.0 / 1024.0,
        std::env::consts::OS
    )
}

/// Requests per instance by verb, and writes per instance by resource.
fn by_verb(c: &Counters) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((verb, _), n) in &c.requests {
        *out.entry(verb.clone()).or_default() += n;
    }
    out
}

fn writes_by_resource(c: &Counters) -> BTreeMap<(String, String), u64> {
    c.requests
        .iter()
        .filter(|((verb, _), _)| WRITE_VERBS.contains(&verb.as_str()))
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

fn event_writes(c: &Counters) -> u64 {
    c.requests
        .iter()
        .filter(|((verb, res), _)| {
            WRITE_VERBS.contains(&verb.as_str())
                && (res == "events" || res == "events.events.k8s.io")
        })
        .map(|(_, n)| n)
        .sum()
}

fn per(n: u64, instances: usize) -> f64 {
    n as f64 / instances as f64
}

fn print_report(r: &Report) {
    println!("## {}\n", r.label);
    println!("| measure | value |\n|---|---|");
    println!(
        "| insert {} SecureQdrants (in-process) | {:.2} s |",
        r.n,
        r.insert.as_secs_f64()
    );
    match r.converge {
        Some(d) => println!(
            "| wall time to converge (all StatefulSets + status) | {:.2} s |",
            d.as_secs_f64()
        ),
        None => println!("| wall time to converge | did not converge in 300 s |"),
    }
    println!(
        "| every instance has all {} children | {} |",
        r.children_per_instance,
        match &r.all_children {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("NO: {e}"),
        }
    );
    println!("| operator CPU until converged | {:.2} s |", r.cpu_converge);
    println!(
        "| fake API server (+ polling) CPU until converged | {:.2} s |",
        r.server_cpu_converge
    );
    println!(
        "| writes until converged / after (until 2 s without a write) | {} / {} (settled {:.1} s after convergence) |",
        r.writes_at_converge,
        r.first.writes() - r.writes_at_converge,
        r.settle.as_secs_f64()
    );
    println!("| operator CPU, whole run | {:.2} s |", r.cpu_total);
    println!(
        "| operator RSS before the instances | {:.1} MiB |",
        r.rss_start_mib
    );
    println!(
        "| operator highest sampled RSS | {:.1} MiB at {:.1} s |",
        r.rss_peak_sampled.0,
        r.rss_peak_sampled.1.as_secs_f64()
    );
    println!("| operator RSS at the end | {:.1} MiB |", r.rss_end_mib);
    println!("| operator peak RSS (VmHWM) | {:.1} MiB |", r.peak_rss_mib);
    println!();

    println!("First reconcile, requests per instance by verb:\n");
    println!("| verb | total | per instance |\n|---|---|---|");
    for (verb, n) in by_verb(&r.first) {
        println!("| {verb} | {n} | {:.2} |", per(n, r.n));
    }
    let writes = r.first.writes();
    println!(
        "| **writes** | {writes} | {:.2} (without Events: {:.2}) |",
        per(writes, r.n),
        per(writes - event_writes(&r.first), r.n)
    );
    println!();
    println!("First reconcile, writes per instance by resource:\n");
    println!("| verb | resource | per instance |\n|---|---|---|");
    for ((verb, res), n) in writes_by_resource(&r.first) {
        println!("| {verb} | {res} | {:.2} |", per(n, r.n));
    }
    println!();
    if let Some((d, c)) = &r.idle {
        println!(
            "Idle ({} s of steady state), requests per instance by verb:\n",
            d.as_secs()
        );
        println!("| verb | total | per instance |\n|---|---|---|");
        for (verb, n) in by_verb(c) {
            println!("| {verb} | {n} | {:.4} |", per(n, r.n));
        }
        println!(
            "| **all requests** | {} | {:.4} |",
            c.total(),
            per(c.total(), r.n)
        );
        println!(
            "| **writes** | {} | {:.4} |",
            c.writes(),
            per(c.writes(), r.n)
        );
        if c.writes() > 0 {
            println!("\nIdle writes by resource:\n");
            for ((verb, res), n) in writes_by_resource(c) {
                println!("- {verb} {res}: {n}");
            }
        }
        println!();
    }
}

fn print_targets(reports: &[Report]) {
    let main = &reports[0];
    let children = main.children_per_instance as f64;
    let writes = per(main.first.writes(), main.n);
    let writes_no_events = per(main.first.writes() - event_writes(&main.first), main.n);
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("## Targets\n");
    println!("| target | result | |\n|---|---|---|");
    let conv = main.converge;
    println!(
        "| {} instances converge in ≤ {} s | {} | {} |",
        main.n,
        TARGET_CONVERGE.as_secs(),
        conv.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        mark(conv.is_some_and(|d| d <= TARGET_CONVERGE))
    );
    println!(
        "| first-reconcile writes per instance ≤ children + 1 = {} | {writes:.2} ({writes_no_events:.2} without Events) | {} |",
        children + 1.0,
        if writes <= children + 1.0 {
            "met"
        } else if writes_no_events <= children + 1.0 {
            "met for the objects; the Events come on top"
        } else {
            "MISSED"
        }
    );
    if let Some((_, idle)) = &main.idle {
        println!(
            "| 0 writes at idle | {} | {} |",
            idle.writes(),
            mark(idle.writes() == 0)
        );
    }
    println!(
        "| peak RSS ≤ {TARGET_RSS_MIB} MiB at {} instances | {:.1} MiB | {} |",
        main.n,
        main.peak_rss_mib,
        mark(main.peak_rss_mib <= TARGET_RSS_MIB)
    );
    if let Some(other) = reports.get(1) {
        let delta = other.peak_rss_mib - main.peak_rss_mib;
        let delta_start = other.rss_start_mib - main.rss_start_mib;
        println!(
            "| unrelated objects: peak RSS within a few MiB | {:.1} MiB ({delta:+.1} MiB); after start-up, caches listed: {:.1} MiB ({delta_start:+.1} MiB) | {} |",
            other.peak_rss_mib,
            other.rss_start_mib,
            mark(delta <= 4.0 && delta_start <= 4.0)
        );
    }
}
