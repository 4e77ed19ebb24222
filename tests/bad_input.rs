//! Malformed and contradictory SecureQdrants, each refused with a message that names the field.
//!
//! Every case states which layer refuses it:
//! - **schema**: the structural checks of the CRD's openAPIV3Schema (type, enum, minimum/maximum,
//!   minLength/maxLength, pattern, required), checked with the `jsonschema` crate after turning the
//!   OpenAPI 3.0 dialect into JSON Schema (`nullable`, `x-kubernetes-int-or-string`; the other
//!   `x-kubernetes-*` keywords dropped). Unknown fields are allowed (the apiserver prunes them).
//! - **CEL**: the `x-kubernetes-validations` rules, evaluated by kube-cel, which stands in for the
//!   apiserver (see [`apiserver_view`] for where it differs and how that is undone). As in the
//!   apiserver, CEL is not evaluated when the schema already found a type error.
//! - **operator**: deserialization into [`SecureQdrant`] (a type error is a clear rejection) or
//!   [`validate`]. Whatever the apiserver refuses the operator refuses too (an old CRD, a tool that
//!   skips admission and `render` must not get past), except what only transition rules can see.
//!
//! For every case the operator refuses, `render` must fail and print nothing. A few valid edge
//! specs pass every layer, so each check is shown able to pass as well as to fail.

use std::collections::BTreeSet;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};

use jsonschema::error::ValidationErrorKind;
use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
use secure_qdrant_operator::crd::{SecureQdrant, secure_qdrant_crd};
use secure_qdrant_operator::qdrant::FORBIDDEN_USER_CONFIG;
use secure_qdrant_operator::render::render;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::validate::validate;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// The default policy, plus the test registry the image-length bounds use
/// (`registry.example.com/...`), so those cases test the bound and not the policy.
fn settings() -> Settings {
    let mut settings = Settings::default();
    settings
        .policy
        .image_repositories
        .push("registry.example.com/*".to_owned());
    settings
}

/// What the operator itself does with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    /// Deserialization into `SecureQdrant` fails.
    Serde,
    /// `validate` returns problems.
    Validate,
    /// Accepted: only a CEL transition rule (which sees the old object) can refuse it.
    Accepts,
}

struct Case {
    name: String,
    /// The field every refusal must name (dotted, from the object's root).
    field: String,
    /// The SecureQdrant as a user writes it.
    doc: String,
    /// The stored object, for an update (transition rules).
    old: Option<String>,
    /// The structural schema refuses it.
    schema: bool,
    /// A CEL rule refuses it.
    cel: bool,
    operator: Operator,
}

const UID: &str = "7d3c1a52-3b1e-4a8e-9a43-6b2f0c1d9e11";

fn doc_named(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata:\n  name: {name}\n  \
         namespace: search\n  uid: {UID}\nspec: {spec}\n"
    )
}

fn doc(spec: &str) -> String {
    doc_named("vectors", spec)
}

/// A case whose spec (YAML flow style) is refused; the layers are added with the builders below.
fn bad(name: &str, field: &str, spec: &str) -> Case {
    bad_doc(name, field, doc(spec))
}

fn bad_doc(name: &str, field: &str, doc: String) -> Case {
    Case {
        name: name.to_owned(),
        field: field.to_owned(),
        doc,
        old: None,
        schema: false,
        cel: false,
        operator: Operator::Accepts,
    }
}

impl Case {
    fn schema(mut self) -> Self {
        self.schema = true;
        self
    }
    fn cel(mut self) -> Self {
        self.cel = true;
        self
    }
    fn serde(mut self) -> Self {
        self.operator = Operator::Serde;
        self
    }
    fn validate(mut self) -> Self {
        self.operator = Operator::Validate;
        self
    }
    /// An update of the object stored with this spec.
    fn updating(mut self, old_spec: &str) -> Self {
        self.old = Some(doc(old_spec));
        self
    }
    /// An update of the object stored with this spec and this status.
    fn updating_with_status(mut self, old_spec: &str, status: &str) -> Self {
        self.old = Some(with_status(doc(old_spec), status));
        self
    }
}

/// `doc` with a status (YAML flow style), as the operator wrote it.
fn with_status(doc: String, status: &str) -> String {
    format!("{doc}status: {status}\n")
}

