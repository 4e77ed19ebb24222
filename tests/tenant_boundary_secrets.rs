//! Issue 12, item 2: a SecureQdrant author who may only create SecureQdrants and
//! QdrantAccessTokens must not get the operator to use a Secret they could not read themselves.
//! One test per attack, on the real control plane (`tests/support/control_plane.rs`): the
//! attacker is a tenant user whose Role allows SecureQdrants and QdrantAccessTokens and nothing
//! else (the real API server refuses it the Secrets it names), the Secrets are made by their
//! owners (admin), and the real reconcile functions run in-process as the chart's ServiceAccount
//! (`tests/support/tenant.rs`), their Events published to the API server. The last test runs the
//! operator binary, namespaced, to show the label-selected watch of referenced Secrets.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/in_process.rs"]
mod in_process;
#[path = "support/real_server.rs"]
mod real_server;
#[path = "support/tenant.rs"]
mod tenant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use control_plane::eventually;
use real_server::Env;
use secure_qdrant_operator::children::meta::MANAGER;
use secure_qdrant_operator::reconcile::references::ALLOWED_INSTANCE_LABEL;
use tenant::{LIMIT, SQ_API, Tenant, stable, tenant_user, writes_to};

const KEY: &str = "a-user-key-0123456789abcdef0123456789abcdef";

