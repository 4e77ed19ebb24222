//! The reconcile pipeline against a scripted API server (the kube-rs "ApiServerVerifier" style).
//!
//! Each test plays the API server for one scenario: it expects the operator's requests one by one,
//! in order, asserts method, path, query and body, and answers like the API server would. Any
//! request the script does not expect fails the test, so "writes nothing else" is checked.

#[path = "support/api_verifier.rs"]
mod api_verifier;
#[path = "support/fixtures.rs"]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Method;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Value, json};

use secure_qdrant_operator::api_keys::{self, ApiKeys};
use secure_qdrant_operator::children::meta::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, RESTART_HASH,
};
use secure_qdrant_operator::controller::error_policy;
use secure_qdrant_operator::crd::{Phase, SecureQdrant, SecureQdrantStatus};
use secure_qdrant_operator::error::Error;
use secure_qdrant_operator::material::SecretValue;
use secure_qdrant_operator::reconcile::RESYNC;
use secure_qdrant_operator::reconcile::backoff::backoff;
use secure_qdrant_operator::reconcile::plan::PEERS_REMOVED_ANNOTATION;
use secure_qdrant_operator::reconcile::stamp::{APPLIED_HASH, stamp};

use api_verifier::{ApiServer, Transcript, as_stored};
use fixtures::{
    CR_UID, Cluster, Harness, NAME, NS, SecureQdrantExt, applied, children_of,
    edited_by_someone_else, instance, keys, path, restart_hash, settled, stored,
    tls_disabled_event,
};

const OLD_IMAGE: &str = "docker.io/qdrant/qdrant:v1.17.1-unprivileged";

// ----- helpers -------------------------------------------------------------------------------

/// Expects the server-side apply of every child of a new instance, in the operator's order.
async fn expect_every_child(api: &mut ApiServer, cluster_mode: bool) {
    api.expect_apply(&path::service_account()).await;
    api.expect_apply(&path::config_map()).await;
    api.expect_apply(&path::headless_service()).await;
    api.expect_apply(&path::client_service()).await;
    api.expect_apply(&path::network_policy("default-deny"))
        .await;
    api.expect_apply(&path::network_policy("ingress")).await;
    if cluster_mode {
        api.expect_apply(&path::network_policy("egress")).await;
        api.expect_apply(&path::pdb()).await;
    }
    api.expect_apply(&path::statefulset()).await;
}

/// The API keys in a Secret sent to (or returned by) the API server.
fn keys_in(secret: &Value) -> ApiKeys {
    let secret: Secret = serde_json::from_value(secret.clone()).expect("a Secret");
    ApiKeys {
        api_key: api_keys::read_key(&secret, api_keys::API_KEY).expect("api-key"),
        read_only: api_keys::read_key(&secret, api_keys::READ_ONLY_API_KEY).ok(),
        next: None,
        phase: Default::default(),
        salt: api_keys::read_key(&secret, api_keys::FINGERPRINT_SALT).expect("fingerprint-salt"),
    }
}

fn restart_hash_in(statefulset: &Value) -> &str {
    statefulset["spec"]["template"]["metadata"]["annotations"][RESTART_HASH]
        .as_str()
        .expect("the pod template carries the restart hash")
}

/// The status written by a status patch.
fn status_in(patch: &Value) -> SecureQdrantStatus {
    serde_json::from_value(patch["status"].clone()).expect("a SecureQdrantStatus")
}

/// (status, reason, message) of a condition in a status patch.
fn condition<'a>(patch: &'a Value, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = patch["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {patch}"));
    (
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap(),
        c["message"].as_str().unwrap(),
    )
}

/// Fails if a secret value (as text or base64, as a Secret's data holds it) is in `text`.
fn assert_no_secret(what: &str, text: &str, keys: &ApiKeys) {
    for value in std::iter::once(&keys.api_key).chain(keys.read_only.as_ref()) {
        assert!(
            !text.contains(value.expose()),
            "{what} holds a secret value: {text}"
        );
        assert!(
            !text.contains(&STANDARD.encode(value.expose())),
            "{what} holds a base64 secret value: {text}"
        );
    }
}

/// The first reconcile of `sq` on an empty cluster, every request asserted. Returns the
/// transcript and the harness (for its Events).
async fn first_reconcile(sq: &SecureQdrant) -> (Transcript, Harness) {
    let cluster_mode = sq.spec.replicas > 1;
    let cr = sq.to_json();
    let mut h = Harness::new(&Cluster::synced());
    let (result, transcript) = h
        .reconcile(sq, move |mut api| async move {
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            expect_every_child(&mut api, cluster_mode).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(result.expect("first reconcile"), Action::requeue(RESYNC));
    (transcript, h)
}

// ----- 1. first reconcile ----------------------------------------------------------------------

#[tokio::test]
async fn first_reconcile_creates_the_secret_then_applies_every_child_statefulset_last() {
    let sq = SecureQdrant::test().replicas(3);
    let cr = sq.to_json();
    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // Credentials first: a cache miss is confirmed with a GET, then created with POST.
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_apply(&path::service_account()).await;
            api.expect_apply(&path::config_map()).await;
            api.expect_apply(&path::headless_service()).await;
            api.expect_apply(&path::client_service()).await;
            api.expect_apply(&path::network_policy("default-deny"))
                .await;
            api.expect_apply(&path::network_policy("ingress")).await;
            api.expect_apply(&path::network_policy("egress")).await;
            api.expect_apply(&path::pdb()).await;
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(result.expect("reconcile"), Action::requeue(RESYNC));

    // The Secret is created, never patched or applied.
    let secret = t.body(Method::POST, &path::secrets());
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], format!("{NAME}-api-key"));
    assert!(
        !t.log
            .iter()
            .any(|l| l.path == path::api_key_secret() && l.method != Method::GET),
        "the API-key Secret was written other than by a create:\n{}",
        t.summary()
    );
    let created = keys_in(secret);
    assert_eq!(created.api_key.expose().len(), 43, "a 256-bit key");
    assert!(created.read_only.is_some(), "readOnlyApiKey defaults to on");

    // Every written child carries the labels and the controller owner reference.
    for l in t
        .log
        .iter()
        .filter(|l| l.is_write() && !l.path.ends_with("/status"))
    {
        let meta = &l.body["metadata"];
        assert_eq!(meta["namespace"], NS, "{}", l.describe());
        assert_eq!(meta["labels"][LABEL_NAME], "qdrant", "{}", l.describe());
        assert_eq!(meta["labels"][LABEL_INSTANCE], NAME, "{}", l.describe());
        assert_eq!(
            meta["labels"][LABEL_MANAGED_BY],
            "secure-qdrant-operator",
            "{}",
            l.describe()
        );
        assert!(
            meta["labels"][LABEL_COMPONENT].is_string(),
            "{}",
            l.describe()
        );
        let owners = meta["ownerReferences"]
            .as_array()
            .expect("owner references");
        assert_eq!(owners.len(), 1, "{}", l.describe());
        assert_eq!(owners[0]["uid"], CR_UID, "{}", l.describe());
        assert_eq!(owners[0]["kind"], "SecureQdrant", "{}", l.describe());
        assert_eq!(owners[0]["controller"], true, "{}", l.describe());
        if l.method == Method::PATCH {
            assert!(
                meta["annotations"][APPLIED_HASH].is_string(),
                "{} lacks the applied-hash annotation",
                l.describe()
            );
        }
    }

    // The StatefulSet runs the keys just created.
    let sts = t.body(Method::PATCH, &path::statefulset());
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(restart_hash_in(sts), restart_hash(&instance(&sq), &created));

    // Status: observed generation, phase and conditions.
    let patch = t.body(Method::PATCH, &path::status());
    let status = status_in(patch);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        patch["status"]["phase"], "Pending",
        "no StatefulSet status yet"
    );
    assert_eq!(
        condition(patch, "Reconciled"),
        ("True", "Applied", "every child object is applied")
    );
    let (ready, reason, _) = condition(patch, "Ready");
    assert_eq!((ready, reason), ("False", "RollingOut"));
    assert_eq!(
        patch["status"]["secrets"]["apiKey"],
        format!("{NAME}-api-key")
    );

    let events = h.published();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1], tls_disabled_event(), "TLS off is announced once");
    assert_eq!(
        (events[0].0, events[0].1.as_str()),
        (EventType::Normal, "CredentialsGenerated")
    );
}

