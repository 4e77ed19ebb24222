//! The chart's ValidatingAdmissionPolicy (`templates/admissionpolicy.yaml`): what the operator's
//! own ServiceAccount may write. The policy is rendered by the Helm SDK (like tests/helm.rs), and
//! each of its CEL expressions is evaluated here against admission requests, with the `cel`
//! crate and the Kubernetes CEL functions (kube's `cel` feature), the way the API server does:
//! matchConstraints (resource rules and their exclusions), matchConditions, then `variables`
//! (lazily: one that fails only fails the validations that use it) and every validation.
//!
//! What this cannot show: the API server's type checking and cost estimation of the
//! expressions; that is checked on a real control plane.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use kube::core::cel::KubeCelExt;
use kube::core::cel::cel::objects::{Key, Map};
use kube::core::cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

const NS: &str = "qdrant-system";
const RELEASE: &str = "sqo";
const OPERATOR: &str = "system:serviceaccount:qdrant-system:sqo-secure-qdrant-operator";

// ---------------------------------------------------------------------------------------------
// The evaluator
// ---------------------------------------------------------------------------------------------

/// JSON as the API server hands objects to CEL: numbers are ints, map keys as they are (labels
/// and annotations keep their `/` and `.`).
fn cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Cel::Int)
            .unwrap_or_else(|| Cel::Float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(cel).collect())),
        Value::Object(o) => Cel::Map(Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), cel(v)))
                    .collect::<HashMap<_, _>>(),
            ),
        }),
    }
}

/// An admission request of the operator (or of `user`).
#[derive(Clone)]
struct Request {
    operation: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    sub_resource: Option<&'static str>,
    namespace: Option<String>,
    name: Option<String>,
    user: String,
    object: Value,
    old_object: Value,
}

