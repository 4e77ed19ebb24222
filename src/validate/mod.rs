//! Validation: turns a `SecureQdrant` into an [`Instance`] with every default resolved, or into a
//! list of problems. Pure: no I/O, no clock. This is the last step that reads the raw custom
//! resource's spec and annotations (see [`Instance`] for what is still read of it afterwards).

mod config;
mod image;
mod instance;
mod names;
mod network;
mod pod;
mod problems;
mod quantity;
mod resources;
mod tls;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{Resource, ResourceExt};

use self::config::check_user_config;
use self::image::check_image;
use self::names::{check_secret_refs, is_dns1035_label};
use self::network::{check_peers, check_ports};
use self::pod::check_pod;
use self::problems::invalid;
use self::quantity::{duration, positive_quantity};
use self::resources::check_resources;
use self::tls::check_tls;
use crate::api_keys::ROTATE_API_KEY_ANNOTATION;
use crate::crd::{
    AuthSpec, MAX_IMAGE_LEN, MAX_LOG_FILES, MAX_NAME_LEN, MAX_QUANTITY_LEN, MAX_REPLICAS,
    MAX_STORAGE_CLASS_LEN, NetworkSpec, PEERS_REMOVED_ANNOTATION, PodSpecOverrides, SecureQdrant,
    SecureQdrantSpec,
};
use crate::settings::Settings;
use crate::tls::ROTATE_CA_ANNOTATION;

pub use self::image::{ImageRef, image_allowed, parse_image};
pub use self::instance::{Instance, Storage, TlsSettings, TlsSource};
pub use self::names::name_covers_cluster_names;
pub use self::network::{LINK_LOCAL_RANGES, network_warnings};
pub use self::problems::{Invalid, describe};
pub use self::quantity::parse_quantity;
pub use self::resources::resources_or_default;
pub use self::tls::check_extra_dns_name;

/// The shortest `spec.auth.keyRotationGracePeriod`: about how long kubelets take to refresh a
/// mounted Secret (the CRD's CEL rule says the same).
const MIN_KEY_ROTATION_GRACE: Duration = Duration::from_secs(60);

/// Validates a SecureQdrant. Checks everything the CRD schema checks (an old CRD, a tool that
/// skips admission, or `render` must not get past) plus what the schema cannot see.
pub fn validate(sq: &SecureQdrant, settings: &Settings) -> Result<Instance, Vec<Invalid>> {
    let mut problems = Vec::new();
    let spec = &sq.spec;
    let name = sq.name_any();
    check_name(&name, settings, &mut problems);
    check_secret_refs(spec, &name, &mut problems);
    let namespace = sq.namespace().unwrap_or_default();
    if namespace.is_empty() {
        problems.push(invalid("metadata.namespace", "is required"));
    }
    check_bounds(spec, &mut problems);
    let (storage_size, snapshots_size) = check_volumes(spec, &mut problems);
    if !(1..=MAX_LOG_FILES).contains(&spec.audit.max_log_files) {
        problems.push(invalid(
            "spec.audit.maxLogFiles",
            format!(
                "must be between 1 and {MAX_LOG_FILES}, got {}",
                spec.audit.max_log_files
            ),
        ));
    }
    check_user_config(&spec.config, &mut problems);
    let tls = check_tls(&spec.tls, &name, &namespace, settings, &mut problems);
    let key_rotation_grace = check_auth(&spec.auth, &mut problems);
    check_operator_metadata(&spec.pod, &mut problems);
    if let Some(resources) = &spec.resources {
        check_resources(resources, &mut problems);
    }
    check_image(&spec.image, &settings.policy, &mut problems);
    check_pod(&spec.pod, &settings.policy, &mut problems);
    check_network(&spec.network, settings, &mut problems);
    let owner = sq.controller_owner_ref(&());
    if owner.is_none() {
        problems.push(invalid(
            "metadata.uid",
            "is missing (not read from the API)",
        ));
    }
    match (problems.is_empty(), owner, storage_size, key_rotation_grace) {
        (true, Some(owner), Some(size), Some(key_rotation_grace)) => Ok(Instance {
            name,
            namespace,
            owner,
            generation: sq.meta().generation,
            replicas: spec.replicas,
            image: spec.image.clone(),
            image_pull_policy: spec.image_pull_policy,
            image_pull_secrets: spec.image_pull_secrets.clone(),
            resources: resources_or_default(spec.resources.as_ref()),
            storage: Storage {
                size,
                class: spec.storage.storage_class_name.clone(),
                retain_on_delete: spec.storage.retain_on_delete,
            },
            snapshots_size,
            auth: spec.auth.clone(),
            key_rotation_grace,
            tls,
            network: spec.network.clone(),
            audit: spec.audit.clone(),
            user_config: spec.config.clone().into_iter().collect(),
            pod: spec.pod.clone(),
            cluster_domain: settings.cluster_domain.clone(),
            peers_removed: annotation(sq, PEERS_REMOVED_ANNOTATION),
            api_key_rotation_request: annotation(sq, ROTATE_API_KEY_ANNOTATION),
            ca_rotation_request: annotation(sq, ROTATE_CA_ANNOTATION),
            cluster_formed: false,
        }),
        _ => Err(problems),
    }
}