#[tokio::test]
async fn first_reconcile_of_a_single_node_has_no_pdb_and_no_egress_policy() {
    let sq = SecureQdrant::test();
    let (t, _) = first_reconcile(&sq).await;
    let writes = t.writes();
    assert!(!writes.iter().any(|w| w.contains("poddisruptionbudgets")));
    assert!(!writes.iter().any(|w| w.ends_with("-egress")));
    assert_eq!(
        t.body(Method::PATCH, &path::statefulset())["spec"]["replicas"],
        1
    );
}

// ----- 2. nothing changed: nothing written -----------------------------------------------------

#[tokio::test]
async fn second_reconcile_of_an_unchanged_object_sends_no_request() {
    let sq = SecureQdrant::test().replicas(3);
    let (first, _) = first_reconcile(&sq).await;

    // The caches now hold exactly what the API server stored from the first reconcile.
    let mut cluster = Cluster::synced();
    let mut status = None;
    for l in first.log.iter().filter(|l| l.is_write()) {
        if l.path.ends_with("/status") {
            status = Some(status_in(&l.body));
        } else {
            cluster.put_json(&as_stored(&l.body));
        }
    }
    let sq = sq.with_status(status.expect("the first reconcile wrote status"));

    let mut h = Harness::new(&cluster);
    let (result, t) = h.reconcile(&sq, |api| async move { api }).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(RESYNC));
    assert!(t.log.is_empty(), "requests:\n{}", t.summary());
    assert_eq!(h.published(), vec![], "no Event when nothing happens");
}

// ----- 3. a deleted or edited child is put back ------------------------------------------------

/// A settled cluster of `sq` with its children built from `keys`.
fn settled_cluster(sq: &SecureQdrant, keys: &ApiKeys) -> (SecureQdrant, Cluster) {
    let cluster = Cluster::synced().with_children(&children_of(sq, keys));
    (settled(sq.clone(), &cluster), cluster)
}

/// The instance's ConfigMap as the operator applied it, with `config_yaml` instead (drift).
fn config_map_with(
    sq: &SecureQdrant,
    k: &ApiKeys,
    config_yaml: &str,
) -> k8s_openapi::api::core::v1::ConfigMap {
    let mut edited = applied(children_of(sq, k).config_map);
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("config.yaml".into(), config_yaml.into());
    edited
}

/// Puts the instance's ConfigMap, as someone else left it, in the cluster's cache; returns it as
/// a read returns it.
fn put_as_read(cluster: &mut Cluster, cm: k8s_openapi::api::core::v1::ConfigMap) -> Value {
    let as_read = serde_json::to_value(&cm).unwrap();
    cluster.put(cm);
    as_read
}

/// Reconciles `sq` with its ConfigMap flagged: one read (answered with `as_read`), then the
/// apply that restores it.
async fn read_and_restored(
    h: &mut Harness,
    sq: &SecureQdrant,
    as_read: Value,
) -> (Result<Action, Error>, Transcript) {
    h.reconcile(sq, |mut api| async move {
        api.expect_get(&path::config_map(), &as_read).await;
        api.expect_apply(&path::config_map()).await;
        api
    })
    .await
}

#[tokio::test]
async fn a_deleted_config_map_is_recreated_and_nothing_else_written() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    let children = children_of(&sq, &k);
    cluster.remove(applied(children.config_map.clone()));

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            api.expect_apply(&path::config_map()).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(
        t.body(Method::PATCH, &path::config_map()),
        &serde_json::to_value(stamp(children.config_map)).unwrap(),
        "the ConfigMap is recreated exactly as built"
    );
    assert_eq!(h.published(), vec![]);
}

#[tokio::test]
async fn a_deleted_network_policy_is_recreated_and_nothing_else_written() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    let ingress: NetworkPolicy = children_of(&sq, &k)
        .network_policies
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("vectors-ingress"))
        .expect("an ingress policy");
    cluster.remove(applied(ingress));

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            api.expect_apply(&path::network_policy("ingress")).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(t.writes().len(), 1);
}

#[tokio::test]
async fn a_child_edited_by_someone_else_is_applied_again() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &k);
    // Someone edits the config file; the applied-hash annotation stays as it was. The cache
    // shows their write in the managed fields (the drift mark).
    let edited = edited_by_someone_else(config_map_with(&sq, &k, "service: {enable_cors: true}\n"));
    let as_read = put_as_read(&mut cluster, edited);

    let mut h = Harness::new(&cluster);
    // One read of the flagged child, then the write that restores it.
    let (result, t) = read_and_restored(&mut h, &sq, as_read).await;
    result.expect("reconcile");
    let sent = t.body(Method::PATCH, &path::config_map());
    assert!(
        sent["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("enable_cors: false")
    );
    assert_eq!(t.writes().len(), 1, "{}", t.summary());
}

/// A repair made in the same second as the edit it repairs leaves the child flagged (managed
/// fields have whole seconds, and a tie counts as foreign): the version the repair wrote is
/// known clean, so the watch event of that write costs no read.
#[tokio::test]
async fn the_version_a_repair_wrote_is_not_read_again() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &k);
    let mut edited = config_map_with(&sq, &k, "service: {enable_cors: true}\n");
    edited.metadata.resource_version = Some("41".into());
    let edited = edited_by_someone_else(edited);
    let as_read = put_as_read(&mut cluster, edited);
    let mut h = Harness::new(&cluster);
    let (result, t) = read_and_restored(&mut h, &sq, as_read).await;
    result.expect("reconcile");
    // The watch shows the written version, still flagged (the tie).
    let written = t.body(Method::PATCH, &path::config_map()).clone();
    let written: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(as_stored(&written)).unwrap();
    cluster.put(edited_by_someone_else(written));
    let (result, t) = h.reconcile(&sq, |api| async move { api }).await;
    result.expect("reconcile");
    assert!(t.log.is_empty(), "{}", t.summary());
}

/// A child someone else wrote without changing what the operator sends (a label of theirs): it
/// is read once, not written, and not read again at the same version.
#[tokio::test]
async fn a_flagged_child_found_clean_is_read_once_and_not_written() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &k);
    let mut labelled = applied(children_of(&sq, &k).config_map);
    labelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "x".into());
    let labelled = edited_by_someone_else(labelled);
    let as_read = put_as_read(&mut cluster, labelled);

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            api.expect_get(&path::config_map(), &as_read).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(t.writes().len(), 0, "{}", t.summary());
    let (result, t) = h.reconcile(&sq, |api| async move { api }).await;
    result.expect("reconcile");
    assert!(t.log.is_empty(), "{}", t.summary());
}

