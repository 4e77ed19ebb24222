#!/usr/bin/env bash
# The kind end-to-end suite (issue 6).
#
# 1. Creates a kind cluster without kind's default CNI and installs Calico, which enforces
#    NetworkPolicies (kind's own CNI ignores them, so the network tests would prove nothing).
# 2. Builds the operator image with docker and loads it (and the Qdrant and curl images the tests
#    use) into the cluster with `kind load docker-image`.
# 3. Installs the operator from charts/secure-qdrant-operator with helm. Without the chart, it
#    installs the CRDs and runs the operator binary on this machine against the cluster instead.
# 4. Runs `cargo test --test e2e_kind -- --include-ignored --test-threads=1` with E2E_KIND=1
#    (tests/e2e_kind.rs: its cluster tests are #[ignore]d, so a plain `cargo test` skips them).
#
# Usage:
#   tests/e2e/kind.sh                      # everything; the cluster is deleted at the end
#   KEEP_CLUSTER=1 tests/e2e/kind.sh       # keep it (a re-run reuses it and reinstalls)
#   tests/e2e/kind.sh rotates              # arguments after the script filter the tests
#
# Needs: kind, docker, kubectl, helm (unless E2E_INSTALL=host), cargo, git.
# Settings (environment): KIND_CLUSTER, KIND_NODE_IMAGE, KIND_WORKERS, CALICO_VERSION,
# IMAGE_REPOSITORY, IMAGE_TAG, QDRANT_IMAGE, E2E_CURL_IMAGE, E2E_INSTALL (auto|helm|host),
# E2E_PRELOAD (1: pull and load the Qdrant and curl images), E2E_KEEP (1: keep test namespaces),
# E2E_INTERNET_URL (an internet address the control pod must reach).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER:-secure-qdrant-e2e}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.33.1}"
WORKERS="${KIND_WORKERS:-2}"
CALICO_VERSION="${CALICO_VERSION:-v3.29.1}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-secure-qdrant-operator}"
IMAGE_TAG="${IMAGE_TAG:-e2e-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo dev)}"
QDRANT_IMAGE="${QDRANT_IMAGE:-docker.io/qdrant/qdrant:v1.19.0-unprivileged}"
export E2E_CURL_IMAGE="${E2E_CURL_IMAGE:-curlimages/curl:8.11.1}"
INSTALL="${E2E_INSTALL:-auto}"
PRELOAD="${E2E_PRELOAD:-1}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
NAMESPACE=secure-qdrant-operator
RELEASE=secure-qdrant-operator
CHART="$ROOT/charts/secure-qdrant-operator"
WORK="$ROOT/target/e2e"
# A kubeconfig of its own: the user's ~/.kube/config is never touched.
export KUBECONFIG="$WORK/kubeconfig"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

need kind "https://kind.sigs.k8s.io"
need docker "to build the operator image"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need cargo "https://rustup.rs"
if [[ "$INSTALL" == auto ]]; then
  if [[ -f "$CHART/Chart.yaml" ]]; then INSTALL=helm; else INSTALL=host; fi
fi
[[ "$INSTALL" == helm || "$INSTALL" == host ]] || die "E2E_INSTALL must be auto, helm or host"
[[ "$INSTALL" == host ]] || need helm "https://helm.sh/docs/intro/install/"
mkdir -p "$WORK"

HOST_OPERATOR_PID=""
on_exit() {
  status=$?
  if [[ $status -ne 0 ]]; then
    log "failed (exit $status): diagnostics"
    kubectl get secureqdrants,qdrantaccesstokens,pods -A -o wide 2>/dev/null || true
    if [[ "$INSTALL" == helm ]]; then
      kubectl -n "$NAMESPACE" logs -l "app.kubernetes.io/instance=$RELEASE" --all-containers \
        --tail=300 2>/dev/null || true
    else
      tail -n 300 "$WORK/operator.log" 2>/dev/null || true
    fi
  fi
  if [[ -n "$HOST_OPERATOR_PID" ]]; then
    kill "$HOST_OPERATOR_PID" 2>/dev/null || true
  fi
  if [[ "$KEEP_CLUSTER" == 1 ]]; then
    log "keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG)"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}
trap on_exit EXIT

# --- 1. cluster with Calico -------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
  log "creating kind cluster $CLUSTER ($NODE_IMAGE, $WORKERS workers, no default CNI)"
  {
    echo "kind: Cluster"
    echo "apiVersion: kind.x-k8s.io/v1alpha4"
    echo "networking: {disableDefaultCNI: true, podSubnet: 192.168.0.0/16}"
    echo "nodes:"
    echo "  - role: control-plane"
    for _ in $(seq 1 "$WORKERS"); do echo "  - role: worker"; done
  } >"$WORK/kind.yaml"
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$WORK/kind.yaml" \
    --kubeconfig "$KUBECONFIG" --wait 0s
fi

log "installing Calico $CALICO_VERSION (enforces NetworkPolicies)"
kubectl apply --server-side --force-conflicts \
  -f "https://raw.githubusercontent.com/projectcalico/calico/$CALICO_VERSION/manifests/calico.yaml"
kubectl -n kube-system rollout status daemonset/calico-node --timeout=10m
kubectl -n kube-system rollout status deployment/calico-kube-controllers --timeout=10m
kubectl wait --for=condition=Ready nodes --all --timeout=10m
kubectl -n kube-system rollout status deployment/coredns --timeout=5m

# --- 2. images ----------------------------------------------------------------------------------
IMAGE="$IMAGE_REPOSITORY:$IMAGE_TAG"
if [[ "$INSTALL" == helm ]]; then
  log "building $IMAGE"
  docker build -t "$IMAGE" "$ROOT"
  kind load docker-image --name "$CLUSTER" "$IMAGE"
fi
if [[ "$PRELOAD" == 1 ]]; then
  log "preloading $QDRANT_IMAGE and $E2E_CURL_IMAGE"
  for image in "$QDRANT_IMAGE" "$E2E_CURL_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image"
    kind load docker-image --name "$CLUSTER" "$image"
  done
fi

# --- 3. the operator ----------------------------------------------------------------------------
if [[ "$INSTALL" == helm ]]; then
  log "installing the chart ($IMAGE)"
  helm upgrade --install "$RELEASE" "$CHART" \
    --namespace "$NAMESPACE" --create-namespace \
    --set "image.repository=$IMAGE_REPOSITORY,image.tag=$IMAGE_TAG,image.pullPolicy=IfNotPresent" \
    --wait --timeout 5m
  kubectl get crd secureqdrants.secureqdrant.dev qdrantaccesstokens.secureqdrant.dev
else
  log "no chart at $CHART: installing the CRDs and running the operator on this machine"
  kubectl apply --server-side --force-conflicts -f "$ROOT/crds/"
  kubectl wait --for=condition=Established crd --all --timeout=2m
  cargo build --release --bin secure-qdrant-operator --manifest-path "$ROOT/Cargo.toml"
  "$ROOT/target/release/secure-qdrant-operator" run --log-format json \
    >"$WORK/operator.log" 2>&1 &
  HOST_OPERATOR_PID=$!
  sleep 3
  kill -0 "$HOST_OPERATOR_PID" 2>/dev/null || die "the operator exited: $(tail -n 20 "$WORK/operator.log")"
fi

# --- 4. the suite -------------------------------------------------------------------------------
log "running tests/e2e_kind.rs"
cd "$ROOT"
E2E_KIND=1 cargo test --test e2e_kind -- --include-ignored --test-threads=1 --nocapture "$@"
log "kind end-to-end suite passed"
