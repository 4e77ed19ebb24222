//! The fake API server driven by a real `kube::Client`, as the operator drives a cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_apiserver::{FakeApiServer, Faults, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, PersistentVolumeClaim, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::{Value, json};

async fn client_for(server: &FakeApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

async fn setup() -> (FakeApiServer, Client) {
    let server = FakeApiServer::start(Options::default())
        .await
        .expect("server starts");
    let client = client_for(&server).await;
    (server, client)
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn api_err(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A small CRD with a status subresource and schema defaults.
fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "default": 3},
                        "color": {"type": "string"},
                    }},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}},
            }],
        },
    })
}

fn widget_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn with_widgets() -> (FakeApiServer, Client) {
    let (server, client) = setup().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    (server, client)
}

#[tokio::test]
async fn crud_with_conflicts_and_not_found() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    assert_eq!(
        api_err(
            api.create(&PostParams::default(), &cm("a", &[]))
                .await
                .unwrap_err()
        ),
        409
    );

    let mut stale = created.clone();
    stale.data = Some([("k".into(), "new".into())].into());
    let updated = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    let rv2: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1, "resourceVersion increases");
    // The same write again carries the old resourceVersion: conflict.
    assert_eq!(
        api_err(
            api.replace("a", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );

    // A merge patch with a resourceVersion is a compare-and-swap (the operator relies on it).
    let cas = json!({"metadata": {"resourceVersion": rv1.to_string()}, "data": {"x": "1"}});
    let e = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&cas))
        .await
        .unwrap_err();
    assert_eq!(api_err(e), 409);
    let cas = json!({"metadata": {"resourceVersion": rv2.to_string()}, "data": {"x": "1"}});
    let p = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&cas))
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["x"], "1");

    // JSON patch (RFC 6902).
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/x", "value": "1"},
        {"op": "remove", "path": "/data/k"},
    ]))
    .unwrap();
    let p = api
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(p.data.unwrap().keys().collect::<Vec<_>>(), ["x"]);

    // Namespaces are implicit and served.
    assert!(server.get("v1", "Namespace", "", "ns1").is_some());
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(api.get("a").await.unwrap_err()), 404);
    assert_eq!(
        api_err(api.delete("a", &DeleteParams::default()).await.unwrap_err()),
        404
    );
    assert!(api.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn secrets_fold_string_data_and_keep_no_generation() {
    let (_server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "default");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s"}, "stringData": {"a": "hello"}
    }))
    .unwrap();
    let s = api.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(s.data.unwrap()["a"].0, b"hello");
    assert!(s.string_data.is_none());
    assert!(s.metadata.generation.is_none());
}

