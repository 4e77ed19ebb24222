//! API-key rotation (`secureqdrant.dev/rotate-api-key`) driven through the real SecureQdrant
//! reconcile, in-process, against the REAL control plane (tests/support/control_plane.rs):
//! the reconcile runs as the operator's identity (the chart's RBAC for the test's namespace)
//! through the fault proxy, with caches fed by real watches, and a Context whose clock the test
//! moves.
//!
//! The StatefulSet is rolled out by the real StatefulSet controller (kwok makes the pods Ready);
//! a rollout is held by cordoning a kwok Node of the test's own that the instance is pinned to
//! (tests/support/held_node.rs), and released by `Env::roll_out`. Every phase is also checked
//! after an operator restart (a fresh Context and fresh caches).
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/held_node.rs"]
mod held_node;
#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/real_server.rs"]
mod real_server;

use held_node::HeldNode;
use in_process::{
    cached_versions, namespaced_stores as managed_stores, reflect_in as reflect, versions,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use secure_qdrant_operator::reconcile::child_meta::ChildMeta;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secure_qdrant_operator::api_keys::{
    HANDLED_ANNOTATION, KEYS_FINGERPRINT_ANNOTATION, PHASE_ANNOTATION, Phase,
    ROLLED_OUT_AT_ANNOTATION, ROTATE_API_KEY_ANNOTATION,
};
use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::events::{EventLog, Events};
use secure_qdrant_operator::reconcile::{self, Context};
use secure_qdrant_operator::settings::Settings;

const SQ: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const KEY_SECRET: &str = "vectors-api-key";
const API_KEY_ENV: &str = "QDRANT__SERVICE__API_KEY";
const ALT_API_KEY_ENV: &str = "QDRANT__SERVICE__ALT_API_KEY";

// =============================================================================================
// Tests
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_introduces_rolls_out_waits_the_grace_period_and_promotes() {
    let mut env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}})).await;
    let old = env.api_key().await;
    let t0 = env.now();

    // Idle: no next key, no ALT env.
    assert_eq!(env.reconcile().await, Action::requeue(reconcile::RESYNC));
    env.assert_idle(&old).await;

    // Asked for: the new key is introduced, the old one kept, both in the pods' env.
    env.request("n1").await;
    let action = env.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let new = env.assert_introduced(&old, None).await;
    assert_ne!(new, old, "a new key");
    assert!(
        env.event_reasons()
            .contains(&"ApiKeyRotationStarted".to_owned()),
        "{:?}",
        env.event_reasons()
    );

    // Not rolled out: nothing advances, whatever the time (and after a restart).
    for minutes in [0, 5, 120] {
        env.set_now(t0 + SignedDuration::from_mins(minutes));
        env.reconcile().await;
        assert_eq!(env.assert_introduced(&old, None).await, new);
        env.restart().await;
        env.reconcile().await;
        assert_eq!(
            env.assert_introduced(&old, None).await,
            new,
            "a restart generated a second new key or advanced"
        );
    }
    // The real StatefulSet controller has seen the new template (both keys) and reports its
    // rollout as not done: the rollout of the previous template (old key only) is not the one
    // waited for. (The in-memory server had no controller: there, observedGeneration stayed
    // behind instead.)
    let sts = control_plane::eventually(Duration::from_secs(120), || async {
        let sts = env.statefulset().await;
        let observed = sts.status.as_ref().and_then(|s| s.observed_generation);
        if observed >= sts.metadata.generation {
            Ok(sts)
        } else {
            Err(format!("observed {observed:?}"))
        }
    })
    .await
    .expect("the StatefulSet controller observes the new template");
    assert!(!held_node::rolled_out(&sts), "{:?}", sts.status);
    let status = sts.status.expect("a status");
    assert_ne!(
        status.update_revision, status.current_revision,
        "the template changed with the new key"
    );

    // Rolled out with both keys: the time is recorded.
    let t1 = t0 + SignedDuration::from_hours(3);
    env.set_now(t1);
    env.roll_out().await;
    let action = env.reconcile().await;
    // The grace period (1h), capped by the resync period.
    assert_eq!(action, Action::requeue(reconcile::RESYNC));
    assert_eq!(env.assert_introduced(&old, Some(t1)).await, new);
    assert!(
        env.event_reasons()
            .contains(&"ApiKeyRotationBothKeysActive".to_owned()),
        "{:?}",
        env.event_reasons()
    );

    // Within the grace period (default 1h): nothing changes, also after a restart, not a
    // second early.
    for now in [
        t1 + SignedDuration::from_mins(1),
        t1 + SignedDuration::from_secs(3599),
    ] {
        env.set_now(now);
        let action = env.reconcile().await;
        assert_eq!(
            action,
            Action::requeue(until(now, t1 + SignedDuration::from_hours(1)).min(reconcile::RESYNC))
        );
        assert_eq!(env.assert_introduced(&old, Some(t1)).await, new);
        env.restart().await;
        env.reconcile().await;
        assert_eq!(env.assert_introduced(&old, Some(t1)).await, new);
    }

    // After the grace period: swapped. The new key becomes Qdrant's api_key (what peers send),
    // the old one its alt_api_key; the Secret's data is unchanged. Nothing advances until the
    // pods have rolled, also after a restart.
    let t2 = t1 + SignedDuration::from_hours(1);
    env.set_now(t2);
    let before = env.template_fingerprint().await;
    assert_eq!(
        env.reconcile().await,
        Action::requeue(Duration::from_secs(30))
    );
    env.assert_swapped(&old, &new).await;
    assert_ne!(env.template_fingerprint().await, before, "the pods roll");
    assert!(
        env.event_reasons()
            .contains(&"ApiKeyRotationSwapped".to_owned()),
        "{:?}",
        env.event_reasons()
    );
    for hours in [1, 30] {
        env.set_now(t2 + SignedDuration::from_hours(hours));
        env.reconcile().await;
        env.assert_swapped(&old, &new).await;
        env.restart().await;
        env.reconcile().await;
        env.assert_swapped(&old, &new).await;
    }

    // Rolled out: promoted. api-key holds the new key, the only one Qdrant gets; next-api-key
    // stays until no pod of the swapped template can restart (their env refers to it).
    env.roll_out().await;
    env.reconcile().await;
    env.assert_promoted(&new).await;
    assert!(
        env.event_reasons().contains(&"ApiKeyRotated".to_owned()),
        "{:?}",
        env.event_reasons()
    );
    env.restart().await;
    env.reconcile().await;
    env.assert_promoted(&new).await;

    // Rolled out: finished, without another roll.
    let promoted = env.template_fingerprint().await;
    env.roll_out().await;
    env.reconcile().await;
    env.assert_idle(&new).await;
    assert_eq!(env.template_fingerprint().await, promoted, "no fourth roll");
    assert_eq!(
        env.secret_annotations()
            .await
            .get(HANDLED_ANNOTATION)
            .map(String::as_str),
        Some("n1")
    );
    assert!(
        env.event_reasons()
            .contains(&"ApiKeyRotationFinished".to_owned()),
        "{:?}",
        env.event_reasons()
    );

    // The same request value is handled once: no second rotation, also after a restart and a
    // rollout.
    env.roll_out().await;
    for hours in [2, 30] {
        env.set_now(t1 + SignedDuration::from_hours(hours));
        env.reconcile().await;
        env.assert_idle(&new).await;
        env.restart().await;
        env.reconcile().await;
        env.assert_idle(&new).await;
    }

    // A new value starts a new rotation from the promoted key.
    env.request("n2").await;
    env.reconcile().await;
    let newer = env.assert_introduced(&new, None).await;
    assert_ne!(newer, new);
    assert_ne!(newer, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_right_after_the_start_and_after_the_rollout_resumes_from_the_recorded_phase() {
    let mut env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}, "auth": {"keyRotationGracePeriod": "10m"}}))
        .await;
    let old = env.api_key().await;
    let t0 = env.now();

    env.request("r1").await;
    env.restart().await;
    env.reconcile().await;
    let new = env.assert_introduced(&old, None).await;

    // Restart, then the rollout completes: recorded once, with the time of the restarted
    // operator's reconcile.
    env.restart().await;
    env.roll_out().await;
    let t1 = t0 + SignedDuration::from_mins(3);
    env.set_now(t1);
    let action = env.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    assert_eq!(env.assert_introduced(&old, Some(t1)).await, new);

    // Another restart later: the recorded time stands (not re-recorded), the grace period is
    // the spec's 10 minutes.
    env.restart().await;
    env.set_now(t1 + SignedDuration::from_mins(9));
    env.reconcile().await;
    assert_eq!(env.assert_introduced(&old, Some(t1)).await, new);
    env.restart().await;
    env.set_now(t1 + SignedDuration::from_mins(10));
    env.reconcile().await;
    env.assert_swapped(&old, &new).await;
    env.restart().await;
    env.roll_out().await;
    env.reconcile().await;
    env.assert_promoted(&new).await;
    env.restart().await;
    env.roll_out().await;
    env.reconcile().await;
    env.assert_idle(&new).await;
    env.restart().await;
    env.reconcile().await;
    env.assert_idle(&new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_cache_that_lags_behind_a_rotation_step_never_rolls_the_pods_back() {
    use kube::runtime::watcher::Event;
    let env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}, "auth": {"keyRotationGracePeriod": "1m"}}))
        .await;
    let old = env.api_key().await;
    env.request("r").await;
    env.reconcile().await;
    let new = env.assert_introduced(&old, None).await;
    env.roll_out().await;
    env.reconcile().await;
    env.set_now(env.now() + SignedDuration::from_mins(1));
    env.reconcile().await;
    env.assert_swapped(&old, &new).await;
    env.roll_out().await;

    // An operator whose Secret cache stops at phase Swapped (its watch lags behind).
    let (secrets, mut writer) = kube::runtime::reflector::store::<ChildMeta<Secret>>();
    writer.apply_watcher_event(&Event::Init);
    for s in env.real.list("v1", "Secret", &env.ns).await {
        let s: kube::core::PartialObjectMeta<Secret> = serde_json::from_value(s).unwrap();
        writer.apply_watcher_event(&Event::InitApply(ChildMeta::new(&s.metadata)));
    }
    writer.apply_watcher_event(&Event::InitDone);
    let mut stores = env.ctx.stores.clone();
    stores.secrets = secrets;
    let clock = env.clock.clone();
    let (events, _) = Events::memory();
    let lagging = Arc::new(
        Context::new(env.client.clone(), stores, events, Settings::default())
            .with_clock(Arc::new(move || *clock.lock().unwrap())),
    );
    let run = |ctx: Arc<Context>| async {
        env.settle().await;
        let sq = env.sq().await;
        Box::pin(reconcile::reconcile(Arc::new(sq), ctx))
            .await
            .expect("reconciled");
        env.settle().await;
    };

    // It promotes (its cache shows Swapped, rolled out), the pods roll to the new key alone.
    run(lagging.clone()).await;
    env.assert_promoted(&new).await;
    let promoted = env.template_fingerprint().await;
    // Its next reconcile, on the same stale cache, must not take the Secret for Swapped again
    // (that would give the pods the Swapped template back: two needless rolls).
    run(lagging.clone()).await;
    env.assert_promoted(&new).await;
    assert_eq!(
        env.template_fingerprint().await,
        promoted,
        "rolled back to Swapped"
    );
    env.roll_out().await;
    run(lagging.clone()).await;
    env.assert_idle(&new).await;
    // And still none later, on that cache (older than every write since).
    let finished = env.template_fingerprint().await;
    run(lagging).await;
    env.assert_idle(&new).await;
    assert_eq!(env.template_fingerprint().await, finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_key_removed_by_hand_abandons_the_rotation_or_stops_it_when_pods_depend_on_it() {
    let mut env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}, "auth": {"keyRotationGracePeriod": "1m"}}))
        .await;
    let old = env.api_key().await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    let drop_next = || async {
        secrets
            .patch(
                KEY_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"next-api-key": null}})),
            )
            .await
            .expect("next-api-key removed");
    };

    // Introduced and rolled out (rolled-out-at recorded), then next-api-key is removed: no pod
    // needs it (they run with api-key as api_key), so the rotation is abandoned cleanly...
    env.request("a").await;
    env.reconcile().await;
    env.roll_out().await;
    env.reconcile().await;
    assert!(
        env.secret_annotations()
            .await
            .contains_key(ROLLED_OUT_AT_ANNOTATION)
    );
    drop_next().await;
    env.reconcile().await;
    env.assert_idle(&old).await;
    // Again, rolled out, and next-api-key is removed together with a new request: the new
    // rotation starts without the old rolled-out-at (it would skip the rollout, and tokens
    // would be signed with a key no pod has).
    env.roll_out().await;
    env.request("b").await;
    env.reconcile().await;
    env.roll_out().await;
    env.reconcile().await;
    assert!(
        env.secret_annotations()
            .await
            .contains_key(ROLLED_OUT_AT_ANNOTATION)
    );
    drop_next().await;
    env.request("c").await;
    env.reconcile().await;
    let new = env.assert_introduced(&old, None).await;
    env.restart().await;
    env.reconcile().await;
    env.assert_introduced(&old, None).await;

    // Swapped: the pods send next-api-key to their peers. Removing it stops the instance with
    // a condition, and the pod template stays as it is.
    env.roll_out().await;
    env.reconcile().await;
    env.set_now(env.now() + SignedDuration::from_mins(1));
    env.reconcile().await;
    env.assert_swapped(&old, &new).await;
    let template = env.template_fingerprint().await;
    drop_next().await;
    let error = env.try_reconcile().await.expect_err("refused");
    assert!(error.to_string().contains("lost next-api-key"), "{error}");
    let (status, reason, _) = env.reconciled().await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "KeyRotationFailed")
    );
    assert_eq!(
        env.template_fingerprint().await,
        template,
        "the pods were rolled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_key_is_checked_never_written_and_rolls_the_pods_when_it_changes() {
    const USER_SECRET: &str = "my-qdrant-key";
    let env = Env::start().await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    let api: Api<SecureQdrant> = Api::namespaced(env.admin.clone(), &env.ns);
    let sq: SecureQdrant = serde_json::from_value(json!({
        "apiVersion": SQ_API, "kind": "SecureQdrant",
        "metadata": {"name": SQ},
        "spec": env.pinned(json!({"tls": {"enabled": false},
                 "auth": {"apiKeySecretRef": {"name": USER_SECRET, "key": "key"}}}))
    }))
    .unwrap();
    api.create(&PostParams::default(), &sq).await.unwrap();
    let user_secret = |data: Value| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": USER_SECRET,
                "labels": {"secureqdrant.dev/allowed-instance": SQ}},
            "data": data
        }))
        .unwrap()
    };
    let b64 = |v: &str| {
        use base64::Engine;
        json!(base64::engine::general_purpose::STANDARD.encode(v))
    };
    let refused = |expected: &'static str| {
        let env = &env;
        async move {
            let (status, reason, message) = env.reconciled().await;
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "ApiKeySecretFailed")
            );
            assert!(message.contains(expected), "{message}");
        }
    };

    // No Secret, no key in it, an empty key: refused, named, and nothing is applied.
    env.try_reconcile().await.expect_err("no Secret");
    refused(
        "Secret my-qdrant-key (spec.auth.apiKeySecretRef) is unusable: the Secret does not exist",
    )
    .await;
    secrets
        .create(
            &PostParams::default(),
            &user_secret(json!({"other": b64("x")})),
        )
        .await
        .unwrap();
    env.try_reconcile().await.expect_err("no key");
    refused("key \"key\" is missing").await;
    let set = |value: &str| {
        let secrets = secrets.clone();
        let data = json!({"data": {"key": b64(value)}});
        async move {
            secrets
                .patch(USER_SECRET, &PatchParams::default(), &Patch::Merge(&data))
                .await
                .unwrap();
        }
    };
    set("  ").await;
    env.try_reconcile().await.expect_err("an empty key");
    refused("key \"key\" is empty").await;
    set("password123").await;
    env.try_reconcile().await.expect_err("a short key");
    refused("key \"key\" is shorter than 32 characters").await;
    assert!(
        env.statefulset_opt().await.is_none(),
        "applied with an unusable key"
    );

    // A usable key: the pods read it from the user's Secret, which the operator never writes (not
    // even a label).
    set("user-key-1-0123456789abcdef0123456789").await;
    env.reconcile().await;
    assert_eq!(env.reconciled().await.0, "True");
    let env_ref = |sts: &StatefulSet| -> Option<(String, String)> {
        let spec = sts.spec.as_ref()?.template.spec.as_ref()?;
        spec.containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .find_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                (e.name == API_KEY_ENV).then(|| (r.name.clone(), r.key.clone()))
            })
    };
    let first = env.statefulset().await;
    assert_eq!(
        env_ref(&first),
        Some((USER_SECRET.to_owned(), "key".to_owned()))
    );
    let labelled = secrets.get(USER_SECRET).await.unwrap();
    assert_eq!(
        labelled.labels().clone(),
        BTreeMap::from([(
            "secureqdrant.dev/allowed-instance".to_owned(),
            SQ.to_owned()
        )]),
        "the operator writes nothing onto the user's Secret"
    );
    assert_eq!(
        text(&labelled, "key").as_deref(),
        Some("user-key-1-0123456789abcdef0123456789")
    );
    assert_eq!(
        text(
            &env.secret().await.expect("the read-only key's Secret"),
            "api-key"
        ),
        None,
        "no generated full-access key"
    );

    // A changed key rolls the pods; an unchanged one does not.
    let fingerprint = |sts: &StatefulSet| {
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
    };
    env.reconcile().await;
    assert_eq!(
        fingerprint(&env.statefulset().await),
        fingerprint(&first),
        "rolled for nothing"
    );
    set("user-key-2-0123456789abcdef0123456789").await;
    env.reconcile().await;
    let second = env.statefulset().await;
    assert_ne!(
        fingerprint(&second),
        fingerprint(&first),
        "a new key rolls the pods"
    );

    // Blanked again: refused, and the pod template stays as it was.
    set("").await;
    env.try_reconcile().await.expect_err("an empty key");
    refused("is empty").await;
    assert_eq!(fingerprint(&env.statefulset().await), fingerprint(&second));
}

