//! StatefulSet `<n>`: the Qdrant pods, hardened to the "restricted" Pod Security Standard.
//!
//! One pod template serves every ordinal: the peer URI is built from the pod's own name, and every
//! pod bootstraps from pod 0 (pod 0 bootstrapping from itself starts the cluster). In cluster mode
//! the container runs [`START_SCRIPT`], which bootstraps a pod 0 without Raft state from pod 1
//! once the cluster has formed, so a wiped pod 0 never starts a second cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{COMPONENT_DATABASE, RESTART_HASH, labels, object_meta, pod_selector};
use crate::api_keys::rotation::KEYS_FINGERPRINT_ANNOTATION;
use crate::api_keys::{self, ApiKeys, KeyFacts};
use crate::qdrant::{
    CONFIG_DIR, CONFIG_FILE, GRPC_PORT, HTTP_PORT, INIT_DIR, METRICS_PORT, P2P_PORT,
    SNAPSHOTS_PATH, STORAGE_PATH, TLS_DIR, WORKDIR, env,
};
use crate::tls::TLS_FINGERPRINT_ANNOTATION;
use crate::validate::Instance;

/// UID and GID of the Qdrant process. Above 10000 so it overlaps no user of the node (1000 is
/// the first login user on most distributions); the image's files are world-readable and the
/// root filesystem is read-only, so the image's own UID (1000) buys nothing. Volumes are made
/// writable through `fsGroup`.
pub const RUN_AS_UID: i64 = 10001;
/// GID of the Qdrant process and owner group of its volumes.
pub const RUN_AS_GID: i64 = 10001;
/// Name of the Qdrant container.
pub const CONTAINER: &str = "qdrant";

/// Env var (cluster mode): `"true"` once the cluster has formed, from the optional
/// [`super::config_map::CLUSTER_FORMED_KEY`] of `<n>-config`. Read at every container start;
/// its value is not in the pod template, so recording the formation rolls nothing.
pub const ENV_CLUSTER_FORMED: &str = "SQ_CLUSTER_FORMED";
/// Env var (cluster mode): the peer a pod 0 without Raft state joins once the cluster has formed
/// (pod 1's URI).
pub const ENV_REJOIN_BOOTSTRAP: &str = "SQ_REJOIN_BOOTSTRAP";

/// How a cluster-mode pod starts, run by `/bin/bash -c` in the image's working directory. Qdrant
/// honours `--bootstrap` only when its storage holds no Raft state (`raft_state.json`, or
/// `raft_state` from before Qdrant stored it as JSON). Every pod bootstraps from pod 0 (`$QDRANT_BOOTSTRAP`),
/// pod 0 from itself: that starts the cluster. Once the cluster has formed, a pod 0 without Raft
/// state (its volume was wiped) would start a NEW one-peer cluster next to the old one, so it
/// bootstraps from pod 1 instead and rejoins the old one. Then runs the image's entrypoint with
/// the container's arguments.
pub const START_SCRIPT: &str = r#"set -eu
bootstrap="$QDRANT_BOOTSTRAP"
if [ ! -e storage/raft_state.json ] && [ ! -e storage/raft_state ] \
  && [ "${POD_NAME##*-}" = 0 ] && [ "${SQ_CLUSTER_FORMED:-}" = true ]; then
  bootstrap="$SQ_REJOIN_BOOTSTRAP"
  echo "secure-qdrant-operator: no Raft state in storage/ and the cluster has formed: joining it through $bootstrap instead of starting a new cluster" >&2
fi
export QDRANT_BOOTSTRAP="$bootstrap"
exec ./entrypoint.sh --uri "$QDRANT_URI" --bootstrap "$bootstrap" "$@"
"#;
/// `$0` of [`START_SCRIPT`] (shown in `ps` and in bash's error messages).
const START_SCRIPT_NAME: &str = "secure-qdrant-start";

const VOLUME_STORAGE: &str = "storage";
const VOLUME_SNAPSHOTS: &str = "snapshots";
const VOLUME_CONFIG: &str = "config";
const VOLUME_INIT: &str = "init";
const VOLUME_TLS: &str = "tls";

