//! The start logic of a cluster-mode pod, RUN under bash against simulated states.
//!
//! Each case takes the container exactly as the StatefulSet renders it (command, args, env) and
//! plays the kubelet: env values with `$(POD_NAME)` expanded, `configMapKeyRef`s resolved from the
//! rendered `<n>-config` (an absent optional key leaves the variable unset), Secrets replaced by
//! dummies. The working directory `/qdrant` is a temp dir holding `storage/` (with or without
//! Raft state) and a stub `entrypoint.sh` that records the arguments it got; the test asserts the
//! exact `--uri` and `--bootstrap` Qdrant would start with.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Container};
use secure_qdrant_operator::api_keys::ApiKeys;
use secure_qdrant_operator::children::{self, Children, Material, PodTls};
use secure_qdrant_operator::material::SecretValue;
use secure_qdrant_operator::qdrant::{ENTRYPOINT, STORAGE_PATH, WORKDIR};
use secure_qdrant_operator::validate::Instance;

fn material(inst: &Instance) -> Material {
    Material {
        api_keys: ApiKeys {
            api_key: SecretValue::new("k1"),
            read_only: Some(SecretValue::new("r1")),
            next: None,
            phase: Default::default(),
            salt: SecretValue::new("s1"),
        },
        tls: inst.tls.is_some().then(|| PodTls::placeholder(true)),
    }
}

fn instance(name: &str, spec: &str, formed: bool) -> Instance {
    let mut inst = common::instance(&format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: SecureQdrant\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n"
    ));
    inst.cluster_formed = formed;
    inst
}

fn container(c: &Children) -> Container {
    c.statefulset
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .clone()
}

/// What the Raft state of the simulated pod's volume looks like.
#[derive(Clone, Copy, Debug)]
enum State {
    /// A new or wiped volume.
    None,
    /// Qdrant's Raft state (`raft_state.json`).
    Json,
    /// Raft state from before Qdrant stored it as JSON (`raft_state`, CBOR).
    Legacy,
}

/// What the stub entrypoint saw.
#[derive(Debug)]
struct Started {
    args: Vec<String>,
    bootstrap_env: String,
    stderr: String,
}

impl Started {
    fn flag(&self, name: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == name)?;
        self.args.get(i + 1).map(String::as_str)
    }
}

/// The env of `container` as the kubelet would give it to `pod`.
fn kubelet_env(
    container: &Container,
    config_map: &ConfigMap,
    pod: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            out.insert(e.name.clone(), v.replace("$(POD_NAME)", pod));
            continue;
        }
        let from = e.value_from.as_ref().expect("value or valueFrom");
        if from.field_ref.is_some() {
            out.insert(e.name.clone(), pod.to_owned());
        } else if let Some(r) = &from.config_map_key_ref {
            assert_eq!(Some(&r.name), config_map.metadata.name.as_ref());
            match config_map.data.as_ref().and_then(|d| d.get(&r.key)) {
                Some(v) => {
                    out.insert(e.name.clone(), v.clone());
                }
                None => assert_eq!(r.optional, Some(true), "{} is required", e.name),
            }
        } else if from.secret_key_ref.is_some() {
            out.insert(e.name.clone(), "a-secret-value".to_owned());
        } else {
            panic!("unexpected env source for {}", e.name);
        }
    }
    out
}

