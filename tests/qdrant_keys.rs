//! Every config key and env var the operator renders is one Qdrant v1.18 and v1.19 actually read
//! (v1.19 renamed or removed none of them).
//! Qdrant ignores unknown keys silently (`QDRANT__SERVICE__APIKEY` means no auth at all), so the
//! names are checked against the real ones, written here from Qdrant's source (shared/QDRANT.md)
//! and not taken from the code under test.

mod common;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use secure_qdrant_operator::api_keys::ApiKeys;
use secure_qdrant_operator::children::{self, Material, PodTls};
use secure_qdrant_operator::qdrant::{self, env_to_config_path, leaf_paths};
use secure_qdrant_operator::validate::Instance;
use serde_json::Value;

/// Config keys of Qdrant v1.18.3 the operator may set (leaf paths).
const QDRANT_CONFIG_KEYS: &[&str] = &[
    "log_level",
    "service.host",
    "service.http_port",
    "service.grpc_port",
    "service.metrics_port",
    "service.api_key",
    "service.alt_api_key",
    "service.read_only_api_key",
    "service.jwt_rbac",
    "service.enforce_internal_auth",
    "service.enable_tls",
    "service.verify_https_client_certificate",
    "service.enable_cors",
    "service.enable_snapshot_url_recovery",
    "service.enable_static_content",
    "service.max_request_size_mb",
    "tls.cert",
    "tls.key",
    "tls.ca_cert",
    "tls.cert_ttl",
    "cluster.enabled",
    "cluster.p2p.port",
    "cluster.p2p.enable_tls",
    "telemetry_disabled",
    "storage.storage_path",
    "storage.snapshots_path",
    "storage.temp_path",
    "audit.enabled",
    "audit.dir",
    "audit.rotation",
    "audit.max_log_files",
    "audit.trust_forwarded_headers",
    "audit.log_api",
];

/// Env vars Qdrant (or its image's entrypoint) reads outside the `QDRANT__` mapping, plus the
/// operator's own `POD_NAME`, used only for `$(POD_NAME)` expansion by the kubelet, and the two
/// the cluster-mode start script reads (`SQ_`: no Qdrant name starts so).
const OTHER_ENV: &[&str] = &[
    "QDRANT_URI",
    "QDRANT_BOOTSTRAP",
    "QDRANT_INIT_FILE_PATH",
    "RUN_MODE",
    "POD_NAME",
    "SQ_CLUSTER_FORMED",
    "SQ_REJOIN_BOOTSTRAP",
];

fn variants() -> Vec<(String, Instance)> {
    let mut out: Vec<(String, Instance)> = common::examples()
        .into_iter()
        .map(|(stem, path)| (stem, common::example_instance(&path)))
        .collect();
    for (name, spec) in [
        ("cluster", "replicas: 3"),
        (
            "audit",
            "audit: {enabled: true, trustForwardedHeaders: true}",
        ),
        ("metrics", "network: {metrics: [{podSelector: {}}]}"),
        (
            "no-read-only",
            "auth: {readOnlyApiKey: false, jwtRbac: false}",
        ),
    ] {
        let yaml = format!(
            "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {{name: v}}\nspec: {{{spec}}}\n"
        );
        out.push((name.to_owned(), common::instance(&yaml)));
    }
    out
}

/// The keys of `config` that are not real Qdrant keys (ignoring what the user wrote).
fn unknown_keys(config: &Value, inst: &Instance) -> Vec<String> {
    let user: BTreeSet<String> = leaf_paths(&Value::Object(inst.user_config.clone()))
        .into_iter()
        .collect();
    leaf_paths(config)
        .into_iter()
        .filter(|p| !user.contains(p))
        .filter(|p| !QDRANT_CONFIG_KEYS.contains(&p.as_str()))
        .collect()
}

fn get<'a>(config: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(config, |v, k| &v[k])
}

