#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, golden files, manifest checks
# with kubernetes-validate and checkov, reconcile tests against a mocked API).
# Tests that need a real cluster are skipped unless KUBECONFIG points at one (they say so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Incremental caches double the size of target/ and buy nothing on a fresh clone.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
./tests/tools/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
