#!/usr/bin/env bash
# Builds into target/promtool/ (or $PROMTOOL_BIN_DIR):
#   promtool       github.com/prometheus/prometheus/cmd/promtool, the version pinned in ./go.mod
#                  (the one place): `promtool check rules` and `promtool test rules` of the
#                  chart's alert rules, `check rules` of the Grafana dashboard's queries
#   promql-names   ./promql-names: the metric names of PromQL expressions, with the same
#                  version's parser (tests/monitoring.rs checks them against real /metrics)
# Everything comes from the Go module proxy. Idempotent: Go's build cache decides, and an
# up-to-date binary is not relinked. Needs Go >= 1.26.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${PROMTOOL_BIN_DIR:-$root/target/promtool}"
if ! command -v go >/dev/null; then
  echo "error: Go >= 1.26 is needed to build promtool (tests/tools/promtool)" >&2
  exit 1
fi
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=readonly"
mkdir -p "$out"
version="$(cd "$here" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)"
(cd "$here" && go build \
  -ldflags "-X github.com/prometheus/common/version.Version=$version" \
  -o "$out/promtool" github.com/prometheus/prometheus/cmd/promtool)
# PromQL expressions -> the metric names they select (Prometheus's parser, same version).
(cd "$here" && go build -o "$out/promql-names" ./promql-names)