// =============================================================================================
// The attacks
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_ca_does_not_sign_for_the_attacker() {
    let env = start("ts-ca").await;
    env.sq("victim", json!({})).await;
    env.reconcile("victim")
        .await
        .expect("the victim reconciles");
    let ca_before = env.get_secret("victim-ca").await.expect("the victim's CA");
    // The tenant could not read it itself.
    env.cannot_read("victim-ca").await;

    // The attacker names the victim's CA (its leaves would be trusted by the victim's clients).
    env.sq(
        "attacker",
        json!({"tls": {"caSecretRef": {"name": "victim-ca"}}}),
    )
    .await;
    let mark = env.t.env.mark().await;
    env.refused("attacker", "victim-ca", "spec.tls.caSecretRef")
        .await;
    assert!(
        env.get_secret("attacker-tls").await.is_none(),
        "a leaf was issued"
    );
    assert_eq!(
        env.get_secret("victim-ca").await,
        Some(ca_before),
        "the victim's CA was written"
    );
    env.not_written(&mark, "victim-ca").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_without_the_label_is_neither_used_nor_written() {
    let env = start("ts-nolabel").await;
    env.user_secret(
        "db-password",
        None,
        json!({"password": STANDARD.encode(KEY)}),
    )
    .await;
    env.cannot_read("db-password").await;
    let before = stable(env.get_secret("db-password").await.unwrap());
    env.sq(
        "attacker",
        json!({"auth": {"apiKeySecretRef": {"name": "db-password", "key": "password"}}}),
    )
    .await;
    let mark = env.t.env.mark().await;
    let message = env
        .refused("attacker", "db-password", "spec.auth.apiKeySecretRef")
        .await;
    assert!(message.contains("has no label"), "{message}");
    assert_eq!(
        env.get_secret("db-password").await.map(stable),
        Some(before),
        "the operator wrote onto a Secret it does not own"
    );
    env.not_written(&mark, "db-password").await;

    // The same for a certificate: mounting someone's TLS Secret.
    env.user_secret(
        "ingress-tls",
        None,
        json!({"tls.crt": STANDARD.encode("x"), "tls.key": STANDARD.encode("y"),
            "ca.crt": STANDARD.encode("z")}),
    )
    .await;
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
    let env = start("ts-othername").await;
    // Allowed for `vectors` and `docs`; `vector` and `vectors2` are other instances.
    env.user_secret(
        "shared-key",
        Some("vectors_docs"),
        json!({"key": STANDARD.encode(KEY)}),
    )
    .await;
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
    let env = start("ts-controlled").await;
    env.sq("victim", json!({})).await;
    env.reconcile("victim")
        .await
        .expect("the victim reconciles");
    // Even labelled for the attacker (which only someone who may write it can do — not the
    // tenant), the victim's own API key is never the attacker's.
    let denied = Api::<Secret>::namespaced(env.t.user.clone(), env.t.ns())
        .patch(
            "victim-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: "attacker"}}})),
        )
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(e)) if e.code == 403),
        "{denied:?}"
    );
    env.label("victim-api-key", "attacker").await;
    // A token's Secret (its JWT is longer than 32 characters), labelled for the attacker.
    let token = env
        .t
        .env
        .insert(json!({"apiVersion": SQ_API, "kind": "QdrantAccessToken",
            "metadata": {"name": "reader"},
            "spec": {"qdrantRef": {"name": "victim"}, "access": {"global": "r"}}}))
        .await
        .unwrap();
    env.t
        .env
        .insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "reader-qdrant-token",
                "labels": {ALLOWED_INSTANCE_LABEL: "attacker2"},
                "ownerReferences": [{"apiVersion": SQ_API, "kind": "QdrantAccessToken",
                    "name": "reader", "uid": token["metadata"]["uid"], "controller": true}]},
            "data": {"token": STANDARD.encode(KEY)}}))
        .await
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
    let env = start("ts-pull").await;
    env.user_secret(
        "corp-registry",
        None,
        json!({".dockerconfigjson": STANDARD.encode("{\"auths\":{}}")}),
    )
    .await;
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
    env.label("corp-registry", "attacker").await;
    env.reconcile("attacker").await.expect("allowed now");
    let sts = env.statefulset("attacker").await.expect("applied");
    assert_eq!(
        sts["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "corp-registry"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_never_signed_with_a_key_its_secret_does_not_allow() {
    let env = start("ts-tokenkey").await;
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
    env.t
        .create_token(
            "admin",
            json!({"qdrantRef": {"name": "attacker"}, "access": {"global": "m"}}),
        )
        .await;
    env.t
        .reconcile_token("admin")
        .await
        .expect("the token reconcile reports the refusal in status");
    assert!(
        env.get_secret("admin-qdrant-token").await.is_none(),
        "a token was signed with another instance's key"
    );
    let qat = env
        .t
        .get(SQ_API, "QdrantAccessToken", "admin")
        .await
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
    let env = start("ts-loses").await;
    env.user_secret(
        "vectors-admin-key",
        Some("docs_vectors"),
        json!({"key": STANDARD.encode(KEY)}),
    )
    .await;
    env.sq(
        "vectors",
        json!({"auth": {"apiKeySecretRef": {"name": "vectors-admin-key", "key": "key"}}}),
    )
    .await;
    env.reconcile("vectors").await.expect("allowed");
    let sts = env.statefulset("vectors").await.expect("applied");
    assert!(
        sts.to_string().contains("\"vectors-admin-key\""),
        "the pods read the user's key"
    );

    // The owner withdraws the opt-in: nothing is applied (the pods keep running as they are),
    // and the condition names the fix.
    env.t
        .merge_patch(
            "v1",
            "Secret",
            "vectors-admin-key",
            json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: null}}}),
        )
        .await;
    // A spec change that would roll the pods is not applied either (made by the tenant).
    Api::<secure_qdrant_operator::crd::SecureQdrant>::namespaced(env.t.user.clone(), env.t.ns())
        .patch(
            "vectors",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("the tenant scales its instance");
    let mark = env.t.env.mark().await;
    env.refused("vectors", "vectors-admin-key", "spec.auth.apiKeySecretRef")
        .await;
    // The real StatefulSet controller keeps its status (and so its resourceVersion) current:
    // what the operator would have written is compared, and its requests are read from the
    // audit log.
    assert_eq!(
        env.statefulset("vectors").await.map(stable),
        Some(stable(sts.clone())),
        "the running StatefulSet was touched"
    );
    let wrote = writes_to(
        &env.t.env.counters_since(&mark).await,
        "StatefulSet",
        "vectors",
    );
    assert!(
        wrote.is_empty(),
        "the running StatefulSet was written: {wrote:?}"
    );
}