impl Request {
    fn new(operation: &'static str, gvr: (&'static str, &'static str, &'static str)) -> Self {
        Request {
            operation,
            group: gvr.0,
            version: gvr.1,
            resource: gvr.2,
            sub_resource: None,
            namespace: None,
            name: None,
            user: OPERATOR.to_owned(),
            object: Value::Null,
            old_object: Value::Null,
        }
    }

    /// A CREATE of `object` (its kind's resource from `gvr`).
    fn create(gvr: (&'static str, &'static str, &'static str), object: Value) -> Self {
        Request::new("CREATE", gvr)
            .about(&object)
            .with_object(object)
    }

    /// An UPDATE from `old` to `object`.
    fn update(gvr: (&'static str, &'static str, &'static str), old: Value, object: Value) -> Self {
        let mut r = Request::new("UPDATE", gvr)
            .about(&object)
            .with_object(object);
        r.old_object = old;
        r
    }

    /// A DELETE of the stored `old`.
    fn delete(gvr: (&'static str, &'static str, &'static str), old: Value) -> Self {
        let mut r = Request::new("DELETE", gvr).about(&old);
        r.old_object = old;
        r
    }

    fn about(mut self, object: &Value) -> Self {
        self.namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
        self.name = object["metadata"]["name"].as_str().map(str::to_owned);
        self
    }

    fn with_object(mut self, object: Value) -> Self {
        self.object = object;
        self
    }

    fn by(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    fn sub(mut self, sub_resource: &'static str) -> Self {
        self.sub_resource = Some(sub_resource);
        self
    }

    /// The `request` variable (fields the API server omits when empty are absent).
    fn variable(&self) -> Value {
        let mut r = json!({
            "operation": self.operation,
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "userInfo": {"username": self.user, "groups": ["system:serviceaccounts"]},
            "dryRun": false,
        });
        if let Some(s) = self.sub_resource {
            r["subResource"] = json!(s);
        }
        if let Some(ns) = &self.namespace {
            r["namespace"] = json!(ns);
        }
        if let Some(n) = &self.name {
            r["name"] = json!(n);
        }
        r
    }
}

/// What the policy decides about a request.
#[derive(Debug, PartialEq)]
enum Decision {
    /// The policy does not apply (another user, a resource it does not match).
    NotMatched,
    Allowed,
    /// The messages of the failed validations.
    Denied(Vec<String>),
}

impl Decision {
    fn denied_because(&self, needle: &str) -> bool {
        matches!(self, Decision::Denied(m) if m.iter().any(|m| m.contains(needle)))
    }
}

struct Policy {
    spec: Value,
}

fn rule_matches(rule: &Value, r: &Request) -> bool {
    let has = |field: &str, value: &str| {
        rule[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "*" || v == value))
    };
    let resource = match r.sub_resource {
        Some(s) => format!("{}/{s}", r.resource),
        None => r.resource.to_owned(),
    };
    let resource_ok = rule["resources"].as_array().is_some_and(|a| {
        a.iter().any(|v| {
            let v = v.as_str().unwrap_or_default();
            v == resource
                || (v == "*" && r.sub_resource.is_none())
                // As the API server: "*/*" is every resource and every subresource.
                || v == "*/*"
                || (r.sub_resource.is_some()
                    && (v.strip_prefix("*/") == r.sub_resource
                        || v.strip_suffix("/*") == Some(r.resource)))
        })
    });
    has("apiGroups", r.group)
        && has("apiVersions", r.version)
        && has("operations", r.operation)
        && resource_ok
}

impl Policy {
    fn rendered(values: &Value) -> Self {
        let docs = common::yaml_docs(&common::render_chart(values, RELEASE, NS));
        let vap = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .expect("a ValidatingAdmissionPolicy")
            .clone();
        Policy {
            spec: vap["spec"].clone(),
        }
    }

    fn expressions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for section in ["matchConditions", "variables", "validations"] {
            for e in self.spec[section].as_array().into_iter().flatten() {
                out.push(e["expression"].as_str().unwrap().to_owned());
                if let Some(m) = e["messageExpression"].as_str() {
                    out.push(m.to_owned());
                }
            }
        }
        out
    }

    fn decide(&self, r: &Request) -> Decision {
        let constraints = &self.spec["matchConstraints"];
        let listed = |key: &str| {
            constraints[key]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| rule_matches(rule, r))
        };
        if !listed("resourceRules") || listed("excludeResourceRules") {
            return Decision::NotMatched;
        }
        let mut ctx = Context::default();
        ctx.register_all();
        ctx.add_variable_from_value("request", cel(&r.variable()));
        ctx.add_variable_from_value("object", cel(&r.object));
        ctx.add_variable_from_value("oldObject", cel(&r.old_object));
        let eval = |ctx: &Context, expr: &str| {
            Program::compile(expr)
                .unwrap_or_else(|e| panic!("{expr}: does not compile: {e}"))
                .execute(ctx)
        };
        for c in self.spec["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            match eval(&ctx, c["expression"].as_str().unwrap()) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Decision::NotMatched,
                other => panic!("matchCondition {c}: {other:?}"),
            }
        }
        // Variables are lazy in the API server: one that cannot be computed for this request
        // fails only the expressions that use it (here: they find no such key).
        let mut variables = HashMap::new();
        for v in self.spec["variables"].as_array().into_iter().flatten() {
            let mut vctx = Context::default();
            vctx.register_all();
            vctx.add_variable_from_value("request", cel(&r.variable()));
            vctx.add_variable_from_value("object", cel(&r.object));
            vctx.add_variable_from_value("oldObject", cel(&r.old_object));
            if let Ok(value) = eval(&vctx, v["expression"].as_str().unwrap()) {
                variables.insert(
                    Key::String(Arc::new(v["name"].as_str().unwrap().to_owned())),
                    value,
                );
            }
        }
        ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(variables),
            }),
        );
        let mut denied = Vec::new();
        for v in self.spec["validations"].as_array().into_iter().flatten() {
            let expr = v["expression"].as_str().unwrap();
            match eval(&ctx, expr) {
                Ok(Cel::Bool(true)) => {}
                // failurePolicy Fail: an error denies too.
                result => {
                    let message = v["messageExpression"]
                        .as_str()
                        .and_then(|m| match eval(&ctx, m) {
                            Ok(Cel::String(s)) => Some((*s).clone()),
                            _ => None,
                        })
                        .or_else(|| v["message"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let why = match result {
                        Ok(Cel::Bool(false)) => String::new(),
                        other => format!(" (evaluation: {other:?})"),
                    };
                    denied.push(format!("{message}{why}"));
                }
            }
        }
        if denied.is_empty() {
            Decision::Allowed
        } else {
            Decision::Denied(denied)
        }
    }
}

