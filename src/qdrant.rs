//! Qdrant's own configuration: the file the operator renders and the names Qdrant reads.
//!
//! Every key written here is one Qdrant v1.18 and v1.19 parse (`tests/qdrant_keys.rs` checks the rendered
//! file and env vars against the real names). Qdrant ignores misspelled keys silently.

use serde_json::{Value, json};

use crate::validate::Instance;

/// REST port (also health endpoints and, authenticated, `/metrics`).
pub const HTTP_PORT: i32 = 6333;
/// External gRPC port.
pub const GRPC_PORT: i32 = 6334;
/// Internal peer-to-peer port (cluster mode).
pub const P2P_PORT: i32 = 6335;
/// Unauthenticated metrics-only port, rendered only when `spec.network.metrics` lists scrapers.
pub const METRICS_PORT: i32 = 9091;

/// Working directory of the Qdrant image.
pub const WORKDIR: &str = "/qdrant";
/// Mount point of the data volume.
pub const STORAGE_PATH: &str = "/qdrant/storage";
/// Mount point of the snapshots volume.
pub const SNAPSHOTS_PATH: &str = "/qdrant/snapshots";
/// Audit log directory (on the data volume).
pub const AUDIT_DIR: &str = "/qdrant/storage/audit";
/// Directory where the operator's config file is mounted.
pub const CONFIG_DIR: &str = "/qdrant/config-operator";
/// File name of the operator's config file in the ConfigMap and the mounted directory.
pub const CONFIG_FILE: &str = "config.yaml";
/// Directory where the serving certificate Secret is mounted (a directory, never subPath, so a
/// renewed certificate reaches the REST listener without a restart).
pub const TLS_DIR: &str = "/qdrant/tls";
/// Seconds between Qdrant's re-reads of the certificate for REST (`tls.cert_ttl`).
pub const CERT_TTL_SECONDS: i64 = 3600;
/// Writable directory for Qdrant's init marker.
pub const INIT_DIR: &str = "/qdrant/init";
/// The image's start script, which runs `./qdrant "$@"` and handles its recovery mode.
pub const ENTRYPOINT: &str = "/qdrant/entrypoint.sh";

/// Shell code (bash) run before the image's entrypoint: refuses to start Qdrant when an API-key
/// env var is set but empty or not visible ASCII (0x21-0x7E). The operator never renders such a
/// key, but a pod reads its keys from Secrets when it starts (`secretKeyRef`): a Secret emptied
/// by hand would reach a pod that restarts before the operator refuses or repairs it, and Qdrant
/// 1.19 takes an empty key for "no authentication" (1.18 for a key anyone can send). The pod
/// fails closed instead, naming the variable and never its value.
pub const KEY_GUARD: &str = r#"check_keys() {
  local LC_ALL=C name value
  for name in QDRANT__SERVICE__API_KEY QDRANT__SERVICE__ALT_API_KEY QDRANT__SERVICE__READ_ONLY_API_KEY; do
    [ "${!name+set}" = set ] || continue
    value="${!name}"
    if [ -z "$value" ] || [[ "$value" == *[^!-~]* ]]; then
      echo "refusing to start Qdrant: $name is empty or not visible ASCII (0x21-0x7E); fix the Secret it comes from (the SecureQdrant's Reconciled condition names the problem)" >&2
      return 1
    fi
  done
}
check_keys || exit 1
"#;

/// Environment variables Qdrant reads (outside the `QDRANT__SECTION__KEY` config mapping).
pub mod env {
    /// Full-access API key (`service.api_key`).
    pub const API_KEY: &str = "QDRANT__SERVICE__API_KEY";
    /// Second full-access key, during a rotation (`service.alt_api_key`).
    pub const ALT_API_KEY: &str = "QDRANT__SERVICE__ALT_API_KEY";
    /// Global read-only API key (`service.read_only_api_key`).
    pub const READ_ONLY_API_KEY: &str = "QDRANT__SERVICE__READ_ONLY_API_KEY";
    /// This peer's URI (`--uri`).
    pub const URI: &str = "QDRANT_URI";
    /// A peer to join (`--bootstrap`).
    pub const BOOTSTRAP: &str = "QDRANT_BOOTSTRAP";
    /// Where Qdrant writes its `.qdrant-initialized` marker.
    pub const INIT_FILE_PATH: &str = "QDRANT_INIT_FILE_PATH";
}