#[tokio::test]
async fn server_side_apply_create_update_remove_conflict_force() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let apply = |m: &str, force: bool| {
        let mut p = PatchParams::apply(m);
        p.force = force;
        p
    };
    let v1 = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}},
        "data": {"x": "1", "y": "2"}});
    let c = api
        .patch("c", &apply("op", true), &Patch::Apply(&v1))
        .await
        .unwrap();
    assert_eq!(c.data.as_ref().unwrap().len(), 2);
    let mf = c.metadata.managed_fields.as_ref().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("op"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(mf[0].fields_v1.as_ref().unwrap()).unwrap();
    assert_eq!(fields["f:data"], json!({"f:x": {}, "f:y": {}}));

    // Applying the same thing again writes nothing.
    let rv = c.resource_version();
    let again = api
        .patch("c", &apply("op", true), &Patch::Apply(&v1))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), rv);

    // Another writer (merge patch, manager "user") sets a field: it owns it.
    api.patch(
        "c",
        &PatchParams {
            field_manager: Some("user".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"z": "mine"}})),
    )
    .await
    .unwrap();

    // The operator stops sending label b and data y: they go; z (owned by "user") stays.
    let v2 = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}});
    let c = api
        .patch("c", &apply("op", false), &Patch::Apply(&v2))
        .await
        .unwrap();
    assert_eq!(c.labels().len(), 1, "{:#?}", c.metadata.managed_fields);
    let data = c.data.unwrap();
    assert_eq!(
        data,
        [
            ("x".to_owned(), "1".to_owned()),
            ("z".into(), "mine".into())
        ]
        .into()
    );

    // Taking "user"'s field with another value conflicts unless forced.
    let v3 = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": {"x": "1", "z": "ours"}});
    let e = api
        .patch("c", &apply("op", false), &Patch::Apply(&v3))
        .await
        .unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("conflict with \"user\""),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let c = api
        .patch("c", &apply("op", true), &Patch::Apply(&v3))
        .await
        .unwrap();
    assert_eq!(c.data.as_ref().unwrap()["z"], "ours");
    let managers: Vec<_> = c
        .metadata
        .managed_fields
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| m.manager.unwrap())
        .collect();
    assert_eq!(managers, ["op"], "the forced field moved to the applier");
    assert!(c.labels().is_empty(), "labels no longer sent are removed");

    // Apply needs a field manager.
    let e = api
        .patch("c", &PatchParams::default(), &Patch::Apply(&v3))
        .await
        .unwrap_err();
    assert_eq!(api_err(e), 422);
    assert!(server.get("v1", "configmaps", "default", "c").is_some());
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let (_server, client) = with_widgets().await;
    let api = widget_api(&client, "default");
    let mut w = widget("w", json!({"color": "red"}));
    w.data["status"] = json!({"phase": "Injected"});
    let w = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create"
    );
    assert_eq!(w.data["spec"]["size"], 3, "schema defaults are applied");
    assert_eq!(w.metadata.generation, Some(1));

    // Status through /status: generation unchanged, spec changes in the same body ignored.
    let w = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "blue"}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    assert_eq!(w.data["spec"]["color"], "red");
    assert_eq!(w.metadata.generation, Some(1));

    // Status through the main resource: ignored. Metadata-only changes: no generation bump.
    let w = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "1"}}, "status": {"phase": "X"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    assert_eq!(w.metadata.generation, Some(1));

    // Spec changes bump the generation.
    let w = api
        .patch(
            "w",
            &PatchParams::apply("op").force(),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {"color": "green"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["color"], "green");
    assert_eq!(w.metadata.generation, Some(2));

    // Apply to /status, and replace_status.
    let w = api
        .patch_status(
            "w",
            &PatchParams::apply("op").force(),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "status": {"phase": "Applied"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Applied");
    let mf = w.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|m| m.subresource.as_deref() == Some("status")
                && m.manager.as_deref() == Some("op"))
    );
    assert_eq!(w.metadata.generation, Some(2));
}

#[tokio::test]
async fn list_and_watch_with_selectors_resumption_and_gone() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let all: Api<ConfigMap> = Api::all(client.clone());
    let pp = PostParams::default();
    api.create(&pp, &cm("a", &[("app", "x")])).await.unwrap();
    api.create(&pp, &cm("b", &[("app", "y")])).await.unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&pp, &cm("c", &[("app", "x")]))
        .await
        .unwrap();

    let list = all
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    let names: Vec<_> = list.items.iter().map(|o| o.name_any()).collect();
    assert_eq!(names, ["a", "c"]);
    let list_rv = list.metadata.resource_version.clone().unwrap();
    let by_field = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let by_name = all
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items[0].name_any(), "b");
    let set = all
        .list(&ListParams::default().labels("app in (x,y),app!=y"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 2);

    // Pagination.
    let page = all.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let page2 = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 1);
    assert!(page2.metadata.continue_.is_none());

    // Changes after the list, then a watch resumed from the list's resourceVersion.
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})),
    )
    .await
    .unwrap();
    api.create(&pp, &cm("d", &[("app", "x")])).await.unwrap();
    api.delete("d", &DeleteParams::default()).await.unwrap();
    api.create(&pp, &cm("e", &[("app", "y")])).await.unwrap();

    let wp = WatchParams::default().labels("app=x").timeout(5);
    let events: Vec<(String, String)> = all
        .watch(&wp, &list_rv)
        .await
        .unwrap()
        .take(4)
        .map(|e| match e.unwrap() {
            WatchEvent::Added(o) => ("ADDED".to_owned(), o.name_any()),
            WatchEvent::Modified(o) => ("MODIFIED".to_owned(), o.name_any()),
            WatchEvent::Deleted(o) => ("DELETED".to_owned(), o.name_any()),
            WatchEvent::Bookmark(_) => ("BOOKMARK".to_owned(), String::new()),
            WatchEvent::Error(e) => ("ERROR".to_owned(), e.message),
        })
        .collect()
        .await;
    assert_eq!(
        events,
        [
            ("ADDED".into(), "b".into()),   // b started matching
            ("DELETED".into(), "a".into()), // a stopped matching
            ("ADDED".into(), "d".into()),
            ("DELETED".into(), "d".into()),
        ]
    );

    // From "0": the current state as ADDED events.
    let mut initial: Vec<String> = all
        .watch(&wp, "0")
        .await
        .unwrap()
        .take(2)
        .map(|e| match e.unwrap() {
            WatchEvent::Added(o) => o.name_any(),
            _ => panic!("expected ADDED"),
        })
        .collect()
        .await;
    initial.sort();
    assert_eq!(initial, ["b", "c"]);

    // Too old: one ERROR event with 410 (kube-runtime's watcher then re-lists).
    server.compact_watch_history();
    let mut stream = Box::pin(all.watch(&wp, &list_rv).await.unwrap());
    let first = stream.next().await.unwrap().unwrap();
    match first {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        _ => panic!("expected a 410 ERROR event"),
    }
    // A list with resourceVersionMatch=Exact on an old version: 410 too.
    let e = all
        .list(
            &ListParams::default()
                .at(&list_rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err();
    assert_eq!(api_err(e), 410);
}

#[tokio::test]
async fn bookmarks_are_sent_when_allowed() {
    let server = FakeApiServer::start(Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    })
    .await
    .unwrap();
    let client = client_for(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = Box::pin(
        api.watch(&WatchParams::default().timeout(5), &rv)
            .await
            .unwrap(),
    );
    let ev = stream.next().await.unwrap().unwrap();
    match ev {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        _ => panic!("expected a bookmark"),
    }
}

async fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kube_runtime_reflector_list_watch_and_streaming_list() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::all(client.clone());
    let ns: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    ns.create(&PostParams::default(), &cm("a", &[("managed", "yes")]))
        .await
        .unwrap();
    ns.create(&PostParams::default(), &cm("other", &[]))
        .await
        .unwrap();

    for streaming in [false, true] {
        let (reader, writer) = reflector::store();
        let mut config = watcher::Config::default().labels("managed=yes");
        if streaming {
            config = config.streaming_lists();
        }
        let stream = watcher(api.clone(), config)
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let task = tokio::spawn(async move {
            let _ = stream.try_for_each(|_| async { Ok(()) }).await;
        });
        reader.wait_until_ready().await.unwrap();
        assert_eq!(reader.state().len(), 1);
        let name = format!("b{streaming}");
        ns.create(&PostParams::default(), &cm(&name, &[("managed", "yes")]))
            .await
            .unwrap();
        wait_for(|| reader.state().len() == 2, "second object reflected").await;
        ns.delete(&name, &DeleteParams::default()).await.unwrap();
        wait_for(|| reader.state().len() == 1, "deletion reflected").await;
        task.abort();
    }
    let c = server.counters();
    assert_eq!(c.get("list", "configmaps"), 1, "{c:?}");
    assert!(c.get("watch", "configmaps") >= 2, "{c:?}");
}

