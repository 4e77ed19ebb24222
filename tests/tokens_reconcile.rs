//! QdrantAccessToken reconciles (issue 5), against the in-memory API server of
//! `tests/fake-apiserver`.
//!
//! Part 1 runs `reconcile::token::reconcile` in-process with a [`Context`] whose clock the test
//! moves: a kube `Client` built from the fake server's kubeconfig, the Context's caches and the
//! SecureQdrant cache filled by reflectors on that same client (as the controller does), the
//! SecureQdrant's own material (API-key, CA and TLS Secrets) written by the real SecureQdrant
//! reconcile, and Events kept in memory. Writes are counted with the server's request counters.
//!
//! Part 2 runs the real binary (`secure-qdrant-operator run`, debug logs) against the server,
//! drives tokens through issue, key rotation, refusals and API failures, then scans the operator's
//! log, every Event, every status and every error message for the API keys, the tokens and their
//! signatures. A control plants such values and proves the scan finds them.

#[path = "support/in_process.rs"]
mod in_process;

use in_process::{cached_versions, client_for, managed_stores, reflect, until, versions};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fake_apiserver::{FakeApiServer, Faults};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use secure_qdrant_operator::error::Result as ReconcileResult;
use secure_qdrant_operator::events::{EventLog, Events};
use secure_qdrant_operator::reconcile::{self, Context, RESYNC, token};
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::{
    CaMaterial, CaSubject, Certificate, LeafMaterial, issue_ca, issue_client, issue_leaf,
    serving_dns_names,
};
use secure_qdrant_operator::tokens::KEY_FINGERPRINT_ANNOTATION;

const NS: &str = "search";
const SQ: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const QAT_KIND: &str = "QdrantAccessToken";
const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");

