//! The SecureQdrant bad-input table, shared by tests/bad_input.rs (the schema, kube-cel and the
//! operator's own validation, in process) and tests/real_api_rules.rs (the real API server).
//!
//! Each case says which layer refuses it: `schema` (the CRD's structural schema), `cel` (its
//! `x-kubernetes-validations` rules; both are the API server's), and `operator` (deserialization
//! or `validate`). A case with neither `schema` nor `cel` is stored by the API server and left to
//! the operator.
#![allow(dead_code)]

use secure_qdrant_operator::crd::FORBIDDEN_USER_CONFIG;
use secure_qdrant_operator::crd::secure_qdrant_crd;
use secure_qdrant_operator::settings::Settings;
use serde_json::{Value, json};

/// The default policy, plus the test registry the image-length bounds use
/// (`registry.example.com/...`), so those cases test the bound and not the policy.
pub fn settings() -> Settings {
    let mut settings = Settings::default();
    settings
        .policy
        .image_repositories
        .push("registry.example.com/*".to_owned());
    settings
}

/// What the operator itself does with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// Deserialization into `SecureQdrant` fails.
    Serde,
    /// `validate` returns problems.
    Validate,
    /// Accepted: only a CEL transition rule (which sees the old object) can refuse it.
    Accepts,
}

pub struct Case {
    pub name: String,
    /// The field every refusal must name (dotted, from the object's root).
    pub field: String,
    /// The SecureQdrant as a user writes it.
    pub doc: String,
    /// The stored object, for an update (transition rules).
    pub old: Option<String>,
    /// The structural schema refuses it.
    pub schema: bool,
    /// A CEL rule refuses it.
    pub cel: bool,
    pub operator: Operator,
}

pub const UID: &str = "7d3c1a52-3b1e-4a8e-9a43-6b2f0c1d9e11";

pub fn doc_named(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata:\n  name: {name}\n  \
         namespace: search\n  uid: {UID}\nspec: {spec}\n"
    )
}

pub fn doc(spec: &str) -> String {
    doc_named("vectors", spec)
}

/// A case whose spec (YAML flow style) is refused; the layers are added with the builders below.
pub fn bad(name: &str, field: &str, spec: &str) -> Case {
    bad_doc(name, field, doc(spec))
}

pub fn bad_doc(name: &str, field: &str, doc: String) -> Case {
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
    pub fn schema(mut self) -> Self {
        self.schema = true;
        self
    }
    pub fn cel(mut self) -> Self {
        self.cel = true;
        self
    }
    pub fn serde(mut self) -> Self {
        self.operator = Operator::Serde;
        self
    }
    pub fn validate(mut self) -> Self {
        self.operator = Operator::Validate;
        self
    }
    /// An update of the object stored with this spec.
    pub fn updating(mut self, old_spec: &str) -> Self {
        self.old = Some(doc(old_spec));
        self
    }
    /// An update of the object stored with this spec and this status.
    pub fn updating_with_status(mut self, old_spec: &str, status: &str) -> Self {
        self.old = Some(with_status(doc(old_spec), status));
        self
    }
}

/// `doc` with a status (YAML flow style), as the operator wrote it.
pub fn with_status(doc: String, status: &str) -> String {
    format!("{doc}status: {status}\n")
}

pub fn bad_cases() -> Vec<Case> {
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
pub fn valid_cases() -> Vec<(String, String, Option<String>)> {
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

/// The SecureQdrant CRD's openAPIV3Schema.
pub fn openapi_schema() -> Value {
    let crd = secure_qdrant_crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has an openAPIV3Schema");
    serde_json::to_value(schema).expect("a schema serializes")
}
