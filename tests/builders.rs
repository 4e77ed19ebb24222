//! Unit tests of the child builders: names, labels, owner references, the hardened pod, the
//! restart hash, and what appears only in cluster mode.

mod common;

use k8s_openapi::api::core::v1::PodSpec;
use secure_qdrant_operator::api_keys::ApiKeys;
use secure_qdrant_operator::children::{self, Children, Material, PodTls, meta};
use secure_qdrant_operator::material::SecretValue;
use secure_qdrant_operator::qdrant;
use secure_qdrant_operator::validate::Instance;
use serde_json::Value;

const MINIMAL: &str = "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {name: vectors}\nspec: {}\n";

fn with_spec(spec: &str) -> Instance {
    common::instance(&format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {{name: vectors}}\nspec: {{{spec}}}\n"
    ))
}

fn keys() -> Material {
    Material {
        api_keys: ApiKeys {
            api_key: SecretValue::new("k1"),
            read_only: Some(SecretValue::new("r1")),
            next: None,
            phase: Default::default(),
            salt: SecretValue::new("s1"),
        },
        tls: Some(PodTls::placeholder(true)),
    }
}

fn build(inst: &Instance) -> Children {
    children::build(inst, &keys())
}

fn pod(c: &Children) -> PodSpec {
    c.statefulset.spec.clone().unwrap().template.spec.unwrap()
}

#[test]
fn every_child_has_labels_namespace_and_a_controller_owner() {
    for (stem, path) in common::examples() {
        let inst = common::example_instance(&path);
        let ca = children::secrets::ca_placeholder(&inst);
        for obj in build(&inst).to_values(ca.as_ref()) {
            let m = &obj["metadata"];
            let what = format!("{stem}: {} {}", obj["kind"], m["name"]);
            assert_eq!(m["namespace"], "search", "{what}");
            for (k, v) in [
                (meta::LABEL_NAME, "qdrant"),
                (meta::LABEL_INSTANCE, "vectors"),
                (meta::LABEL_MANAGED_BY, "secure-qdrant-operator"),
            ] {
                assert_eq!(m["labels"][k], v, "{what}: label {k}");
            }
            assert!(m["labels"][meta::LABEL_COMPONENT].is_string(), "{what}");
            let owners = m["ownerReferences"].as_array().expect("owner references");
            assert_eq!(owners.len(), 1, "{what}");
            assert_eq!(owners[0]["kind"], "SecureQdrant");
            assert_eq!(owners[0]["controller"], true);
            assert_eq!(owners[0]["uid"], "6f1b5a3e-0000-4000-8000-000000000001");
        }
    }
}

#[test]
fn child_names_follow_the_contract() {
    let inst = with_spec("replicas: 3, network: {metrics: [{podSelector: {}}]}");
    let c = build(&inst);
    let names: Vec<(String, String)> = c
        .to_values(children::secrets::ca_placeholder(&inst).as_ref())
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        ("Secret", "vectors-api-key"),
        ("Secret", "vectors-ca"),
        ("ServiceAccount", "vectors"),
        ("Secret", "vectors-tls"),
        ("ConfigMap", "vectors-config"),
        ("Service", "vectors-headless"),
        ("Service", "vectors"),
        ("NetworkPolicy", "vectors-default-deny"),
        ("NetworkPolicy", "vectors-ingress"),
        ("NetworkPolicy", "vectors-egress"),
        ("NetworkPolicy", "vectors-metrics"),
        ("PodDisruptionBudget", "vectors"),
        ("StatefulSet", "vectors"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
        .collect();
    assert_eq!(
        names, expect,
        "write order: generated keys and CA first, Secrets/ConfigMaps and policies before \
         the StatefulSet"
    );
}

#[test]
fn service_account_mounts_no_token() {
    let c = build(&with_spec(""));
    assert_eq!(
        c.service_account.automount_service_account_token,
        Some(false)
    );
    assert_eq!(pod(&c).automount_service_account_token, Some(false));
    assert_eq!(pod(&c).service_account_name.as_deref(), Some("vectors"));
}

#[test]
fn services_expose_the_right_ports() {
    let c = build(&with_spec(""));
    let ports = |s: &k8s_openapi::api::core::v1::Service| -> Vec<i32> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| p.port)
            .collect()
    };
    let headless = c.headless_service.spec.as_ref().unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    assert_eq!(ports(&c.headless_service), vec![6333, 6334, 6335]);
    assert_eq!(
        ports(&c.client_service),
        vec![6333, 6334],
        "clients never reach p2p"
    );
    let selector = c
        .client_service
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap();
    assert_eq!(selector, meta::selector_labels(&with_spec("")));
}

