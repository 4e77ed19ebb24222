//! Scale benchmark (issues 3 and 14): the release operator binary against a REAL Kubernetes
//! control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok; built from
//! Go modules by tests/control-plane/build.sh and started through tests/support/control_plane.rs),
//! a fresh control plane for each run, used by nothing else.
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
//! operator, to compare a change), `--timeout SECS` (how long convergence may take; default 900).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs as a smoke test on the real
//! control plane: 20 instances, 2 s idle, 500 unrelated objects; it fails when an instance does
//! not converge, an instance lacks a child, the operator writes at idle, or the first reconcile
//! writes more than children + 1 objects per instance (Events aside). Needs Go >= 1.26 (the
//! control plane is built on first use): never skipped, never faked.
//!
//! `cargo bench` builds the operator binary with the bench profile (= release) and passes its
//! path as `CARGO_BIN_EXE_secure-qdrant-operator`. Each run:
//! 1. starts its own control plane (`control-plane up`), installs the CRDs, cordons the kwok
//!    nodes (the StatefulSet controller creates each instance's pod and claim, but no pod is
//!    scheduled, so no StatefulSet becomes ready and the phase stays `Progressing`, as in the
//!    in-memory bench: the figures stay comparable) and, for the second run, creates the
//!    unrelated objects,
//! 2. installs the chart's ServiceAccount and cluster-wide RBAC (rendered by the Helm SDK) and
//!    starts the operator binary authenticated as that ServiceAccount (as
//!    `ControlPlane::start_operator` does, but at log level `info` in JSON as before, and with
//!    `--operator`/`--operator-env`); waits until the audit log shows it watching,
//! 3. creates N SecureQdrants (as admin, 16 requests at a time) and measures the wall time until
//!    every one has its StatefulSet and a status for its generation with `Reconciled=True` (seen
//!    through two watches of this process, not by polling lists); then checks that every
//!    instance has all its children,
//! 4. counts the operator's API requests of that first reconcile (until 2 s pass without a
//!    write) from the API server's audit log (the operator's user only),
//! 5. (first run only) counts the operator's requests in `--idle` seconds of steady state,
//! 6. reads the CPU time (`/proc/<pid>/stat`) and peak RSS (`VmHWM`) of the operator, and of
//!    kube-apiserver, etcd and the other components (pids from the control plane's state).
//!
//! Prints markdown tables and checks the issue's targets (reported, never fatal).

#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../tests/support/real_server.rs"]
mod real_server;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};

use control_plane::{
    ControlPlane, apply_chart_rbac, render_chart, service_account_token, token_kubeconfig,
};
use real_server::{
    Counters, Request, all_requests_between, audit_sync, count, request_of, requests_between,
};
use secure_qdrant_operator::api_keys::ApiKeys;
use secure_qdrant_operator::children::{self, Material, PodTls};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::validate;

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
const NAMESPACES: usize = 10;
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
const TARGET_CONVERGE: Duration = Duration::from_secs(15);
const TARGET_RSS_MIB: f64 = 48.0;
/// Requests the bench sends at once (creating instances and unrelated objects).
const CREATE_CONCURRENCY: usize = 16;

struct Args {
    n: usize,
    idle: Duration,
    unrelated: usize,
    example: String,
    /// Extra environment of the operator (diagnosis, e.g. `MALLOC_ARENA_MAX=2`).
    operator_env: Vec<(String, String)>,
    /// The operator binary (default: the one `cargo bench` built).
    operator: String,
    /// How long convergence may take.
    timeout: Duration,
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
        timeout: Duration::from_secs(900),
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
        out.timeout = Duration::from_secs(300);
    }
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--idle" => out.idle = Duration::from_secs(num(it.next())),
            "--unrelated" => out.unrelated = num(it.next()) as usize,
            "--example" => out.example = it.next().expect("--example minimal|full"),
            "--operator" => out.operator = it.next().expect("--operator PATH"),
            "--timeout" => out.timeout = Duration::from_secs(num(it.next())),
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

/// CPU seconds and memory of one control-plane process.
#[derive(Clone, Debug, Default)]
struct Usage {
    cpu_converge: f64,
    cpu_total: f64,
    rss_end_mib: f64,
    peak_rss_mib: f64,
}

