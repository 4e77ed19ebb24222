//! The RBAC tables of `secure_qdrant_operator::rbac` against what the operator really calls, on a
//! real Kubernetes control plane (tests/control-plane: kube-apiserver with RBAC authorization and
//! an audit log, the real StatefulSet controller, garbage collector and kwok's nodes).
//!
//! The real operator binary runs as the chart's ServiceAccount, with the chart's RBAC (rendered
//! by the Helm SDK) applied to the API server, started exactly as the chart's Deployment starts
//! it with two replicas (the Deployment's args and env, leader election on), and goes through a
//! scenario that makes every kind of call it has: an instance from deploy/examples/full.yaml
//! converges (one of its Secrets was broken beforehand, so it is replaced), a QdrantAccessToken
//! is issued, stale children are pruned, an acknowledged scale-down is applied (the
//! acknowledgment annotation removed), the API-key Secret is lost (new keys, the token
//! re-signed, a repeated Event), an API-key rotation and a CA key rotation are asked for and
//! run through all their phases to their end, the instance is deleted (the token Secret goes), and the operator is stopped with
//! SIGTERM (the Lease is released). The real authorizer decides every request, and the chart's
//! ValidatingAdmissionPolicy for the operator is installed and enforced too: the audit log
//! must show no 403 for the operator, requests with the operator's User-Agent
//! (`secure-qdrant-operator/<version>`) made by its ServiceAccount, and every request with that
//! agent made as a chart ServiceAccount (never admin), and the operator's requests by (verb, resource) must equal
//! the tables: a call without a rule fails, and so does a rule never used (a permission granted
//! for nothing).
//!
//! One authorization is not in a request's verb: a server-side apply that creates the object is
//! authorized by the API server as `create` too. The audit log shows which applies created their
//! object (response code 201), so `create` is required for every kind the operator created
//! through apply.
//!
//! Needs Go >= 1.26 (the first test builds the control plane): never skipped, never faked.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/real_server.rs"]
mod real_server;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use control_plane::{
    ControlPlane, apply_chart_rbac, listening_on_loopback, render_chart, service_account_token,
};
use real_server::{Counters, Mark, Request, audit_sync, count, crds_installed, requests_between};
use secure_qdrant_operator::children::meta::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER,
};
use secure_qdrant_operator::rbac::{self, LEADER_ELECTION, RBAC};

const OPERATOR: &str = env!("CARGO_BIN_EXE_secure-qdrant-operator");
/// The name of the instance of deploy/examples/full.yaml.
const NAME: &str = "vectors";
const SQ_API: &str = "secureqdrant.dev/v1alpha1";
/// The Lease the chart's operator takes (in the release namespace).
const LEASE: &str = "secure-qdrant-operator";
/// The pod name the chart's Deployment passes as POD_NAME (the Lease's holder).
const POD_NAME: &str = "sqo-secure-qdrant-operator-7d9f-abcde";
/// How long a step of the scenario may take on a loaded machine (scheduling, kwok, the
/// StatefulSet's ordered start and rolls of up to three pods).
const WAIT: Duration = Duration::from_secs(240);

/// A cluster-wide operator reconciles every namespace: while it runs, no other operator may
/// (the namespaced one takes the read side, the cluster-wide one the write side).
static OPERATOR_SCOPE: RwLock<()> = RwLock::const_new(());

type Triples = BTreeSet<(String, String, String)>;
/// What the audit log says of a request: (namespace, resource, verb).
type Attributes<'a> = (&'a str, &'a str, &'a str);

/// The image pull Secret deploy/examples/full.yaml names, as its owner made it: labelled to
/// allow the instance (the operator refuses it otherwise).
fn pull_secret(ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "registry-credentials", "namespace": ns,
            "labels": {"secureqdrant.dev/allowed-instance": NAME}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "e30="},
    })
}

/// One test's world: the binary's control plane, an admin client and the dynamic helpers
/// (`real_server::Env`'s, on the test's own namespaces).
struct World {
    cp: &'static ControlPlane,
    admin: Client,
    env: real_server::Env,
}

impl World {
    async fn new(prefix: &str) -> World {
        let env = real_server::Env::new(prefix).await;
        World {
            cp: env.cp,
            admin: env.admin.clone(),
            env,
        }
    }

    /// full.yaml's pods ask for this PriorityClass (the Priority admission plugin refuses them
    /// without it), and its image pull Secret.
    async fn prepare_full(&self, ns: &str) {
        let pc: PriorityClass = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "vectors-high"}, "value": 1000,
        }))
        .unwrap();
        Api::<PriorityClass>::all(self.admin.clone())
            .patch(
                "vectors-high",
                &control_plane::apply_params(),
                &Patch::Apply(&pc),
            )
            .await
            .expect("PriorityClass vectors-high");
        self.env
            .insert(pull_secret(ns))
            .await
            .expect("pull Secret inserted");
    }
}

/// The chart installed as its own release (namespace `sqo-N-PID`, release `sqo-<namespace>`)
/// with `values`: its ServiceAccount and RBAC applied as admin, a token of that ServiceAccount.
struct Release {
    namespace: String,
    docs: Vec<Value>,
    token: String,
    user: String,
}

impl Release {
    async fn install(cp: &ControlPlane, admin: &Client, values: &Value) -> Release {
        Release::install_edited(cp, admin, values, |_| {}).await
    }

    /// `install`, with the rendered documents changed by `edit` before they are applied.
    async fn install_edited(
        cp: &ControlPlane,
        admin: &Client,
        values: &Value,
        edit: impl FnOnce(&mut Vec<Value>),
    ) -> Release {
        let namespace = cp.namespace(admin, "sqo").await;
        let mut docs = render_chart(values, &format!("sqo-{namespace}"), &namespace);
        edit(&mut docs);
        let sa = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("the chart has a ServiceAccount")
            .to_owned();
        apply_chart_rbac(admin, &docs).await;
        let token = service_account_token(admin, &namespace, &sa).await;
        Release {
            user: format!("system:serviceaccount:{namespace}:{sa}"),
            namespace,
            docs,
            token,
        }
    }

