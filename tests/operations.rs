//! Operating the operator, against the in-memory API server of `tests/fake-apiserver`:
//!
//! - the leader elector (`secure_qdrant_operator::leader`) with several candidates: exactly one
//!   leads, a standby takes over once the leader stops renewing (after the Lease expires, not
//!   before), lost races (409) leave the loser standing by, a leader that cannot renew steps down
//!   before its Lease expires, and the Lease is released on shutdown;
//! - the real binary (`secure-qdrant-operator run`): `/healthz`, `/readyz` (503 until the caches
//!   synced), `/metrics` after SecureQdrant and QdrantAccessToken reconciles (counts, failures by
//!   kind, durations, certificate and token expiry), SIGTERM (exit 0, Lease released), JSON logs
//!   and the log level, `--namespaces`, and two replicas with leader election (only the leader
//!   reconciles; killing it hands over within ~20 s; a leader that loses its Lease exits 1).
//!
//! Each binary test starts its own API server, and each operator serves its endpoints on a port
//! the kernel picks (`--http-addr 127.0.0.1:0`), read back from its JSON log.

#[path = "support/in_process.rs"]
mod in_process;

use in_process::server_with_kubeconfig;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Faults, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;

use secure_qdrant_operator::controller::shutdown::Shutdown;
use secure_qdrant_operator::leader::{self, Attempt, LEASE_NAME, LeaderElector, LeaseConfig};
use secure_qdrant_operator::telemetry::{Health, Role};

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
const GROUP_VERSION: &str = "secureqdrant.dev/v1alpha1";
const LEASES: &str = "leases.coordination.k8s.io";

// ---------------------------------------------------------------------------------------------
// The leader elector, as a library
// ---------------------------------------------------------------------------------------------

/// Short timings so expiry tests take seconds: Lease 2 s, renewed every 300 ms, given up after
/// 1.2 s without a renewal, standbys look every 100 ms.
fn fast(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_period: Duration::from_millis(300),
        renew_deadline: Duration::from_millis(1200),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("ops", identity)
    }
}