/// Issue 16: Events are published by the operator's own publisher (`events::Publisher`), not
/// kube-runtime's recorder. A refusal repeated within six minutes is ONE Event whose series
/// counts it; a refusal with another message under the same reason is an Event of its own, with
/// that message (kube-runtime's recorder keyed repeats without the note: it patched the first
/// Event, so the second message never reached the API server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_refusal_is_one_event_with_a_series_and_another_message_its_own_event() {
    let env = start("ts-repeat").await;
    for secret in ["key-a", "key-b"] {
        env.user_secret(secret, None, json!({"key": STANDARD.encode(KEY)}))
            .await;
    }
    let spec = |secret: &str| json!({"auth": {"apiKeySecretRef": {"name": secret, "key": "key"}}});
    let tenant_sets = |secret: &'static str| {
        let api = Api::<secure_qdrant_operator::crd::SecureQdrant>::namespaced(
            env.t.user.clone(),
            env.t.ns(),
        );
        async move {
            api.patch(
                "vectors",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec(secret)})),
            )
            .await
            .expect("the tenant edits its instance");
        }
    };
    env.sq("vectors", spec("key-a")).await;
    let first = env
        .refused("vectors", "key-a", "spec.auth.apiKeySecretRef")
        .await;
    // Another message under the same reason: its own Event (`refused` finds its note).
    tenant_sets("key-b").await;
    let other = env
        .refused("vectors", "key-b", "spec.auth.apiKeySecretRef")
        .await;
    assert_ne!(first, other);
    // The first refusal again, within six minutes: the first Event's series.
    tenant_sets("key-a").await;
    let again = env
        .refused("vectors", "key-a", "spec.auth.apiKeySecretRef")
        .await;
    assert_eq!(again, first);

    let uid = env.t.instance("vectors").await.metadata.uid.unwrap();
    let refusals: Vec<_> = env
        .t
        .events_about("vectors")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SecretNotAllowed"))
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    let note = |message: &str| message[..message.len() - "; retrying".len()].to_owned();
    for e in &refusals {
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reporting_controller.as_deref(), Some(MANAGER));
        let regarding = e.regarding.as_ref().unwrap();
        assert_eq!(regarding.uid.as_deref(), Some(uid.as_str()), "{e:?}");
        let count = e.series.as_ref().map(|s| s.count);
        if e.note.as_deref() == Some(note(&first).as_str()) {
            assert_eq!(count, Some(2), "{e:?}");
            let last = e.series.as_ref().unwrap().last_observed_time.0;
            assert!(last > e.event_time.as_ref().unwrap().0, "{e:?}");
        } else {
            assert_eq!(e.note.as_deref(), Some(note(&other).as_str()), "{e:?}");
            assert_eq!(count, None, "{e:?}");
        }
    }
}

