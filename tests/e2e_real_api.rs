//! End to end: the real operator binary (`secure-qdrant-operator run`) against the real
//! control plane of `tests/support/control_plane.rs` (etcd, kube-apiserver, the StatefulSet
//! controller and garbage collector of kube-controller-manager, kube-scheduler, kwok's fake
//! nodes, a PV provisioner). Each test takes its own namespace(s) (`real_server::Env`) and runs
//! the operator binary watching only those, authenticated as the chart's ServiceAccount and
//! talking through the env's fault proxy (`env.set_faults`); the operator's requests are
//! counted from the API server's audit log. The test drives it the way a user and a cluster
//! would; the StatefulSet controller and kwok report pods for real.
//!
//! What a converged instance is, checked by [`check_instance`]: its status describes the current
//! generation with `Reconciled=True`; every child the builders (`children::build`) produce for
//! the validated spec exists with EXACTLY the spec/data/... of the built object as the real API
//! server defaults it (a dry-run create of the built object: [`server_defaulted`]; nothing more
//! or less at any depth), the same labels and owner reference;
//! nothing else carries the instance's labels; the API-key, CA and TLS Secrets hold the right
//! keys; the PVCs of the StatefulSet's claim templates exist. Secret values are generated, so
//! the builders get the live keys and certificate: the restart hash is then checked against
//! them too.
//!
//! Where a test needs the pods held back (nothing runs yet), the instance's pods ask for a node
//! label no kwok node has ([`hold`]): the real scheduler leaves them Pending, so the real
//! StatefulSet controller reports no ready replica; taking the label out lets them run.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/real_server.rs"]
mod real_server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use control_plane::{Operator, Scope, eventually};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use real_server::{Counters, Env, Faults, Mark};
use serde_json::{Value, json};
use tokio::time::Instant;

use secure_qdrant_operator::api_keys::{self, ApiKeys, read_key};
use secure_qdrant_operator::children::meta::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER, RESTART_HASH,
};
use secure_qdrant_operator::children::{self, Material, PodTls};
use secure_qdrant_operator::crd::{Phase, SecureQdrant};
use secure_qdrant_operator::reconcile::plan::PEERS_REMOVED_ANNOTATION;
use secure_qdrant_operator::reconcile::stamp::APPLIED_HASH;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::TLS_FINGERPRINT_ANNOTATION;
use secure_qdrant_operator::validate::{self, TlsSource};

const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const SQ_KIND: &str = "SecureQdrant";

/// How long a test waits for the operator to converge: the real StatefulSet controller creates
/// the PVCs, the provisioner binds them, the scheduler and kwok run the pods, on a loaded
/// machine.
const CONVERGE: Duration = Duration::from_secs(180);

/// The same under 20% injected errors: the operator's `error_policy` backs off 5 s doubling
/// with every consecutive failure of an object, so a burst of failures parks an instance for
/// 40-80 s (see BENCHMARKS.md).
const CONVERGE_UNDER_FAULTS: Duration = Duration::from_secs(300);

