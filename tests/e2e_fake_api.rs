//! End to end: the real operator binary (`secure-qdrant-operator run`) against the in-memory fake
//! API server of `tests/fake-apiserver`. Each test starts its own server with the CRDs, spawns the
//! operator with KUBECONFIG pointing at it (stderr captured to a file, the process killed when
//! the test ends) and drives it the way a user and a cluster would.
//!
//! What a converged instance is, checked by [`check_instance`]: its status describes the current
//! generation with `Reconciled=True`; every child the builders (`children::build`) produce for
//! the validated spec exists with the same spec/data, labels and owner reference; nothing else
//! carries the instance's labels; the API-key, CA and TLS Secrets hold the right keys; the PVCs of
//! the StatefulSet's claim templates exist. Secret values are generated, so the builders get the
//! live keys and certificate: the restart hash is then checked against them too.

#[path = "support/in_process.rs"]
mod in_process;

use in_process::server_with_kubeconfig;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fake_apiserver::{FakeApiServer, Faults};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;

use secure_qdrant_operator::children::meta::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER, RESTART_HASH,
};
use secure_qdrant_operator::children::{self, Material, PodTls};
use secure_qdrant_operator::crd::{Phase, SecureQdrant};
use secure_qdrant_operator::material::{self, ApiKeys, read_key};
use secure_qdrant_operator::reconcile::apply::APPLIED_HASH;
use secure_qdrant_operator::reconcile::plan::PEERS_REMOVED_ANNOTATION;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::TLS_FINGERPRINT_ANNOTATION;
use secure_qdrant_operator::validate::{self, TlsSource};

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const SQ_KIND: &str = "SecureQdrant";

/// How long a test waits for the operator to converge (first reconciles take well under a
/// second here; the fault test needs retries with backoff).
const CONVERGE: Duration = Duration::from_secs(20);