fn policy() -> Policy {
    Policy::rendered(&json!({}))
}

// ---------------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------------

const SECRETS: (&str, &str, &str) = ("", "v1", "secrets");
const CONFIGMAPS: (&str, &str, &str) = ("", "v1", "configmaps");
const SERVICES: (&str, &str, &str) = ("", "v1", "services");
const STATEFULSETS: (&str, &str, &str) = ("apps", "v1", "statefulsets");
const EVENTS: (&str, &str, &str) = ("events.k8s.io", "v1", "events");
const LEASES: (&str, &str, &str) = ("coordination.k8s.io", "v1", "leases");
const SECUREQDRANTS: (&str, &str, &str) = ("secureqdrant.dev", "v1alpha1", "secureqdrants");

fn gvr_of(object: &Value) -> (&'static str, &'static str, &'static str) {
    match object["kind"].as_str().unwrap() {
        "Secret" => SECRETS,
        "ConfigMap" => CONFIGMAPS,
        "Service" => SERVICES,
        "ServiceAccount" => ("", "v1", "serviceaccounts"),
        "StatefulSet" => STATEFULSETS,
        "NetworkPolicy" => ("networking.k8s.io", "v1", "networkpolicies"),
        "PodDisruptionBudget" => ("policy", "v1", "poddisruptionbudgets"),
        other => panic!("no resource for {other}"),
    }
}

/// Every object the operator writes for the examples (tests/golden: `render` of
/// deploy/examples, what the operator applies).
fn operator_objects() -> Vec<Value> {
    let mut out = Vec::new();
    for (name, _) in common::examples() {
        let path = common::root()
            .join("tests/golden")
            .join(format!("{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        out.extend(common::yaml_docs(&text));
    }
    assert!(out.len() > 20, "{} objects", out.len());
    out
}

fn statefulset() -> Value {
    operator_objects()
        .into_iter()
        .find(|o| o["kind"] == "StatefulSet")
        .expect("a StatefulSet")
}

fn container(sts: &mut Value) -> &mut Value {
    &mut sts["spec"]["template"]["spec"]["containers"][0]
}

fn foreign_config_map() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "vectors-config", "namespace": "search",
                     "labels": {"app": "someone-else"}},
        "data": {"x": "y"},
    })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_expression_compiles() {
    let p = policy();
    let exprs = p.expressions();
    assert!(exprs.len() > 10, "{exprs:?}");
    for e in exprs {
        Program::compile(&e).unwrap_or_else(|err| panic!("{e}: {err}"));
    }
}

#[test]
fn every_object_the_operator_writes_passes_created_updated_and_deleted() {
    let p = policy();
    for object in operator_objects() {
        let gvr = gvr_of(&object);
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        assert_eq!(
            p.decide(&Request::create(gvr, object.clone())),
            Decision::Allowed,
            "create {what}"
        );
        assert_eq!(
            p.decide(&Request::update(gvr, object.clone(), object.clone())),
            Decision::Allowed,
            "update {what}"
        );
        assert_eq!(
            p.decide(&Request::delete(gvr, object.clone())),
            Decision::Allowed,
            "delete {what}"
        );
    }
}

#[test]
fn a_token_secret_of_the_operator_passes() {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "frontend-qdrant-token", "namespace": "search", "labels": {
            "app.kubernetes.io/name": "qdrant", "app.kubernetes.io/instance": "vectors",
            "app.kubernetes.io/managed-by": "secure-qdrant-operator",
            "app.kubernetes.io/component": "access-token"}},
        "data": {"token": "eA=="},
    });
    let p = policy();
    assert_eq!(
        p.decide(&Request::create(SECRETS, secret.clone())),
        Decision::Allowed
    );
    assert_eq!(
        p.decide(&Request::delete(SECRETS, secret)),
        Decision::Allowed
    );
}