fn bad_cases() -> Vec<Case> {
    let long_name = format!("v{}", "x".repeat(52)); // 53 characters
    let long_image = format!("registry.example.com/{}:v1", "q".repeat(489)); // 513 characters
    let long_size = format!("{}1Gi", "0".repeat(62)); // a valid quantity (1Gi), 65 characters
    let long_class = "c".repeat(254);
    let mut cases = vec![
        // replicas
        bad("replicas 0", "spec.replicas", "{replicas: 0}")
            .schema()
            .validate(),
        bad("replicas -1", "spec.replicas", "{replicas: -1}")
            .schema()
            .validate(),
        bad("replicas 101", "spec.replicas", "{replicas: 101}")
            .schema()
            .validate(),
        bad("replicas \"three\"", "spec.replicas", "{replicas: three}")
            .schema()
            .serde(),
        bad("replicas 2.5", "spec.replicas", "{replicas: 2.5}")
            .schema()
            .serde(),
        // image
        bad("empty image", "spec.image", "{image: ''}")
            .schema()
            .validate(),
        bad(
            "image with a space",
            "spec.image",
            "{image: 'qdrant/qdrant:v1.18.3 -unprivileged'}",
        )
        .schema()
        .validate(),
        bad(
            "image of 513 characters",
            "spec.image",
            &format!("{{image: {long_image}}}"),
        )
        .schema()
        .validate(),
        bad(
            "imagePullPolicy Sometimes",
            "spec.imagePullPolicy",
            "{imagePullPolicy: Sometimes}",
        )
        .schema()
        .serde(),
        // storage: the schema only bounds the length; quantities are checked by CEL.
        bad(
            "storage.size ten",
            "spec.storage.size",
            "{storage: {size: ten}}",
        )
        .cel()
        .validate(),
        bad(
            "storage.size 0",
            "spec.storage.size",
            "{storage: {size: '0'}}",
        )
        .cel()
        .validate(),
        bad(
            "storage.size -5Gi",
            "spec.storage.size",
            "{storage: {size: -5Gi}}",
        )
        .cel()
        .validate(),
        bad(
            "storage.size empty",
            "spec.storage.size",
            "{storage: {size: ''}}",
        )
        .cel()
        .validate(),
        bad(
            "storage.size 10GB",
            "spec.storage.size",
            "{storage: {size: 10GB}}",
        )
        .cel()
        .validate(),
        bad(
            "storage.size an object",
            "spec.storage.size",
            "{storage: {size: {value: 10Gi}}}",
        )
        .schema()
        .serde(),
        bad(
            "storage.size of 65 characters",
            "spec.storage.size",
            &format!("{{storage: {{size: '{long_size}'}}}}"),
        )
        .schema()
        .validate(),
        bad(
            "storage.storageClassName empty",
            "spec.storage.storageClassName",
            "{storage: {storageClassName: ''}}",
        )
        .schema()
        .validate(),
        bad(
            "storage.storageClassName of 254 characters",
            "spec.storage.storageClassName",
            &format!("{{storage: {{storageClassName: {long_class}}}}}"),
        )
        .schema()
        .validate(),
        // snapshots
        bad(
            "snapshots.size abc",
            "spec.snapshots.size",
            "{snapshots: {size: abc}}",
        )
        .cel()
        .validate(),
        bad(
            "snapshots.size 0Gi",
            "spec.snapshots.size",
            "{snapshots: {size: 0Gi}}",
        )
        .cel()
        .validate(),
        // audit
        bad(
            "audit.rotation weekly",
            "spec.audit.rotation",
            "{audit: {rotation: weekly}}",
        )
        .schema()
        .serde(),
        bad(
            "audit.maxLogFiles 0",
            "spec.audit.maxLogFiles",
            "{audit: {maxLogFiles: 0}}",
        )
        .schema()
        .validate(),
        bad(
            "audit.maxLogFiles -1",
            "spec.audit.maxLogFiles",
            "{audit: {maxLogFiles: -1}}",
        )
        .schema()
        .serde(),
        bad(
            "audit.maxLogFiles 10001",
            "spec.audit.maxLogFiles",
            "{audit: {maxLogFiles: 10001}}",
        )
        .schema()
        .validate(),
        // spec.config: operator-owned keys. The apiserver refuses them with CEL `!has()` rules on
        // declared properties (it hides the undeclared ones under preserve-unknown-fields).
        bad(
            "config service.api_key",
            "spec.config.service.api_key",
            "{config: {service: {api_key: hunter2}}}",
        )
        .cel()
        .validate(),
        bad(
            "config service.alt_api_key",
            "spec.config.service.alt_api_key",
            "{config: {service: {alt_api_key: hunter2}}}",
        )
        .cel()
        .validate(),
        bad(
            "config service.read_only_api_key",
            "spec.config.service.read_only_api_key",
            "{config: {service: {read_only_api_key: hunter2}}}",
        )
        .cel()
        .validate(),
        bad(
            "config service.enable_tls false",
            "spec.config.service.enable_tls",
            "{config: {service: {enable_tls: false}}}",
        )
        .cel()
        .validate(),
        bad(
            "config service.jwt_rbac false",
            "spec.config.service.jwt_rbac",
            "{config: {service: {jwt_rbac: false}}}",
        )
        .cel()
        .validate(),
        bad(
            "config tls",
            "spec.config.tls",
            "{config: {tls: {cert: /tmp/cert.pem, key: /tmp/key.pem}}}",
        )
        .cel()
        .validate(),
        bad(
            "config cluster.enabled",
            "spec.config.cluster.enabled",
            "{config: {cluster: {enabled: true}}}",
        )
        .cel()
        .validate(),
        bad(
            "config cluster.p2p.port",
            "spec.config.cluster.p2p",
            "{config: {cluster: {p2p: {port: 7000}}}}",
        )
        .cel()
        .validate(),
        bad(
            "config telemetry_disabled false",
            "spec.config.telemetry_disabled",
            "{config: {telemetry_disabled: false}}",
        )
        .cel()
        .validate(),
        bad(
            "config storage.storage_path",
            "spec.config.storage.storage_path",
            "{config: {storage: {storage_path: /tmp}}}",
        )
        .cel()
        .validate(),
        bad(
            "config audit",
            "spec.config.audit",
            "{config: {audit: {enabled: false}}}",
        )
        .cel()
        .validate(),
        // A forbidden key with the wrong type: the type error blocks CEL (as in the apiserver).
        bad(
            "config service.enable_tls \"no\"",
            "spec.config.service.enable_tls",
            "{config: {service: {enable_tls: 'no'}}}",
        )
        .schema()
        .validate(),
        // Operator only: CEL cannot see undeclared keys under preserve-unknown-fields, so the
        // apiserver admits these; Qdrant's config loader would read them as `service.api_key`.
        bad(
            "config dotted key service.api_key",
            "spec.config.service.api_key",
            "{config: {service.api_key: hunter2}}",
        )
        .validate(),
        bad(
            "config upper-case key SERVICE",
            "spec.config.SERVICE",
            "{config: {SERVICE: {API_KEY: hunter2}}}",
        )
        .validate(),
        bad(
            "config upper-case nested key",
            "spec.config.service.API_KEY",
            "{config: {service: {API_KEY: hunter2}}}",
        )
        .validate(),
        bad(
            "config not a map",
            "spec.config",
            "{config: 'log_level: debug'}",
        )
        .schema()
        .serde(),
        // pod passthrough
        bad(
            "pod.labels app.kubernetes.io/instance",
            "spec.pod.labels",
            "{pod: {labels: {app.kubernetes.io/instance: other}}}",
        )
        .cel()
        .validate(),
        bad(
            "pod.annotations secureqdrant.dev/restart-hash",
            "spec.pod.annotations",
            "{pod: {annotations: {secureqdrant.dev/restart-hash: '0'}}}",
        )
        .cel()
        .validate(),
        // metadata.name: the apiserver's own name check allows up to 253 characters and digits
        // first; the CRD's root rule narrows it to what the StatefulSet's names need.
        bad_doc(
            "metadata.name of 53 characters",
            "metadata.name",
            doc_named(&long_name, "{}"),
        )
        .cel()
        .validate(),
        bad_doc(
            "metadata.name with upper case",
            "metadata.name",
            doc_named("Vectors", "{}"),
        )
        .cel()
        .validate(),
        bad_doc(
            "metadata.name with an underscore",
            "metadata.name",
            doc_named("my_vectors", "{}"),
        )
        .cel()
        .validate(),
        bad_doc(
            "metadata.name starting with a digit",
            "metadata.name",
            doc_named("1vectors", "{}"),
        )
        .cel()
        .validate(),
        // A CA constrained to the Service name `svc` (or `local`, a label of cluster.local)
        // could sign every in-cluster Service name: the operator refuses these names.
        bad_doc("metadata.name svc", "metadata.name", doc_named("svc", "{}")).validate(),
        bad_doc(
            "metadata.name local (a label of the cluster domain)",
            "metadata.name",
            doc_named("local", "{}"),
        )
        .validate(),
        // The instance's own Secret names are the operator's to write: a reference to one of
        // them (allowed before the salt moved into <n>-api-key) is refused with a rename hint.
        bad(
            "apiKeySecretRef naming the instance's own <n>-api-key",
            "spec.auth.apiKeySecretRef.name",
            "{auth: {apiKeySecretRef: {name: vectors-api-key, key: api-key}}}",
        )
        .validate(),
        bad(
            "caSecretRef naming the instance's own <n>-ca",
            "spec.tls.caSecretRef.name",
            "{tls: {caSecretRef: {name: vectors-ca}}}",
        )
        .validate(),
        bad(
            "certificateSecretRef naming the instance's own <n>-tls",
            "spec.tls.certificateSecretRef.name",
            "{tls: {certificateSecretRef: {name: vectors-tls}}}",
        )
        .validate(),
        bad(
            "certificateSecretRef naming the instance's own <n>-metrics-client",
            "spec.tls.certificateSecretRef.name",
            "{tls: {certificateSecretRef: {name: vectors-metrics-client}}}",
        )
        .validate(),
        bad(
            "imagePullSecrets naming the instance's own <n>-ca",
            "spec.imagePullSecrets[0].name",
            "{imagePullSecrets: [{name: vectors-ca}]}",
        )
        .validate(),
        // resources: quantities are int-or-string without a pattern in the schema, and no rule
        // compares requests with limits, so the apiserver admits these (it would refuse the
        // StatefulSet's pods later). Operator only.
        bad(
            "resources requests > limits",
            "spec.resources.requests.memory",
            "{resources: {requests: {memory: 4Gi}, limits: {memory: 2Gi}}}",
        )
        .validate(),
        bad(
            "resources bad quantity",
            "spec.resources.requests.cpu",
            "{resources: {requests: {cpu: lots}}}",
        )
        .validate(),
        bad(
            "resources quantity with a space",
            "spec.resources.limits.memory",
            "{resources: {limits: {memory: 2 Gi}}}",
        )
        .validate(),
        // No spec at all.
        bad_doc(
            "no spec",
            "spec",
            format!(
                "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\n\
                 metadata: {{name: vectors, namespace: search, uid: {UID}}}\n"
            ),
        )
        .schema()
        .serde(),
        // Updates: only transition rules (oldSelf) see these; the operator sees one object at a
        // time, and each new object is valid on its own.
        bad(
            "storage.size changed",
            "spec.storage.size",
            "{storage: {size: 20Gi}}",
        )
        .updating("{storage: {size: 10Gi}}")
        .cel(),
        bad(
            "storage.size default changed",
            "spec.storage.size",
            "{storage: {size: 20Gi}}",
        )
        .updating("{}")
        .cel(),
        bad(
            "storage.storageClassName changed",
            "spec.storage.storageClassName",
            "{storage: {storageClassName: fast}}",
        )
        .updating("{storage: {storageClassName: standard}}")
        .cel(),
        bad(
            "storage.storageClassName added",
            "spec.storage.storageClassName",
            "{storage: {storageClassName: fast}}",
        )
        .updating("{}")
        .cel(),
        bad(
            "storage.storageClassName removed",
            "spec.storage.storageClassName",
            "{}",
        )
        .updating("{storage: {storageClassName: standard}}")
        .cel(),
        bad(
            "snapshots.size changed",
            "spec.snapshots.size",
            "{snapshots: {size: 50Gi}}",
        )
        .updating("{snapshots: {size: 20Gi}}")
        .cel(),
        bad("snapshots.size removed", "spec.snapshots.size", "{}")
            .updating("{snapshots: {size: 20Gi}}")
            .cel(),
        bad(
            "snapshots.size added",
            "spec.snapshots.size",
            "{snapshots: {size: 20Gi}}",
        )
        .updating("{}")
        .cel(),
        // Once the instance has run more than one replica (status.clustered), the TLS setting
        // is fixed: peer URIs are in Qdrant's Raft state with their scheme. The operator refuses
        // it in its plan (it needs the running StatefulSet or the status, which validate does
        // not see).
        bad(
            "tls.enabled switched off on a clustered instance",
            "spec.tls.enabled",
            "{replicas: 3, tls: {enabled: false}}",
        )
        .updating_with_status("{replicas: 3}", "{clustered: true}")
        .cel(),
        bad(
            "tls.enabled switched on on a clustered instance",
            "spec.tls.enabled",
            "{replicas: 3}",
        )
        .updating_with_status("{replicas: 3, tls: {enabled: false}}", "{clustered: true}")
        .cel(),
        bad(
            "tls.enabled switched off on a clustered instance serving https",
            "spec.tls.enabled",
            "{replicas: 3, tls: {enabled: false}}",
        )
        .updating_with_status(
            "{replicas: 3}",
            "{clustered: true, endpoints: {rest: 'https://vectors.search.svc:6333', grpc: \
             'https://vectors.search.svc:6334'}}",
        )
        .cel(),
        // 3 -> 1 -> switch: the instance runs one replica now, but status.clustered stays.
        bad(
            "tls.enabled switched on a cluster scaled down to 1",
            "spec.tls.enabled",
            "{replicas: 1, tls: {enabled: false}}",
        )
        .updating_with_status(
            "{replicas: 1, tls: {enabled: true}}",
            "{clustered: true, replicas: 1}",
        )
        .cel(),
    ];
    // auth.keyRotationGracePeriod: syntax by pattern, the lower bound (1m, about how long
    // kubelets take to refresh a mounted Secret) by CEL and the operator.
    cases.extend([
        bad(
            "auth.keyRotationGracePeriod 1s",
            "spec.auth.keyRotationGracePeriod",
            "{auth: {keyRotationGracePeriod: 1s}}",
        )
        .cel()
        .validate(),
        bad(
            "auth.keyRotationGracePeriod 59s",
            "spec.auth.keyRotationGracePeriod",
            "{auth: {keyRotationGracePeriod: 59s}}",
        )
        .cel()
        .validate(),
        bad(
            "auth.keyRotationGracePeriod 0.5m",
            "spec.auth.keyRotationGracePeriod",
            "{auth: {keyRotationGracePeriod: 0.5m}}",
        )
        .cel()
        .validate(),
        bad(
            "auth.keyRotationGracePeriod 0s",
            "spec.auth.keyRotationGracePeriod",
            "{auth: {keyRotationGracePeriod: 0s}}",
        )
        .cel()
        .validate(),
        bad(
            "auth.keyRotationGracePeriod 1d",
            "spec.auth.keyRotationGracePeriod",
            "{auth: {keyRotationGracePeriod: 1d}}",
        )
        .schema()
        .validate(),
    ]);
    // TLS: durations are checked by pattern (syntax) and CEL (ranges and relations). spec.tls was
    // written alongside these cases; the guard keeps them from running against a CRD without it.
    let crd_has_tls = openapi_schema()["properties"]["spec"]["properties"]["tls"].is_object();
    cases.extend(
        crd_has_tls
            .then_some([
                bad(
                    "tls.certificateLifetime 30m",
                    "spec.tls.certificateLifetime",
                    "{tls: {certificateLifetime: 30m}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.certificateLifetime 90d",
                    "spec.tls.certificateLifetime",
                    "{tls: {certificateLifetime: 90d}}",
                )
                .schema()
                .validate(),
                bad(
                    "tls.caLifetime shorter than the certificates'",
                    "spec.tls.caLifetime",
                    "{tls: {caLifetime: 100h}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.renewBefore 1m",
                    "spec.tls.renewBefore",
                    "{tls: {renewBefore: 1m}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.renewBefore past the lifetime",
                    "spec.tls.renewBefore",
                    "{tls: {renewBefore: 3000h}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls disabled with client certificates",
                    "spec.tls.enabled",
                    "{tls: {enabled: false, clientCertificates: true}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls with both caSecretRef and certificateSecretRef",
                    "spec.tls",
                    "{tls: {caSecretRef: {name: ca}, certificateSecretRef: {name: cert}}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.extraDnsNames not a DNS name",
                    "spec.tls.extraDnsNames",
                    "{tls: {extraDnsNames: [Bad_Name]}}",
                )
                .schema()
                .validate(),
                bad(
                    "tls.extraDnsNames: another instance's Service",
                    "spec.tls",
                    "{tls: {extraDnsNames: [other.search.svc]}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.extraDnsNames: another instance's Service, with the cluster domain",
                    "spec.tls",
                    "{tls: {extraDnsNames: [other.search.svc.cluster.local]}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.extraDnsNames: the API server",
                    "spec.tls",
                    "{tls: {extraDnsNames: [kubernetes.default.svc]}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.extraDnsNames: a wildcard over the namespace's Services",
                    "spec.tls",
                    "{tls: {extraDnsNames: ['*.search.svc']}}",
                )
                .cel()
                .validate(),
                bad(
                    "tls.extraDnsNames: a wildcard outside the allowed suffixes",
                    "spec.tls.extraDnsNames",
                    "{tls: {extraDnsNames: ['*.example.com']}}",
                )
                .validate(),
                bad(
                    "tls.extraDnsNames: a domain outside the allowed suffixes",
                    "spec.tls.extraDnsNames",
                    "{tls: {extraDnsNames: [qdrant.example.com]}}",
                )
                .validate(),
                bad(
                    "tls.extraDnsNames: another instance's short name",
                    "spec.tls.extraDnsNames",
                    "{tls: {extraDnsNames: [other.search]}}",
                )
                .validate(),
                bad(
                    "tls.enabled \"no\"",
                    "spec.tls.enabled",
                    "{tls: {enabled: 'no'}}",
                )
                .schema()
                .serde(),
            ])
            .into_iter()
            .flatten(),
    );
    // spec.config is an allow-list: the keys Qdrant reads that reach outside the pod are refused
    // by CEL and the operator; any other key off the list by the operator (CEL cannot see keys
    // it does not declare, and they stay visible to the operator so a running instance is kept).
    cases.extend([
        bad(
            "config static content served from the TLS mount",
            "spec.config.service.static_content_dir",
            "{config: {service: {static_content_dir: /qdrant/tls, enable_static_content: true}}}",
        )
        .cel()
        .validate(),
        bad(
            "config snapshots to any S3 endpoint",
            "spec.config.storage.snapshots_config",
            "{config: {storage: {snapshots_config: {snapshots_storage: s3}}}}",
        )
        .cel()
        .validate(),
        bad(
            "config inference.address (SSRF)",
            "spec.config.inference",
            "{config: {inference: {address: 'http://169.254.169.254/latest/'}}}",
        )
        .cel()
        .validate(),
        bad(
            "config cluster.peer_id (one config for every pod)",
            "spec.config.cluster.peer_id",
            "{replicas: 3, config: {cluster: {peer_id: 7}}}",
        )
        .cel()
        .validate(),
        bad(
            "config key off the allow-list",
            "spec.config.service.hardware_reporting",
            "{config: {service: {hardware_reporting: true}}}",
        )
        .validate(),
        bad(
            "config misspelled top-level key",
            "spec.config.loglevel",
            "{config: {loglevel: DEBUG}}",
        )
        .validate(),
        bad(
            "config log_level of 65 characters",
            "spec.config.log_level",
            &format!("{{config: {{log_level: {}}}}}", "i".repeat(65)),
        )
        .schema()
        .validate(),
        bad(
            "config allowed key of the wrong type",
            "spec.config.storage.hnsw_index.m",
            "{config: {storage: {hnsw_index: {m: -1}}}}",
        )
        .schema()
        .validate(),
    ]);
    // The operator's policy (tenant boundary): fixed rules also in CEL, admin-configurable ones
    // in the operator only.
    let many_tolerations: Vec<String> = (0..33)
        .map(|i| format!("{{key: k{i}, operator: Exists}}"))
        .collect();
    cases.extend([
        bad(
            "pod toleration of every taint",
            "spec.pod.tolerations",
            "{pod: {tolerations: [{operator: Exists}]}}",
        )
        .cel()
        .validate(),
        bad(
            "pod 33 tolerations",
            "spec.pod.tolerations",
            &format!("{{pod: {{tolerations: [{}]}}}}", many_tolerations.join(", ")),
        )
        .schema()
        .validate(),
        bad(
            "pod toleration of the control plane",
            "spec.pod.tolerations[0].key",
            "{pod: {tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]}}",
        )
        .validate(),
        bad(
            "pod on control-plane nodes",
            "spec.pod.nodeSelector",
            "{pod: {nodeSelector: {node-role.kubernetes.io/master: ''}}}",
        )
        .validate(),
        bad(
            "pod priority system-node-critical",
            "spec.pod.priorityClassName",
            "{pod: {priorityClassName: system-node-critical}}",
        )
        .validate(),
        bad(
            "pod apparmor unconfined",
            "spec.pod.annotations[container.apparmor.security.beta.kubernetes.io/qdrant]",
            "{pod: {annotations: {container.apparmor.security.beta.kubernetes.io/qdrant: unconfined}}}",
        )
        .validate(),
        bad(
            "pod mesh injection annotation",
            "spec.pod.annotations[sidecar.istio.io/inject]",
            "{pod: {annotations: {sidecar.istio.io/inject: 'true'}}}",
        )
        .validate(),
        bad(
            "image outside the allowed repositories",
            "spec.image",
            "{image: 'qdrant/qdrant-evil:v1.19.0'}",
        )
        .validate(),
        bad(
            "image from another registry",
            "spec.image",
            "{image: 'evil.example.com/qdrant/qdrant:v1.19.0-unprivileged'}",
        )
        .validate(),
        bad(
            "extraEgress to the whole internet",
            "spec.network.extraEgress[0].to[0].ipBlock.cidr",
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]}}",
        )
        .validate(),
        bad(
            "clients from the metadata address",
            "spec.network.clients[0].ipBlock.cidr",
            "{network: {clients: [{ipBlock: {cidr: 169.254.169.254/32}}]}}",
        )
        .validate(),
        bad(
            "metrics from ::/0",
            "spec.network.metrics[0].ipBlock.cidr",
            "{network: {metrics: [{ipBlock: {cidr: '::/0'}}]}}",
        )
        .validate(),
    ]);
    // Every operator-owned config key, with a value of its declared type.
    for (path, json_type) in FORBIDDEN_USER_CONFIG {
        let leaf = match *json_type {
            "string" => json!("x"),
            "integer" => json!(1),
            "boolean" => json!(false),
            _ => json!({"a": 1}),
        };
        let config = path
            .split('.')
            .rev()
            .fold(leaf, |inner, part| json!({ part: inner }));
        cases.push(
            bad(
                &format!("config {path} (every forbidden key)"),
                &format!("spec.config.{path}"),
                &json!({ "config": config }).to_string(),
            )
            .cel()
            .validate(),
        );
    }
    cases
}