#[test]
fn every_rendered_config_key_is_a_real_qdrant_key() {
    for (name, inst) in variants() {
        let config = qdrant::config(&inst);
        assert_eq!(unknown_keys(&config, &inst), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn a_misspelled_key_is_caught() {
    let (_, inst) = variants().remove(0);
    let mut config = qdrant::config(&inst);
    config["service"]["enable_corss"] = Value::Bool(false);
    config["telemetry_disable"] = Value::Bool(true);
    assert_eq!(
        unknown_keys(&config, &inst),
        vec![
            "service.enable_corss".to_owned(),
            "telemetry_disable".to_owned()
        ]
    );
}

#[test]
fn hardened_settings_are_always_rendered() {
    for (name, inst) in variants() {
        let config = qdrant::config(&inst);
        assert_eq!(
            get(&config, "service.enable_cors"),
            &Value::Bool(false),
            "{name}"
        );
        assert_eq!(
            get(&config, "telemetry_disabled"),
            &Value::Bool(true),
            "{name}"
        );
        assert_eq!(
            get(&config, "service.enable_snapshot_url_recovery"),
            &Value::Bool(false),
            "{name}"
        );
        assert_eq!(
            get(&config, "service.jwt_rbac"),
            &Value::Bool(inst.auth.jwt_rbac),
            "{name}"
        );
        assert_eq!(
            get(&config, "cluster.enabled"),
            &Value::Bool(inst.replicas > 1),
            "{name}"
        );
        if inst.replicas > 1 {
            assert_eq!(
                get(&config, "service.enforce_internal_auth"),
                &Value::Bool(true),
                "{name}"
            );
            assert_eq!(
                get(&config, "cluster.p2p.port"),
                &Value::from(6335),
                "{name}"
            );
        }
        // An IP literal: Qdrant refuses host names here.
        assert_eq!(
            get(&config, "service.host"),
            &Value::from("0.0.0.0"),
            "{name}"
        );
        // Keys never appear in the config file (it is a ConfigMap).
        for secret in [
            "service.api_key",
            "service.alt_api_key",
            "service.read_only_api_key",
        ] {
            assert!(
                get(&config, secret).is_null(),
                "{name}: {secret} in the ConfigMap"
            );
        }
    }
}

fn statefulset(inst: &Instance) -> StatefulSet {
    let material = Material {
        api_keys: ApiKeys::placeholder(inst.auth.read_only_api_key),
        tls: inst.tls.as_ref().map(|_| PodTls::placeholder(true)),
    };
    children::build(inst, &material).statefulset
}

#[test]
fn every_env_var_is_one_qdrant_reads() {
    for (name, inst) in variants() {
        let sts = statefulset(&inst);
        let container = &sts.spec.unwrap().template.spec.unwrap().containers[0];
        let mut config_paths = Vec::new();
        for env in container.env.iter().flatten() {
            match env_to_config_path(&env.name) {
                Some(path) => {
                    assert!(
                        QDRANT_CONFIG_KEYS.contains(&path.as_str()),
                        "{name}: env {} sets {path}, which Qdrant does not read",
                        env.name
                    );
                    config_paths.push(path);
                }
                None => assert!(
                    OTHER_ENV.contains(&env.name.as_str()),
                    "{name}: env {} is not read by Qdrant",
                    env.name
                ),
            }
        }
        assert!(
            config_paths.contains(&"service.api_key".to_owned()),
            "{name}"
        );
        assert_eq!(
            config_paths.contains(&"service.read_only_api_key".to_owned()),
            inst.auth.read_only_api_key,
            "{name}"
        );
        let run_mode = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "RUN_MODE");
        assert_eq!(
            run_mode.and_then(|e| e.value.as_deref()),
            Some("production")
        );
    }
}

#[test]
fn the_env_mapping_follows_qdrant() {
    assert_eq!(
        env_to_config_path("QDRANT__SERVICE__API_KEY").as_deref(),
        Some("service.api_key")
    );
    assert_eq!(
        env_to_config_path("QDRANT__CLUSTER__P2P__ENABLE_TLS").as_deref(),
        Some("cluster.p2p.enable_tls")
    );
    // The classic mistake: one underscore too few is a different, unknown key.
    assert_eq!(
        env_to_config_path("QDRANT__SERVICE__APIKEY").as_deref(),
        Some("service.apikey")
    );
    assert!(!QDRANT_CONFIG_KEYS.contains(&"service.apikey"));
    assert_eq!(env_to_config_path("QDRANT_URI"), None);
}

#[test]
fn paths_in_the_config_are_on_the_right_volumes() {
    for (name, inst) in variants() {
        let config = qdrant::config(&inst);
        let sts = statefulset(&inst);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let mounts: Vec<(String, String, bool)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.mount_path.clone(),
                    m.name.clone(),
                    m.read_only.unwrap_or(false),
                )
            })
            .collect();
        let writable = |path: &str| {
            mounts
                .iter()
                .any(|(m, _, ro)| !ro && (path == m || path.starts_with(&format!("{m}/"))))
        };
        assert!(
            container
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem
                == Some(true)
        );
        for key in ["storage.storage_path", "storage.snapshots_path"] {
            let path = get(&config, key).as_str().unwrap();
            assert!(
                writable(path),
                "{name}: {key}={path} is not on a writable volume"
            );
        }
        if inst.audit.enabled {
            let dir = get(&config, "audit.dir").as_str().unwrap();
            assert!(writable(dir), "{name}: audit dir {dir} not writable");
        }
        let init = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "QDRANT_INIT_FILE_PATH")
            .and_then(|e| e.value.clone())
            .unwrap();
        assert!(writable(&init), "{name}: init marker {init} not writable");

        // --config-path names a file of the mounted ConfigMap.
        let args = container.args.clone().unwrap();
        let at = args
            .iter()
            .position(|a| a == "--config-path")
            .expect("--config-path");
        let file = &args[at + 1];
        let (dir, key) = file.rsplit_once('/').unwrap();
        let (_, volume, ro) = mounts
            .iter()
            .find(|(m, _, _)| m == dir)
            .expect("config dir mounted");
        assert!(*ro, "{name}: config must be mounted read-only");
        let source = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| &v.name == volume)
            .and_then(|v| v.config_map.clone())
            .expect("config volume is a ConfigMap");
        let cm = children::build(
            &inst,
            &Material {
                api_keys: ApiKeys::placeholder(true),
                tls: inst.tls.as_ref().map(|_| PodTls::placeholder(true)),
            },
        )
        .config_map;
        assert_eq!(Some(source.name), cm.metadata.name);
        assert!(
            cm.data.unwrap().contains_key(key),
            "{name}: ConfigMap lacks {key}"
        );
    }
}