#[test]
fn a_privileged_statefulset_is_denied() {
    let p = policy();
    let mut sts = statefulset();
    container(&mut sts)["securityContext"]["privileged"] = json!(true);
    let d = p.decide(&Request::create(STATEFULSETS, sts.clone()));
    assert!(d.denied_because("privileged unset or false"), "{d:?}");
    // On update too.
    let d = p.decide(&Request::update(STATEFULSETS, statefulset(), sts));
    assert!(d.denied_because("privileged unset or false"), "{d:?}");
}

#[test]
fn each_weakened_pod_field_is_denied() {
    let p = policy();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 16] = [
        (
            "hostPath",
            |s| {
                s["spec"]["template"]["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "root", "hostPath": {"path": "/"}}))
            },
            "hostPath",
        ),
        (
            "hostNetwork",
            |s| s["spec"]["template"]["spec"]["hostNetwork"] = json!(true),
            "network, PID or IPC",
        ),
        (
            "hostPID",
            |s| s["spec"]["template"]["spec"]["hostPID"] = json!(true),
            "network, PID or IPC",
        ),
        (
            "hostIPC",
            |s| s["spec"]["template"]["spec"]["hostIPC"] = json!(true),
            "network, PID or IPC",
        ),
        (
            "runAsNonRoot false",
            |s| s["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = json!(false),
            "non-root",
        ),
        (
            "runAsUser 0",
            |s| s["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = json!(0),
            "non-root",
        ),
        (
            "seccomp Unconfined",
            |s| {
                s["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] =
                    json!({"type": "Unconfined"})
            },
            "RuntimeDefault",
        ),
        (
            "container seccomp Unconfined",
            |s| container(s)["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"}),
            "RuntimeDefault",
        ),
        (
            "writable root",
            |s| container(s)["securityContext"]["readOnlyRootFilesystem"] = json!(false),
            "readOnlyRootFilesystem",
        ),
        (
            "privilege escalation",
            |s| container(s)["securityContext"]["allowPrivilegeEscalation"] = json!(true),
            "allowPrivilegeEscalation",
        ),
        (
            "capability added",
            |s| container(s)["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]),
            "drop ALL and add none",
        ),
        (
            "capabilities kept",
            |s| container(s)["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]),
            "drop ALL and add none",
        ),
        (
            "hostPort",
            |s| container(s)["ports"][0]["hostPort"] = json!(6333),
            "hostPort",
        ),
        (
            "service-account token",
            |s| s["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(true),
            "service-account token",
        ),
        (
            "root init container",
            |s| {
                let mut init = container(s).clone();
                init["name"] = json!("init");
                init["securityContext"]["runAsUser"] = json!(0);
                s["spec"]["template"]["spec"]["initContainers"] = json!([init]);
            },
            "every initContainers entry",
        ),
        (
            "ephemeral container",
            |s| {
                s["spec"]["template"]["spec"]["ephemeralContainers"] =
                    json!([{"name": "debug", "image": "busybox"}])
            },
            "ephemeral",
        ),
    ];
    for (what, edit, needle) in cases {
        let mut sts = statefulset();
        edit(&mut sts);
        let d = p.decide(&Request::create(STATEFULSETS, sts));
        assert!(d.denied_because(needle), "{what}: {d:?}");
    }
}

#[test]
fn a_foreign_image_is_denied_and_the_allowed_repositories_come_from_the_values() {
    let p = policy();
    for (image, allowed) in [
        ("docker.io/qdrant/qdrant:v1.19.0-unprivileged", true),
        ("qdrant/qdrant:v1.19.0-unprivileged", true),
        ("docker.io/qdrant/qdrant@sha256:0123", true),
        ("docker.io/qdrant/qdrant-evil:v1.19.0", false),
        ("evil.example/qdrant/qdrant:v1.19.0", false),
        ("docker.io/qdrant/qdrantx", false),
        ("docker.io/qdrant/qdrant", false),
        ("busybox:latest", false),
    ] {
        let mut sts = statefulset();
        container(&mut sts)["image"] = json!(image);
        let d = p.decide(&Request::create(STATEFULSETS, sts));
        if allowed {
            assert_eq!(d, Decision::Allowed, "{image}");
        } else {
            assert!(d.denied_because("policy.allowedImages"), "{image}: {d:?}");
        }
    }
    // Another list: the default image is now foreign, the listed mirror is allowed.
    let mirror = Policy::rendered(
        &json!({"policy": {"allowedImages": ["registry.example:5000/mirror/qdrant"]}}),
    );
    let sts = statefulset();
    assert!(
        mirror
            .decide(&Request::create(STATEFULSETS, sts.clone()))
            .denied_because("registry.example:5000/mirror/qdrant")
    );
    let mut mirrored = sts;
    container(&mut mirrored)["image"] =
        json!("registry.example:5000/mirror/qdrant:v1.19.0-unprivileged");
    assert_eq!(
        mirror.decide(&Request::create(STATEFULSETS, mirrored)),
        Decision::Allowed
    );
    // A whole tree (`x/*`): any image under it, and nothing beside it (the hardened shape
    // still holds).
    let any =
        Policy::rendered(&json!({"policy": {"allowedImages": ["registry.example:5000/mirror/*"]}}));
    let mut busybox = statefulset();
    container(&mut busybox)["image"] = json!("registry.example:5000/mirror/busybox:latest");
    assert_eq!(
        any.decide(&Request::create(STATEFULSETS, busybox.clone())),
        Decision::Allowed
    );
    let mut beside = statefulset();
    container(&mut beside)["image"] = json!("registry.example:5000/mirrorx/busybox:latest");
    assert!(
        any.decide(&Request::create(STATEFULSETS, beside))
            .denied_because("policy.allowedImages")
    );
    container(&mut busybox)["securityContext"]["privileged"] = json!(true);
    assert!(
        any.decide(&Request::create(STATEFULSETS, busybox))
            .denied_because("privileged")
    );
}

#[test]
fn an_object_without_the_managed_by_label_is_denied() {
    let p = policy();
    // A StatefulSet without the label.
    let mut sts = statefulset();
    sts["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("app.kubernetes.io/managed-by");
    let d = p.decide(&Request::create(STATEFULSETS, sts));
    assert!(
        d.denied_because(
            "may only create objects labelled app.kubernetes.io/managed-by=secure-qdrant-operator"
        ),
        "{d:?}"
    );
    // A foreign ConfigMap: neither updated (even if the patch adds the label: a takeover), nor
    // deleted, nor created without the label.
    let foreign = foreign_config_map();
    let mut labelled = foreign.clone();
    labelled["metadata"]["labels"]["app.kubernetes.io/managed-by"] =
        json!("secure-qdrant-operator");
    for r in [
        Request::update(CONFIGMAPS, foreign.clone(), foreign.clone()),
        Request::update(CONFIGMAPS, foreign.clone(), labelled.clone()),
        Request::delete(CONFIGMAPS, foreign.clone()),
        Request::create(CONFIGMAPS, foreign.clone()),
    ] {
        let d = p.decide(&r);
        assert!(
            d.denied_because("search/vectors-config"),
            "{} {d:?}",
            r.operation
        );
    }
    // Removing the label of its own object is denied too.
    assert!(
        p.decide(&Request::update(CONFIGMAPS, labelled, foreign))
            .denied_because("labelled")
    );
    // A label with another value is not the label.
    let mut other = foreign_config_map();
    other["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    assert!(
        p.decide(&Request::create(CONFIGMAPS, other))
            .denied_because("labelled")
    );
}

#[test]
fn events_and_the_lease_pass_other_leases_do_not() {
    let p = policy();
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "vectors.17a", "namespace": "search"},
        "reason": "CredentialsGenerated", "note": "generated API keys",
    });
    assert_eq!(
        p.decide(&Request::create(EVENTS, event.clone())),
        Decision::Allowed
    );
    assert_eq!(
        p.decide(&Request::update(EVENTS, event.clone(), event.clone())),
        Decision::Allowed
    );
    assert!(matches!(
        p.decide(&Request::delete(EVENTS, event)),
        Decision::Denied(_)
    ));
    let lease = |ns: &str, name: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"holderIdentity": "sqo-0"},
        })
    };
    let ours = lease(NS, "secure-qdrant-operator");
    assert_eq!(
        p.decide(&Request::create(LEASES, ours.clone())),
        Decision::Allowed
    );
    assert_eq!(
        p.decide(&Request::update(LEASES, ours.clone(), ours.clone())),
        Decision::Allowed
    );
    assert!(
        p.decide(&Request::delete(LEASES, ours))
            .denied_because("its own Lease")
    );
    // Another Lease (e.g. kube-controller-manager's) is not the operator's to take.
    let other = lease("kube-system", "kube-controller-manager");
    assert!(
        p.decide(&Request::update(LEASES, other.clone(), other))
            .denied_because("its own Lease")
    );
    let elsewhere = lease("search", "secure-qdrant-operator");
    assert!(
        p.decide(&Request::create(LEASES, elsewhere))
            .denied_because("its own Lease")
    );
}

