//! Issue 12, item 2: a SecureQdrant author who may only create SecureQdrants and
//! QdrantAccessTokens must not get the operator to use a Secret they could not read themselves.
//! One test per attack, against the in-memory API server (`tests/fake-apiserver`), through the
//! real reconcile functions; the last test runs the operator binary to show the label-selected
//! watch of referenced Secrets.

#[path = "support/in_process.rs"]
mod in_process;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fake_apiserver::FakeApiServer;
use in_process::{cached_versions, client_for, managed_stores, reflect, versions};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::reflector::Store;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use secure_qdrant_operator::children::meta::{LABEL_MANAGED_BY, MANAGER};
use secure_qdrant_operator::crd::{QdrantAccessToken, SecureQdrant};
use secure_qdrant_operator::events::{EventLog, Events};
use secure_qdrant_operator::reconcile::references::ALLOWED_INSTANCE_LABEL;
use secure_qdrant_operator::reconcile::{self, Context, token};
use secure_qdrant_operator::settings::Settings;

const NS: &str = "search";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
const KEY: &str = "a-user-key-0123456789abcdef0123456789abcdef";
const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");

// =============================================================================================
// The attacks
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_ca_does_not_sign_for_the_attacker() {
    let env = Env::start().await;
    env.sq("victim", json!({})).await;
    env.reconcile("victim")
        .await
        .expect("the victim reconciles");
    let ca_before = env.get_secret("victim-ca").expect("the victim's CA");

    // The attacker names the victim's CA (its leaves would be trusted by the victim's clients).
    env.sq(
        "attacker",
        json!({"tls": {"caSecretRef": {"name": "victim-ca"}}}),
    )
    .await;
    env.refused("attacker", "victim-ca", "spec.tls.caSecretRef")
        .await;
    assert!(
        env.get_secret("attacker-tls").is_none(),
        "a leaf was issued"
    );
    assert_eq!(
        env.get_secret("victim-ca"),
        Some(ca_before),
        "the victim's CA was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_without_the_label_is_neither_used_nor_written() {
    let env = Env::start().await;
    env.user_secret(
        "db-password",
        None,
        json!({"password": STANDARD.encode(KEY)}),
    );
    let before = env.get_secret("db-password").unwrap();
    env.sq(
        "attacker",
        json!({"auth": {"apiKeySecretRef": {"name": "db-password", "key": "password"}}}),
    )
    .await;
    let message = env
        .refused("attacker", "db-password", "spec.auth.apiKeySecretRef")
        .await;
    assert!(message.contains("has no label"), "{message}");
    assert_eq!(
        env.get_secret("db-password"),
        Some(before),
        "the operator wrote onto a Secret it does not own"
    );

    // The same for a certificate: mounting someone's TLS Secret.
    env.user_secret(
        "ingress-tls",
        None,
        json!({"tls.crt": STANDARD.encode("x"), "tls.key": STANDARD.encode("y"),
            "ca.crt": STANDARD.encode("z")}),
    );
    env.sq(
        "mounter",
        json!({"tls": {"certificateSecretRef": {"name": "ingress-tls"}}}),
    )
    .await;
    env.refused("mounter", "ingress-tls", "spec.tls.certificateSecretRef")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_naming_another_instance_is_refused() {
    let env = Env::start().await;
    // Allowed for `vectors` and `docs`; `vector` and `vectors2` are other instances.
    env.user_secret(
        "shared-key",
        Some("vectors_docs"),
        json!({"key": STANDARD.encode(KEY)}),
    );
    for name in ["vector", "vectors2"] {
        env.sq(
            name,
            json!({"auth": {"apiKeySecretRef": {"name": "shared-key", "key": "key"}}}),
        )
        .await;
        let message = env
            .refused(name, "shared-key", "spec.auth.apiKeySecretRef")
            .await;
        assert!(message.contains("does not name"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_controlled_by_a_token_or_another_instance_is_refused_label_or_not() {
    let env = Env::start().await;
    env.sq("victim", json!({})).await;
    env.reconcile("victim")
        .await
        .expect("the victim reconciles");
    // Even labelled for the attacker (which only someone who may write it can do), the victim's
    // own API key is never the attacker's.
    env.label("victim-api-key", "attacker");
    // A token's Secret (its JWT is longer than 32 characters), labelled for the attacker.
    let token = env
        .server
        .insert(json!({"apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "reader", "namespace": NS},
            "spec": {"qdrantRef": {"name": "victim"}, "access": {"global": "r"}}}))
        .unwrap();
    env.server
        .insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "reader-qdrant-token", "namespace": NS,
                "labels": {ALLOWED_INSTANCE_LABEL: "attacker2"},
                "ownerReferences": [{"apiVersion": SQ_API, "kind": "QdrantAccessToken",
                    "name": "reader", "uid": token["metadata"]["uid"], "controller": true}]},
            "data": {"token": STANDARD.encode(KEY)}}))
        .unwrap();

    env.sq(
        "attacker",
        json!({"auth": {"apiKeySecretRef": {"name": "victim-api-key", "key": "api-key"}}}),
    )
    .await;
    let message = env
        .refused("attacker", "victim-api-key", "spec.auth.apiKeySecretRef")
        .await;
    assert!(
        message.contains("belongs to SecureQdrant victim"),
        "{message}"
    );
    env.sq(
        "attacker2",
        json!({"auth": {"apiKeySecretRef": {"name": "reader-qdrant-token", "key": "token"}}}),
    )
    .await;
    let message = env
        .refused(
            "attacker2",
            "reader-qdrant-token",
            "spec.auth.apiKeySecretRef",
        )
        .await;
    assert!(
        message.contains("belongs to QdrantAccessToken reader"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pull_secret_without_the_label_is_refused() {
    let env = Env::start().await;
    env.user_secret(
        "corp-registry",
        None,
        json!({".dockerconfigjson": STANDARD.encode("{\"auths\":{}}")}),
    );
    env.sq(
        "attacker",
        json!({"imagePullSecrets": [{"name": "corp-registry"}]}),
    )
    .await;
    env.refused("attacker", "corp-registry", "spec.imagePullSecrets")
        .await;
    // A pull Secret that does not exist yet: whoever creates it later would not have opted in.
    env.sq("early", json!({"imagePullSecrets": [{"name": "later"}]}))
        .await;
    let message = env.refused("early", "later", "spec.imagePullSecrets").await;
    assert!(message.contains("does not exist"), "{message}");

    // Labelled for the instance: used.
    env.label("corp-registry", "attacker");
    env.reconcile("attacker").await.expect("allowed now");
    let sts = env.statefulset("attacker").expect("applied");
    assert_eq!(
        sts["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "corp-registry"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_never_signed_with_a_key_its_secret_does_not_allow() {
    let env = Env::start().await;
    env.sq("victim", json!({})).await;
    env.reconcile("victim")
        .await
        .expect("the victim reconciles");
    // The attacker's instance names the victim's key: refused; and its manage token is not minted
    // with that key either (the token would open the victim's Qdrant).
    env.sq(
        "attacker",
        json!({"tls": {"enabled": false},
            "auth": {"apiKeySecretRef": {"name": "victim-api-key", "key": "api-key"},
            "allowManageTokens": true}}),
    )
    .await;
    env.refused("attacker", "victim-api-key", "spec.auth.apiKeySecretRef")
        .await;
    env.server
        .insert(json!({"apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "admin", "namespace": NS},
            "spec": {"qdrantRef": {"name": "attacker"}, "access": {"global": "m"}}}))
        .unwrap();
    env.settle().await;
    let qat: QdrantAccessToken = serde_json::from_value(
        env.server
            .get(SQ_API, "QdrantAccessToken", NS, "admin")
            .unwrap(),
    )
    .unwrap();
    token::reconcile(Arc::new(qat), env.ctx.clone(), env.instances.clone())
        .await
        .expect("the token reconcile reports the refusal in status");
    assert!(
        env.get_secret("admin-qdrant-token").is_none(),
        "a token was signed with another instance's key"
    );
    let qat = env
        .server
        .get(SQ_API, "QdrantAccessToken", NS, "admin")
        .unwrap();
    let ready = qat["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "SecretNotAllowed");
}

// =============================================================================================
// What still works
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_secret_is_used_and_a_running_instance_that_loses_the_label_keeps_running() {
    let env = Env::start().await;
    env.user_secret(
        "vectors-admin-key",
        Some("docs_vectors"),
        json!({"key": STANDARD.encode(KEY)}),
    );
    env.sq(
        "vectors",
        json!({"auth": {"apiKeySecretRef": {"name": "vectors-admin-key", "key": "key"}}}),
    )
    .await;
    env.reconcile("vectors").await.expect("allowed");
    let sts = env.statefulset("vectors").expect("applied");
    assert!(
        sts.to_string().contains("\"vectors-admin-key\""),
        "the pods read the user's key"
    );

    // The owner withdraws the opt-in: nothing is applied (the pods keep running as they are),
    // and the condition names the fix.
    env.server
        .merge_patch(
            "v1",
            "Secret",
            NS,
            "vectors-admin-key",
            &json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: null}}}),
        )
        .unwrap();
    // A spec change that would roll the pods is not applied either.
    env.server
        .merge_patch(
            SQ_API,
            "SecureQdrant",
            NS,
            "vectors",
            &json!({"spec": {"replicas": 3}}),
        )
        .unwrap();
    env.refused("vectors", "vectors-admin-key", "spec.auth.apiKeySecretRef")
        .await;
    assert_eq!(
        env.statefulset("vectors").unwrap()["metadata"]["resourceVersion"],
        sts["metadata"]["resourceVersion"],
        "the running StatefulSet was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_watches_labelled_secrets_so_an_opt_in_and_a_new_key_are_seen_at_once() {
    let server = in_process::server_with_crds().await;
    let dir = tempfile::tempdir().unwrap();
    let _operator = Operator::spawn(&server, &dir);
    server
        .insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "byo-key", "namespace": NS},
            "data": {"key": STANDARD.encode(KEY)}}))
        .unwrap();
    server
        .insert(json!({"apiVersion": SQ_API, "kind": "SecureQdrant",
            "metadata": {"name": "byo", "namespace": NS},
            "spec": {"tls": {"enabled": false},
                "auth": {"apiKeySecretRef": {"name": "byo-key", "key": "key"}}}}))
        .unwrap();
    let reason = |server: &FakeApiServer| {
        server
            .get(SQ_API, "SecureQdrant", NS, "byo")
            .and_then(|sq| {
                sq["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Reconciled")
                    .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            })
    };
    eventually(&server, "SecretNotAllowed", |s| {
        reason(s).as_deref() == Some("SecretNotAllowed")
    })
    .await;
    assert!(server.get("apps/v1", "StatefulSet", NS, "byo").is_none());

    // The owner opts in: the watch sees the label (well before the 5-minute re-read, and the
    // failure backoff).
    server
        .merge_patch(
            "v1",
            "Secret",
            NS,
            "byo-key",
            &json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: "byo"}}}),
        )
        .unwrap();
    eventually(&server, "the StatefulSet", |s| {
        s.get("apps/v1", "StatefulSet", NS, "byo").is_some()
    })
    .await;
    let hash = |s: &FakeApiServer| {
        s.get("apps/v1", "StatefulSet", NS, "byo")
            .map(|sts| sts["spec"]["template"]["metadata"]["annotations"].to_string())
    };
    let before = hash(&server);
    // A new key in the labelled Secret rolls the pods at once.
    server
        .merge_patch(
            "v1",
            "Secret",
            NS,
            "byo-key",
            &json!({"data": {"key": STANDARD.encode("another-key-0123456789abcdef0123456789ab")}}),
        )
        .unwrap();
    eventually(&server, "a new pod template", |s| hash(s) != before).await;
    let secret = server.get("v1", "Secret", NS, "byo-key").unwrap();
    assert_eq!(
        secret["metadata"]["labels"],
        json!({ALLOWED_INSTANCE_LABEL: "byo"}),
        "the operator wrote a label onto the user's Secret"
    );
}

