#!/usr/bin/env bash
# Installs the Python tools the test suite runs (kubernetes-validate, checkov, hadolint and the
# Helm SDK helm-python-sdk, from tests/tools/requirements.txt) into ./.venv.
# Idempotent: does nothing when .venv already matches tests/tools/requirements.txt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.venv"
req="$root/tests/tools/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
echo "installed Python test tools into $venv"