#[test]
fn status_of_its_own_resources_passes_and_only_annotations_are_removed_from_a_secureqdrant() {
    let p = policy();
    let sq = json!({
        "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
        "metadata": {"name": "vectors", "namespace": "search",
                     "annotations": {"secureqdrant.dev/peers-removed": "1", "note": "x"}},
        "spec": {"replicas": 1},
    });
    // Status: not even matched (excluded).
    let status = Request::update(SECUREQDRANTS, sq.clone(), sq.clone()).sub("status");
    assert_eq!(p.decide(&status), Decision::NotMatched);
    let mut token_status = Request::update(
        ("secureqdrant.dev", "v1alpha1", "qdrantaccesstokens"),
        json!({"metadata": {"name": "t"}}),
        json!({"metadata": {"name": "t"}}),
    );
    token_status.sub_resource = Some("status");
    assert_eq!(p.decide(&token_status), Decision::NotMatched);
    // The acknowledgment removed: allowed.
    let mut removed = sq.clone();
    removed["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("secureqdrant.dev/peers-removed");
    assert_eq!(
        p.decide(&Request::update(SECUREQDRANTS, sq.clone(), removed)),
        Decision::Allowed
    );
    // Anything else: denied.
    type Edit = fn(&mut Value);
    let edits: [Edit; 6] = [
        |s| s["spec"]["replicas"] = json!(0),
        |s| s["metadata"]["annotations"]["secureqdrant.dev/rotate-api-key"] = json!("now"),
        |s| s["metadata"]["annotations"]["note"] = json!("changed"),
        |s| s["metadata"]["labels"] = json!({"a": "b"}),
        |s| s["metadata"]["finalizers"] = json!(["block"]),
        |s| {
            s["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"}])
        },
    ];
    for edit in edits {
        let mut changed = sq.clone();
        edit(&mut changed);
        let d = p.decide(&Request::update(SECUREQDRANTS, sq.clone(), changed.clone()));
        assert!(
            d.denied_because("only remove annotations"),
            "{changed}: {d:?}"
        );
    }
    assert!(
        p.decide(&Request::delete(SECUREQDRANTS, sq.clone()))
            .denied_because("only remove annotations")
    );
    assert!(
        p.decide(&Request::create(SECUREQDRANTS, sq))
            .denied_because("only remove annotations")
    );
}

