#!/usr/bin/env bash
# Regenerates every generated file the tests compare against. Never edit those files by hand.
#   crds/secure-qdrant-operator.yaml   <- `secure-qdrant-operator crd`
#   charts/secure-qdrant-operator/crds/secure-qdrant-operator.yaml   <- a copy of the above
#   tests/golden/<example>.yaml        <- `secure-qdrant-operator render deploy/examples/<example>.yaml`
#   deploy/secure-qdrant-operator.yaml <- the chart rendered with its default values, plus its CRDs
#                                         and the Namespace (tests/tools/helm_render.py --plain)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --locked
bin=target/debug/secure-qdrant-operator
"$bin" crd > crds/secure-qdrant-operator.yaml
cp crds/secure-qdrant-operator.yaml charts/secure-qdrant-operator/crds/secure-qdrant-operator.yaml
mkdir -p tests/golden
for example in deploy/examples/*.yaml; do
  "$bin" render "$example" > "tests/golden/$(basename "$example")"
done
./tests/tools/setup.sh
.venv/bin/python tests/tools/helm_render.py render --plain > deploy/secure-qdrant-operator.yaml
echo "regenerated crds/, the chart's CRDs, tests/golden/ and deploy/secure-qdrant-operator.yaml"