// =============================================================================================
// Harness
// =============================================================================================

struct Env {
    server: FakeApiServer,
    ctx: Arc<Context>,
    events: EventLog,
    instances: Store<SecureQdrant>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Env {
    async fn start() -> Env {
        let server = in_process::server_with_crds().await;
        let client: Client = client_for(&server).await;
        let mut tasks = Vec::new();
        let stores = managed_stores(&client, &mut tasks);
        let instances = reflect::<SecureQdrant>(&client, &mut tasks, false);
        let (events, log) = Events::memory();
        let ctx = Context::new(client.clone(), stores, events, Settings::default());
        assert!(ctx.stores.wait_until_ready().await);
        instances.wait_until_ready().await.unwrap();
        Env {
            server,
            ctx: Arc::new(ctx),
            events: log,
            instances,
            tasks,
        }
    }

    async fn sq(&self, name: &str, spec: Value) {
        self.server
            .insert(json!({"apiVersion": SQ_API, "kind": "SecureQdrant",
                "metadata": {"name": name, "namespace": NS}, "spec": spec}))
            .expect("SecureQdrant inserted");
    }

    /// A Secret a user made, optionally labelled for `allowed`.
    fn user_secret(&self, name: &str, allowed: Option<&str>, data: Value) {
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS}, "data": data});
        if let Some(allowed) = allowed {
            secret["metadata"]["labels"] = json!({ALLOWED_INSTANCE_LABEL: allowed});
        }
        self.server.insert(secret).expect("Secret inserted");
    }

    fn label(&self, secret: &str, allowed: &str) {
        self.server
            .merge_patch(
                "v1",
                "Secret",
                NS,
                secret,
                &json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: allowed}}}),
            )
            .expect("labelled");
    }

    fn get_secret(&self, name: &str) -> Option<Value> {
        self.server.get("v1", "Secret", NS, name)
    }

    fn statefulset(&self, name: &str) -> Option<Value> {
        self.server.get("apps/v1", "StatefulSet", NS, name)
    }

    async fn reconcile(&self, name: &str) -> Result<(), secure_qdrant_operator::error::Error> {
        self.settle().await;
        self.events.lock().unwrap().clear();
        let sq: SecureQdrant = serde_json::from_value(
            self.server
                .get(SQ_API, "SecureQdrant", NS, name)
                .expect("the SecureQdrant"),
        )
        .unwrap();
        let result = reconcile::reconcile(Arc::new(sq), self.ctx.clone()).await;
        self.settle().await;
        result.map(|_| ())
    }

    /// Reconciles `name` and checks it was refused for Secret `secret` named by `field`: the
    /// condition and the Event name the Secret and the label to add; nothing of the instance
    /// (no API-key Secret, no StatefulSet) was written unless it already existed. Returns the
    /// condition's message.
    async fn refused(&self, name: &str, secret: &str, field: &str) -> String {
        let had_sts = self.statefulset(name).is_some();
        self.reconcile(name)
            .await
            .expect_err("a reference the Secret does not allow");
        let sq = self.server.get(SQ_API, "SecureQdrant", NS, name).unwrap();
        let c = sq["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Reconciled")
            .cloned()
            .unwrap();
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "SecretNotAllowed", "{c}");
        let message = c["message"].as_str().unwrap().to_owned();
        for needle in [
            format!("Secret {secret} ({field})"),
            format!("kubectl label secret {secret} {ALLOWED_INSTANCE_LABEL}={name}"),
        ] {
            assert!(message.contains(&needle), "{needle:?} not in {message}");
        }
        let events = self.events.lock().unwrap();
        assert!(
            events.iter().any(|(_, e)| e.reason == "SecretNotAllowed"
                && e.note.as_deref() == Some(&message[..message.len() - "; retrying".len()])),
            "no SecretNotAllowed Event: {:?}",
            events.iter().map(|(_, e)| &e.note).collect::<Vec<_>>()
        );
        if !had_sts {
            for written in [
                self.statefulset(name),
                self.get_secret(&format!("{name}-api-key")),
                self.get_secret(&format!("{name}-ca")),
                self.get_secret(&format!("{name}-tls")),
            ] {
                assert!(
                    written.is_none(),
                    "{name}: written before the refusal: {written:?}"
                );
            }
        }
        message
    }

    /// Waits until the caches hold what the server holds.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let managed = |kind: &str, api: &str| {
                versions(
                    self.server
                        .list(api, kind, "")
                        .into_iter()
                        .filter(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGER),
                )
            };
            let server = (
                managed("Secret", "v1"),
                managed("StatefulSet", "apps/v1"),
                versions(self.server.list(SQ_API, "SecureQdrant", "").into_iter()),
            );
            let cached = (
                cached_versions(&self.ctx.stores.secrets),
                cached_versions(&self.ctx.stores.statefulsets),
                cached_versions(&self.instances),
            );
            if server == cached {
                return;
            }
            assert!(Instant::now() < deadline, "caches did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn eventually(server: &FakeApiServer, what: &str, check: impl Fn(&FakeApiServer) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check(server) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator binary against the fake API server; killed when dropped.
struct Operator(Child);

impl Operator {
    fn spawn(server: &FakeApiServer, dir: &tempfile::TempDir) -> Operator {
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let log = std::fs::File::create(dir.path().join("operator.log")).unwrap();
        let child = Command::new(OPERATOR)
            .args(["run", "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("CLUSTER_DOMAIN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("operator binary starts");
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(dead_code)]
fn secret_of(value: Value) -> Secret {
    serde_json::from_value(value).unwrap()
}