#[test]
fn secret_holds_both_keys_or_only_the_full_one() {
    let c = build(&with_spec(""));
    let data = c.api_key_secret.unwrap().data.unwrap();
    assert_eq!(data["api-key"].0, b"k1");
    assert_eq!(data["read-only-api-key"].0, b"r1");
    let only = children::build(
        &with_spec("auth: {readOnlyApiKey: false}"),
        &Material {
            api_keys: ApiKeys {
                api_key: SecretValue::new("k1"),
                read_only: None,
                next: None,
                phase: Default::default(),
                salt: SecretValue::new("s1"),
            },
            tls: Some(PodTls::placeholder(true)),
        },
    );
    assert_eq!(
        only.api_key_secret
            .unwrap()
            .data
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["api-key", "fingerprint-salt"]
    );
}

#[test]
fn with_the_users_key_the_secret_holds_only_the_read_only_key_and_the_salt() {
    let byo = "auth: {apiKeySecretRef: {name: admin, key: token}}";
    let c = build(&with_spec(byo));
    let secret = c
        .api_key_secret
        .expect("the read-only key is still generated");
    assert_eq!(
        secret.data.unwrap().keys().collect::<Vec<_>>(),
        vec!["fingerprint-salt", "read-only-api-key"],
        "the operator never writes the full key the user brings"
    );
    // No key generated: the Secret still holds the salt that keys the fingerprints of the
    // user's key on the pod template.
    let salt_only = build(&with_spec(
        "auth: {apiKeySecretRef: {name: admin, key: token}, readOnlyApiKey: false}",
    ));
    assert_eq!(
        salt_only
            .api_key_secret
            .expect("the salt's Secret")
            .data
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["fingerprint-salt"]
    );
}

#[test]
fn the_pod_template_carries_no_plain_hash_of_a_key_and_its_hashes_follow_the_salt() {
    use sha2::{Digest, Sha256};
    let inst =
        with_spec("auth: {apiKeySecretRef: {name: admin, key: token}, readOnlyApiKey: false}");
    // A user's key may be guessable: whoever reads the StatefulSet must not be able to test
    // guesses against a hash of it.
    let key = "correct horse battery staple, my passphrase";
    let material = |salt: &str| Material {
        api_keys: ApiKeys {
            api_key: SecretValue::new(key),
            read_only: None,
            next: None,
            phase: Default::default(),
            salt: SecretValue::new(salt),
        },
        tls: Some(PodTls::placeholder(true)),
    };
    let a = children::build(&inst, &material("salt-a"));
    let sts = serde_json::to_string(&a.statefulset).unwrap();
    let sha = Sha256::digest(key.as_bytes());
    // The plain SHA-256 (hex, base64) and what the pod template carried before: the SHA-256 of
    // it, first 16 bytes, and the restart hash over the plain fingerprint.
    let former_fingerprint = hex::encode(&Sha256::digest(sha)[..16]);
    for needle in [
        hex::encode(sha),
        hex::encode(&sha[..16]),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sha),
        former_fingerprint,
    ] {
        assert!(!sts.contains(&needle), "the StatefulSet holds {needle}");
    }
    // The salt is not on the pod template either.
    assert!(!sts.contains("salt-a"));
    // Another salt, other hashes; the same salt, the same hashes (no roll on a reconcile).
    let b = children::build(&inst, &material("salt-b"));
    let fingerprints = |c: &Children| {
        let annotations = c
            .statefulset
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        (
            annotations[secure_qdrant_operator::children::meta::RESTART_HASH].clone(),
            annotations[secure_qdrant_operator::api_keys::KEYS_FINGERPRINT_ANNOTATION].clone(),
        )
    };
    let (restart_a, keys_a) = fingerprints(&a);
    let (restart_b, keys_b) = fingerprints(&b);
    assert_ne!(restart_a, restart_b);
    assert_ne!(keys_a, keys_b);
    assert_eq!(
        fingerprints(&children::build(&inst, &material("salt-a"))),
        (restart_a, keys_a)
    );
}

