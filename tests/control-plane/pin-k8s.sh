#!/usr/bin/env bash
# Pins the test control plane to one Kubernetes release: ./pin-k8s.sh v1.34.0
# Rewrites go.mod's require of k8s.io/kubernetes and one replace line per staging module (read
# from that release's own go.mod, its "=> ./staging/src/" lines), then tidies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version="${1:?usage: $0 vX.Y.Z}"
staging="v0.${version#v1.}"
mod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
go mod edit -require="k8s.io/kubernetes@$version"
for m in $(grep -E '=> \./staging/src/' "$mod" | awk '{print $1}'); do
  go mod edit -replace="$m=$m@$staging"
done
go mod tidy