/// What another party's ConfigMap `vectors-config` looks like when the operator reads it.
fn foreign_config_map() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "vectors-config", "namespace": "search", "uid": "someone-elses",
                     "resourceVersion": "99"},
        "data": {"theirs": "untouched"}
    })
}

/// The ConfigMap the cache showed as the instance's was deleted and recreated by someone else
/// just before the update: the update carries the checked resourceVersion, so it fails (409)
/// instead of landing in the new object; the object is read again, found foreign, and nothing
/// more is written to it.
#[tokio::test]
async fn an_update_racing_with_a_replacement_by_someone_else_writes_nothing_into_it() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &k);
    let mut edited = config_map_with(&sq, &k, "drift\n");
    // What the operator sends changed since (another applied hash): an update, from the cache.
    edited
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(APPLIED_HASH.into(), "older".into());
    cluster.put(edited);
    let cr = sq.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            let call = api.expect(Method::PATCH, &path::config_map()).await;
            assert!(
                call.request.body["metadata"]["resourceVersion"].is_string(),
                "an update is guarded by the resourceVersion whose owner was checked"
            );
            call.respond(
                http::StatusCode::CONFLICT,
                &api_verifier::status_failure("the object has been modified", 409, "Conflict"),
            );
            found_foreign(&mut api, &cr).await;
            api
        })
        .await;
    assert_refused_as_foreign(result, &t);
}

/// The same race for a repair of drift: the child was read, found edited, and replaced by
/// someone else before the write; the write carries the uid read (not its resourceVersion, which
/// a status write may move), so it fails (422: the uid is immutable); read again, found foreign,
/// nothing more is written.
#[tokio::test]
async fn a_repair_racing_with_a_replacement_by_someone_else_writes_nothing_into_it() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &k);
    let edited = edited_by_someone_else(config_map_with(&sq, &k, "drift\n"));
    let as_read = put_as_read(&mut cluster, edited);
    let cr = sq.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            api.expect_get(&path::config_map(), &as_read).await;
            let call = api.expect(Method::PATCH, &path::config_map()).await;
            assert!(
                call.request.body["metadata"]["uid"].is_string(),
                "a repair is guarded by the uid of the copy whose owner was checked"
            );
            call.respond(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                &api_verifier::status_failure(
                    "ConfigMap \"vectors-config\" is invalid: metadata.uid: Invalid value: \
                     \"u\": field is immutable",
                    422,
                    "Invalid",
                ),
            );
            found_foreign(&mut api, &cr).await;
            api
        })
        .await;
    assert_refused_as_foreign(result, &t);
}

/// After a failed write of the ConfigMap: read again, it is someone else's, and the failure is
/// reported (Reconciled=False, ChildConflict).
async fn found_foreign(api: &mut ApiServer, cr: &Value) {
    api.expect_get(&path::config_map(), &foreign_config_map())
        .await;
    let status = api.expect_status_patch(&path::status(), cr).await;
    assert_failed_condition(&status, "ChildConflict");
}

/// The reconcile failed on a ConfigMap owned by no one, after two writes (the failed one and the
/// status).
fn assert_refused_as_foreign(result: Result<Action, Error>, t: &Transcript) {
    let err = result.expect_err("a conflict");
    assert!(
        matches!(&err, Error::ChildConflict { kind: "ConfigMap", name, owner }
            if name == "vectors-config" && owner == "no owner"),
        "{err:?}"
    );
    assert_eq!(t.writes().len(), 2, "{}", t.summary());
}

/// A ConfigMap someone else creates between the operator's read (nothing there) and its create:
/// the create is an apply without force, so it fails on their fields (409), and the object is
/// read again and refused as foreign.
#[tokio::test]
async fn a_creation_racing_with_someone_elses_is_refused_not_taken_over() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &k);
    cluster.remove(applied(children_of(&sq, &k).config_map));
    let cr = sq.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            api.expect_get_missing(&path::config_map()).await;
            let call = api.expect(Method::PATCH, &path::config_map()).await;
            assert_eq!(
                call.request.query.get("force"),
                None,
                "a creation never forces"
            );
            call.respond(
                http::StatusCode::CONFLICT,
                &api_verifier::status_failure(
                    "Apply failed with 1 conflict: conflict with \"kubectl\": .data",
                    409,
                    "Conflict",
                ),
            );
            api.expect_get(&path::config_map(), &foreign_config_map())
                .await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert!(
        matches!(
            result,
            Err(Error::ChildConflict {
                kind: "ConfigMap",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(t.writes().len(), 2, "{}", t.summary());
}

// ----- 4. invalid spec -------------------------------------------------------------------------

#[tokio::test]
async fn an_invalid_spec_fails_in_status_and_an_event_and_applies_nothing() {
    let user_secret = "hunter2-typed-into-the-spec";
    let sq = SecureQdrant::test()
        .config(json!({"service": {"api_key": user_secret}}))
        .storage_size("ten");
    let cr = sq.to_json();
    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    assert_eq!(
        result.expect("an invalid spec is not an error"),
        Action::await_change()
    );

    let patch = t.body(Method::PATCH, &path::status()).clone();
    assert_eq!(patch["status"]["phase"], "Failed");
    let (status, reason, message) = condition(&patch, "Reconciled");
    assert_eq!((status, reason), ("False", "InvalidSpec"));
    assert!(message.contains("spec.config.service.api_key"), "{message}");
    assert!(message.contains("spec.storage.size"), "{message}");
    assert_eq!(condition(&patch, "Ready").1, "InvalidSpec");
    assert!(!patch.to_string().contains(user_secret), "{patch}");

    let events = h.published();
    assert_eq!(events.len(), 1, "{events:?}");
    let (type_, reason, note) = &events[0];
    assert_eq!(
        (*type_, reason.as_str()),
        (EventType::Warning, "InvalidSpec")
    );
    assert!(note.contains("spec.config.service.api_key"), "{note}");
    assert!(note.contains("spec.storage.size"), "{note}");
    assert!(!note.contains(user_secret), "{note}");

    // Reconciled again with that status in place: no write, and no second Event.
    let sq = sq.with_status(status_in(&patch));
    let (result, t) = h.reconcile(&sq, |api| async move { api }).await;
    result.expect("reconcile");
    assert!(t.log.is_empty(), "{}", t.summary());
    assert_eq!(h.published().len(), 1, "Events only on transitions");
}

/// A running instance whose spec a newer rule refuses (here: static content pointed at the TLS
/// mount, accepted by older versions) keeps running untouched: a status condition and an Event
/// name the key, and no child is written.
#[tokio::test]
async fn a_running_instance_whose_spec_is_now_refused_keeps_running_untouched() {
    refused_running_instance(
        |sq| {
            sq.config(json!({"service": {"static_content_dir": "/qdrant/tls", "enable_static_content": true}}))
        },
        "spec.config.service.static_content_dir",
    )
    .await;
    // The same for an admin policy: an image outside the allowed repositories.
    refused_running_instance(|sq| sq.image("qdrant/qdrant-evil:v1.19.0"), "spec.image").await;
}

async fn refused_running_instance(edit: impl Fn(SecureQdrant) -> SecureQdrant, field: &str) {
    let k = keys("k");
    let (running, cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    let mut sq = edit(running.clone());
    sq.metadata.generation = Some(2);
    let cr = sq.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("a refused spec is not an error");
    assert_eq!(t.writes().len(), 1, "only the status: {}", t.summary());
    let patch = t.body(Method::PATCH, &path::status()).clone();
    let (status, reason, message) = condition(&patch, "Reconciled");
    assert_eq!((status, reason), ("False", "InvalidSpec"));
    assert!(
        message.contains(field) && message.contains("not allowed"),
        "{message}"
    );
    let events = h.published();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "InvalidSpec");
}

/// Egress beyond the peers and DNS, and clients from every namespace, are allowed within the
/// policy and shown as True conditions; they go away with the opening.
#[test]
fn network_openings_show_as_warning_conditions() {
    let mut open = SecureQdrant::test().replicas(3);
    open.spec.network = serde_json::from_value(json!({
        "clients": [{"namespaceSelector": {}}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443}]}]
    }))
    .unwrap();
    let k = keys("k");
    let (sq, _) = settled_cluster(&open, &k);
    let status = sq.status.clone().unwrap();
    let find = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
    let egress = find("EgressBeyondPeers").expect("EgressBeyondPeers");
    assert_eq!(
        (egress.status.as_str(), egress.reason.as_str()),
        ("True", "OpenedBySpec")
    );
    assert!(
        egress.message.contains("1 egress rule"),
        "{}",
        egress.message
    );
    let ingress = find("IngressFromAllNamespaces").expect("IngressFromAllNamespaces");
    assert!(
        ingress.message.contains("spec.network.clients"),
        "{}",
        ingress.message
    );

    let mut closed = sq.clone();
    closed.spec.network = Default::default();
    let (closed, _) = settled_cluster(&closed, &k);
    let conditions = closed.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .all(|c| c.type_ != "EgressBeyondPeers" && c.type_ != "IngressFromAllNamespaces"),
        "{conditions:?}"
    );
}