/// `metadata.name`: a DNS-1035 label short enough for the StatefulSet's labels, and not one whose
/// CA would cover the cluster's Service names.
fn check_name(name: &str, settings: &Settings, problems: &mut Vec<Invalid>) {
    if name.is_empty() {
        problems.push(invalid("metadata.name", "is required"));
    } else if name.len() > MAX_NAME_LEN || !is_dns1035_label(name) {
        problems.push(invalid(
            "metadata.name",
            format!(
                "must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) \
                 of at most {MAX_NAME_LEN} characters"
            ),
        ));
    }
    if let Some(why) = name_covers_cluster_names(name, &settings.cluster_domain) {
        problems.push(invalid("metadata.name", why));
    }
}

/// The replica range, a usable image reference, and the CRD schema's maxLength bounds (counted
/// in characters, as the apiserver counts them).
fn check_bounds(spec: &SecureQdrantSpec, problems: &mut Vec<Invalid>) {
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        problems.push(invalid(
            "spec.replicas",
            format!(
                "must be between 1 and {MAX_REPLICAS}, got {}",
                spec.replicas
            ),
        ));
    }
    if spec.image.is_empty() || spec.image.chars().any(char::is_whitespace) {
        problems.push(invalid(
            "spec.image",
            "must be a non-empty image reference without spaces",
        ));
    }
    for (field, value, max) in [
        ("spec.image", Some(&spec.image), MAX_IMAGE_LEN),
        (
            "spec.storage.size",
            Some(&spec.storage.size),
            MAX_QUANTITY_LEN,
        ),
        (
            "spec.storage.storageClassName",
            spec.storage.storage_class_name.as_ref(),
            MAX_STORAGE_CLASS_LEN,
        ),
        (
            "spec.snapshots.size",
            spec.snapshots.size.as_ref(),
            MAX_QUANTITY_LEN,
        ),
    ] {
        if let Some(value) = value
            && value.chars().count() > max
        {
            problems.push(invalid(field, format!("may be at most {max} characters")));
        }
    }
}

/// The data volume's size and class, and the snapshots volume's size: the sizes, when valid.
fn check_volumes(
    spec: &SecureQdrantSpec,
    problems: &mut Vec<Invalid>,
) -> (Option<Quantity>, Option<Quantity>) {
    let storage_size = positive_quantity("spec.storage.size", &spec.storage.size, problems);
    if let Some(class) = &spec.storage.storage_class_name
        && class.is_empty()
    {
        problems.push(invalid(
            "spec.storage.storageClassName",
            "may not be empty (omit it for the default class)",
        ));
    }
    let snapshots_size = spec
        .snapshots
        .size
        .as_deref()
        .and_then(|s| positive_quantity("spec.snapshots.size", s, problems));
    (storage_size, snapshots_size)
}

/// `spec.auth`: the key rotation's grace period (returned when valid) and a complete
/// `apiKeySecretRef`.
fn check_auth(auth: &AuthSpec, problems: &mut Vec<Invalid>) -> Option<Duration> {
    let grace = duration(
        "spec.auth.keyRotationGracePeriod",
        &auth.key_rotation_grace_period,
        problems,
    )
    .filter(|grace| {
        let enough = *grace >= MIN_KEY_ROTATION_GRACE;
        if !enough {
            problems.push(invalid(
                "spec.auth.keyRotationGracePeriod",
                format!(
                    "must be at least 1m, got {:?}: kubelets take up to about a minute to \
                     refresh a mounted Secret, so a shorter grace period removes the old key \
                     before every consumer can have the new one",
                    auth.key_rotation_grace_period
                ),
            ));
        }
        enough
    });
    if let Some(r) = &auth.api_key_secret_ref
        && (r.name.is_empty() || r.key.is_empty())
    {
        problems.push(invalid(
            "spec.auth.apiKeySecretRef",
            "needs both name and key",
        ));
    }
    grace
}