/// The node label [`hold`] asks for: no kwok node has it.
const HOLD_LABEL: &str = "secureqdrant.dev/e2e-hold";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_example_gets_every_child_then_ready_when_the_statefulset_is() {
    example_converges("minimal.yaml", "minimal", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_example_gets_every_child_then_ready_when_the_statefulset_is() {
    example_converges("full.yaml", "full", 3).await;
}

async fn example_converges(file: &str, prefix: &str, replicas: i32) {
    let env = Env::namespaced(prefix).await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let ns = env.ns.clone();
    let name = "vectors".to_owned();
    // The pods are held back: nothing runs yet.
    let sq = hold(with_name(example(file), &ns, &name));
    cluster.insert_instance(&sq).await;

    // The real StatefulSet controller creates the pods at once and reports them (updated, not
    // ready): the phase is Progressing, as for any new instance whose pods are still starting.
    // (The in-memory server left the StatefulSet without a status, which gave Pending; against
    // the real one the operator first said Degraded here, which it now keeps for an instance
    // that was ready and lost pods.)
    let snap = cluster
        .converge_until(&ns, &name, |s| held_settled(s, replicas))
        .await;
    assert_eq!(
        snap.phase(),
        Some(Phase::Progressing),
        "{:?}",
        snap.sq.status
    );
    let status = snap.sq.status.as_ref().expect("status");
    assert_eq!(status.ready_replicas, Some(0));
    assert_eq!(status.replicas, Some(replicas));
    let not_ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(not_ready.status, "False", "{not_ready:?}");
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
    let reasons = event_reasons(&env, &ns, &name).await;
    assert!(reasons.contains("CredentialsGenerated"), "{reasons:?}");
    assert!(reasons.contains("CertificateIssued"), "{reasons:?}");
    first_reconcile_events(&env, &ns, &name).await;

    // The pods may run: the real StatefulSet controller reports every pod updated and ready
    // (kwok plays the kubelet).
    release(&env, &ns, &name).await;
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
    // The convergence check is exact: the same live objects with a data key more in the
    // ConfigMap, or `privileged: true` in a container's securityContext, fail it.
    let extra_key = check_instance_with(&env, &ns, &name, &|kind, live| {
        if kind == "ConfigMap" {
            live["data"]["extra.yaml"] = json!("x");
        }
    })
    .await
    .expect_err("an extra ConfigMap data key must fail the check");
    assert!(
        extra_key.starts_with("ConfigMap ") && extra_key.contains("extra.yaml"),
        "{extra_key}"
    );
    let privileged = check_instance_with(&env, &ns, &name, &|kind, live| {
        if kind == "StatefulSet" {
            live["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                json!(true);
        }
    })
    .await
    .expect_err("privileged: true must fail the check");
    assert!(
        privileged.starts_with("StatefulSet ") && privileged.contains("\"privileged\":true"),
        "{privileged}"
    );
    check_instance(&env, &ns, &name)
        .await
        .expect("untampered, it still passes");
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_are_followed_by_the_children() {
    let env = Env::namespaced("spec-changes").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let sq = with_name(example("minimal.yaml"), &ns, &name);
    cluster.insert_instance(&sq).await;
    let single = cluster.converge(&ns, &name).await;
    assert!(!single.has("PodDisruptionBudget", &name));
    assert!(!single.has("NetworkPolicy", &format!("{name}-egress")));
    assert_eq!(single.pvcs, names(&[&format!("storage-{name}-0")]));

    // 1 → 3 replicas: cluster mode brings the PDB, the peers' egress policy and two more PVCs.
    let api: Api<SecureQdrant> = Api::namespaced(env.admin.clone(), &ns);
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
    let env = Env::namespaced("scale-down").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let sq = with_name(example("full.yaml"), &ns, &name);
    cluster.insert_instance(&sq).await;
    let three = cluster.converge(&ns, &name).await;
    assert_eq!(three.statefulset_replicas(), 3);
    let api: Api<SecureQdrant> = Api::namespaced(env.admin.clone(), &ns);
    let sts_replicas = || async {
        env.get("apps/v1", "StatefulSet", &ns, &name)
            .await
            .expect("StatefulSet")["spec"]["replicas"]
            .as_i64()
    };
    let annotate = |value: Option<&str>| json!({"metadata": {"annotations": {PEERS_REMOVED_ANNOTATION: value}}});

    // Lowering spec.replicas alone is refused; the message names the acknowledgment.
    merge(&api, &name, json!({"spec": {"replicas": 2}})).await;
    let message = cluster.refused(&ns, &name, "ScaleDownRefused").await;
    let command = format!("kubectl annotate sq {name} -n {ns} {PEERS_REMOVED_ANNOTATION}=2");
    assert!(message.contains(&command), "{message}");
    assert_eq!(sts_replicas().await, Some(3));

    // An acknowledgment of another count changes nothing either.
    merge(&api, &name, annotate(Some("1"))).await;
    let message = cluster.refused(&ns, &name, "PeersRemovedMismatch").await;
    assert!(message.contains("is 1 but spec.replicas is 2"), "{message}");
    assert_eq!(sts_replicas().await, Some(3));

    // The right one: scaled to 2, still a cluster (PDB, peers' egress), the acknowledgment is
    // removed, and the volumes of pod 2 stay (the real StatefulSet controller's
    // `whenScaled: Retain`).
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
    assert!(
        event_reasons(&env, &ns, &name)
            .await
            .contains("ScaleDownApplied")
    );
    assert_eq!(two.api_key, three.api_key);

    // Later: up to 3, then down to 2 again without a new acknowledgment: refused.
    merge(&api, &name, json!({"spec": {"replicas": 3}})).await;
    cluster
        .converge_until(&ns, &name, |s| s.statefulset_replicas() == 3)
        .await;
    merge(&api, &name, json!({"spec": {"replicas": 2}})).await;
    cluster.refused(&ns, &name, "ScaleDownRefused").await;
    assert_eq!(sts_replicas().await, Some(3));
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_children_come_back_and_a_deleted_key_secret_is_new_and_announced() {
    let env = Env::namespaced("deleted-children").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let sq = with_name(example("full.yaml"), &ns, &name);
    let key_monitor = SecretMonitor::start(&env, &ns, &format!("{name}-api-key")).await;
    cluster.insert_instance(&sq).await;
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
    let mut old_uids = Vec::new();
    for (api, kind, n) in &doomed {
        old_uids.push(uid(&env, api, kind, &ns, n).await);
    }
    for (api, kind, n) in &doomed {
        env.delete(api, kind, &ns, n)
            .await
            .unwrap_or_else(|e| panic!("delete {kind} {n}: {e:?}"));
    }
    let after = {
        let (env, doomed, old_uids, ns) = (&env, &doomed, &old_uids, &ns);
        let all_new = move || async move {
            for ((api, kind, n), old) in doomed.iter().zip(old_uids) {
                // Gone, or still the old object: not back yet.
                let new = env.get(api, kind, ns, n).await;
                if new.is_none_or(|o| o["metadata"]["uid"].as_str() == Some(old.as_str())) {
                    return false;
                }
            }
            true
        };
        cluster.converge_while(ns, &name, all_new, |_| true).await
    };
    assert_eq!(after.api_key, before.api_key, "API keys changed");
    assert_eq!(after.ca, before.ca, "CA changed");
    assert_eq!(after.tls, before.tls, "certificate changed");
    assert_eq!(
        after.restart_hash, before.restart_hash,
        "pods would restart"
    );
    assert!(
        !event_reasons(&env, &ns, &name)
            .await
            .contains("CredentialsChanged")
    );
    key_monitor.assert_never_regenerated();

    // Delete the API-key Secret: new keys, pods roll, and an Event says credentials changed.
    env.delete("v1", "Secret", &ns, &format!("{name}-api-key"))
        .await
        .expect("delete the API-key Secret");
    // New keys and the pods rolled for them (the snapshot reads the StatefulSet before the
    // Secrets: taken between the two writes it can show the new keys beside the old hash).
    let rekeyed = cluster
        .converge_until(&ns, &name, |s| {
            s.api_key != before.api_key && s.restart_hash != before.restart_hash
        })
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
    // anew; the watch may restart and list after the re-creation, so the absent state in
    // between is not always seen).
    let states = key_monitor.states_since_created();
    assert!(
        (2..=3).contains(&states),
        "the monitor saw {states} states of the API-key Secret"
    );
    eventually(CONVERGE, || {
        let env = &env;
        let (ns, name) = (&ns, &name);
        async move {
            let reasons = event_reasons(env, ns, name).await;
            reasons
                .contains("CredentialsChanged")
                .then_some(())
                .ok_or_else(|| format!("no CredentialsChanged Event yet: {reasons:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reverted_and_stray_children_are_pruned() {
    let env = Env::namespaced("drift").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let sq = with_name(example("full.yaml"), &ns, &name);
    cluster.insert_instance(&sq).await;
    // Settled: the pods are ready and the formed cluster is recorded (a key in the ConfigMap
    // that comes once kwok makes the peers ready), so nothing but the drift changes it later.
    let before = cluster
        .converge_until(&ns, &name, |s| {
            s.phase() == Some(Phase::Ready)
                && s.sq.status.as_ref().is_some_and(|st| st.cluster_formed)
        })
        .await;
    let owner_uid = before.sq.metadata.uid.clone().expect("uid");

    // While the operator is down, someone edits the config and adds a policy under its labels.
    cluster.kill_operator();
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.admin.clone(), &ns);
    config_maps
        .patch(
            &format!("{name}-config"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": "service: {enable_cors: true}\n"}})),
        )
        .await
        .expect("ConfigMap edited");
    let stray = format!("{name}-stray");
    env.insert(json!({
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
    .await
    .expect("stray policy inserted");
    let err = check_instance(&env, &ns, &name)
        .await
        .expect_err("drift goes unnoticed");
    assert!(err.contains("ConfigMap"), "{err}");

    // Back up: the config is restored and the allow-all egress policy removed.
    cluster.spawn_operator().await;
    let after = cluster.converge(&ns, &name).await;
    assert_eq!(after.config_yaml, before.config_yaml);
    assert!(!after.has("NetworkPolicy", &stray));
    assert!(
        env.get("networking.k8s.io/v1", "NetworkPolicy", &ns, &stray)
            .await
            .is_none()
    );
    assert_eq!(after.api_key, before.api_key);
    assert_eq!(after.restart_hash, before.restart_hash);
    cluster.assert_operator_healthy();
}

/// Drift of every child kind the apply step owns (issue 16): an edit of a child's data or spec
/// by someone else shows in its managed fields (a write newer than the operator's apply), so the
/// operator reads that one child once and writes it back within one reconcile: exactly one GET
/// and one PATCH of it, nothing else. A label the operator does not send costs one GET and no
/// write. Then a minute of nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_any_childs_data_or_spec_is_read_once_and_written_back_once() {
    let env = Env::namespaced("drift-kinds").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let mut sq = with_name(example("minimal.yaml"), &ns, &name);
    sq["spec"]["replicas"] = json!(3);
    cluster.ready_and_quiet(&sq).await;

    let admin = env.admin.clone();
    let merge = |patch: Value| Patch::Merge(patch);
    let by_admin = by_admin();
    let config = format!("{name}-config");
    let edits: Vec<Edit> = vec![
        Edit::new("configmaps", &config, "/data/config.yaml"),
        Edit::new("services", &name, "/spec/ports/0/targetPort"),
        Edit::new(
            "services",
            &format!("{name}-headless"),
            "/spec/publishNotReadyAddresses",
        ),
        Edit::new(
            "networkpolicies.networking.k8s.io",
            &format!("{name}-ingress"),
            "/spec/ingress",
        ),
        Edit::new("poddisruptionbudgets.policy", &name, "/spec/maxUnavailable"),
        Edit::new("serviceaccounts", &name, "/automountServiceAccountToken"),
        Edit::new(
            "statefulsets.apps",
            &name,
            "/spec/template/spec/containers/0/image",
        ),
        Edit::new("statefulsets.apps", &name, "/spec/replicas"),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let before = edit.live(&env, &ns).await;
        let mark = env.mark().await;
        match i {
            0 => Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &ns)
                .patch(
                    &config,
                    &by_admin,
                    &merge(json!({"data": {"config.yaml": "service: {enable_cors: true}\n"}})),
                )
                .await
                .map(drop),
            1 => {
                let port = before["spec"]["ports"][0]["port"].clone();
                Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), &ns)
                    .patch(
                        &name,
                        &by_admin,
                        &Patch::Strategic(
                            json!({"spec": {"ports": [{"port": port, "targetPort": 9999}]}}),
                        ),
                    )
                    .await
                    .map(drop)
            }
            // Server-side apply with force (another manager's Apply entry).
            2 => Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), &ns)
                .patch(
                    &format!("{name}-headless"),
                    &PatchParams::apply("e2e-admin-ssa").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": format!("{name}-headless"), "namespace": ns},
                        "spec": {"publishNotReadyAddresses": false},
                    })),
                )
                .await
                .map(drop),
            3 => Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
                admin.clone(),
                &ns,
            )
            .patch(
                &format!("{name}-ingress"),
                &by_admin,
                &merge(json!({"spec": {"ingress": []}})),
            )
            .await
            .map(drop),
            4 => Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
                admin.clone(),
                &ns,
            )
            .patch(
                &name,
                &by_admin,
                &merge(json!({"spec": {"maxUnavailable": 2}})),
            )
            .await
            .map(drop),
            5 => Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &ns)
                .patch(
                    &name,
                    &by_admin,
                    &merge(json!({"automountServiceAccountToken": true})),
                )
                .await
                .map(drop),
            6 => Api::<StatefulSet>::namespaced(admin.clone(), &ns)
                .patch(
                    &name,
                    &by_admin,
                    &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                        {"name": "qdrant", "image": "docker.io/qdrant/qdrant:v1.17.1-unprivileged"}
                    ]}}}})),
                )
                .await
                .map(drop),
            _ => Api::<StatefulSet>::namespaced(admin.clone(), &ns)
                .patch_scale(&name, &by_admin, &merge(json!({"spec": {"replicas": 2}})))
                .await
                .map(drop),
        }
        .unwrap_or_else(|e| panic!("edit of {} {}: {e}", edit.resource, edit.name));
        edit.restored(&env, &ns, &before).await;
        quiet(&cluster).await;
        let counters = cluster.counters_since(&mark).await;
        let once = vec![edit.request("get"), edit.request("patch")];
        // Managed-field times have second resolution: a repair in the second of the edit leaves
        // the tie flagged (ties count as foreign, `src/reconcile/drift.rs`), and the next version
        // someone else writes (the StatefulSet controller's status) is read once more, never
        // written.
        let tie = [once.clone(), vec![edit.request("get")]].concat();
        let seen = child_requests(&counters);
        assert!(
            seen == once || seen == tie,
            "{} {} edited at {}: one read, one write (and one more read after a same-second \
             tie), saw {seen:?}\n{:#?}",
            edit.resource,
            edit.name,
            edit.pointer,
            counters.log
        );
    }
    check_instance(&env, &ns, &name)
        .await
        .unwrap_or_else(|e| panic!("not converged after the edits: {e}"));

    // A label the operator does not send: read once, not written (and not read again).
    let mark = env.mark().await;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &ns)
        .patch(
            &config,
            &by_admin,
            &merge(json!({"metadata": {"labels": {"team": "x"}}})),
        )
        .await
        .expect("label added");
    tokio::time::sleep(Duration::from_secs(10)).await;
    quiet(&cluster).await;
    let label = Edit::new("configmaps", &config, "/metadata/labels/team");
    assert_eq!(
        child_requests(&cluster.counters_since(&mark).await),
        vec![label.request("get")]
    );

    let mark = env.mark().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = cluster.counters_since(&mark).await;
    let requests: Vec<_> = idle.log.iter().filter(|r| r.verb != "watch").collect();
    assert!(
        requests.is_empty(),
        "requests in an idle minute: {requests:#?}"
    );
    cluster.assert_operator_healthy();
}