#[test]
fn other_kinds_subresources_and_dangerous_shapes_are_denied_even_labelled() {
    let p = policy();
    let labels = json!({"app.kubernetes.io/managed-by": "secure-qdrant-operator"});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "x", "namespace": "search", "labels": labels}});
    assert!(
        p.decide(&Request::create(("", "v1", "pods"), pod))
            .denied_because("may only write Secrets")
    );
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "x", "labels": labels}});
    assert!(
        p.decide(&Request::create(
            ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
            binding
        ))
        .denied_because("may only write Secrets")
    );
    // A token for a ServiceAccount: a subresource.
    let token = Request::create(
        ("", "v1", "serviceaccounts"),
        json!({"metadata": {"name": "admin", "namespace": "search"}}),
    )
    .sub("token");
    assert!(p.decide(&token).denied_because("subresources"));
    // A StatefulSet's scale.
    let scale = Request::update(
        STATEFULSETS,
        json!({"metadata": {"name": "vectors", "namespace": "search", "labels": labels}}),
        json!({"metadata": {"name": "vectors", "namespace": "search", "labels": labels}}),
    )
    .sub("scale");
    assert!(p.decide(&scale).denied_because("subresources"));
    // A labelled service-account-token Secret would get a token of any ServiceAccount.
    let sa_token = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "x", "namespace": "search", "labels": labels,
                     "annotations": {"kubernetes.io/service-account.name": "admin"}}});
    assert!(
        p.decide(&Request::create(SECRETS, sa_token))
            .denied_because("type Opaque or kubernetes.io/tls")
    );
    // Services reachable from outside the cluster, or hijacking external IPs.
    for spec in [
        json!({"type": "LoadBalancer", "ports": [{"port": 6333}]}),
        json!({"type": "NodePort", "ports": [{"port": 6333}]}),
        json!({"type": "ExternalName", "externalName": "evil.example"}),
        json!({"ports": [{"port": 6333}], "externalIPs": ["8.8.8.8"]}),
    ] {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "vectors", "namespace": "search", "labels": labels}, "spec": spec});
        assert!(
            p.decide(&Request::create(SERVICES, svc))
                .denied_because("ClusterIP"),
            "{spec}"
        );
    }
}

