#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv that the fidelity tests use:
# third-party clients (kubernetes, proxmoxer, ...) that talk to the lab.
# Idempotent; prints the interpreter path on success.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${TIDEPOOL_FIDELITY_VENV:-$root/target/fidelity-venv}"
req="$root/scripts/fidelity-requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