#[test]
fn the_ca_secret_exists_only_when_the_operator_runs_its_own_ca() {
    let names = |spec: &str| {
        children::secrets::ca_placeholder(&with_spec(spec)).map(|s| {
            let data = s.data.unwrap_or_default();
            (
                s.metadata.name.unwrap(),
                s.type_.unwrap(),
                data.keys().cloned().collect::<Vec<_>>(),
            )
        })
    };
    assert_eq!(
        names(""),
        Some((
            "vectors-ca".to_owned(),
            "Opaque".to_owned(),
            vec!["tls.crt".to_owned(), "tls.key".to_owned()]
        ))
    );
    assert_eq!(names("tls: {enabled: false}"), None);
    assert_eq!(names("tls: {caSecretRef: {name: corp-ca}}"), None);
    assert_eq!(names("tls: {certificateSecretRef: {name: cert}}"), None);
}

#[test]
fn config_map_holds_the_rendered_yaml_and_no_secret() {
    let inst = with_spec("config: {log_level: DEBUG}");
    let c = build(&inst);
    let yaml = &c.config_map.data.unwrap()["config.yaml"];
    let parsed: Value = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(parsed, qdrant::config(&inst));
    assert_eq!(parsed["log_level"], "DEBUG");
    assert!(!yaml.contains("k1") && !yaml.contains("r1"));
}

#[test]
fn the_audit_section_follows_the_spec_and_lives_on_the_storage_volume() {
    let off = qdrant::config(&with_spec(""));
    assert!(off.get("audit").is_none(), "audit is off by default: {off}");

    let on = qdrant::config(&with_spec(
        "audit: {enabled: true, rotation: hourly, maxLogFiles: 3, trustForwardedHeaders: true}",
    ));
    assert_eq!(
        on["audit"],
        serde_json::json!({
            "enabled": true,
            "dir": "/qdrant/storage/audit",
            "rotation": "hourly",
            "max_log_files": 3,
            "trust_forwarded_headers": true,
        })
    );
    let defaults = qdrant::config(&with_spec("audit: {enabled: true}"));
    assert_eq!(defaults["audit"]["rotation"], "daily");
    assert_eq!(defaults["audit"]["max_log_files"], 7);
    assert_eq!(defaults["audit"]["trust_forwarded_headers"], false);

    // The directory is on the mounted storage volume (Qdrant panics at start if it cannot
    // create it; the root filesystem is read-only).
    let c = build(&with_spec("audit: {enabled: true}"));
    let mounts = pod(&c).containers[0]
        .volume_mounts
        .clone()
        .unwrap_or_default();
    let storage = mounts
        .iter()
        .find(|m| m.name == "storage")
        .expect("the storage volume is mounted");
    assert!(
        "/qdrant/storage/audit".starts_with(&format!("{}/", storage.mount_path)),
        "{}",
        storage.mount_path
    );
}