fn names(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Sets entries of a Secret's data (`None` removes one), as a user would by hand.
async fn edit_secret(env: &Env, name: &str, entries: &[(&str, Option<&str>)]) {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(k, v)| {
            let v = v.map(|v| json!(base64::engine::general_purpose::STANDARD.encode(v)));
            ((*k).to_owned(), v.unwrap_or(Value::Null))
        })
        .collect();
    Api::<Secret>::namespaced(env.admin.clone(), &env.ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": data})),
        )
        .await
        .expect("Secret edited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_key_that_is_not_visible_ascii_is_refused_and_the_running_instance_is_untouched() {
    // Peers send the key as gRPC metadata: a newline (`--from-file` keeps a file's last one),
    // a space or a non-ASCII character breaks cluster mode. Refused before anything is
    // applied, with a message that names the problem and never shows the key.
    const USER_SECRET: &str = "my-qdrant-key";
    const GOOD: &str = "user-key-1-0123456789abcdef0123456789";
    let env = Env::start().await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": USER_SECRET,
                     "labels": {"secureqdrant.dev/allowed-instance": SQ}},
        "data": {}
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.admin.clone(), &env.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    edit_secret(&env, USER_SECRET, &[("key", Some(GOOD))]).await;
    env.instance(json!({"tls": {"enabled": false}, "replicas": 3,
                        "auth": {"apiKeySecretRef": {"name": USER_SECRET, "key": "key"}}}))
        .await;
    assert_eq!(env.reconciled().await.0, "True");
    let running = env.children().await;
    let template = env.statefulset().await.spec.unwrap().template;

    for (value, expected) in [
        (
            format!("{GOOD}\n"),
            "key \"key\" ends with a newline: create the Secret with --from-literal or from printf '%s'",
        ),
        (format!("{GOOD}\r\n"), "key \"key\" ends with a newline"),
        (
            format!("{GOOD} "),
            "key \"key\" contains a space at position 38: an API key must be visible ASCII only",
        ),
        (
            GOOD.replace('-', " "),
            "key \"key\" contains a space at position 5",
        ),
        (
            format!("\t{GOOD}"),
            "key \"key\" contains a tab at position 1",
        ),
        (
            format!("{GOOD}\u{e9}"),
            "key \"key\" contains a non-ASCII character at position 38",
        ),
    ] {
        edit_secret(&env, USER_SECRET, &[("key", Some(&value))]).await;
        let error = env.try_reconcile().await.expect_err("refused");
        let (status, reason, message) = env.reconciled().await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ApiKeySecretFailed"),
            "{value:?}"
        );
        assert!(message.contains(expected), "{value:?}: {message}");
        let events = env.event_notes();
        for text in [message.as_str(), &error.to_string()]
            .into_iter()
            .chain(events.iter().map(String::as_str))
        {
            assert!(!text.contains("0123456789"), "the key is shown: {text}");
        }
        assert_eq!(
            env.children().await,
            running,
            "{value:?}: something was applied"
        );
    }

    // Fixed: the same key runs on, no roll.
    edit_secret(&env, USER_SECRET, &[("key", Some(GOOD))]).await;
    env.reconcile().await;
    assert_eq!(env.reconciled().await.0, "True");
    assert_eq!(env.statefulset().await.spec.unwrap().template, template);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_edited_by_hand_into_one_that_is_not_visible_ascii_is_refused_not_replaced()
{
    let env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}, "auth": {"keyRotationGracePeriod": "1m"}}))
        .await;
    let old = env.api_key().await;
    let check = |entry: &str, value: &str, expected: &str| {
        let entry = entry.to_owned();
        let value = value.to_owned();
        let expected = expected.to_owned();
        let env = &env;
        async move {
            let before = env.children().await;
            edit_secret(env, KEY_SECRET, &[(&entry, Some(&value))]).await;
            let edited = env.children().await;
            env.try_reconcile().await.expect_err("refused");
            let (status, reason, message) = env.reconciled().await;
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "ApiKeySecretFailed")
            );
            assert!(message.contains(&expected), "{message}");
            assert!(!message.contains(&value.trim()[..8]), "{message}");
            // Neither replaced (the pods may run with it) nor anything else applied.
            assert_eq!(env.children().await, edited);
            assert_eq!(
                text(&env.secret().await.unwrap(), &entry).as_deref(),
                Some(value.as_str())
            );
            before
        }
    };

    // api-key and read-only-api-key.
    let before = check(
        "api-key",
        &format!("{old}\n"),
        "Secret vectors-api-key are unusable: key \"api-key\" ends with a newline",
    )
    .await;
    edit_secret(&env, KEY_SECRET, &[("api-key", Some(&old))]).await;
    env.reconcile().await;
    let others = |mut children: BTreeMap<String, String>| {
        children.remove(&format!("Secret/{KEY_SECRET}"));
        children
    };
    assert_eq!(
        others(env.children().await),
        others(before),
        "the same key: no roll"
    );
    let read_only = text(&env.secret().await.unwrap(), "read-only-api-key").unwrap();
    check(
        "read-only-api-key",
        &format!("{read_only}\u{2028}"),
        "key \"read-only-api-key\" contains a non-ASCII character at position 44",
    )
    .await;
    edit_secret(&env, KEY_SECRET, &[("read-only-api-key", Some(&read_only))]).await;
    env.reconcile().await;
    env.assert_idle(&old).await;

    // next-api-key, in phase Introduced: Qdrant's alt_api_key, and the key the peers send
    // once swapped.
    env.request("r").await;
    env.reconcile().await;
    let next = env.assert_introduced(&old, None).await;
    env.roll_out().await;
    check(
        "next-api-key",
        &format!("{} {}", &next[..20], &next[20..]),
        "key \"next-api-key\" contains a space at position 21",
    )
    .await;
    edit_secret(&env, KEY_SECRET, &[("next-api-key", Some(&next))]).await;
    env.reconcile().await;
    assert_eq!(env.assert_introduced(&old, Some(env.now())).await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pod_can_get_an_empty_key_from_any_source_in_any_rotation_phase() {
    // Qdrant 1.19 takes an empty api_key, alt_api_key or read_only_api_key for "unset":
    // authentication, JWT and internal auth off. After every reconcile, every key env var of
    // the pod template must come from a Secret entry that exists and holds a usable key
    // (checked on the Secret's CONTENTS, as a pod starting now would read them), or the
    // reconcile is refused and applies nothing.
    let env = Env::start().await;
    env.instance(json!({"tls": {"enabled": false}, "replicas": 3,
                        "auth": {"readOnlyApiKey": true, "keyRotationGracePeriod": "1m"}}))
        .await;
    let old = env.api_key().await;
    let read_only = "QDRANT__SERVICE__READ_ONLY_API_KEY";
    assert_eq!(
        env.assert_pods_read_usable_keys().await,
        names(&[API_KEY_ENV, read_only])
    );

    // Generated entries emptied, blanked or removed by hand: generated again before the
    // pods could read them.
    for (entry, value) in [
        ("api-key", Some("")),
        ("read-only-api-key", Some("  ")),
        ("read-only-api-key", None),
        ("api-key", None),
    ] {
        edit_secret(&env, KEY_SECRET, &[(entry, value)]).await;
        env.reconcile().await;
        env.assert_pods_read_usable_keys().await;
        env.roll_out().await;
    }
    let old_ = env.api_key().await;
    assert_ne!(old_, old, "api-key was generated again");
    let old = old_;

    // Phase Introduced: next-api-key emptied, then removed, before and after the rollout: the
    // rotation is abandoned and alt_api_key is no longer rendered.
    for (value, rolled_out) in [(Some(""), false), (None, true), (Some("\n"), true)] {
        env.request(&format!("{value:?}{rolled_out}")).await;
        env.reconcile().await;
        env.assert_introduced(&old, None).await;
        env.assert_pods_read_usable_keys().await;
        if rolled_out {
            env.roll_out().await;
            env.reconcile().await;
        }
        edit_secret(&env, KEY_SECRET, &[("next-api-key", value)]).await;
        env.reconcile().await;
        assert_eq!(
            env.assert_pods_read_usable_keys().await,
            names(&[API_KEY_ENV, read_only])
        );
        env.assert_idle(&old).await;
        env.roll_out().await;
    }

    // Introduced with the read-only key removed: generated again.
    env.request("r").await;
    env.reconcile().await;
    let new = env.assert_introduced(&old, None).await;
    edit_secret(&env, KEY_SECRET, &[("read-only-api-key", None)]).await;
    env.reconcile().await;
    assert_eq!(
        env.assert_pods_read_usable_keys().await,
        names(&[API_KEY_ENV, ALT_API_KEY_ENV, read_only])
    );

    // Swapped: the pods' api_key comes from next-api-key. Emptied or removed, it cannot be
    // replaced (the peers run with it): refused, nothing applied; put back, it runs on.
    env.roll_out().await;
    env.reconcile().await;
    env.set_now(env.now() + SignedDuration::from_mins(1));
    env.reconcile().await;
    env.assert_swapped(&old, &new).await;
    env.assert_pods_read_usable_keys().await;
    for value in [Some(""), Some(" "), None] {
        let before = env.children().await;
        edit_secret(&env, KEY_SECRET, &[("next-api-key", value)]).await;
        let edited = env.children().await;
        assert_ne!(before, edited);
        let error = env.try_reconcile().await.expect_err("refused");
        assert!(error.to_string().contains("lost next-api-key"), "{error}");
        assert_eq!(
            env.children().await,
            edited,
            "{value:?}: something was applied"
        );
        edit_secret(&env, KEY_SECRET, &[("next-api-key", Some(&new))]).await;
        env.reconcile().await;
        env.assert_swapped(&old, &new).await;
        env.assert_pods_read_usable_keys().await;
    }
    // Swapped with the read-only key emptied: generated again.
    edit_secret(&env, KEY_SECRET, &[("read-only-api-key", Some(""))]).await;
    env.reconcile().await;
    env.assert_swapped(&old, &new).await;
    env.assert_pods_read_usable_keys().await;

    // Promoted, then next-api-key removed: api-key alone.
    env.roll_out().await;
    env.reconcile().await;
    env.assert_promoted(&new).await;
    env.assert_pods_read_usable_keys().await;
    edit_secret(&env, KEY_SECRET, &[("next-api-key", None)]).await;
    env.reconcile().await;
    assert_eq!(
        env.assert_pods_read_usable_keys().await,
        names(&[API_KEY_ENV, read_only])
    );
    env.roll_out().await;
    env.reconcile().await;
    env.assert_idle(&new).await;
    env.assert_pods_read_usable_keys().await;
}

// =============================================================================================
// Harness
// =============================================================================================

/// The test's namespace on the real control plane, its held kwok Node, a client as the
/// operator (through the fault proxy) and one as admin (the user), namespaced watch-fed caches
/// and a Context with a movable clock.
struct Env {
    real: real_server::Env,
    node: HeldNode,
    ns: String,
    /// As the operator: the chart's RBAC for `ns`, through the fault proxy.
    client: Client,
    /// As the user (admin): edits by hand, annotations.
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
        let _ = self
            .real
            .cp
            .kubectl(&["delete", "node", &self.node.name, "--wait=false"]);
    }
}

fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

/// A Context with fresh caches (what a restarted operator has), on `clock`.
async fn context(
    client: &Client,
    ns: &str,
    clock: &Arc<Mutex<Timestamp>>,
) -> (
    Arc<Context>,
    EventLog,
    Store<SecureQdrant>,
    Vec<JoinHandle<()>>,
) {
    let mut tasks = Vec::new();
    let stores = managed_stores(client, ns, &mut tasks);
    let instances = reflect::<SecureQdrant>(client, ns, &mut tasks, false);
    let (events, log) = Events::memory();
    let reading = clock.clone();
    let ctx = Context::new(client.clone(), stores, events, Settings::default())
        .with_clock(Arc::new(move || *reading.lock().unwrap()));
    let ready =
        async { ctx.stores.wait_until_ready().await && instances.wait_until_ready().await.is_ok() };
    assert!(
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .unwrap_or(false),
        "caches did not fill"
    );
    (Arc::new(ctx), log, instances, tasks)
}

impl Env {
    async fn start() -> Env {
        let real = real_server::Env::namespaced("keys").await;
        let ns = real.ns.clone();
        let node = HeldNode::create(&real.admin, &ns).await;
        let client = real.client.clone();
        let admin = real.admin.clone();
        let clock = Arc::new(Mutex::new(t0()));
        let (ctx, events, instances, tasks) = context(&client, &ns, &clock).await;
        Env {
            real,
            node,
            ns,
            client,
            admin,
            ctx,
            events,
            instances,
            clock,
            tasks,
        }
    }

