//! The keys of Qdrant's config file that `spec.config` may set, and those it may not: the CRD
//! schema declares them, `crate::validate` enforces them, `crate::qdrant` renders over them.

use serde_json::Value;

/// The schema's maxLength of an allowed string key of `spec.config` (`log_level`).
pub const MAX_CONFIG_STRING_LEN: usize = 64;

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