/// Specs at the edges of what is allowed: every layer accepts them (`old`: an update).
fn valid_cases() -> Vec<(String, String, Option<String>)> {
    let name_52 = format!("v{}", "x".repeat(51));
    let spec = |name: &str, spec: &str| (name.to_owned(), doc(spec), None);
    vec![
        spec("empty spec (all defaults)", "{}"),
        spec("replicas 1", "{replicas: 1}"),
        (
            "tls.enabled switched on a never-clustered single node".to_owned(),
            doc("{tls: {enabled: false}}"),
            Some(with_status(doc("{}"), "{replicas: 1}")),
        ),
        (
            // A switch that got past an older CRD is undone: back to what the pods run with.
            "tls.enabled set back to the scheme a clustered instance serves".to_owned(),
            doc("{replicas: 3, tls: {enabled: true}}"),
            Some(with_status(
                doc("{replicas: 3, tls: {enabled: false}}"),
                "{clustered: true, endpoints: {rest: 'https://vectors.search.svc:6333', grpc: \
                 'https://vectors.search.svc:6334'}}",
            )),
        ),
        (
            "a clustered instance that keeps its TLS setting".to_owned(),
            doc("{replicas: 4, tls: {enabled: true}}"),
            Some(with_status(doc("{replicas: 3}"), "{clustered: true}")),
        ),
        spec("replicas 100", "{replicas: 100}"),
        spec(
            "config with allowed keys",
            "{config: {log_level: DEBUG, storage: {performance: {max_search_threads: 4}, \
             optimizers: {default_segment_number: 2}}, service: {max_workers: 4}, \
             cluster: {consensus: {tick_period_ms: 100}}}}",
        ),
        spec(
            "explicit nulls (API.md shows them)",
            "{resources: null, storage: {storageClassName: null}, snapshots: {size: null}}",
        ),
        spec(
            "quantities at the edge",
            "{storage: {size: 1.5G}, snapshots: {size: 1Ti}, resources: {requests: {cpu: 2, \
             memory: 4Gi}, limits: {cpu: 2, memory: 4Gi}}}",
        ),
        spec(
            "audit bounds",
            "{audit: {enabled: true, rotation: hourly, maxLogFiles: 10000}}",
        ),
        spec("audit maxLogFiles 1", "{audit: {maxLogFiles: 1}}"),
        spec(
            "auth.keyRotationGracePeriod 1m exactly",
            "{auth: {keyRotationGracePeriod: 1m}}",
        ),
        spec(
            "auth.keyRotationGracePeriod 60s",
            "{auth: {keyRotationGracePeriod: 60s}}",
        ),
        spec(
            "pod labels and annotations outside the reserved prefixes",
            "{pod: {labels: {team: search, example.com/app.kubernetes.io: x}, annotations: \
             {example.com/owner: search, secureqdrant.dev.example.com/x: y}}}",
        ),
        spec(
            "long image digest",
            &format!(
                "{{image: 'docker.io/qdrant/qdrant@sha256:{}'}}",
                "0123456789abcdef".repeat(4)
            ),
        ),
        spec(
            "maxLength bounds exactly",
            &format!(
                "{{image: registry.example.com/{}:v1, storage: {{size: '{}1Gi', \
                 storageClassName: {}}}, snapshots: {{size: '{}1Gi'}}}}",
                "q".repeat(488),
                "0".repeat(61),
                "c".repeat(253),
                "0".repeat(61),
            ),
        ),
        (
            "metadata.name of 52 characters".to_owned(),
            doc_named(&name_52, "{}"),
            None,
        ),
        ("metadata.name a-1".to_owned(), doc_named("a-1", "{}"), None),
        (
            "update: replicas changed, storage kept".to_owned(),
            doc(
                "{replicas: 3, storage: {size: 10Gi, storageClassName: standard}, \
                 snapshots: {size: 20Gi}}",
            ),
            Some(doc(
                "{replicas: 1, storage: {size: 10Gi, storageClassName: standard}, \
                 snapshots: {size: 20Gi}}",
            )),
        ),
        (
            "update: defaults kept".to_owned(),
            doc("{replicas: 2}"),
            Some(doc("{storage: {size: 10Gi}}")),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The layers
// ---------------------------------------------------------------------------------------------

fn yaml_to_json(doc: &str) -> Value {
    serde_yaml_ng::from_str(doc).expect("every case is well-formed YAML")
}

fn openapi_schema() -> Value {
    let crd = secure_qdrant_crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has an openAPIV3Schema");
    serde_json::to_value(schema).expect("a schema serializes")
}

/// The CRD's OpenAPI 3.0 schema as JSON Schema (draft 4, which OpenAPI 3.0 extends).
fn to_json_schema(openapi: &Value) -> Value {
    let Value::Object(map) = openapi else {
        return openapi.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        if key.starts_with("x-kubernetes-") || key == "nullable" {
            continue;
        }
        let converted = match key.as_str() {
            "properties" | "patternProperties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), to_json_schema(v)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => to_json_schema(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(to_json_schema)
                    .collect(),
            ),
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.insert("type".to_owned(), json!(["integer", "string"]));
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = t.clone();
                out.insert("type".to_owned(), json!([t, "null"]));
            }
            Some(Value::Array(types)) => types.push(json!("null")),
            _ => {}
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// kube-cel stands in for the apiserver, with two differences that matter for this CRD. Both are
/// undone here so the rules are evaluated as the apiserver evaluates them (see
/// `kube_cel_differs_from_the_apiserver_as_documented`):
/// 1. kube-cel escapes `_` in property names to `__` (the apiserver escapes only `__`, `.`, `-`,
///    `/` and keywords), so `has(self.api_key)` never finds `api_key`: the rules' member names are
///    escaped the same way here;
/// 2. kube-cel binds a property set to null as present (`has()` true, then `isQuantity(null)`
///    fails); the apiserver treats null-valued nullable fields as absent: nulls are dropped.
fn apiserver_view(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "x-kubernetes-validations" {
                        let mut rules = v.clone();
                        for rule in rules.as_array_mut().into_iter().flatten() {
                            if let Some(Value::String(text)) = rule.get_mut("rule") {
                                *text = kube_cel_member_names(text);
                            }
                        }
                        rules
                    } else {
                        apiserver_view(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(apiserver_view).collect()),
        other => other.clone(),
    }
}

/// Doubles `_` in member names (`self.api_key` → `self.api__key`), outside string literals.
fn kube_cel_member_names(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len());
    let mut quote: Option<char> = None;
    let mut in_member = false;
    for c in rule.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    in_member = false;
                } else if c == '.' {
                    in_member = true;
                } else if !(c.is_ascii_alphanumeric() || c == '_') {
                    in_member = false;
                }
                if in_member && c == '_' {
                    out.push('_');
                }
                out.push(c);
            }
        }
    }
    out
}