// =============================================================================================
// Part 1: token::reconcile in-process, with an injected clock
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_token_waits_for_the_instance_cache_and_keeps_its_secret() {
    use kube::runtime::watcher::Event;
    let env = Env::start().await;
    env.instance(json!({})).await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let before = env
        .secret("frontend-qdrant-token")
        .expect("the token Secret");

    // A restarted operator whose SecureQdrant cache has not listed yet: were the token
    // reconciled now, its instance would look missing and its Secret would be deleted.
    env.settle().await;
    let (instances, mut writer) = kube::runtime::reflector::store::<SecureQdrant>();
    let qat = Arc::new(env.token("frontend"));
    let reconcile = tokio::spawn(token::reconcile(qat, env.ctx.clone(), instances));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !reconcile.is_finished(),
        "the reconcile did not wait for the cache"
    );
    assert_eq!(
        env.secret("frontend-qdrant-token").map(|s| s.metadata.uid),
        Some(before.metadata.uid.clone()),
        "the Secret was touched while the cache was empty"
    );
    let sq: SecureQdrant = serde_json::from_value(
        env.server
            .get(SQ_API, "SecureQdrant", NS, SQ)
            .expect("the instance"),
    )
    .expect("a SecureQdrant");
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitApply(sq));
    writer.apply_watcher_event(&Event::InitDone);
    reconcile
        .await
        .expect("the reconcile task")
        .expect("reconciled once the cache is filled");
    let after = env
        .secret("frontend-qdrant-token")
        .expect("the token Secret is kept");
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(after.data, before.data, "the same token");
    let ready = ready_condition(&env.token("frontend"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "TokenIssued")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_secret_named_like_another_instances_credentials_never_receives_them() {
    let env = Env::start().await;
    env.instance(json!({})).await;
    let api: Api<SecureQdrant> = Api::namespaced(env.client.clone(), NS);
    // Each Secret an instance writes credentials into, taken first by a token. (Such names are
    // refused for tokens now; a token created before that rule may still hold one.)
    for (instance, suffix) in [("alpha", "api-key"), ("beta", "ca"), ("gamma", "tls")] {
        let taken = format!("{instance}-{suffix}");
        let qat = env
            .create_token(
                &format!("squat-{suffix}"),
                json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
            )
            .await;
        env.server
            .insert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": taken, "namespace": NS,
                             "labels": {LABEL_MANAGED_BY: MANAGER},
                             "ownerReferences": [{
                                 "apiVersion": SQ_API, "kind": QAT_KIND,
                                 "name": qat.metadata.name, "uid": qat.metadata.uid,
                                 "controller": true}]},
                "stringData": {"token": "a token", "url": "https://vectors.search.svc:6333"}
            }))
            .expect("the token's Secret");
        let before = env.secret(&taken).expect("the token's Secret");

        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": instance, "namespace": NS}, "spec": {}
        }))
        .unwrap();
        api.create(&PostParams::default(), &sq).await.unwrap();
        env.settle().await;
        let sq = api.get(instance).await.unwrap();
        let error = reconcile::reconcile(Arc::new(sq), env.ctx.clone())
            .await
            .expect_err("the instance refuses to write into the token's Secret");
        assert!(
            matches!(
                error,
                secure_qdrant_operator::error::Error::ChildConflict { .. }
            ),
            "{error}"
        );
        let after = env.secret(&taken).expect("the token's Secret");
        assert_eq!(after, before, "{taken}: written into");
        let status = api.get(instance).await.unwrap().status.expect("a status");
        let reconciled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciled")
            .expect("Reconciled");
        assert_eq!(
            (reconciled.status.as_str(), reconciled.reason.as_str()),
            ("False", "ChildConflict")
        );
        assert!(
            reconciled.message.contains(&format!(
                "Secret {taken} exists and is not controlled by this object (current owner: \
                 QdrantAccessToken/squat-{suffix}"
            )),
            "{}",
            reconciled.message
        );
        assert!(
            env.server
                .get("apps/v1", "StatefulSet", NS, instance)
                .is_none(),
            "{instance}: half-applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reconcile_writes_secret_and_status_then_nothing_until_renewal_time() {
    let env = Env::start().await;
    env.instance(json!({})).await; // TLS on (the default)
    let key = env.api_key();
    let qat = env
        .create_token(
            "frontend",
            json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"},
                   "lifetime": "10m", "renewBefore": "4m"}),
        )
        .await;
    let t0 = env.now();

    // First reconcile: the Secret, the status, an Event, and a requeue for the renewal time.
    let action = env.reconcile("frontend").await.expect("reconciled");
    let secret = env
        .secret("frontend-qdrant-token")
        .expect("the token Secret is written");
    assert_eq!(
        data_keys(&secret),
        set(&["ca.crt", "grpc-url", "token", "url"]),
        "token Secret keys"
    );
    assert_eq!(
        text(&secret, "url").as_deref(),
        Some("https://vectors.search.svc:6333")
    );
    assert_eq!(
        text(&secret, "grpc-url").as_deref(),
        Some("https://vectors.search.svc:6334")
    );
    let tls_ca = env
        .secret("vectors-tls")
        .and_then(|s| text(&s, "ca.crt"))
        .expect("the instance's trust bundle");
    assert!(tls_ca.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        text(&secret, "ca.crt"),
        Some(tls_ca),
        "ca.crt is the instance's trust bundle"
    );
    let owner = controller_of(&secret).expect("a controller owner reference");
    assert_eq!(owner.kind, QAT_KIND);
    assert_eq!(Some(&owner.uid), qat.metadata.uid.as_ref());
    assert_eq!(
        secret.labels().get(LABEL_MANAGED_BY).map(String::as_str),
        Some(MANAGER)
    );

    let token = text(&secret, "token").expect("a token");
    let claims = qdrant_claims(&token, &key).expect("the token verifies under the API key");
    let exp = t0 + SignedDuration::from_mins(10);
    assert_eq!(
        claims,
        json!({"exp": exp.as_second(), "access": "r", "subject": "search/frontend"})
    );

    let status = env.token_status("frontend");
    assert_eq!(status.secret_name.as_deref(), Some("frontend-qdrant-token"));
    assert_eq!(status.expires_at.as_ref().map(|t| t.0), Some(exp));
    let renewal = status.renewal_time.as_ref().expect("renewalTime").0;
    // exp - renewBefore, pulled earlier by a per-token jitter below a tenth of renewBefore.
    let latest = exp - SignedDuration::from_mins(4);
    assert!(
        renewal <= latest && renewal > latest - SignedDuration::from_secs(24),
        "renewalTime {renewal}, expected just before {latest}"
    );
    assert_eq!(status.observed_generation, qat.metadata.generation);
    let ready = ready_condition(&env.token("frontend"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "TokenIssued")
    );
    assert_eq!(ready.last_transition_time.0, t0);
    assert_eq!(action, Action::requeue(until(t0, renewal)));
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Normal, "TokenIssued".to_owned())]
    );

    // A minute later, and one second before the renewal time: nothing is written (no Secret,
    // no status, no Event), and the requeue still points at the renewal time.
    for now in [
        t0 + SignedDuration::from_mins(1),
        renewal - SignedDuration::from_secs(1),
    ] {
        env.set_now(now);
        env.reset();
        let action = env.reconcile("frontend").await.expect("reconciled");
        let counters = env.server.counters();
        assert_eq!(
            counters.writes(),
            0,
            "wrote before the renewal time: {:?}",
            counters.requests
        );
        assert_eq!(action, Action::requeue(until(now, renewal)));
        assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());
        assert_eq!(env.token_value("frontend-qdrant-token"), token);
    }

    // At the renewal time: a new token, a new expiry, one Secret write and one status write.
    env.set_now(renewal);
    env.reset();
    let action = env.reconcile("frontend").await.expect("reconciled");
    let counters = env.server.counters();
    assert_eq!(
        counters.get("patch", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    assert_eq!(
        counters.get("patch", "qdrantaccesstokens.secureqdrant.dev/status"),
        1,
        "{:?}",
        counters.requests
    );
    assert_eq!(counters.writes(), 2, "{:?}", counters.requests);
    let renewed = env.token_value("frontend-qdrant-token");
    assert_ne!(renewed, token, "no new token at the renewal time");
    let new_exp = renewal + SignedDuration::from_mins(10);
    assert_eq!(
        qdrant_claims(&renewed, &key).expect("the new token verifies")["exp"],
        json!(new_exp.as_second())
    );
    let status = env.token_status("frontend");
    assert_eq!(status.expires_at.as_ref().map(|t| t.0), Some(new_exp));
    let new_renewal = status.renewal_time.as_ref().expect("renewalTime").0;
    assert_eq!(
        new_exp.duration_since(new_renewal),
        exp.duration_since(renewal),
        "same renewBefore and jitter for the same token"
    );
    assert_eq!(action, Action::requeue(until(renewal, new_renewal)));
    let notes = env.event_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("renewal time"), "{notes:?}");
    // Still Ready, and the condition did not transition.
    assert_eq!(
        ready_condition(&env.token("frontend"))
            .last_transition_time
            .0,
        t0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_token_is_looked_at_again_within_the_resync_period() {
    let env = Env::start().await;
    env.instance(json!({})).await;
    env.create_token(
        "daily",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    let t0 = env.now();
    let action = env.reconcile("daily").await.expect("reconciled");
    let status = env.token_status("daily");
    // Default lifetime 24h, renewBefore a third of it.
    let exp = t0 + SignedDuration::from_hours(24);
    assert_eq!(status.expires_at.as_ref().map(|t| t.0), Some(exp));
    let renewal = status.renewal_time.as_ref().expect("renewalTime").0;
    let latest = exp - SignedDuration::from_hours(8);
    assert!(
        renewal <= latest && renewal > latest - SignedDuration::from_mins(1),
        "{renewal}"
    );
    // 16 hours away: the drift safety net (RESYNC) comes first.
    assert_eq!(action, Action::requeue(RESYNC));

    // Five minutes before the renewal time the requeue is exactly the wait.
    let now = renewal - SignedDuration::from_mins(5);
    env.set_now(now);
    env.reset();
    let action = env.reconcile("daily").await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(env.server.counters().writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_api_key_re_mints_a_token_that_verifies_only_under_the_new_key() {
    let env = Env::start().await;
    env.instance(json!({})).await;
    let old_key = env.api_key();
    env.create_token(
        "reader",
        json!({"qdrantRef": {"name": SQ}, "access": {"collections": [{"collection": "docs", "access": "r"}]}}),
    )
    .await;
    env.reconcile("reader").await.expect("reconciled");
    let old_token = env.token_value("reader-qdrant-token");
    let old_fingerprint = env
        .secret("reader-qdrant-token")
        .and_then(|s| s.annotations().get(KEY_FINGERPRINT_ANNOTATION).cloned())
        .expect("key fingerprint annotation");

    // The API key is replaced (a user rotated it), long before the token's renewal time.
    let new_key = "rotated-key-0123456789abcdef0123456789abcdef";
    env.replace_api_key(new_key).await;
    env.set_now(env.now() + SignedDuration::from_mins(30));
    env.reset();
    env.reconcile("reader").await.expect("reconciled");
    let counters = env.server.counters();
    assert_eq!(
        counters.get("patch", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    let new_token = env.token_value("reader-qdrant-token");
    assert_ne!(new_token, old_token, "the token was not re-minted");

    let claims = qdrant_claims(&new_token, new_key).expect("verifies under the new key");
    assert_eq!(
        claims["access"],
        json!([{"collection": "docs", "access": "r"}])
    );
    assert_eq!(
        claims["exp"],
        json!((env.now() + SignedDuration::from_hours(24)).as_second())
    );
    assert_eq!(
        qdrant_claims(&new_token, &old_key),
        Err(ErrorKind::InvalidSignature),
        "the new token must not verify under the old key"
    );
    assert_eq!(
        qdrant_claims(&old_token, new_key),
        Err(ErrorKind::InvalidSignature),
        "the old token must not verify under the new key"
    );
    let fingerprint = env
        .secret("reader-qdrant-token")
        .and_then(|s| s.annotations().get(KEY_FINGERPRINT_ANNOTATION).cloned());
    assert_ne!(fingerprint.as_ref(), Some(&old_fingerprint));
    let notes = env.event_notes();
    assert!(
        notes.len() == 1 && notes[0].contains("API key changed"),
        "{notes:?}"
    );

    // And then it is stable again: the next reconcile writes nothing.
    env.reset();
    env.reconcile("reader").await.expect("reconciled");
    assert_eq!(env.server.counters().writes(), 0);
    assert_eq!(env.token_value("reader-qdrant-token"), new_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manage_tokens_need_allow_manage_tokens_and_lose_their_secret_when_it_is_turned_off() {
    let env = Env::start().await;
    env.instance(json!({})).await; // allowManageTokens defaults to false
    env.create_token(
        "admin",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "m"}}),
    )
    .await;

    env.reset();
    let action = env.reconcile("admin").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("admin"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(ready.message.contains("allowManageTokens"), "{ready:?}");
    assert!(ready.message.contains("spec.access.global"), "{ready:?}");
    assert!(
        env.server
            .get("v1", "Secret", NS, "admin-qdrant-token")
            .is_none()
    );
    assert_eq!(secret_writes(&env.server), 0);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "InvalidSpec".to_owned())]
    );
    // Refused again: no second Event, no status write.
    env.reset();
    env.reconcile("admin").await.expect("reconciled");
    assert_eq!(env.server.counters().writes(), 0);
    assert!(env.event_reasons().is_empty());

    // Allowed: a manage token is issued.
    env.patch_instance(json!({"spec": {"auth": {"allowManageTokens": true}}}))
        .await;
    env.reconcile("admin").await.expect("reconciled");
    let ready = ready_condition(&env.token("admin"));
    assert_eq!(ready.status, "True", "{ready:?}");
    let token = env.token_value("admin-qdrant-token");
    assert_eq!(
        qdrant_claims(&token, &env.api_key()).expect("verifies")["access"],
        json!("m")
    );

    // Disallowed again: Ready=False and our Secret is deleted (a manage token that may no
    // longer be issued is not left behind), and the status no longer describes a token.
    env.patch_instance(json!({"spec": {"auth": {"allowManageTokens": false}}}))
        .await;
    env.reset();
    env.reconcile("admin").await.expect("reconciled");
    let ready = ready_condition(&env.token("admin"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    let counters = env.server.counters();
    assert_eq!(
        counters.get("delete", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    assert!(
        env.server
            .get("v1", "Secret", NS, "admin-qdrant-token")
            .is_none()
    );
    let status = env.token_status("admin");
    assert_eq!(status.expires_at, None, "{status:?}");
    assert_eq!(status.renewal_time, None, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_forbids_global_manage_tokens_cluster_wide_and_their_secrets_go() {
    let mut env = Env::start().await;
    // The instance opts in: only the operator's setting stands in the way.
    env.instance(json!({"auth": {"allowManageTokens": true}}))
        .await;
    env.create_token(
        "admin",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "m"}}),
    )
    .await;
    env.create_token(
        "reader",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("admin").await.expect("reconciled");
    env.reconcile("reader").await.expect("reconciled");
    assert_eq!(ready_condition(&env.token("admin")).status, "True");
    let reader_token = env.token_value("reader-qdrant-token");

    // The operator restarts with --allow-global-manage-tokens=false.
    env.restart_with(Settings {
        allow_global_manage_tokens: false,
        ..Settings::default()
    })
    .await;
    env.reset();
    let action = env.reconcile("admin").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("admin"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ManageTokensForbidden")
    );
    for needle in [
        "--allow-global-manage-tokens=false",
        "policy.allowGlobalManageTokens",
    ] {
        assert!(ready.message.contains(needle), "{ready:?}");
    }
    // The existing manage token's Secret is removed, nothing is signed or written to it.
    assert!(env.secret("admin-qdrant-token").is_none());
    let counters = env.server.counters();
    assert_eq!(
        counters.get("delete", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    assert_eq!(secret_writes(&env.server), 1, "{:?}", counters.requests);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "ManageTokensForbidden".to_owned())]
    );
    let status = env.token_status("admin");
    assert_eq!(status.secret_name, None, "{status:?}");
    assert_eq!(status.expires_at, None, "{status:?}");

    // Past its renewal time: still refused, nothing refreshed, no second Event.
    env.reconcile("reader").await.expect("reconciled");
    assert_eq!(
        env.token_value("reader-qdrant-token"),
        reader_token,
        "a read token is unaffected"
    );
    assert_eq!(ready_condition(&env.token("reader")).status, "True");
    env.set_now(t0() + SignedDuration::from_hours(48));
    env.reset();
    env.reconcile("admin").await.expect("reconciled");
    assert_eq!(env.server.counters().writes(), 0);
    assert!(env.event_reasons().is_empty());
    assert!(env.secret("admin-qdrant-token").is_none());

    // A new manage token never gets a Secret.
    env.create_token(
        "admin2",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "m"}}),
    )
    .await;
    env.reset();
    env.reconcile("admin2").await.expect("reconciled");
    assert_eq!(
        ready_condition(&env.token("admin2")).reason,
        "ManageTokensForbidden"
    );
    assert_eq!(secret_writes(&env.server), 0);
    assert!(env.secret("admin2-qdrant-token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_exists_index_that_overflows_qdrants_usize_is_refused_and_nothing_is_issued() {
    // Qdrant parses `[n]` as a usize: 2^64 overflows it, and Qdrant would answer every request
    // with this token 401 ("not a JWT"). The token is refused instead, naming the key.
    let env = Env::start().await;
    env.instance(json!({})).await;
    env.create_token(
        "revocable",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"},
               "valueExists": {"collection": "tokens",
                               "matches": [{"key": "a[18446744073709551616]", "value": "x"}]}}),
    )
    .await;
    env.reset();
    let action = env.reconcile("revocable").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("revocable"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        ready.message.contains("spec.valueExists.matches[0].key")
            && ready.message.contains("array index above 999999999"),
        "{ready:?}"
    );
    assert!(env.secret("revocable-qdrant-token").is_none());
    assert_eq!(secret_writes(&env.server), 0);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "InvalidSpec".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_missing_instance_is_not_ready_until_the_instance_exists() {
    let env = Env::start().await;
    env.create_token(
        "early",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reset();
    let action = env.reconcile("early").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("early"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InstanceMissing"),
        "{ready:?}"
    );
    assert!(ready.message.contains("vectors"), "{ready:?}");
    assert_eq!(secret_writes(&env.server), 0);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "InstanceMissing".to_owned())]
    );

    // The instance appears: the token is issued.
    env.instance(json!({})).await;
    env.reconcile("early").await.expect("reconciled");
    assert_eq!(ready_condition(&env.token("early")).status, "True");
    assert!(qdrant_claims(&env.token_value("early-qdrant-token"), &env.api_key()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_rbac_off_blocks_the_token() {
    let env = Env::start().await;
    env.instance(json!({"auth": {"jwtRbac": false}})).await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reset();
    let action = env.reconcile("frontend").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("frontend"));
    assert_eq!(ready.status, "False", "{ready:?}");
    assert!(ready.message.contains("jwtRbac"), "{ready:?}");
    assert!(
        env.server
            .get("v1", "Secret", NS, "frontend-qdrant-token")
            .is_none()
    );
    assert_eq!(secret_writes(&env.server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_that_name_owned_by_someone_else_is_a_conflict_and_never_written() {
    let env = Env::start().await;
    env.instance(json!({"auth": {"allowManageTokens": true}}))
        .await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);

    // (a) An application's own Secret, no labels, no owner.
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "frontend-qdrant-token", "namespace": NS},
        "stringData": {"token": "the application's own"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret created");
    let before = env.server.get("v1", "Secret", NS, "frontend-qdrant-token");
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    // (b) Another token's Secret, carrying our labels: "first" owns "shared", then "second"
    // asks for the same name.
    env.create_token(
        "first",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}, "secretName": "shared"}),
    )
    .await;
    env.reconcile("first").await.expect("reconciled");
    let shared = env
        .server
        .get("v1", "Secret", NS, "shared")
        .expect("shared");
    env.create_token(
        "second",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}, "secretName": "shared"}),
    )
    .await;
    // (c) An invalid spec naming a foreign Secret: the clean-up must not delete it either.
    env.create_token(
        "greedy",
        json!({"qdrantRef": {"name": "other"}, "access": {"global": "m"},
               "secretName": "frontend-qdrant-token"}),
    )
    .await;

    // Now and two days later (long past any renewal time), several times.
    for now in [env.now(), env.now() + SignedDuration::from_hours(48)] {
        env.set_now(now);
        for _ in 0..2 {
            env.reset();
            for name in ["frontend", "second"] {
                let action = env.reconcile(name).await.expect("reconciled");
                assert_eq!(action, Action::await_change());
                let ready = ready_condition(&env.token(name));
                assert_eq!(
                    (ready.status.as_str(), ready.reason.as_str()),
                    ("False", "SecretConflict"),
                    "{name}: {ready:?}"
                );
            }
            env.reconcile("greedy").await.expect("reconciled");
            assert_eq!(ready_condition(&env.token("greedy")).status, "False");
            assert_eq!(
                secret_writes(&env.server),
                0,
                "{:?}",
                env.server.counters().requests
            );
        }
    }
    assert_eq!(
        env.server.get("v1", "Secret", NS, "frontend-qdrant-token"),
        before,
        "the application's Secret was changed"
    );
    assert_eq!(
        env.server.get("v1", "Secret", NS, "shared"),
        Some(shared),
        "another token's Secret was changed"
    );
    let message = ready_condition(&env.token("frontend")).message;
    assert!(message.contains("frontend-qdrant-token"), "{message}");
    assert!(message.contains("spec.secretName"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_token_garbage_collects_its_secret() {
    let env = Env::start().await;
    env.instance(json!({})).await;
    let tokens: Api<QdrantAccessToken> = Api::namespaced(env.client.clone(), NS);

    // Plain deletion: the server's garbage collector removes the Secret by owner uid.
    env.create_token(
        "plain",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("plain").await.expect("reconciled");
    assert!(env.secret("plain-qdrant-token").is_some());
    tokens
        .delete("plain", &DeleteParams::background())
        .await
        .expect("deleted");
    assert!(env.server.get(SQ_API, QAT_KIND, NS, "plain").is_none());
    assert!(
        env.server
            .get("v1", "Secret", NS, "plain-qdrant-token")
            .is_none(),
        "the token Secret outlived its QdrantAccessToken"
    );

    // A token held by a finalizer: while it is being deleted, reconciles write nothing and keep
    // the Secret; when the finalizer goes, the Secret goes.
    let held = env
        .create_token_with(
            "held",
            json!({"finalizers": ["test.secureqdrant.dev/hold"]}),
            json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
        )
        .await;
    env.reconcile("held").await.expect("reconciled");
    tokens
        .delete("held", &DeleteParams::background())
        .await
        .expect("deletion requested");
    assert!(env.token("held").metadata.deletion_timestamp.is_some());
    env.set_now(env.now() + SignedDuration::from_hours(48));
    env.reset();
    let action = env.reconcile("held").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert_eq!(env.server.counters().writes(), 0);
    assert!(env.secret("held-qdrant-token").is_some());
    tokens
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    assert!(env.server.get(SQ_API, QAT_KIND, NS, "held").is_none());
    assert!(
        env.server
            .get("v1", "Secret", NS, "held-qdrant-token")
            .is_none()
    );
    assert!(held.metadata.uid.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_secret_has_an_http_url_and_no_ca() {
    let env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}})).await;
    env.create_token(
        "plain",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("plain").await.expect("reconciled");
    let secret = env.secret("plain-qdrant-token").expect("written");
    assert_eq!(data_keys(&secret), set(&["grpc-url", "token", "url"]));
    assert_eq!(
        text(&secret, "url").as_deref(),
        Some("http://vectors.search.svc:6333")
    );
    assert_eq!(
        text(&secret, "grpc-url").as_deref(),
        Some("http://vectors.search.svc:6334")
    );
}

// ----- client certificates (spec.tls.clientCertificates) --------------------------------------

fn condition_of(qat: &QdrantAccessToken, type_: &str) -> Option<Condition> {
    qat.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .cloned()
}

/// The client certificate of a token Secret, read as an application would (and its key must
/// match).
fn client_certificate_of(secret: &Secret) -> LeafMaterial {
    LeafMaterial::from_pem(
        &text(secret, "tls.crt").expect("tls.crt"),
        &text(secret, "tls.key").expect("tls.key"),
    )
    .expect("a client certificate with its key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_the_token_secret_carries_one_that_renews_on_time() {
    let env = Env::start().await;
    env.instance(json!({"tls": {"clientCertificates": true,
                                 "certificateLifetime": "1h", "renewBefore": "50m"}}))
        .await;
    let qat = env
        .create_token(
            "frontend",
            json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}, "lifetime": "720h"}),
        )
        .await;
    let t0 = env.now();
    let action = env.reconcile("frontend").await.expect("reconciled");
    let secret = env.secret("frontend-qdrant-token").expect("written");
    assert_eq!(
        data_keys(&secret),
        set(&["ca.crt", "grpc-url", "tls.crt", "tls.key", "token", "url"])
    );
    let ca = Certificate::from_pem(
        &env.secret("vectors-ca")
            .and_then(|s| text(&s, "tls.crt"))
            .expect("the instance CA"),
    )
    .unwrap();
    let client = client_certificate_of(&secret);
    let info = client.cert().info();
    assert!(
        client.cert().is_signed_by(&ca),
        "signed by the instance's CA"
    );
    assert!(
        info.client_auth && !info.server_auth,
        "a client-only certificate"
    );
    assert!(info.subject.contains("frontend.search"), "{}", info.subject);
    assert_eq!(
        client.cert().not_after(),
        t0 + SignedDuration::from_hours(1),
        "the instance's certificate lifetime"
    );
    // The application's ca.crt verifies the server; the server's ca.crt verifies the client.
    assert_eq!(
        text(&secret, "ca.crt"),
        env.secret("vectors-tls").and_then(|s| text(&s, "ca.crt"))
    );

    let status = env.token_status("frontend");
    assert_eq!(
        status.client_certificate_not_after.as_ref().map(|t| t.0),
        Some(client.cert().not_after())
    );
    let renewal = status
        .client_certificate_renewal_time
        .as_ref()
        .expect("a renewal time")
        .0;
    // notAfter - renewBefore, pulled earlier by a per-token jitter of at most 5% of the lifetime.
    let latest = client.cert().not_after() - SignedDuration::from_mins(50);
    assert!(
        renewal <= latest && renewal >= latest - SignedDuration::from_mins(3),
        "renewal {renewal}, expected just before {latest}"
    );
    // The certificate renews before the (720h) token: the requeue is for the certificate.
    assert_eq!(action, Action::requeue(until(t0, renewal)));
    let cond = condition_of(&env.token("frontend"), token::CLIENT_CERTIFICATE_READY)
        .expect("a ClientCertificateReady condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "Issued")
    );
    assert!(
        env.event_reasons()
            .contains(&(EventType::Normal, "ClientCertificateIssued".to_owned())),
        "{:?}",
        env.event_reasons()
    );
    for note in env.event_notes() {
        assert!(!note.contains("PRIVATE KEY"), "{note}");
    }
    let status_json = serde_json::to_string(&env.token("frontend").status).unwrap();
    assert!(!status_json.contains("PRIVATE KEY"), "{status_json}");

    // Before the renewal time: nothing is written, the same certificate stays.
    env.set_now(renewal - SignedDuration::from_secs(1));
    env.reset();
    env.reconcile("frontend").await.expect("reconciled");
    assert_eq!(secret_writes(&env.server), 0);
    let kept = env.secret("frontend-qdrant-token").unwrap();
    assert_eq!(text(&kept, "tls.crt"), text(&secret, "tls.crt"));

    // At the renewal time: a new certificate and key, the token itself untouched.
    env.set_now(renewal);
    env.reset();
    env.reconcile("frontend").await.expect("reconciled");
    assert_eq!(env.server.counters().get("patch", "secrets"), 1);
    let renewed = env.secret("frontend-qdrant-token").unwrap();
    let new_client = client_certificate_of(&renewed);
    assert_ne!(new_client.cert().der(), client.cert().der());
    assert_ne!(
        text(&renewed, "tls.key"),
        text(&secret, "tls.key"),
        "a new key"
    );
    assert!(new_client.cert().is_signed_by(&ca));
    assert_eq!(
        new_client.cert().not_after(),
        renewal + SignedDuration::from_hours(1)
    );
    assert_eq!(text(&renewed, "token"), text(&secret, "token"));
    assert!(
        env.event_notes()
            .iter()
            .any(|n| n.contains("client certificate") && n.contains("renewal time")),
        "{:?}",
        env.event_notes()
    );

    // Client certificates no longer required: the Secret loses tls.crt and tls.key, the
    // status and the condition go.
    env.patch_instance(json!({"spec": {"tls": {"clientCertificates": false}}}))
        .await;
    env.reconcile("frontend").await.expect("reconciled");
    let plain = env.secret("frontend-qdrant-token").unwrap();
    assert_eq!(
        data_keys(&plain),
        set(&["ca.crt", "grpc-url", "token", "url"])
    );
    let after = env.token("frontend");
    assert!(condition_of(&after, token::CLIENT_CERTIFICATE_READY).is_none());
    let status = after.status.unwrap();
    assert!(status.client_certificate_not_after.is_none());
    assert!(status.client_certificate_renewal_time.is_none());
    let _ = qat;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_ca_rollover_client_certificates_come_only_from_a_ca_the_pods_trust() {
    let env = Env::start().await;
    env.instance(json!({"tls": {"clientCertificates": true}}))
        .await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let old = client_certificate_of(&env.secret("frontend-qdrant-token").unwrap());
    let a = Certificate::from_pem(&text(&env.secret("vectors-ca").unwrap(), "tls.crt").unwrap())
        .unwrap();
    assert!(old.cert().is_signed_by(&a));

    // The instance's CA key is replaced (<n>-ca written first): the pods do not trust B yet.
    let b = issue_ca(
        &CaSubject::new(NS, SQ),
        SignedDuration::from_hours(8760),
        env.now(),
    )
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let ca_data: BTreeMap<String, String> = b
        .to_secret_data()
        .into_iter()
        .map(|(k, v)| (k, STANDARD.encode(v.0)))
        .collect();
    secrets
        .patch(
            "vectors-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": ca_data})),
        )
        .await
        .unwrap();
    env.reset();
    env.reconcile("frontend").await.expect("reconciled");
    let kept = client_certificate_of(&env.secret("frontend-qdrant-token").unwrap());
    assert_eq!(
        kept.cert().der(),
        old.cert().der(),
        "A's certificate is kept"
    );
    assert_eq!(secret_writes(&env.server), 0);
    // A new token meanwhile: its token now, its certificate once the pods trust B.
    env.create_token(
        "batch",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    let action = env.reconcile("batch").await.expect("reconciled");
    let batch = env
        .secret("batch-qdrant-token")
        .expect("the token is issued");
    assert_eq!(
        data_keys(&batch),
        set(&["ca.crt", "grpc-url", "token", "url"])
    );
    let qat = env.token("batch");
    assert_eq!(ready_condition(&qat).status, "True");
    let cond = condition_of(&qat, token::CLIENT_CERTIFICATE_READY).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "WaitingForCATrust")
    );
    assert_eq!(action, Action::requeue(token::WAIT), "looked at again soon");

    // The published bundle trusts A and B, the first phase rolled out (SignWithNew): both
    // certificates now come from B.
    let bundle = format!("{}{}", a.pem(), b.cert().pem());
    secrets
        .patch(
            "vectors-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"secureqdrant.dev/ca-rollover-phase": "SignWithNew"}},
                "data": {"ca.crt": STANDARD.encode(&bundle)},
            })),
        )
        .await
        .unwrap();
    for (name, secret) in [
        ("frontend", "frontend-qdrant-token"),
        ("batch", "batch-qdrant-token"),
    ] {
        env.reconcile(name).await.expect("reconciled");
        let moved = client_certificate_of(&env.secret(secret).unwrap());
        assert!(moved.cert().is_signed_by(b.cert()), "{name} from B");
        assert_eq!(
            text(&env.secret(secret).unwrap(), "ca.crt").as_deref(),
            Some(bundle.as_str()),
            "{name} trusts A and B"
        );
        let cond = condition_of(&env.token(name), token::CLIENT_CERTIFICATE_READY).unwrap();
        assert_eq!(cond.status, "True");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_replaced_and_a_broken_one_too() {
    let env = Env::start().await;
    env.instance(json!({"tls": {"clientCertificates": true}}))
        .await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let ca =
        CaMaterial::from_secret_data(&env.secret("vectors-ca").unwrap().data.unwrap()).unwrap();
    let api: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    // Someone puts a certificate from a foreign CA in place, then garbage.
    let foreign = issue_ca(
        &CaSubject::new("x", "y"),
        SignedDuration::from_hours(100),
        env.now(),
    )
    .unwrap();
    let stranger = issue_client(
        &foreign,
        "frontend.search",
        SignedDuration::from_hours(10),
        env.now(),
    )
    .unwrap();
    for (crt, key) in [
        (
            stranger.cert().pem(),
            stranger.key().expose_pem().to_owned(),
        ),
        ("garbage".to_owned(), "garbage".to_owned()),
    ] {
        api.patch(
            "frontend-qdrant-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tls.crt": STANDARD.encode(&crt),
                                           "tls.key": STANDARD.encode(&key)}})),
        )
        .await
        .unwrap();
        env.reconcile("frontend").await.expect("reconciled");
        let fixed = client_certificate_of(&env.secret("frontend-qdrant-token").unwrap());
        assert!(fixed.cert().is_signed_by(ca.cert()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_user_certificate_no_client_certificate_can_be_signed_and_the_condition_says_so() {
    let env = Env::start().await;
    // The user's serving certificate (e.g. from cert-manager): the operator has no CA key.
    let ca = issue_ca(
        &CaSubject::new(NS, "user"),
        SignedDuration::from_hours(8760),
        env.now(),
    )
    .unwrap();
    let leaf = issue_leaf(
        &ca,
        &serving_dns_names(SQ, NS, "cluster.local", &[]),
        SignedDuration::from_hours(2160),
        env.now(),
    )
    .unwrap();
    let user: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vectors-cert", "namespace": NS,
            "labels": {"secureqdrant.dev/allowed-instance": "vectors"}},
        "type": "kubernetes.io/tls",
    }))
    .unwrap();
    let user = Secret {
        data: Some(leaf.to_secret_data(std::slice::from_ref(ca.cert()))),
        ..user
    };
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &user)
        .await
        .unwrap();
    env.instance(json!({"tls": {"clientCertificates": true,
                                 "certificateSecretRef": {"name": "vectors-cert"}}}))
        .await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let secret = env
        .secret("frontend-qdrant-token")
        .expect("the token is still issued");
    assert_eq!(
        data_keys(&secret),
        set(&["ca.crt", "grpc-url", "token", "url"])
    );
    let qat = env.token("frontend");
    assert_eq!(ready_condition(&qat).status, "True");
    let cond = condition_of(&qat, token::CLIENT_CERTIFICATE_READY).expect("the condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "NoSigningCA")
    );
    assert!(
        cond.message.contains("certificateSecretRef"),
        "{}",
        cond.message
    );
    assert!(
        env.event_reasons()
            .contains(&(EventType::Warning, "NoSigningCA".to_owned())),
        "{:?}",
        env.event_reasons()
    );
    // Said once, not on every reconcile.
    env.reset();
    env.reconcile("frontend").await.expect("reconciled");
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());
}