#[tokio::test]
async fn streaming_lists_can_be_refused() {
    let server = FakeApiServer::start(Options {
        streaming_lists: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let client = client_for(&server).await;
    let api: Api<ConfigMap> = Api::all(client);
    let e = api
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .err()
        .expect("refused");
    assert_eq!(api_err(e), 422);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut c = cm("f", &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing.
    api.delete("f", &DeleteParams::default()).await.unwrap();
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
    assert!(server.get("v1", "ConfigMap", "default", "f").is_none());
}

fn owner_ref(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": true})
}

#[tokio::test]
async fn garbage_collection_cascades_and_orphans() {
    let (server, client) = with_widgets().await;
    let widgets = widget_api(&client, "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", json!({})))
        .await
        .unwrap();
    let wuid = w.uid().unwrap();
    let mut child = cm("child", &[]);
    child.metadata.owner_references = Some(vec![
        serde_json::from_value(owner_ref("Widget", "example.com/v1", "w", &wuid)).unwrap(),
    ]);
    let child = cms.create(&PostParams::default(), &child).await.unwrap();
    let mut grandchild: Secret =
        serde_json::from_value(json!({"metadata": {"name": "grandchild"}})).unwrap();
    grandchild.metadata.owner_references = Some(vec![
        serde_json::from_value(owner_ref("ConfigMap", "v1", "child", &child.uid().unwrap()))
            .unwrap(),
    ]);
    secrets
        .create(&PostParams::default(), &grandchild)
        .await
        .unwrap();

    widgets
        .delete("w", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        cms.get_opt("child").await.unwrap().is_none(),
        "child collected"
    );
    assert!(
        secrets.get_opt("grandchild").await.unwrap().is_none(),
        "grandchild collected"
    );

    // Orphan propagation keeps dependents and drops their reference.
    let w = widgets
        .create(&PostParams::default(), &widget("w2", json!({})))
        .await
        .unwrap();
    let mut kept = cm("kept", &[]);
    kept.metadata.owner_references = Some(vec![
        serde_json::from_value(owner_ref(
            "Widget",
            "example.com/v1",
            "w2",
            &w.uid().unwrap(),
        ))
        .unwrap(),
    ]);
    cms.create(&PostParams::default(), &kept).await.unwrap();
    widgets.delete("w2", &DeleteParams::orphan()).await.unwrap();
    let kept = cms.get("kept").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        server
            .get("example.com/v1", "Widget", "default", "w2")
            .is_none()
    );
}

#[tokio::test]
async fn statefulset_pvcs_follow_the_retention_policy() {
    let (server, client) = setup().await;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), "db");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "db");
    let sts = |name: &str, when_deleted: &str| -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
            }
        }))
        .unwrap()
    };
    let pp = PatchParams::apply("op").force();
    let s = sts_api
        .patch(
            "gone",
            &pp,
            &Patch::Apply(&{
                let mut s = sts("gone", "Delete");
                s.metadata.name = Some("gone".into());
                serde_json::to_value(&s)
                    .map(|mut v| {
                        v["apiVersion"] = json!("apps/v1");
                        v["kind"] = json!("StatefulSet");
                        v
                    })
                    .unwrap()
            }),
        )
        .await
        .unwrap();
    assert!(
        s.status.is_none(),
        "no controller writes StatefulSet status"
    );
    sts_api
        .create(&PostParams::default(), &sts("kept", "Retain"))
        .await
        .unwrap();
    let names: Vec<String> = pvcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(
        names,
        ["data-gone-0", "data-gone-1", "data-kept-0", "data-kept-1"]
    );
    let p = pvcs.get("data-gone-0").await.unwrap();
    assert_eq!(p.labels()["app"], "gone");
    assert_eq!(p.owner_references()[0].uid, s.uid().unwrap());
    assert!(
        pvcs.get("data-kept-0")
            .await
            .unwrap()
            .owner_references()
            .is_empty()
    );

    sts_api
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    sts_api
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    let left: Vec<String> = server
        .list("v1", "PersistentVolumeClaim", "db")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["data-kept-0", "data-kept-1"]);

    // Tests make a StatefulSet look ready through the helper.
    sts_api
        .create(&PostParams::default(), &sts("ready", "Retain"))
        .await
        .unwrap();
    server
        .set_status(
            "apps/v1",
            "StatefulSet",
            "db",
            "ready",
            json!({"replicas": 2, "readyReplicas": 2, "observedGeneration": 1}),
        )
        .unwrap();
    let ready = sts_api.get("ready").await.unwrap();
    assert_eq!(ready.status.unwrap().ready_replicas, Some(2));
}

