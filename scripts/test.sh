#!/usr/bin/env bash
# Runs Tidepool's whole test suite: installs what the fidelity tests need
# (a Python virtualenv with third-party Kubernetes and Proxmox clients),
# then every test of the workspace.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
TIDEPOOL_FIDELITY_PYTHON=$("$root/scripts/fidelity-venv.sh")
export TIDEPOOL_FIDELITY_PYTHON
if ! command -v kubectl >/dev/null 2>&1 && [ -z "${KUBECTL:-}" ]; then
  echo "kubectl not found: the Kubernetes fidelity tests need it (Debian package kubernetes-client)" >&2
  exit 1
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
