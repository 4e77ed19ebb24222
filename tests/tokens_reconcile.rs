//! QdrantAccessToken reconciles (issue 5), against the real Kubernetes control plane
//! (tests/control-plane: etcd, kube-apiserver with RBAC and an audit log,
//! kube-controller-manager, kube-scheduler, kwok), one namespace per test.
//!
//! Part 1 runs `access_tokens::reconcile` in-process with a [`Context`] whose clock the test
//! moves: the kube `Client` is the operator's identity (a ServiceAccount with the chart's RBAC
//! for the test's namespace) through the test's fault proxy, the Context's caches and the
//! SecureQdrant cache are filled by reflectors on that same client in that namespace (as the
//! controller does with `watchNamespaces`), the SecureQdrant's own material (API-key, CA and TLS
//! Secrets) is written by the real SecureQdrant reconcile, and Events are kept in memory. What
//! users do (create instances and tokens, rotate keys) is done as admin. Writes are counted from
//! the API server's audit log, for the operator's identity only.
//!
//! Part 2 runs the real binary (`secure-qdrant-operator run`, debug logs) as the chart's
//! ServiceAccount through the fault proxy, drives tokens through issue, key rotation, refusals
//! and API failures (injected by the proxy), then scans the operator's log, every Event, every
//! status and every error message for the API keys, the tokens and their signatures. A control
//! plants such values and proves the scan finds them.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/real_server.rs"]
mod real_server;

use in_process::{cached_versions, namespaced_stores, reflect_in, versions};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use control_plane::eventually;
use futures::StreamExt;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use real_server::{Counters, Env as RealEnv, Faults};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secure_qdrant_operator::access_tokens as token;
use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use secure_qdrant_operator::error::Result as ReconcileResult;
use secure_qdrant_operator::events::{EventLog, Events};
use secure_qdrant_operator::reconcile::{self, Context, RESYNC};
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::tls::{
    CaMaterial, CaSubject, Certificate, LeafMaterial, issue_ca, issue_client, issue_leaf,
    serving_dns_names,
};
use secure_qdrant_operator::tokens::KEY_FINGERPRINT_ANNOTATION;

const SQ: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const QAT_KIND: &str = "QdrantAccessToken";
const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
/// How long the operator binary may take to get somewhere (the machine is loaded).
const WITHIN: Duration = Duration::from_secs(180);