#[test]
fn the_operator_never_sets_io_uring_or_quotas() {
    // Qdrant 1.19: `storage.performance.io_uring` fails under the RuntimeDefault seccomp
    // profile the pods run with (it blocks io_uring on common runtimes), and
    // `storage.quotas.*` is honoured only at a peer's first start. Neither is the operator's
    // to set, in the file or as an env var.
    for (name, inst) in variants() {
        let config = qdrant::config(&inst);
        assert!(
            get(&config, "storage.performance.io_uring").is_null(),
            "{name}"
        );
        assert!(get(&config, "storage.quotas").is_null(), "{name}");
        let sts = statefulset(&inst);
        for env in sts.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .iter()
            .flatten()
        {
            let path = env_to_config_path(&env.name).unwrap_or_default();
            assert!(
                !path.starts_with("storage.performance") && !path.starts_with("storage.quotas"),
                "{name}: {}",
                env.name
            );
        }
    }
}

#[test]
fn the_pod_refuses_to_start_qdrant_with_an_empty_or_unsendable_key() {
    // The keys reach a pod from Secrets when it starts: a Secret emptied by hand reaches a pod
    // that restarts before the operator can refuse or repair it. The rendered start command is
    // RUN under bash, with the image's entrypoint replaced by a stub that reports its args.
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("entrypoint.sh");
    std::fs::write(&stub, "#!/bin/bash\necho \"started $*\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Both start commands: a single node's (guard, then the entrypoint) and a cluster's (guard,
    // then the bootstrap script, which reaches the entrypoint relative to the working dir).
    for (variant, inst) in variants()
        .into_iter()
        .filter(|(name, _)| name == "minimal" || name == "cluster")
    {
        let container = statefulset(&inst)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .clone();
        let mut command = container.command.clone().unwrap();
        command[2] = command[2].replace(qdrant::ENTRYPOINT, stub.to_str().unwrap());
        let run = |keys: &[(&str, &str)]| {
            let out = std::process::Command::new(&command[0])
                .args(&command[1..])
                .args(container.args.clone().unwrap())
                .current_dir(dir.path())
                .env_clear()
                .env("LANG", "C.UTF-8")
                .env("POD_NAME", format!("{}-1", inst.name))
                .env("QDRANT_URI", "https://peer-1:6335")
                .env("QDRANT_BOOTSTRAP", "https://peer-0:6335")
                .env("SQ_REJOIN_BOOTSTRAP", "https://peer-1:6335")
                .envs(keys.iter().copied())
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        const GOOD: &str = "Abc-_0123456789+/=!~xyzXYZ0123456789abcdef";
        let (api, alt, ro) = (
            "QDRANT__SERVICE__API_KEY",
            "QDRANT__SERVICE__ALT_API_KEY",
            "QDRANT__SERVICE__READ_ONLY_API_KEY",
        );
        for keys in [
            vec![(api, GOOD)],
            vec![(api, GOOD), (alt, GOOD), (ro, GOOD)],
            vec![(api, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")],
        ] {
            let (ok, stdout, stderr) = run(&keys);
            assert!(ok, "{variant} {keys:?}: {stderr}");
            let stdout = stdout.trim();
            assert!(
                stdout.starts_with("started ")
                    && stdout.ends_with(&container.args.clone().unwrap().join(" ")),
                "{variant} {keys:?}: {stdout}"
            );
        }
        for (var, value) in [
            (api, String::new()),
            (api, format!("{GOOD}\n")),
            (alt, String::new()),
            (alt, format!("{GOOD} ")),
            (ro, String::new()),
            (ro, format!("{GOOD}\t")),
            (ro, format!("{GOOD}\u{e9}")),
            (api, format!("a b{GOOD}")),
        ] {
            let mut keys = vec![(api, GOOD), (alt, GOOD), (ro, GOOD)];
            keys.retain(|(n, _)| *n != var);
            keys.push((var, &value));
            let (ok, stdout, stderr) = run(&keys);
            assert!(!ok, "{var}={value:?} started: {stdout}");
            assert!(!stdout.contains("started"), "{var}={value:?}: {stdout}");
            assert!(
                stderr.contains(&format!("refusing to start Qdrant: {var} is empty")),
                "{var}={value:?}: {stderr}"
            );
            assert!(!stderr.contains("0123456789"), "the key is shown: {stderr}");
        }
    }
}