/// Pod labels and annotations under the prefixes the operator sets itself.
fn check_operator_metadata(pod: &PodSpecOverrides, problems: &mut Vec<Invalid>) {
    for key in pod.labels.keys() {
        if key.starts_with("app.kubernetes.io/") {
            problems.push(invalid(
                format!("spec.pod.labels[{key}]"),
                "app.kubernetes.io/* labels are set by the operator",
            ));
        }
    }
    for key in pod.annotations.keys() {
        if key.starts_with("secureqdrant.dev/") {
            problems.push(invalid(
                format!("spec.pod.annotations[{key}]"),
                "secureqdrant.dev/* annotations are set by the operator",
            ));
        }
    }
}

/// `spec.network`: the peers of clients, scrapers and extra egress (egress within the ranges
/// the policy allows), and the egress ports.
fn check_network(network: &NetworkSpec, settings: &Settings, problems: &mut Vec<Invalid>) {
    check_peers("spec.network.clients", &network.clients, None, problems);
    check_peers("spec.network.metrics", &network.metrics, None, problems);
    for (i, rule) in network.extra_egress.iter().enumerate() {
        let field = format!("spec.network.extraEgress[{i}]");
        check_peers(
            &format!("{field}.to"),
            rule.to.as_deref().unwrap_or_default(),
            Some(&settings.policy.egress_cidrs),
            problems,
        );
        check_ports(
            &format!("{field}.ports"),
            rule.ports.as_deref().unwrap_or_default(),
            problems,
        );
    }
}

