//! secure-qdrant-operator: turns a `SecureQdrant` into a hardened Qdrant cluster.
//!
//! Layout: `crd` (the API types) → `validate` (spec to [`validate::Instance`]) → `children`
//! (pure builders, one per kind) with `qdrant` (Qdrant's config) and `api_keys` (generated keys)
//! → `reconcile` (the pipeline and its I/O) → `controller` (watches and the loop).

#![forbid(unsafe_code)]
// No function of src/ over 80 lines (threshold in clippy.toml; an error under `-D warnings`).
#![warn(clippy::too_many_lines)]

pub mod access_tokens;
pub mod api_keys;
pub mod children;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod error;
pub mod events;
pub mod leader;
pub mod material;
pub mod qdrant;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod settings;
pub mod statefulset_view;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod validate;