#[tokio::test]
async fn the_projects_crd_registers_and_serves_its_kind() {
    let (server, client) = setup().await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crds/secure-qdrant-operator.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the project's CRD file");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for doc in text.split("\n---") {
        if doc.trim().is_empty() {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(doc).expect("CRD YAML");
        names.push(crd.name_any());
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    assert!(names.contains(&"secureqdrants.secureqdrant.dev".to_owned()));
    let crd = crds.get("secureqdrants.secureqdrant.dev").await.unwrap();
    let established = crd
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);

    // Discovery, as kube-rs runs it.
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .groups()
        .find(|g| g.name() == "secureqdrant.dev")
        .expect("the group is discovered")
        .recommended_kind("SecureQdrant")
        .expect("the kind is discovered");
    assert_eq!(ar.plural, "secureqdrants");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "secureqdrants/status" || s.plural == "status")
    );

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "search", &ar);
    let sq = api
        .patch(
            "vectors",
            &PatchParams::apply("test").force(),
            &Patch::Apply(
                json!({"apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
                "metadata": {"name": "vectors"}, "spec": {}}),
            ),
        )
        .await
        .unwrap();
    assert!(
        sq.data["spec"].as_object().unwrap().len() > 3,
        "defaults from the schema"
    );
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    assert_eq!(
        all.list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Deleting the CRD removes its objects and its kind.
    crds.delete("secureqdrants.secureqdrant.dev", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_err(all.list(&ListParams::default()).await.unwrap_err()),
        404
    );
    assert!(
        server
            .list("secureqdrant.dev/v1alpha1", "SecureQdrant", "")
            .is_empty()
    );
}