// ----- 5. an existing Secret is reused ---------------------------------------------------------

#[tokio::test]
async fn an_existing_secret_in_the_cache_is_reused_unchanged() {
    let sq = SecureQdrant::test();
    let existing = keys("existing");
    let mut cluster = Cluster::synced();
    cluster.put(stored(
        children_of(&sq, &existing)
            .api_key_secret
            .expect("generated keys"),
    ));
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // No GET: the cache has it. No POST or PATCH: it is complete.
            expect_every_child(&mut api, false).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    let inst = instance(&sq);
    let hash = restart_hash_in(t.body(Method::PATCH, &path::statefulset()));
    assert_eq!(hash, restart_hash(&inst, &existing));
    assert_ne!(
        hash,
        restart_hash(&inst, &keys("other")),
        "the hash follows the keys"
    );
    assert!(!t.log.iter().any(|l| l.path.contains("/secrets")));
    assert_eq!(
        h.published(),
        vec![tls_disabled_event()],
        "no credentials Event"
    );
}

#[tokio::test]
async fn an_existing_secret_missing_from_the_cache_is_read_and_reused() {
    let sq = SecureQdrant::test().replicas(3);
    let existing = keys("existing");
    let secret = serde_json::to_value(stored(
        children_of(&sq, &existing)
            .api_key_secret
            .expect("generated keys"),
    ))
    .unwrap();
    let cr = sq.to_json();

    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            api.expect_get(&path::api_key_secret(), &secret).await;
            expect_every_child(&mut api, true).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(
        restart_hash_in(t.body(Method::PATCH, &path::statefulset())),
        restart_hash(&instance(&sq), &existing)
    );
    assert_eq!(
        h.published(),
        vec![tls_disabled_event()],
        "no credentials Event"
    );
}

#[tokio::test]
async fn an_incomplete_secret_gets_only_the_missing_key_and_keeps_the_other() {
    let sq = SecureQdrant::test();
    let existing = keys("existing");
    let mut secret = stored(
        children_of(&sq, &existing)
            .api_key_secret
            .expect("generated keys"),
    );
    secret
        .data
        .as_mut()
        .unwrap()
        .remove(api_keys::READ_ONLY_API_KEY);
    let mut cluster = Cluster::synced();
    cluster.put(secret);
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            let call = api.expect(Method::PATCH, &path::api_key_secret()).await;
            assert_eq!(
                call.request.content_type.as_deref(),
                Some(api_verifier::MERGE_PATCH)
            );
            let answer = call.request.body.clone();
            call.respond(http::StatusCode::OK, &answer);
            expect_every_child(&mut api, false).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");

    let patch = t.body(Method::PATCH, &path::api_key_secret());
    assert_eq!(
        patch["metadata"]["resourceVersion"],
        api_verifier::RESOURCE_VERSION,
        "a compare-and-swap on the version read"
    );
    let data = patch["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec![api_keys::READ_ONLY_API_KEY],
        "only the missing key is written"
    );
    let added = String::from_utf8(
        STANDARD
            .decode(data[api_keys::READ_ONLY_API_KEY].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let now = ApiKeys {
        api_key: existing.api_key.clone(),
        read_only: Some(SecretValue::new(added)),
        next: None,
        phase: Default::default(),
        salt: existing.salt.clone(),
    };
    assert_eq!(
        restart_hash_in(t.body(Method::PATCH, &path::statefulset())),
        restart_hash(&instance(&sq), &now)
    );

    let events = h.published();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1], tls_disabled_event());
    assert_eq!(
        (events[0].0, events[0].1.as_str()),
        (EventType::Warning, "CredentialsChanged")
    );
    assert!(
        events[0].2.contains(api_keys::READ_ONLY_API_KEY),
        "{events:?}"
    );
    assert_no_secret("the Event note", &events[0].2, &now);
}

#[tokio::test]
async fn an_upgrade_adds_the_fingerprint_salt_once_keeps_the_keys_and_keys_the_hashes() {
    // A Secret written by an operator that had no salt yet.
    let sq = SecureQdrant::test();
    let existing = keys("existing");
    let mut secret = stored(
        children_of(&sq, &existing)
            .api_key_secret
            .expect("generated keys"),
    );
    secret
        .data
        .as_mut()
        .unwrap()
        .remove(api_keys::FINGERPRINT_SALT);
    let mut cluster = Cluster::synced();
    cluster.put(secret);
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            let call = api.expect(Method::PATCH, &path::api_key_secret()).await;
            let answer = call.request.body.clone();
            call.respond(http::StatusCode::OK, &answer);
            expect_every_child(&mut api, false).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    let patch = t.body(Method::PATCH, &path::api_key_secret());
    assert_eq!(
        patch["metadata"]["resourceVersion"],
        api_verifier::RESOURCE_VERSION,
        "a compare-and-swap: a salt is never written over another"
    );
    let data = patch["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec![api_keys::FINGERPRINT_SALT],
        "the keys are kept"
    );
    let salt = String::from_utf8(
        STANDARD
            .decode(data[api_keys::FINGERPRINT_SALT].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(salt.len(), 43, "256 random bits");
    let now = ApiKeys {
        salt: SecretValue::new(salt.clone()),
        ..existing.clone()
    };
    let sts = t.body(Method::PATCH, &path::statefulset());
    assert_eq!(restart_hash_in(sts), restart_hash(&instance(&sq), &now));
    let text = sts.to_string();
    assert!(!text.contains(&salt), "the salt is not on the pod template");
    assert_no_secret("the StatefulSet", &text, &now);
    let events = h.published();
    assert_eq!(
        (events[0].0, events[0].1.as_str()),
        (EventType::Normal, "FingerprintSaltAdded"),
        "{events:?}"
    );
    assert!(!events[0].2.contains(&salt), "{events:?}");
}

// ----- 6. a concurrent create ------------------------------------------------------------------

#[tokio::test]
async fn a_secret_created_concurrently_is_read_and_its_keys_used() {
    let sq = SecureQdrant::test().replicas(3);
    let theirs = keys("theirs");
    let their_secret = serde_json::to_value(stored(
        children_of(&sq, &theirs)
            .api_key_secret
            .expect("generated keys"),
    ))
    .unwrap();
    let cr = sq.to_json();

    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create_conflict(&path::secrets()).await;
            api.expect_get(&path::api_key_secret(), &their_secret).await;
            expect_every_child(&mut api, true).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    let hash = restart_hash_in(t.body(Method::PATCH, &path::statefulset()));
    assert_eq!(hash, restart_hash(&instance(&sq), &theirs));
    let ours = keys_in(t.body(Method::POST, &path::secrets()));
    assert_ne!(
        hash,
        restart_hash(&instance(&sq), &ours),
        "our lost keys are dropped"
    );
    assert_eq!(
        h.published(),
        vec![tls_disabled_event()],
        "no keys were generated in the end"
    );
}

#[tokio::test]
async fn a_secret_race_lost_twice_fails_without_writing_anything_else() {
    let sq = SecureQdrant::test();
    let cr = sq.to_json();
    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            for _ in 0..2 {
                api.expect_get_missing(&path::api_key_secret()).await;
                api.expect_create_conflict(&path::secrets()).await;
            }
            // The failure is reported on the resource, and nothing else is written.
            let status = api.expect_status_patch(&path::status(), &cr).await;
            assert_failed_condition(&status, "CreateSecretFailed");
            api
        })
        .await;
    let err = result.expect_err("the race is reported");
    assert!(matches!(err, Error::SecretRace(_)), "{err:?}");
    assert_eq!(err.metric_label(), "create_secret");
    for l in t.log.iter().filter(|l| l.method == Method::POST) {
        let k = keys_in(&l.body);
        assert_no_secret("the error", &err.to_string(), &k);
        assert_no_secret("the error", &format!("{err:?}"), &k);
    }
}