fn holder(server: &FakeApiServer) -> Option<String> {
    server
        .get("coordination.k8s.io/v1", "Lease", "ops", LEASE_NAME)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn transitions(server: &FakeApiServer) -> i64 {
    server
        .get("coordination.k8s.io/v1", "Lease", "ops", LEASE_NAME)
        .and_then(|l| l["spec"]["leaseTransitions"].as_i64())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_candidates_leads() {
    let server = FakeApiServer::start(Options::default()).await.unwrap();
    let client = client_of(&server).await;
    let mut a = LeaderElector::new(client.clone(), fast("a"));
    let mut b = LeaderElector::new(client.clone(), fast("b"));

    // Both try at once, then keep trying: one leads every round, always the same one.
    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let leader = match (&ra, &rb) {
        (Attempt::Leading, Attempt::Standby { .. }) => "a",
        (Attempt::Standby { .. }, Attempt::Leading) => "b",
        other => panic!("not exactly one leader: {other:?}"),
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (lead, stand) = if leader == "a" { (ra, rb) } else { (rb, ra) };
        assert_eq!(lead, Attempt::Leading);
        assert_eq!(
            stand,
            Attempt::Standby {
                holder: leader.into()
            }
        );
    }
    assert_eq!(holder(&server).as_deref(), Some(leader));
    assert_eq!(transitions(&server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_once_the_leader_stopped_renewing_for_the_lease_duration() {
    let server = FakeApiServer::start(Options::default()).await.unwrap();
    let client = client_of(&server).await;
    let mut a = LeaderElector::new(client.clone(), fast("a"));
    let mut b = LeaderElector::new(client.clone(), fast("b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);

    // a renews for a while: b never takes over, though more than a Lease duration passes.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
        assert_eq!(
            b.try_acquire_or_renew().await.unwrap(),
            Attempt::Standby { holder: "a".into() }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // a stops renewing (hung, partitioned): b takes over 2 s after it last saw a renewal.
    let stopped = Instant::now();
    let took_over = loop {
        match b.try_acquire_or_renew().await.unwrap() {
            Attempt::Leading => break stopped.elapsed(),
            Attempt::Standby { holder } => assert_eq!(holder, "a"),
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "b never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        took_over >= Duration::from_millis(1700),
        "took over after {took_over:?}, before the Lease could expire"
    );
    assert_eq!(holder(&server).as_deref(), Some("b"));
    assert_eq!(transitions(&server), 1);
    // a comes back: it has lost.
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::Standby { holder: "b".into() }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_leaves_the_loser_standing_by() {
    let server = FakeApiServer::start(Options::default()).await.unwrap();
    let client = client_of(&server).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), "ops");
    let mut a = LeaderElector::new(client.clone(), fast("a"));
    let mut b = LeaderElector::new(client.clone(), fast("b"));

    // Both saw no Lease; a creates it first, b's create is refused (409 AlreadyExists).
    assert_eq!(a.act_on(None).await.unwrap(), Attempt::Leading);
    assert!(matches!(
        b.act_on(None).await.unwrap(),
        Attempt::Standby { .. }
    ));
    assert_eq!(holder(&server).as_deref(), Some("a"));

    // a releases; both read the free Lease; a writes first, b's write on the same
    // resourceVersion is refused (409 Conflict).
    assert!(a.release().await.unwrap());
    assert_eq!(holder(&server), None);
    let seen = api.get(LEASE_NAME).await.unwrap();
    assert_eq!(
        a.act_on(Some(seen.clone())).await.unwrap(),
        Attempt::Leading
    );
    assert!(matches!(
        b.act_on(Some(seen)).await.unwrap(),
        Attempt::Standby { .. }
    ));
    assert_eq!(holder(&server).as_deref(), Some("a"));
    assert_eq!(
        server.counters().get("update", LEASES),
        3,
        "release + two takes"
    );

    // Released, the Lease is free at once (no expiry to wait for).
    assert!(a.release().await.unwrap());
    assert!(!a.release().await.unwrap(), "only the holder releases");
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert_eq!(holder(&server).as_deref(), Some("b"));
    assert!(!a.release().await.unwrap(), "a does not hold it");
    assert_eq!(holder(&server).as_deref(), Some("b"));
}

/// A future that records whether it was dropped before finishing.
struct Lead {
    dropped: Arc<AtomicBool>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_runs_the_work_releases_on_shutdown_and_stops_it_when_the_lease_is_taken() {
    let server = Arc::new(FakeApiServer::start(Options::default()).await.unwrap());
    let client = client_of(&server).await;

    // 1. Shutdown while leading: the work finishes, the Lease is released.
    let (trigger, shutdown) = Shutdown::new();
    let health = Health::default();
    let task = {
        let (client, health, shutdown) = (client.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move {
            let work = {
                let shutdown = shutdown.clone();
                async move {
                    shutdown.requested().await;
                    42
                }
            };
            leader::run(
                LeaderElector::new(client, fast("a")),
                &health,
                &shutdown,
                work,
            )
            .await
        })
    };
    wait_until("a leads", Duration::from_secs(5), || {
        (holder(&server).as_deref() == Some("a") && health.role() == Role::Leader).then_some(())
    })
    .await;
    trigger.fire();
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("returns after shutdown")
        .unwrap();
    assert_eq!(out.expect("not lost"), Some(42));
    assert_eq!(holder(&server), None, "released");

    // 2. Another holder appears (an operator with a clock far off, a human): the leader notices
    // at its next renewal and stops the work.
    let (_trigger, shutdown) = Shutdown::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let task = {
        let (client, dropped) = (client.clone(), dropped.clone());
        tokio::spawn(async move {
            let work = async move {
                let _guard = Lead { dropped };
                std::future::pending::<()>().await
            };
            leader::run(
                LeaderElector::new(client, fast("a")),
                &Health::default(),
                &shutdown,
                work,
            )
            .await
        })
    };
    wait_until("a leads again", Duration::from_secs(5), || {
        (holder(&server).as_deref() == Some("a")).then_some(())
    })
    .await;
    let api: Api<Lease> = Api::namespaced(client.clone(), "ops");
    steal(&api, "intruder").await;
    let lost = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the leader notices within a renew period")
        .unwrap()
        .expect_err("lost");
    assert!(lost.reason.contains("intruder"), "{lost}");
    assert!(dropped.load(Ordering::SeqCst), "the work was stopped");
    assert_eq!(holder(&server).as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
    let server = Arc::new(FakeApiServer::start(Options::default()).await.unwrap());
    let client = client_of(&server).await;
    let (_trigger, shutdown) = Shutdown::new();
    let task = {
        let client = client.clone();
        tokio::spawn(async move {
            leader::run(
                LeaderElector::new(client, fast("a")),
                &Health::default(),
                &shutdown,
                std::future::pending::<()>(),
            )
            .await
        })
    };
    wait_until("a leads", Duration::from_secs(5), || {
        (holder(&server).as_deref() == Some("a")).then_some(())
    })
    .await;
    // Let one renewal through, then every Lease request fails.
    let renewals = server.counters().get("update", LEASES);
    wait_until("a renewed", Duration::from_secs(3), || {
        (server.counters().get("update", LEASES) > renewals).then_some(())
    })
    .await;
    let renewed_at = Instant::now();
    server.set_faults(Faults {
        error_rate: 1.0,
        error_codes: vec![500],
        resources: vec![LEASES.into()],
        ..Faults::default()
    });
    let lost = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the leader gives up")
        .unwrap()
        .expect_err("lost");
    let after = renewed_at.elapsed();
    assert!(lost.reason.contains("not renewed"), "{lost}");
    // Deadline 1.2 s after the last renewal; the Lease lasts 2 s: no overlap with a successor.
    assert!(
        after < Duration::from_millis(1900),
        "stepped down after {after:?}"
    );
    assert!(
        after >= Duration::from_millis(800),
        "stepped down after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reports_whether_it_can_read_the_lease_and_stops_on_shutdown() {
    let server = Arc::new(FakeApiServer::start(Options::default()).await.unwrap());
    let client = client_of(&server).await;
    let mut other = LeaderElector::new(client.clone(), fast("other"));
    assert_eq!(
        other.try_acquire_or_renew().await.unwrap(),
        Attempt::Leading
    );
    let keep_other = {
        let server = server.clone();
        tokio::spawn(async move {
            loop {
                if server.faults().error_rate == 0.0 {
                    let _ = other.try_acquire_or_renew().await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let (trigger, shutdown) = Shutdown::new();
    let health = Health::default();
    let ran = Arc::new(AtomicBool::new(false));
    let task = {
        let (client, health, ran) = (client.clone(), health.clone(), ran.clone());
        tokio::spawn(async move {
            let work = async move { ran.store(true, Ordering::SeqCst) };
            leader::run(
                LeaderElector::new(client, fast("a")),
                &health,
                &shutdown,
                work,
            )
            .await
        })
    };
    wait_until("a stands by", Duration::from_secs(3), || {
        (health.readiness() == Ok("standby: another replica leads")).then_some(())
    })
    .await;
    server.set_faults(Faults {
        error_rate: 1.0,
        verbs: vec!["get".into()],
        resources: vec![LEASES.into()],
        ..Faults::default()
    });
    wait_until(
        "a reports the Lease unreadable",
        Duration::from_secs(3),
        || (health.readiness() == Err("standby: the Lease cannot be read")).then_some(()),
    )
    .await;
    server.clear_faults();
    wait_until("a stands by again", Duration::from_secs(3), || {
        health.readiness().is_ok().then_some(())
    })
    .await;
    trigger.fire();
    let out = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(out.expect("not lost"), None, "never led");
    assert!(
        !ran.load(Ordering::SeqCst),
        "a standby never runs the controllers"
    );
    assert_eq!(holder(&server).as_deref(), Some("other"));
    keep_other.abort();
}

/// Makes `identity` the Lease's holder, whatever the current holder does meanwhile.
async fn steal(api: &Api<Lease>, identity: &str) {
    for _ in 0..20 {
        let mut lease = api.get(LEASE_NAME).await.unwrap();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(identity.into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            Timestamp::now(),
        ));
        spec.lease_duration_seconds = Some(3600);
        match api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("could not overwrite the Lease");
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_metrics_after_secure_qdrant_and_token_reconciles() {
    // The StatefulSet cache cannot list at first: the operator runs but is not ready.
    let env = Env::start(Faults {
        error_rate: 1.0,
        verbs: vec!["list".into()],
        resources: vec!["statefulsets.apps".into()],
        ..Faults::default()
    })
    .await;
    let op = env.spawn("op", &[]);
    let http = op.http_addr().await;
    assert_eq!(get(&http, "/healthz"), (200, "ok\n".into()));
    let (code, body) = get(&http, "/readyz");
    assert_eq!((code, body.as_str()), (503, "caches not synced yet\n"));
    let (code, metrics) = get(&http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"secure_qdrant_reconciles_total{controller="secureqdrant"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    env.server.clear_faults();
    eventually(
        "ready once the caches synced",
        Duration::from_secs(20),
        || {
            let (code, body) = get(&http, "/readyz");
            (code == 200).then_some(()).ok_or(body)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));

    // A SecureQdrant whose status cannot be written at first (a failure of the "status" step),
    // and a token for it.
    env.server.set_faults(Faults {
        error_rate: 1.0,
        verbs: vec!["patch".into()],
        resources: vec!["secureqdrants.secureqdrant.dev/status".into()],
        ..Faults::default()
    });
    env.server.insert(instance("search", "vectors")).unwrap();
    env.server
        .insert(token("search", "frontend", "vectors"))
        .unwrap();
    eventually("a failure counted", Duration::from_secs(20), || {
        let m = get(&http, "/metrics").1;
        sample(
            &m,
            r#"secure_qdrant_reconcile_failures_total{controller="secureqdrant",error="status"}"#,
        )
        .filter(|n| *n >= 1.0)
        .ok_or(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    env.server.clear_faults();

    let not_after = eventually("certificate in status", Duration::from_secs(30), || {
        let sq = env
            .server
            .get(GROUP_VERSION, "SecureQdrant", "search", "vectors")
            .unwrap_or_default();
        unix(&sq["status"]["certificate"]["notAfter"]).ok_or(sq.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let expires_at = eventually("token in status", Duration::from_secs(30), || {
        let t = env
            .server
            .get(GROUP_VERSION, "QdrantAccessToken", "search", "frontend")
            .unwrap_or_default();
        unix(&t["status"]["expiresAt"]).ok_or(t.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));

    let cert_series =
        r#"secure_qdrant_certificate_expiry_timestamp_seconds{namespace="search",name="vectors"}"#;
    let token_series =
        r#"secure_qdrant_token_expiry_timestamp_seconds{namespace="search",name="frontend"}"#;
    let metrics = eventually("expiry gauges", Duration::from_secs(10), || {
        let m = get(&http, "/metrics").1;
        (sample(&m, cert_series) == Some(not_after as f64)
            && sample(&m, token_series) == Some(expires_at as f64))
        .then_some(m.clone())
        .ok_or(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for controller in ["secureqdrant", "qdrantaccesstoken"] {
        let n = sample(
            &metrics,
            &format!(r#"secure_qdrant_reconciles_total{{controller="{controller}"}}"#),
        )
        .unwrap_or(0.0);
        assert!(n >= 1.0, "{controller}: {metrics}");
        let timed = sample(
            &metrics,
            &format!(
                r#"secure_qdrant_reconcile_duration_seconds_count{{controller="{controller}"}}"#
            ),
        );
        assert_eq!(timed, Some(n), "every reconcile is timed: {metrics}");
    }
    assert!(metrics.contains("# TYPE secure_qdrant_reconcile_duration_seconds histogram"));
    assert!(metrics.contains(
        r#"secure_qdrant_reconcile_duration_seconds_bucket{le="+Inf",controller="secureqdrant"}"#
    ));

    // Deleted objects leave the metrics.
    env.server
        .delete(GROUP_VERSION, "QdrantAccessToken", "search", "frontend")
        .unwrap();
    env.server
        .delete(GROUP_VERSION, "SecureQdrant", "search", "vectors")
        .unwrap();
    eventually("series removed", Duration::from_secs(10), || {
        let m = get(&http, "/metrics").1;
        (sample(&m, cert_series).is_none() && sample(&m, token_series).is_none())
            .then_some(())
            .ok_or(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    op.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_operator_with_exit_code_0() {
    let env = Env::start(Faults::default()).await;
    let mut op = env.spawn("op", &[]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    env.server.insert(instance("search", "vectors")).unwrap();
    op.wait_log("applied children").await;

    let status = op.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", op.log_tail());
    let log = op.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("controllers stopped"), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    assert!(
        TcpStream::connect(&http).is_err(),
        "the HTTP endpoints stopped with the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_leader_election_releases_the_lease_and_exits_0() {
    let env = Env::start(Faults::default()).await;
    let mut op = env.spawn("op-a", &["--leader-election", "--lease-namespace", "ops"]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    assert_eq!(holder(&env.server).as_deref(), Some("op-a"));
    assert_eq!(get(&http, "/readyz"), (200, "leader: ready\n".into()));

    let status = op.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", op.log_tail());
    assert_eq!(holder(&env.server), None, "released");
    assert!(op.log().contains("released the Lease"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_at_the_chosen_level() {
    let env = Env::start(Faults::default()).await;
    // JSON at debug level for the operator's own modules.
    let mut op = env.spawn_with(
        "op",
        &[],
        &[("LOG_LEVEL", "secure_qdrant_operator=debug,warn")],
    );
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    env.server.insert(instance("search", "vectors")).unwrap();
    op.wait_log("applied children").await;
    assert_eq!(op.terminate(Duration::from_secs(10)).code(), Some(0));
    let log = op.log();
    let mut levels = BTreeMap::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field}: {line}");
        }
        *levels
            .entry(v["level"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
        // `warn` for everything else: kube's INFO lines are filtered out.
        if v["level"] == "INFO" || v["level"] == "DEBUG" {
            let target = v["target"].as_str().unwrap_or_default();
            assert!(target.starts_with("secure_qdrant_operator"), "{line}");
        }
    }
    assert!(levels.contains_key("DEBUG"), "{levels:?}");
    assert!(levels.contains_key("INFO"), "{levels:?}");

    // `--log-level warn`: the routine INFO lines are gone. (The endpoints' address is logged at
    // INFO, so this one gets a fixed port.)
    let port = free_port();
    let mut quiet = env.spawn_with(
        "quiet",
        &[
            "--log-level",
            "warn",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    let http = format!("127.0.0.1:{port}");
    quiet.wait_ready(&http).await;
    assert_eq!(quiet.terminate(Duration::from_secs(10)).code(), Some(0));
    let log = quiet.log();
    assert!(
        !log.contains("\"INFO\"") && !log.contains("caches synced"),
        "INFO lines at level warn:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_namespaces_are_watched() {
    let env = Env::start(Faults::default()).await;
    let op = env.spawn("op", &["--namespaces", "team-a,team-b"]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    for ns in ["team-a", "team-b", "team-c"] {
        env.server.insert(instance(ns, "vectors")).unwrap();
    }
    for ns in ["team-a", "team-b"] {
        eventually(&format!("{ns} reconciled"), Duration::from_secs(20), || {
            let sq = env
                .server
                .get(GROUP_VERSION, "SecureQdrant", ns, "vectors")
                .unwrap_or_default();
            sq["status"]["observedGeneration"]
                .as_i64()
                .ok_or(sq.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    }
    // A child deleted in a watched namespace comes back (caches and triggers work per
    // namespace).
    let config_maps = env.server.list("v1", "ConfigMap", "team-b");
    let cm = config_maps[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    env.server.delete("v1", "ConfigMap", "team-b", &cm).unwrap();
    eventually("the ConfigMap is back", Duration::from_secs(10), || {
        env.server
            .get("v1", "ConfigMap", "team-b", &cm)
            .map(|_| ())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let sq = env
        .server
        .get(GROUP_VERSION, "SecureQdrant", "team-c", "vectors")
        .unwrap();
    assert!(sq.get("status").is_none(), "team-c is not watched: {sq}");
    assert!(
        env.server.list("v1", "ConfigMap", "team-c").is_empty(),
        "nothing built in team-c"
    );
    let m = get(&http, "/metrics").1;
    assert!(
        !m.contains(r#"namespace="team-c""#),
        "no series for team-c: {m}"
    );
    op.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_the_other_takes_over_when_it_dies() {
    let env = Env::start(Faults::default()).await;
    let le = ["--leader-election", "--lease-namespace", "ops"];
    let mut a = env.spawn("op-a", &le);
    let a_http = a.http_addr().await;
    a.wait_ready(&a_http).await;
    assert_eq!(holder(&env.server).as_deref(), Some("op-a"));
    let b = env.spawn("op-b", &le);
    let b_http = b.http_addr().await;
    eventually("b stands by, ready", Duration::from_secs(10), || {
        let r = get(&b_http, "/readyz");
        (r == (200, "standby: another replica leads\n".into()))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));

    // Only the leader reconciles.
    env.server.insert(instance("search", "vectors")).unwrap();
    eventually("reconciled", Duration::from_secs(20), || {
        let sq = env
            .server
            .get(GROUP_VERSION, "SecureQdrant", "search", "vectors")
            .unwrap_or_default();
        sq["status"]["observedGeneration"]
            .as_i64()
            .ok_or(sq.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail()));
    let reconciles = |http: &str| {
        sample(
            &get(http, "/metrics").1,
            r#"secure_qdrant_reconciles_total{controller="secureqdrant"}"#,
        )
        .unwrap_or(-1.0)
    };
    assert!(reconciles(&a_http) >= 1.0);
    assert_eq!(reconciles(&b_http), 0.0, "the standby reconciled");
    assert!(
        !b.log().contains("starting the SecureQdrant"),
        "{}",
        b.log()
    );

    // The leader dies without releasing: b takes over after the Lease expires (15 s).
    let killed = Instant::now();
    a.kill();
    let took = eventually("b leads", Duration::from_secs(25), || {
        (holder(&env.server).as_deref() == Some("op-b"))
            .then(|| killed.elapsed())
            .ok_or(format!("holder {:?}", holder(&env.server)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));
    assert!(took <= Duration::from_secs(20), "took {took:?}");
    assert!(
        took >= Duration::from_secs(10),
        "took over after {took:?}: too early"
    );
    eventually("b reconciles", Duration::from_secs(20), || {
        let n = reconciles(&b_http);
        (n >= 1.0).then_some(()).ok_or(n.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));
    assert_eq!(get(&b_http, "/readyz"), (200, "leader: ready\n".into()));
    b.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_exits_non_zero() {
    let env = Env::start(Faults::default()).await;
    let mut op = env.spawn("op-a", &["--leader-election", "--lease-namespace", "ops"]);
    let http = op.http_addr().await;
    op.wait_ready(&http).await;
    let api: Api<Lease> = Api::namespaced(env.client().await, "ops");
    steal(&api, "intruder").await;
    let status = op
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running\n{}", op.log_tail()));
    assert_eq!(status.code(), Some(1), "{}", op.log_tail());
    assert!(op.log().contains("lost the Lease"), "{}", op.log_tail());
    assert_eq!(holder(&env.server).as_deref(), Some("intruder"));
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Env {
    server: Arc<FakeApiServer>,
    dir: TempDir,
}

impl Env {
    async fn start(faults: Faults) -> Env {
        let (server, dir) = server_with_kubeconfig(faults).await;
        Env {
            server: Arc::new(server),
            dir,
        }
    }

    async fn client(&self) -> Client {
        client_of(&self.server).await
    }

    /// Starts the operator as pod `name`, JSON logs, endpoints on a port the kernel picks.
    fn spawn(&self, name: &str, args: &[&str]) -> Operator {
        self.spawn_with(name, args, &[])
    }

    fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Operator {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        let mut cmd = Command::new(OPERATOR);
        cmd.args(["run", "--log-format", "json"]);
        if !args.contains(&"--http-addr") {
            cmd.args(["--http-addr", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("POD_NAME", name)
            .env_remove("LOG_LEVEL")
            .env_remove("HTTP_ADDR")
            .env_remove("WATCH_NAMESPACES")
            .env_remove("LEADER_ELECTION")
            .env_remove("LEASE_NAMESPACE")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Operator {
            child: cmd.spawn().expect("operator binary starts"),
            log,
            exited: None,
        }
    }
}

async fn client_of(server: &FakeApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// The operator process; killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Operator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The address of the endpoints, from the "serving" log line.
    async fn http_addr(&self) -> String {
        eventually(
            "the endpoints' address in the log",
            Duration::from_secs(10),
            || {
                self.log()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| {
                        v["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("serving /metrics"))
                    })
                    .and_then(|v| v["addr"].as_str().map(str::to_owned))
                    .ok_or_else(|| "not yet".to_owned())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    async fn wait_ready(&self, http: &str) {
        eventually("/readyz 200", Duration::from_secs(20), || {
            let (code, body) = get(http, "/readyz");
            (code == 200).then_some(()).ok_or(format!("{code} {body}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    async fn wait_log(&self, needle: &str) {
        eventually(needle, Duration::from_secs(20), || {
            self.log()
                .contains(needle)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    /// SIGTERM, then waits up to `within` for the exit.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit(within)
            .unwrap_or_else(|| panic!("no exit within {within:?} of SIGTERM\n{}", self.log_tail()))
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.exited = Some(status);
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    fn assert_running(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
        assert!(self.exited.is_none(), "the operator exited");
    }

    /// Running, and no ERROR line (for tests without injected faults).
    fn assert_clean(&self) {
        self.assert_running();
        let log = self.log();
        assert!(
            !log.contains("\"level\":\"ERROR\""),
            "errors logged:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.kill();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.1: (status, body). (0, error) when the connection fails.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request written");
    let mut raw = String::new();
    if let Err(e) = stream.read_to_string(&mut raw) {
        return (0, e.to_string());
    }
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The value of the series written exactly as `series` (name and labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn unix(v: &Value) -> Option<i64> {
    v.as_str()?.parse::<Timestamp>().ok().map(|t| t.as_second())
}

fn instance(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "SecureQdrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {},
    })
}

fn token(ns: &str, name: &str, instance: &str) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "QdrantAccessToken",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"qdrantRef": {"name": instance}, "access": {"global": "r"}},
    })
}

/// Polls `check` every 50 ms until it returns Ok, or returns its last error after `timeout`.
async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{what}: not within {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<()>) {
    eventually(what, timeout, || check().ok_or_else(String::new))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