#[tokio::test]
async fn events_are_created_then_patched_by_the_recorder() {
    let (server, client) = setup().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "secure-qdrant-operator".into(),
            instance: None,
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some("c".into()),
        namespace: Some("default".into()),
        ..ObjectReference::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().unwrap().count, 2);
    let c = server.counters();
    assert_eq!(c.get("create", "events.events.k8s.io"), 1);
    assert_eq!(c.get("patch", "events.events.k8s.io"), 1);
}

#[tokio::test]
async fn injected_errors_follow_the_rate_and_the_seed() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let faults = Faults {
        seed: 42,
        error_rate: 0.3,
        error_codes: vec![409, 500],
        verbs: vec!["get".into()],
        ..Faults::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        server.set_faults(faults.clone());
        let mut outcomes = Vec::new();
        for _ in 0..200 {
            outcomes.push(match api.get("a").await {
                Ok(_) => 0,
                Err(e) => api_err(e),
            });
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "the same seed fails the same requests");
    let failed = runs[0].iter().filter(|c| **c != 0).count();
    assert!(
        (35..=85).contains(&failed),
        "about 30% of 200 failed: {failed}"
    );
    assert!(runs[0].contains(&409) && runs[0].contains(&500));
    // Only the chosen verbs are affected.
    api.list(&ListParams::default()).await.unwrap();
    let c = server.counters();
    assert_eq!(c.get("get", "configmaps"), 400);
    assert_eq!(c.errors("get", "configmaps") as usize, failed * 2);
    assert_eq!(c.errors("list", "configmaps"), 0);

    // 429s are retried by kube's default client (Retry-After honoured).
    server.set_faults(Faults {
        seed: 1,
        error_rate: 0.5,
        error_codes: vec![429],
        retry_after_seconds: Some(0),
        ..Faults::default()
    });
    for _ in 0..20 {
        api.get("a").await.expect("429s are retried");
    }
    assert!(server.counters().errors("get", "configmaps") as usize > failed * 2);

    // Latency.
    server.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let t = Instant::now();
    api.get("a").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    server.clear_faults();
}

#[tokio::test]
async fn dropped_watches_are_resumed_without_relisting() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    reader.wait_until_ready().await.unwrap();
    server.set_faults(Faults {
        watch_drop_after_events: Some(2),
        ..Faults::default()
    });
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    wait_for(|| reader.state().len() == 10, "every object reflected").await;
    task.abort();
    let c = server.counters();
    assert!(c.dropped_watches >= 1, "{c:?}");
    assert!(c.get("watch", "configmaps") >= 2, "{c:?}");
    assert_eq!(
        c.get("list", "configmaps"),
        1,
        "resumed from the last resourceVersion: {c:?}"
    );
}

#[tokio::test]
async fn counters_are_served_over_http() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    api.get("a").await.unwrap();
    api.get("a").await.unwrap();
    let body = client
        .request_text(http::Request::get("/debug/requests").body(vec![]).unwrap())
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let rows = v["requests"].as_array().unwrap();
    let row = |verb: &str| {
        rows.iter()
            .find(|r| r["verb"] == verb && r["resource"] == "configmaps")
            .map(|r| r["count"].as_u64().unwrap())
    };
    assert_eq!(row("get"), Some(2));
    assert_eq!(row("create"), Some(1));
    assert_eq!(v["total"], 3);
    assert_eq!(server.counters().writes(), 1);

    // Faults over HTTP too (for the benchmark).
    let put = http::Request::put("/debug/faults")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"errorRate": 1.0, "errorCodes": [500], "verbs": ["get"]}))
                .unwrap(),
        )
        .unwrap();
    client.request_text(put).await.unwrap();
    assert_eq!(api_err(api.get("a").await.unwrap_err()), 500);
    assert_eq!(server.faults().error_rate, 1.0);
    server.clear_faults();
    let reset = http::Request::delete("/debug/requests")
        .body(vec![])
        .unwrap();
    client.request_text(reset).await.unwrap();
    assert_eq!(server.counters().total(), 0);
}