#[test]
fn nobody_but_the_operator_is_affected_and_the_policy_can_be_turned_off() {
    let p = policy();
    let mut sts = statefulset();
    container(&mut sts)["securityContext"]["privileged"] = json!(true);
    for user in [
        "kubernetes-admin",
        "system:serviceaccount:qdrant-system:other",
        "system:serviceaccount:search:sqo-secure-qdrant-operator",
    ] {
        assert_eq!(
            p.decide(&Request::create(STATEFULSETS, sts.clone()).by(user)),
            Decision::NotMatched,
            "{user}"
        );
        assert_eq!(
            p.decide(
                &Request::update(CONFIGMAPS, foreign_config_map(), foreign_config_map()).by(user)
            ),
            Decision::NotMatched
        );
    }
    // The ServiceAccount name follows the values.
    let named = Policy::rendered(&json!({"serviceAccount": {"name": "qdrant-operator"}}));
    let r = Request::create(STATEFULSETS, sts.clone())
        .by("system:serviceaccount:qdrant-system:qdrant-operator");
    assert!(named.decide(&r).denied_because("privileged"));

    let off = common::yaml_docs(&common::render_chart(
        &json!({"admissionPolicy": {"enabled": false}}),
        RELEASE,
        NS,
    ));
    assert!(!off.iter().any(|d| {
        d["kind"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ValidatingAdmissionPolicy")
    }));
}

#[test]
fn the_binding_denies_and_names_the_policy() {
    let docs = common::yaml_docs(&common::render_chart(&json!({}), RELEASE, NS));
    let vap = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    assert_eq!(vap["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(binding["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    // No paramRef / matchResources that would narrow it.
    assert!(binding["spec"].get("matchResources").is_none());
    assert!(binding["spec"].get("paramRef").is_none());
}

#[test]
fn an_allowed_image_written_short_matches_every_spelling_the_operator_accepts() {
    // The operator normalises `qdrant/qdrant` to `docker.io/qdrant/qdrant`: the policy must
    // accept the CRD's default image for that entry, and the other Docker Hub spellings.
    let short = Policy::rendered(&json!({"policy": {"allowedImages": ["qdrant/qdrant"]}}));
    for image in [
        "docker.io/qdrant/qdrant:v1.19.0-unprivileged",
        "qdrant/qdrant:v1.19.0-unprivileged",
        "index.docker.io/qdrant/qdrant:v1.19.0-unprivileged",
        "registry-1.docker.io/qdrant/qdrant@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let mut sts = statefulset();
        container(&mut sts)["image"] = json!(image);
        assert_eq!(
            short.decide(&Request::create(STATEFULSETS, sts)),
            Decision::Allowed,
            "{image}"
        );
    }
    for image in [
        "docker.io/qdrant/qdrant-evil:v1",
        "evil.example.com/qdrant/qdrant:v1",
    ] {
        let mut sts = statefulset();
        container(&mut sts)["image"] = json!(image);
        assert!(
            short
                .decide(&Request::create(STATEFULSETS, sts))
                .denied_because("policy.allowedImages"),
            "{image}"
        );
    }
}