// ----- 7. scale-down: refused unless acknowledged -----------------------------------------------

/// The SecureQdrant itself (where the acknowledgment is removed).
fn sq_path() -> String {
    format!("/apis/secureqdrant.dev/v1alpha1/namespaces/{NS}/secureqdrants/{NAME}")
}

/// `sq` with the scale-down acknowledgment set to `value`.
fn acknowledged(mut sq: SecureQdrant, value: &str) -> SecureQdrant {
    sq.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(PEERS_REMOVED_ANNOTATION.to_owned(), value.to_owned());
    sq
}

fn annotations_of(object: &Value) -> &Value {
    &object["metadata"]["annotations"]
}

/// The removal of the acknowledgment: a merge patch of nothing but that annotation, under the
/// operator's field manager, never guarded by a resourceVersion. Answered with `object` patched
/// as the API server would; returns that object.
async fn expect_acknowledgment_removed(api: &mut ApiServer, object: &Value) -> Value {
    let call = api.expect(Method::PATCH, &sq_path()).await;
    let r = &call.request;
    assert_eq!(
        r.content_type.as_deref(),
        Some(api_verifier::MERGE_PATCH),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.query.get("fieldManager").map(String::as_str),
        Some(api_verifier::FIELD_MANAGER),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.body,
        json!({"metadata": {"annotations": {PEERS_REMOVED_ANNOTATION: null}}}),
        "only the annotation is written"
    );
    let mut stored = as_stored(object);
    json_patch::merge(&mut stored, &r.body);
    call.respond(http::StatusCode::OK, &stored);
    stored
}

/// `cluster` after the StatefulSet write in `t` landed in the cache.
fn with_written_statefulset(cluster: &mut Cluster, t: &Transcript) {
    cluster.put_json(&as_stored(t.body(Method::PATCH, &path::statefulset())));
}

#[tokio::test]
async fn a_scale_down_without_acknowledgment_is_refused_and_names_the_command() {
    let k = keys("k");
    // Running with 3 replicas of an older image; the user asks for 2 replicas of the new one.
    let before = SecureQdrant::test().replicas(3).image(OLD_IMAGE);
    let (before, cluster) = settled_cluster(&before, &k);
    let sq = SecureQdrant::test()
        .replicas(2)
        .generation(2)
        .with_status(before.status.clone().unwrap());
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // Config, policies and PDB stay those of a 3-node cluster: only the image changes.
            // No write to the SecureQdrant: there is no acknowledgment to use up.
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("a refusal is not an error");

    let sts = t.body(Method::PATCH, &path::statefulset());
    assert_eq!(sts["spec"]["replicas"], 3, "the scale-down is not applied");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        SecureQdrant::test().spec.image,
        "the rest of the spec is"
    );
    let patch = t.body(Method::PATCH, &path::status());
    assert_eq!(patch["status"]["phase"], "Degraded");
    assert_eq!(patch["status"]["observedGeneration"], 2);
    let (status, reason, message) = condition(patch, "Reconciled");
    assert_eq!((status, reason), ("False", "ScaleDownRefused"));
    assert!(message.contains("from 3 to 2"), "{message}");
    assert!(message.contains("DELETE /cluster/peer/<id>"), "{message}");
    let command = format!("kubectl annotate sq {NAME} -n {NS} {PEERS_REMOVED_ANNOTATION}=2");
    assert!(message.contains(&command), "{message}");

    let events = h.published();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0, events[0].1.as_str()),
        (EventType::Warning, "ScaleDownRefused")
    );
    assert_eq!(
        events[0].2, message,
        "the Event says what the condition says"
    );
}

#[tokio::test]
async fn an_acknowledged_scale_down_is_applied_once_and_the_acknowledgment_removed() {
    let k = keys("k");
    let (before, mut cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    assert!(
        cluster.stores.pdbs.state().len() == 1,
        "a 3-node cluster has its PDB"
    );
    let sq = acknowledged(
        SecureQdrant::test()
            .replicas(2)
            .generation(2)
            .with_status(before.status.clone().unwrap()),
        "2",
    );
    let cr = sq.to_json();

    // 1. The StatefulSet is scaled to 2. Nothing else is written: 2 replicas are still a
    //    cluster (same config, policies and PDB). The acknowledgment stays until the cache
    //    shows the StatefulSet at 2: a reconcile on a cache without the write needs it.
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(
        t.body(Method::PATCH, &path::statefulset())["spec"]["replicas"],
        2
    );
    assert_eq!(
        t.writes(),
        vec![
            format!("PATCH {}", path::statefulset()),
            format!("PATCH {}", path::status()),
        ],
    );
    let status = t.body(Method::PATCH, &path::status());
    assert_eq!(condition(status, "Reconciled").0, "True", "{status}");
    let events = h.published();
    assert_eq!(events.len(), 1, "{events:?}");
    let (type_, reason, note) = &events[0];
    assert_eq!(
        (*type_, reason.as_str()),
        (EventType::Normal, "ScaleDownApplied")
    );
    assert!(note.contains("from 3 to 2"), "{note}");
    assert!(note.contains(&format!("storage-{NAME}-2")), "{note}");
    assert!(!note.contains(&format!("storage-{NAME}-1")), "{note}");
    let status = status_in(t.body(Method::PATCH, &path::status()));

    // 2. Once the StatefulSet runs 2 (as the cache shows): only the removal of the
    //    acknowledgment, no second Event.
    with_written_statefulset(&mut cluster, &t);
    let settled = sq.clone().with_status(status.clone());
    let settled_json = settled.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&settled, move |mut api| async move {
            expect_acknowledgment_removed(&mut api, &settled_json).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(t.writes().len(), 1, "{}", t.summary());
    assert_eq!(h.published(), vec![]);
    let stored: SecureQdrant = serde_json::from_value(
        t.log
            .iter()
            .find(|l| l.path == sq_path())
            .map(|l| {
                let mut o = as_stored(&settled.to_json());
                json_patch::merge(&mut o, &l.body);
                o
            })
            .expect("the SecureQdrant was patched"),
    )
    .unwrap();
    assert_eq!(
        stored
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PEERS_REMOVED_ANNOTATION)),
        None
    );

    // 3. Later: scaled up to 3 again (the PDB stays throughout)...
    let up = stored.clone().replicas(3).generation(3).with_status(status);
    let up_json = up.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&up, move |mut api| async move {
            api.expect_apply(&path::statefulset()).await;
            api.expect_status_patch(&path::status(), &up_json).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert_eq!(
        t.body(Method::PATCH, &path::statefulset())["spec"]["replicas"],
        3
    );
    with_written_statefulset(&mut cluster, &t);
    let status = status_in(t.body(Method::PATCH, &path::status()));

    // 4. ...and down to 2 once more, with nothing acknowledged since: refused, because the
    //    acknowledgment was used up by the first scale-down.
    let down = up.clone().replicas(2).generation(4).with_status(status);
    assert_eq!(
        annotations_of(&down.to_json()).get(PEERS_REMOVED_ANNOTATION),
        None
    );
    let down_json = down.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&down, move |mut api| async move {
            api.expect_status_patch(&path::status(), &down_json).await;
            api
        })
        .await;
    result.expect("a refusal is not an error");
    let (status, reason, message) = condition(t.body(Method::PATCH, &path::status()), "Reconciled");
    assert_eq!((status, reason), ("False", "ScaleDownRefused"));
    assert!(message.contains("from 3 to 2"), "{message}");
}