fn drop_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), drop_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

struct Layers {
    schema: jsonschema::Validator,
    /// The CRD schema as kube-cel must see it to agree with the apiserver.
    cel_schema: Value,
}

/// What the structural schema says: (`path: message` for each error, whether one of them is a
/// type or enum error, which keeps the apiserver from evaluating CEL).
type SchemaResult = (Vec<String>, bool);

impl Layers {
    fn new() -> Self {
        let openapi = openapi_schema();
        let schema = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&to_json_schema(&openapi))
            .expect("the CRD schema is a valid JSON Schema");
        Layers {
            schema,
            cel_schema: apiserver_view(&openapi),
        }
    }

    fn schema_errors(&self, object: &Value) -> SchemaResult {
        let mut blocking = false;
        let errors = self
            .schema
            .iter_errors(object)
            .map(|e| {
                // The errors that keep the apiserver from evaluating CEL at all.
                blocking |= matches!(
                    e.kind(),
                    ValidationErrorKind::Type { .. } | ValidationErrorKind::Enum { .. }
                );
                let path = e
                    .instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .collect::<Vec<_>>()
                    .join(".");
                format!("{path}: {e}")
            })
            .collect();
        (errors, blocking)
    }

    fn cel_errors(&self, object: &Value, old: Option<&Value>) -> Vec<ValidationError> {
        let old = old.map(drop_nulls);
        match Validator::new().validate(&self.cel_schema, &drop_nulls(object), old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec(),
        }
    }
}