/// The same under 20% injected errors. Usually 0.3-10 s, but the operator's `error_policy`
/// backs off 5 s doubling with every consecutive failure of an object, and failures of
/// reconciles that watch events trigger count too: a burst of 4-5 failures within a second
/// (likely at a 20% error rate) parks the instance for 40-80 s. Measured over 25 runs: 4 took
/// 40-82 s. Lower this to CONVERGE once the backoff starts lower (see BENCHMARKS.md).
const CONVERGE_UNDER_FAULTS: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_example_gets_every_child_then_ready_when_the_statefulset_is() {
    example_converges("minimal.yaml", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_example_gets_every_child_then_ready_when_the_statefulset_is() {
    example_converges("full.yaml", 3).await;
}

async fn example_converges(file: &str, replicas: i32) {
    let mut cluster = Cluster::start(Faults::default()).await;
    cluster.spawn_operator();
    let sq = example(file);
    let (ns, name) = ns_name(&sq);
    cluster.insert_instance(&sq);

    let snap = cluster.converge(&ns, &name).await;
    // No kubelet: the StatefulSet has no status, so nothing runs yet.
    assert_eq!(snap.phase(), Some(Phase::Pending), "{:?}", snap.sq.status);
    let status = snap.sq.status.as_ref().expect("status");
    assert_eq!(status.ready_replicas, Some(0));
    let secrets = status.secrets.as_ref().expect("status.secrets");
    assert_eq!(secrets.api_key, format!("{name}-api-key"));
    assert_eq!(secrets.tls.as_deref(), Some(format!("{name}-tls").as_str()));
    assert_eq!(secrets.ca.as_deref(), Some(format!("{name}-ca").as_str()));
    let endpoints = status.endpoints.as_ref().expect("status.endpoints");
    assert_eq!(endpoints.rest, format!("https://{name}.{ns}.svc:6333"));
    assert_eq!(endpoints.grpc, format!("https://{name}.{ns}.svc:6334"));
    assert_eq!(snap.statefulset_replicas(), replicas);
    if replicas > 1 {
        assert!(snap.has("PodDisruptionBudget", &name));
        assert!(snap.has("NetworkPolicy", &format!("{name}-egress")));
    }
    // Events say what was generated (never the values).
    let reasons = event_reasons(&cluster.server, &ns, &name);
    assert!(reasons.contains("CredentialsGenerated"), "{reasons:?}");
    assert!(reasons.contains("CertificateIssued"), "{reasons:?}");

    // The StatefulSet controller and kubelet report every pod updated and ready.
    mark_statefulset_ready(&cluster.server, &ns, &name);
    let ready = cluster
        .converge_until(&ns, &name, |s| s.phase() == Some(Phase::Ready))
        .await;
    let status = ready.sq.status.as_ref().expect("status");
    assert_eq!(status.ready_replicas, Some(replicas));
    assert_eq!(status.replicas, Some(replicas));
    let ready_cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready_cond.status, "True", "{ready_cond:?}");
    // Becoming ready changed no credential.
    assert_eq!(ready.api_key, snap.api_key);
    assert_eq!(ready.ca, snap.ca);
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_are_followed_by_the_children() {
    let mut cluster = Cluster::start(Faults::default()).await;
    cluster.spawn_operator();
    let sq = example("minimal.yaml");
    let (ns, name) = ns_name(&sq);
    cluster.insert_instance(&sq);
    let single = cluster.converge(&ns, &name).await;
    assert!(!single.has("PodDisruptionBudget", &name));
    assert!(!single.has("NetworkPolicy", &format!("{name}-egress")));
    assert_eq!(single.pvcs, names(&[&format!("storage-{name}-0")]));

    // 1 → 3 replicas: cluster mode brings the PDB, the peers' egress policy and two more PVCs.
    let client = cluster.client().await;
    let api: Api<SecureQdrant> = Api::namespaced(client, &ns);
    merge(&api, &name, json!({"spec": {"replicas": 3}})).await;
    let three = cluster
        .converge_until(&ns, &name, |s| s.generation() == 2)
        .await;
    assert!(three.has("PodDisruptionBudget", &name));
    assert!(three.has("NetworkPolicy", &format!("{name}-egress")));
    assert_eq!(three.statefulset_replicas(), 3);
    assert_eq!(
        three.pvcs,
        names(&[
            &format!("storage-{name}-0"),
            &format!("storage-{name}-1"),
            &format!("storage-{name}-2")
        ])
    );
    assert_eq!(three.api_key, single.api_key, "scaling regenerated keys");

    // A config change rewrites the ConfigMap and rolls the pods (new restart hash), same keys.
    merge(
        &api,
        &name,
        json!({"spec": {"config": {"log_level": "DEBUG"}}}),
    )
    .await;
    let configured = cluster
        .converge_until(&ns, &name, |s| s.generation() == 3)
        .await;
    assert_ne!(configured.config_yaml, three.config_yaml);
    assert!(
        configured.config_yaml.contains("DEBUG"),
        "{}",
        configured.config_yaml
    );
    assert!(!three.config_yaml.contains("DEBUG"));
    assert_ne!(configured.restart_hash, three.restart_hash);
    assert_eq!(configured.api_key, single.api_key);
    assert_eq!(configured.ca, single.ca);
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_waits_for_the_acknowledgment_which_is_used_once() {
    let mut cluster = Cluster::start(Faults::default()).await;
    cluster.spawn_operator();
    let sq = example("full.yaml");
    let (ns, name) = ns_name(&sq);
    cluster.insert_instance(&sq);
    let three = cluster.converge(&ns, &name).await;
    assert_eq!(three.statefulset_replicas(), 3);
    let client = cluster.client().await;
    let api: Api<SecureQdrant> = Api::namespaced(client, &ns);
    let sts_replicas = |server: &FakeApiServer| {
        server
            .get("apps/v1", "StatefulSet", &ns, &name)
            .expect("StatefulSet")["spec"]["replicas"]
            .as_i64()
    };
    let annotate = |value: Option<&str>| json!({"metadata": {"annotations": {PEERS_REMOVED_ANNOTATION: value}}});

    // Lowering spec.replicas alone is refused; the message names the acknowledgment.
    merge(&api, &name, json!({"spec": {"replicas": 2}})).await;
    let message = cluster.refused(&ns, &name, "ScaleDownRefused").await;
    let command = format!("kubectl annotate sq {name} -n {ns} {PEERS_REMOVED_ANNOTATION}=2");
    assert!(message.contains(&command), "{message}");
    assert_eq!(sts_replicas(&cluster.server), Some(3));

    // An acknowledgment of another count changes nothing either.
    merge(&api, &name, annotate(Some("1"))).await;
    let message = cluster.refused(&ns, &name, "PeersRemovedMismatch").await;
    assert!(message.contains("is 1 but spec.replicas is 2"), "{message}");
    assert_eq!(sts_replicas(&cluster.server), Some(3));

    // The right one: scaled to 2, still a cluster (PDB, peers' egress), the acknowledgment is
    // removed, and the volumes of pod 2 stay.
    merge(&api, &name, annotate(Some("2"))).await;
    let two = cluster
        .converge_until(&ns, &name, |s| {
            s.statefulset_replicas() == 2
                && !s.sq.annotations().contains_key(PEERS_REMOVED_ANNOTATION)
        })
        .await;
    assert!(two.has("PodDisruptionBudget", &name));
    assert!(two.has("NetworkPolicy", &format!("{name}-egress")));
    for claim in ["storage", "snapshots"] {
        assert!(
            two.pvcs.contains(&format!("{claim}-{name}-2")),
            "{claim} of pod 2 kept: {:?}",
            two.pvcs
        );
    }
    assert!(event_reasons(&cluster.server, &ns, &name).contains("ScaleDownApplied"));
    assert_eq!(two.api_key, three.api_key);

    // Later: up to 3, then down to 2 again without a new acknowledgment: refused.
    merge(&api, &name, json!({"spec": {"replicas": 3}})).await;
    cluster
        .converge_until(&ns, &name, |s| s.statefulset_replicas() == 3)
        .await;
    merge(&api, &name, json!({"spec": {"replicas": 2}})).await;
    cluster.refused(&ns, &name, "ScaleDownRefused").await;
    assert_eq!(sts_replicas(&cluster.server), Some(3));
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_children_come_back_and_a_deleted_key_secret_is_new_and_announced() {
    let mut cluster = Cluster::start(Faults::default()).await;
    cluster.spawn_operator();
    let sq = example("full.yaml");
    let (ns, name) = ns_name(&sq);
    let key_monitor = SecretMonitor::start(&cluster.server, &ns, &format!("{name}-api-key"));
    cluster.insert_instance(&sq);
    let before = cluster.converge(&ns, &name).await;

    // Delete children that are not credentials: they come back (new objects), nothing else
    // changes: same keys, same CA, same certificate, so no restart either.
    let doomed = [
        ("v1", "ConfigMap", format!("{name}-config")),
        ("v1", "Service", format!("{name}-headless")),
        (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            format!("{name}-default-deny"),
        ),
        ("policy/v1", "PodDisruptionBudget", name.clone()),
        ("apps/v1", "StatefulSet", name.clone()),
    ];
    let old_uids: Vec<String> = doomed
        .iter()
        .map(|(api, kind, n)| uid(&cluster.server, api, kind, &ns, n))
        .collect();
    for (api, kind, n) in &doomed {
        cluster
            .server
            .delete(api, kind, &ns, n)
            .unwrap_or_else(|e| panic!("delete {kind} {n}: {e:?}"));
    }
    let after = cluster
        .converge_until(&ns, &name, |_| {
            doomed.iter().zip(&old_uids).all(|((api, kind, n), old)| {
                cluster
                    .server
                    .get(api, kind, &ns, n)
                    .is_some_and(|o| o["metadata"]["uid"].as_str() != Some(old))
            })
        })
        .await;
    assert_eq!(after.api_key, before.api_key, "API keys changed");
    assert_eq!(after.ca, before.ca, "CA changed");
    assert_eq!(after.tls, before.tls, "certificate changed");
    assert_eq!(
        after.restart_hash, before.restart_hash,
        "pods would restart"
    );
    assert!(!event_reasons(&cluster.server, &ns, &name).contains("CredentialsChanged"));
    key_monitor.assert_never_regenerated();

    // Delete the API-key Secret: new keys, pods roll, and an Event says credentials changed.
    cluster
        .server
        .delete("v1", "Secret", &ns, &format!("{name}-api-key"))
        .expect("delete the API-key Secret");
    let rekeyed = cluster
        .converge_until(&ns, &name, |s| s.api_key != before.api_key)
        .await;
    for (key, old) in &before.api_key {
        assert_ne!(rekeyed.api_key.get(key), Some(old), "{key} reused");
    }
    assert_eq!(
        rekeyed.api_key.keys().collect::<Vec<_>>(),
        before.api_key.keys().collect::<Vec<_>>()
    );
    assert_ne!(rekeyed.restart_hash, before.restart_hash);
    assert_eq!(rekeyed.ca, before.ca);
    // The monitor the fault test relies on saw it: created, then changed (deleted and created
    // anew; on a loaded machine the monitor may wake only after the re-creation, so the absent
    // state in between is not always seen).
    let states = key_monitor.states_since_created();
    assert!(
        (2..=3).contains(&states),
        "the monitor saw {states} states of the API-key Secret"
    );
    let server = &cluster.server;
    eventually(Duration::from_secs(5), || {
        let reasons = event_reasons(server, &ns, &name);
        reasons
            .contains("CredentialsChanged")
            .then_some(())
            .ok_or_else(|| format!("no CredentialsChanged Event yet: {reasons:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reverted_and_stray_children_are_pruned() {
    let mut cluster = Cluster::start(Faults::default()).await;
    cluster.spawn_operator();
    let sq = example("full.yaml");
    let (ns, name) = ns_name(&sq);
    cluster.insert_instance(&sq);
    let before = cluster.converge(&ns, &name).await;
    let owner_uid = before.sq.metadata.uid.clone().expect("uid");

    // While the operator is down, someone edits the config and adds a policy under its labels.
    cluster.kill_operator();
    let client = cluster.client().await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, &ns);
    config_maps
        .patch(
            &format!("{name}-config"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": "service: {enable_cors: true}\n"}})),
        )
        .await
        .expect("ConfigMap edited");
    let stray = format!("{name}-stray");
    cluster
        .server
        .insert(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": stray,
                "namespace": ns,
                "labels": {
                    "app.kubernetes.io/name": "qdrant",
                    "app.kubernetes.io/instance": name,
                    "app.kubernetes.io/managed-by": MANAGER,
                    "app.kubernetes.io/component": "database",
                },
                "ownerReferences": [{
                    "apiVersion": SQ_API, "kind": SQ_KIND, "name": name, "uid": owner_uid,
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
        }))
        .expect("stray policy inserted");
    let err = check_instance(&cluster.server, &ns, &name).expect_err("drift goes unnoticed");
    assert!(err.contains("ConfigMap"), "{err}");

    // Back up: the config is restored and the allow-all egress policy removed.
    cluster.spawn_operator();
    let after = cluster.converge(&ns, &name).await;
    assert_eq!(after.config_yaml, before.config_yaml);
    assert!(!after.has("NetworkPolicy", &stray));
    assert!(
        cluster
            .server
            .get("networking.k8s.io/v1", "NetworkPolicy", &ns, &stray)
            .is_none()
    );
    assert_eq!(after.api_key, before.api_key);
    assert_eq!(after.restart_hash, before.restart_hash);
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_resource_collects_children_and_pvcs_follow_retain_on_delete() {
    let mut cluster = Cluster::start(Faults::default()).await;
    cluster.spawn_operator();
    let kept = with_name(example("minimal.yaml"), "search", "kept");
    let mut dropped = with_name(example("full.yaml"), "search", "dropped");
    dropped["spec"]["storage"]["retainOnDelete"] = json!(false);
    cluster.insert_instance(&kept);
    cluster.insert_instance(&dropped);
    let kept_snap = cluster.converge("search", "kept").await;
    let dropped_snap = cluster.converge("search", "dropped").await;
    assert_eq!(kept_snap.pvcs, names(&["storage-kept-0"]));
    // full.yaml has a snapshots volume: two claim templates, three replicas.
    assert_eq!(dropped_snap.pvcs.len(), 6, "{:?}", dropped_snap.pvcs);

    for n in ["kept", "dropped"] {
        cluster
            .server
            .delete(SQ_API, SQ_KIND, "search", n)
            .expect("delete the SecureQdrant");
    }
    let server = &cluster.server;
    let gone = |n: &str| -> Result<(), String> {
        let left = owned_objects(server, "search", n);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{n}: still there: {left:?}"))
        }
    };
    eventually(Duration::from_secs(5), || {
        gone("kept")?;
        gone("dropped")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The operator must not bring anything back for a resource that is gone: give its watches
    // time to deliver the deletions and whatever reconciles they trigger.
    let quiet_since = cluster.server.resource_version();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gone("kept").unwrap();
    gone("dropped").unwrap();
    assert_eq!(
        pvc_names(server, "search", "kept"),
        names(&["storage-kept-0"]),
        "retainOnDelete: true keeps the data volume"
    );
    assert!(
        pvc_names(server, "search", "dropped").is_empty(),
        "retainOnDelete: false deletes the volumes: {:?}",
        pvc_names(server, "search", "dropped")
    );
    // Nothing but (perhaps) Events was written after the deletion settled.
    let written = writes_after(server, "search", quiet_since);
    assert!(written.is_empty(), "written after deletion: {written:?}");
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_under_injected_errors_and_dropped_watches_without_leaking_or_regenerating() {
    let mut cluster = Cluster::start(Faults::default()).await;
    let sqs = [
        with_name(example("minimal.yaml"), "alpha", "vectors"),
        with_name(example("full.yaml"), "beta", "vectors"),
        with_name(example("minimal.yaml"), "alpha", "other"),
    ];
    // Record every value the generated Secrets ever take, from before the operator starts.
    let monitors: Vec<SecretMonitor> = sqs
        .iter()
        .flat_map(|sq| {
            let (ns, name) = ns_name(sq);
            ["api-key", "ca", "tls"].map(|suffix| {
                SecretMonitor::start(&cluster.server, &ns, &format!("{name}-{suffix}"))
            })
        })
        .collect();
    // The operator starts on a healthy API (its start-up check does not retry), then everything
    // breaks: 20% of requests fail with 409/429/500 and watch streams drop.
    cluster.spawn_operator();
    cluster.wait_until_watching().await;
    cluster.server.set_faults(Faults {
        seed: 20,
        error_rate: 0.2,
        error_codes: vec![409, 429, 500],
        watch_drop_rate: 0.1,
        ..Faults::default()
    });
    for sq in &sqs {
        cluster.insert_instance(sq);
    }
    let started = Instant::now();
    let mut snaps = Vec::new();
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        snaps.push(cluster.converge(&ns, &name).await);
    }
    let counters = cluster.server.counters();
    eprintln!(
        "converged under faults in {:?}: {} requests, {} injected errors, {} dropped watches",
        started.elapsed(),
        counters.total(),
        counters.total_errors(),
        counters.dropped_watches
    );
    assert!(
        counters.total_errors() >= 10,
        "too few injected errors to mean anything: {counters:?}"
    );
    assert!(counters.dropped_watches >= 1, "no watch was dropped");

    // Still under faults: pods become ready, status follows.
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        mark_statefulset_ready(&cluster.server, &ns, &name);
    }
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        cluster
            .converge_until(&ns, &name, |s| s.phase() == Some(Phase::Ready))
            .await;
    }

    for m in &monitors {
        m.assert_never_regenerated();
    }
    cluster.assert_operator_healthy();
    let log = cluster.operator_log();
    assert!(
        log.contains("reconcile failed"),
        "the faults never reached a reconcile (log has no failure)"
    );
    for snap in &snaps {
        // API key, read-only key, fingerprint salt, CA key, serving key.
        assert_eq!(snap.secret_values().len(), 5);
        assert_no_secret_in(&log, snap);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_and_restarted_converges_to_the_same_state() {
    // Slow requests keep reconciles in flight long enough to kill the operator in one.
    let mut cluster = Cluster::start(Faults {
        latency_ms: 25,
        ..Faults::default()
    })
    .await;
    let sqs: Vec<Value> = (0..4)
        .map(|i| {
            let file = if i % 2 == 0 {
                "minimal.yaml"
            } else {
                "full.yaml"
            };
            with_name(example(file), "search", &format!("db{i}"))
        })
        .collect();
    cluster.spawn_operator();
    cluster.wait_until_watching().await;
    for sq in &sqs {
        cluster.insert_instance(sq);
    }
    // Kill it (SIGKILL) as soon as one generated Secret exists: mid-reconcile.
    let server = &cluster.server;
    eventually(Duration::from_secs(10), || {
        let any = server
            .list("v1", "Secret", "search")
            .iter()
            .any(|s| has_label(s, LABEL_MANAGED_BY, MANAGER));
        any.then_some(()).ok_or("no Secret yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let first_log = cluster.kill_operator();
    let at_kill: BTreeMap<String, Value> = cluster
        .server
        .list("v1", "Secret", "search")
        .into_iter()
        .filter(|s| has_label(s, LABEL_MANAGED_BY, MANAGER))
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_owned(),
                s["data"].clone(),
            )
        })
        .collect();
    let unfinished = sqs
        .iter()
        .filter(|sq| {
            let (ns, name) = ns_name(sq);
            check_instance(&cluster.server, &ns, &name).is_err()
        })
        .count();
    assert!(
        unfinished > 0,
        "every instance had converged before the kill: not a mid-reconcile kill"
    );
    assert!(!first_log.contains("panicked"), "{first_log}");

    cluster.server.clear_faults();
    cluster.spawn_operator();
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        let snap = cluster.converge(&ns, &name).await;
        assert_eq!(snap.phase(), Some(Phase::Pending));
    }
    // Every Secret that existed at the kill still holds what it held.
    for (name, data) in &at_kill {
        let now = cluster
            .server
            .get("v1", "Secret", "search", name)
            .unwrap_or_else(|| panic!("Secret {name} disappeared"));
        assert!(
            now["data"] == *data,
            "Secret {name} changed across the restart"
        );
    }
    cluster.assert_operator_healthy();
}

// ---------------------------------------------------------------------------------------------
// Harness: the server, the operator process, convergence checks
// ---------------------------------------------------------------------------------------------

/// One fake API server (CRDs loaded) and the operator process running against it.
struct Cluster {
    server: Arc<FakeApiServer>,
    dir: TempDir,
    operator: Option<Operator>,
    runs: usize,
}

impl Cluster {
    /// Inserts a SecureQdrant, and first the image pull Secrets it names, each labelled to
    /// allow the instance (as their owner would: the operator refuses them otherwise).
    fn insert_instance(&self, sq: &Value) {
        let (ns, name) = ns_name(sq);
        for pull in sq["spec"]["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let secret = pull["name"].as_str().expect("a pull Secret name");
            let labels = json!({"secureqdrant.dev/allowed-instance": name});
            match self.server.get("v1", "Secret", &ns, secret) {
                // Shared by several instances: their names joined by `_`.
                Some(existing) => {
                    let allowed =
                        existing["metadata"]["labels"]["secureqdrant.dev/allowed-instance"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                    self.server
                        .merge_patch(
                            "v1",
                            "Secret",
                            &ns,
                            secret,
                            &json!({"metadata": {"labels": {
                                "secureqdrant.dev/allowed-instance": format!("{allowed}_{name}")}}}),
                        )
                        .expect("pull Secret labelled");
                }
                None => {
                    self.server
                        .insert(json!({"apiVersion": "v1", "kind": "Secret",
                            "type": "kubernetes.io/dockerconfigjson",
                            "metadata": {"name": secret, "namespace": ns, "labels": labels},
                            "data": {".dockerconfigjson": "e30="}}))
                        .expect("pull Secret inserted");
                }
            }
        }
        self.server.insert(sq).expect("inserted");
    }

    async fn start(faults: Faults) -> Cluster {
        let (server, dir) = server_with_kubeconfig(faults).await;
        Cluster {
            server: Arc::new(server),
            dir,
            operator: None,
            runs: 0,
        }
    }

    fn spawn_operator(&mut self) {
        assert!(self.operator.is_none(), "an operator is already running");
        self.runs += 1;
        let log = self.dir.path().join(format!("operator-{}.log", self.runs));
        let file = File::create(&log).expect("log file");
        let child = Command::new(OPERATOR)
            .args(["run", "--log-format", "json", "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            // The operator's own debug logs too: the secret-leak check covers them.
            .env("LOG_LEVEL", "secure_qdrant_operator=debug,info")
            // Its HTTP endpoints on a free loopback port: tests run operators side by side.
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env_remove("POD_NAME")
            .env_remove("CLUSTER_DOMAIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("operator binary starts");
        self.operator = Some(Operator { child, log });
    }

    /// SIGKILLs the operator; returns its log.
    fn kill_operator(&mut self) -> String {
        let mut op = self.operator.take().expect("an operator runs");
        op.kill();
        op.log()
    }

    fn operator_log(&self) -> String {
        self.operator
            .as_ref()
            .map(Operator::log)
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.operator_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until the operator watches SecureQdrants (its caches have listed by then or soon).
    async fn wait_until_watching(&self) {
        let server = &self.server;
        eventually(Duration::from_secs(10), || {
            let watches = server
                .counters()
                .get("watch", "secureqdrants.secureqdrant.dev");
            (watches > 0)
                .then_some(())
                .ok_or_else(|| "the operator does not watch SecureQdrants".to_owned())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
    }

    /// Still running, and never panicked.
    fn assert_operator_healthy(&mut self) {
        let op = self.operator.as_mut().expect("an operator runs");
        if let Ok(Some(exit)) = op.child.try_wait() {
            panic!("the operator exited ({exit}):\n{}", self.log_tail());
        }
        let log = self.operator_log();
        assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    }

    async fn client(&self) -> Client {
        let kc = Kubeconfig::from_yaml(&self.server.kubeconfig()).expect("kubeconfig parses");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
        Client::try_from(config).expect("client builds")
    }

    /// Waits until the current generation is reported as refused with `reason`
    /// (`Reconciled=False`); returns the condition's message.
    async fn refused(&self, ns: &str, name: &str, reason: &str) -> String {
        let server = self.server.clone();
        let result = eventually(CONVERGE, || {
            let sq = server
                .get(SQ_API, SQ_KIND, ns, name)
                .ok_or("no SecureQdrant")?;
            let generation = sq["metadata"]["generation"].clone();
            let reconciled = sq["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Reconciled")
                .ok_or("no Reconciled condition")?;
            if reconciled["status"] == "False"
                && reconciled["reason"] == reason
                && reconciled["observedGeneration"] == generation
                && sq["status"]["phase"] == "Degraded"
            {
                Ok(reconciled["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned())
            } else {
                Err(format!("not refused with {reason}: {reconciled}"))
            }
        })
        .await;
        result.unwrap_or_else(|e| panic!("{e}\noperator log (tail):\n{}", self.log_tail()))
    }

    async fn converge(&self, ns: &str, name: &str) -> Snapshot {
        self.converge_until(ns, name, |_| true).await
    }

    /// Waits until the instance is converged (see [`check_instance`]) and `done` holds.
    async fn converge_until(
        &self,
        ns: &str,
        name: &str,
        done: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        let timeout = if self.server.faults().error_rate > 0.0 {
            CONVERGE_UNDER_FAULTS
        } else {
            CONVERGE
        };
        let server = self.server.clone();
        let result = eventually(timeout, || {
            let snap = check_instance(&server, ns, name)?;
            if done(&snap) {
                Ok(snap)
            } else {
                Err(format!(
                    "converged, but not yet as the test expects (phase {:?}, generation {})",
                    snap.phase(),
                    snap.generation()
                ))
            }
        })
        .await;
        match result {
            Ok(snap) => snap,
            Err(e) => {
                let counters = self.server.counters();
                panic!(
                    "{ns}/{name} did not converge within {timeout:?}: {e}\ninjected errors: {}, \
                     dropped watches: {}\noperator log (tail):\n{}",
                    counters.total_errors(),
                    counters.dropped_watches,
                    self.log_tail()
                )
            }
        }
    }
}

/// The operator process; killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it returns Ok, or returns its last error after `timeout`.
async fn eventually<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What a converged instance looks like in the cluster.
#[derive(Debug)]
struct Snapshot {
    sq: SecureQdrant,
    /// Decoded data of `<n>-api-key`, `<n>-ca`, `<n>-tls`.
    api_key: BTreeMap<String, String>,
    ca: BTreeMap<String, String>,
    tls: BTreeMap<String, String>,
    restart_hash: String,
    config_yaml: String,
    /// spec.replicas of the StatefulSet.
    replicas: i32,
    /// (kind, name) of every object carrying the instance's labels.
    objects: BTreeSet<(String, String)>,
    pvcs: BTreeSet<String>,
}

impl Snapshot {
    fn phase(&self) -> Option<Phase> {
        self.sq
            .status
            .as_ref()
            .and_then(|s| s.phase.as_ref())
            .cloned()
    }

    fn generation(&self) -> i64 {
        self.sq.metadata.generation.unwrap_or_default()
    }

    fn has(&self, kind: &str, name: &str) -> bool {
        self.objects.contains(&(kind.to_owned(), name.to_owned()))
    }

    fn statefulset_replicas(&self) -> i32 {
        self.replicas
    }

    /// Every generated secret, for the leak check: the API keys and the private keys of the CA
    /// and of the serving certificate (certificates are public).
    fn secret_values(&self) -> Vec<&str> {
        self.api_key
            .values()
            .chain(self.ca.get("tls.key"))
            .chain(self.tls.get("tls.key"))
            .map(String::as_str)
            .collect()
    }
}

/// Checks that an instance is converged; returns what it looks like, or what is missing.
fn check_instance(server: &FakeApiServer, ns: &str, name: &str) -> Result<Snapshot, String> {
    let sq_value = server
        .get(SQ_API, SQ_KIND, ns, name)
        .ok_or("no SecureQdrant")?;
    let sq: SecureQdrant = serde_json::from_value(sq_value).map_err(|e| e.to_string())?;
    let generation = sq.metadata.generation;
    let status = sq.status.as_ref().ok_or("no status yet")?;
    if status.observed_generation != generation {
        return Err(format!(
            "status.observedGeneration {:?}, generation {generation:?}",
            status.observed_generation
        ));
    }
    let reconciled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciled")
        .ok_or("no Reconciled condition")?;
    if reconciled.status != "True" || reconciled.observed_generation != generation {
        return Err(format!("not reconciled: {reconciled:?}"));
    }

    let mut inst = validate::validate(&sq, &Settings::default()).expect("test specs are valid");
    // Not from the spec: the pods' start script learns it from `<n>-config`.
    inst.cluster_formed = status.cluster_formed;
    let secret = |n: &str| -> Result<Secret, String> {
        let v = server
            .get("v1", "Secret", ns, n)
            .ok_or_else(|| format!("no Secret {n}"))?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    };
    let api_key_secret = secret(&inst.api_key_secret_name())?;
    let api_keys = ApiKeys {
        api_key: read_key(&api_key_secret, material::API_KEY)
            .map_err(|e| format!("API-key Secret: {e}"))?,
        read_only: if inst.auth.read_only_api_key {
            Some(
                read_key(&api_key_secret, material::READ_ONLY_API_KEY)
                    .map_err(|e| format!("API-key Secret: {e}"))?,
            )
        } else {
            None
        },
        next: read_key(&api_key_secret, material::NEXT_API_KEY).ok(),
        phase: material::KeyPhase::from_annotation(
            api_key_secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(secure_qdrant_operator::key_rotation::PHASE_ANNOTATION))
                .map(String::as_str),
        ),
        salt: read_key(&api_key_secret, material::FINGERPRINT_SALT)
            .map_err(|e| format!("API-key Secret: {e}"))?,
    };
    let sts: StatefulSet = serde_json::from_value(
        server
            .get("apps/v1", "StatefulSet", ns, name)
            .ok_or("no StatefulSet")?,
    )
    .map_err(|e| e.to_string())?;
    let pod_annotations = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let tls_settings = inst.tls.as_ref().ok_or("tests use TLS")?;
    assert_eq!(
        tls_settings.source,
        TlsSource::OperatorCa,
        "tests use the operator's CA"
    );
    let ca_secret = secret(&inst.ca_secret_name())?;
    let tls_secret = secret(&format!("{name}-tls"))?;
    let mut tls_annotations = tls_secret.metadata.annotations.clone().unwrap_or_default();
    tls_annotations.remove(APPLIED_HASH);
    let material = Material {
        api_keys,
        tls: Some(PodTls {
            secret: Some((tls_secret.data.clone().unwrap_or_default(), tls_annotations)),
            fingerprint: pod_annotations
                .get(TLS_FINGERPRINT_ANNOTATION)
                .cloned()
                .ok_or("the pod template has no TLS fingerprint")?,
            metrics_client: match inst.metrics_client_secret() {
                Some(n) => Some(secret(&n)?.data.clone().unwrap_or_default()),
                None => None,
            },
        }),
    };

    // Every built child exists as built (the API-key, CA and TLS Secrets built from the live
    // values).
    let live_ca = children::secrets::ca(
        &inst,
        ca_secret.data.clone().unwrap_or_default(),
        ca_secret.metadata.annotations.clone().unwrap_or_default(),
    );
    let built = children::build(&inst, &material).to_values(Some(&live_ca));
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for want in &built {
        let kind = want["kind"].as_str().expect("kind");
        let child = want["metadata"]["name"].as_str().expect("name");
        expected.insert((kind.to_owned(), child.to_owned()));
        let have = server
            .get(
                want["apiVersion"].as_str().expect("apiVersion"),
                kind,
                ns,
                child,
            )
            .ok_or_else(|| format!("no {kind} {child}"))?;
        compare(want, &have)?;
    }

    // Nothing else carries the instance's labels.
    let objects = owned_objects(server, ns, name);
    if objects != expected {
        return Err(format!(
            "children differ from the builders': missing {:?}, unexpected {:?}",
            expected.difference(&objects).collect::<Vec<_>>(),
            objects.difference(&expected).collect::<Vec<_>>()
        ));
    }

    let keys = |s: &Secret| -> BTreeSet<String> {
        s.data.iter().flatten().map(|(k, _)| k.clone()).collect()
    };
    let mut want_keys = names(&["api-key", "fingerprint-salt"]);
    if inst.auth.read_only_api_key {
        want_keys.insert("read-only-api-key".to_owned());
    }
    assert_eq!(keys(&api_key_secret), want_keys, "API-key Secret keys");
    assert_eq!(
        keys(&ca_secret),
        names(&["tls.crt", "tls.key"]),
        "CA Secret keys"
    );
    assert_eq!(
        keys(&tls_secret),
        names(&["ca.crt", "tls.crt", "tls.key"]),
        "TLS Secret keys"
    );
    assert_eq!(tls_secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // The PVCs the StatefulSet asks for.
    let spec = sts.spec.as_ref().ok_or("StatefulSet without spec")?;
    let mut want_pvcs = BTreeSet::new();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let claim = claim.metadata.name.as_deref().unwrap_or_default();
        for i in 0..spec.replicas.unwrap_or(1) {
            want_pvcs.insert(format!("{claim}-{name}-{i}"));
        }
    }
    let pvcs = pvc_names(server, ns, name);
    if !want_pvcs.is_subset(&pvcs) {
        return Err(format!("PVCs {pvcs:?}, want {want_pvcs:?}"));
    }

    let decode = |s: &Secret| -> BTreeMap<String, String> {
        s.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    };
    let config_map = server
        .get("v1", "ConfigMap", ns, &inst.config_map_name())
        .ok_or("no ConfigMap")?;
    Ok(Snapshot {
        api_key: decode(&api_key_secret),
        ca: decode(&ca_secret),
        tls: decode(&tls_secret),
        restart_hash: pod_annotations
            .get(RESTART_HASH)
            .cloned()
            .ok_or("no restart hash")?,
        config_yaml: config_map["data"].to_string(),
        replicas: spec.replicas.unwrap_or(1),
        objects,
        pvcs,
        sq,
    })
}

/// A live object matches a built one: every top-level field the builder sets (spec, data, type,
/// ...) is equal, labels and owner references are equal, and the built annotations are there.
fn compare(want: &Value, have: &Value) -> Result<(), String> {
    let kind = want["kind"].as_str().unwrap_or_default();
    let name = want["metadata"]["name"].as_str().unwrap_or_default();
    let secret = kind == "Secret";
    for (field, value) in want.as_object().expect("object") {
        if field == "metadata" {
            continue;
        }
        if have.get(field) != Some(value) {
            return Err(if secret {
                format!("{kind} {name}: .{field} differs")
            } else {
                format!(
                    "{kind} {name}: .{field} differs:\n built: {value}\n  live: {}",
                    have.get(field).unwrap_or(&Value::Null)
                )
            });
        }
    }
    let (wm, hm) = (&want["metadata"], &have["metadata"]);
    for field in ["labels", "ownerReferences", "namespace"] {
        if wm[field] != hm[field] {
            return Err(format!(
                "{kind} {name}: metadata.{field}: built {}, live {}",
                wm[field], hm[field]
            ));
        }
    }
    if let Some(annotations) = wm["annotations"].as_object() {
        for (k, v) in annotations {
            if hm["annotations"].get(k) != Some(v) {
                return Err(format!(
                    "{kind} {name}: annotation {k} missing or different"
                ));
            }
        }
    }
    Ok(())
}

/// (kind, name) of every object of the child kinds labelled for this instance and operator.
fn owned_objects(server: &FakeApiServer, ns: &str, instance: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (api, kind) in children::CHILD_KINDS {
        for o in server.list(api, kind, ns) {
            if has_label(&o, LABEL_INSTANCE, instance) && has_label(&o, LABEL_MANAGED_BY, MANAGER) {
                out.insert((
                    kind.to_owned(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
        }
    }
    out
}

fn pvc_names(server: &FakeApiServer, ns: &str, instance: &str) -> BTreeSet<String> {
    server
        .list("v1", "PersistentVolumeClaim", ns)
        .iter()
        .filter(|p| has_label(p, LABEL_INSTANCE, instance))
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn has_label(obj: &Value, key: &str, value: &str) -> bool {
    obj["metadata"]["labels"][key].as_str() == Some(value)
}

/// Objects of the child kinds (and SecureQdrants) in `ns` written after resourceVersion `rv`.
fn writes_after(server: &FakeApiServer, ns: &str, rv: u64) -> Vec<String> {
    children::CHILD_KINDS
        .iter()
        .copied()
        .chain([(SQ_API, SQ_KIND), ("v1", "PersistentVolumeClaim")])
        .flat_map(|(api, kind)| server.list(api, kind, ns))
        .filter(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v > rv)
        })
        .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
        .collect()
}

fn uid(server: &FakeApiServer, api: &str, kind: &str, ns: &str, name: &str) -> String {
    server
        .get(api, kind, ns, name)
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Reasons of the Events about a SecureQdrant (events.k8s.io/v1 and core/v1).
fn event_reasons(server: &FakeApiServer, ns: &str, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in server.list("events.k8s.io/v1", "Event", ns) {
        if e["regarding"]["kind"] == SQ_KIND && e["regarding"]["name"] == name {
            out.insert(e["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    for e in server.list("v1", "Event", ns) {
        if e["involvedObject"]["kind"] == SQ_KIND && e["involvedObject"]["name"] == name {
            out.insert(e["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// Makes the StatefulSet look rolled out with every pod ready (what the StatefulSet controller
/// and the kubelet would report).
fn mark_statefulset_ready(server: &FakeApiServer, ns: &str, name: &str) {
    let sts = server
        .get("apps/v1", "StatefulSet", ns, name)
        .expect("StatefulSet exists");
    let replicas = sts["spec"]["replicas"].as_i64().unwrap_or(1);
    let generation = sts["metadata"]["generation"].as_i64().unwrap_or(1);
    server
        .set_status(
            "apps/v1",
            "StatefulSet",
            ns,
            name,
            json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "currentReplicas": replicas,
                "updatedReplicas": replicas,
                "currentRevision": format!("{name}-1"),
                "updateRevision": format!("{name}-1"),
            }),
        )
        .expect("status set");
}

async fn merge(api: &Api<SecureQdrant>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("SecureQdrant patched");
}

/// An example from deploy/examples as JSON.
fn example(file: &str) -> Value {
    let path = format!("{}/deploy/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example readable");
    serde_yaml_ng::from_str(&text).expect("example parses")
}

fn with_name(mut sq: Value, ns: &str, name: &str) -> Value {
    sq["metadata"]["namespace"] = json!(ns);
    sq["metadata"]["name"] = json!(name);
    // full.yaml's topology spread selects its own instance by name.
    // (`pointer_mut`, not indexing: indexing a Value mutably inserts nulls for missing keys.)
    if let Some(constraints) = sq
        .pointer_mut("/spec/pod/topologySpreadConstraints")
        .and_then(Value::as_array_mut)
    {
        for c in constraints {
            c["labelSelector"]["matchLabels"][LABEL_INSTANCE] = json!(name);
        }
    }
    sq
}

fn ns_name(sq: &Value) -> (String, String) {
    (
        sq["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
            .to_owned(),
        sq["metadata"]["name"].as_str().expect("name").to_owned(),
    )
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Fails if the log holds any generated secret.
fn assert_no_secret_in(log: &str, snap: &Snapshot) {
    if let Some(what) = leaked(log, &snap.secret_values()) {
        panic!("the operator logged secret material: {what}");
    }
}

/// What of `secrets` (API keys, PEM private keys) appears in `log`: a PEM private-key marker,
/// a value raw or base64-encoded, or one line of a private key's PEM body. Describes the leak
/// without repeating it.
fn leaked(log: &str, secrets: &[&str]) -> Option<String> {
    if log.contains("PRIVATE KEY") {
        return Some("a PEM private key marker".to_owned());
    }
    for value in secrets {
        let mut needles = vec![STANDARD.encode(value), (*value).to_owned()];
        if value.contains("-----BEGIN") {
            // Each base64 line of the PEM body: the key material itself.
            needles.extend(
                value
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 32)
                    .map(str::to_owned),
            );
        }
        if let Some(n) = needles.iter().find(|n| log.contains(n.as_str())) {
            return Some(format!("{} characters of a secret value", n.len()));
        }
    }
    None
}

#[test]
fn the_leak_check_finds_keys_raw_encoded_or_partial() {
    let key = "Jq0t2pXbY5vN8cR1wE4uI7oP3aS6dF9gH2jK5lZ8xC0";
    let pem = "-----BEGIN PRIVATE KEY-----\n\
               MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk5y2b3nTqX1Jp0Fv\n\
               -----END PRIVATE KEY-----\n";
    let pem_body = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk5y2b3nTqX1Jp0Fv";
    let secrets = [key, pem];
    assert_eq!(leaked("reconciled search/vectors", &secrets), None);
    assert!(leaked(&format!("key={key}"), &secrets).is_some());
    assert!(leaked(&format!("data: {}", STANDARD.encode(key)), &secrets).is_some());
    assert!(leaked(&format!("tls.key body {pem_body}"), &secrets).is_some());
    assert!(leaked("-----BEGIN EC PRIVATE KEY-----", &[]).is_some());
}

/// Records every value a Secret takes, as the server changes (checked after every write).
struct SecretMonitor {
    name: String,
    seen: Arc<Mutex<Vec<Option<Value>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SecretMonitor {
    fn start(server: &Arc<FakeApiServer>, ns: &str, name: &str) -> SecretMonitor {
        let seen: Arc<Mutex<Vec<Option<Value>>>> = Arc::default();
        let task = {
            let (server, seen, ns, name) =
                (server.clone(), seen.clone(), ns.to_owned(), name.to_owned());
            tokio::spawn(async move {
                let _ = server
                    .wait_for("v1", "Secret", &ns, &name, Duration::from_secs(300), |s| {
                        let data = s.map(|s| s["data"].clone());
                        let mut seen = seen.lock().unwrap();
                        if seen.last() != Some(&data) {
                            seen.push(data);
                        }
                        false
                    })
                    .await;
            })
        };
        SecretMonitor {
            name: format!("{ns}/{name}"),
            seen,
            task,
        }
    }

    /// Distinct states (a value, or absent) since the Secret was first created.
    fn states_since_created(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().skip_while(|v| v.is_none()).count()
    }

    /// Once the Secret existed, it kept its first value and was never deleted.
    fn assert_never_regenerated(&self) {
        let states = self.states_since_created();
        assert!(states > 0, "Secret {} was never created", self.name);
        assert_eq!(
            states, 1,
            "Secret {} changed or vanished after it was created ({states} states)",
            self.name
        );
    }
}

impl Drop for SecretMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