#[tokio::test]
async fn a_wrong_acknowledgment_changes_nothing_and_says_why() {
    let k = keys("k");
    let (before, cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    // (annotation, reason, what the message quotes)
    for (value, want_reason, quoted) in [
        ("3", "PeersRemovedMismatch", "is 3 but spec.replicas is 2"),
        ("1", "PeersRemovedMismatch", "is 1 but spec.replicas is 2"),
        (
            "two",
            "PeersRemovedInvalid",
            "is \"two\", not a replica count",
        ),
    ] {
        let sq = acknowledged(
            SecureQdrant::test()
                .replicas(2)
                .generation(2)
                .with_status(before.status.clone().unwrap()),
            value,
        );
        let cr = sq.to_json();
        let mut h = Harness::new(&cluster);
        let (result, t) = h
            .reconcile(&sq, move |mut api| async move {
                // No StatefulSet write (it keeps 3) and the annotation stays: only status.
                api.expect_status_patch(&path::status(), &cr).await;
                api
            })
            .await;
        result.expect("a refusal is not an error");
        assert_eq!(t.writes().len(), 1, "{value}: {}", t.summary());
        let patch = t.body(Method::PATCH, &path::status());
        assert_eq!(patch["status"]["phase"], "Degraded");
        let (status, reason, message) = condition(patch, "Reconciled");
        assert_eq!((status, reason), ("False", want_reason), "{value}");
        assert!(message.contains(quoted), "{message}");
        assert!(message.contains("keeps 3 replicas"), "{message}");
        let remove = format!("kubectl annotate sq {NAME} -n {NS} {PEERS_REMOVED_ANNOTATION}-");
        assert!(message.contains(&remove), "{message}");
        let events = h.published();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].0, events[0].1.as_str()),
            (EventType::Warning, want_reason)
        );
        assert_eq!(events[0].2, message);
    }
}

#[tokio::test]
async fn a_cluster_is_not_scaled_down_to_one_replica_even_acknowledged() {
    let k = keys("k");
    let (before, cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    for ack in [None, Some("1")] {
        let mut sq = SecureQdrant::test()
            .replicas(1)
            .generation(2)
            .with_status(before.status.clone().unwrap());
        if let Some(value) = ack {
            sq = acknowledged(sq, value);
        }
        let cr = sq.to_json();
        let mut h = Harness::new(&cluster);
        let (result, t) = h
            .reconcile(&sq, move |mut api| async move {
                // The cluster stays a 3-node cluster: StatefulSet, PDB, egress policy and
                // config untouched (no write, no delete), the annotation stays.
                api.expect_status_patch(&path::status(), &cr).await;
                api
            })
            .await;
        result.expect("a refusal is not an error");
        assert_eq!(t.writes().len(), 1, "{ack:?}: {}", t.summary());
        let (status, reason, message) =
            condition(t.body(Method::PATCH, &path::status()), "Reconciled");
        assert_eq!((status, reason), ("False", "ScaleDownRefused"), "{ack:?}");
        assert!(message.contains("from 3 to 1 replica refused"), "{message}");
        assert!(message.contains("cluster mode"), "{message}");
        assert_eq!(message.contains("even with"), ack.is_some(), "{message}");
        assert!(!message.contains("peers-removed=1"), "{message}");
        assert_eq!(h.published().len(), 1);
    }
}

// ----- 8. orphans ------------------------------------------------------------------------------

#[tokio::test]
async fn a_policy_no_longer_built_is_deleted_and_others_are_left_alone() {
    let k = keys("k");
    let before = SecureQdrant::test().with_metrics();
    let (before, mut cluster) = settled_cluster(&before, &k);
    assert!(
        cluster
            .stores
            .network_policies
            .state()
            .iter()
            .any(|p| p.name() == "vectors-metrics"),
        "the metrics policy exists before"
    );
    // A policy a user made for the instance: same labels, but not owned by the SecureQdrant.
    let mut users: NetworkPolicy = applied(
        children_of(&before, &k)
            .network_policies
            .into_iter()
            .next()
            .unwrap(),
    );
    users.metadata.name = Some("vectors-allow-backup".into());
    users.metadata.owner_references = None;
    cluster.put(users);

    let sq = SecureQdrant::test()
        .generation(2)
        .with_status(before.status.clone().unwrap());
    let cr = sq.to_json();
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // The config and the pods lose the metrics port...
            api.expect_apply(&path::config_map()).await;
            api.expect_apply(&path::statefulset()).await;
            // ...and the policy admitting scrapers goes.
            api.expect_delete(&path::network_policy("metrics")).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    assert!(
        !t.body(Method::PATCH, &path::config_map())["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("metrics_port")
    );
}

// ----- 9. secrets stay secret ------------------------------------------------------------------

#[tokio::test]
async fn generated_keys_appear_only_in_the_secret_create() {
    let sq = SecureQdrant::test().replicas(3);
    let (t, h) = first_reconcile(&sq).await;
    let created = keys_in(t.body(Method::POST, &path::secrets()));
    for l in t.log.iter().filter(|l| l.method != Method::POST) {
        assert_no_secret(&l.describe(), &l.body.to_string(), &created);
    }
    let status = t.body(Method::PATCH, &path::status());
    assert_no_secret("the status", &status.to_string(), &created);
    let events = h.published();
    assert!(!events.is_empty());
    for (_, reason, note) in &events {
        assert_no_secret(reason, note, &created);
    }
}

#[tokio::test]
async fn a_failed_secret_create_is_an_error_without_the_keys_and_nothing_else_is_written() {
    let sq = SecureQdrant::test();
    let cr = sq.to_json();
    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            secret_create_fails(&mut api).await;
            let status = api.expect_status_patch(&path::status(), &cr).await;
            assert_failed_condition(&status, "CreateSecretFailed");
            api
        })
        .await;
    let err = result.expect_err("the failure is reported");
    assert!(matches!(err, Error::CreateSecret { .. }), "{err:?}");
    assert!(err.to_string().contains("vectors-api-key"), "{err}");
    let sent = keys_in(t.body(Method::POST, &path::secrets()));
    assert_no_secret("the error", &err.to_string(), &sent);
    assert_no_secret("the error", &format!("{err:?}"), &sent);
    assert_no_secret(
        "the status",
        &t.body(Method::PATCH, &path::status()).to_string(),
        &sent,
    );
    let events = h.published();
    assert_eq!(events.len(), 1, "one Warning Event for the failure");
    assert_no_secret("the Event", &format!("{events:?}"), &sent);
}