#[tokio::test]
async fn test_helpers_insert_get_list_delete() {
    let server = FakeApiServer::start(Options {
        objects: vec![widget_crd()],
        ..Options::default()
    })
    .await
    .unwrap();
    let w = server
        .insert(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "t"}, "spec": {}, "status": {"phase": "Seeded"}}))
        .unwrap();
    assert_eq!(w["status"]["phase"], "Seeded", "insert keeps status");
    let cm_typed = cm("x", &[]);
    let mut v = serde_json::to_value(&cm_typed).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("ConfigMap");
    server.insert(v).unwrap();
    assert!(server.get("v1", "cm", "default", "x").is_some());
    assert_eq!(server.list("example.com/v1", "widgets", "").len(), 1);
    server.delete("example.com/v1", "Widget", "t", "w").unwrap();
    assert!(server.get("example.com/v1", "Widget", "t", "w").is_none());
    assert!(server.resource_version() > 0);
    assert_eq!(server.counters().total(), 0, "helpers are not counted");
}

#[tokio::test]
async fn delete_collection_dry_run_foreground_and_namespace_deletion() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    let pp = PostParams::default();
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        api.create(&pp, &cm(n, &[("app", l)])).await.unwrap();
    }
    // dryRun writes nothing.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&dry, &cm("d", &[])).await.unwrap();
    assert!(api.get_opt("d").await.unwrap().is_none());
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=x"),
        )
        .await
        .unwrap();
    let names: Vec<String> = deleted
        .left()
        .unwrap()
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    assert_eq!(names, ["a", "b"]);

    // Foreground: dependents go first, then the owner.
    let owner = api.get("c").await.unwrap();
    let mut dep = cm("dep", &[]);
    dep.metadata.owner_references = Some(vec![
        serde_json::from_value(owner_ref("ConfigMap", "v1", "c", &owner.uid().unwrap())).unwrap(),
    ]);
    api.create(&pp, &dep).await.unwrap();
    api.delete("c", &DeleteParams::foreground()).await.unwrap();
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Deleting a namespace deletes what is in it.
    api.create(&pp, &cm("e", &[])).await.unwrap();
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    assert!(server.list("v1", "ConfigMap", "gone").is_empty());
}

#[tokio::test]
async fn leases_core_events_and_wait_for() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    let (server, client) = setup().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let mut lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &lease)
        .await
        .unwrap();
    // Whoever lost the race replaces with a stale resourceVersion and gets 409.
    assert_eq!(
        api_err(
            leases
                .replace("leader", &PostParams::default(), &lease)
                .await
                .unwrap_err()
        ),
        409
    );

    let events: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "e1"}, "reason": "R", "message": "m",
        "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": "default"}
    }))
    .unwrap();
    events.create(&PostParams::default(), &ev).await.unwrap();
    let found = events
        .list(&ListParams::default().fields("involvedObject.name=c,reason=R"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);

    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let waiter = server.wait_for(
        "v1",
        "ConfigMap",
        "default",
        "late",
        Duration::from_secs(5),
        |o| o.is_some_and(|o| o["data"]["k"] == "v"),
    );
    let writer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        api.create(&PostParams::default(), &cm("late", &[]))
            .await
            .unwrap();
    };
    let (seen, ()) = tokio::join!(waiter, writer);
    assert_eq!(seen.unwrap().unwrap()["metadata"]["name"], "late");
    let timeout = server
        .wait_for(
            "v1",
            "ConfigMap",
            "default",
            "never",
            Duration::from_millis(50),
            |o| o.is_some(),
        )
        .await;
    assert!(timeout.is_err());
}