/// A restart after edits made while the operator was down: the edited children are flagged as
/// the caches list them and repaired on the first reconcile (one GET and one PATCH each); a
/// restart without edits reads no child but the instance's Secrets, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_only_children_edited_meanwhile_are_read_and_repaired() {
    let env = Env::namespaced("drift-restart").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let sq = with_name(example("minimal.yaml"), &ns, &name);
    cluster.ready_and_quiet(&sq).await;

    cluster.kill_operator();
    let by_admin = by_admin();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(env.admin.clone(), &ns)
        .patch(
            &name,
            &by_admin,
            &Patch::Merge(json!({"automountServiceAccountToken": true})),
        )
        .await
        .expect("ServiceAccount edited");
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(env.admin.clone(), &ns)
        .patch(
            &format!("{name}-ingress"),
            &by_admin,
            // A removal: no managed-fields entry of the editor's, the operator's time unchanged.
            &Patch::Merge(json!({"spec": {"ingress": []}})),
        )
        .await
        .expect("NetworkPolicy edited");
    let mark = env.mark().await;
    cluster.spawn_operator().await;
    cluster.converge(&ns, &name).await;
    quiet(&cluster).await;
    let sa = Edit::new("serviceaccounts", &name, "");
    let np = Edit::new(
        "networkpolicies.networking.k8s.io",
        &format!("{name}-ingress"),
        "",
    );
    let mut want = vec![
        np.request("get"),
        np.request("patch"),
        sa.request("get"),
        sa.request("patch"),
    ];
    want.extend(secrets_read_after_a_restart(
        &name,
        &["api-key", "ca", "tls"],
    ));
    want.sort();
    let mut got = child_requests(&cluster.counters_since(&mark).await);
    got.sort();
    assert_eq!(
        got, want,
        "the two edited children, once each (and each Secret read once)"
    );

    let mark = cluster.restart().await;
    // The first reconcile has run once the operator's log says so; then nothing more comes.
    tokio::time::sleep(Duration::from_secs(15)).await;
    quiet(&cluster).await;
    cluster.converge(&ns, &name).await;
    let mut got = child_requests(&cluster.counters_since(&mark).await);
    got.sort();
    assert_eq!(
        got,
        secrets_read_after_a_restart(&name, &["api-key", "ca", "tls"]),
        "a restart without edits"
    );
    cluster.assert_operator_healthy();
}

/// The reads of an instance's managed Secrets a started operator makes once (issue 16 step 5):
/// their cache holds metadata only and what is derived from their values is remembered in memory
/// ([`secure_qdrant_operator::reconcile::memo`]), so a new process reads each one once, then not
/// again until it changes. Sorted.
fn secrets_read_after_a_restart(
    instance: &str,
    suffixes: &[&str],
) -> Vec<(String, String, String)> {
    let mut reads: Vec<_> = suffixes
        .iter()
        .map(|s| {
            (
                "get".to_owned(),
                "secrets".to_owned(),
                format!("{instance}-{s}"),
            )
        })
        .collect();
    reads.sort();
    reads
}

/// Every child of the full example (affinity, tolerations, claim templates, every policy) is
/// recognised as the operator left it: a restart reads none of them but its Secrets, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_no_child_of_the_full_example_but_its_secrets_once() {
    let env = Env::namespaced("drift-full").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let sq = with_name(example("full.yaml"), &ns, &name);
    cluster.ready_and_quiet(&sq).await;
    let mark = cluster.restart().await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    quiet(&cluster).await;
    let got = child_requests(&cluster.counters_since(&mark).await);
    // The pull Secret the spec references is read by its own check (not a child).
    let mut got: Vec<_> = got
        .into_iter()
        .filter(|(_, _, n)| n != "registry-credentials")
        .collect();
    got.sort();
    assert_eq!(
        got,
        secrets_read_after_a_restart(&name, &["api-key", "ca", "tls", "metrics-client"]),
        "a restart without edits"
    );
    cluster.assert_operator_healthy();
}