/// The operator binary watches the Secrets it is allowed to read: the opt-in label and a new
/// key are each acted on by a reconcile that the Secret's watch triggered. On the real control
/// plane other triggers run reconciles too (the 5 s retry after the refusal; the StatefulSet's
/// status events while kwok runs the pods) and a reconcile reads the Secret with a live GET, so
/// a changed StatefulSet alone proves nothing (the key is changed only once the instance is
/// Ready and settled): the proof is the operator's log, where kube's
/// `reconciling object` span names the reconcile's trigger (`related object updated:
/// Secret.v1./byo-key.<ns>`) on the line that reports the children it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_watches_labelled_secrets_so_an_opt_in_and_a_new_key_are_seen_at_once() {
    let env = Env::namespaced("ts-watch").await;
    let user = tenant_user(&env).await;
    let ns = env.ns.clone();
    let operator = env.start_namespaced_operator().await;
    env.insert(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "byo-key"},
            "data": {"key": STANDARD.encode(KEY)}}))
        .await
        .unwrap();
    let sq: secure_qdrant_operator::crd::SecureQdrant = serde_json::from_value(json!({
        "apiVersion": SQ_API, "kind": "SecureQdrant",
        "metadata": {"name": "byo", "namespace": ns},
        "spec": {"tls": {"enabled": false},
            "auth": {"apiKeySecretRef": {"name": "byo-key", "key": "key"}}}}))
    .unwrap();
    Api::<secure_qdrant_operator::crd::SecureQdrant>::namespaced(user, &ns)
        .create(&Default::default(), &sq)
        .await
        .expect("created by the tenant");
    let reason = || async {
        env.get(SQ_API, "SecureQdrant", &ns, "byo")
            .await
            .and_then(|sq| {
                sq["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Reconciled")
                    .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            })
    };
    eventually(LIMIT, || async {
        let r = reason().await;
        (r.as_deref() == Some("SecretNotAllowed"))
            .then_some(())
            .ok_or_else(|| format!("reason {r:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    assert!(
        env.get("apps/v1", "StatefulSet", &ns, "byo")
            .await
            .is_none()
    );

    // The owner opts in: the watch sees the label (well before the 5-minute re-read). The
    // StatefulSet appearing alone would not prove it (the failure retry after 5 s would bring
    // it too): the reconcile that applies it must be the one the Secret's watch triggered, as
    // the operator's log says (kube's `reconciling object` span names its trigger).
    let from = operator.log().len();
    env.merge_patch(
        "v1",
        "Secret",
        &ns,
        "byo-key",
        json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: "byo"}}}),
    )
    .await
    .unwrap();
    eventually(LIMIT, || async {
        env.get("apps/v1", "StatefulSet", &ns, "byo")
            .await
            .map(|_| ())
            .ok_or_else(|| "no StatefulSet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    let trigger = format!("related object updated: Secret.v1./byo-key.{ns}");
    eventually(LIMIT, || async {
        applied_on(&operator.log()[from..], &trigger)
            .then_some(())
            .ok_or_else(|| format!("no children applied on {trigger:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    let hash = || async {
        env.get("apps/v1", "StatefulSet", &ns, "byo")
            .await
            .map(|sts| sts["spec"]["template"]["metadata"]["annotations"].to_string())
    };
    // Settled first: the instance is Ready and neither it nor its StatefulSet changes any more
    // (the same resourceVersions 3 s apart), so no other reconcile is pending when the key
    // changes (kube merges a trigger into a reconcile already scheduled, under that one's name).
    let versions = || async {
        let sq = env.get(SQ_API, "SecureQdrant", &ns, "byo").await;
        let sts = env.get("apps/v1", "StatefulSet", &ns, "byo").await;
        let rv = |o: &Option<Value>| o.as_ref().map(|o| o["metadata"]["resourceVersion"].clone());
        let phase = sq.as_ref().map(|o| o["status"]["phase"].clone());
        (phase, rv(&sq), rv(&sts))
    };
    eventually(LIMIT, || async {
        let first = versions().await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let again = versions().await;
        (first.0 == Some(json!("Ready")) && first == again)
            .then_some(())
            .ok_or_else(|| format!("not settled: {first:?} then {again:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    let before = hash().await;
    // A new key in the labelled Secret rolls the pods at once. The StatefulSet's status events
    // (kwok running the pods) trigger reconciles too, and a reconcile reads the Secret anyway:
    // again the roll must come from the reconcile the Secret's watch triggered.
    let from = operator.log().len();
    env.merge_patch(
        "v1",
        "Secret",
        &ns,
        "byo-key",
        json!({"data": {"key": STANDARD.encode("another-key-0123456789abcdef0123456789ab")}}),
    )
    .await
    .unwrap();
    eventually(LIMIT, || async {
        let now = hash().await;
        (now != before)
            .then_some(())
            .ok_or_else(|| "the pod template is the same".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    eventually(LIMIT, || async {
        applied_on(&operator.log()[from..], &trigger)
            .then_some(())
            .ok_or_else(|| format!("no children applied on {trigger:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    let secret = env.get("v1", "Secret", &ns, "byo-key").await.unwrap();
    assert_eq!(
        secret["metadata"]["labels"],
        json!({ALLOWED_INSTANCE_LABEL: "byo"}),
        "the operator wrote a label onto the user's Secret"
    );
}

/// Whether `log` (the operator's) has a reconcile triggered by `trigger` (kube's
/// `object.reason` of the `reconciling object` span) that wrote children ("applied children").
fn applied_on(log: &str, trigger: &str) -> bool {
    // The text log may colour field names: compare without the escape sequences.
    let plain = strip_ansi(log);
    plain
        .lines()
        .any(|l| l.contains(trigger) && l.contains("applied children"))
}

/// `s` without ANSI escape sequences (ESC `[` ... final letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn applied_on_wants_the_trigger_and_a_write_on_one_line() {
    let t = "related object updated: Secret.v1./k.ns";
    let line = "\u{1b}[2mreconciling object\u{1b}[0m{object.reason=related object updated: \
                Secret.v1./k.ns}: applied children written=3";
    assert!(applied_on(line, t));
    assert!(!applied_on(
        "reconciling object{object.reason=error policy requested retry}: applied children",
        t
    ));
    assert!(!applied_on(
        "reconciling object{object.reason=related object updated: Secret.v1./k.ns}: done",
        t
    ));
}

// =============================================================================================
// Harness
// =============================================================================================

struct SecretsEnv {
    t: Tenant,
}

async fn start(prefix: &str) -> SecretsEnv {
    SecretsEnv {
        t: Tenant::start(prefix, None).await,
    }
}

impl SecretsEnv {
    /// SecureQdrant `name`, created by the tenant.
    async fn sq(&self, name: &str, spec: Value) {
        self.t.create_instance(name, spec).await;
    }

    /// A Secret a user made (as admin), optionally labelled for `allowed`.
    async fn user_secret(&self, name: &str, allowed: Option<&str>, data: Value) {
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "data": data});
        if let Some(allowed) = allowed {
            secret["metadata"]["labels"] = json!({ALLOWED_INSTANCE_LABEL: allowed});
        }
        self.t.env.insert(secret).await.expect("Secret inserted");
    }

    /// The owner of the Secret (admin) labels it for `allowed`.
    async fn label(&self, secret: &str, allowed: &str) {
        self.t
            .merge_patch(
                "v1",
                "Secret",
                secret,
                json!({"metadata": {"labels": {ALLOWED_INSTANCE_LABEL: allowed}}}),
            )
            .await;
    }

    /// The tenant may not read Secret `name` itself (the threat model's premise, enforced by
    /// the real API server's RBAC).
    async fn cannot_read(&self, name: &str) {
        let got = Api::<Secret>::namespaced(self.t.user.clone(), self.t.ns())
            .get(name)
            .await;
        assert!(
            matches!(&got, Err(kube::Error::Api(e)) if e.code == 403),
            "the tenant reads Secret {name}: {:?}",
            got.map(|_| "its content")
        );
    }

    /// The operator made no write request to Secret `name` since `mark` (audit log).
    async fn not_written(&self, mark: &real_server::Mark, name: &str) {
        let wrote = writes_to(&self.t.env.counters_since(mark).await, "Secret", name);
        assert!(wrote.is_empty(), "Secret {name} was written: {wrote:?}");
    }

    async fn get_secret(&self, name: &str) -> Option<Value> {
        self.t.get("v1", "Secret", name).await
    }

    async fn statefulset(&self, name: &str) -> Option<Value> {
        self.t.get("apps/v1", "StatefulSet", name).await
    }

    async fn reconcile(&self, name: &str) -> Result<(), secure_qdrant_operator::error::Error> {
        self.t.reconcile(name).await
    }

    /// Reconciles `name` and checks it was refused for Secret `secret` named by `field`: the
    /// condition and the Event (on the real API server) name the Secret and the label to add;
    /// nothing of the instance (no API-key Secret, no StatefulSet) was written unless it
    /// already existed. Returns the condition's message.
    async fn refused(&self, name: &str, secret: &str, field: &str) -> String {
        let had_sts = self.statefulset(name).await.is_some();
        // Only an Event of this reconcile counts (not one of an earlier refusal).
        let started = k8s_openapi::jiff::Timestamp::now();
        self.reconcile(name)
            .await
            .expect_err("a reference the Secret does not allow");
        let sq = self.t.get(SQ_API, "SecureQdrant", name).await.unwrap();
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
        let note = &message[..message.len() - "; retrying".len()];
        let events = self.t.warnings_since(started).await;
        assert!(
            events
                .iter()
                .any(|(reason, n, regarding)| reason == "SecretNotAllowed"
                    && n == note
                    && regarding == name),
            "no SecretNotAllowed Event about {name} saying {note:?}: {events:?}"
        );
        if !had_sts {
            for written in [
                self.statefulset(name).await,
                self.get_secret(&format!("{name}-api-key")).await,
                self.get_secret(&format!("{name}-ca")).await,
                self.get_secret(&format!("{name}-tls")).await,
            ] {
                assert!(
                    written.is_none(),
                    "{name}: written before the refusal: {written:?}"
                );
            }
        }
        message
    }
}