/// The operator's shape in miniature: a kube-runtime Controller that owns a child it
/// server-side applies, writes status with a merge patch, and re-creates the child when deleted.
#[tokio::test]
async fn a_kube_runtime_controller_reconciles_owned_children() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;

    let (server, client) = with_widgets().await;
    let widgets = widget_api(&client, "default");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );

    #[derive(Debug)]
    struct Fail(String);
    impl std::fmt::Display for Fail {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Fail {}

    async fn reconcile(w: Arc<DynamicObject>, client: Arc<Client>) -> Result<Action, Fail> {
        let ns = w.namespace().unwrap();
        let name = w.name_any();
        let cms: Api<ConfigMap> = Api::namespaced((*client).clone(), &ns);
        let child = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{name}-child"), "labels": {"managed": "yes"},
                "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget",
                    "name": name, "uid": w.uid().unwrap(), "controller": true}]},
            "data": {"size": w.data["spec"]["size"].to_string()},
        });
        cms.patch(
            &format!("{name}-child"),
            &PatchParams::apply("mini-operator").force(),
            &Patch::Apply(&child),
        )
        .await
        .map_err(|e| Fail(e.to_string()))?;
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("example.com", "v1", "Widget"),
            "widgets",
        );
        let api: Api<DynamicObject> = Api::namespaced_with((*client).clone(), &ns, &ar);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": w.metadata.generation}})),
        )
        .await
        .map_err(|e| Fail(e.to_string()))?;
        Ok(Action::await_change())
    }

    let ctx = Arc::new(client.clone());
    let controller = Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &ar),
        watcher::Config::default().any_semantic(),
        ar.clone(),
    )
    .owns(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels("managed=yes"),
    )
    .run(
        reconcile,
        |_, _, _| Action::requeue(Duration::from_secs(1)),
        ctx,
    )
    .for_each(|_| async {});
    let task = tokio::spawn(controller);

    widgets
        .create(&PostParams::default(), &widget("w", json!({"size": 5})))
        .await
        .unwrap();
    let secs = Duration::from_secs(10);
    server
        .wait_for("v1", "ConfigMap", "default", "w-child", secs, |o| {
            o.is_some()
        })
        .await
        .unwrap();
    server
        .wait_for("example.com/v1", "Widget", "default", "w", secs, |o| {
            o.is_some_and(|o| o["status"]["observedGeneration"] == 1)
        })
        .await
        .unwrap();

    // A deleted child is noticed through the owned watch and re-applied.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let before = cms.get("w-child").await.unwrap().uid();
    cms.delete("w-child", &DeleteParams::default())
        .await
        .unwrap();
    let again = server
        .wait_for("v1", "ConfigMap", "default", "w-child", secs, |o| {
            o.is_some_and(|o| o["metadata"]["uid"].as_str() != before.as_deref())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again["data"]["size"], "5");

    // A spec change is reconciled; deleting the owner collects the child.
    widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 7}})),
        )
        .await
        .unwrap();
    server
        .wait_for("v1", "ConfigMap", "default", "w-child", secs, |o| {
            o.is_some_and(|o| o["data"]["size"] == "7")
        })
        .await
        .unwrap();
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    server
        .wait_for("v1", "ConfigMap", "default", "w-child", secs, |o| {
            o.is_none()
        })
        .await
        .unwrap();
    task.abort();
}

#[tokio::test]
async fn scaled_away_pvcs_go_when_when_scaled_is_delete() {
    let (server, client) = setup().await;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), "db");
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "s"},
        "spec": {
            "replicas": 3, "serviceName": "s",
            "selector": {"matchLabels": {"app": "s"}},
            "template": {"metadata": {"labels": {"app": "s"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
        }
    }))
    .unwrap();
    sts_api.create(&PostParams::default(), &sts).await.unwrap();
    assert_eq!(server.list("v1", "pvc", "db").len(), 3);
    sts_api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let left: Vec<Value> = server.list("v1", "pvc", "db");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["metadata"]["name"], "data-s-0");
}

#[tokio::test]
async fn watches_dropped_at_a_rate_still_converge() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    server.set_faults(Faults {
        seed: 3,
        watch_drop_rate: 0.5,
        ..Faults::default()
    });
    let (reader, writer) = reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    wait_for(|| reader.state().len() == 20, "every object reflected").await;
    task.abort();
    assert!(server.counters().dropped_watches >= 3);
}