/// The tuning keys `spec.config` may set (leaf paths), with their Qdrant types. Everything else is
/// refused: the CRD schema declares exactly these (with their types), and `crate::validate`
/// refuses any other path. Each was checked in Qdrant's settings (`config/config.yaml`,
/// `lib/storage/src/types.rs` (`StorageConfig`, `PerformanceConfig`),
/// `lib/collection/src/optimizers_builder.rs` (`OptimizersConfig`), `lib/segment/src/types.rs`
/// (`HnswConfig`), `src/settings.rs` (`ServiceConfig`, `ConsensusConfig`)) of v1.18/v1.19: pure
/// tuning that reaches no address, names no path, and may be the same on every pod.
///
/// Types: `uint` (an unsigned Rust integer), `int` (signed), `number`, `bool`, `string`; a `?`
/// suffix: `null` is accepted too (an `Option` in Qdrant, null meaning "automatic").
///
/// Left out on purpose (refused): `storage.performance.io_uring` and `async_scorer` (io_uring,
/// blocked by the RuntimeDefault seccomp profile), `storage.node_type` (a listener node answers no
/// reads: a topology decision), `storage.recovery_mode`, `storage.mmap_advice`,
/// `storage.quotas` (honoured only at first start), `service.max_request_size_mb` (memory per
/// request: a denial-of-service knob), anything naming a path, an address or an outside service.
pub const ALLOWED_USER_CONFIG: &[(&str, &str)] = &[
    ("log_level", "string"),
    ("service.max_workers", "uint?"),
    ("cluster.consensus.tick_period_ms", "uint"),
    ("cluster.consensus.compact_wal_entries", "uint"),
    ("storage.on_disk_payload", "bool"),
    ("storage.update_concurrency", "uint?"),
    ("storage.max_collections", "uint?"),
    ("storage.shard_transfer_method", "string?"),
    ("storage.wal.wal_capacity_mb", "uint"),
    ("storage.wal.wal_segments_ahead", "uint"),
    ("storage.performance.max_search_threads", "uint"),
    ("storage.performance.max_optimization_threads", "uint"),
    ("storage.performance.optimizer_cpu_budget", "int"),
    ("storage.performance.update_rate_limit", "uint?"),
    ("storage.performance.search_timeout_sec", "uint?"),
    (
        "storage.performance.incoming_shard_transfers_limit",
        "uint?",
    ),
    (
        "storage.performance.outgoing_shard_transfers_limit",
        "uint?",
    ),
    ("storage.optimizers.deleted_threshold", "number"),
    ("storage.optimizers.vacuum_min_vector_number", "uint"),
    ("storage.optimizers.default_segment_number", "uint"),
    ("storage.optimizers.max_segment_size_kb", "uint?"),
    ("storage.optimizers.indexing_threshold_kb", "uint?"),
    ("storage.optimizers.flush_interval_sec", "uint"),
    ("storage.optimizers.max_optimization_threads", "uint?"),
    ("storage.hnsw_index.m", "uint"),
    ("storage.hnsw_index.ef_construct", "uint"),
    ("storage.hnsw_index.full_scan_threshold_kb", "uint"),
    ("storage.hnsw_index.max_indexing_threads", "uint"),
    ("storage.hnsw_index.on_disk", "bool?"),
    ("storage.hnsw_index.payload_m", "uint?"),
    ("storage.collection.replication_factor", "uint"),
    ("storage.collection.write_consistency_factor", "uint"),
    ("storage.collection.shard_number_per_node", "uint"),
    ("storage.collection.vectors.on_disk", "bool?"),
];