/// What the drift signal assumes of the API server (`reconcile::drift`): an apply that changes
/// nothing is not persisted (the operator's managed-fields time stays), a changing apply
/// refreshes the time, and another manager's change leaves a newer entry of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_stamps_a_managers_time_only_when_its_write_changes_the_object() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let env = Env::namespaced("drift-times").await;
    let api = Api::<ConfigMap>::namespaced(env.admin.clone(), &env.ns);
    let ours = PatchParams::apply(MANAGER).force();
    let cm = |value: &str| {
        Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "pinned", "namespace": env.ns,
                         "labels": {"app.kubernetes.io/managed-by": MANAGER}},
            "data": {"k": value},
        }))
    };
    let entry = |o: &ConfigMap, manager: &str| {
        o.metadata
            .managed_fields
            .iter()
            .flatten()
            .find(|e| e.manager.as_deref() == Some(manager))
            .and_then(|e| e.time.clone())
            .map(|t| t.0)
    };
    let first = api.patch("pinned", &ours, &cm("a")).await.expect("created");
    let t0 = entry(&first, MANAGER).expect("our entry has a time");
    assert!(!secure_qdrant_operator::reconcile::drift::foreign_write(
        &first.metadata
    ));
    // Times have whole seconds: wait past the next second so a refresh would show.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let same = api.patch("pinned", &ours, &cm("a")).await.expect("no-op");
    assert_eq!(
        same.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(
        entry(&same, MANAGER),
        Some(t0),
        "a no-op apply keeps our time"
    );
    let changed = api.patch("pinned", &ours, &cm("b")).await.expect("changed");
    let t1 = entry(&changed, MANAGER).expect("time");
    assert!(t1 > t0, "a changing apply refreshes our time: {t0} → {t1}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let edited = api
        .patch(
            "pinned",
            &PatchParams {
                field_manager: Some("e2e-admin".to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"k": "theirs"}})),
        )
        .await
        .expect("edited");
    assert!(entry(&edited, "e2e-admin").expect("their entry") > t1);
    assert!(secure_qdrant_operator::reconcile::drift::foreign_write(
        &edited.metadata
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let repaired = api
        .patch("pinned", &ours, &cm("b"))
        .await
        .expect("repaired");
    assert!(!secure_qdrant_operator::reconcile::drift::foreign_write(
        &repaired.metadata
    ));
    // A status-only or unrelated write leaves no doubt either way: a second no-op keeps it so.
    let again = api.patch("pinned", &ours, &cm("b")).await.expect("no-op");
    assert_eq!(
        again.metadata.managed_fields,
        repaired.metadata.managed_fields
    );
    // A repair is guarded by the uid read (not the resourceVersion, which status writes move):
    // an apply naming another uid is refused, one naming this uid goes through.
    let with_uid = |uid: &str, value: &str| {
        let Patch::Apply(mut body) = cm(value) else {
            unreachable!()
        };
        body["metadata"]["uid"] = json!(uid);
        Patch::Apply(body)
    };
    let refused = api
        .patch(
            "pinned",
            &ours,
            &with_uid("00000000-0000-0000-0000-000000000000", "c"),
        )
        .await
        .expect_err("another uid is refused");
    assert!(
        matches!(&refused, kube::Error::Api(e) if e.code == 409 || e.code == 422),
        "{refused:?}"
    );
    eprintln!("a write naming another uid: {refused:?}");
    let uid = again.metadata.uid.clone().expect("uid");
    api.patch("pinned", &ours, &with_uid(&uid, "c"))
        .await
        .expect("the same uid is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_resource_collects_children_and_pvcs_follow_retain_on_delete() {
    let env = Env::namespaced("deleting").await;
    let mut cluster = Cluster::new(&env);
    cluster.spawn_operator().await;
    let ns = env.ns.clone();
    let kept = with_name(example("minimal.yaml"), &ns, "kept");
    let mut dropped = with_name(example("full.yaml"), &ns, "dropped");
    dropped["spec"]["storage"]["retainOnDelete"] = json!(false);
    let started = env.mark().await;
    cluster.insert_instance(&kept).await;
    cluster.insert_instance(&dropped).await;
    let kept_snap = cluster.converge(&ns, "kept").await;
    let dropped_snap = cluster.converge(&ns, "dropped").await;
    // The audit log shows the operator's writes (the check after the deletion is not vacuous).
    let writes = cluster.counters_since(&started).await.writes();
    assert!(writes > 0, "no write of the operator in the audit log");
    assert_eq!(kept_snap.pvcs, names(&["storage-kept-0"]));
    // full.yaml has a snapshots volume: two claim templates, three replicas.
    assert_eq!(dropped_snap.pvcs.len(), 6, "{:?}", dropped_snap.pvcs);

    for n in ["kept", "dropped"] {
        env.delete(SQ_API, SQ_KIND, &ns, n)
            .await
            .expect("delete the SecureQdrant");
    }
    let gone = |n: &'static str| {
        let (env, ns) = (&env, &ns);
        async move {
            let left = owned_objects(env, ns, n).await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{n}: still there: {left:?}"))
            }
        }
    };
    // The real garbage collector removes the children.
    eventually(CONVERGE, || async {
        gone("kept").await?;
        gone("dropped").await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The operator must not bring anything back for a resource that is gone. This sleep is a
    // NEGATIVE window, not a wait for something: its watches get 3 s to deliver the deletions
    // and run whatever reconciles they trigger, and nothing may come back in it (there is no
    // event to wait for). The PVC wait below does not cover it: the dropped instance's claims
    // may already be gone, so it can return at once.
    let quiet_since = env.mark().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    gone("kept").await.unwrap();
    gone("dropped").await.unwrap();
    assert_eq!(
        pvc_names(&env, &ns, "kept").await,
        names(&["storage-kept-0"]),
        "retainOnDelete: true keeps the data volume"
    );
    // retainOnDelete: false: the real StatefulSet PVC retention (`whenDeleted: Delete`) hands
    // the claims to the garbage collector, which deletes them once their pods are gone.
    eventually(CONVERGE, || async {
        let left = pvc_names(&env, &ns, "dropped").await;
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("retainOnDelete: false deletes the volumes: {left:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Nothing but (perhaps) Events was written by the operator after the deletion settled.
    let counters = cluster.counters_since(&quiet_since).await;
    let written: Vec<String> = counters
        .log
        .iter()
        .filter(|r| is_write(&r.verb) && !r.resource.starts_with("events"))
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
        .collect();
    assert!(written.is_empty(), "written after deletion: {written:?}");
    cluster.assert_operator_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_under_injected_errors_and_dropped_watches_without_leaking_or_regenerating() {
    let env = Env::namespaced("alpha").await;
    let beta = env.cp.namespace(&env.admin, "beta").await;
    let alpha = env.ns.clone();
    let mut cluster = Cluster::new(&env);
    cluster.namespaces.push(beta.clone());
    let sqs = [
        with_name(example("minimal.yaml"), &alpha, "vectors"),
        with_name(example("full.yaml"), &beta, "vectors"),
        with_name(example("minimal.yaml"), &alpha, "other"),
    ];
    // Record every value the generated Secrets ever take, from before the operator starts.
    let mut monitors = Vec::new();
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        for suffix in ["api-key", "ca", "tls"] {
            monitors.push(SecretMonitor::start(&env, &ns, &format!("{name}-{suffix}")).await);
        }
    }
    // The operator starts on a healthy API (its start-up check does not retry; `spawn_operator`
    // returns once it watches SecureQdrants), then everything breaks: 20% of its requests fail
    // with 409/429/500 and watch streams drop. The proxy decides when a watch opens whether it
    // may be cut, so the watch faults are on from the start: at random, and every stream after
    // 4 events (the real API server converges the three instances in seconds, over too few
    // watch events for a 10% drop rate alone to cut a stream every time).
    let watch_faults = Faults {
        seed: 20,
        watch_drop_rate: 0.1,
        watch_drop_after_events: Some(4),
        ..Faults::default()
    };
    env.set_faults(&watch_faults);
    cluster.spawn_operator().await;
    let mark = env.mark().await;
    env.set_faults(&Faults {
        error_rate: 0.2,
        error_codes: vec![409, 429, 500],
        ..watch_faults
    });
    cluster.under_faults = true;
    for sq in &sqs {
        cluster.insert_instance(sq).await;
    }
    let started = Instant::now();
    let mut snaps = Vec::new();
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        snaps.push(cluster.converge(&ns, &name).await);
    }
    let counters = cluster.counters_since(&mark).await;
    eprintln!(
        "converged under faults in {:?}: {} requests, {} injected errors, {} dropped watches",
        started.elapsed(),
        counters.total(),
        counters.total_errors(),
        counters.dropped_watches
    );
    assert!(
        counters.total_errors() >= 10,
        "too few injected errors to mean anything: {:?}",
        counters.injected_errors
    );
    assert!(counters.dropped_watches >= 1, "no watch was dropped");

    // Still under faults: pods become ready (the real StatefulSet controller and kwok), status
    // follows.
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
    let env = Env::namespaced("killed").await;
    let ns = env.ns.clone();
    let mut cluster = Cluster::new(&env);
    // Slow requests keep reconciles in flight long enough to kill the operator in one.
    env.set_faults(&Faults {
        latency_ms: 25,
        ..Faults::default()
    });
    // Held pods: nothing runs, so every instance settles at the same state (pods created, none
    // ready).
    let sqs: Vec<Value> = (0..4)
        .map(|i| {
            let file = if i % 2 == 0 {
                "minimal.yaml"
            } else {
                "full.yaml"
            };
            hold(with_name(example(file), &ns, &format!("db{i}")))
        })
        .collect();
    cluster.spawn_operator().await;
    for sq in &sqs {
        cluster.insert_instance(sq).await;
    }
    // Kill it (SIGKILL) as soon as one generated Secret exists: mid-reconcile.
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &ns);
    let managed = kube::api::ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let deadline = Instant::now() + CONVERGE;
    loop {
        let list = secrets.list(&managed).await.expect("Secrets listed");
        if !list.items.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no Secret yet");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_log = cluster.kill_operator();
    let at_kill: BTreeMap<String, Value> = env
        .list("v1", "Secret", &ns)
        .await
        .into_iter()
        .filter(|s| has_label(s, LABEL_MANAGED_BY, MANAGER))
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_owned(),
                s["data"].clone(),
            )
        })
        .collect();
    let mut unfinished = 0;
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        if check_instance(&env, &ns, &name).await.is_err() {
            unfinished += 1;
        }
    }
    assert!(
        unfinished > 0,
        "every instance had converged before the kill: not a mid-reconcile kill"
    );
    assert!(!first_log.contains("panicked"), "{first_log}");

    env.clear_faults();
    cluster.spawn_operator().await;
    for sq in &sqs {
        let (ns, name) = ns_name(sq);
        let replicas = sq["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
        let snap = cluster
            .converge_until(&ns, &name, |s| held_settled(s, replicas))
            .await;
        // Held pods: every pod created, none ready (see `example_converges`).
        assert_eq!(
            snap.phase(),
            Some(Phase::Progressing),
            "{:?}",
            snap.sq.status
        );
    }
    // Every Secret that existed at the kill still holds what it held.
    for (name, data) in &at_kill {
        let now = env
            .get("v1", "Secret", &ns, name)
            .await
            .unwrap_or_else(|| panic!("Secret {name} disappeared"));
        assert!(
            now["data"] == *data,
            "Secret {name} changed across the restart"
        );
    }
    cluster.assert_operator_healthy();
}

/// Secret material is read on demand (issue 16): the operator's caches hold no Secret value, a
/// reconcile that finds the Secrets as it last read them reads none, a restart reads each at
/// most once and regenerates nothing, and edits of the material are honoured as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_material_is_read_on_demand_and_edits_of_it_are_honoured() {
    let env = Env::namespaced("on-demand").await;
    let mut cluster = Cluster::new(&env);
    let (ns, name) = (env.ns.clone(), "vectors".to_owned());
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &ns);
    let (key_name, ca_name, tls_name) = (
        format!("{name}-api-key"),
        format!("{name}-ca"),
        format!("{name}-tls"),
    );
    let key_monitor = SecretMonitor::start(&env, &ns, &key_name).await;
    cluster.spawn_operator().await;
    cluster
        .insert_instance(&with_name(example("minimal.yaml"), &ns, &name))
        .await;
    let before = cluster
        .converge_until(&ns, &name, |s| s.phase() == Some(Phase::Ready))
        .await;
    // Settled: the first certificate's trust is rolled out (until then the TLS step looks
    // again every ROLLOVER_POLL).
    eventually(CONVERGE, || {
        let (env, ns, tls_name) = (&env, &ns, &tls_name);
        async move {
            let tls = env
                .get("v1", "Secret", ns, tls_name)
                .await
                .ok_or("no <n>-tls")?;
            let phase = &tls["metadata"]["annotations"]
                [secure_qdrant_operator::tls::ROLLOVER_PHASE_ANNOTATION];
            (phase == "Stable")
                .then_some(())
                .ok_or(format!("phase {phase}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    settled_quiet(&cluster).await;

    // Idle: not one Secret read in a minute.
    let idle = env.mark().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let counters = cluster.counters_since(&idle).await;
    assert_eq!(counters.get("get", "secrets"), 0, "{counters:?}");
    assert_eq!(counters.writes(), 0, "{counters:?}");

    // A reconcile with every Secret as last read (a ConfigMap edit to repair): no Secret read.
    let mark = env.mark().await;
    env.merge_patch(
        "v1",
        "ConfigMap",
        &ns,
        &format!("{name}-config"),
        json!({"data": {"config.yaml": "service: {enable_cors: true}\n"}}),
    )
    .await
    .expect("ConfigMap edited");
    let repaired = cluster.converge(&ns, &name).await;
    assert_eq!(repaired.config_yaml, before.config_yaml);
    settled_quiet(&cluster).await;
    let counters = cluster.counters_since(&mark).await;
    assert_eq!(counters.get("patch", "configmaps"), 1, "{counters:?}");
    assert_eq!(counters.get("get", "secrets"), 0, "{counters:?}");

    // A restart with every Secret in place: each read at most once (api-key, ca, tls), none
    // written, nothing regenerated.
    let mark = cluster.restart().await;
    eventually(CONVERGE, || async {
        let n = cluster.counters_since(&mark).await.get("get", "secrets");
        (n >= 3).then_some(()).ok_or(format!("{n} Secret reads"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    settled_quiet(&cluster).await;
    let counters = cluster.counters_since(&mark).await;
    assert_eq!(counters.get("get", "secrets"), 3, "{counters:?}");
    for verb in ["create", "update", "patch", "delete"] {
        assert_eq!(counters.get(verb, "secrets"), 0, "{verb}: {counters:?}");
    }
    let restarted = cluster.converge(&ns, &name).await;
    assert_eq!(restarted.api_key, before.api_key);
    assert_eq!(restarted.ca, before.ca);
    assert_eq!(restarted.tls, before.tls);
    key_monitor.assert_never_regenerated();

    // `<n>-tls` edited to a certificate of another CA: re-issued from `<n>-ca`.
    let now = k8s_openapi::jiff::Timestamp::now();
    let other = secure_qdrant_operator::tls::issue_ca(
        &secure_qdrant_operator::tls::CaSubject::new("elsewhere", "other"),
        k8s_openapi::jiff::SignedDuration::from_hours(24 * 30),
        now,
    )
    .expect("a CA");
    env.merge_patch(
        "v1",
        "Secret",
        &ns,
        &tls_name,
        json!({"data": {"tls.crt": STANDARD.encode(other.cert().pem())}}),
    )
    .await
    .expect("<n>-tls edited");
    let reissued = cluster
        .converge_until(&ns, &name, |s| {
            s.tls.get("tls.crt") != before.tls.get("tls.crt")
        })
        .await;
    let ca = secure_qdrant_operator::tls::Certificate::from_pem(&reissued.ca["tls.crt"]).unwrap();
    let leaf =
        secure_qdrant_operator::tls::Certificate::from_pem(&reissued.tls["tls.crt"]).unwrap();
    assert!(
        leaf.is_signed_by(&ca),
        "the re-issued certificate chains to {ca_name}"
    );
    assert_eq!(reissued.ca, before.ca, "{ca_name} is kept");

    // `<n>-api-key` edited to another usable key: honoured (the pods get it), not replaced.
    let edited = "E".repeat(43);
    env.merge_patch(
        "v1",
        "Secret",
        &ns,
        &key_name,
        json!({"data": {"api-key": STANDARD.encode(&edited)}}),
    )
    .await
    .expect("<n>-api-key edited");
    let honoured = cluster
        .converge_until(&ns, &name, |s| s.restart_hash != before.restart_hash)
        .await;
    assert_eq!(honoured.api_key["api-key"], edited);
    assert_eq!(
        honoured.api_key["fingerprint-salt"],
        before.api_key["fingerprint-salt"]
    );

    // `<n>-ca` loses its key: replaced, with the Warning, and the rollover starts.
    secrets
        .patch(
            &ca_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tls.key": null}})),
        )
        .await
        .expect("<n>-ca edited");
    eventually(CONVERGE, || {
        let (env, ns, name) = (&env, &ns, &name);
        async move {
            let reasons = event_reasons(env, ns, name).await;
            reasons
                .contains("CAReplaced")
                .then_some(())
                .ok_or_else(|| format!("no CAReplaced Event yet: {reasons:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    cluster.assert_operator_healthy();
}

/// Waits until the operator has sent no request for ten seconds (the pods' readiness, the
/// rollout's end and the formed cluster are reported in between), at most [`CONVERGE`].
async fn settled_quiet(cluster: &Cluster<'_>) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mark = cluster.env.mark().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let counters = cluster.counters_since(&mark).await;
        if counters.total() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "never quiet: {counters:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Harness: the operator process, convergence checks
// ---------------------------------------------------------------------------------------------

/// A test's env and the operator process running against it (through the env's fault proxy,
/// watching the env's namespace and `namespaces`).
struct Cluster<'a> {
    env: &'a Env,
    namespaces: Vec<String>,
    operator: Option<Operator>,
    /// Every operator process this test ran, for request counts.
    users: Vec<String>,
    under_faults: bool,
    logs: tempfile::TempDir,
    runs: usize,
}

impl<'a> Cluster<'a> {
    fn new(env: &'a Env) -> Cluster<'a> {
        Cluster {
            env,
            namespaces: vec![env.ns.clone()],
            operator: None,
            users: Vec::new(),
            under_faults: false,
            logs: tempfile::tempdir().expect("temp dir"),
            runs: 0,
        }
    }

    /// Inserts a SecureQdrant, and first what it needs from its namespace and cluster: the
    /// image pull Secrets it names, each labelled to allow the instance (as their owner would:
    /// the operator refuses them otherwise), and the PriorityClass its pods ask for (the
    /// Priority admission plugin refuses them without it).
    async fn insert_instance(&self, sq: &Value) {
        let env = self.env;
        let (ns, name) = ns_name(sq);
        if let Some(class) = sq["spec"]["pod"]["priorityClassName"].as_str() {
            let pc: PriorityClass = serde_json::from_value(json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": class}, "value": 1000,
            }))
            .unwrap();
            Api::<PriorityClass>::all(env.admin.clone())
                .patch(class, &control_plane::apply_params(), &Patch::Apply(&pc))
                .await
                .unwrap_or_else(|e| panic!("PriorityClass {class}: {e}"));
        }
        for pull in sq["spec"]["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let secret = pull["name"].as_str().expect("a pull Secret name");
            let labels = json!({"secureqdrant.dev/allowed-instance": name});
            match env.get("v1", "Secret", &ns, secret).await {
                // Shared by several instances: their names joined by `_`.
                Some(existing) => {
                    let allowed =
                        existing["metadata"]["labels"]["secureqdrant.dev/allowed-instance"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                    env.merge_patch(
                        "v1",
                        "Secret",
                        &ns,
                        secret,
                        json!({"metadata": {"labels": {
                            "secureqdrant.dev/allowed-instance": format!("{allowed}_{name}")}}}),
                    )
                    .await
                    .expect("pull Secret labelled");
                }
                None => {
                    env.insert(json!({"apiVersion": "v1", "kind": "Secret",
                        "type": "kubernetes.io/dockerconfigjson",
                        "metadata": {"name": secret, "namespace": ns, "labels": labels},
                        "data": {".dockerconfigjson": "e30="}}))
                        .await
                        .expect("pull Secret inserted");
                }
            }
        }
        env.insert(sq)
            .await
            .unwrap_or_else(|e| panic!("the API server refuses {ns}/{name}: {e}"));
    }

    /// Runs the operator binary (the chart's RBAC for the test's namespaces, through the env's
    /// proxy); returns once it watches SecureQdrants.
    async fn spawn_operator(&mut self) {
        assert!(self.operator.is_none(), "an operator is already running");
        self.runs += 1;
        let op = self
            .env
            .start_operator(Scope::Namespaces(self.namespaces.clone()))
            .await;
        self.users.push(op.username());
        self.operator = Some(op);
    }

    /// Inserts the SecureQdrant `sq` (see [`Cluster::insert_instance`]) and waits until it is
    /// converged and Ready and the operator has gone quiet.
    async fn ready_and_quiet(&self, sq: &Value) {
        let (ns, name) = ns_name(sq);
        self.insert_instance(sq).await;
        self.converge_until(&ns, &name, |s| s.phase() == Some(Phase::Ready))
            .await;
        quiet(self).await;
    }

    /// SIGKILLs the operator and starts a new one; returns a mark of the audit log taken in
    /// between (the new process's requests come after it).
    async fn restart(&mut self) -> Mark {
        self.kill_operator();
        let mark = self.env.mark().await;
        self.spawn_operator().await;
        mark
    }

    /// SIGKILLs the operator; returns its log.
    fn kill_operator(&mut self) -> String {
        let op = self.operator.take().expect("an operator runs");
        // The log lives in the operator's temporary directory, removed with it: keep a link.
        let kept = self.logs.path().join(format!("operator-{}.log", self.runs));
        std::fs::hard_link(&op.log, &kept).expect("log linked");
        drop(op); // SIGKILL, reaped
        std::fs::read_to_string(&kept).unwrap_or_default()
    }

    fn operator_log(&self) -> String {
        self.operator
            .as_ref()
            .map(Operator::log)
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        self.operator
            .as_ref()
            .map(Operator::log_tail)
            .unwrap_or_default()
    }

    /// Still running, and never panicked.
    fn assert_operator_healthy(&mut self) {
        let tail = self.log_tail();
        let op = self.operator.as_mut().expect("an operator runs");
        assert!(op.running(), "the operator exited:\n{tail}");
        let log = op.log();
        assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    }

    /// The requests of every operator process of this test since `mark` (audit log), and what
    /// the proxy injected.
    async fn counters_since(&self, mark: &Mark) -> Counters {
        self.env.counters_of(mark, &self.users).await
    }

    /// Waits until the current generation is reported as refused with `reason`
    /// (`Reconciled=False`); returns the condition's message.
    async fn refused(&self, ns: &str, name: &str, reason: &str) -> String {
        let env = self.env;
        let result = eventually(CONVERGE, || async move {
            let sq = env
                .get(SQ_API, SQ_KIND, ns, name)
                .await
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
        self.converge_while(ns, name, || async { true }, done).await
    }

    /// Waits until `pre` holds, then the instance is converged (see [`check_instance`]) and
    /// `done` holds.
    async fn converge_while<P, Fut>(
        &self,
        ns: &str,
        name: &str,
        pre: P,
        done: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot
    where
        P: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let timeout = if self.under_faults {
            CONVERGE_UNDER_FAULTS
        } else {
            CONVERGE
        };
        let env = self.env;
        let (pre, done) = (&pre, &done);
        let result = eventually(timeout, || async move {
            let ready = pre().await;
            let snap = check_instance(env, ns, name).await?;
            if ready && done(&snap) {
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
                let injected = env.proxy.injected();
                panic!(
                    "{ns}/{name} did not converge within {timeout:?}: {e}\ninjected errors: {}, \
                     dropped watches: {}\noperator log (tail):\n{}",
                    injected.errors.values().sum::<u64>(),
                    injected.dropped_watches,
                    self.log_tail()
                )
            }
        }
    }
}

/// Patches as an administrator, under a field manager of its own (`e2e-admin`): a write by
/// someone else than the operator.
fn by_admin() -> PatchParams {
    PatchParams {
        field_manager: Some("e2e-admin".to_owned()),
        ..PatchParams::default()
    }
}

/// One child edit of the drift test: the child (audit resource, name) and the JSON pointer of
/// the edited field.
struct Edit {
    resource: &'static str,
    name: String,
    pointer: &'static str,
}

impl Edit {
    fn new(resource: &'static str, name: &str, pointer: &'static str) -> Edit {
        Edit {
            resource,
            name: name.to_owned(),
            pointer,
        }
    }

    fn api_version_kind(&self) -> (&'static str, &'static str) {
        match self.resource {
            "configmaps" => ("v1", "ConfigMap"),
            "services" => ("v1", "Service"),
            "serviceaccounts" => ("v1", "ServiceAccount"),
            "networkpolicies.networking.k8s.io" => ("networking.k8s.io/v1", "NetworkPolicy"),
            "poddisruptionbudgets.policy" => ("policy/v1", "PodDisruptionBudget"),
            "statefulsets.apps" => ("apps/v1", "StatefulSet"),
            other => panic!("no kind for {other}"),
        }
    }

    async fn live(&self, env: &Env, ns: &str) -> Value {
        let (api_version, kind) = self.api_version_kind();
        env.get(api_version, kind, ns, &self.name)
            .await
            .unwrap_or_else(|| panic!("{kind} {} exists", self.name))
    }

    /// Waits until the edited field is back as it was in `before`, and the object changed since
    /// the edit (it was written back, not left alone).
    async fn restored(&self, env: &Env, ns: &str, before: &Value) {
        let want = before.pointer(self.pointer).cloned();
        let rv = before["metadata"]["resourceVersion"].clone();
        let result = eventually(Duration::from_secs(60), || async {
            let live = self.live(env, ns).await;
            let have = live.pointer(self.pointer).cloned();
            if have == want && live["metadata"]["resourceVersion"] != rv {
                Ok(())
            } else {
                Err(format!("{} is {have:?}, not {want:?}", self.pointer))
            }
        })
        .await;
        result.unwrap_or_else(|e| panic!("{} {} not restored: {e}", self.resource, self.name));
    }

    /// (verb, resource, name) of a request on this child.
    fn request(&self, verb: &str) -> (String, String, String) {
        (verb.to_owned(), self.resource.to_owned(), self.name.clone())
    }
}

/// The operator's requests on children (not its own resource, Events or leases; not the lists
/// and watches of its caches), in order: (verb, resource, name).
fn child_requests(counters: &Counters) -> Vec<(String, String, String)> {
    counters
        .log
        .iter()
        .filter(|r| r.verb != "watch" && r.verb != "list")
        .filter(|r| {
            !r.resource.starts_with("secureqdrants.")
                && !r.resource.starts_with("events")
                && !r.resource.starts_with("leases")
        })
        .map(|r| (r.verb.clone(), r.resource.clone(), r.name.clone()))
        .collect()
}

/// Waits until the operator has made no request (but watches) for 3 s in a row.
async fn quiet(cluster: &Cluster<'_>) {
    let env = cluster.env;
    let result = eventually(Duration::from_secs(120), || async {
        let mark = env.mark().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c = cluster.counters_since(&mark).await;
        let busy: Vec<_> = c.log.iter().filter(|r| r.verb != "watch").collect();
        if busy.is_empty() {
            Ok(())
        } else {
            Err(format!("still busy: {busy:?}"))
        }
    })
    .await;
    result.unwrap_or_else(|e| panic!("the operator does not go quiet: {e}"));
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
async fn check_instance(env: &Env, ns: &str, name: &str) -> Result<Snapshot, String> {
    check_instance_with(env, ns, name, &|_, _| {}).await
}

/// [`check_instance`], with `tamper(kind, live)` applied to every live child before it is
/// compared (the negative checks: a child with something added must fail the check).
async fn check_instance_with(
    env: &Env,
    ns: &str,
    name: &str,
    tamper: &dyn Fn(&str, &mut Value),
) -> Result<Snapshot, String> {
    let sq_value = env
        .get(SQ_API, SQ_KIND, ns, name)
        .await
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
    let mut secrets = BTreeMap::new();
    for n in [
        Some(inst.api_key_secret_name()),
        Some(inst.ca_secret_name()),
        Some(format!("{name}-tls")),
        inst.metrics_client_secret(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(v) = env.get("v1", "Secret", ns, &n).await {
            let s: Secret = serde_json::from_value(v).map_err(|e| e.to_string())?;
            secrets.insert(n, s);
        }
    }
    let secret = |n: &str| -> Result<&Secret, String> {
        secrets.get(n).ok_or_else(|| format!("no Secret {n}"))
    };
    let api_key_secret = secret(&inst.api_key_secret_name())?;
    let api_keys = ApiKeys {
        api_key: read_key(api_key_secret, api_keys::API_KEY)
            .map_err(|e| format!("API-key Secret: {e}"))?,
        read_only: if inst.auth.read_only_api_key {
            Some(
                read_key(api_key_secret, api_keys::READ_ONLY_API_KEY)
                    .map_err(|e| format!("API-key Secret: {e}"))?,
            )
        } else {
            None
        },
        next: read_key(api_key_secret, api_keys::NEXT_API_KEY).ok(),
        phase: api_keys::Phase::recorded(api_key_secret).unwrap_or_default(),
        salt: read_key(api_key_secret, api_keys::FINGERPRINT_SALT)
            .map_err(|e| format!("API-key Secret: {e}"))?,
    };
    let sts: StatefulSet = serde_json::from_value(
        env.get("apps/v1", "StatefulSet", ns, name)
            .await
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
        let mut have = env
            .get(
                want["apiVersion"].as_str().expect("apiVersion"),
                kind,
                ns,
                child,
            )
            .await
            .ok_or_else(|| format!("no {kind} {child}"))?;
        tamper(kind, &mut have);
        compare(want, &server_defaulted(env, ns, want).await?, &have)?;
    }

    // Nothing else carries the instance's labels.
    let objects = owned_objects(env, ns, name).await;
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
    assert_eq!(keys(api_key_secret), want_keys, "API-key Secret keys");
    assert_eq!(
        keys(ca_secret),
        names(&["tls.crt", "tls.key"]),
        "CA Secret keys"
    );
    assert_eq!(
        keys(tls_secret),
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
    let pvcs = pvc_names(env, ns, name).await;
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
    let config_map = env
        .get("v1", "ConfigMap", ns, &inst.config_map_name())
        .await
        .ok_or("no ConfigMap")?;
    Ok(Snapshot {
        api_key: decode(api_key_secret),
        ca: decode(ca_secret),
        tls: decode(tls_secret),
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

/// The name under which [`server_defaulted`] dry-runs a built child: no child has it, so the
/// dry run is never refused as already existing.
const DRY_RUN_NAME: &str = "e2e-dry-run";

/// The built object as the real API server would store it, with its defaults (a container's
/// `terminationMessagePath`, a port's `protocol`, ...): a dry-run create (nothing is stored) of
/// it as admin in the same namespace under [`DRY_RUN_NAME`] (the live child has the real
/// name; defaults do not depend on the name).
async fn server_defaulted(env: &Env, ns: &str, built: &Value) -> Result<Value, String> {
    let api_version = built["apiVersion"].as_str().ok_or("no apiVersion")?;
    let kind = built["kind"].as_str().ok_or("no kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, _) = kube::discovery::pinned_kind(&env.admin, &gvk)
        .await
        .map_err(|e| format!("discover {kind}: {e}"))?;
    let mut obj = built.clone();
    obj["metadata"]["name"] = json!(DRY_RUN_NAME);
    obj["metadata"]["namespace"] = json!(ns);
    let obj: DynamicObject = serde_json::from_value(obj).map_err(|e| e.to_string())?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = Api::<DynamicObject>::namespaced_with(env.admin.clone(), ns, &ar)
        .create(&params, &obj)
        .await
        // The error names the object and the refused field, never a Secret's data.
        .map_err(|e| format!("dry-run create of the built {kind}: {e}"))?;
    serde_json::to_value(created).map_err(|e| e.to_string())
}

/// What the API server allocates per object rather than defaults, taken out of a top-level
/// field before it is compared: a Service's cluster IPs (unless the builder sets them, as a
/// headless Service's `None`).
fn strip_allocated(kind: &str, built: &Value, field: &str, value: &Value) -> Value {
    let mut value = value.clone();
    if kind == "Service"
        && field == "spec"
        && built["spec"]["clusterIP"].is_null()
        && let Some(spec) = value.as_object_mut()
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    value
}

/// A live object matches a built one: every top-level field but metadata and status (spec,
/// data, type, ...) is EQUAL to the built object as the real API server defaults it
/// (`defaulted`, from [`server_defaulted`]): no key more or less at any depth, save what the
/// server allocates per object ([`strip_allocated`]). Labels, owner references and namespace
/// are equal to the built ones, and the built annotations are there.
fn compare(want: &Value, defaulted: &Value, have: &Value) -> Result<(), String> {
    let kind = want["kind"].as_str().unwrap_or_default();
    let name = want["metadata"]["name"].as_str().unwrap_or_default();
    let secret = kind == "Secret";
    let top = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .filter(|k| !matches!(k.as_str(), "metadata" | "status"))
            .collect()
    };
    for field in top(defaulted).union(&top(have)) {
        let wanted = strip_allocated(kind, want, field, &defaulted[field.as_str()]);
        let live = strip_allocated(kind, want, field, &have[field.as_str()]);
        if wanted != live {
            return Err(if secret {
                format!("{kind} {name}: .{field} differs")
            } else {
                format!("{kind} {name}: .{field} differs:\n built: {wanted}\n  live: {live}")
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

#[test]
fn compare_wants_the_server_defaulted_build_exactly() {
    let meta = json!({"name": "vectors", "namespace": "ns", "labels": {"a": "b"}});
    let built = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                       "data": {"config.yaml": "x"}});
    let defaulted = built.clone();
    let mut live = built.clone();
    live["metadata"]["resourceVersion"] = json!("7");
    assert_eq!(compare(&built, &defaulted, &live), Ok(()));
    // One data key more (e.g. a second config file) fails.
    let mut more = live.clone();
    more["data"]["extra.yaml"] = json!("y");
    assert!(
        compare(&built, &defaulted, &more)
            .unwrap_err()
            .contains(".data differs")
    );
    // A top-level field the build has not (e.g. `immutable`) fails.
    let mut immutable = live.clone();
    immutable["immutable"] = json!(true);
    assert!(compare(&built, &defaulted, &immutable).is_err());
    // A label more fails.
    let mut label = live.clone();
    label["metadata"]["labels"]["c"] = json!("d");
    assert!(compare(&built, &defaulted, &label).is_err());

    // Deep: a key added to a container's securityContext fails; the server's defaults pass.
    let container = json!({"name": "q", "securityContext": {"runAsNonRoot": true}});
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                     "spec": {"template": {"spec": {"containers": [container]}}}});
    let mut sts_defaulted = sts.clone();
    sts_defaulted["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
        json!("/dev/termination-log");
    sts_defaulted["status"] = json!({"replicas": 0});
    let mut sts_live = sts_defaulted.clone();
    sts_live["status"] = json!({"replicas": 3, "readyReplicas": 3});
    assert_eq!(compare(&sts, &sts_defaulted, &sts_live), Ok(()));
    let mut privileged = sts_live.clone();
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
        json!(true);
    assert!(
        compare(&sts, &sts_defaulted, &privileged)
            .unwrap_err()
            .contains(".spec differs")
    );
    // The bare build (without the server's defaults) is not what the live object must equal.
    assert!(compare(&sts, &sts, &sts_live).is_err());

    // A Secret's difference names the field, never the values.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                        "data": {"api-key": "c2VjcmV0"}, "type": "Opaque"});
    let mut extra = secret.clone();
    extra["data"]["stolen"] = json!("c2VjcmV0");
    let err = compare(&secret, &secret, &extra).unwrap_err();
    assert!(!err.contains("c2VjcmV0"), "{err}");

    // What the server allocates per object is not compared, unless the build sets it.
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta,
                         "spec": {"ports": [{"port": 6333, "protocol": "TCP"}]}});
    let mut service_dry = service.clone();
    service_dry["spec"]["clusterIP"] = json!("10.0.0.7");
    service_dry["spec"]["clusterIPs"] = json!(["10.0.0.7"]);
    let mut service_live = service.clone();
    service_live["spec"]["clusterIP"] = json!("10.0.0.9");
    service_live["spec"]["clusterIPs"] = json!(["10.0.0.9"]);
    assert_eq!(compare(&service, &service_dry, &service_live), Ok(()));
    let mut headless = service.clone();
    headless["spec"]["clusterIP"] = json!("None");
    let mut headless_live = headless.clone();
    headless_live["spec"]["clusterIP"] = json!("10.0.0.9");
    assert!(compare(&headless, &headless, &headless_live).is_err());
}

/// (kind, name) of every object of the child kinds labelled for this instance and operator.
async fn owned_objects(env: &Env, ns: &str, instance: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (api, kind) in children::CHILD_KINDS {
        for o in env.list(api, kind, ns).await {
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

/// The PVCs of an instance (the real StatefulSet controller labels them with its selector).
async fn pvc_names(env: &Env, ns: &str, instance: &str) -> BTreeSet<String> {
    env.list("v1", "PersistentVolumeClaim", ns)
        .await
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

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

async fn uid(env: &Env, api: &str, kind: &str, ns: &str, name: &str) -> String {
    env.get(api, kind, ns, name)
        .await
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Reasons of the Events about a SecureQdrant (events.k8s.io/v1 and core/v1: the real API
/// server serves the same Events through both).
async fn event_reasons(env: &Env, ns: &str, name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in env.list("events.k8s.io/v1", "Event", ns).await {
        if e["regarding"]["kind"] == SQ_KIND && e["regarding"]["name"] == name {
            out.insert(e["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    for e in env.list("v1", "Event", ns).await {
        if e["involvedObject"]["kind"] == SQ_KIND && e["involvedObject"]["name"] == name {
            out.insert(e["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// The Events of an instance's first reconcile, as the real API server stores them
/// (events.k8s.io/v1, published by `events::Publisher`): each once, with its note, the
/// operator as reportingController, the instance (by uid) as `regarding` and an `eventTime`.
async fn first_reconcile_events(env: &Env, ns: &str, name: &str) {
    let uid = uid(env, SQ_API, SQ_KIND, ns, name).await;
    let events: Vec<Value> = env
        .list("events.k8s.io/v1", "Event", ns)
        .await
        .into_iter()
        .filter(|e| e["regarding"]["uid"] == uid.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for e in &events {
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(
            seen.insert(reason.to_owned()),
            "{reason} twice: {events:#?}"
        );
        assert_eq!(e["reportingController"], MANAGER, "{e}");
        assert!(
            e["reportingInstance"]
                .as_str()
                .is_some_and(|i| !i.is_empty()),
            "{e}"
        );
        assert_eq!(
            (
                &e["regarding"]["kind"],
                &e["regarding"]["name"],
                &e["regarding"]["namespace"]
            ),
            (&json!(SQ_KIND), &json!(name), &json!(ns)),
            "{e}"
        );
        assert!(
            e["eventTime"].as_str().is_some_and(|t| !t.is_empty()),
            "{e}"
        );
        assert!(
            e.get("series").is_none(),
            "a first reconcile repeats nothing: {e}"
        );
    }
    let note = |reason: &str| {
        events
            .iter()
            .find(|e| e["reason"] == reason)
            .and_then(|e| e["note"].as_str())
            .unwrap_or_else(|| panic!("no {reason} Event with a note: {events:#?}"))
            .to_owned()
    };
    assert_eq!(
        note("CredentialsGenerated"),
        format!("generated API keys in Secret {name}-api-key")
    );
    let issued = note("CertificateIssued");
    assert!(
        issued.starts_with(&format!(
            "issued the serving certificate in Secret {name}-tls ("
        )),
        "{issued}"
    );
    assert!(issued.contains(", valid until "), "{issued}");
}

/// The SecureQdrant's pods ask for a node label no kwok node has: the real scheduler leaves
/// them Pending (the StatefulSet controller still creates them and their PVCs).
fn hold(mut sq: Value) -> Value {
    sq["spec"]["pod"]["nodeSelector"][HOLD_LABEL] = json!("held");
    sq
}

/// Held pods have settled: the StatefulSet reports every pod created (none can be ready).
/// Every held pod created and reported by the StatefulSet (rolled out, none ready): the Ready
/// condition says `ReplicasNotReady` rather than `RollingOut`.
fn held_settled(s: &Snapshot, replicas: i32) -> bool {
    let Some(status) = s.sq.status.as_ref() else {
        return false;
    };
    status.replicas == Some(replicas)
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "ReplicasNotReady")
}

/// Takes [`hold`]'s node label out of the spec: the pods are rolled onto kwok's nodes.
async fn release(env: &Env, ns: &str, name: &str) {
    env.merge_patch(
        SQ_API,
        SQ_KIND,
        ns,
        name,
        json!({"spec": {"pod": {"nodeSelector": {HOLD_LABEL: null}}}}),
    )
    .await
    .expect("the hold released");
}

async fn merge(api: &Api<SecureQdrant>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("SecureQdrant patched");
}

/// An example from deploy/examples as JSON.
fn example(file: &str) -> Value {
    let text = control_plane::repo_file(format!("deploy/examples/{file}"));
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

/// Records every value a Secret takes, from a watch of the real API server (as admin, not
/// through the fault proxy): each change is an event; after a restart of the watch, the list
/// gives the value then (or its absence).
struct SecretMonitor {
    name: String,
    seen: Arc<Mutex<Vec<Option<Value>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SecretMonitor {
    /// Returns once the watch has listed (a Secret created afterwards is seen being created).
    async fn start(env: &Env, ns: &str, name: &str) -> SecretMonitor {
        let seen: Arc<Mutex<Vec<Option<Value>>>> = Arc::default();
        let record = {
            let seen = seen.clone();
            move |data: Option<Value>| {
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&data) {
                    seen.push(data);
                }
            }
        };
        let api: Api<Secret> = Api::namespaced(env.admin.clone(), ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).boxed();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut listed_tx = Some(listed_tx);
            let mut in_list = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => in_list = false,
                    Ok(watcher::Event::InitApply(s)) => {
                        in_list = true;
                        record(Some(json!(s.data)));
                    }
                    Ok(watcher::Event::InitDone) => {
                        if !in_list {
                            record(None);
                        }
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(s)) => record(Some(json!(s.data))),
                    Ok(watcher::Event::Delete(_)) => record(None),
                    // The watcher retries by itself.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listed_rx)
            .await
            .expect("the Secret watch lists within a minute")
            .expect("the watch task runs");
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