/// A synced cluster holding only the instance's API-key Secret (the credentials step passes).
fn synced_with_api_key_secret(sq: &SecureQdrant) -> Cluster {
    let mut cluster = Cluster::synced();
    cluster.put(stored(
        children_of(sq, &keys("k"))
            .api_key_secret
            .expect("generated keys"),
    ));
    cluster
}

/// The API-key Secret is missing and creating it fails (etcd times out: a 500).
async fn secret_create_fails(api: &mut ApiServer) {
    api.expect_get_missing(&path::api_key_secret()).await;
    let call = api.expect_post(&path::secrets()).await;
    call.respond(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        &api_verifier::status_failure("etcdserver: request timed out", 500, "InternalError"),
    );
}

/// The ServiceAccount is applied, then the missing ConfigMap's apply is refused (422 Invalid).
async fn config_map_apply_refused(api: &mut ApiServer) {
    api.expect_apply(&path::service_account()).await;
    api.expect_get_missing(&path::config_map()).await;
    let call = api.expect(Method::PATCH, &path::config_map()).await;
    call.respond(
        http::StatusCode::UNPROCESSABLE_ENTITY,
        &api_verifier::status_failure("ConfigMap \"vectors-config\" is invalid", 422, "Invalid"),
    );
}

/// The status patch of a failed reconcile: Reconciled=False with `reason`, the rest untouched.
fn assert_failed_condition(status: &serde_json::Value, reason: &str) {
    let conditions = status["status"]["conditions"]
        .as_array()
        .expect("conditions");
    let reconciled = conditions
        .iter()
        .find(|c| c["type"] == "Reconciled")
        .expect("a Reconciled condition");
    assert_eq!(reconciled["status"], "False", "{status}");
    assert_eq!(reconciled["reason"], reason, "{status}");
    assert!(
        reconciled["message"]
            .as_str()
            .unwrap()
            .ends_with("retrying")
    );
}

#[tokio::test]
async fn a_deleted_secret_is_recreated_pods_roll_and_an_event_says_so() {
    let old = keys("old");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test(), &old);
    cluster.remove(stored(
        children_of(&sq, &old)
            .api_key_secret
            .expect("generated keys"),
    ));

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            api.expect_get_missing(&path::api_key_secret()).await;
            api.expect_create(&path::secrets()).await;
            api.expect_apply(&path::statefulset()).await;
            api
        })
        .await;
    result.expect("reconcile");
    let new = keys_in(t.body(Method::POST, &path::secrets()));
    assert_ne!(new, old);
    assert_eq!(
        restart_hash_in(t.body(Method::PATCH, &path::statefulset())),
        restart_hash(&instance(&sq), &new)
    );
    let events = h.published();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0, events[0].1.as_str()),
        (EventType::Warning, "CredentialsChanged")
    );
    assert_no_secret("the Event note", &events[0].2, &new);
    assert_no_secret("the Event note", &events[0].2, &old);
}

// ----- status follows the StatefulSet ----------------------------------------------------------

/// The instance's StatefulSet as applied, its three pods created at the one current revision
/// and `ready` of them ready.
fn rolled_out(sq: &SecureQdrant, k: &ApiKeys, ready: i32) -> StatefulSet {
    let mut sts: StatefulSet = applied(children_of(sq, k).statefulset);
    sts.status = Some(StatefulSetStatus {
        observed_generation: Some(1),
        replicas: 3,
        ready_replicas: Some(ready),
        updated_replicas: Some(3),
        current_revision: Some("vectors-5d4f".into()),
        update_revision: Some("vectors-5d4f".into()),
        ..StatefulSetStatus::default()
    });
    sts
}