/// Whether a JSON value has the Qdrant type of an [`ALLOWED_USER_CONFIG`] entry.
pub fn has_config_type(value: &Value, ty: &str) -> bool {
    let (base, nullable) = match ty.strip_suffix('?') {
        Some(base) => (base, true),
        None => (ty, false),
    };
    match (base, value) {
        (_, Value::Null) => nullable,
        ("uint", Value::Number(n)) => n.is_u64(),
        ("int", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        ("bool", Value::Bool(_)) => true,
        ("string", Value::String(_)) => true,
        _ => false,
    }
}

/// Keys Qdrant reads that `spec.config` may not set, with their Qdrant types: the ones the
/// operator owns, and the known ones that reach outside the pod or weaken it. The CRD refuses
/// each with a CEL `!has()` rule (the apiserver hides undeclared keys from CEL, so only declared
/// ones can be named there); `crate::validate` refuses them and every other key that is not in
/// [`ALLOWED_USER_CONFIG`].
pub const FORBIDDEN_USER_CONFIG: &[(&str, &str)] = &[
    ("service.host", "string"),
    ("service.http_port", "integer"),
    ("service.grpc_port", "integer"),
    ("service.metrics_port", "integer"),
    ("service.api_key", "string"),
    ("service.alt_api_key", "string"),
    ("service.read_only_api_key", "string"),
    ("service.jwt_rbac", "boolean"),
    ("service.enable_tls", "boolean"),
    ("service.verify_https_client_certificate", "boolean"),
    ("service.enable_cors", "boolean"),
    ("service.enforce_internal_auth", "boolean"),
    ("service.enable_snapshot_url_recovery", "boolean"),
    ("service.enable_static_content", "boolean"),
    ("service.static_content_dir", "string"),
    ("service.max_request_size_mb", "integer"),
    ("tls", "object"),
    ("cluster.enabled", "boolean"),
    ("cluster.p2p", "object"),
    ("cluster.peer_id", "integer"),
    ("telemetry_disabled", "boolean"),
    ("storage.storage_path", "string"),
    ("storage.snapshots_path", "string"),
    ("storage.temp_path", "string"),
    ("storage.snapshots_config", "object"),
    ("storage.recovery_mode", "string"),
    ("storage.async_scorer", "boolean"),
    ("storage.quotas", "object"),
    ("storage.performance.io_uring", "boolean"),
    ("storage.performance.async_scorer", "boolean"),
    ("audit", "object"),
    ("inference", "object"),
    ("feature_flags", "object"),
    ("logger", "object"),
    ("gpu", "object"),
];

/// The Qdrant config file for an instance: hardened settings the user cannot override, merged
/// over the user's `spec.config`. Holds no secret (keys arrive as env vars from Secrets).
pub fn config(inst: &Instance) -> Value {
    let mut service = json!({
        "host": "0.0.0.0",
        "http_port": HTTP_PORT,
        "grpc_port": GRPC_PORT,
        "enable_cors": false,
        "enable_snapshot_url_recovery": false,
        // Static files under /dashboard are served without any key: off, so no directory (the
        // TLS mount, the storage volume) can ever be published that way.
        "enable_static_content": false,
        "jwt_rbac": inst.auth.jwt_rbac,
    });
    if inst.cluster_mode() {
        service["enforce_internal_auth"] = json!(true);
    }
    if inst.metrics_port_enabled() {
        service["metrics_port"] = json!(METRICS_PORT);
    }
    if let Some(tls) = &inst.tls {
        service["enable_tls"] = json!(true);
        service["verify_https_client_certificate"] = json!(tls.client_certificates);
    }

    let mut cluster = json!({ "enabled": inst.cluster_mode() });
    if inst.cluster_mode() {
        cluster["p2p"] = json!({ "port": P2P_PORT, "enable_tls": inst.tls.is_some() });
    }

    let mut ours = json!({
        "service": service,
        "cluster": cluster,
        "storage": {
            "storage_path": STORAGE_PATH,
            "snapshots_path": SNAPSHOTS_PATH,
        },
        "telemetry_disabled": true,
    });
    if inst.tls.is_some() {
        // One set of files serves every listener: REST, gRPC, and both ends of p2p.
        ours["tls"] = json!({
            "cert": format!("{TLS_DIR}/tls.crt"),
            "key": format!("{TLS_DIR}/tls.key"),
            "ca_cert": format!("{TLS_DIR}/ca.crt"),
            "cert_ttl": CERT_TTL_SECONDS,
        });
    }
    if inst.audit.enabled {
        ours["audit"] = json!({
            "enabled": true,
            "dir": AUDIT_DIR,
            "rotation": inst.audit.rotation.as_str(),
            "max_log_files": inst.audit.max_log_files,
            "trust_forwarded_headers": inst.audit.trust_forwarded_headers,
        });
    }

    let mut merged = Value::Object(inst.user_config.clone());
    merge(&mut merged, ours);
    merged
}

/// The config file as YAML, as it is stored in the ConfigMap.
pub fn config_yaml(inst: &Instance) -> String {
    let header =
        "# Rendered by secure-qdrant-operator. Edit spec.config of the SecureQdrant instead.\n";
    let body = serde_yaml_ng::to_string(&config(inst)).expect("JSON values always serialize");
    format!("{header}{body}")
}

/// Deep-merges `over` into `base`; on conflict `over` wins, objects merge key by key.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Every leaf of a config value as a dotted path (`service.api_key`), for checks and tests.
pub fn leaf_paths(value: &Value) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// The config path a `QDRANT__A__B` env var sets (`a.b`), as Qdrant maps it; None for others.
pub fn env_to_config_path(name: &str) -> Option<String> {
    let rest = name.strip_prefix("QDRANT__")?;
    Some(
        rest.split("__")
            .collect::<Vec<_>>()
            .join(".")
            .to_lowercase(),
    )
}