    /// An operator restart: everything in memory is dropped, caches are filled anew.
    async fn restart(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let (ctx, events, instances, tasks) = context(&self.client, &self.ns, &self.clock).await;
        self.ctx = ctx;
        self.events = events;
        self.instances = instances;
        self.tasks = tasks;
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn set_now(&self, now: Timestamp) {
        *self.clock.lock().unwrap() = now;
    }

    /// `spec` with the pods pinned to the test's held node.
    fn pinned(&self, mut spec: Value) -> Value {
        spec["pod"] = self.node.pod_spec();
        spec
    }

    /// Creates SecureQdrant `vectors` with `spec` (pinned to the held node) as the user,
    /// reconciles it once and rolls it out.
    async fn instance(&self, spec: Value) {
        let api: Api<SecureQdrant> = Api::namespaced(self.admin.clone(), &self.ns);
        let sq: SecureQdrant = serde_json::from_value(json!({
            "apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": SQ}, "spec": self.pinned(spec)
        }))
        .expect("a SecureQdrant");
        api.create(&PostParams::default(), &sq)
            .await
            .expect("SecureQdrant created");
        self.reconcile().await;
        assert!(self.secret().await.is_some(), "no API-key Secret");
        self.roll_out().await;
    }

    /// Sets the rotation request annotation on the SecureQdrant, as the user.
    async fn request(&self, value: &str) {
        let api: Api<SecureQdrant> = Api::namespaced(self.admin.clone(), &self.ns);
        api.patch(
            SQ,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ROTATE_API_KEY_ANNOTATION: value}}})),
        )
        .await
        .expect("SecureQdrant annotated");
    }

    /// The SecureQdrant as the API server holds it.
    async fn sq(&self) -> SecureQdrant {
        Api::<SecureQdrant>::namespaced(self.admin.clone(), &self.ns)
            .get(SQ)
            .await
            .expect("the SecureQdrant")
    }

    /// Runs the SecureQdrant reconcile once, on what the caches hold once they caught up, and
    /// forgets the Events of earlier reconciles.
    async fn reconcile(&self) -> Action {
        self.try_reconcile()
            .await
            .expect("the SecureQdrant reconciles")
    }

    async fn try_reconcile(&self) -> Result<Action, secure_qdrant_operator::error::Error> {
        self.settle().await;
        self.events.lock().unwrap().clear();
        let sq = self.sq().await;
        // Boxed: the reconcile future is large, and the test futures hold many of them.
        let result = Box::pin(reconcile::reconcile(Arc::new(sq), self.ctx.clone())).await;
        self.settle().await;
        result
    }

    /// The SecureQdrant's `Reconciled` condition: (status, reason, message).
    async fn reconciled(&self) -> (String, String, String) {
        let status = self.sq().await.status.expect("a status");
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciled")
            .expect("a Reconciled condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    /// Lets the real StatefulSet controller roll out the current template (the held node
    /// released until its status says so), then holds the node again.
    async fn roll_out(&self) {
        self.node.roll_out(&self.ns, SQ).await;
    }

    async fn secret(&self) -> Option<Secret> {
        Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
            .get_opt(KEY_SECRET)
            .await
            .expect("get the API-key Secret")
    }

    async fn secret_annotations(&self) -> BTreeMap<String, String> {
        self.secret()
            .await
            .expect("the API-key Secret")
            .annotations()
            .clone()
    }

    async fn api_key(&self) -> String {
        self.secret()
            .await
            .and_then(|s| text(&s, "api-key"))
            .expect("an API key")
    }

    async fn statefulset_opt(&self) -> Option<StatefulSet> {
        Api::<StatefulSet>::namespaced(self.admin.clone(), &self.ns)
            .get_opt(SQ)
            .await
            .expect("get the StatefulSet")
    }

    async fn statefulset(&self) -> StatefulSet {
        self.statefulset_opt().await.expect("the StatefulSet")
    }

    /// The Qdrant container's env names that come from `vectors-api-key`, with their keys.
    async fn key_env(&self) -> BTreeMap<String, String> {
        let sts = self.statefulset().await;
        let spec = sts.spec.expect("spec").template.spec.expect("pod spec");
        spec.containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                (r.name == KEY_SECRET).then(|| (e.name.clone(), r.key.clone()))
            })
            .filter(|(name, _)| name == API_KEY_ENV || name == ALT_API_KEY_ENV)
            .collect()
    }

    async fn template_fingerprint(&self) -> Option<String> {
        self.statefulset()
            .await
            .spec?
            .template
            .metadata?
            .annotations?
            .get(KEYS_FINGERPRINT_ANNOTATION)
            .cloned()
    }

    /// No rotation runs: `key` is the only key, in the Secret and in the pods' env.
    async fn assert_idle(&self, key: &str) {
        let secret = self.secret().await.expect("the API-key Secret");
        assert_eq!(text(&secret, "api-key").as_deref(), Some(key), "api-key");
        assert_eq!(text(&secret, "next-api-key"), None, "no next-api-key");
        let annotations = secret.annotations();
        assert!(
            !annotations.contains_key(PHASE_ANNOTATION),
            "{annotations:?}"
        );
        assert!(
            !annotations.contains_key(ROLLED_OUT_AT_ANNOTATION),
            "{annotations:?}"
        );
        assert_eq!(
            self.key_env().await,
            BTreeMap::from([(API_KEY_ENV.to_owned(), "api-key".to_owned())]),
            "API_KEY only, from api-key"
        );
    }

    /// A rotation runs in phase Introduced: `old` is still `api-key` (never lost before the
    /// promotion), the next key is in `next-api-key` and both reach the pods. Returns the next
    /// key.
    async fn assert_introduced(&self, old: &str, rolled_out_at: Option<Timestamp>) -> String {
        let secret = self.secret().await.expect("the API-key Secret");
        assert_eq!(
            text(&secret, "api-key").as_deref(),
            Some(old),
            "the old key is kept until the promotion"
        );
        let next = text(&secret, "next-api-key").expect("next-api-key");
        assert!(!next.trim().is_empty());
        let annotations = secret.annotations();
        assert_eq!(
            annotations.get(PHASE_ANNOTATION).map(String::as_str),
            Some(Phase::Introduced.as_str())
        );
        assert_eq!(
            annotations
                .get(ROLLED_OUT_AT_ANNOTATION)
                .map(|t| t.parse::<Timestamp>().expect("a timestamp")),
            rolled_out_at,
            "{annotations:?}"
        );
        assert_eq!(
            self.key_env().await,
            BTreeMap::from([
                (API_KEY_ENV.to_owned(), "api-key".to_owned()),
                (ALT_API_KEY_ENV.to_owned(), "next-api-key".to_owned()),
            ]),
            "API_KEY from api-key, ALT from next-api-key"
        );
        assert!(self.template_fingerprint().await.is_some());
        next
    }

    /// Phase Swapped: the Secret still holds `old` as `api-key` and `new` as `next-api-key`;
    /// Qdrant gets `new` as its api_key and `old` as its alt_api_key.
    async fn assert_swapped(&self, old: &str, new: &str) {
        self.assert_phase(
            (old, new),
            Phase::Swapped.as_str(),
            &[(API_KEY_ENV, "next-api-key"), (ALT_API_KEY_ENV, "api-key")],
        )
        .await;
    }

    /// Phase Promoted: `api-key` holds `new` (and `next-api-key` still does); Qdrant gets `new`
    /// alone.
    async fn assert_promoted(&self, new: &str) {
        self.assert_phase(
            (new, new),
            Phase::Promoted.as_str(),
            &[(API_KEY_ENV, "api-key")],
        )
        .await;
    }

    /// The Secret holds `api-key` and `next-api-key` as `keys` and records `phase`; the pods'
    /// key env vars come from the Secret keys `env` names.
    async fn assert_phase(&self, keys: (&str, &str), phase: &str, env: &[(&str, &str)]) {
        let secret = self.secret().await.expect("the API-key Secret");
        assert_eq!(text(&secret, "api-key").as_deref(), Some(keys.0));
        assert_eq!(text(&secret, "next-api-key").as_deref(), Some(keys.1));
        assert_eq!(
            secret
                .annotations()
                .get(PHASE_ANNOTATION)
                .map(String::as_str),
            Some(phase)
        );
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(var, key)| ((*var).to_owned(), (*key).to_owned()))
            .collect();
        assert_eq!(
            self.key_env().await,
            env,
            "{phase}: where the key env vars come from"
        );
    }

    /// Every managed object of the namespace, by kind and name, with what a write by the
    /// operator changes: its resourceVersion; for the StatefulSet and the PodDisruptionBudget,
    /// whose status the real controllers write, their generation, labels and annotations
    /// instead (the operator writes only their spec and metadata).
    async fn children(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (api, kind) in secure_qdrant_operator::children::CHILD_KINDS.iter() {
            for o in self.real.list(api, kind, &self.ns).await {
                if o["metadata"]["labels"][LABEL_MANAGED_BY] != MANAGER {
                    continue;
                }
                let version = match *kind {
                    "StatefulSet" | "PodDisruptionBudget" => format!(
                        "generation {} labels {} annotations {}",
                        o["metadata"]["generation"],
                        o["metadata"]["labels"],
                        o["metadata"]["annotations"]
                    ),
                    _ => o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                };
                out.insert(
                    format!("{kind}/{}", o["metadata"]["name"].as_str().unwrap()),
                    version,
                );
            }
        }
        out
    }

    /// The Notes of the Events of the last reconcile.
    fn event_notes(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.note.clone().unwrap_or_default())
            .collect()
    }

    /// What a pod starting now would read: every env var of the pod template that carries a
    /// key comes from an entry of a Secret that exists and holds a usable key (not empty,
    /// visible ASCII), never from an inline value or an optional reference. Returns the names
    /// of those env vars.
    async fn assert_pods_read_usable_keys(&self) -> std::collections::BTreeSet<String> {
        let spec = self
            .statefulset()
            .await
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod spec");
        let secrets = Api::<Secret>::namespaced(self.admin.clone(), &self.ns);
        let mut names = std::collections::BTreeSet::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for e in c
                .env
                .iter()
                .flatten()
                .filter(|e| e.name.contains("API_KEY"))
            {
                assert_eq!(e.value, None, "{} is inline", e.name);
                let r = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .unwrap_or_else(|| panic!("{} is not from a Secret", e.name));
                assert_ne!(r.optional, Some(true), "{}", e.name);
                let secret: Secret = secrets
                    .get_opt(&r.name)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{}: no Secret {}", e.name, r.name));
                let value = text(&secret, &r.key)
                    .unwrap_or_else(|| panic!("{}: Secret {} has no {}", e.name, r.name, r.key));
                assert!(
                    !value.is_empty()
                        && secure_qdrant_operator::api_keys::unsendable(&value).is_none(),
                    "{} would get an unusable key from {}/{}",
                    e.name,
                    r.name,
                    r.key
                );
                names.insert(e.name.clone());
            }
        }
        assert!(names.contains(API_KEY_ENV), "{names:?}");
        names
    }

    fn event_reasons(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.reason.clone())
            .collect()
    }

    /// Waits until the caches hold what the API server holds (the namespace's managed Secrets
    /// and StatefulSets and its SecureQdrants, by resourceVersion).
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let managed = |objects: Vec<Value>| {
                versions(
                    objects
                        .into_iter()
                        .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
                )
            };
            let server = (
                managed(self.real.list("v1", "Secret", &self.ns).await),
                managed(self.real.list("apps/v1", "StatefulSet", &self.ns).await),
                versions(
                    self.real
                        .list(SQ_API, "SecureQdrant", &self.ns)
                        .await
                        .into_iter(),
                ),
            );
            let cached = (
                cached_versions(&self.ctx.stores.secrets),
                cached_versions(&self.ctx.stores.statefulsets),
                cached_versions(&self.instances),
            );
            if server == cached {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "caches did not catch up: {server:?} vs {cached:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The whole seconds from `now` until `then`.
fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_secs(now.duration_until(then).as_secs().unsigned_abs())
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).expect("UTF-8"))
}
