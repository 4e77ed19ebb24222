#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, golden files, manifest checks
# with kubernetes-validate and checkov, reconcile tests against a mocked API, and the operator
# binary against a real control plane built from Go modules: tests/real_api.rs, and the CRD
# rules, the chart's admission policy and ownership there: tests/real_api_rules.rs).
# The tests that need a real cluster (tests/e2e_kind.rs) are #[ignore]d: cargo test lists each
# as ignored with what it would check. tests/e2e/kind.sh makes a kind cluster and runs them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Incremental caches double the size of target/ and buy nothing on a fresh clone.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
./tests/tools/setup.sh
# cargo-auditable, rust-audit-info (tests/sbom.rs) and actionlint (tests/release_workflow.rs),
# pinned, into target/tools/bin; a no-op when up to date.
./tests/tools/build-tools.sh
# The real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok,
# kubectl) from the Go module proxy into target/control-plane; a no-op when up to date. Needs
# Go >= 1.26: without it this fails, the real-API tests are never skipped.
time ./tests/control-plane/build.sh
# promtool and promql-names (tests/monitoring.rs: the alert rules and the dashboard's queries),
# pinned in tests/tools/promtool/go.mod, into target/promtool; a no-op when up to date.
time ./tests/tools/promtool/build.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