// ---------------------------------------------------------------------------------------------
// Part 1 harness
// ---------------------------------------------------------------------------------------------

/// The fake API server, a client, reflector-fed caches and a Context with a movable clock.
struct Env {
    server: FakeApiServer,
    client: Client,
    ctx: Arc<Context>,
    events: EventLog,
    instances: Store<SecureQdrant>,
    clock: Arc<Mutex<Timestamp>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

impl Env {
    async fn start() -> Env {
        let server = in_process::server_with_crds().await;
        let client = client_for(&server).await;
        let mut tasks = Vec::new();
        // The same caches the controller keeps: managed objects only, by label.
        let stores = managed_stores(&client, &mut tasks);
        let instances = reflect::<SecureQdrant>(&client, &mut tasks, false);
        let clock = Arc::new(Mutex::new(t0()));
        let (events, log) = Events::memory();
        let reading = clock.clone();
        let ctx = Context::new(client.clone(), stores, events, Settings::default())
            .with_clock(Arc::new(move || *reading.lock().unwrap()));
        let ready = async {
            ctx.stores.wait_until_ready().await && instances.wait_until_ready().await.is_ok()
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(10), ready)
                .await
                .unwrap_or(false),
            "caches did not fill"
        );
        Env {
            server,
            client,
            ctx: Arc::new(ctx),
            events: log,
            instances,
            clock,
            tasks,
        }
    }