/// What one run measured.
struct Report {
    label: String,
    n: usize,
    children_per_instance: usize,
    /// Time to create the unrelated objects (second run).
    unrelated_insert: Duration,
    insert: Duration,
    converge: Option<Duration>,
    cpu_converge: f64,
    cpu_total: f64,
    /// CPU of this process (creating objects, its two watches, reading the audit log) until
    /// converged.
    bench_cpu_converge: f64,
    /// Time from convergence until 2 s passed without a write.
    settle: Duration,
    writes_at_converge: u64,
    rss_start_mib: f64,
    /// Highest VmRSS sampled (every 100 ms) and when, from the creation of the instances.
    rss_peak_sampled: (f64, Duration),
    rss_end_mib: f64,
    peak_rss_mib: f64,
    first: Counters,
    /// The children the first reconcile wrote more than once, with every request on them
    /// ([`repeated_writes`]): what a failed write budget needs to be read.
    repeated: String,
    /// StatefulSet status writes of the StatefulSet controller in the first reconcile's window:
    /// each may change the operator's status (replicas, rollout) once more.
    statefulset_status_writes: u64,
    idle: Option<(Duration, Counters)>,
    all_children: Result<(), String>,
    /// kube-apiserver, etcd and the other components by name (CPU from the instances' creation).
    control_plane: BTreeMap<String, Usage>,
    /// `uptime` when the run started and ended (other builds share the machine).
    load: (String, String),
}