/// `tls_fingerprint`: what the pods run with (see `crate::tls::TLS_FINGERPRINT_ANNOTATION`).
pub fn build(
    inst: &Instance,
    keys: &ApiKeys,
    restart_hash: &str,
    tls_fingerprint: Option<&str>,
) -> StatefulSet {
    build_from_facts(inst, &keys.facts(), restart_hash, tls_fingerprint)
}

/// [`build`] from the keys' [`KeyFacts`] (what the pod template needs of them: no values).
pub fn build_from_facts(
    inst: &Instance,
    keys: &KeyFacts,
    restart_hash: &str,
    tls_fingerprint: Option<&str>,
) -> StatefulSet {
    let mut template_labels = labels(inst, COMPONENT_DATABASE);
    template_labels.extend(inst.pod.labels.clone());
    let mut annotations = inst.pod.annotations.clone();
    annotations.insert(RESTART_HASH.to_owned(), restart_hash.to_owned());
    annotations.insert(
        KEYS_FINGERPRINT_ANNOTATION.to_owned(),
        keys.fingerprint.clone(),
    );
    if let Some(fp) = tls_fingerprint {
        annotations.insert(TLS_FINGERPRINT_ANNOTATION.to_owned(), fp.to_owned());
    }
    annotations.insert(
        "kubectl.kubernetes.io/default-container".to_owned(),
        CONTAINER.to_owned(),
    );

    let retention = if inst.storage.retain_on_delete {
        "Retain"
    } else {
        "Delete"
    };

    StatefulSet {
        metadata: object_meta(inst, &inst.name, COMPONENT_DATABASE),
        spec: Some(StatefulSetSpec {
            replicas: Some(inst.replicas),
            selector: pod_selector(inst),
            service_name: Some(inst.headless_service_name()),
            // Peers must start together to form a cluster: OrderedReady would wait for pod 0 to be
            // ready, which it is not until the others have joined.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(inst, keys)),
            },
            volume_claim_templates: Some(claim_templates(inst)),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn pod_spec(inst: &Instance, keys: &KeyFacts) -> PodSpec {
    let snapshots = inst.snapshots_size.is_none().then(|| Volume {
        name: VOLUME_SNAPSHOTS.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            // Bounded: snapshots of the data are at most about as large as the data.
            size_limit: Some(inst.storage.size.clone()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    let volumes = [
        Some(Volume {
            name: VOLUME_CONFIG.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: inst.config_map_name(),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }),
        Some(Volume {
            name: VOLUME_INIT.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("1Mi".to_owned())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        }),
        snapshots,
        inst.tls_secret_name().map(|secret| Volume {
            name: VOLUME_TLS.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                // Owner and group only: the process reads it through fsGroup.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }),
    ]
    .into_iter()
    .flatten()
    .collect();

    PodSpec {
        service_account_name: Some(inst.name.clone()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(60),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_UID),
            run_as_group: Some(RUN_AS_GID),
            fs_group: Some(RUN_AS_GID),
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        image_pull_secrets: (!inst.image_pull_secrets.is_empty())
            .then(|| inst.image_pull_secrets.clone()),
        node_selector: (!inst.pod.node_selector.is_empty()).then(|| inst.pod.node_selector.clone()),
        tolerations: (!inst.pod.tolerations.is_empty()).then(|| inst.pod.tolerations.clone()),
        affinity: Some(
            inst.pod
                .affinity
                .clone()
                .unwrap_or_else(|| spread_over_nodes(inst)),
        ),
        topology_spread_constraints: (!inst.pod.topology_spread_constraints.is_empty())
            .then(|| inst.pod.topology_spread_constraints.clone()),
        priority_class_name: inst.pod.priority_class_name.clone(),
        containers: vec![container(inst, keys)],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// Default affinity: prefer one peer per node, so a node failure takes out one replica.
fn spread_over_nodes(inst: &Instance) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(pod_selector(inst)),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The peer URI of a pod, as other peers reach it (`$(POD_NAME)` is expanded by the kubelet).
pub fn peer_uri(inst: &Instance, pod: &str) -> String {
    format!(
        "{}://{pod}.{}.{}.svc:{P2P_PORT}",
        scheme(inst),
        inst.headless_service_name(),
        inst.namespace
    )
}

fn scheme(inst: &Instance) -> &'static str {
    inst.scheme()
}

fn env(inst: &Instance, keys: &KeyFacts) -> Vec<EnvVar> {
    // Qdrant's keys by the Secret key they come from (they trade places during a rotation).
    let alt = keys.alt;
    let api_key_ref = match inst.generates_api_key() {
        true => (inst.api_key_secret_name(), keys.api_key_slot.to_owned()),
        false => inst.api_key_ref(),
    };
    let mut env = vec![
        EnvVar {
            name: "POD_NAME".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        // Pinned: "development" would bind to 127.0.0.1 and turn on every feature flag.
        plain_env("RUN_MODE", "production"),
        plain_env(
            env::INIT_FILE_PATH,
            format!("{INIT_DIR}/.qdrant-initialized"),
        ),
        secret_env(env::API_KEY, &api_key_ref.0, &api_key_ref.1),
    ];
    if let (true, Some((slot, _))) = (inst.generates_api_key(), alt) {
        // During a key rotation the other key works too (requests and JWT signatures).
        env.push(secret_env(
            env::ALT_API_KEY,
            &inst.api_key_secret_name(),
            slot,
        ));
    }
    if inst.auth.read_only_api_key {
        env.push(secret_env(
            env::READ_ONLY_API_KEY,
            &inst.api_key_secret_name(),
            api_keys::READ_ONLY_API_KEY,
        ));
    }
    if inst.cluster_mode() {
        env.push(plain_env(env::URI, peer_uri(inst, "$(POD_NAME)")));
        env.push(plain_env(
            env::BOOTSTRAP,
            peer_uri(inst, &format!("{}-0", inst.name)),
        ));
        env.push(plain_env(
            ENV_REJOIN_BOOTSTRAP,
            peer_uri(inst, &format!("{}-1", inst.name)),
        ));
        env.push(EnvVar {
            name: ENV_CLUSTER_FORMED.to_owned(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: inst.config_map_name(),
                    key: super::config_map::CLUSTER_FORMED_KEY.to_owned(),
                    optional: Some(true),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env
}

/// The container's command, under bash: the key guard, then the image's entrypoint for a single
/// node, [`START_SCRIPT`] (which
/// ends in the entrypoint) in cluster mode.
fn command(inst: &Instance) -> Vec<String> {
    // Every pod first runs the key guard (`crate::qdrant::KEY_GUARD`): an empty or unsendable
    // key never starts Qdrant, whatever the Secret holds when the pod starts.
    let body = match inst.cluster_mode() {
        true => START_SCRIPT.to_owned(),
        false => format!("exec {} \"$@\"\n", crate::qdrant::ENTRYPOINT),
    };
    vec![
        "/bin/bash".to_owned(),
        "-c".to_owned(),
        format!("{}{body}", crate::qdrant::KEY_GUARD),
        START_SCRIPT_NAME.to_owned(),
    ]
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// The readiness check with client certificates (`spec.tls.clientCertificates`), run by
/// `/bin/bash -c` with the REST port as `$1` and the TLS directory as `$2`. The kubelet has no
/// client certificate, so it cannot ask `/readyz` itself; this asks it over `openssl s_client`
/// (in the image: Debian's `ca-certificates` depends on `openssl`; the unprivileged image has no
/// curl), presenting the pod's own serving certificate, which the operator issues with the
/// clientAuth usage (p2p needs it too). Ready only on `HTTP/1.x 200`: Qdrant answers 503 until
/// the peer has joined consensus and its shards have caught up. `/readyz` needs no API key, so
/// none is sent. An image without `openssl` falls back to what a TCP probe checks (the port
/// accepts connections) and says so on stderr.
pub const READINESS_SCRIPT: &str = r#"if ! command -v openssl >/dev/null 2>&1; then
  echo "no openssl in the image: checking only that port $1 accepts connections" >&2
  (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  exit
fi
printf 'GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' \
  | openssl s_client -quiet -connect "127.0.0.1:$1" -cert "$2/tls.crt" -key "$2/tls.key" 2>/dev/null \
  | head -n 1 | grep -q '^HTTP/1\.[01] 200'
"#;
/// `$0` of [`READINESS_SCRIPT`].
const READINESS_SCRIPT_NAME: &str = "secure-qdrant-readyz";

/// The readiness probe: the kubelet's HTTP(S) GET of `/readyz`, or with client certificates
/// (which the kubelet cannot present) [`READINESS_SCRIPT`] run in the container.
fn readiness_probe(inst: &Instance) -> Probe {
    let client_certs = inst.tls.as_ref().is_some_and(|t| t.client_certificates);
    if !client_certs {
        return probe(inst, "/readyz", 5, 3);
    }
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "/bin/bash".to_owned(),
                "-c".to_owned(),
                READINESS_SCRIPT.to_owned(),
                READINESS_SCRIPT_NAME.to_owned(),
                HTTP_PORT.to_string(),
                TLS_DIR.to_owned(),
            ]),
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// A probe of Qdrant's health endpoints. With client certificates required on REST, the kubelet
/// (which has none) cannot complete the handshake, so the probe only checks the port is open
/// (liveness and startup: `/livez` is always 200 once the port is open; readiness uses
/// [`readiness_probe`]).
fn probe(inst: &Instance, path: &str, period: i32, failures: i32) -> Probe {
    let port = IntOrString::String("http".to_owned());
    let client_certs = inst.tls.as_ref().is_some_and(|t| t.client_certificates);
    Probe {
        http_get: (!client_certs).then(|| HTTPGetAction {
            path: Some(path.to_owned()),
            port: port.clone(),
            scheme: Some(inst.scheme().to_uppercase()),
            ..HTTPGetAction::default()
        }),
        tcp_socket: client_certs.then(|| TCPSocketAction {
            port,
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container(inst: &Instance, keys: &KeyFacts) -> Container {
    let mut ports = vec![
        container_port("http", HTTP_PORT),
        container_port("grpc", GRPC_PORT),
    ];
    if inst.cluster_mode() {
        ports.push(container_port("p2p", P2P_PORT));
    }
    if inst.metrics_port_enabled() {
        ports.push(container_port("metrics", METRICS_PORT));
    }
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    Container {
        name: CONTAINER.to_owned(),
        image: Some(inst.image.clone()),
        image_pull_policy: Some(inst.image_pull_policy.as_str().to_owned()),
        command: Some(command(inst)),
        args: Some(vec![
            "--config-path".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        working_dir: Some(WORKDIR.to_owned()),
        env: Some(env(inst, keys)),
        ports: Some(ports),
        resources: Some(inst.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_UID),
            run_as_group: Some(RUN_AS_GID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        // Loading large collections can take minutes: the startup probe holds liveness off.
        startup_probe: Some(probe(inst, "/livez", 10, 90)),
        liveness_probe: Some(probe(inst, "/livez", 10, 6)),
        readiness_probe: Some(readiness_probe(inst)),
        volume_mounts: Some(
            [
                mount(VOLUME_STORAGE, STORAGE_PATH, false),
                mount(VOLUME_SNAPSHOTS, SNAPSHOTS_PATH, false),
                mount(VOLUME_INIT, INIT_DIR, false),
                mount(VOLUME_CONFIG, CONFIG_DIR, true),
            ]
            .into_iter()
            .chain(inst.tls.is_some().then(|| mount(VOLUME_TLS, TLS_DIR, true)))
            .collect(),
        ),
        ..Container::default()
    }
}

fn claim(
    inst: &Instance,
    name: &str,
    size: &Quantity,
    class: Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(inst, COMPONENT_DATABASE)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: class,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn claim_templates(inst: &Instance) -> Vec<PersistentVolumeClaim> {
    let mut claims = vec![claim(
        inst,
        VOLUME_STORAGE,
        &inst.storage.size,
        inst.storage.class.clone(),
    )];
    if let Some(size) = &inst.snapshots_size {
        claims.push(claim(
            inst,
            VOLUME_SNAPSHOTS,
            size,
            inst.storage.class.clone(),
        ));
    }
    claims
}