/// The "restricted" Pod Security Standard (v1.33), checked field by field.
fn assert_restricted(pod: &PodSpec) {
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_ne!(psc.run_as_user, Some(0));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(
        pod.host_network != Some(true) && pod.host_pid != Some(true) && pod.host_ipc != Some(true)
    );
    for v in pod.volumes.iter().flatten() {
        assert!(
            v.config_map.is_some()
                || v.empty_dir.is_some()
                || v.secret.is_some()
                || v.persistent_volume_claim.is_some()
                || v.projected.is_some()
                || v.downward_api.is_some(),
            "volume {} has a type the restricted profile forbids",
            v.name
        );
        assert!(v.host_path.is_none());
    }
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let sc = c
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_ne!(sc.privileged, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_ne!(sc.run_as_user, Some(0));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.clone().unwrap(), vec!["ALL".to_owned()]);
        assert!(
            caps.add
                .as_ref()
                .is_none_or(|a| a.is_empty() || a == &["NET_BIND_SERVICE"])
        );
        for p in c.ports.iter().flatten() {
            assert!(p.host_port.is_none(), "no host ports");
        }
    }
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    for (stem, path) in common::examples() {
        let c = build(&common::example_instance(&path));
        let p = pod(&c);
        assert_restricted(&p);
        assert_eq!(p.enable_service_links, Some(false), "{stem}");
        let psc = p.security_context.unwrap();
        assert!(
            psc.run_as_user.unwrap() >= 10000,
            "{stem}: UID above the host range"
        );
        assert_eq!(
            psc.fs_group, psc.run_as_group,
            "{stem}: volumes writable by the process"
        );
        assert!(
            p.init_containers.is_none(),
            "{stem}: no init container at all"
        );
    }
}

#[test]
fn only_the_expected_volumes_are_writable() {
    let c = build(&with_spec("snapshots: {size: 5Gi}"));
    let p = pod(&c);
    let container = &p.containers[0];
    let writable: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.read_only != Some(true))
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(writable, vec!["storage", "snapshots", "init"]);
    let claims: Vec<String> = c
        .statefulset
        .spec
        .unwrap()
        .volume_claim_templates
        .unwrap()
        .iter()
        .map(|t| t.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(claims, vec!["storage", "snapshots"]);
    assert!(
        p.volumes.unwrap().iter().all(|v| v.name != "snapshots"),
        "a PVC, not an emptyDir"
    );
}

#[test]
fn snapshots_default_to_a_bounded_empty_dir() {
    let p = pod(&build(&with_spec("storage: {size: 20Gi}")));
    let snap = p
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "snapshots")
        .unwrap();
    assert_eq!(snap.empty_dir.unwrap().size_limit.unwrap().0, "20Gi");
}

#[test]
fn pvc_retention_follows_the_spec() {
    for (spec, want) in [
        ("", "Retain"),
        ("storage: {retainOnDelete: false}", "Delete"),
    ] {
        let sts = build(&with_spec(spec)).statefulset.spec.unwrap();
        let policy = sts.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(policy.when_deleted.as_deref(), Some(want), "{spec}");
        assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
    }
}

