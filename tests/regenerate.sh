#!/usr/bin/env bash
# Regenerates every generated file the tests compare against. Never edit those files by hand.
#   crds/secure-qdrant-operator.yaml   <- `secure-qdrant-operator crd`
#   tests/golden/<example>.yaml        <- `secure-qdrant-operator render deploy/examples/<example>.yaml`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --locked
bin=target/debug/secure-qdrant-operator
"$bin" crd > crds/secure-qdrant-operator.yaml
mkdir -p tests/golden
for example in deploy/examples/*.yaml; do
  "$bin" render "$example" > "tests/golden/$(basename "$example")"
done
echo "regenerated crds/ and tests/golden/"