    /// The operator restarted with `settings`: a new Context (fresh caches, no memory of its
    /// writes) on the same server and clock.
    async fn restart_with(&mut self, settings: Settings) {
        let stores = managed_stores(&self.client, &mut self.tasks);
        let (events, log) = Events::memory();
        let reading = self.clock.clone();
        let ctx = Context::new(self.client.clone(), stores, events, settings)
            .with_clock(Arc::new(move || *reading.lock().unwrap()));
        assert!(
            tokio::time::timeout(Duration::from_secs(10), ctx.stores.wait_until_ready())
                .await
                .unwrap_or(false),
            "caches did not fill"
        );
        self.ctx = Arc::new(ctx);
        self.events = log;
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn set_now(&self, now: Timestamp) {
        *self.clock.lock().unwrap() = now;
    }

    /// Forgets the request counters and the Events recorded so far.
    fn reset(&self) {
        self.server.reset_counters();
        self.events.lock().unwrap().clear();
    }

    /// Creates SecureQdrant `search/vectors` with `spec` and runs the SecureQdrant reconcile
    /// once, so its API-key, CA and TLS Secrets exist as the operator writes them.
    async fn instance(&self, spec: Value) {
        let api: Api<SecureQdrant> = Api::namespaced(self.client.clone(), NS);
        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": SQ, "namespace": NS}, "spec": spec
        }))
        .expect("a SecureQdrant");
        api.create(&PostParams::default(), &sq)
            .await
            .expect("SecureQdrant created");
        self.settle().await;
        let sq = api.get(SQ).await.expect("SecureQdrant read");
        reconcile::reconcile(Arc::new(sq), self.ctx.clone())
            .await
            .expect("the SecureQdrant reconciles");
        self.settle().await;
        assert!(
            self.secret("vectors-api-key").is_some(),
            "no API-key Secret"
        );
        self.reset();
    }

    async fn patch_instance(&self, patch: Value) {
        let api: Api<SecureQdrant> = Api::namespaced(self.client.clone(), NS);
        api.patch(SQ, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("SecureQdrant patched");
    }

    /// The instance's API key, as stored.
    fn api_key(&self) -> String {
        self.secret("vectors-api-key")
            .and_then(|s| text(&s, "api-key"))
            .expect("an API key")
    }

    /// Replaces the `api-key` of `vectors-api-key` (what a user rotating the key does).
    async fn replace_api_key(&self, key: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        api.patch(
            "vectors-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"api-key": STANDARD.encode(key)}})),
        )
        .await
        .expect("API key replaced");
    }

    async fn create_token(&self, name: &str, spec: Value) -> QdrantAccessToken {
        self.create_token_with(name, json!({}), spec).await
    }

    async fn create_token_with(&self, name: &str, meta: Value, spec: Value) -> QdrantAccessToken {
        let mut metadata = meta;
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(NS);
        let qat: QdrantAccessToken = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": QAT_KIND, "metadata": metadata, "spec": spec
        }))
        .expect("a QdrantAccessToken");
        Api::<QdrantAccessToken>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &qat)
            .await
            .expect("QdrantAccessToken created")
    }

    /// Reads the token as the controller would get it (after its caches caught up) and runs
    /// one reconcile.
    async fn reconcile(&self, name: &str) -> ReconcileResult<Action> {
        self.settle().await;
        let qat = self.token(name);
        token::reconcile(Arc::new(qat), self.ctx.clone(), self.instances.clone()).await
    }

    fn token(&self, name: &str) -> QdrantAccessToken {
        let value = self
            .server
            .get(SQ_API, QAT_KIND, NS, name)
            .unwrap_or_else(|| panic!("no QdrantAccessToken {name}"));
        serde_json::from_value(value).expect("a QdrantAccessToken")
    }

    fn token_status(&self, name: &str) -> secure_qdrant_operator::crd::QdrantAccessTokenStatus {
        self.token(name).status.expect("a status")
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.server
            .get("v1", "Secret", NS, name)
            .map(|v| serde_json::from_value(v).expect("a Secret"))
    }

    fn token_value(&self, secret: &str) -> String {
        self.secret(secret)
            .and_then(|s| text(&s, "token"))
            .unwrap_or_else(|| panic!("no token in Secret {secret}"))
    }

    fn event_reasons(&self) -> Vec<(EventType, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| (e.type_, e.reason.clone()))
            .collect()
    }

    fn event_notes(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.note.clone().unwrap_or_default())
            .collect()
    }

    /// Waits until the caches hold exactly what the server holds (managed Secrets and every
    /// SecureQdrant, by resourceVersion), as they would when a watch event triggers a reconcile.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let secrets = versions(
                self.server
                    .list("v1", "Secret", "")
                    .into_iter()
                    .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
            );
            let instances = versions(self.server.list(SQ_API, "SecureQdrant", "").into_iter());
            let cached_secrets = cached_versions(&self.ctx.stores.secrets);
            let cached_instances = cached_versions(&self.instances);
            if secrets == cached_secrets && instances == cached_instances {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "caches did not catch up: secrets {secrets:?} vs {cached_secrets:?}, \
                 instances {instances:?} vs {cached_instances:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Secret writes of any kind (create, update, patch, delete).
fn secret_writes(server: &FakeApiServer) -> u64 {
    let c = server.counters();
    ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .map(|verb| c.get(verb, "secrets"))
        .sum()
}

fn ready_condition(qat: &QdrantAccessToken) -> Condition {
    qat.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .unwrap_or_else(|| panic!("no Ready condition: {:?}", qat.status))
}

fn controller_of(
    secret: &Secret,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .cloned()
}

fn data_keys(secret: &Secret) -> BTreeSet<String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect()
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).expect("UTF-8"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The claims of `token` checked as Qdrant checks them: HS256 only, the key's raw bytes, `exp`
/// required (its value is compared with the injected clock by the caller, not the real one).
fn qdrant_claims(token: &str, key: &str) -> Result<Value, ErrorKind> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(key.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| e.into_kind())
}

