#!/usr/bin/env bash
# Builds the test control plane into target/control-plane/ (or $CONTROL_PLANE_BIN_DIR):
#   control-plane      etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                      (one multi-call binary from k8s.io/kubernetes, pinned in ./go.mod)
#   kwok               fake nodes and pods (sigs.k8s.io/kwok, pinned in ./kwok/go.mod)
#   kwok-stages.yaml   kwok's "fast" node and pod stages, from the pinned kwok module
# Everything comes from the Go module proxy. Idempotent: Go's build cache decides, and an
# up-to-date binary is not relinked. Needs Go >= 1.26.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${CONTROL_PLANE_BIN_DIR:-$root/target/control-plane}"
if ! command -v go >/dev/null; then
  echo "error: Go >= 1.26 is needed to build the test control plane (tests/control-plane)" >&2
  exit 1
fi
export CGO_ENABLED=0
# VCS stamping would relink on every commit; the binaries carry nothing of this repository.
export GOFLAGS="-buildvcs=false -mod=readonly"
mkdir -p "$out"
# The version the components report (/version, kubectl version), as the release build stamps it.
k8s="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${k8s#v1.}"
minor="${minor%%.*}"
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done
(cd "$here" && go build -ldflags "$ldflags" -o "$out/control-plane" .)
(cd "$here/kwok" && go build -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)
kwok_dir="$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
stages="$out/kwok-stages.yaml.tmp"
{
  echo "# kwok's fast stages, from $(basename "$kwok_dir") (kustomize/stage/{node,pod}/fast)."
  for f in node/fast/node-initialize pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$kwok_dir/kustomize/stage/$f.yaml"
  done
} > "$stages"
if cmp -s "$stages" "$out/kwok-stages.yaml"; then
  rm "$stages"
else
  mv "$stages" "$out/kwok-stages.yaml"
fi