#[tokio::main]
async fn main() {
    let args = args();
    let machine = machine();
    println!("# Scale benchmark on the real control plane\n");
    println!("Machine: {machine}\n");
    println!("Load at the start: {}\n", uptime());
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
                assert_eq!(
                    idle.writes(),
                    0,
                    "{}: writes at idle: {:?}",
                    r.label,
                    writes_by_resource(idle)
                );
            }
            // One write per child and one status write: no write repeated because a cache
            // had not caught up yet (Events aside). The real StatefulSet controller publishes
            // its StatefulSets' status after the first reconcile (the in-memory server never
            // did), and the operator's status follows it (replicas, rollout): each of those
            // writes may cause one more status write, and no other.
            let writes = r.first.writes() - event_writes(&r.first);
            assert!(
                writes
                    <= (r.n * (r.children_per_instance + 1)) as u64 + r.statefulset_status_writes,
                "{}: {writes} first-reconcile writes for {} instances of {} children and {} \
                 StatefulSet status writes of the controller: {:?}\n\
                 children written more than once (every request on them, in order):\n{}",
                r.label,
                r.n,
                r.children_per_instance,
                r.statefulset_status_writes,
                writes_by_resource(&r.first),
                r.repeated
            );
            let child_writes = writes - status_writes(&r.first);
            assert!(
                child_writes as usize <= r.n * r.children_per_instance,
                "{}: {child_writes} child writes for {} instances of {} children: {:?}\n\
                 children written more than once (every request on them, in order):\n{}",
                r.label,
                r.n,
                r.children_per_instance,
                writes_by_resource(&r.first),
                r.repeated
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
    let load_start = uptime();
    // A control plane of its own: nothing else runs there, so cluster-wide scope is safe and
    // every figure is this run's.
    let cp = control_plane::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    let admin = cp.admin().await;
    cp.install_crds(&admin).await;
    // Cordoned nodes: the StatefulSet controller creates each instance's pod (and its claim,
    // which the provisioner binds), but the scheduler places none, so no StatefulSet becomes
    // ready: the phase stays `Progressing`, as in the in-memory bench.
    let nodes = Api::<Node>::all(admin.clone());
    for node in &cp.state.nodes {
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .unwrap_or_else(|e| panic!("cordon {node}: {e}"));
    }
    let mut bench_namespaces = Vec::new();
    for _ in 0..NAMESPACES {
        bench_namespaces.push(cp.namespace(&admin, "bench").await);
    }

    let t_unrelated = Instant::now();
    if unrelated > 0 {
        let mut other = Vec::new();
        for _ in 0..NAMESPACES {
            other.push(cp.namespace(&admin, "other").await);
        }
        let filler = "x".repeat(512);
        let secrets = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        let config_maps = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let objects = (0..unrelated).flat_map(|i| {
            let ns = other[i % NAMESPACES].clone();
            let meta = json!({"name": format!("unrelated-{i}"), "namespace": ns,
                              "labels": {"app": "unrelated"}});
            [
                (
                    secrets.clone(),
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                           "stringData": {"password": filler}}),
                ),
                (
                    config_maps.clone(),
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                           "data": {"settings": filler}}),
                ),
            ]
        });
        futures::stream::iter(objects)
            .map(|(ar, obj)| create(&admin, ar, obj))
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .unwrap_or_else(|e| panic!("unrelated objects: {e}"));
    }
    let unrelated_insert = t_unrelated.elapsed();

    let mut operator = start_operator(&cp, &admin, args).await;
    let pid = operator.child.id();
    let mut tail = AuditTail::of_user(cp.state.audit_log.clone(), &operator.user);
    let mut controller = AuditTail::statefulset_status(cp.state.audit_log.clone(), &operator.user);

    // Started: the SecureQdrant watch is open and every cache has listed.
    let started = Instant::now();
    loop {
        tail.poll();
        if tail.get("watch", "secureqdrants.secureqdrant.dev") > 0 && tail.verb("watch") >= 8 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the operator did not start:\n{}",
            operator.log()
        );
        operator.check();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start_mib = proc_status_kib(pid, "VmRSS:") / 1024.0;

    // This process's view of convergence: two watches (SecureQdrants; StatefulSets' metadata).
    let (instances, writer) = reflector::store::<SecureQdrant>();
    let watch_instances = tokio::spawn(
        watcher(
            Api::<SecureQdrant>::all(admin.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .for_each(|_| futures::future::ready(())),
    );
    let (statefulsets, writer) = reflector::store();
    let watch_statefulsets = tokio::spawn(
        watcher(
            Api::<StatefulSet>::all(admin.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .for_each(|_| futures::future::ready(())),
    );
    instances.wait_until_ready().await.expect("instance watch");
    statefulsets
        .wait_until_ready()
        .await
        .expect("StatefulSet watch");

    // Every SecureQdrant at once (16 requests in flight).
    let template = example(&args.example);
    let children_per_instance = children_of(&template);
    let m0 = audit_sync(&cp, &admin).await;
    let cpu0 = components_cpu(&cp);
    let self_cpu_start = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "secureqdrant.dev",
        "v1alpha1",
        "SecureQdrant",
    ));
    futures::stream::iter((0..args.n).map(|i| {
        let mut sq = template.clone();
        sq["metadata"]["namespace"] = json!(bench_namespaces[i % NAMESPACES]);
        sq["metadata"]["name"] = json!(format!("q{i:05}"));
        (resource.clone(), sq)
    }))
    .map(|(ar, sq)| create(&admin, ar, sq))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await
    .unwrap_or_else(|e| panic!("SecureQdrants: {e}"));
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
    while t0.elapsed() < args.timeout {
        sample(&mut rss_peak_sampled);
        let done = converged(&instances, &statefulsets);
        if done >= args.n {
            converge = Some(t0.elapsed());
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:>6.1}s: {done}/{} converged (load {})",
                t0.elapsed().as_secs_f64(),
                args.n,
                loadavg()
            );
            last_report = Instant::now();
        }
        operator.check();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_converge = cpu_seconds(pid);
    let bench_cpu_converge = cpu_seconds(std::process::id()) - self_cpu_start;
    let cpu1 = components_cpu(&cp);
    let m_converged = audit_sync(&cp, &admin).await;
    let writes_at_converge =
        count(requests_between(&cp, &m0, &m_converged, &operator.user)).writes();
    eprintln!("  converged: {converge:?}, operator CPU {cpu_converge:.2}s");

    // The first reconcile is over when the StatefulSet controller has done its part (every
    // StatefulSet's pod created and its status published: the operator's status follows it) and
    // then 2 s pass without a write of the operator or a StatefulSet status write (both read
    // from the audit log).
    let mut writes = (u64::MAX, u64::MAX);
    let mut quiet_since = Instant::now();
    let settle_start = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2)
        && settle_start.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sample(&mut rss_peak_sampled);
        tail.poll();
        controller.poll();
        let now = (tail.writes(), controller.writes());
        if now != writes || statefulsets_settled(&statefulsets) < args.n {
            writes = now;
            quiet_since = Instant::now();
        }
        operator.check();
    }
    watch_instances.abort();
    watch_statefulsets.abort();
    let settle = quiet_since.duration_since(settle_start);
    eprintln!("  writes stopped {settle:?} after convergence");
    let m1 = audit_sync(&cp, &admin).await;
    let first = count(requests_between(&cp, &m0, &m1, &operator.user));
    let repeated = repeated_writes(&first, &all_requests_between(&cp, &m0, &m1));
    // No StatefulSet exists before the instances: every StatefulSet status write the tail has
    // seen is in the first reconcile's window.
    controller.poll();
    let statefulset_status_writes = controller.writes();
    let all_children =
        check_children(&admin, &bench_namespaces, args.n, children_per_instance).await;

    let idle = match idle {
        Some(d) => {
            eprintln!("  idle for {d:?}");
            let from = audit_sync(&cp, &admin).await;
            let idle_start = Instant::now();
            while idle_start.elapsed() < d {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sample(&mut rss_peak_sampled);
            }
            let to = audit_sync(&cp, &admin).await;
            Some((d, count(requests_between(&cp, &from, &to, &operator.user))))
        }
        None => None,
    };
    let cpu_total = cpu_seconds(pid);
    let rss_end_mib = proc_status_kib(pid, "VmRSS:") / 1024.0;
    let peak_rss_mib = proc_status_kib(pid, "VmHWM:") / 1024.0;
    operator.check();
    let cpu2 = components_cpu(&cp);
    let control_plane = cp
        .state
        .children
        .iter()
        .map(|(name, pid)| {
            let usage = Usage {
                cpu_converge: cpu1[name] - cpu0[name],
                cpu_total: cpu2[name] - cpu0[name],
                rss_end_mib: proc_status_kib(*pid, "VmRSS:") / 1024.0,
                peak_rss_mib: proc_status_kib(*pid, "VmHWM:") / 1024.0,
            };
            (name.clone(), usage)
        })
        .collect();
    let log = operator.log();
    assert!(!log.contains("panicked"), "the operator panicked");
    drop(operator);
    stop(cp);
    Report {
        label,
        n: args.n,
        children_per_instance,
        unrelated_insert,
        insert,
        converge,
        cpu_converge,
        cpu_total,
        bench_cpu_converge,
        settle,
        writes_at_converge,
        rss_start_mib,
        rss_peak_sampled,
        rss_end_mib,
        peak_rss_mib,
        first,
        repeated,
        statefulset_status_writes,
        idle,
        all_children,
        control_plane,
        load: (load_start, uptime()),
    }
}