/// Runs the container of `inst` for `pod` in a working directory whose storage is in `state`.
fn start(inst: &Instance, pod: &str, state: State) -> Started {
    let c = children::build(inst, &material(inst));
    let container = container(&c);
    assert_eq!(container.working_dir.as_deref(), Some(WORKDIR));
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // The script reaches the storage volume and the entrypoint relative to the working dir.
    let storage = work.join(STORAGE_PATH.strip_prefix(&format!("{WORKDIR}/")).unwrap());
    std::fs::create_dir(&storage).unwrap();
    match state {
        State::None => {}
        State::Json => std::fs::write(storage.join("raft_state.json"), "{}").unwrap(),
        State::Legacy => std::fs::write(storage.join("raft_state"), [0xa0]).unwrap(),
    }
    let entrypoint = work.join(ENTRYPOINT.strip_prefix(&format!("{WORKDIR}/")).unwrap());
    write_executable(
        &entrypoint,
        "#!/bin/bash\nprintf '%s\\n' \"$@\" > args.out\nprintf '%s' \"$QDRANT_BOOTSTRAP\" > bootstrap.out\n",
    );
    let command = container.command.clone().unwrap();
    let out = Command::new(&command[0])
        .args(&command[1..])
        .args(container.args.iter().flatten())
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(kubelet_env(&container, &c.config_map, pod))
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the start failed: {stderr}");
    let read = |f: &str| std::fs::read_to_string(work.join(f)).expect("the entrypoint ran");
    Started {
        args: read("args.out").lines().map(str::to_owned).collect(),
        bootstrap_env: read("bootstrap.out"),
        stderr,
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn uri(pod: &str) -> String {
    format!("https://{pod}.vectors-headless.search.svc:6335")
}

fn assert_started(s: &Started, pod: &str, bootstrap: &str) {
    assert_eq!(s.flag("--uri"), Some(uri(pod).as_str()), "{s:?}");
    assert_eq!(s.flag("--bootstrap"), Some(bootstrap), "{s:?}");
    assert_eq!(
        s.bootstrap_env, bootstrap,
        "QDRANT_BOOTSTRAP agrees with --bootstrap"
    );
    // The container's own arguments follow, unchanged.
    assert_eq!(
        s.args[4..],
        ["--config-path", "/qdrant/config-operator/config.yaml"],
        "{s:?}"
    );
}

#[test]
fn first_formation_pod_zero_starts_the_cluster_and_the_others_join_it() {
    let inst = instance("vectors", "replicas: 3", false);
    let s = start(&inst, "vectors-0", State::None);
    assert_started(&s, "vectors-0", &uri("vectors-0"));
    assert!(s.stderr.is_empty(), "{}", s.stderr);
    for pod in ["vectors-1", "vectors-2"] {
        assert_started(&start(&inst, pod, State::None), pod, &uri("vectors-0"));
    }
}

#[test]
fn a_restart_with_raft_state_starts_as_before() {
    for formed in [false, true] {
        let inst = instance("vectors", "replicas: 3", formed);
        for state in [State::Json, State::Legacy] {
            for pod in ["vectors-0", "vectors-1", "vectors-2"] {
                let s = start(&inst, pod, state);
                assert_started(&s, pod, &uri("vectors-0"));
                assert!(s.stderr.is_empty(), "{state:?}: {}", s.stderr);
            }
        }
    }
}

#[test]
fn a_wiped_pod_zero_of_a_formed_cluster_rejoins_through_pod_one() {
    let inst = instance("vectors", "replicas: 3", true);
    let s = start(&inst, "vectors-0", State::None);
    assert_started(&s, "vectors-0", &uri("vectors-1"));
    assert!(
        s.stderr.contains("joining it through") && s.stderr.contains(&uri("vectors-1")),
        "{}",
        s.stderr
    );
    // Two replicas are enough: pod 1 exists.
    let two = instance("vectors", "replicas: 2", true);
    assert_started(
        &start(&two, "vectors-0", State::None),
        "vectors-0",
        &uri("vectors-1"),
    );
}

#[test]
fn a_wiped_pod_above_zero_joins_through_pod_zero() {
    let inst = instance("vectors", "replicas: 3", true);
    for pod in ["vectors-1", "vectors-2"] {
        assert_started(&start(&inst, pod, State::None), pod, &uri("vectors-0"));
    }
}

#[test]
fn the_ordinal_is_the_last_part_of_a_name_with_dashes() {
    // `a-0-1` is pod 1 of instance `a-0`: not pod 0, whatever its name contains.
    let inst = instance("a-0", "replicas: 3", true);
    let s = start(&inst, "a-0-1", State::None);
    assert_eq!(
        s.flag("--bootstrap"),
        Some("https://a-0-0.a-0-headless.search.svc:6335")
    );
    let s = start(&inst, "a-0-0", State::None);
    assert_eq!(
        s.flag("--bootstrap"),
        Some("https://a-0-1.a-0-headless.search.svc:6335")
    );
}

#[test]
fn without_tls_the_uris_are_http() {
    let inst = instance("vectors", "replicas: 3, tls: {enabled: false}", true);
    let s = start(&inst, "vectors-0", State::None);
    assert_eq!(
        s.flag("--bootstrap"),
        Some("http://vectors-1.vectors-headless.search.svc:6335")
    );
}

#[test]
fn recording_the_formation_changes_no_pod_template() {
    // The operator records the formation after the cluster is up: it must roll nothing. Only
    // the ConfigMap gains a key, read at the next container start.
    for spec in [
        "replicas: 3",
        "replicas: 3, tls: {clientCertificates: true}",
    ] {
        let (before, after) = (
            instance("vectors", spec, false),
            instance("vectors", spec, true),
        );
        let before = children::build(&before, &material(&before));
        let after = children::build(&after, &material(&after));
        assert_eq!(before.statefulset, after.statefulset, "{spec}");
        let data = |c: &Children| c.config_map.data.clone().unwrap();
        let mut grown = data(&before);
        grown.insert(
            children::config_map::CLUSTER_FORMED_KEY.to_owned(),
            "true".to_owned(),
        );
        assert_eq!(data(&after), grown, "{spec}");
    }
}

#[test]
fn a_single_node_runs_the_key_guard_and_the_entrypoint_without_the_bootstrap_script() {
    let inst = instance("vectors", "", true);
    let c = children::build(&inst, &material(&inst));
    let container = container(&c);
    let command = container.command.clone().unwrap();
    assert_eq!(command[..2], ["/bin/bash".to_owned(), "-c".to_owned()]);
    assert!(
        command[2].starts_with(secure_qdrant_operator::qdrant::KEY_GUARD)
            && command[2].ends_with(&format!("exec {ENTRYPOINT} \"$@\"\n")),
        "{command:?}"
    );
    assert!(!command[2].contains("QDRANT_BOOTSTRAP"), "{command:?}");
    let names: Vec<_> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(!names.contains(&"QDRANT_BOOTSTRAP"), "{names:?}");
}