#[test]
fn statefulset_starts_peers_in_parallel_and_rolls_one_at_a_time() {
    let sts = build(&with_spec("replicas: 3")).statefulset.spec.unwrap();
    assert_eq!(sts.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        sts.update_strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    assert_eq!(sts.service_name.as_deref(), Some("vectors-headless"));
    assert_eq!(sts.replicas, Some(3));
}

fn env(c: &Children, name: &str) -> Option<String> {
    pod(c).containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn cluster_mode_bootstraps_every_pod_from_pod_zero() {
    let c = build(&with_spec("replicas: 3"));
    assert_eq!(
        env(&c, "QDRANT_URI").as_deref(),
        Some("https://$(POD_NAME).vectors-headless.search.svc:6335")
    );
    assert_eq!(
        env(&c, "QDRANT_BOOTSTRAP").as_deref(),
        Some("https://vectors-0.vectors-headless.search.svc:6335")
    );
    // POD_NAME is declared before the variables that expand it.
    let names: Vec<String> = pod(&c).containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.iter().position(|n| n == "POD_NAME") < names.iter().position(|n| n == "QDRANT_URI")
    );
    let single = build(&with_spec(""));
    assert_eq!(env(&single, "QDRANT_URI"), None);
    assert!(single.pdb.is_none(), "no PDB for a single node");
    let pdb = c.pdb.unwrap().spec.unwrap();
    assert_eq!(
        pdb.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn keys_reach_qdrant_only_through_secret_refs() {
    let c = build(&with_spec(""));
    let container = pod(&c).containers[0].clone();
    for e in container.env.unwrap() {
        if e.name.starts_with("QDRANT__SERVICE__") {
            assert!(e.value.is_none(), "{} must come from a Secret", e.name);
            let r = e.value_from.unwrap().secret_key_ref.unwrap();
            assert_eq!(r.name, "vectors-api-key");
        }
    }
    let json = serde_json::to_string(&c.statefulset).unwrap();
    assert!(!json.contains("\"k1\"") && !json.contains("\"r1\""));
}

#[test]
fn probes_use_qdrant_health_endpoints() {
    let c = pod(&build(&with_spec(""))).containers[0].clone();
    let path =
        |p: Option<k8s_openapi::api::core::v1::Probe>| p.unwrap().http_get.unwrap().path.unwrap();
    assert_eq!(path(c.readiness_probe), "/readyz");
    assert_eq!(path(c.liveness_probe), "/livez");
    assert_eq!(path(c.startup_probe), "/livez");
}

#[test]
fn restart_hash_changes_with_config_and_keys_only() {
    let inst = with_spec("");
    let hash = |c: &Children| {
        c.statefulset
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[meta::RESTART_HASH]
            .clone()
    };
    let base = hash(&build(&inst));
    assert_eq!(base, hash(&build(&inst)), "deterministic");
    let other_key = children::build(
        &inst,
        &Material {
            api_keys: ApiKeys {
                api_key: SecretValue::new("k2"),
                read_only: Some(SecretValue::new("r1")),
                next: None,
                phase: Default::default(),
                salt: SecretValue::new("s1"),
            },
            tls: Some(PodTls::placeholder(true)),
        },
    );
    assert_ne!(base, hash(&other_key), "a new API key restarts Qdrant");
    let other_ro = children::build(
        &inst,
        &Material {
            api_keys: ApiKeys {
                api_key: SecretValue::new("k1"),
                read_only: Some(SecretValue::new("r2")),
                next: None,
                phase: Default::default(),
                salt: SecretValue::new("s1"),
            },
            tls: Some(PodTls::placeholder(true)),
        },
    );
    assert_ne!(base, hash(&other_ro), "a new read-only key restarts Qdrant");
    assert_ne!(
        base,
        hash(&build(&with_spec("config: {log_level: DEBUG}"))),
        "config change"
    );
    assert_eq!(
        base,
        hash(&build(&with_spec("pod: {annotations: {a: b}}"))),
        "pod metadata alone does not change the hash"
    );
    assert!(!base.contains("k1"));
}

#[test]
fn pod_overrides_pass_through_without_touching_operator_labels() {
    let c = build(&with_spec(
        "pod: {labels: {team: x}, annotations: {a: b}, nodeSelector: {disk: ssd}, priorityClassName: high}",
    ));
    let sts = c.statefulset.spec.unwrap();
    let meta = sts.template.metadata.unwrap();
    let labels = meta.labels.unwrap();
    assert_eq!(labels["team"], "x");
    assert_eq!(labels[meta::LABEL_INSTANCE], "vectors");
    assert_eq!(meta.annotations.unwrap()["a"], "b");
    let p = sts.template.spec.unwrap();
    assert_eq!(p.node_selector.unwrap()["disk"], "ssd");
    assert_eq!(p.priority_class_name.as_deref(), Some("high"));
    // Selector labels stay a subset of the template labels (or the API rejects the StatefulSet).
    for (k, v) in sts.selector.match_labels.unwrap() {
        assert_eq!(labels.get(&k), Some(&v));
    }
}

#[test]
fn default_affinity_spreads_peers_and_user_affinity_replaces_it() {
    let p = pod(&build(&with_spec("")));
    let anti = p.affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    let p = pod(&build(&with_spec(
        "pod: {affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Exists}]}]}}}}",
    )));
    let aff = p.affinity.unwrap();
    assert!(aff.node_affinity.is_some() && aff.pod_anti_affinity.is_none());
}

#[test]
fn default_resources_are_bounded_and_user_resources_win() {
    let c = pod(&build(&with_spec(""))).containers[0].clone();
    let r = c.resources.unwrap();
    assert!(r.requests.unwrap().contains_key("memory"));
    assert!(r.limits.unwrap().contains_key("memory"));
    let c = pod(&build(&with_spec("resources: {limits: {memory: 8Gi}}"))).containers[0].clone();
    let r = c.resources.unwrap();
    assert_eq!(r.limits.unwrap()["memory"].0, "8Gi");
    assert!(r.requests.is_none());
}

#[test]
fn minimal_example_is_the_documented_minimal_spec() {
    let a = common::instance(MINIMAL);
    let b = common::example_instance(&common::root().join("deploy/examples/minimal.yaml"));
    assert_eq!(a, b);
}

fn env_ref(c: &Children, name: &str) -> Option<(String, String)> {
    pod(c).containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value_from.clone())
        .and_then(|v| v.secret_key_ref)
        .map(|r| (r.name, r.key))
}

#[test]
fn during_a_key_rotation_qdrant_accepts_the_old_and_the_new_key() {
    let inst = with_spec("");
    let keys = |next: Option<&str>| Material {
        api_keys: ApiKeys {
            api_key: SecretValue::new("old"),
            read_only: Some(SecretValue::new("r1")),
            next: next.map(SecretValue::new),
            phase: Default::default(),
            salt: SecretValue::new("s1"),
        },
        tls: Some(PodTls::placeholder(true)),
    };
    let stable = children::build(&inst, &keys(None));
    let rotating = children::build(&inst, &keys(Some("new")));
    let key = ("vectors-api-key".to_owned(), "api-key".to_owned());
    let next = ("vectors-api-key".to_owned(), "next-api-key".to_owned());
    // Stable: one full key.
    assert_eq!(
        env_ref(&stable, "QDRANT__SERVICE__API_KEY"),
        Some(key.clone())
    );
    assert_eq!(env_ref(&stable, "QDRANT__SERVICE__ALT_API_KEY"), None);
    // Introduced: the old key stays api_key, the new one is alt_api_key: both work.
    assert_eq!(env_ref(&rotating, "QDRANT__SERVICE__API_KEY"), Some(key));
    assert_eq!(
        env_ref(&rotating, "QDRANT__SERVICE__ALT_API_KEY"),
        Some(next)
    );
    // Each phase rolls the pods, and the pods say which keys they run with.
    let annotations = |c: &Children| {
        c.statefulset
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
    };
    assert_ne!(
        annotations(&stable)[meta::RESTART_HASH],
        annotations(&rotating)[meta::RESTART_HASH]
    );
    let fp = "secureqdrant.dev/api-keys-fingerprint";
    assert_eq!(annotations(&stable)[fp], keys(None).api_keys.fingerprint());
    assert_ne!(annotations(&stable)[fp], annotations(&rotating)[fp]);
    // Promoted: the new key is the only key.
    let promoted = children::build(
        &inst,
        &Material {
            api_keys: ApiKeys {
                api_key: SecretValue::new("new"),
                read_only: Some(SecretValue::new("r1")),
                next: None,
                phase: Default::default(),
                salt: SecretValue::new("s1"),
            },
            tls: Some(PodTls::placeholder(true)),
        },
    );
    assert_eq!(env_ref(&promoted, "QDRANT__SERVICE__ALT_API_KEY"), None);
    assert_ne!(annotations(&promoted)[fp], annotations(&stable)[fp]);
}

#[test]
fn a_user_key_comes_from_the_users_secret() {
    let c = build(&with_spec(
        "auth: {apiKeySecretRef: {name: my-keys, key: admin}}",
    ));
    assert_eq!(
        env_ref(&c, "QDRANT__SERVICE__API_KEY"),
        Some(("my-keys".to_owned(), "admin".to_owned()))
    );
    // The read-only key is still generated by the operator.
    assert_eq!(
        env_ref(&c, "QDRANT__SERVICE__READ_ONLY_API_KEY"),
        Some(("vectors-api-key".to_owned(), "read-only-api-key".to_owned()))
    );
}