// =============================================================================================
// Part 2: the real binary; nothing secret in logs, Events, status or errors
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_key_or_signature_appears_in_logs_events_status_or_errors() {
    let server = Arc::new(in_process::server_with_crds().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut operator = Operator::spawn(&server, &dir);
    wait_log(&operator, "starting the SecureQdrant").await;

    // Two instances: one that allows manage tokens, one with JWTs off.
    for (name, auth) in [
        (SQ, json!({"allowManageTokens": true})),
        ("locked", json!({"jwtRbac": false})),
    ] {
        server
            .insert(json!({"apiVersion": SQ_API, "kind": "SecureQdrant",
                "metadata": {"name": name, "namespace": NS}, "spec": {"auth": auth}}))
            .expect("SecureQdrant inserted");
    }
    // An instance on the user's own key.
    let byo_keys = [
        "byo-first-7d1e3a5c9b2f4e6a8c0d1f3b5a7c9e2d",
        "byo-second-2a4c6e8f0b1d3f5a7c9e1b3d5f7a9c0e",
    ];
    server
        .insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "byo-key", "namespace": NS,
                "labels": {"secureqdrant.dev/allowed-instance": "byo"}},
            "data": {"key": STANDARD.encode(byo_keys[0])}}))
        .expect("Secret inserted");
    server
        .insert(json!({"apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": "byo", "namespace": NS},
            "spec": {"auth": {"apiKeySecretRef": {"name": "byo-key", "key": "key"}}}}))
        .expect("SecureQdrant inserted");
    // An application's Secret that a token will collide with.
    server
        .insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "taken", "namespace": NS},
            "data": {"token": STANDARD.encode("not the operator's")}}))
        .expect("Secret inserted");
    let issued = ["reader", "admin", "docs"];
    let tokens = [
        (
            "reader",
            json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
        ),
        (
            "admin",
            json!({"qdrantRef": {"name": SQ}, "access": {"global": "m"}}),
        ),
        (
            "docs",
            json!({"qdrantRef": {"name": SQ}, "access": {"collections": [
                {"collection": "docs", "access": "rw"}, {"collection": "users", "access": "prw"}]},
                "valueExists": {"collection": "users", "matches": [{"key": "user_id", "value": "u1"}]},
                "lifetime": "1h"}),
        ),
        (
            "conflict",
            json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}, "secretName": "taken"}),
        ),
        (
            "orphan",
            json!({"qdrantRef": {"name": "missing"}, "access": {"global": "r"}}),
        ),
        (
            "nojwt",
            json!({"qdrantRef": {"name": "locked"}, "access": {"global": "r"}}),
        ),
        (
            "byo-reader",
            json!({"qdrantRef": {"name": "byo"}, "access": {"global": "r"}}),
        ),
    ];
    // Every value the token Secrets and the API-key Secret ever hold, from before they exist.
    let mut monitors: Vec<ValueMonitor> = issued
        .iter()
        .map(|t| ValueMonitor::start(&server, &format!("{t}-qdrant-token"), "token"))
        .collect();
    monitors.push(ValueMonitor::start(&server, "vectors-api-key", "api-key"));
    monitors.push(ValueMonitor::start(
        &server,
        "vectors-api-key",
        "read-only-api-key",
    ));
    monitors.push(ValueMonitor::start(
        &server,
        "vectors-api-key",
        "next-api-key",
    ));
    monitors.push(ValueMonitor::start(&server, "byo-key", "key"));
    monitors.push(ValueMonitor::start(
        &server,
        "byo-reader-qdrant-token",
        "token",
    ));
    monitors.push(ValueMonitor::start(&server, "locked-api-key", "api-key"));
    monitors.push(ValueMonitor::start(
        &server,
        "locked-api-key",
        "read-only-api-key",
    ));
    for (name, spec) in &tokens {
        server
            .insert(json!({"apiVersion": SQ_API, "kind": QAT_KIND,
                "metadata": {"name": name, "namespace": NS}, "spec": spec}))
            .expect("QdrantAccessToken inserted");
    }
    for name in issued {
        wait_ready(&server, &operator, name, "True", "TokenIssued").await;
    }
    wait_ready(&server, &operator, "conflict", "False", "SecretConflict").await;
    wait_ready(&server, &operator, "orphan", "False", "InstanceMissing").await;
    wait_ready(&server, &operator, "nojwt", "False", "InvalidSpec").await;
    wait_ready(&server, &operator, "byo-reader", "True", "TokenIssued").await;
    wait_token(&server, &operator, "byo-reader", |token| {
        qdrant_claims(token, byo_keys[0]).is_ok()
    })
    .await;

    // Rotate the API key: every token is re-minted under the new key.
    let new_key = "rotated-3f9a1c5e7b2d4f6a8c0e1b3d5f7a9c2e";
    let client = client_for(&server).await;
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            "vectors-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"api-key": STANDARD.encode(new_key)}})),
        )
        .await
        .expect("API key rotated");
    for name in issued {
        wait_token(&server, &operator, name, |token| {
            qdrant_claims(token, new_key).is_ok()
        })
        .await;
    }
    // The user changes their own key: the token is re-signed with it (the operator watches the
    // referenced Secret for tokens too).
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            "byo-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"key": STANDARD.encode(byo_keys[1])}})),
        )
        .await
        .expect("user key changed");
    wait_token(&server, &operator, "byo-reader", |token| {
        qdrant_claims(token, byo_keys[1]).is_ok()
    })
    .await;
    // A rotation asked for through the annotation: a next key is generated (the pods never
    // roll here, so it stays in its first phase).
    Api::<SecureQdrant>::namespaced(client.clone(), NS)
        .patch(
            SQ,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "secureqdrant.dev/rotate-api-key": "leak-scan"}}})),
        )
        .await
        .expect("rotation requested");
    eventually(Duration::from_secs(20), || {
        server
            .get("v1", "Secret", NS, "vectors-api-key")
            .filter(|s| s["data"]["next-api-key"].is_string())
            .map(|_| ())
            .ok_or_else(|| "no next-api-key yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));

    // The API refuses the operator's Secret writes for a while, while a spec change asks for a
    // new token: reconcile errors reach the log (and the error policy).
    server.set_faults(Faults {
        seed: 5,
        error_rate: 1.0,
        error_codes: vec![500, 409],
        verbs: vec!["patch".into()],
        resources: vec!["secrets".into()],
        ..Faults::default()
    });
    Api::<QdrantAccessToken>::namespaced(client.clone(), NS)
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifetime": "12h"}})),
        )
        .await
        .expect("reader patched");
    wait_log(&operator, "token reconcile failed").await;
    server.clear_faults();
    wait_token(&server, &operator, "reader", |token| {
        qdrant_claims(token, new_key).is_ok_and(|c| {
            let left = c["exp"].as_i64().unwrap_or_default() - Timestamp::now().as_second();
            (11 * 3600..13 * 3600).contains(&left)
        })
    })
    .await;
    // The last writes have settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    operator.assert_healthy();
    let log = operator.log();
    operator.kill();

    // What must never appear, and what it must not appear in.
    let secrets = Secrets::from(&monitors);
    assert!(
        // Issued, re-minted after the rotation, and once more after the lifetime change.
        secrets.tokens.len() > 2 * issued.len(),
        "too few tokens observed to mean anything: {}",
        secrets.tokens.len()
    );
    assert!(
        byo_keys.iter().all(|k| secrets.keys.contains(*k)),
        "the user's keys were not observed"
    );
    assert!(
        secrets.keys.len() >= 7,
        "keys observed: {}",
        secrets.keys.len()
    );
    let places = Places::collect(&server, &log);
    places.assert_meaningful(&tokens.map(|(n, _)| n));
    let leaks = secrets.find_in(&places);
    assert!(leaks.is_empty(), "secret material leaked: {leaks:#?}");

    // Control: the same scan finds planted values in each kind of place.
    let sig = secrets
        .tokens
        .iter()
        .next()
        .map(|t| signature(t).to_owned())
        .expect("a token");
    let whole_token = secrets.tokens.iter().last().cloned().expect("a token");
    let key = new_key.to_owned();
    server
        .insert(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "planted", "namespace": NS},
            "eventTime": "2030-01-01T00:00:00.000000Z", "reportingController": "test",
            "reportingInstance": "test", "action": "Issue", "reason": "Planted", "type": "Normal",
            "regarding": {"kind": QAT_KIND, "name": "reader", "namespace": NS},
            "note": format!("oops {sig}")}))
        .expect("Event planted");
    let mut status = server.get(SQ_API, QAT_KIND, NS, "docs").expect("docs")["status"].clone();
    status["conditions"][0]["message"] = json!(format!("key was {}", STANDARD.encode(&key)));
    server
        .set_status(SQ_API, QAT_KIND, NS, "docs", status)
        .expect("status planted");
    let planted_log = format!("{log}\n{{\"error\":\"bad token {whole_token}\"}}\n");
    let planted = Places::collect(&server, &planted_log);
    let found = secrets.find_in(&planted);
    let found_where: BTreeSet<&str> = found.iter().map(|l| l.place.as_str()).collect();
    assert_eq!(
        found_where,
        BTreeSet::from([
            "Event search/planted",
            "status of QdrantAccessToken search/docs",
            "operator log",
            "error messages",
        ]),
        "the control did not find exactly the planted values: {found:#?}"
    );
    let what: BTreeSet<&str> = found.iter().map(|l| l.what.as_str()).collect();
    assert!(what.contains("a JWT signature"), "{what:?}");
    assert!(what.contains("an API key (base64)"), "{what:?}");
    assert!(what.contains("a token"), "{what:?}");
}

