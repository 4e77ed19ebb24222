//! The test support that replaced the in-memory API server's extras, checked against the real
//! control plane: the fault proxy (errors at a rate, latency, watch streams closed, 410 Gone),
//! switched on, changed and off while a test runs; request counts and the RBAC call set from
//! the audit log, per identity; the dynamic helpers.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/real_server.rs"]
mod real_server;

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use real_server::{Env, Faults};
use serde_json::json;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": "v"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_counts_are_per_identity_and_since_a_mark() {
    let env = Env::new("counts").await;
    let api = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    let mark = env.mark().await;
    api.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    api.get("a").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    // the admin's requests are not the identity's
    Api::<ConfigMap>::namespaced(env.admin.clone(), &env.ns)
        .get("a")
        .await
        .unwrap();
    let counters = env.counters_since(&mark).await;
    assert_eq!(
        counters.get("create", "configmaps"),
        1,
        "{:?}",
        counters.log
    );
    assert_eq!(counters.get("get", "configmaps"), 1, "{:?}", counters.log);
    assert_eq!(counters.get("list", "configmaps"), 1, "{:?}", counters.log);
    assert_eq!(counters.writes(), 1);
    assert!(counters.forbidden().is_empty());
    assert!(
        counters
            .call_set()
            .contains(&("create".into(), "configmaps".into(), env.ns.clone()))
    );
    // A request the chart's RBAC does not allow is logged with 403.
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(env.client.clone());
    assert!(nodes.list(&ListParams::default()).await.is_err());
    let counters = env.counters_since(&mark).await;
    assert_eq!(counters.forbidden().len(), 1, "{:?}", counters.log);
    // reset_counters starts a new window
    env.reset_counters().await;
    assert_eq!(env.counters().await.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_are_switched_on_changed_and_off() {
    let env = Env::new("errors").await;
    let api = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    env.set_faults(&Faults {
        error_rate: 1.0,
        error_codes: vec![500],
        verbs: vec!["get".into()],
        resources: vec!["configmaps".into()],
        ..Faults::default()
    });
    match api.get("a").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 500, "{e:?}"),
        other => panic!("expected an injected 500, got {other:?}"),
    }
    // other verbs pass
    api.list(&ListParams::default()).await.unwrap();
    // changed while running: 409 instead
    env.set_faults(&Faults {
        error_rate: 1.0,
        error_codes: vec![409],
        verbs: vec!["get".into()],
        ..Faults::default()
    });
    match api.get("a").await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected an injected 409, got {other:?}"),
    }
    env.clear_faults();
    api.get("a").await.unwrap();
    let counters = env.counters().await;
    assert_eq!(counters.errors("get", "configmaps"), 2);
    // the injected ones never reached the API server
    assert_eq!(counters.get("get", "configmaps"), 1, "{:?}", counters.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_added() {
    let env = Env::new("latency").await;
    let api = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    env.set_faults(&Faults {
        latency_ms: 700,
        ..Faults::default()
    });
    let started = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_closed_and_answered_with_410() {
    let env = Env::new("watches").await;
    let api = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    env.set_faults(&Faults {
        watch_gone_rate: 1.0,
        ..Faults::default()
    });
    let events: Vec<_> = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    match events.as_slice() {
        [WatchEvent::Error(e)] => assert_eq!(e.code, 410),
        other => panic!("expected one 410 ERROR event, got {other:?}"),
    }

    env.set_faults(&Faults {
        watch_drop_after_events: Some(1),
        ..Faults::default()
    });
    let started = Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap();
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &config_map(name))
            .await
            .unwrap();
    }
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "closed by the proxy, not by the watch timeout"
    );
    match &events[0] {
        Ok(WatchEvent::Added(cm)) => assert_eq!(cm.name_any(), "a"),
        other => panic!("{other:?}"),
    }
    env.clear_faults();
    let injected = env.proxy.injected();
    assert_eq!((injected.gone_watches, injected.dropped_watches), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_helpers_insert_with_status_get_list_patch_delete() {
    let env = Env::new("dynamic").await;
    env.insert(json!({
        "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
        "metadata": {"name": "db"}, "spec": {},
        "status": {"observedGeneration": 1},
    }))
    .await
    .unwrap();
    let got = env
        .get("secureqdrant.dev/v1alpha1", "SecureQdrant", &env.ns, "db")
        .await
        .expect("stored");
    assert_eq!(got["status"]["observedGeneration"], 1);
    assert_eq!(
        env.list("secureqdrant.dev/v1alpha1", "SecureQdrant", &env.ns)
            .await
            .len(),
        1
    );
    let patched = env
        .merge_patch(
            "secureqdrant.dev/v1alpha1",
            "SecureQdrant",
            &env.ns,
            "db",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await
        .unwrap();
    assert_eq!(patched["metadata"]["labels"]["x"], "y");
    env.delete("secureqdrant.dev/v1alpha1", "SecureQdrant", &env.ns, "db")
        .await
        .unwrap();
    assert!(
        env.get("secureqdrant.dev/v1alpha1", "SecureQdrant", &env.ns, "db")
            .await
            .is_none()
    );
}