/// Creates one object as admin.
async fn create(admin: &Client, ar: ApiResource, obj: Value) -> Result<(), String> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let api = Api::<DynamicObject>::namespaced_with(admin.clone(), ns, &ar);
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    api.create(&Default::default(), &dynamic)
        .await
        .map(|_| ())
        .map_err(|e| format!("create {} {ns}/{}: {e}", ar.kind, obj["metadata"]["name"]))
}

/// Stops a control plane (SIGTERM to `control-plane up`, which stops its children and removes
/// its directory) and waits for it.
fn stop(cp: ControlPlane) {
    // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
    unsafe {
        libc::kill(cp.pid() as libc::pid_t, libc::SIGTERM);
    }
    cp.wait();
}

/// The operator binary as the chart's ServiceAccount (cluster-wide RBAC of a new release in its
/// own namespace), like `ControlPlane::start_operator` but with the bench's options: log level
/// `info` in JSON (debug logging would be measured too), `--operator`, `--operator-env`.
struct BenchOperator {
    child: Child,
    /// The user name the API server sees.
    user: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BenchOperator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics when the operator has exited.
    fn check(&mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "the operator exited ({exit}):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

impl Drop for BenchOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_operator(cp: &ControlPlane, admin: &Client, args: &Args) -> BenchOperator {
    let namespace = cp.namespace(admin, "sqo").await;
    let docs = render_chart(&json!({}), &format!("sqo-{namespace}"), &namespace);
    let service_account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("the chart has a ServiceAccount")
        .to_owned();
    apply_chart_rbac(admin, &docs).await;
    let token = service_account_token(admin, &namespace, &service_account).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, token_kubeconfig(&cp.state, &token, &namespace)).unwrap();
    let log = dir.path().join("operator.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(&args.operator);
    cmd.args(["run", "--log-format", "json", "--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .env("LOG_LEVEL", "info")
        .env("POD_NAMESPACE", &namespace)
        .env_remove("HTTP_ADDR")
        .env_remove("WATCH_NAMESPACES")
        .env_remove("POD_NAME")
        .env_remove("CLUSTER_DOMAIN")
        .envs(args.operator_env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    // The operator dies with this process even when it is killed and Drop never runs.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .expect("operator starts (build it with `cargo bench`)");
    BenchOperator {
        child,
        user: format!("system:serviceaccount:{namespace}:{service_account}"),
        log,
        _dir: dir,
    }
}

/// Reads the audit log as it grows: the requests `wanted` picks, counted once each (by audit ID).
struct AuditTail {
    path: PathBuf,
    offset: u64,
    /// Lines without it are not parsed (cheap filter).
    needle: String,
    wanted: fn(&Request, &str) -> bool,
    user: String,
    seen: HashSet<String>,
    requests: BTreeMap<(String, String), u64>,
}

impl AuditTail {
    /// The requests of `user`.
    fn of_user(path: PathBuf, user: &str) -> AuditTail {
        AuditTail {
            path,
            offset: 0,
            needle: format!("\"username\":\"{user}\""),
            wanted: |r, user| r.user == user,
            user: user.to_owned(),
            seen: HashSet::new(),
            requests: BTreeMap::new(),
        }
    }

    /// StatefulSet status writes of anyone but `operator` (the StatefulSet controller's).
    fn statefulset_status(path: PathBuf, operator: &str) -> AuditTail {
        AuditTail {
            path,
            offset: 0,
            needle: "\"subresource\":\"status\"".to_owned(),
            wanted: statefulset_status_write,
            user: operator.to_owned(),
            seen: HashSet::new(),
            requests: BTreeMap::new(),
        }
    }

    /// Reads the lines written since the last call.
    fn poll(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        // Only whole lines; the rest is read next time.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        self.offset += end as u64 + 1;
        for line in String::from_utf8_lossy(&bytes[..end]).lines() {
            if !line.contains(&self.needle) {
                continue;
            }
            let Some((id, r)) = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|e| request_of(&e))
            else {
                continue;
            };
            if (self.wanted)(&r, &self.user) && self.seen.insert(id) {
                *self.requests.entry((r.verb, r.resource)).or_insert(0) += 1;
            }
        }
    }

    fn get(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn verb(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    fn writes(&self) -> u64 {
        WRITE_VERBS.iter().map(|v| self.verb(v)).sum()
    }
}

/// A write of a StatefulSet's status by someone other than `operator`: the real StatefulSet
/// controller publishing what it did (the in-memory server had none).
fn statefulset_status_write(r: &Request, operator: &str) -> bool {
    r.user != operator
        && r.resource == "statefulsets.apps/status"
        && WRITE_VERBS.contains(&r.verb.as_str())
}

/// CPU seconds of every control-plane component so far, by name.
fn components_cpu(cp: &ControlPlane) -> HashMap<String, f64> {
    cp.state
        .children
        .iter()
        .map(|(name, pid)| (name.clone(), cpu_seconds(*pid)))
        .collect()
}

/// Instances whose status describes their generation with Reconciled=True and whose StatefulSet
/// exists.
fn converged(instances: &Store<SecureQdrant>, statefulsets: &Store<StatefulSet>) -> usize {
    let statefulsets: BTreeSet<(String, String)> = statefulsets
        .state()
        .iter()
        .map(|s| {
            (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    instances
        .state()
        .iter()
        .filter(|sq| {
            let Some(status) = &sq.status else {
                return false;
            };
            status.observed_generation.is_some()
                && status.observed_generation == sq.metadata.generation
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Reconciled" && c.status == "True")
                && statefulsets.contains(&(
                    sq.metadata.namespace.clone().unwrap_or_default(),
                    sq.metadata.name.clone().unwrap_or_default(),
                ))
        })
        .count()
}

/// StatefulSets whose controller has done its part: status for the current generation, every
/// pod created (they stay Pending on the cordoned nodes) and no rollout pending.
fn statefulsets_settled(statefulsets: &Store<StatefulSet>) -> usize {
    statefulsets
        .state()
        .iter()
        .filter(|s| {
            let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            s.status.as_ref().is_some_and(|st| {
                st.observed_generation.is_some()
                    && st.observed_generation == s.metadata.generation
                    && st.replicas == want
                    && st.current_revision.is_some()
                    && st.current_revision == st.update_revision
            })
        })
        .count()
}

/// Every instance (in the bench's namespaces: the chart's own objects carry the same label) has
/// exactly the children the builders make (plus its CA Secret).
async fn check_children(
    admin: &Client,
    namespaces: &[String],
    n: usize,
    per_instance: usize,
) -> Result<(), String> {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let labelled = ListParams::default().labels("app.kubernetes.io/instance");
    for (api_version, kind) in secure_qdrant_operator::children::CHILD_KINDS {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let list = Api::<DynamicObject>::all_with(admin.clone(), &ar)
            .list_metadata(&labelled)
            .await
            .map_err(|e| format!("list {kind}: {e}"))?;
        for o in list.items {
            let labels = o.metadata.labels.unwrap_or_default();
            if let Some(instance) = labels.get("app.kubernetes.io/instance") {
                let ns = o.metadata.namespace.unwrap_or_default();
                if !namespaces.contains(&ns) {
                    continue;
                }
                *counts.entry((ns, instance.clone())).or_default() += 1;
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

/// `uptime`'s output (the machine's load: other engineers build on the same cores).
fn uptime() -> String {
    Command::new("uptime")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| format!("load average {}", loadavg()))
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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

/// The children the operator wrote more than once in a window (status and Events aside), each
/// with every request of any user on it in that window (`all`: the audit log's requests; user,
/// verb and response code, in the log's order): another writer (a controller, the garbage
/// collector) or a failed write shows there.
fn repeated_writes(operator: &Counters, all: &[Request]) -> String {
    let child = |r: &Request| {
        !r.resource.contains('/')
            && !r.resource.starts_with("events")
            && !r.resource.starts_with("secureqdrants")
    };
    let mut writes: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for r in operator.log.iter().filter(|r| child(r)) {
        if WRITE_VERBS.contains(&r.verb.as_str()) {
            *writes
                .entry((r.resource.as_str(), r.namespace.as_str(), r.name.as_str()))
                .or_default() += 1;
        }
    }
    let mut out = String::new();
    for ((resource, namespace, name), n) in writes.into_iter().filter(|(_, n)| *n > 1) {
        let requests: Vec<String> = all
            .iter()
            .filter(|r| {
                r.resource.split('/').next() == Some(resource)
                    && r.namespace == namespace
                    && r.name == name
            })
            .map(|r| {
                let user = operator.log.first().filter(|o| o.user == r.user);
                let user = user.map_or(r.user.as_str(), |_| "operator");
                format!("{user} {} {}", r.verb, r.code)
            })
            .collect();
        out += &format!(
            "  {resource} {namespace}/{name}: {n} writes: {}\n",
            requests.join(", ")
        );
    }
    out
}

/// Writes of the SecureQdrants' status.
fn status_writes(c: &Counters) -> u64 {
    c.requests
        .iter()
        .filter(|((verb, res), _)| {
            WRITE_VERBS.contains(&verb.as_str()) && res == "secureqdrants.secureqdrant.dev/status"
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
    println!("| load at the start / end | {} / {} |", r.load.0, r.load.1);
    if !r.unrelated_insert.is_zero() {
        println!(
            "| create the unrelated objects (as admin, {CREATE_CONCURRENCY} at a time) | {:.2} s |",
            r.unrelated_insert.as_secs_f64()
        );
    }
    println!(
        "| create {} SecureQdrants (as admin, {CREATE_CONCURRENCY} at a time) | {:.2} s |",
        r.n,
        r.insert.as_secs_f64()
    );
    match r.converge {
        Some(d) => println!(
            "| wall time to converge (all StatefulSets + status) | {:.2} s |",
            d.as_secs_f64()
        ),
        None => println!("| wall time to converge | did not converge |"),
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
        "| bench process CPU until converged (creating, watching) | {:.2} s |",
        r.bench_cpu_converge
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

    println!("Control plane (CPU from the creation of the instances; RSS of the whole run):\n");
    println!(
        "| process | CPU until converged | CPU, whole run | RSS at the end | peak RSS (VmHWM) |\n|---|---|---|---|---|"
    );
    for (name, u) in &r.control_plane {
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.1} MiB | {:.1} MiB |",
            u.cpu_converge, u.cpu_total, u.rss_end_mib, u.peak_rss_mib
        );
    }
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
    println!(
        "| StatefulSet status writes of the StatefulSet controller (same window) | {} | {:.2} |",
        r.statefulset_status_writes,
        per(r.statefulset_status_writes, r.n)
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
    let child_writes = per(
        main.first.writes() - event_writes(&main.first) - status_writes(&main.first),
        main.n,
    );
    let status = per(status_writes(&main.first), main.n);
    let controller = per(main.statefulset_status_writes, main.n);
    println!(
        "| of which: child writes ≤ children = {children}; status writes ≤ 1 + the StatefulSet controller's status writes ({:.2}) | {child_writes:.2}; {status:.2} | {} |",
        1.0 + controller,
        mark(child_writes <= children && status <= 1.0 + controller)
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