// ---------------------------------------------------------------------------------------------
// Part 2 harness
// ---------------------------------------------------------------------------------------------

/// The operator binary running against the fake server; killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn spawn(server: &FakeApiServer, dir: &TempDir) -> Operator {
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        let log = dir.path().join("operator.log");
        let file = File::create(&log).expect("log file");
        let child = Command::new(OPERATOR)
            .args(["run", "--log-format", "json", "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("LOG_LEVEL", "secure_qdrant_operator=debug,kube=debug,info")
            .env_remove("POD_NAME")
            .env_remove("CLUSTER_DOMAIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("operator binary starts");
        Operator { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's own last log lines (the client's debug lines are left out).
    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"target\":\"secure_qdrant_operator"))
            .collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn assert_healthy(&mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!("the operator exited ({exit}):\n{}", self.tail());
        }
        assert!(!self.log().contains("panicked"), "the operator panicked");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

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

async fn wait_log(operator: &Operator, needle: &str) {
    eventually(Duration::from_secs(20), || {
        operator
            .log()
            .contains(needle)
            .then_some(())
            .ok_or_else(|| format!("the operator log has no {needle:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}

async fn wait_ready(
    server: &FakeApiServer,
    operator: &Operator,
    name: &str,
    status: &str,
    reason: &str,
) {
    eventually(Duration::from_secs(20), || {
        let qat = server
            .get(SQ_API, QAT_KIND, NS, name)
            .ok_or("no QdrantAccessToken")?;
        let ready = qat["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .ok_or("no Ready condition yet")?;
        if ready["status"] == status && ready["reason"] == reason {
            Ok(())
        } else {
            Err(format!("{name}: Ready is {ready}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}

async fn wait_token(
    server: &FakeApiServer,
    operator: &Operator,
    name: &str,
    done: impl Fn(&str) -> bool,
) {
    let secret = format!("{name}-qdrant-token");
    eventually(Duration::from_secs(20), || {
        let token = server
            .get("v1", "Secret", NS, &secret)
            .and_then(|s| s["data"]["token"].as_str().map(decode))
            .ok_or_else(|| format!("no token in {secret}"))?;
        done(&token)
            .then_some(())
            .ok_or_else(|| format!("{secret}: not the expected token yet"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}

fn decode(b64: &str) -> String {
    String::from_utf8(STANDARD.decode(b64).expect("base64")).expect("UTF-8")
}

/// Records every value one key of one Secret takes (checked after every change on the server).
struct ValueMonitor {
    key: String,
    seen: Arc<Mutex<BTreeSet<String>>>,
    task: JoinHandle<()>,
}

impl ValueMonitor {
    fn start(server: &Arc<FakeApiServer>, secret: &str, key: &str) -> ValueMonitor {
        let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let task = {
            let (server, seen, secret, key) = (
                server.clone(),
                seen.clone(),
                secret.to_owned(),
                key.to_owned(),
            );
            tokio::spawn(async move {
                let _ = server
                    .wait_for("v1", "Secret", NS, &secret, Duration::from_secs(600), |s| {
                        if let Some(v) = s.and_then(|s| s["data"][&key].as_str()) {
                            seen.lock().unwrap().insert(decode(v));
                        }
                        false
                    })
                    .await;
            })
        };
        ValueMonitor {
            key: key.to_owned(),
            seen,
            task,
        }
    }
}

impl Drop for ValueMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The values that must never appear outside their Secrets.
struct Secrets {
    tokens: BTreeSet<String>,
    keys: BTreeSet<String>,
}

/// One finding of the scan: what kind of value, and where. Never the value itself.
#[derive(Debug)]
struct Leak {
    what: String,
    place: String,
}

impl Secrets {
    fn from(monitors: &[ValueMonitor]) -> Secrets {
        let mut out = Secrets {
            tokens: BTreeSet::new(),
            keys: BTreeSet::new(),
        };
        for m in monitors {
            let seen = m.seen.lock().unwrap().clone();
            if m.key == "token" {
                out.tokens.extend(seen);
            } else {
                out.keys.extend(seen);
            }
        }
        out
    }

    /// (what, needle): each key raw and base64-encoded (as in a Secret's JSON), each token
    /// whole and base64-encoded, and each token's signature part on its own.
    fn needles(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for key in &self.keys {
            out.push(("an API key", key.clone()));
            out.push(("an API key (base64)", STANDARD.encode(key)));
        }
        for token in &self.tokens {
            out.push(("a token", token.clone()));
            out.push(("a token (base64)", STANDARD.encode(token)));
            out.push(("a JWT signature", signature(token).to_owned()));
        }
        out
    }

    fn find_in(&self, places: &Places) -> Vec<Leak> {
        let needles = self.needles();
        let mut out = Vec::new();
        for (place, haystack) in &places.texts {
            for (what, needle) in &needles {
                if haystack.contains(needle.as_str()) {
                    out.push(Leak {
                        what: (*what).to_owned(),
                        place: place.clone(),
                    });
                }
            }
        }
        out
    }
}

/// The third part of a JWT (header.payload.signature).
fn signature(token: &str) -> &str {
    let sig = token.rsplit('.').next().unwrap_or_default();
    assert!(sig.len() >= 40, "not an HS256 signature");
    sig
}

/// Everything the scan reads: the operator's log (with its error messages), every Event (both
/// APIs, whole objects) and every status of the operator's resources.
struct Places {
    texts: BTreeMap<String, String>,
}

impl Places {
    fn collect(server: &FakeApiServer, log: &str) -> Places {
        let mut texts = BTreeMap::new();
        texts.insert("operator log".to_owned(), log.to_owned());
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"error\"") || l.contains("ERROR") || l.contains("WARN"))
            .collect();
        texts.insert("error messages".to_owned(), errors.join("\n"));
        for api in ["events.k8s.io/v1", "v1"] {
            for e in server.list(api, "Event", "") {
                texts.insert(
                    format!(
                        "Event {}/{}",
                        e["metadata"]["namespace"].as_str().unwrap_or_default(),
                        e["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                    e.to_string(),
                );
            }
        }
        for kind in ["SecureQdrant", QAT_KIND] {
            for o in server.list(SQ_API, kind, "") {
                texts.insert(
                    format!(
                        "status of {kind} {}/{}",
                        o["metadata"]["namespace"].as_str().unwrap_or_default(),
                        o["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                    o["status"].to_string(),
                );
            }
        }
        Places { texts }
    }

    /// The places hold what the scenario produced, so an empty scan means something.
    fn assert_meaningful(&self, tokens: &[&str]) {
        let log = &self.texts["operator log"];
        assert!(log.lines().count() > 20, "the log is nearly empty");
        assert!(
            log.contains("\"DEBUG\"") || log.contains("DEBUG"),
            "no debug lines were logged"
        );
        assert!(
            self.texts["error messages"].contains("token reconcile failed"),
            "no reconcile error was logged"
        );
        let events: Vec<&String> = self
            .texts
            .iter()
            .filter(|(k, _)| k.starts_with("Event "))
            .map(|(_, v)| v)
            .collect();
        for reason in [
            "TokenIssued",
            "SecretConflict",
            "InstanceMissing",
            "InvalidSpec",
        ] {
            assert!(
                events.iter().any(|e| e.contains(reason)),
                "no {reason} Event was recorded"
            );
        }
        for name in tokens {
            let status = &self.texts[&format!("status of {QAT_KIND} {NS}/{name}")];
            assert!(status.contains("Ready"), "{name} has no Ready condition");
        }
    }
}