/// Whether a message names `field`, either in full or relative to `spec`.
fn names(text: &str, field: &str) -> bool {
    text.contains(field)
        || field
            .strip_prefix("spec.")
            .is_some_and(|f| text.contains(f))
}

/// A CEL error names the field when its rule sits on the field or a parent, and the message names
/// the rest of the path (`spec.config.service` + "may not set `service.api_key`").
fn cel_names(e: &ValidationError, field: &str) -> bool {
    let rest = if e.field_path.is_empty() {
        Some(field)
    } else {
        field
            .strip_prefix(e.field_path.as_str())
            .map(|r| r.trim_start_matches('.'))
    };
    match rest {
        Some("") => names(&e.message, field),
        Some(rest) => e.message.contains(rest),
        None => false,
    }
}

fn show_cel(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("{e} [{:?}]", e.kind))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `f`, turning a panic into a failure of the case.
fn guarded<T>(
    what: &str,
    case: &str,
    failures: &mut Vec<String>,
    f: impl FnOnce() -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{case}: {what} panicked: {msg}"));
            None
        }
    }
}

/// Checks one case against every layer; returns its failures and the CEL rules that refused it.
fn check(layers: &Layers, case: &Case) -> (Vec<String>, BTreeSet<String>) {
    let mut failures = Vec::new();
    let mut fired = BTreeSet::new();
    let name = case.name.as_str();
    let field = case.field.as_str();
    let object = yaml_to_json(&case.doc);
    let old = case.old.as_deref().map(yaml_to_json);

    // Structural schema.
    let (schema_errors, blocking) = guarded("schema", name, &mut failures, || {
        layers.schema_errors(&object)
    })
    .unwrap_or_default();
    match (case.schema, schema_errors.is_empty()) {
        (true, true) => failures.push(format!("{name}: the schema accepts it")),
        (true, false) if !schema_errors.iter().any(|e| names(e, field)) => failures.push(format!(
            "{name}: no schema error names {field}: {schema_errors:?}"
        )),
        (false, false) => {
            failures.push(format!("{name}: the schema refuses it: {schema_errors:?}"))
        }
        _ => {}
    }

    // CEL: like the apiserver, not evaluated once the schema found a type or enum error.
    if blocking {
        if case.cel {
            failures.push(format!(
                "{name}: expects a CEL refusal, but the type error keeps CEL from running"
            ));
        }
    } else if let Some(errors) = guarded("CEL", name, &mut failures, || {
        layers.cel_errors(&object, old.as_ref())
    }) {
        // A rule that cannot evaluate a value the schema already refuses (`duration('90d')`
        // after a pattern error) still rejects the object, next to the schema's message.
        let errors: Vec<_> = if case.schema {
            errors
                .into_iter()
                .filter(|e| e.kind != ErrorKind::EvaluationError)
                .collect()
        } else {
            errors
        };
        if let Some(broken) = errors
            .iter()
            .find(|e| e.kind != ErrorKind::ValidationFailure)
        {
            failures.push(format!(
                "{name}: a CEL rule did not evaluate cleanly: {broken} [{:?}]",
                broken.kind
            ));
        }
        fired.extend(errors.iter().map(|e| e.rule.clone()));
        match (case.cel, errors.is_empty()) {
            (true, true) => failures.push(format!("{name}: CEL accepts it")),
            (true, false) if !errors.iter().any(|e| cel_names(e, field)) => failures.push(format!(
                "{name}: no CEL error names {field}: {}",
                show_cel(&errors)
            )),
            (false, false) => {
                failures.push(format!("{name}: CEL refuses it: {}", show_cel(&errors)))
            }
            _ => {}
        }
        // A transition case must pass on its own: only the comparison with oldSelf refuses it.
        if old.is_some() {
            let alone = layers.cel_errors(&object, None);
            if !alone.is_empty() {
                failures.push(format!(
                    "{name}: the new object alone fails CEL: {}",
                    show_cel(&alone)
                ));
            }
        }
    }

    // The operator: deserialization (from JSON, as the controller's client decodes objects; the
    // YAML reader's error, which carries the path, must name the field), then validate.
    let parsed = guarded("deserialization", name, &mut failures, || {
        (
            serde_json::from_value::<SecureQdrant>(object.clone()),
            serde_yaml_ng::from_str::<SecureQdrant>(&case.doc),
        )
    });
    match (case.operator, parsed) {
        (_, None) => {}
        (Operator::Serde, Some((json, yaml))) => {
            if json.is_ok() {
                failures.push(format!("{name}: deserialization from JSON accepts it"));
            }
            match yaml {
                Ok(_) => failures.push(format!("{name}: deserialization from YAML accepts it")),
                Err(e) if !names(&e.to_string(), field) => failures.push(format!(
                    "{name}: the deserialization error does not name {field}: {e}"
                )),
                Err(_) => {}
            }
        }
        (_, Some((Err(e), _))) => {
            failures.push(format!("{name}: deserialization from JSON refuses it: {e}"))
        }
        (_, Some((_, Err(e)))) => {
            failures.push(format!("{name}: deserialization from YAML refuses it: {e}"))
        }
        (expected, Some((Ok(sq), Ok(_)))) => {
            let result = guarded("validate", name, &mut failures, || {
                validate(&sq, &settings())
            });
            match (expected, result) {
                (_, None) => {}
                (Operator::Validate, Some(Ok(_))) => {
                    failures.push(format!("{name}: validate accepts it"))
                }
                (Operator::Validate, Some(Err(problems)))
                    if !problems.iter().any(|p| names(&p.to_string(), field)) =>
                {
                    failures.push(format!("{name}: no problem names {field}: {problems:?}"));
                }
                (Operator::Validate, Some(Err(_))) => {}
                (_, Some(Err(problems))) => {
                    failures.push(format!("{name}: validate refuses it: {problems:?}"))
                }
                _ => {}
            }
        }
    }

    // render: refuses (with nothing to print) whatever the operator refuses.
    if let Some(rendered) = guarded("render", name, &mut failures, || {
        render(&case.doc, &settings())
    }) {
        match (case.operator, rendered) {
            (Operator::Accepts, Err(e)) => failures.push(format!("{name}: render fails: {e}")),
            (Operator::Accepts, Ok(out)) => {
                if out.is_empty() {
                    failures.push(format!("{name}: render printed nothing for a valid spec"));
                }
            }
            (_, Ok(_)) => failures.push(format!("{name}: render succeeds")),
            // A type error's message from render lacks the field: see
            // `render_type_errors_name_the_field`.
            (Operator::Serde, Err(_)) => {}
            (Operator::Validate, Err(e)) => {
                if !names(&e.to_string(), field) {
                    failures.push(format!("{name}: render's error does not name {field}: {e}"));
                }
            }
        }
    }
    (failures, fired)
}