// =============================================================================================
// Part 1: token::reconcile in-process, with an injected clock
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_token_waits_for_the_instance_cache_and_keeps_its_secret() {
    use kube::runtime::watcher::Event;
    let env = Env::start("tok").await;
    env.instance(json!({})).await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let before = env
        .secret("frontend-qdrant-token")
        .await
        .expect("the token Secret");

    // A restarted operator whose SecureQdrant cache has not listed yet: were the token
    // reconciled now, its instance would look missing and its Secret would be deleted.
    env.settle().await;
    let (instances, mut writer) = kube::runtime::reflector::store::<SecureQdrant>();
    let qat = Arc::new(env.token("frontend").await);
    let reconcile = tokio::spawn(token::reconcile(qat, env.ctx.clone(), instances));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !reconcile.is_finished(),
        "the reconcile did not wait for the cache"
    );
    assert_eq!(
        env.secret("frontend-qdrant-token")
            .await
            .map(|s| s.metadata.uid),
        Some(before.metadata.uid.clone()),
        "the Secret was touched while the cache was empty"
    );
    let sq: SecureQdrant = serde_json::from_value(
        env.real
            .get(SQ_API, "SecureQdrant", &env.ns, SQ)
            .await
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
        .await
        .expect("the token Secret is kept");
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(after.data, before.data, "the same token");
    let ready = ready_condition(&env.token("frontend").await);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "TokenIssued")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_secret_named_like_another_instances_credentials_never_receives_them() {
    let env = Env::start("tok").await;
    env.instance(json!({})).await;
    let api: Api<SecureQdrant> = Api::namespaced(env.admin.clone(), &env.ns);
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
        env.real
            .insert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": taken, "namespace": env.ns,
                             "labels": {LABEL_MANAGED_BY: MANAGER},
                             "ownerReferences": [{
                                 "apiVersion": SQ_API, "kind": QAT_KIND,
                                 "name": qat.metadata.name, "uid": qat.metadata.uid,
                                 "controller": true}]},
                "stringData": {"token": "a token", "url": env.url("https", 6333)}
            }))
            .await
            .expect("the token's Secret");
        let before = env.secret(&taken).await.expect("the token's Secret");

        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": instance, "namespace": env.ns}, "spec": {}
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
        let after = env.secret(&taken).await.expect("the token's Secret");
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
            env.real
                .get("apps/v1", "StatefulSet", &env.ns, instance)
                .await
                .is_none(),
            "{instance}: half-applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reconcile_writes_secret_and_status_then_nothing_until_renewal_time() {
    let env = Env::start("tok").await;
    env.instance(json!({})).await; // TLS on (the default)
    let key = env.api_key().await;
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
        .await
        .expect("the token Secret is written");
    assert_eq!(
        data_keys(&secret),
        set(&["ca.crt", "grpc-url", "token", "url"]),
        "token Secret keys"
    );
    assert_eq!(
        text(&secret, "url").as_deref(),
        Some(env.url("https", 6333).as_str())
    );
    assert_eq!(
        text(&secret, "grpc-url").as_deref(),
        Some(env.url("https", 6334).as_str())
    );
    let tls_ca = env
        .secret("vectors-tls")
        .await
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
        json!({"exp": exp.as_second(), "access": "r", "subject": format!("{}/frontend", env.ns)})
    );

    let status = env.token_status("frontend").await;
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
    let ready = ready_condition(&env.token("frontend").await);
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
        env.reset().await;
        let action = env.reconcile("frontend").await.expect("reconciled");
        let counters = env.counters().await;
        assert_eq!(
            counters.writes(),
            0,
            "wrote before the renewal time: {:?}",
            counters.requests
        );
        assert_eq!(action, Action::requeue(until(now, renewal)));
        assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());
        assert_eq!(env.token_value("frontend-qdrant-token").await, token);
        if now == renewal - SignedDuration::from_secs(1) {
            // The Secrets were read by the reconcile before and have not changed since: what
            // it decided is remembered (no value), so none is read again.
            assert_eq!(counters.get("get", "secrets"), 0, "{:?}", counters.requests);
        }
    }

    // At the renewal time: a new token, a new expiry, one Secret write and one status write.
    env.set_now(renewal);
    env.reset().await;
    let action = env.reconcile("frontend").await.expect("reconciled");
    let counters = env.counters().await;
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
    let renewed = env.token_value("frontend-qdrant-token").await;
    assert_ne!(renewed, token, "no new token at the renewal time");
    let new_exp = renewal + SignedDuration::from_mins(10);
    assert_eq!(
        qdrant_claims(&renewed, &key).expect("the new token verifies")["exp"],
        json!(new_exp.as_second())
    );
    let status = env.token_status("frontend").await;
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
        ready_condition(&env.token("frontend").await)
            .last_transition_time
            .0,
        t0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_token_is_looked_at_again_within_the_resync_period() {
    let env = Env::start("tok").await;
    env.instance(json!({})).await;
    env.create_token(
        "daily",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    let t0 = env.now();
    let action = env.reconcile("daily").await.expect("reconciled");
    let status = env.token_status("daily").await;
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
    env.reset().await;
    let action = env.reconcile("daily").await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(env.counters().await.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_api_key_re_mints_a_token_that_verifies_only_under_the_new_key() {
    let env = Env::start("tok").await;
    env.instance(json!({})).await;
    let old_key = env.api_key().await;
    env.create_token(
        "reader",
        json!({"qdrantRef": {"name": SQ}, "access": {"collections": [{"collection": "docs", "access": "r"}]}}),
    )
    .await;
    env.reconcile("reader").await.expect("reconciled");
    let old_token = env.token_value("reader-qdrant-token").await;
    let old_fingerprint = env
        .secret("reader-qdrant-token")
        .await
        .and_then(|s| s.annotations().get(KEY_FINGERPRINT_ANNOTATION).cloned())
        .expect("key fingerprint annotation");

    // The API key is replaced (a user rotated it), long before the token's renewal time.
    let new_key = "rotated-key-0123456789abcdef0123456789abcdef";
    env.replace_api_key(new_key).await;
    env.set_now(env.now() + SignedDuration::from_mins(30));
    env.reset().await;
    env.reconcile("reader").await.expect("reconciled");
    let counters = env.counters().await;
    assert_eq!(
        counters.get("patch", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    let new_token = env.token_value("reader-qdrant-token").await;
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
        .await
        .and_then(|s| s.annotations().get(KEY_FINGERPRINT_ANNOTATION).cloned());
    assert_ne!(fingerprint.as_ref(), Some(&old_fingerprint));
    let notes = env.event_notes();
    assert!(
        notes.len() == 1 && notes[0].contains("API key changed"),
        "{notes:?}"
    );

    // And then it is stable again: the next reconcile writes nothing.
    env.reset().await;
    env.reconcile("reader").await.expect("reconciled");
    assert_eq!(env.counters().await.writes(), 0);
    assert_eq!(env.token_value("reader-qdrant-token").await, new_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manage_tokens_need_allow_manage_tokens_and_lose_their_secret_when_it_is_turned_off() {
    let env = Env::start("tok").await;
    env.instance(json!({})).await; // allowManageTokens defaults to false
    env.create_token(
        "admin",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "m"}}),
    )
    .await;

    env.reset().await;
    let action = env.reconcile("admin").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("admin").await);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(ready.message.contains("allowManageTokens"), "{ready:?}");
    assert!(ready.message.contains("spec.access.global"), "{ready:?}");
    assert!(
        env.real
            .get("v1", "Secret", &env.ns, "admin-qdrant-token")
            .await
            .is_none()
    );
    assert_eq!(secret_writes(&env.counters().await), 0);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "InvalidSpec".to_owned())]
    );
    // Refused again: no second Event, no status write.
    env.reset().await;
    env.reconcile("admin").await.expect("reconciled");
    assert_eq!(env.counters().await.writes(), 0);
    assert!(env.event_reasons().is_empty());

    // Allowed: a manage token is issued.
    env.patch_instance(json!({"spec": {"auth": {"allowManageTokens": true}}}))
        .await;
    env.reconcile("admin").await.expect("reconciled");
    let ready = ready_condition(&env.token("admin").await);
    assert_eq!(ready.status, "True", "{ready:?}");
    let token = env.token_value("admin-qdrant-token").await;
    assert_eq!(
        qdrant_claims(&token, &env.api_key().await).expect("verifies")["access"],
        json!("m")
    );

    // Disallowed again: Ready=False and our Secret is deleted (a manage token that may no
    // longer be issued is not left behind), and the status no longer describes a token.
    env.patch_instance(json!({"spec": {"auth": {"allowManageTokens": false}}}))
        .await;
    env.reset().await;
    env.reconcile("admin").await.expect("reconciled");
    let ready = ready_condition(&env.token("admin").await);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    let counters = env.counters().await;
    assert_eq!(
        counters.get("delete", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    assert!(
        env.real
            .get("v1", "Secret", &env.ns, "admin-qdrant-token")
            .await
            .is_none()
    );
    let status = env.token_status("admin").await;
    assert_eq!(status.expires_at, None, "{status:?}");
    assert_eq!(status.renewal_time, None, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_forbids_global_manage_tokens_cluster_wide_and_their_secrets_go() {
    let mut env = Env::start("tok").await;
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
    assert_eq!(ready_condition(&env.token("admin").await).status, "True");
    let reader_token = env.token_value("reader-qdrant-token").await;

    // The operator restarts with --allow-global-manage-tokens=false.
    env.restart_with(Settings {
        allow_global_manage_tokens: false,
        ..Settings::default()
    })
    .await;
    env.reset().await;
    let action = env.reconcile("admin").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("admin").await);
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
    assert!(env.secret("admin-qdrant-token").await.is_none());
    let counters = env.counters().await;
    assert_eq!(
        counters.get("delete", "secrets"),
        1,
        "{:?}",
        counters.requests
    );
    assert_eq!(secret_writes(&counters), 1, "{:?}", counters.requests);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "ManageTokensForbidden".to_owned())]
    );
    let status = env.token_status("admin").await;
    assert_eq!(status.secret_name, None, "{status:?}");
    assert_eq!(status.expires_at, None, "{status:?}");

    // Past its renewal time: still refused, nothing refreshed, no second Event.
    env.reconcile("reader").await.expect("reconciled");
    assert_eq!(
        env.token_value("reader-qdrant-token").await,
        reader_token,
        "a read token is unaffected"
    );
    assert_eq!(ready_condition(&env.token("reader").await).status, "True");
    env.set_now(t0() + SignedDuration::from_hours(48));
    env.reset().await;
    env.reconcile("admin").await.expect("reconciled");
    assert_eq!(env.counters().await.writes(), 0);
    assert!(env.event_reasons().is_empty());
    assert!(env.secret("admin-qdrant-token").await.is_none());

    // A new manage token never gets a Secret.
    env.create_token(
        "admin2",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "m"}}),
    )
    .await;
    env.reset().await;
    env.reconcile("admin2").await.expect("reconciled");
    assert_eq!(
        ready_condition(&env.token("admin2").await).reason,
        "ManageTokensForbidden"
    );
    assert_eq!(secret_writes(&env.counters().await), 0);
    assert!(env.secret("admin2-qdrant-token").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_exists_index_that_overflows_qdrants_usize_is_refused_and_nothing_is_issued() {
    // Qdrant parses `[n]` as a usize: 2^64 overflows it, and Qdrant would answer every request
    // with this token 401 ("not a JWT"). The token is refused instead, naming the key.
    let env = Env::start("tok").await;
    env.instance(json!({})).await;
    let spec = |key: &str| {
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"},
               "valueExists": {"collection": "tokens",
                               "matches": [{"key": key, "value": "x"}]}})
    };
    // The real API server refuses it first (the CRD's CEL rule), naming the key: nothing is
    // stored. (The in-memory API server never ran CEL, so the old test created it.)
    let refused = Api::<QdrantAccessToken>::namespaced(env.admin.clone(), &env.ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": SQ_API, "kind": QAT_KIND,
                "metadata": {"name": "revocable", "namespace": env.ns},
                "spec": spec("a[18446744073709551616]"),
            }))
            .unwrap(),
        )
        .await
        .expect_err("the API server refuses an index above 999999999");
    match refused {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(
                e.message.contains("spec.valueExists.matches[0].key")
                    && e.message.contains("at most 999999999"),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        env.real
            .get(SQ_API, QAT_KIND, &env.ns, "revocable")
            .await
            .is_none()
    );
    // The operator's own check, for a token stored before that rule existed: the object is
    // stored with a valid key and reconciled as the cache would hold the old one.
    env.create_token("revocable", spec("a[1]")).await;
    env.reset().await;
    env.settle().await;
    let mut stored = serde_json::to_value(env.token("revocable").await).unwrap();
    stored["spec"] = spec("a[18446744073709551616]");
    let stored: QdrantAccessToken = serde_json::from_value(stored).unwrap();
    let action = token::reconcile(Arc::new(stored), env.ctx.clone(), env.instances.clone())
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("revocable").await);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        ready.message.contains("spec.valueExists.matches[0].key")
            && ready.message.contains("array index above 999999999"),
        "{ready:?}"
    );
    assert!(env.secret("revocable-qdrant-token").await.is_none());
    assert_eq!(secret_writes(&env.counters().await), 0);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "InvalidSpec".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_missing_instance_is_not_ready_until_the_instance_exists() {
    let env = Env::start("tok").await;
    env.create_token(
        "early",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reset().await;
    let action = env.reconcile("early").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("early").await);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InstanceMissing"),
        "{ready:?}"
    );
    assert!(ready.message.contains("vectors"), "{ready:?}");
    assert_eq!(secret_writes(&env.counters().await), 0);
    assert_eq!(
        env.event_reasons(),
        vec![(EventType::Warning, "InstanceMissing".to_owned())]
    );

    // The instance appears: the token is issued.
    env.instance(json!({})).await;
    env.reconcile("early").await.expect("reconciled");
    assert_eq!(ready_condition(&env.token("early").await).status, "True");
    assert!(
        qdrant_claims(
            &env.token_value("early-qdrant-token").await,
            &env.api_key().await
        )
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_rbac_off_blocks_the_token() {
    let env = Env::start("tok").await;
    env.instance(json!({"auth": {"jwtRbac": false}})).await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reset().await;
    let action = env.reconcile("frontend").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    let ready = ready_condition(&env.token("frontend").await);
    assert_eq!(ready.status, "False", "{ready:?}");
    assert!(ready.message.contains("jwtRbac"), "{ready:?}");
    assert!(
        env.real
            .get("v1", "Secret", &env.ns, "frontend-qdrant-token")
            .await
            .is_none()
    );
    assert_eq!(secret_writes(&env.counters().await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_that_name_owned_by_someone_else_is_a_conflict_and_never_written() {
    let env = Env::start("tok").await;
    env.instance(json!({"auth": {"allowManageTokens": true}}))
        .await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);

    // (a) An application's own Secret, no labels, no owner.
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "frontend-qdrant-token", "namespace": env.ns},
        "stringData": {"token": "the application's own"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret created");
    let before = env
        .real
        .get("v1", "Secret", &env.ns, "frontend-qdrant-token")
        .await;
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
        .real
        .get("v1", "Secret", &env.ns, "shared")
        .await
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
            env.reset().await;
            for name in ["frontend", "second"] {
                let action = env.reconcile(name).await.expect("reconciled");
                assert_eq!(action, Action::await_change());
                let ready = ready_condition(&env.token(name).await);
                assert_eq!(
                    (ready.status.as_str(), ready.reason.as_str()),
                    ("False", "SecretConflict"),
                    "{name}: {ready:?}"
                );
            }
            env.reconcile("greedy").await.expect("reconciled");
            assert_eq!(ready_condition(&env.token("greedy").await).status, "False");
            let counters = env.counters().await;
            assert_eq!(secret_writes(&counters), 0, "{:?}", counters.requests);
        }
    }
    assert_eq!(
        env.real
            .get("v1", "Secret", &env.ns, "frontend-qdrant-token")
            .await,
        before,
        "the application's Secret was changed"
    );
    assert_eq!(
        env.real.get("v1", "Secret", &env.ns, "shared").await,
        Some(shared),
        "another token's Secret was changed"
    );
    let message = ready_condition(&env.token("frontend").await).message;
    assert!(message.contains("frontend-qdrant-token"), "{message}");
    assert!(message.contains("spec.secretName"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_token_garbage_collects_its_secret() {
    let env = Env::start("tok").await;
    env.instance(json!({})).await;
    let tokens: Api<QdrantAccessToken> = Api::namespaced(env.admin.clone(), &env.ns);

    // Plain deletion: the real garbage collector removes the Secret by owner uid (a moment
    // later: kube-controller-manager's garbage collector, not the API server, deletes it).
    env.create_token(
        "plain",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("plain").await.expect("reconciled");
    assert!(env.secret("plain-qdrant-token").await.is_some());
    tokens
        .delete("plain", &DeleteParams::background())
        .await
        .expect("deleted");
    assert!(
        env.real
            .get(SQ_API, QAT_KIND, &env.ns, "plain")
            .await
            .is_none()
    );
    env.garbage_collected("plain-qdrant-token").await;

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
    assert!(
        env.token("held")
            .await
            .metadata
            .deletion_timestamp
            .is_some()
    );
    env.set_now(env.now() + SignedDuration::from_hours(48));
    env.reset().await;
    let action = env.reconcile("held").await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert_eq!(env.counters().await.writes(), 0);
    assert!(env.secret("held-qdrant-token").await.is_some());
    tokens
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    assert!(
        env.real
            .get(SQ_API, QAT_KIND, &env.ns, "held")
            .await
            .is_none()
    );
    env.garbage_collected("held-qdrant-token").await;
    assert!(held.metadata.uid.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_secret_has_an_http_url_and_no_ca() {
    let env = Env::start("tok").await;
    env.instance(json!({"tls": {"enabled": false}})).await;
    env.create_token(
        "plain",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("plain").await.expect("reconciled");
    let secret = env.secret("plain-qdrant-token").await.expect("written");
    assert_eq!(data_keys(&secret), set(&["grpc-url", "token", "url"]));
    assert_eq!(
        text(&secret, "url").as_deref(),
        Some(env.url("http", 6333).as_str())
    );
    assert_eq!(
        text(&secret, "grpc-url").as_deref(),
        Some(env.url("http", 6334).as_str())
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
    let env = Env::start("tok").await;
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
    let secret = env.secret("frontend-qdrant-token").await.expect("written");
    assert_eq!(
        data_keys(&secret),
        set(&["ca.crt", "grpc-url", "tls.crt", "tls.key", "token", "url"])
    );
    let ca = Certificate::from_pem(
        &env.secret("vectors-ca")
            .await
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
    assert!(
        info.subject.contains(&format!("frontend.{}", env.ns)),
        "{}",
        info.subject
    );
    assert_eq!(
        client.cert().not_after(),
        t0 + SignedDuration::from_hours(1),
        "the instance's certificate lifetime"
    );
    // The application's ca.crt verifies the server; the server's ca.crt verifies the client.
    assert_eq!(
        text(&secret, "ca.crt"),
        env.secret("vectors-tls")
            .await
            .and_then(|s| text(&s, "ca.crt"))
    );

    let status = env.token_status("frontend").await;
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
    let cond = condition_of(
        &env.token("frontend").await,
        token::CLIENT_CERTIFICATE_READY,
    )
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
    let status_json = serde_json::to_string(&env.token("frontend").await.status).unwrap();
    assert!(!status_json.contains("PRIVATE KEY"), "{status_json}");

    // Before the renewal time: nothing is written, the same certificate stays.
    env.set_now(renewal - SignedDuration::from_secs(1));
    env.reset().await;
    env.reconcile("frontend").await.expect("reconciled");
    assert_eq!(secret_writes(&env.counters().await), 0);
    let kept = env.secret("frontend-qdrant-token").await.unwrap();
    assert_eq!(text(&kept, "tls.crt"), text(&secret, "tls.crt"));

    // At the renewal time: a new certificate and key, the token itself untouched.
    env.set_now(renewal);
    env.reset().await;
    env.reconcile("frontend").await.expect("reconciled");
    assert_eq!(env.counters().await.get("patch", "secrets"), 1);
    let renewed = env.secret("frontend-qdrant-token").await.unwrap();
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
    let plain = env.secret("frontend-qdrant-token").await.unwrap();
    assert_eq!(
        data_keys(&plain),
        set(&["ca.crt", "grpc-url", "token", "url"])
    );
    let after = env.token("frontend").await;
    assert!(condition_of(&after, token::CLIENT_CERTIFICATE_READY).is_none());
    let status = after.status.unwrap();
    assert!(status.client_certificate_not_after.is_none());
    assert!(status.client_certificate_renewal_time.is_none());
    let _ = qat;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_ca_rollover_client_certificates_come_only_from_a_ca_the_pods_trust() {
    let env = Env::start("tok").await;
    env.instance(json!({"tls": {"clientCertificates": true}}))
        .await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let old = client_certificate_of(&env.secret("frontend-qdrant-token").await.unwrap());
    let a =
        Certificate::from_pem(&text(&env.secret("vectors-ca").await.unwrap(), "tls.crt").unwrap())
            .unwrap();
    assert!(old.cert().is_signed_by(&a));

    // The instance's CA key is replaced (<n>-ca written first): the pods do not trust B yet.
    let b = issue_ca(
        &CaSubject::new(&env.ns, SQ),
        SignedDuration::from_hours(8760),
        env.now(),
    )
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
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
    env.reset().await;
    env.reconcile("frontend").await.expect("reconciled");
    let kept = client_certificate_of(&env.secret("frontend-qdrant-token").await.unwrap());
    assert_eq!(
        kept.cert().der(),
        old.cert().der(),
        "A's certificate is kept"
    );
    assert_eq!(secret_writes(&env.counters().await), 0);
    // A new token meanwhile: its token now, its certificate once the pods trust B.
    env.create_token(
        "batch",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    let action = env.reconcile("batch").await.expect("reconciled");
    let batch = env
        .secret("batch-qdrant-token")
        .await
        .expect("the token is issued");
    assert_eq!(
        data_keys(&batch),
        set(&["ca.crt", "grpc-url", "token", "url"])
    );
    let qat = env.token("batch").await;
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
        let moved = client_certificate_of(&env.secret(secret).await.unwrap());
        assert!(moved.cert().is_signed_by(b.cert()), "{name} from B");
        assert_eq!(
            text(&env.secret(secret).await.unwrap(), "ca.crt").as_deref(),
            Some(bundle.as_str()),
            "{name} trusts A and B"
        );
        let cond = condition_of(&env.token(name).await, token::CLIENT_CERTIFICATE_READY).unwrap();
        assert_eq!(cond.status, "True");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_replaced_and_a_broken_one_too() {
    let env = Env::start("tok").await;
    env.instance(json!({"tls": {"clientCertificates": true}}))
        .await;
    env.create_token(
        "frontend",
        json!({"qdrantRef": {"name": SQ}, "access": {"global": "r"}}),
    )
    .await;
    env.reconcile("frontend").await.expect("reconciled");
    let ca = CaMaterial::from_secret_data(&env.secret("vectors-ca").await.unwrap().data.unwrap())
        .unwrap();
    let api: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    // Someone puts a certificate from a foreign CA in place, then garbage.
    let foreign = issue_ca(
        &CaSubject::new("x", "y"),
        SignedDuration::from_hours(100),
        env.now(),
    )
    .unwrap();
    let stranger = issue_client(
        &foreign,
        &format!("frontend.{}", env.ns),
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
        let fixed = client_certificate_of(&env.secret("frontend-qdrant-token").await.unwrap());
        assert!(fixed.cert().is_signed_by(ca.cert()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_user_certificate_no_client_certificate_can_be_signed_and_the_condition_says_so() {
    let env = Env::start("tok").await;
    // The user's serving certificate (e.g. from cert-manager): the operator has no CA key.
    let ca = issue_ca(
        &CaSubject::new(&env.ns, "user"),
        SignedDuration::from_hours(8760),
        env.now(),
    )
    .unwrap();
    let leaf = issue_leaf(
        &ca,
        &serving_dns_names(SQ, &env.ns, "cluster.local", &[]),
        SignedDuration::from_hours(2160),
        env.now(),
    )
    .unwrap();
    let user: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vectors-cert", "namespace": env.ns,
            "labels": {"secureqdrant.dev/allowed-instance": "vectors"}},
        "type": "kubernetes.io/tls",
    }))
    .unwrap();
    let user = Secret {
        data: Some(leaf.to_secret_data(std::slice::from_ref(ca.cert()))),
        ..user
    };
    Api::<Secret>::namespaced(env.admin.clone(), &env.ns)
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
        .await
        .expect("the token is still issued");
    assert_eq!(
        data_keys(&secret),
        set(&["ca.crt", "grpc-url", "token", "url"])
    );
    let qat = env.token("frontend").await;
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
    env.reset().await;
    env.reconcile("frontend").await.expect("reconciled");
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());
}

// ---------------------------------------------------------------------------------------------
// Part 1 harness
// ---------------------------------------------------------------------------------------------

/// The test's world on the real control plane (its namespace, the operator's identity with the
/// chart's RBAC for that namespace, a fault proxy), reflector-fed caches on the operator's
/// client (through the proxy) and a Context with a movable clock.
struct Env {
    real: RealEnv,
    ns: String,
    /// As the operator (the chart's ServiceAccount), through the fault proxy.
    client: Client,
    /// As admin: what users and other controllers do.
    admin: Client,
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

/// How long the caches may take to catch up with the API server (the machine is loaded).
const CACHE_CATCH_UP: Duration = Duration::from_secs(120);

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_secs(now.duration_until(then).as_secs().unsigned_abs())
}

async fn caches_fill(ctx: &Context, instances: Option<&Store<SecureQdrant>>) {
    let ready = async {
        ctx.stores.wait_until_ready().await
            && match instances {
                Some(i) => i.wait_until_ready().await.is_ok(),
                None => true,
            }
    };
    assert!(
        tokio::time::timeout(CACHE_CATCH_UP, ready)
            .await
            .unwrap_or(false),
        "caches did not fill"
    );
}

impl Env {
    async fn start(prefix: &str) -> Env {
        let real = RealEnv::namespaced(prefix).await;
        let ns = real.ns.clone();
        let client = real.client.clone();
        let admin = real.admin.clone();
        let mut tasks = Vec::new();
        // The same caches the controller keeps: managed objects only, by label.
        let stores = namespaced_stores(&client, &ns, &mut tasks);
        let instances = reflect_in::<SecureQdrant>(&client, &ns, &mut tasks, false);
        let clock = Arc::new(Mutex::new(t0()));
        let (events, log) = Events::memory();
        let reading = clock.clone();
        let ctx = Context::new(client.clone(), stores, events, Settings::default())
            .with_clock(Arc::new(move || *reading.lock().unwrap()));
        caches_fill(&ctx, Some(&instances)).await;
        Env {
            real,
            ns,
            client,
            admin,
            ctx: Arc::new(ctx),
            events: log,
            instances,
            clock,
            tasks,
        }
    }

    /// The operator restarted with `settings`: a new Context (fresh caches, no memory of its
    /// writes) on the same API server and clock.
    async fn restart_with(&mut self, settings: Settings) {
        let stores = namespaced_stores(&self.client, &self.ns, &mut self.tasks);
        let (events, log) = Events::memory();
        let reading = self.clock.clone();
        let ctx = Context::new(self.client.clone(), stores, events, settings)
            .with_clock(Arc::new(move || *reading.lock().unwrap()));
        caches_fill(&ctx, None).await;
        self.ctx = Arc::new(ctx);
        self.events = log;
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn set_now(&self, now: Timestamp) {
        *self.clock.lock().unwrap() = now;
    }

    /// Starts counting the operator identity's requests afresh (audit log) and forgets the
    /// Events recorded so far.
    async fn reset(&self) {
        self.real.reset_counters().await;
        self.events.lock().unwrap().clear();
    }

    /// The operator identity's requests since the last `reset`, from the audit log.
    async fn counters(&self) -> Counters {
        self.real.counters().await
    }

    /// `https://vectors.<ns>.svc:<port>` and the like.
    fn url(&self, scheme: &str, port: u16) -> String {
        format!("{scheme}://{SQ}.{}.svc:{port}", self.ns)
    }

    /// Creates SecureQdrant `vectors` with `spec` (as a user: admin) and runs the SecureQdrant
    /// reconcile once, so its API-key, CA and TLS Secrets exist as the operator writes them.
    async fn instance(&self, spec: Value) {
        let api: Api<SecureQdrant> = Api::namespaced(self.admin.clone(), &self.ns);
        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": SQ, "namespace": self.ns}, "spec": spec
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
            self.secret("vectors-api-key").await.is_some(),
            "no API-key Secret"
        );
        self.reset().await;
    }

    /// A merge patch of the instance, as its user (admin).
    async fn patch_instance(&self, patch: Value) {
        let api: Api<SecureQdrant> = Api::namespaced(self.admin.clone(), &self.ns);
        api.patch(SQ, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("SecureQdrant patched");
    }

    /// The instance's API key, as stored.
    async fn api_key(&self) -> String {
        self.secret("vectors-api-key")
            .await
            .and_then(|s| text(&s, "api-key"))
            .expect("an API key")
    }

    /// Replaces the `api-key` of `vectors-api-key` (what a user rotating the key does).
    async fn replace_api_key(&self, key: &str) {
        let api: Api<Secret> = Api::namespaced(self.admin.clone(), &self.ns);
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

    /// Creates a QdrantAccessToken as its user (admin).
    async fn create_token_with(&self, name: &str, meta: Value, spec: Value) -> QdrantAccessToken {
        let mut metadata = meta;
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(self.ns);
        let qat: QdrantAccessToken = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": QAT_KIND, "metadata": metadata, "spec": spec
        }))
        .expect("a QdrantAccessToken");
        Api::<QdrantAccessToken>::namespaced(self.admin.clone(), &self.ns)
            .create(&PostParams::default(), &qat)
            .await
            .expect("QdrantAccessToken created")
    }

    /// Reads the token as the controller would get it (after its caches caught up) and runs
    /// one reconcile.
    async fn reconcile(&self, name: &str) -> ReconcileResult<Action> {
        self.settle().await;
        let qat = self.token(name).await;
        token::reconcile(Arc::new(qat), self.ctx.clone(), self.instances.clone()).await
    }

    async fn token(&self, name: &str) -> QdrantAccessToken {
        Api::<QdrantAccessToken>::namespaced(self.admin.clone(), &self.ns)
            .get_opt(name)
            .await
            .expect("QdrantAccessToken read")
            .unwrap_or_else(|| panic!("no QdrantAccessToken {name}"))
    }

    async fn token_status(
        &self,
        name: &str,
    ) -> secure_qdrant_operator::crd::QdrantAccessTokenStatus {
        self.token(name).await.status.expect("a status")
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
            .get_opt(name)
            .await
            .expect("Secret read")
    }

    async fn token_value(&self, secret: &str) -> String {
        self.secret(secret)
            .await
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

    /// Waits until the garbage collector has removed Secret `name` (its owner is gone).
    async fn garbage_collected(&self, name: &str) {
        let api = Api::<Secret>::namespaced(self.admin.clone(), &self.ns);
        eventually(WITHIN, || {
            let api = api.clone();
            async move {
                match api.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err(format!("the Secret {name} outlived its QdrantAccessToken")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until the caches hold exactly what the API server holds in the namespace (managed
    /// Secrets and every SecureQdrant, by resourceVersion), as they would when a watch event
    /// triggers a reconcile.
    async fn settle(&self) {
        let deadline = Instant::now() + CACHE_CATCH_UP;
        loop {
            let secrets = versions(
                self.real
                    .list("v1", "Secret", &self.ns)
                    .await
                    .into_iter()
                    .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
            );
            let instances = versions(
                self.real
                    .list(SQ_API, "SecureQdrant", &self.ns)
                    .await
                    .into_iter(),
            );
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Secret writes of any kind (create, update, patch, delete).
fn secret_writes(c: &Counters) -> u64 {
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
    let env = RealEnv::namespaced("tokleak").await;
    let ns = env.ns.clone();
    let mut operator = Operator::spawn(&env);
    wait_log(&operator, "starting the SecureQdrant").await;

    // Two instances: one that allows manage tokens, one with JWTs off. The first one's pods are
    // never scheduled (a nodeSelector no node matches), so its API-key rotation below stays in
    // its first phase, as this test assumes: with the real StatefulSet controller and kwok the
    // pods become Ready, and the rotation may move on meanwhile (tokens are signed with the next
    // key once every pod accepts it) while the test still expects the current key.
    for (name, spec) in [
        (
            SQ,
            json!({"auth": {"allowManageTokens": true},
                   "pod": {"nodeSelector": {"secureqdrant.dev/test-no-such-node": "true"}}}),
        ),
        ("locked", json!({"auth": {"jwtRbac": false}})),
    ] {
        env.insert(json!({"apiVersion": SQ_API, "kind": "SecureQdrant",
                "metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .await
            .expect("SecureQdrant inserted");
    }
    // An instance on the user's own key.
    let byo_keys = [
        "byo-first-7d1e3a5c9b2f4e6a8c0d1f3b5a7c9e2d",
        "byo-second-2a4c6e8f0b1d3f5a7c9e1b3d5f7a9c0e",
    ];
    env.insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "byo-key", "namespace": ns,
                "labels": {"secureqdrant.dev/allowed-instance": "byo"}},
            "data": {"key": STANDARD.encode(byo_keys[0])}}))
        .await
        .expect("Secret inserted");
    env.insert(json!({"apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": "byo", "namespace": ns},
            "spec": {"auth": {"apiKeySecretRef": {"name": "byo-key", "key": "key"}}}}))
        .await
        .expect("SecureQdrant inserted");
    // An application's Secret that a token will collide with.
    env.insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "taken", "namespace": ns},
            "data": {"token": STANDARD.encode("not the operator's")}}))
        .await
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
    let watch = SecretWatch::start(&env).await;
    let mut monitors: Vec<ValueMonitor> = issued
        .iter()
        .map(|t| watch.monitor(&format!("{t}-qdrant-token"), "token"))
        .collect();
    monitors.push(watch.monitor("vectors-api-key", "api-key"));
    monitors.push(watch.monitor("vectors-api-key", "read-only-api-key"));
    monitors.push(watch.monitor("vectors-api-key", "next-api-key"));
    monitors.push(watch.monitor("byo-key", "key"));
    monitors.push(watch.monitor("byo-reader-qdrant-token", "token"));
    monitors.push(watch.monitor("locked-api-key", "api-key"));
    monitors.push(watch.monitor("locked-api-key", "read-only-api-key"));
    for (name, spec) in &tokens {
        env.insert(json!({"apiVersion": SQ_API, "kind": QAT_KIND,
                "metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .await
            .expect("QdrantAccessToken inserted");
    }
    for name in issued {
        wait_ready(&env, &operator, name, "True", "TokenIssued").await;
    }
    wait_ready(&env, &operator, "conflict", "False", "SecretConflict").await;
    wait_ready(&env, &operator, "orphan", "False", "InstanceMissing").await;
    wait_ready(&env, &operator, "nojwt", "False", "InvalidSpec").await;
    wait_ready(&env, &operator, "byo-reader", "True", "TokenIssued").await;
    wait_token(&env, &operator, "byo-reader", |token| {
        qdrant_claims(token, byo_keys[0]).is_ok()
    })
    .await;

    // Rotate the API key: every token is re-minted under the new key.
    let new_key = "rotated-3f9a1c5e7b2d4f6a8c0e1b3d5f7a9c2e";
    let client = env.admin.clone();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "vectors-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"api-key": STANDARD.encode(new_key)}})),
        )
        .await
        .expect("API key rotated");
    for name in issued {
        wait_token(&env, &operator, name, |token| {
            qdrant_claims(token, new_key).is_ok()
        })
        .await;
    }
    // The user changes their own key: the token is re-signed with it (the operator watches the
    // referenced Secret for tokens too).
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "byo-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"key": STANDARD.encode(byo_keys[1])}})),
        )
        .await
        .expect("user key changed");
    wait_token(&env, &operator, "byo-reader", |token| {
        qdrant_claims(token, byo_keys[1]).is_ok()
    })
    .await;
    // A rotation asked for through the annotation: a next key is generated (the pods are never
    // scheduled here, so it stays in its first phase).
    Api::<SecureQdrant>::namespaced(client.clone(), &ns)
        .patch(
            SQ,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "secureqdrant.dev/rotate-api-key": "leak-scan"}}})),
        )
        .await
        .expect("rotation requested");
    eventually(WITHIN, || async {
        env.get("v1", "Secret", &ns, "vectors-api-key")
            .await
            .filter(|s| s["data"]["next-api-key"].is_string())
            .map(|_| ())
            .ok_or_else(|| "no next-api-key yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));

    // The hold: the real StatefulSet controller made the instance's first pod, and it is not
    // scheduled.
    let pod = eventually(WITHIN, || async {
        env.get("v1", "Pod", &ns, &format!("{SQ}-0"))
            .await
            .ok_or_else(|| format!("no pod {SQ}-0 yet"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(pod["spec"]["nodeName"].is_null(), "{}", pod["spec"]);
    assert_eq!(pod["status"]["phase"], "Pending", "{}", pod["status"]);

    // The API refuses the operator's Secret writes for a while (the fault proxy), while a spec
    // change asks for a new token: reconcile errors reach the log (and the error policy).
    env.set_faults(&Faults {
        seed: 5,
        error_rate: 1.0,
        error_codes: vec![500, 409],
        verbs: vec!["patch".into()],
        resources: vec!["secrets".into()],
        ..Faults::default()
    });
    Api::<QdrantAccessToken>::namespaced(client.clone(), &ns)
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifetime": "12h"}})),
        )
        .await
        .expect("reader patched");
    wait_log(&operator, "token reconcile failed").await;
    env.clear_faults();
    wait_token(&env, &operator, "reader", |token| {
        qdrant_claims(token, new_key).is_ok_and(|c| {
            let left = c["exp"].as_i64().unwrap_or_default() - Timestamp::now().as_second();
            (11 * 3600..13 * 3600).contains(&left)
        })
    })
    .await;
    // The last writes have settled: the reader's status describes the token in its Secret
    // (the status is written after the Secret) for the latest generation.
    wait_reader_settled(&env, &operator).await;
    operator.assert_healthy();
    let log = operator.log();
    operator.kill();
    // (Only a real API server can say this:) the chart's RBAC let the operator do all of it.
    let counters = env.counters().await;
    assert!(counters.writes() > 0, "no request of the operator counted");
    assert!(
        counters.forbidden().is_empty(),
        "403s: {:?}",
        counters.forbidden()
    );

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
    let places = Places::collect(&env, &log).await;
    places.assert_meaningful(&ns, &tokens.map(|(n, _)| n));
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
    env.insert(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "planted", "namespace": ns},
            "eventTime": "2030-01-01T00:00:00.000000Z", "reportingController": "test",
            "reportingInstance": "test", "action": "Issue", "reason": "Planted", "type": "Normal",
            "regarding": {"kind": QAT_KIND, "name": "reader", "namespace": ns},
            "note": format!("oops {sig}")}))
        .await
        .expect("Event planted");
    let mut status = env.get(SQ_API, QAT_KIND, &ns, "docs").await.expect("docs")["status"].clone();
    status["conditions"][0]["message"] = json!(format!("key was {}", STANDARD.encode(&key)));
    env.set_status(SQ_API, QAT_KIND, &ns, "docs", status)
        .await
        .expect("status planted");
    let planted_log = format!("{log}\n{{\"error\":\"bad token {whole_token}\"}}\n");
    let planted = Places::collect(&env, &planted_log).await;
    let found = secrets.find_in(&planted);
    let found_where: BTreeSet<&str> = found.iter().map(|l| l.place.as_str()).collect();
    let planted_event = format!("Event {ns}/planted");
    let planted_status = format!("status of QdrantAccessToken {ns}/docs");
    assert_eq!(
        found_where,
        BTreeSet::from([
            planted_event.as_str(),
            planted_status.as_str(),
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

/// The operator binary as the env's identity (the chart's ServiceAccount, RBAC for the test's
/// namespace), through the env's fault proxy, watching only the test's namespace, with JSON
/// debug logs (its own and the kube client's); killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Operator {
    fn spawn(env: &RealEnv) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, env.kubeconfig()).expect("kubeconfig written");
        let log = dir.path().join("operator.log");
        let file = File::create(&log).expect("log file");
        let mut cmd = Command::new(OPERATOR);
        cmd.args(["run", "--log-format", "json", "--http-addr", "127.0.0.1:0"])
            .arg("--namespaces")
            .arg(&env.ns)
            .env("KUBECONFIG", &kubeconfig)
            .env("LOG_LEVEL", "secure_qdrant_operator=debug,kube=debug,info")
            // Its Lease goes to the chart's namespace, where the chart's RBAC allows it.
            .env("POD_NAMESPACE", &env.identity.namespace)
            .env_remove("HTTP_ADDR")
            .env_remove("WATCH_NAMESPACES")
            .env_remove("POD_NAME")
            .env_remove("CLUSTER_DOMAIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        // The operator dies with the thread that started it, even when this test binary is
        // killed and Drop never runs.
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
        let child = cmd.spawn().expect("operator binary starts");
        Operator {
            child,
            log,
            _dir: dir,
        }
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

async fn wait_log(operator: &Operator, needle: &str) {
    eventually(WITHIN, || async {
        operator
            .log()
            .contains(needle)
            .then_some(())
            .ok_or_else(|| format!("the operator log has no {needle:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}

async fn wait_ready(env: &RealEnv, operator: &Operator, name: &str, status: &str, reason: &str) {
    eventually(WITHIN, || async {
        let qat = env
            .get(SQ_API, QAT_KIND, &env.ns, name)
            .await
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

async fn wait_token(env: &RealEnv, operator: &Operator, name: &str, done: impl Fn(&str) -> bool) {
    let secret = format!("{name}-qdrant-token");
    let done = &done;
    let secret = &secret;
    eventually(WITHIN, || async move {
        let token = env
            .get("v1", "Secret", &env.ns, secret)
            .await
            .and_then(|s| s["data"]["token"].as_str().map(decode))
            .ok_or_else(|| format!("no token in {secret}"))?;
        done(&token)
            .then_some(())
            .ok_or_else(|| format!("{secret}: not the expected token yet"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}

/// Waits until the reader's last reconcile has written everything: its status is for the
/// latest generation, Ready, and its expiry is that of the token in its Secret.
async fn wait_reader_settled(env: &RealEnv, operator: &Operator) {
    eventually(WITHIN, || async {
        let qat = env
            .get(SQ_API, QAT_KIND, &env.ns, "reader")
            .await
            .ok_or("no reader")?;
        let token = env
            .get("v1", "Secret", &env.ns, "reader-qdrant-token")
            .await
            .and_then(|s| s["data"]["token"].as_str().map(decode))
            .ok_or("no reader token")?;
        let exp = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
            .map_err(|e| e.to_string())?
            .claims["exp"]
            .as_i64()
            .unwrap_or_default();
        let expires_at = qat["status"]["expiresAt"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_second());
        let ready = qat["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"] == "True")
            .unwrap_or(false);
        let current = qat["status"]["observedGeneration"] == qat["metadata"]["generation"];
        (ready && current && expires_at == Some(exp))
            .then_some(())
            .ok_or_else(|| format!("reader's status not settled: {}", qat["status"]))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.tail()));
}

fn decode(b64: &str) -> String {
    String::from_utf8(STANDARD.decode(b64).expect("base64")).expect("UTF-8")
}

/// (Secret, key) → every value it took.
type Seen = Arc<Mutex<BTreeMap<(String, String), BTreeSet<String>>>>;

/// Every value every key of every Secret of the namespace takes, from a watch as admin (the
/// API server sends each change of each Secret, in order).
struct SecretWatch {
    seen: Seen,
    task: JoinHandle<()>,
}

impl SecretWatch {
    /// Starts the watch; returns once its initial list is in.
    async fn start(env: &RealEnv) -> SecretWatch {
        let seen: Seen = Arc::default();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
        let api = Api::<Secret>::namespaced(env.admin.clone(), &env.ns);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut listed = Some(listed_tx);
                let mut stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                            let name = s.name_any();
                            let mut seen = seen.lock().unwrap();
                            for (key, value) in s.data.unwrap_or_default() {
                                if let Ok(v) = String::from_utf8(value.0) {
                                    seen.entry((name.clone(), key)).or_default().insert(v);
                                }
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = listed.take() {
                                let _ = tx.send(());
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        tokio::time::timeout(WITHIN, listed_rx)
            .await
            .expect("the Secret watch lists")
            .expect("the Secret watch runs");
        SecretWatch { seen, task }
    }

    /// The values of `key` in Secret `secret` (recorded from the start of the watch).
    fn monitor(&self, secret: &str, key: &str) -> ValueMonitor {
        ValueMonitor {
            key: key.to_owned(),
            secret: secret.to_owned(),
            seen: self.seen.clone(),
        }
    }
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every value one key of one Secret takes.
struct ValueMonitor {
    key: String,
    secret: String,
    seen: Seen,
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
            let seen = m
                .seen
                .lock()
                .unwrap()
                .get(&(m.secret.clone(), m.key.clone()))
                .cloned()
                .unwrap_or_default();
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
    /// Events and statuses of every namespace of this control plane (as admin).
    async fn collect(env: &RealEnv, log: &str) -> Places {
        let mut texts = BTreeMap::new();
        texts.insert("operator log".to_owned(), log.to_owned());
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"error\"") || l.contains("ERROR") || l.contains("WARN"))
            .collect();
        texts.insert("error messages".to_owned(), errors.join("\n"));
        for api in ["events.k8s.io/v1", "v1"] {
            for e in env.list(api, "Event", "").await {
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
            for o in env.list(SQ_API, kind, "").await {
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
    fn assert_meaningful(&self, ns: &str, tokens: &[&str]) {
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
            let status = &self.texts[&format!("status of {QAT_KIND} {ns}/{name}")];
            assert!(status.contains("Ready"), "{name} has no Ready condition");
        }
    }
}