/// The value of annotation `key` on `sq`, if set.
fn annotation(sq: &SecureQdrant, key: &str) -> Option<String> {
    sq.annotations().get(key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ALLOWED_USER_CONFIG;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("0"), Some(0.0));
        for bad in ["", "Gi", "ten", "10 Gi", "10GB", "--1", "1Gi "] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    fn sq(spec: &str) -> SecureQdrant {
        let mut sq: SecureQdrant = serde_yaml_ng::from_str(&format!(
            "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {{name: v, namespace: n, uid: u}}\nspec: {spec}\n"
        ))
        .unwrap();
        sq.metadata.generation = Some(1);
        sq
    }

    fn fields(spec: &str) -> Vec<String> {
        match validate(&sq(spec), &Settings::default()) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.field).collect(),
        }
    }

    #[test]
    fn network_peers_the_api_server_would_reject_are_reported() {
        assert_eq!(
            fields("{network: {clients: [{}]}}"),
            ["spec.network.clients[0]"]
        );
        assert_eq!(
            fields("{network: {metrics: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}}"),
            ["spec.network.metrics[0]"]
        );
        assert_eq!(
            fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/33}}]}}"),
            ["spec.network.clients[0].ipBlock.cidr"]
        );
        assert_eq!(
            fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}}"),
            ["spec.network.clients[0].ipBlock.except[0]"]
        );
        assert_eq!(
            fields(
                "{network: {clients: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}}"
            ),
            ["spec.network.clients[0].podSelector.matchExpressions[0]"]
        );
        assert_eq!(
            fields(
                "{network: {extraEgress: [{ports: [{port: 70000}, {port: 80, endPort: 79}, {protocol: ICMP}]}]}}"
            ),
            [
                "spec.network.extraEgress[0].ports[0].port",
                "spec.network.extraEgress[0].ports[1].endPort",
                "spec.network.extraEgress[0].ports[2].protocol"
            ]
        );
        // Valid peers pass.
        assert!(fields("{network: {clients: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {namespaceSelector: {matchExpressions: [{key: a, operator: Exists}]}}], extraEgress: [{to: [{ipBlock: {cidr: 'fd12::/16'}}], ports: [{port: 443, endPort: 444}]}]}}").is_empty());
    }

    fn messages(spec: &str) -> Vec<String> {
        match validate(&sq(spec), &Settings::default()) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn config_keys_that_reach_outside_the_pod_are_refused_by_name() {
        for (spec, field) in [
            (
                "{config: {service: {static_content_dir: /qdrant/tls, enable_static_content: true}}}",
                "spec.config.service.enable_static_content",
            ),
            (
                "{config: {service: {static_content_dir: /qdrant/tls}}}",
                "spec.config.service.static_content_dir",
            ),
            (
                "{config: {storage: {snapshots_config: {snapshots_storage: s3, s3_config: {bucket: b, endpoint_url: 'https://evil.example'}}}}}",
                "spec.config.storage.snapshots_config",
            ),
            (
                "{config: {inference: {address: 'http://169.254.169.254/'}}}",
                "spec.config.inference",
            ),
            (
                "{config: {feature_flags: {all: true}}}",
                "spec.config.feature_flags",
            ),
            (
                "{config: {service: {max_request_size_mb: 100000}}}",
                "spec.config.service.max_request_size_mb",
            ),
            (
                "{config: {storage: {performance: {io_uring: true}}}}",
                "spec.config.storage.performance.io_uring",
            ),
            (
                "{config: {logger: {on_disk: {enabled: true, log_file: /qdrant/storage/x}}}}",
                "spec.config.logger",
            ),
        ] {
            let got = messages(spec);
            assert!(
                got.iter()
                    .any(|m| m.starts_with(&format!("{field}: ")) && m.contains("not allowed")),
                "{spec}: {got:?}"
            );
        }
    }

    #[test]
    fn config_cluster_peer_id_is_refused_because_every_pod_shares_the_config() {
        let got = messages("{replicas: 3, config: {cluster: {peer_id: 1}}}");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("spec.config.cluster.peer_id: `cluster.peer_id` is not allowed"),
            "{got:?}"
        );
        // Not even nested under an allowed section's sibling, nor as null.
        assert!(!messages("{config: {cluster: {peer_id: null}}}").is_empty());
    }

    #[test]
    fn config_is_an_allow_list() {
        // Keys Qdrant reads that are not on the list, and keys nobody reads.
        for (spec, field, says) in [
            (
                "{config: {service: {hardware_reporting: true}}}",
                "spec.config.service.hardware_reporting",
                "under `service`: max_workers",
            ),
            (
                "{config: {storage: {node_type: Listener}}}",
                "spec.config.storage.node_type",
                "under `storage`: on_disk_payload",
            ),
            (
                "{config: {storage: {performance: {async_scorer: true}}}}",
                "spec.config.storage.performance.async_scorer",
                "not allowed",
            ),
            (
                "{config: {loglevel: DEBUG}}",
                "spec.config.loglevel",
                "at the top: log_level, service, cluster, storage",
            ),
            (
                "{config: {storage: {hnsw_index: {m: -1}}}}",
                "spec.config.storage.hnsw_index.m",
                "type uint",
            ),
            (
                "{config: {storage: {optimizers: 5}}}",
                "spec.config.storage.optimizers",
                "is a section",
            ),
            (
                "{config: {storage: {hnsw_index: {m: null}}}}",
                "spec.config.storage.hnsw_index.m",
                "type uint",
            ),
        ] {
            let got = messages(spec);
            assert!(
                got.iter()
                    .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(says)),
                "{spec}: {got:?}"
            );
        }
        // Every allowed key with a value of its type passes.
        let mut config = serde_json::json!({});
        for (path, ty) in ALLOWED_USER_CONFIG {
            let leaf = match ty.trim_end_matches('?') {
                "uint" => serde_json::json!(4),
                "int" => serde_json::json!(-1),
                "number" => serde_json::json!(0.25),
                "bool" => serde_json::json!(true),
                _ => serde_json::json!("INFO"),
            };
            let mut node = &mut config;
            for part in path.split('.') {
                node = &mut node[part];
            }
            *node = leaf;
        }
        assert_eq!(
            messages(&format!("{{config: {config}}}")),
            Vec::<String>::new()
        );
        assert!(
            messages("{config: {storage: {max_collections: null, hnsw_index: {on_disk: null}}}}")
                .is_empty()
        );
    }

    fn messages_with(spec: &str, settings: &Settings) -> Vec<String> {
        match validate(&sq(spec), settings) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    fn assert_refused(spec: &str, field: &str, says: &str) {
        let got = messages(spec);
        assert!(
            got.iter()
                .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(says)),
            "{spec}: expected {field} ({says}), got {got:?}"
        );
    }

    /// Everything beyond the cluster allowed by the admin (for the link-local cases alone).
    fn open_egress() -> Settings {
        let mut s = Settings::default();
        s.policy.egress_cidrs = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        s
    }

    #[test]
    fn ip_blocks_overlapping_link_local_or_metadata_are_refused_unless_excepted() {
        for (cidr, range) in [
            ("0.0.0.0/0", "169.254.0.0/16"),
            ("169.254.169.254/32", "169.254.0.0/16"),
            ("169.254.0.0/15", "169.254.0.0/16"),
            ("168.0.0.0/6", "169.254.0.0/16"),
            ("::/0", "fe80::/10"),
            ("::/0", "fd00:ec2::254/128"),
            ("fd00:ec2::254/128", "fd00:ec2::254/128"),
            ("fd00::/8", "fd00:ec2::254/128"),
            ("::ffff:0:0/96", "::ffff:169.254.0.0/112"),
        ] {
            for list in ["clients", "metrics"] {
                let spec = format!("{{network: {{{list}: [{{ipBlock: {{cidr: '{cidr}'}}}}]}}}}");
                let got = messages_with(&spec, &open_egress());
                let field = format!("spec.network.{list}[0].ipBlock.cidr");
                assert!(
                    got.iter()
                        .any(|m| m.starts_with(&field) && m.contains(range)),
                    "{spec}: {got:?}"
                );
            }
            let spec = format!(
                "{{network: {{extraEgress: [{{to: [{{ipBlock: {{cidr: '{cidr}'}}}}]}}]}}}}"
            );
            let got = messages_with(&spec, &open_egress());
            assert!(
                got.iter().any(
                    |m| m.starts_with("spec.network.extraEgress[0].to[0].ipBlock.cidr")
                        && m.contains(range)
                ),
                "{spec}: {got:?}"
            );
        }
        // An except that covers the range (or a wider one) makes it acceptable.
        for spec in [
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}}]}]}}",
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.0.0.0/8]}}]}]}}",
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: '::/0', except: ['fe80::/10', 'fd00::/8', '::ffff:0:0/96']}}]}]}}",
            "{network: {clients: [{ipBlock: {cidr: 169.254.0.0/15, except: [169.254.0.0/16]}}]}}",
        ] {
            assert_eq!(
                messages_with(spec, &open_egress()),
                Vec::<String>::new(),
                "{spec}"
            );
        }
        // An except that covers only part of it does not.
        assert!(!messages_with(
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]}]}}",
            &open_egress()
        )
        .is_empty());
    }

    #[test]
    fn egress_beyond_the_admins_ranges_is_refused_by_default() {
        // 0.0.0.0/0 minus the metadata range is still the internet: the default policy (private
        // ranges) refuses it, and an administrator can allow it.
        let spec = "{network: {extraEgress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}}]}]}}";
        assert_refused(
            spec,
            "spec.network.extraEgress[0].to[0].ipBlock.cidr",
            "policy.egressCidrs",
        );
        assert!(messages_with(spec, &open_egress()).is_empty());
        assert_refused(
            "{network: {extraEgress: [{to: [{ipBlock: {cidr: 8.8.8.8/32}}]}]}}",
            "spec.network.extraEgress[0].to[0].ipBlock.cidr",
            "outside the ranges",
        );
        assert!(
            messages("{network: {extraEgress: [{to: [{ipBlock: {cidr: 10.20.0.0/16}}]}]}}")
                .is_empty()
        );
    }

    #[test]
    fn openings_are_reported_as_warnings() {
        let inst = validate(
            &sq("{network: {clients: [{namespaceSelector: {}}], metrics: [{namespaceSelector: {}, podSelector: {matchLabels: {app: prometheus}}}], extraEgress: [{to: [{namespaceSelector: {}}]}]}}"),
            &Settings::default(),
        )
        .expect("allowed, with warnings");
        let types: Vec<&str> = network_warnings(&inst).iter().map(|(t, _)| *t).collect();
        assert_eq!(types, ["EgressBeyondPeers", "IngressFromAllNamespaces"]);
        let (_, message) = &network_warnings(&inst)[1];
        assert!(
            message.contains("spec.network.clients and spec.network.metrics"),
            "{message}"
        );
        let quiet = validate(&sq("{}"), &Settings::default()).unwrap();
        assert!(network_warnings(&quiet).is_empty());
    }

    #[test]
    fn image_references_are_normalised() {
        let repo = |image: &str| parse_image(image).map(|r| r.repository);
        assert_eq!(
            repo("qdrant/qdrant:v1.19.0"),
            Some("docker.io/qdrant/qdrant".into())
        );
        assert_eq!(
            repo("index.docker.io/qdrant/qdrant"),
            Some("docker.io/qdrant/qdrant".into())
        );
        assert_eq!(repo("busybox"), Some("docker.io/library/busybox".into()));
        assert_eq!(
            repo("localhost:5000/qdrant/qdrant:v1"),
            Some("localhost:5000/qdrant/qdrant".into())
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let full = parse_image(&format!(
            "docker.io/qdrant/qdrant:v1.19.0-unprivileged@{digest}"
        ))
        .unwrap();
        assert_eq!(
            full,
            ImageRef {
                repository: "docker.io/qdrant/qdrant".into(),
                tag: Some("v1.19.0-unprivileged".into()),
                digest: Some(digest.clone()),
            }
        );
        for bad in [
            "Qdrant/Qdrant",
            "qdrant/qdrant@sha256:abc",
            "qdrant/qdrant:",
            "qdrant//qdrant",
            "qdrant/qdrant:-x",
        ] {
            assert_eq!(parse_image(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_allowed_image_repositories_run() {
        for image in [
            "qdrant/qdrant:v1.19.0-unprivileged",
            "docker.io/qdrant/qdrant:v1.18.3-unprivileged",
            "registry-1.docker.io/qdrant/qdrant",
        ] {
            assert!(
                messages(&format!("{{image: '{image}'}}")).is_empty(),
                "{image}"
            );
        }
        for image in [
            "qdrant/qdrant-evil:v1.19.0",
            "evil.example.com/qdrant/qdrant:v1.19.0",
            "docker.io/qdrant/qdrant/evil:v1",
            "docker.io/qdrantt/qdrant:v1",
            "qdrant:v1",
            "ghcr.io/qdrant/qdrant:v1",
        ] {
            assert_refused(
                &format!("{{image: '{image}'}}"),
                "spec.image",
                "not allowed by the operator's policy",
            );
        }
        let mut registry = Settings::default();
        registry.policy.image_repositories =
            vec!["registry.example.com/*".into(), "qdrant/*".into()];
        assert!(messages_with("{image: 'registry.example.com/a/b:v1'}", &registry).is_empty());
        assert!(messages_with("{image: 'qdrant/other:v1'}", &registry).is_empty());
        assert!(
            !messages_with("{image: 'registry.example.com.evil.io/a:v1'}", &registry).is_empty()
        );
        assert!(!messages_with("{image: 'qdrantevil/other:v1'}", &registry).is_empty());
        // A tree an admin allows; a digest an admin requires.
        let mut s = Settings::default();
        s.policy.image_repositories = vec!["registry.example.com/mirror/*".into()];
        s.policy.require_image_digest = true;
        let digest = format!("sha256:{}", "b".repeat(64));
        assert!(
            messages_with(
                &format!("{{image: 'registry.example.com/mirror/qdrant@{digest}'}}"),
                &s
            )
            .is_empty()
        );
        let got = messages_with("{image: 'registry.example.com/mirror/qdrant:v1'}", &s);
        assert!(
            got.iter().any(|m| m.contains("requires a digest")),
            "{got:?}"
        );
        let got = messages_with(
            &format!("{{image: 'registry.example.com/mirrored@{digest}'}}"),
            &s,
        );
        assert!(got.iter().any(|m| m.contains("not allowed")), "{got:?}");
    }

    #[test]
    fn pod_scheduling_passthrough_attacks_are_refused() {
        assert_refused(
            "{pod: {tolerations: [{operator: Exists}]}}",
            "spec.pod.tolerations[0]",
            "every taint",
        );
        assert_refused(
            "{pod: {tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]}}",
            "spec.pod.tolerations[0].key",
            "control-plane",
        );
        assert_refused(
            "{pod: {nodeSelector: {node-role.kubernetes.io/control-plane: ''}}}",
            "spec.pod.nodeSelector[node-role.kubernetes.io/control-plane]",
            "control-plane",
        );
        assert_refused(
            "{pod: {affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-role.kubernetes.io/master, operator: Exists}]}]}}}}}",
            "spec.pod.affinity.nodeAffinity",
            "node-role.kubernetes.io/master",
        );
        assert_refused(
            "{pod: {priorityClassName: system-node-critical}}",
            "spec.pod.priorityClassName",
            "reserved",
        );
        assert_refused(
            "{pod: {priorityClassName: system-cluster-critical}}",
            "spec.pod.priorityClassName",
            "reserved",
        );
    }

    #[test]
    fn pod_metadata_passthrough_attacks_are_refused() {
        assert_refused(
            "{pod: {annotations: {container.apparmor.security.beta.kubernetes.io/qdrant: unconfined}}}",
            "spec.pod.annotations[container.apparmor.security.beta.kubernetes.io/qdrant]",
            "*.kubernetes.io/",
        );
        assert_refused(
            "{pod: {annotations: {sidecar.istio.io/userVolume: '[{\"name\":\"h\",\"hostPath\":{\"path\":\"/\"}}]'}}}",
            "spec.pod.annotations[sidecar.istio.io/userVolume]",
            "*.istio.io/",
        );
        assert_refused(
            "{pod: {annotations: {vault.hashicorp.com/agent-inject: 'true'}}}",
            "spec.pod.annotations[vault.hashicorp.com/agent-inject]",
            "*.hashicorp.com/",
        );
        for (key, prefix) in [
            ("consul.hashicorp.com/connect-inject", "*.hashicorp.com/"),
            ("dapr.io/enabled", "dapr.io/"),
            (
                "instrumentation.opentelemetry.io/inject-sdk",
                "*.opentelemetry.io/",
            ),
            ("sidecar.opentelemetry.io/inject", "*.opentelemetry.io/"),
            (
                "openservicemesh.io/sidecar-injection",
                "openservicemesh.io/",
            ),
            ("appmesh.k8s.aws/sidecarInjectorWebhook", "appmesh.k8s.aws/"),
        ] {
            assert_refused(
                &format!("{{pod: {{annotations: {{{key}: 'true'}}}}}}"),
                &format!("spec.pod.annotations[{key}]"),
                prefix,
            );
        }
        assert_refused(
            "{pod: {labels: {linkerd.io/control-plane-ns: linkerd}}}",
            "spec.pod.labels[linkerd.io/control-plane-ns]",
            "linkerd.io/",
        );
        assert_refused(
            "{pod: {labels: {kubernetes.io/metadata.name: kube-system}}}",
            "spec.pod.labels[kubernetes.io/metadata.name]",
            "kubernetes.io/",
        );
        // Allowed: a keyed toleration, an ordinary class, prefixes outside the list, and a
        // NotIn on the control-plane label.
        assert!(messages("{pod: {tolerations: [{key: dedicated, operator: Exists}], priorityClassName: vectors-high, labels: {team: search, example.com/kubernetes.io: x}, annotations: {notkubernetes.io/x: y}, affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}]}}}}}").is_empty());
        let many: Vec<String> = (0..33)
            .map(|i| format!("{{key: k{i}, operator: Exists}}"))
            .collect();
        assert_refused(
            &format!("{{pod: {{tolerations: [{}]}}}}", many.join(", ")),
            "spec.pod.tolerations",
            "at most 32",
        );
    }

    #[test]
    fn extra_dns_names_are_the_instances_own_or_within_an_allowed_suffix() {
        let strict = Settings::default();
        let allowing = Settings {
            allowed_dns_suffixes: vec!["example.com".to_owned()],
            ..Settings::default()
        };
        let check = |name: &str, settings: &Settings| {
            check_extra_dns_name(name, "vectors", "search", settings)
        };
        // The instance's own names: accepted (they are in the certificate anyway).
        for own in [
            "vectors",
            "vectors.search",
            "vectors.search.svc",
            "vectors.search.svc.cluster.local",
            "*.vectors-headless.search.svc",
        ] {
            assert_eq!(check(own, &strict), Ok(()), "{own}");
        }
        // Other Services, the API server, in-cluster wildcards: never, whatever is allowed.
        for other in [
            "other.search.svc",
            "other.search.svc.cluster.local",
            "vectors.other.svc",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "*.search.svc",
            "*.svc",
            "svc",
            "cluster.local",
            "*.cluster.local",
            "vectors-0.vectors-headless.other.svc",
        ] {
            let err = check(other, &allowing).expect_err(other);
            assert!(err.contains("in-cluster"), "{other}: {err}");
        }
        // Outside the cluster: only within an allowed suffix.
        for name in [
            "qdrant.example.com",
            "example.com",
            "*.vectors.example.com",
            "*.example.com",
        ] {
            assert!(check(name, &strict).is_err(), "{name}");
            assert_eq!(check(name, &allowing), Ok(()), "{name}");
        }
        for name in [
            "other.search",
            "qdrant.example.org",
            "example.com.evil.org",
            "notexample.com",
            "*.com",
        ] {
            let err = check(name, &allowing).expect_err(name);
            assert!(err.contains("only under example.com"), "{name}: {err}");
        }
        assert!(
            check("qdrant.example.com", &strict)
                .unwrap_err()
                .contains("--allowed-dns-suffixes")
        );
    }

    fn named(name: &str, settings: &Settings) -> Vec<String> {
        let mut sq = sq("{}");
        sq.metadata.name = Some(name.to_owned());
        match validate(&sq, settings) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn names_whose_ca_would_cover_cluster_service_names_are_refused() {
        let default = Settings::default();
        for name in ["svc", "local", "cluster"] {
            let got = named(name, &default);
            assert!(
                got.iter()
                    .any(|m| m.starts_with("metadata.name: ") && m.contains("choose another name")),
                "{name}: {got:?}"
            );
        }
        let custom = Settings {
            cluster_domain: "corp-headless.example.".to_owned(),
            ..Settings::default()
        };
        for name in ["corp", "example", "svc"] {
            assert!(
                named(name, &custom)
                    .iter()
                    .any(|m| m.starts_with("metadata.name: ")),
                "{name}"
            );
        }
        for name in ["vectors", "svc1", "locals", "my-svc"] {
            assert_eq!(named(name, &default), Vec::<String>::new(), "{name}");
        }
        assert_eq!(named("local", &custom), Vec::<String>::new());
    }

    #[test]
    fn referenced_secrets_may_not_be_the_instances_own() {
        for (spec, field) in [
            (
                "{auth: {apiKeySecretRef: {name: v-api-key, key: k}}}",
                "spec.auth.apiKeySecretRef.name",
            ),
            (
                "{tls: {caSecretRef: {name: v-ca}}}",
                "spec.tls.caSecretRef.name",
            ),
            (
                "{tls: {caSecretRef: {name: v-tls}}}",
                "spec.tls.caSecretRef.name",
            ),
            (
                "{tls: {certificateSecretRef: {name: v-tls}}}",
                "spec.tls.certificateSecretRef.name",
            ),
            (
                "{tls: {certificateSecretRef: {name: v-metrics-client}}}",
                "spec.tls.certificateSecretRef.name",
            ),
            (
                "{imagePullSecrets: [{name: pull}, {name: v-api-key}]}",
                "spec.imagePullSecrets[1].name",
            ),
        ] {
            assert_refused(spec, field, "rename your Secret");
        }
        // Another instance's names and names merely alike are not this rule's business.
        for spec in [
            "{auth: {apiKeySecretRef: {name: w-api-key, key: k}}}",
            "{auth: {apiKeySecretRef: {name: v-api-keys, key: k}}}",
            "{tls: {caSecretRef: {name: my-ca}}}",
            "{imagePullSecrets: [{name: v-pull}]}",
        ] {
            assert!(
                !messages(spec)
                    .iter()
                    .any(|m| m.contains("rename your Secret")),
                "{spec}"
            );
        }
    }

    #[test]
    fn the_users_requests_are_read_into_the_instance() {
        let mut with = sq("{}");
        for (key, value) in [
            (PEERS_REMOVED_ANNOTATION, "3"),
            (ROTATE_API_KEY_ANNOTATION, "r1"),
            (ROTATE_CA_ANNOTATION, "c1"),
        ] {
            with.annotations_mut()
                .insert(key.to_owned(), value.to_owned());
        }
        let inst = validate(&with, &Settings::default()).unwrap();
        assert_eq!(inst.peers_removed.as_deref(), Some("3"));
        assert_eq!(inst.api_key_rotation_request.as_deref(), Some("r1"));
        assert_eq!(inst.ca_rotation_request.as_deref(), Some("c1"));
        let without = validate(&sq("{}"), &Settings::default()).unwrap();
        assert_eq!(
            (
                without.peers_removed,
                without.api_key_rotation_request,
                without.ca_rotation_request
            ),
            (None, None, None)
        );
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns1035_label("vectors"));
        assert!(is_dns1035_label("a-1"));
        for bad in ["", "1abc", "Abc", "a_b", "a-", "a.b"] {
            assert!(!is_dns1035_label(bad), "{bad}");
        }
    }
}