/// Every `x-kubernetes-validations` rule of a schema.
fn all_rules(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "x-kubernetes-validations" {
                    for rule in v.as_array().into_iter().flatten() {
                        if let Some(text) = rule.get("rule").and_then(Value::as_str) {
                            out.insert(text.to_owned());
                        }
                    }
                } else {
                    all_rules(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| all_rules(v, out)),
        _ => {}
    }
}

fn render_cli(input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secure-qdrant-operator"))
        .args(["render", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the operator binary runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("the input is written");
    child.wait_with_output().expect("the operator binary exits")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_by_the_expected_layers_naming_the_field() {
    let layers = Layers::new();
    let cases = bad_cases();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    let failures: Vec<String> = cases.iter().flat_map(|c| check(&layers, c).0).collect();
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every CEL rule of the CRD refuses at least one case here: none is dead, and a new rule comes
/// with a bad input that shows it firing with its message.
#[test]
fn every_cel_rule_refuses_some_bad_input() {
    let layers = Layers::new();
    let fired: BTreeSet<String> = bad_cases()
        .iter()
        .flat_map(|c| check(&layers, c).1)
        .collect();
    let mut rules = BTreeSet::new();
    all_rules(&layers.cel_schema, &mut rules);
    let never: Vec<_> = rules.difference(&fired).collect();
    assert!(
        never.is_empty(),
        "CEL rules no case in bad_cases() (tests/bad_input.rs) makes fire; add a case for each \
         (and the matching check to src/validate.rs): {never:#?}"
    );
}

#[test]
fn valid_edge_specs_pass_every_layer() {
    let layers = Layers::new();
    let mut failures = Vec::new();
    for (name, doc, old) in valid_cases() {
        let case = Case {
            name,
            field: String::new(),
            doc,
            old,
            schema: false,
            cel: false,
            operator: Operator::Accepts,
        };
        failures.extend(check(&layers, &case).0);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_crd_rule_compiles_in_kube_cel() {
    fn errors(node: &CompiledSchema, path: &str, out: &mut Vec<String>) {
        for e in node.compilation_errors() {
            out.push(format!("{path}: {e}"));
        }
        for (name, child) in &node.properties {
            errors(child, &format!("{path}.{name}"), out);
        }
        if let Some(items) = &node.items {
            errors(items, &format!("{path}[]"), out);
        }
        if let Some(values) = &node.additional_properties {
            errors(values, &format!("{path}{{}}"), out);
        }
    }
    let mut out = Vec::new();
    errors(&compile_schema(&openapi_schema()), "", &mut out);
    assert!(out.is_empty(), "rules kube-cel cannot compile: {out:#?}");
}

/// The CLI prints nothing on standard output and exits 1 for each document the operator refuses.
#[test]
fn cli_render_prints_nothing_for_bad_input() {
    for case in bad_cases()
        .iter()
        .filter(|c| c.operator != Operator::Accepts)
    {
        let out = render_cli(&case.doc);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", case.name);
        assert!(
            out.stdout.is_empty(),
            "{}: printed {:?}",
            case.name,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.starts_with("error: "), "{}: {stderr}", case.name);
        if case.operator == Operator::Validate {
            assert!(names(&stderr, &case.field), "{}: {stderr}", case.name);
        }
    }
}

/// One bad document spoils the whole stream: nothing is rendered, not even the good ones.
#[test]
fn render_is_all_or_nothing() {
    let good = doc("{replicas: 3}");
    assert!(render(&good, &Settings::default()).is_ok());
    let stream = format!(
        "{good}---\n{}",
        doc_named("other", "{config: {service: {api_key: hunter2}}}")
    );
    let err = render(&stream, &Settings::default()).expect_err("the stream has a bad document");
    assert!(
        names(&err.to_string(), "spec.config.service.api_key"),
        "{err}"
    );
    let out = render_cli(&stream);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Where kube-cel, as it is today, differs from the apiserver for this CRD. `apiserver_view`
/// undoes exactly these; when kube-cel changes, this test says so.
#[test]
fn kube_cel_differs_from_the_apiserver_as_documented() {
    let raw = openapi_schema();
    let raw_cel = |spec: &str| {
        Validator::new()
            .validate(&raw, &yaml_to_json(&doc(spec)), None)
            .err()
            .map(|e| e.into_vec())
            .unwrap_or_default()
    };
    // 1. Forbidden config keys with `_` in their name are invisible to raw kube-cel.
    let mut missed = Vec::new();
    for (path, json_type) in FORBIDDEN_USER_CONFIG {
        let leaf = match *json_type {
            "string" => json!("x"),
            "integer" => json!(1),
            "boolean" => json!(false),
            _ => json!({}),
        };
        let config = path
            .split('.')
            .rev()
            .fold(leaf, |inner, part| json!({ part: inner }));
        if raw_cel(&json!({ "config": config }).to_string()).is_empty() {
            missed.push(*path);
        }
    }
    let with_underscore: Vec<&str> = FORBIDDEN_USER_CONFIG
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| p.rsplit('.').next().is_some_and(|leaf| leaf.contains('_')))
        .collect();
    assert_eq!(
        missed, with_underscore,
        "kube-cel's escaping of `_` changed: revisit apiserver_view"
    );
    // 2. A nullable field set to null counts as present, and the quantity rule then errors.
    let errors = raw_cel("{snapshots: {size: null}}");
    assert!(
        errors.len() == 1 && errors[0].kind == ErrorKind::EvaluationError,
        "kube-cel's handling of null changed: revisit apiserver_view: {}",
        show_cel(&errors)
    );
}

/// A type error in `render` names the field (the path of the value that failed to parse).
#[test]
fn render_type_errors_name_the_field() {
    let mut failures = Vec::new();
    for case in bad_cases().iter().filter(|c| c.operator == Operator::Serde) {
        let err = render(&case.doc, &Settings::default()).expect_err("a type error");
        if !names(&err.to_string(), &case.field) {
            failures.push(format!("{}: {err}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