    /// Applies the chart's ValidatingAdmissionPolicy and its binding for this release (they
    /// match only its ServiceAccount) and waits until the API server enforces them: a dry-run
    /// create of an unlabelled ConfigMap in `ns` as the ServiceAccount is refused by the policy.
    /// Only then does the caller mark the audit log (the probe's 403s come before the mark).
    async fn install_admission_policy(&self, cp: &ControlPlane, admin: &Client, ns: &str) {
        let mut installed = 0;
        for doc in &self.docs {
            let (kind, plural) = match doc["kind"].as_str().unwrap_or_default() {
                "ValidatingAdmissionPolicy" => {
                    ("ValidatingAdmissionPolicy", "validatingadmissionpolicies")
                }
                "ValidatingAdmissionPolicyBinding" => (
                    "ValidatingAdmissionPolicyBinding",
                    "validatingadmissionpolicybindings",
                ),
                _ => continue,
            };
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
                plural,
            );
            let name = doc["metadata"]["name"].as_str().expect("named");
            Api::<DynamicObject>::all_with(admin.clone(), &ar)
                .patch(name, &control_plane::apply_params(), &Patch::Apply(doc))
                .await
                .unwrap_or_else(|e| panic!("the real API server refuses the chart's {kind}: {e}"));
            installed += 1;
        }
        assert_eq!(installed, 2, "the chart renders a policy and its binding");
        let api = Api::<ConfigMap>::namespaced(self.client(cp).await, ns);
        let probe: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "admission-policy-probe"}, "data": {"k": "v"},
        }))
        .unwrap();
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        eventually("the admission policy is enforced", || async {
            match api.create(&dry_run, &probe).await {
                Err(kube::Error::Api(e))
                    if e.code == 403 && e.message.contains("ValidatingAdmissionPolicy") =>
                {
                    Ok(())
                }
                other => Err(format!("not refused by the policy yet: {other:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A kubeconfig as the ServiceAccount, straight to the real API server.
    fn kubeconfig(&self, cp: &ControlPlane) -> String {
        control_plane::token_kubeconfig(&cp.state, &self.token, &self.namespace)
    }

    async fn client(&self, cp: &ControlPlane) -> Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig(cp)).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        Client::try_from(config).unwrap()
    }

    /// The requests of this release's ServiceAccount logged since `from`.
    async fn requests_since(&self, cp: &ControlPlane, admin: &Client, from: &Mark) -> Counters {
        let now = audit_sync(cp, admin).await;
        count(requests_between(cp, from, &now, &self.user))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_calls_exactly_what_the_rbac_tables_grant() {
    let _scope = OPERATOR_SCOPE.write().await;
    let w = World::new("search").await;
    let (cp, env) = (w.cp, &w.env);
    // This operator is cluster-wide: instances a namespaced test left behind (it failed before
    // its cleanup) and namespaces still being deleted would get its requests, refused there
    // (403, "being terminated"). Remove the first, wait out the second.
    remove_leftover_instances(env).await;
    no_namespace_terminating(&w.admin).await;
    let ns = env.ns.clone();
    let release = Release::install(cp, &w.admin, &json!({"replicas": 2})).await;
    release.install_admission_policy(cp, &w.admin, &ns).await;
    let start = audit_sync(cp, &w.admin).await;

    w.prepare_full(&ns).await;
    let sq = env
        .insert(example("full.yaml", &ns))
        .await
        .expect("instance inserted");
    let uid = sq["metadata"]["uid"].as_str().expect("uid").to_owned();
    // A broken CA Secret of the instance (someone edited it): the operator replaces it (an
    // update). Controlled by the instance: the operator writes nothing it does not control.
    env.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{NAME}-ca"), "namespace": ns, "labels": labels(),
                     "ownerReferences": [{
                         "apiVersion": SQ_API, "kind": "SecureQdrant",
                         "name": NAME, "uid": uid, "controller": true}]},
        "type": "Opaque",
        "data": {"tls.crt": "bm90IGEgY2VydGlmaWNhdGU=", "tls.key": "bm90IGEga2V5"},
    }))
    .await
    .expect("broken CA inserted");

    let mut operator = Operator::spawn(cp, &release);
    let lease = eventually("the operator takes the Lease", || async {
        env.get("coordination.k8s.io/v1", "Lease", &release.namespace, LEASE)
            .await
            .ok_or_else(|| "no Lease".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    assert_eq!(
        lease["spec"]["holderIdentity"], POD_NAME,
        "the Lease is held by POD_NAME"
    );

    // The instance converges; the broken CA was replaced.
    eventually("the instance converges", || converged(env, &ns))
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    eventually("the CA is replaced", || async {
        let ca = env
            .get("v1", "Secret", &ns, &format!("{NAME}-ca"))
            .await
            .ok_or("no CA")?;
        (ca["data"]["tls.key"] != "bm90IGEga2V5")
            .then_some(())
            .ok_or_else(|| "the broken CA is still there".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The probes of the chart answer on the port the operator listens on (the chart's
    // `--http-addr`, here on a port the kernel picks).
    let http = operator.listening_addr().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        eventually(&format!("GET {path} is 200"), || async {
            http_get(&http, path)
        })
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    }

    // A token for an application.
    env.insert(json!({
        "apiVersion": SQ_API, "kind": "QdrantAccessToken",
        "metadata": {"name": "frontend", "namespace": ns},
        "spec": {"qdrantRef": {"name": NAME}, "access": {"global": "r"}, "lifetime": "1h"},
    }))
    .await
    .expect("token inserted");
    let first_token = eventually("the token is issued", || issued_token(env, &ns))
        .await
        .unwrap_or_else(|e| operator.fail(&e));

    // A repeated Event is a patch of its series (the operator's one `patch` of Events): a token
    // for an instance that does not exist is a Warning; the instance appears with a spec the
    // operator refuses (the name "svc"): another Warning; it is deleted: the first Warning
    // again, within six minutes and with the same message, so the first Event's series.
    env.insert(json!({
        "apiVersion": SQ_API, "kind": "QdrantAccessToken",
        "metadata": {"name": "orphan", "namespace": ns},
        "spec": {"qdrantRef": {"name": "svc"}, "access": {"global": "r"}, "lifetime": "1h"},
    }))
    .await
    .expect("orphan token inserted");
    let orphan_event = |reason: &'static str| {
        let (env, ns) = (env, &ns);
        async move {
            env.list("events.k8s.io/v1", "Event", ns)
                .await
                .into_iter()
                .find(|e| e["regarding"]["name"] == "orphan" && e["reason"] == reason)
                .ok_or_else(|| format!("no {reason} Event about the orphan token"))
        }
    };
    eventually("the token's instance is missing", || {
        orphan_event("InstanceMissing")
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    env.insert(json!({
        "apiVersion": SQ_API, "kind": "SecureQdrant",
        "metadata": {"name": "svc", "namespace": ns}, "spec": {},
    }))
    .await
    .expect("invalid instance inserted");
    eventually("the token's instance is invalid", || {
        orphan_event("InstanceInvalid")
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    env.delete(SQ_API, "SecureQdrant", &ns, "svc")
        .await
        .expect("invalid instance deleted");
    eventually("the first Warning is repeated in its series", || async {
        let e = orphan_event("InstanceMissing").await?;
        (e["series"]["count"] == 2)
            .then_some(())
            .ok_or_else(|| format!("not counted twice: {e}"))
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // Children of an older operator version under other names: pruned.
    let owner = json!([{
        "apiVersion": SQ_API, "kind": "SecureQdrant", "name": NAME, "uid": uid,
        "controller": true,
    }]);
    let meta = json!({"name": format!("{NAME}-legacy"), "namespace": ns, "labels": labels(),
                      "ownerReferences": owner});
    env.insert(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": meta, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    )
    .await
    .expect("stale NetworkPolicy inserted");
    env.insert(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                      "metadata": meta,
                      "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels()}}}),
    )
    .await
    .expect("stale PDB inserted");
    eventually("stale children are pruned", || async {
        let legacy = format!("{NAME}-legacy");
        let np = env
            .get("networking.k8s.io/v1", "NetworkPolicy", &ns, &legacy)
            .await;
        let pdb = env
            .get("policy/v1", "PodDisruptionBudget", &ns, &legacy)
            .await;
        (np.is_none() && pdb.is_none())
            .then_some(())
            .ok_or_else(|| "stale children still there".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The user acknowledges a scale-down (3 -> 2) with the annotation: the StatefulSet is
    // scaled (the real StatefulSet controller removes a pod: two are left) and the operator removes the
    // annotation (its one write to the resource itself). The user's own write is made as admin,
    // so it is not counted.
    env.merge_patch(
        SQ_API,
        "SecureQdrant",
        &ns,
        NAME,
        json!({"metadata": {"annotations": {"secureqdrant.dev/peers-removed": "2"}},
                "spec": {"replicas": 2}}),
    )
    .await
    .expect("scale-down acknowledged");
    eventually("the acknowledged scale-down is applied", || async {
        let sts = env
            .get("apps/v1", "StatefulSet", &ns, NAME)
            .await
            .ok_or("no StatefulSet")?;
        let sq = env
            .get(SQ_API, "SecureQdrant", &ns, NAME)
            .await
            .ok_or("no SecureQdrant")?;
        let acknowledged = sq["metadata"]["annotations"]
            .get("secureqdrant.dev/peers-removed")
            .is_some();
        let pods = instance_pods(env, &ns).await;
        (sts["spec"]["replicas"] == 2 && !acknowledged && pods.len() == 2)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "replicas {}, acknowledged {acknowledged}, pods {pods:?}",
                    sts["spec"]["replicas"]
                )
            })
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The API-key Secret is lost: new keys, the token is signed again (its Event repeats).
    env.delete("v1", "Secret", &ns, &format!("{NAME}-api-key"))
        .await
        .expect("API-key Secret deleted");
    eventually("the token is signed with the new key", || async {
        let now = issued_token(env, &ns).await?;
        (now != first_token)
            .then_some(())
            .ok_or_else(|| "the token was not re-signed".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // Rotations, each run to its end on the real StatefulSet controller's rollouts (kwok makes
    // the rolled pods ready): a new API key (introduced beside the old one, the pods roll until
    // each runs with both; after the grace period, the shortest the CRD allows, swapped, then
    // promoted, then the old key removed) and a new CA key (trusted beside the old one, then
    // signing, then the old one dropped: Stable again).
    env.merge_patch(
        SQ_API,
        "SecureQdrant",
        &ns,
        NAME,
        json!({"spec": {"auth": {"keyRotationGracePeriod": "1m"}}}),
    )
    .await
    .expect("grace period shortened");
    env.merge_patch(
        SQ_API,
        "SecureQdrant",
        &ns,
        NAME,
        json!({"metadata": {"annotations": {"secureqdrant.dev/rotate-api-key": "1"}}}),
    )
    .await
    .expect("API-key rotation asked for");
    eventually(
        "the new API key is rolled out beside the old one",
        || async {
            let secret = env
                .get("v1", "Secret", &ns, &format!("{NAME}-api-key"))
                .await
                .ok_or("no API-key Secret")?;
            let a = &secret["metadata"]["annotations"];
            (a["secureqdrant.dev/api-key-rotation-phase"] == "Introduced"
                && a["secureqdrant.dev/api-key-rotation-rolled-out-at"].is_string())
            .then_some(())
            .ok_or_else(|| format!("API-key Secret annotations: {a}"))
        },
    )
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    for (phases, what) in [
        (
            &["Swapped", "Promoted"][..],
            "swapped after the grace period",
        ),
        (&["Promoted"][..], "promoted"),
    ] {
        eventually(&format!("the API-key rotation is {what}"), || async {
            let secret = env
                .get("v1", "Secret", &ns, &format!("{NAME}-api-key"))
                .await
                .ok_or("no API-key Secret")?;
            let a = &secret["metadata"]["annotations"];
            let phase = a["secureqdrant.dev/api-key-rotation-phase"].as_str();
            // A later phase (or the end) shows this one is passed: the operator only advances.
            (phase.is_some_and(|p| phases.contains(&p)) || api_key_rotation_done(&secret))
                .then_some(())
                .ok_or_else(|| format!("API-key Secret annotations: {a}"))
        })
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    }
    eventually("the API-key rotation ends", || async {
        let secret = env
            .get("v1", "Secret", &ns, &format!("{NAME}-api-key"))
            .await
            .ok_or("no API-key Secret")?;
        api_key_rotation_done(&secret).then_some(()).ok_or_else(|| {
            format!(
                "API-key Secret annotations: {}",
                secret["metadata"]["annotations"]
            )
        })
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    env.merge_patch(
        SQ_API,
        "SecureQdrant",
        &ns,
        NAME,
        json!({"metadata": {"annotations": {"secureqdrant.dev/rotate-ca": "1"}}}),
    )
    .await
    .expect("CA rotation asked for");
    eventually("the new CA key is trusted beside the old one", || async {
        let tls = env
            .get("v1", "Secret", &ns, &format!("{NAME}-tls"))
            .await
            .ok_or("no TLS Secret")?;
        let phase = &tls["metadata"]["annotations"]["secureqdrant.dev/ca-rollover-phase"];
        (phase == "TrustBoth" || phase == "SignWithNew" || phase == "DropOld")
            .then_some(())
            .ok_or_else(|| format!("CA rollover phase {phase}"))
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    // SignWithNew waits until the token's client certificate is re-issued from the new CA and
    // applications had the operator's fixed pickup time (src/reconcile/tls.rs CLIENT_PICKUP, 5
    // minutes) to load it: this step gets that on top of the usual wait.
    control_plane::eventually(WAIT + Duration::from_secs(300), || async {
        let tls = env
            .get("v1", "Secret", &ns, &format!("{NAME}-tls"))
            .await
            .ok_or("no TLS Secret")?;
        let ca = env
            .get("v1", "Secret", &ns, &format!("{NAME}-ca"))
            .await
            .ok_or("no CA Secret")?;
        let phase = &tls["metadata"]["annotations"]["secureqdrant.dev/ca-rollover-phase"];
        let handled = &ca["metadata"]["annotations"]["secureqdrant.dev/ca-rotation-handled"];
        (phase == "Stable" && handled == "1")
            .then_some(())
            .ok_or_else(|| format!("CA rollover phase {phase}, handled {handled}"))
    })
    .await
    .unwrap_or_else(|e| operator.fail(&format!("the CA rotation ends (Stable): {e}")));

    // The leader renews its Lease.
    eventually("the Lease is renewed", || async {
        let c = release.requests_since(cp, &w.admin, &start).await;
        (c.get("update", "leases.coordination.k8s.io") > 0)
            .then_some(())
            .ok_or_else(|| "no renewal yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // The instance is deleted: the token is invalid, its Secret is removed.
    env.delete(SQ_API, "SecureQdrant", &ns, NAME)
        .await
        .expect("instance deleted");
    eventually("the token Secret is removed", || async {
        match env.get("v1", "Secret", &ns, "frontend-qdrant-token").await {
            None => Ok(()),
            Some(_) => Err("the token Secret is still there".to_owned()),
        }
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    // SIGTERM, as Kubernetes stops a pod: the leader releases its Lease and exits.
    let released_before = release
        .requests_since(cp, &w.admin, &start)
        .await
        .get("update", "leases.coordination.k8s.io");
    operator.terminate();
    eventually("the Lease is released", || async {
        let lease = env
            .get("coordination.k8s.io/v1", "Lease", &release.namespace, LEASE)
            .await
            .ok_or("no Lease")?;
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
        holder
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("still held by {holder}"))
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    let counters = release.requests_since(cp, &w.admin, &start).await;
    assert!(counters.get("update", "leases.coordination.k8s.io") > released_before);

    // The audit log holds the operator's requests, made as the chart's ServiceAccount.
    let requests = &counters.log;
    assert!(
        requests
            .iter()
            .any(|r| r.namespace.is_empty() && r.verb == "watch")
            && requests
                .iter()
                .any(|r| r.namespace == release.namespace && r.resource.starts_with("leases")),
        "the audit log misses the operator's requests: {requests:#?}"
    );
    assert_no_403_and_never_admin(cp, &release, &counters);

    let called = called(&counters);
    let mut granted = rbac::expand(RBAC);
    granted.extend(rbac::expand(LEADER_ELECTION));
    let missing: Vec<_> = called.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&called).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "the RBAC tables (src/rbac.rs) do not match the operator's calls:\n\
         called without a rule (forbidden by the chart): {missing:?}\n\
         granted but never called: {unused:?}\n\
         counters: {:?}",
        counters.requests
    );
    cp.delete_namespace(&w.admin, &ns).await;
    cp.delete_namespace(&w.admin, &release.namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_namespaces_every_request_stays_where_the_roles_allow() {
    let _scope = OPERATOR_SCOPE.read().await;
    let w = World::new("search").await;
    let (cp, env) = (w.cp, &w.env);
    let ns = env.ns.clone();
    let other = cp.namespace(&w.admin, "other").await;
    let elsewhere = cp.namespace(&w.admin, "elsewhere").await;
    let watched = [ns.clone(), other.clone()];
    let values = json!({"replicas": 2, "watchNamespaces": watched});
    let release = Release::install(cp, &w.admin, &values).await;
    release.install_admission_policy(cp, &w.admin, &ns).await;
    let start = audit_sync(cp, &w.admin).await;
    // One instance in a watched namespace, one elsewhere (which must stay untouched).
    w.prepare_full(&ns).await;
    env.insert(example("full.yaml", &ns))
        .await
        .expect("instance inserted");
    env.insert(example("minimal.yaml", &elsewhere))
        .await
        .expect("instance inserted");

    let mut operator = Operator::spawn(cp, &release);
    eventually("the instance converges", || converged(env, &ns))
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    env.insert(json!({
        "apiVersion": SQ_API, "kind": "QdrantAccessToken",
        "metadata": {"name": "frontend", "namespace": ns},
        "spec": {"qdrantRef": {"name": NAME}, "access": {"global": "r"}, "lifetime": "1h"},
    }))
    .await
    .expect("token inserted");
    eventually("the token is issued", || issued_token(env, &ns))
        .await
        .unwrap_or_else(|e| operator.fail(&e));
    eventually("the Lease is renewed", || async {
        let c = release.requests_since(cp, &w.admin, &start).await;
        (c.get("update", "leases.coordination.k8s.io") > 0)
            .then_some(())
            .ok_or_else(|| "no renewal yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));

    let unwatched = env
        .get(SQ_API, "SecureQdrant", &elsewhere, NAME)
        .await
        .expect("still there");
    assert!(
        unwatched.get("status").is_none_or(Value::is_null),
        "an instance outside the watched namespaces was reconciled: {}",
        unwatched["status"]
    );
    assert!(env.list("v1", "Secret", &elsewhere).await.is_empty());

    let counters = release.requests_since(cp, &w.admin, &start).await;
    // The real authorizer refused nothing, and no request left the watched namespaces (and the
    // release's own, for the Lease): no cluster-wide call at all.
    assert_no_403_and_never_admin(cp, &release, &counters);
    let outside: Vec<&Request> = counters
        .log
        .iter()
        .filter(|r| {
            let lease =
                r.namespace == release.namespace && r.resource == "leases.coordination.k8s.io";
            !(watched.contains(&r.namespace) || lease)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside what the chart's Roles allow (a cluster-wide call, or one outside \
         the watched namespaces): {outside:#?}"
    );
    // The audit log saw the operator's work: watches in each watched namespace.
    for ns in &watched {
        assert!(
            counters
                .log
                .iter()
                .any(|r| &r.namespace == ns && r.verb == "watch"),
            "no watch in {ns}: {:#?}",
            counters.log
        );
    }
    drop(operator);
    remove_instances(env, &[&ns, &elsewhere]).await;
    for n in [&ns, &other, &elsewhere, &release.namespace] {
        cp.delete_namespace(&w.admin, n).await;
    }
}

/// The check has teeth: the chart with one rule taken out (`create` of StatefulSets, from the
/// Role the operator gets for its watched namespace: a server-side apply that creates the
/// StatefulSet needs it) makes the operator's requests refused with 403 in the audit log, the
/// instance reports Reconciled=False and never converges, and the check of the scenarios fails
/// on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_taken_out_of_the_chart_makes_the_check_fail() {
    let _scope = OPERATOR_SCOPE.read().await;
    let w = World::new("cut").await;
    let (cp, env) = (w.cp, &w.env);
    let ns = env.ns.clone();
    let values = json!({"replicas": 2, "watchNamespaces": [ns]});
    let mut cut = 0;
    let release = Release::install_edited(cp, &w.admin, &values, |docs| {
        for doc in docs.iter_mut().filter(|d| d["kind"] == "Role") {
            for rule in doc["rules"].as_array_mut().into_iter().flatten() {
                if rule["resources"] == json!(["statefulsets"]) {
                    let verbs = rule["verbs"].as_array_mut().expect("verbs");
                    let before = verbs.len();
                    verbs.retain(|v| v != "create");
                    cut += before - verbs.len();
                }
            }
        }
    })
    .await;
    assert_eq!(
        cut, 1,
        "the chart's Role for {ns} grants create on statefulsets once"
    );
    let start = audit_sync(cp, &w.admin).await;
    env.insert(example("minimal.yaml", &ns))
        .await
        .expect("instance inserted");
    let mut operator = Operator::spawn(cp, &release);
    let refused = eventually("the API server refuses the operator", || async {
        let counters = release.requests_since(cp, &w.admin, &start).await;
        let refused: Vec<Request> = counters.forbidden().into_iter().cloned().collect();
        (!refused.is_empty())
            .then_some(refused)
            .ok_or_else(|| "no 403 yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    assert!(
        refused
            .iter()
            .all(|r| r.resource == "statefulsets.apps" && r.verb == "patch" && r.namespace == ns),
        "refused: {refused:#?}"
    );
    // The instance reports that failure: its StatefulSet could not be applied, refused (not
    // some other failure on the way).
    let reconciled = eventually("the instance reports the refused StatefulSet", || async {
        let sq = env
            .get(SQ_API, "SecureQdrant", &ns, NAME)
            .await
            .ok_or("no SecureQdrant")?;
        sq["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                let message = c["message"].as_str().unwrap_or_default();
                c["type"] == "Reconciled"
                    && c["status"] == "False"
                    && c["reason"] == "ApplyFailed"
                    && message.contains(&format!("applying StatefulSet {NAME}"))
                    && message.contains("forbidden")
            })
            .cloned()
            .ok_or_else(|| format!("status: {}", sq["status"]))
    })
    .await
    .unwrap_or_else(|e| operator.fail(&e));
    // It never converges: there is no StatefulSet (its create is refused every time; the
    // audit log's 403s above are the retries), so no pod runs.
    assert!(
        env.get("apps/v1", "StatefulSet", &ns, NAME).await.is_none(),
        "a StatefulSet exists without the rule to create it: {reconciled}"
    );
    // The check of the scenarios fails on it, naming the refused requests.
    let counters = release.requests_since(cp, &w.admin, &start).await;
    let message = audit_check(cp, &release, &counters)
        .expect_err("the check passes without the StatefulSet rule");
    assert!(
        message.contains("403 for") && message.contains("statefulsets.apps"),
        "{message}"
    );
    eprintln!("the check, without the StatefulSet rule:\n{message}\nReconciled: {reconciled}");
    drop(operator);
    remove_instances(env, &[&ns]).await;
    cp.delete_namespace(&w.admin, &ns).await;
    cp.delete_namespace(&w.admin, &release.namespace).await;
}

#[test]
fn the_agent_check_fails_on_an_admin_request_and_when_the_operator_sent_no_agent() {
    let agent = secure_qdrant_operator::cli::USER_AGENT;
    let sa = "system:serviceaccount:sqo-3-42:sqo-sqo-3-42-secure-qdrant-operator";
    let other = "system:serviceaccount:sqo-4-42:sqo-sqo-4-42-secure-qdrant-operator";
    let event = |user: &str, agent: Option<&str>| {
        let mut e = json!({"user": {"username": user}, "verb": "list"});
        if let Some(a) = agent {
            e["userAgent"] = json!(a);
        }
        e
    };
    let clean = vec![
        event(sa, Some(agent)),
        event(other, Some(agent)),
        event("system:admin", Some(control_plane::TEST_USER_AGENT)),
        event(
            "system:kube-controller-manager",
            Some("kube-controller-manager/v1.34"),
        ),
    ];
    assert_eq!(agent_check(&clean, sa), Ok(()));
    // The operator sent no User-Agent (the audit log omits an empty one): nothing to check.
    let silent = vec![event(sa, None), event("system:admin", None)];
    assert!(agent_check(&silent, sa).is_err());
    // A request with the operator's agent made as admin, or as another ServiceAccount.
    for stranger in ["system:admin", "system:serviceaccount:search-1:default"] {
        let mut events = clean.clone();
        events.push(event(stranger, Some(agent)));
        let err = agent_check(&events, sa).expect_err(stranger);
        assert!(err.contains(stranger), "{err}");
    }
}

#[test]
fn counter_names_map_to_rbac_resources() {
    // The mapping the scenario relies on, on the audit log's resource names: an apply that
    // created its object (201) needs `create` too; one that changed an existing one does not.
    let request = |verb: &str, resource: &str, code: u16| Request {
        verb: verb.to_owned(),
        resource: resource.to_owned(),
        namespace: "search".to_owned(),
        name: "vectors".to_owned(),
        user: "system:serviceaccount:ops:sqo".to_owned(),
        code,
    };
    let counters = count(vec![
        request("list", "secrets", 200),
        request("patch", "statefulsets.apps", 201),
        request("patch", "statefulsets.apps", 200),
        request("patch", "configmaps", 200),
        request("patch", "secureqdrants.secureqdrant.dev/status", 200),
        request("update", "leases.coordination.k8s.io", 200),
    ]);
    let want: Triples = [
        ("", "secrets", "list"),
        ("apps", "statefulsets", "patch"),
        ("apps", "statefulsets", "create"),
        ("", "configmaps", "patch"),
        ("secureqdrant.dev", "secureqdrants/status", "patch"),
        ("coordination.k8s.io", "leases", "update"),
    ]
    .iter()
    .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(called(&counters), want);
}

/// The audit log's attributes of the operator's kinds of request, and the real authorizer's
/// decisions on the chart's Roles: a Role allows only its namespace, a ClusterRole everywhere;
/// the leader-election Role only the release's namespace, and only with leader election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_map_to_authorizer_attributes() {
    let cp = control_plane::get();
    let admin = cp.admin().await;
    crds_installed(cp, &admin).await;
    let search = cp.namespace(&admin, "search").await;
    let other = cp.namespace(&admin, "other").await;
    let namespaced = Release::install(
        cp,
        &admin,
        &json!({"watchNamespaces": [search], "replicas": 2}),
    )
    .await;
    let cluster = Release::install(cp, &admin, &json!({})).await;
    let client = namespaced.client(cp).await;

    // Request lines as the operator sends them, and what the audit log says of each.
    let lines: [(&str, String, Option<Attributes>); 9] = [
        (
            "GET",
            "/api/v1/secrets?labelSelector=a%3Db&watch=true&resourceVersion=5".to_owned(),
            Some(("", "secrets", "watch")),
        ),
        (
            "GET",
            format!("/api/v1/namespaces/{search}/secrets?labelSelector=x"),
            Some((search.as_str(), "secrets", "list")),
        ),
        (
            "GET",
            format!("/api/v1/namespaces/{search}/secrets/vectors-ca"),
            Some((search.as_str(), "secrets", "get")),
        ),
        (
            "PATCH",
            format!(
                "/apis/secureqdrant.dev/v1alpha1/namespaces/{search}/secureqdrants/vectors/status?fieldManager=x&force=true"
            ),
            Some((
                search.as_str(),
                "secureqdrants.secureqdrant.dev/status",
                "patch",
            )),
        ),
        (
            "PUT",
            format!(
                "/apis/coordination.k8s.io/v1/namespaces/{}/leases/l",
                namespaced.namespace
            ),
            Some((
                namespaced.namespace.as_str(),
                "leases.coordination.k8s.io",
                "update",
            )),
        ),
        (
            "DELETE",
            format!("/apis/policy/v1/namespaces/{search}/poddisruptionbudgets/p"),
            Some((search.as_str(), "poddisruptionbudgets.policy", "delete")),
        ),
        (
            "POST",
            format!("/apis/events.k8s.io/v1/namespaces/{search}/events"),
            Some((search.as_str(), "events.events.k8s.io", "create")),
        ),
        ("GET", "/apis/apps/v1".to_owned(), None),
        ("GET", "/version".to_owned(), None),
    ];
    for (method, uri, _) in &lines {
        send(&client, method, uri).await;
    }
    audit_sync(cp, &admin).await;
    let events = audit_events_of(cp, &namespaced.user);
    for (method, uri, want) in &lines {
        let event = events
            .iter()
            .rev()
            .find(|e| e["requestURI"] == uri.as_str())
            .unwrap_or_else(|| panic!("{method} {uri} not in the audit log"));
        let got = real_server::request_of(event)
            .map(|(_, r)| (r.namespace.clone(), r.resource.clone(), r.verb.clone()));
        let want = want.map(|(ns, r, v)| (ns.to_owned(), r.to_owned(), v.to_owned()));
        assert_eq!(got, want, "{method} {uri}");
    }

    // The authorizer: what the chart's RBAC allows, asked as each release's ServiceAccount.
    let list_in = |ns: &str| {
        if ns.is_empty() {
            "/api/v1/secrets".to_owned()
        } else {
            format!("/api/v1/namespaces/{ns}/secrets")
        }
    };
    let lease_in = |ns: &str| format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/l");
    let asked = |release: &Release| {
        vec![
            ("GET", list_in(&search)),
            ("GET", list_in(&other)),
            ("GET", list_in("")),
            ("PUT", lease_in(&release.namespace)),
            ("PUT", lease_in(&search)),
        ]
    };
    let refused = forbidden(cp, &admin, &namespaced, &asked(&namespaced)).await;
    assert_eq!(
        refused,
        [list_in(&other), list_in(""), lease_in(&search)],
        "watchNamespaces: [search], leader election on"
    );
    let refused = forbidden(cp, &admin, &cluster, &asked(&cluster)).await;
    assert_eq!(
        refused,
        [lease_in(&cluster.namespace), lease_in(&search)],
        "cluster-wide, one replica (no leader election)"
    );
    for n in [&search, &other, &namespaced.namespace, &cluster.namespace] {
        cp.delete_namespace(&admin, n).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Deletes the SecureQdrants and QdrantAccessTokens of `namespaces` and waits until they are
/// gone. A namespaced test does this before it gives up its read side of [`OPERATOR_SCOPE`]:
/// the cluster-wide operator that may run next would otherwise reconcile them in a namespace
/// being deleted (and be refused there: 403 "being terminated").
async fn remove_instances(env: &real_server::Env, namespaces: &[&str]) {
    for ns in namespaces {
        for kind in ["SecureQdrant", "QdrantAccessToken"] {
            for o in env.list(SQ_API, kind, ns).await {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                env.delete(SQ_API, kind, ns, name)
                    .await
                    .unwrap_or_else(|e| panic!("delete {kind} {ns}/{name}: {e}"));
            }
        }
        eventually("the instances are gone", || async {
            let left = env.list(SQ_API, "SecureQdrant", ns).await.len()
                + env.list(SQ_API, "QdrantAccessToken", ns).await.len();
            (left == 0)
                .then_some(())
                .ok_or_else(|| format!("{left} left in {ns}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Deletes every SecureQdrant and QdrantAccessToken of the control plane (other tests' leftovers:
/// the caller holds [`OPERATOR_SCOPE`] for writing, so no other test of this binary runs) and
/// waits until they are gone.
async fn remove_leftover_instances(env: &real_server::Env) {
    let mut namespaces = BTreeSet::new();
    for kind in ["SecureQdrant", "QdrantAccessToken"] {
        let ar =
            ApiResource::from_gvk(&GroupVersionKind::gvk("secureqdrant.dev", "v1alpha1", kind));
        let all = Api::<DynamicObject>::all_with(env.admin.clone(), &ar)
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("list {kind}: {e}"));
        for o in all.items {
            namespaces.insert(o.metadata.namespace.unwrap_or_default());
        }
    }
    let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    remove_instances(env, &namespaces).await;
}

/// Waits until no namespace is terminating (as tests/real_api.rs does).
async fn no_namespace_terminating(admin: &Client) {
    let api = Api::<Namespace>::all(admin.clone());
    eventually("no namespace is terminating", || async {
        let terminating: Vec<String> = api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating"))
            .filter_map(|n| n.metadata.name)
            .collect();
        terminating
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("namespaces still terminating: {terminating:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Sends one request (`method uri`, a `{}` body for writes) as `client`; the answer is not
/// looked at (the audit log says what the API server made of it).
async fn send(client: &Client, method: &str, uri: &str) {
    let body = if method == "GET" || method == "DELETE" {
        Vec::new()
    } else {
        b"{}".to_vec()
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    if method == "PATCH" {
        req = req.header("Content-Type", "application/apply-patch+yaml");
    } else if !body.is_empty() {
        req = req.header("Content-Type", "application/json");
    }
    let _ = client.request_text(req.body(body).unwrap()).await;
}

/// The URIs of `asked` that the API server answered 403 for `release`'s ServiceAccount (each
/// request sent now, its answer read from the audit log), in the order asked.
async fn forbidden(
    cp: &ControlPlane,
    admin: &Client,
    release: &Release,
    asked: &[(&str, String)],
) -> Vec<String> {
    let client = release.client(cp).await;
    for (method, uri) in asked {
        send(&client, method, uri).await;
    }
    audit_sync(cp, admin).await;
    let events = audit_events_of(cp, &release.user);
    asked
        .iter()
        .map(|(method, uri)| {
            let event = events
                .iter()
                .rev()
                .find(|e| e["requestURI"] == uri.as_str())
                .unwrap_or_else(|| panic!("{method} {uri} not in the audit log"));
            (uri, event["responseStatus"]["code"].as_u64())
        })
        .filter(|(_, code)| *code == Some(403))
        .map(|(uri, _)| uri.clone())
        .collect()
}

/// The audit events of `user` so far (each test's ServiceAccounts are its own; the marks
/// around a test's requests make sure the log holds them).
fn audit_events_of(cp: &ControlPlane, user: &str) -> Vec<Value> {
    cp.audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .collect()
}

/// The audit log of the run: no request of `release`'s ServiceAccount in `counters` (the
/// operator's, since it started) was refused (by the chart's RBAC or its admission policy), and
/// no request with the operator's User-Agent was made by anyone but a chart ServiceAccount
/// (never admin).
fn assert_no_403_and_never_admin(cp: &ControlPlane, release: &Release, counters: &Counters) {
    if let Err(e) = audit_check(cp, release, counters) {
        panic!("{e}");
    }
}

/// What `assert_no_403_and_never_admin` checks: Err with what is wrong.
fn audit_check(cp: &ControlPlane, release: &Release, counters: &Counters) -> Result<(), String> {
    if counters.writes() == 0 {
        return Err(format!(
            "the audit log shows no write by {}: the operator did not run as the ServiceAccount",
            release.user
        ));
    }
    let refused: Vec<String> = counters
        .forbidden()
        .iter()
        .map(|r| {
            format!(
                "{} {} in {:?} ({})",
                r.verb, r.resource, r.namespace, r.name
            )
        })
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "403 for {} (the chart's RBAC or admission policy refuses these):\n{}",
            release.user,
            refused.join("\n")
        ));
    }
    agent_check(&cp.audit_events(), &release.user)
}

/// The operator's User-Agent in the audit log: `user` (the release's ServiceAccount, as which
/// the operator runs) made requests with it, and nobody made a request with it but a chart
/// ServiceAccount (every release of this binary lives in a namespace `sqo-*`; operators of
/// other tests run beside this one with the same agent) — never admin.
fn agent_check(events: &[Value], user: &str) -> Result<(), String> {
    let agent = secure_qdrant_operator::cli::USER_AGENT;
    let with_agent: Vec<&Value> = events.iter().filter(|e| e["userAgent"] == agent).collect();
    if !with_agent.iter().any(|e| e["user"]["username"] == user) {
        return Err(format!(
            "no request of {user} with the operator's User-Agent {agent:?} in the audit log \
             (the check below would be vacuous)"
        ));
    }
    let strangers: BTreeSet<String> = with_agent
        .iter()
        .filter_map(|e| e["user"]["username"].as_str())
        .filter(|u| !is_chart_service_account(u))
        .map(str::to_owned)
        .collect();
    if !strangers.is_empty() {
        return Err(format!(
            "requests with the operator's User-Agent ({agent:?}) made as {strangers:?}"
        ));
    }
    Ok(())
}

/// `system:serviceaccount:sqo-*:sqo-*`: a chart ServiceAccount of a release of this binary
/// (namespace `sqo-...`, release `sqo-<namespace>`, so its ServiceAccount `sqo-<namespace>-...`).
fn is_chart_service_account(user: &str) -> bool {
    user.strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(ns, sa)| ns.starts_with("sqo-") && sa.starts_with(&format!("sqo-{ns}")))
}

/// (group, resource, verb) of every request counted, plus `create` for the kinds whose apply
/// created the object (answered 201 Created).
fn called(counters: &Counters) -> Triples {
    let mut out = Triples::new();
    for r in &counters.log {
        let (counted, sub) = match r.resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (r.resource.as_str(), None),
        };
        let (plural, group) = counted.split_once('.').unwrap_or((counted, ""));
        let resource = match sub {
            Some(s) => format!("{plural}/{s}"),
            None => plural.to_owned(),
        };
        if r.verb == "patch" && sub.is_none() && r.code == 201 {
            out.insert((group.to_owned(), resource.clone(), "create".to_owned()));
        }
        out.insert((group.to_owned(), resource, r.verb.clone()));
    }
    out
}

fn labels() -> Value {
    json!({
        LABEL_NAME: "qdrant",
        LABEL_INSTANCE: NAME,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_COMPONENT: "credentials",
    })
}

/// A SecureQdrant of deploy/examples, moved to `ns`.
fn example(file: &str, ns: &str) -> Value {
    let text = control_plane::repo_file(format!("deploy/examples/{file}"));
    let mut v: Value = serde_yaml_ng::from_str(&text).expect("example parses");
    v["metadata"]["namespace"] = json!(ns);
    v
}

/// The instance's status says the current generation is reconciled.
async fn converged(env: &real_server::Env, ns: &str) -> Result<(), String> {
    let sq = env
        .get(SQ_API, "SecureQdrant", ns, NAME)
        .await
        .ok_or("no SecureQdrant")?;
    let generation = &sq["metadata"]["generation"];
    let reconciled = sq["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Reconciled")
        .ok_or("no Reconciled condition")?;
    if reconciled["status"] == "True" && &reconciled["observedGeneration"] == generation {
        Ok(())
    } else {
        Err(format!("not reconciled: {reconciled}"))
    }
}

/// The API-key rotation asked for with `1` has ended: handled, no phase, no next key.
fn api_key_rotation_done(secret: &Value) -> bool {
    let a = &secret["metadata"]["annotations"];
    a["secureqdrant.dev/api-key-rotation-handled"] == "1"
        && a.get("secureqdrant.dev/api-key-rotation-phase").is_none()
        && secret["data"].get("next-api-key").is_none()
}

/// The names of the instance's pods (the StatefulSet controller's), terminating ones included.
async fn instance_pods(env: &real_server::Env, ns: &str) -> Vec<String> {
    env.list("v1", "Pod", ns)
        .await
        .into_iter()
        .filter(|p| p["metadata"]["labels"][LABEL_INSTANCE] == NAME)
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// The token in the token Secret, once the QdrantAccessToken is Ready.
async fn issued_token(env: &real_server::Env, ns: &str) -> Result<String, String> {
    let qat = env
        .get(SQ_API, "QdrantAccessToken", ns, "frontend")
        .await
        .ok_or("no QdrantAccessToken")?;
    let ready = qat["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Err(format!("token not ready: {}", qat["status"]));
    }
    let secret = env
        .get("v1", "Secret", ns, "frontend-qdrant-token")
        .await
        .ok_or("no token Secret")?;
    secret["data"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no token in the Secret".to_owned())
}

/// GET on the operator's HTTP address: Ok when 200.
fn http_get(addr: &str, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_owned();
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        Err(format!("GET {path}: {status:?}: {}", body.trim()))
    }
}

/// Polls `check` every 200 ms until Ok, or returns its last error after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    control_plane::eventually(WAIT, check)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// The operator process, started as the chart's Deployment starts it.
struct Operator {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts the operator as `release`'s Deployment would, authenticated with its
    /// ServiceAccount's token, the HTTP server on a port of loopback the kernel picks
    /// ([`Operator::listening_addr`]).
    fn spawn(cp: &ControlPlane, release: &Release) -> Operator {
        let deployment = release
            .docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the chart renders a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        // The chart's args, but the HTTP server on loopback, on a port the kernel picks (no
        // free port taken beforehand that another process could take meanwhile).
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .map(|a| {
                if a.starts_with("--http-addr=") {
                    "--http-addr=127.0.0.1:0".to_owned()
                } else {
                    a
                }
            })
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, release.kubeconfig(cp)).expect("kubeconfig written");
        let log = dir.path().join("operator.log");
        let file = File::create(&log).expect("log file");
        let mut cmd = Command::new(OPERATOR);
        cmd.args(&args).env_clear().env("KUBECONFIG", &kubeconfig);
        for env in container["env"].as_array().expect("env") {
            let name = env["name"].as_str().expect("env name");
            let value = match env["value"].as_str() {
                Some(v) => v.to_owned(),
                None if env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" => {
                    POD_NAME.to_owned()
                }
                None => panic!("env {name}: a source this test does not know: {env}"),
            };
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null())
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
        let child = cmd.spawn().expect("the operator starts");
        Operator {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the endpoints, from /proc: the process's one listening socket.
    async fn listening_addr(&mut self) -> String {
        let pid = self.child.id();
        match eventually("the endpoints' listening socket", || async {
            listening_on_loopback(pid)
        })
        .await
        {
            Ok(addr) => addr,
            Err(e) => self.fail(&e),
        }
    }

    /// Panics with `error` and the end of the operator's log.
    fn fail(&mut self, error: &str) -> ! {
        let exited = self.child.try_wait().ok().flatten();
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "{error}\noperator exited: {exited:?}\noperator log (end):\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
    }

    /// SIGTERM, as the kubelet sends it.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM not delivered");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
