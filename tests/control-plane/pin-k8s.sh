#!/usr/bin/env bash
# Pins the test control plane to one Kubernetes release: ./pin-k8s.sh v1.33.13
# Rewrites go.mod from scratch: k8s.io/kubernetes at that release, the embedded etcd server at the
# etcd client version of that release, and one replace line per staging module (read from that
# release's own go.mod, its "=> ./staging/src/" lines); then tidies (go.sum anew).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version="${1:?usage: $0 vX.Y.Z}"
staging="v0.${version#v1.}"
mod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
etcd="$(grep -E '^\s+go.etcd.io/etcd/client/v3 ' "$mod" | awk '{print $2}')"
{
  echo 'module github.com/secure-qdrant-operator/tests/control-plane'
  echo
  echo 'go 1.26'
  echo
  echo 'require ('
  echo "	go.etcd.io/etcd/server/v3 $etcd"
  echo "	k8s.io/kubernetes $version"
  echo ')'
  echo
  echo '// Every staging module of k8s.io/kubernetes at the release that matches it (k/k itself'
  echo '// requires them at v0.0.0 and replaces them with ./staging/src paths).'
  echo '// Written by ./pin-k8s.sh VERSION: this file is the one place the version is pinned.'
  echo 'replace ('
  grep -E '=> \./staging/src/' "$mod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
  echo ')'
} > go.mod
rm -f go.sum
go mod tidy
