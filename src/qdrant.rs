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