#[tokio::test]
async fn status_turns_ready_when_the_statefulset_has_rolled_out() {
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    cluster.put(rolled_out(&sq, &k, 3));
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // Ready peers: the formed cluster is recorded (see the test below).
            api.expect_apply(&path::config_map()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    let patch = t.body(Method::PATCH, &path::status());
    assert_eq!(patch["status"]["phase"], "Ready");
    assert_eq!(patch["status"]["readyReplicas"], 3);
    assert_eq!(
        condition(patch, "Ready"),
        ("True", "AllReplicasReady", "3/3 replicas ready")
    );
}

/// Every pod created at the current revision but none ready: a new instance whose pods are still
/// starting is Progressing, not Degraded (the real StatefulSet controller reports a fresh
/// StatefulSet as rolled out at once: its current and update revisions are the first one); an
/// instance that was Ready and lost its pods is Degraded.
#[tokio::test]
async fn pods_not_ready_yet_are_progressing_and_pods_no_longer_ready_are_degraded() {
    let k = keys("k");
    for (previous, want) in [(None, "Progressing"), (Some(Phase::Ready), "Degraded")] {
        let (mut sq, mut cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
        if let Some(phase) = previous {
            sq.status = Some(SecureQdrantStatus {
                phase: Some(phase),
                ..SecureQdrantStatus::default()
            });
        }
        cluster.put(rolled_out(&sq, &k, 0));
        let cr = sq.to_json();
        let mut h = Harness::new(&cluster);
        let (result, t) = h
            .reconcile(&sq, move |mut api| async move {
                api.expect_status_patch(&path::status(), &cr).await;
                api
            })
            .await;
        result.expect("reconcile");
        let patch = t.body(Method::PATCH, &path::status());
        assert_eq!(
            patch["status"]["phase"], want,
            "previous phase {previous:?}"
        );
        assert_eq!(
            condition(patch, "Ready"),
            ("False", "ReplicasNotReady", "0/3 replicas ready")
        );
    }
}

#[tokio::test]
async fn the_formed_cluster_is_recorded_in_the_config_map_and_status_without_a_roll() {
    // Two ready peers: the cluster has formed. Before this, every reconcile wrote nothing.
    let k = keys("k");
    let (sq, mut cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    let status = sq.status.clone().unwrap();
    assert!(
        status.clustered,
        "asked for 3 replicas: clustered from the start"
    );
    assert!(!status.cluster_formed);
    cluster.put(rolled_out(&sq, &k, 2));
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // The ConfigMap gains the key; the StatefulSet (its pod template) is not written.
            api.expect_apply(&path::config_map()).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("reconcile");
    let config_map = t.body(Method::PATCH, &path::config_map());
    assert_eq!(config_map["data"]["cluster-formed"], "true");
    let patch = t.body(Method::PATCH, &path::status());
    assert_eq!(patch["status"]["clusterFormed"], true);
    assert_eq!(patch["status"]["clustered"], true);
}

#[tokio::test]
async fn a_tls_switch_on_a_cluster_is_refused_and_applies_nothing() {
    let k = keys("k");
    // A 3-node cluster runs without TLS; the user turns TLS on.
    let (before, cluster) = settled_cluster(&SecureQdrant::test().replicas(3), &k);
    let mut sq = SecureQdrant::test()
        .replicas(3)
        .generation(2)
        .with_status(before.status.clone().unwrap());
    sq.spec.tls.enabled = true;
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            // No Secret, no certificate, no child: only the status.
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("a refusal is not an error");
    let patch = t.body(Method::PATCH, &path::status());
    assert_eq!(patch["status"]["phase"], "Degraded");
    assert_eq!(patch["status"]["clustered"], true);
    let (status, reason, message) = condition(patch, "Reconciled");
    assert_eq!((status, reason), ("False", "TLSChangeRefused"));
    assert!(
        message.contains("spec.tls.enabled cannot change from false to true")
            && message.contains("create a new SecureQdrant"),
        "{message}"
    );
    let events = h.published();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0, events[0].1.as_str(), events[0].2.as_str()),
        (EventType::Warning, "TLSChangeRefused", message)
    );
}

#[tokio::test]
async fn a_tls_switch_after_three_to_one_is_refused_by_the_recorded_status() {
    let k = keys("k");
    // Once 3 replicas (status.clustered), now a single node: the StatefulSet alone would not
    // tell, the status does.
    let (single, cluster) = settled_cluster(&SecureQdrant::test(), &k);
    let mut status = single.status.clone().unwrap();
    assert!(!status.clustered);
    status.clustered = true;
    let mut sq = SecureQdrant::test().generation(2).with_status(status);
    sq.spec.tls.enabled = true;
    let cr = sq.to_json();

    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, move |mut api| async move {
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect("a refusal is not an error");
    let (_, reason, _) = condition(t.body(Method::PATCH, &path::status()), "Reconciled");
    assert_eq!(reason, "TLSChangeRefused");
}

// ----- failures and backoff --------------------------------------------------------------------

#[tokio::test]
async fn failures_back_off_per_object_and_a_success_resets_them() {
    let (sq, cluster) = settled_cluster(&SecureQdrant::test(), &keys("k"));
    let now = Arc::new(std::sync::Mutex::new(Timestamp::UNIX_EPOCH));
    let reader = now.clone();
    let mut h = Harness::with_clock(&cluster, Arc::new(move || *reader.lock().unwrap()));
    let sq = Arc::new(sq);
    let ctx = h.ctx.clone();
    let fail =
        |sq: &Arc<SecureQdrant>| error_policy(sq.clone(), &Error::CacheNotReady, ctx.clone());
    let advance = |secs: i64| {
        let mut t = now.lock().unwrap();
        *t = t.checked_add(SignedDuration::from_secs(secs)).unwrap();
    };

    assert_eq!(fail(&sq), Action::requeue(Duration::from_secs(5)));
    // Failures while the retry waits (reconciles started by watch events) keep its time.
    advance(2);
    assert_eq!(fail(&sq), Action::requeue(Duration::from_secs(3)));
    // Each failed retry doubles the wait.
    advance(3);
    assert_eq!(fail(&sq), Action::requeue(Duration::from_secs(10)));
    advance(10);
    assert_eq!(fail(&sq), Action::requeue(Duration::from_secs(20)));
    let mut other = (*sq).clone();
    other.metadata.name = Some("other".into());
    other.metadata.uid = Some("uid-of-other".into());
    assert_eq!(
        fail(&Arc::new(other)),
        Action::requeue(Duration::from_secs(5)),
        "counted per object"
    );
    assert_eq!(backoff(7), Duration::from_secs(300), "capped at 5 min");

    let (result, _) = h.reconcile(&sq, |api| async move { api }).await;
    result.expect("reconcile");
    assert_eq!(
        error_policy(sq.clone(), &Error::CacheNotReady, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5)),
        "a success resets the count"
    );
}

#[tokio::test]
async fn a_failed_apply_stops_before_the_statefulset_and_status() {
    let sq = SecureQdrant::test();
    let cr = sq.to_json();
    let cluster = synced_with_api_key_secret(&sq);
    let mut h = Harness::new(&cluster);
    let (result, t) = h
        .reconcile(&sq, |mut api| async move {
            config_map_apply_refused(&mut api).await;
            // No StatefulSet: only the failure, reported on the resource.
            let status = api.expect_status_patch(&path::status(), &cr).await;
            assert_failed_condition(&status, "ApplyFailed");
            api
        })
        .await;
    let err = result.expect_err("the failure is reported");
    assert!(
        matches!(
            err,
            Error::Apply {
                kind: "ConfigMap",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.metric_label(), "apply");
    assert_eq!(t.writes().len(), 3, "{}", t.summary());
}

/// The Warning Event of a failure names the step that failed: its action is the step, its note
/// starts with it (the metric's `step` label is the same name).
#[tokio::test]
async fn a_failure_event_names_the_step_that_failed() {
    // The credentials step: the API-key Secret cannot be created.
    let sq = SecureQdrant::test();
    let cr = sq.to_json();
    let mut h = Harness::new(&Cluster::synced());
    let (result, _) = h
        .reconcile(&sq, |mut api| async move {
            secret_create_fails(&mut api).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect_err("the failure is reported");
    let (type_, reason, action, note) = first_event(&h);
    assert_eq!(
        (type_, reason.as_str(), action.as_str()),
        (EventType::Warning, "CreateSecretFailed", "Credentials")
    );
    assert!(
        note.starts_with("creating Secret vectors-api-key"),
        "{note}"
    );

    // The apply step: a ConfigMap is refused.
    let cluster = synced_with_api_key_secret(&sq);
    let cr = sq.to_json();
    let mut h = Harness::new(&cluster);
    let (result, _) = h
        .reconcile(&sq, |mut api| async move {
            config_map_apply_refused(&mut api).await;
            api.expect_status_patch(&path::status(), &cr).await;
            api
        })
        .await;
    result.expect_err("the failure is reported");
    let (_, reason, action, note) = first_event(&h);
    assert_eq!((reason.as_str(), action.as_str()), ("ApplyFailed", "Apply"));
    assert!(
        note.starts_with("applying ConfigMap vectors-config"),
        "{note}"
    );
}

/// (type, reason, action, note) of the first Event published.
fn first_event(h: &Harness) -> (EventType, String, String, String) {
    let log = h.events.lock().unwrap();
    let e = &log.first().expect("an Event").1;
    (
        e.type_,
        e.reason.clone(),
        e.action.clone(),
        e.note.clone().unwrap_or_default(),
    )
}

#[tokio::test(start_paused = true)]
async fn caches_that_never_sync_fail_the_reconcile_without_a_request() {
    // The watches are alive (the writers are held) but never list: the reconcile waits for them
    // (30 s, in paused time), then gives up without reading or writing anything.
    let cluster = Cluster::unsynced();
    let mut h = Harness::new(&cluster);
    let start = tokio::time::Instant::now();
    let (result, t) = h
        .reconcile(&SecureQdrant::test(), |api| async move { api })
        .await;
    assert!(matches!(result, Err(Error::CacheNotReady)), "{result:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert!(t.log.is_empty());
    drop(cluster);
}

#[tokio::test]
async fn an_object_being_deleted_is_left_to_the_garbage_collector() {
    let mut h = Harness::new(&Cluster::synced());
    let (result, t) = h
        .reconcile(&SecureQdrant::test().deleting(), |api| async move { api })
        .await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert!(t.log.is_empty());
}
