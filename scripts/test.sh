#!/usr/bin/env bash
# Runs Tidepool's whole test suite: first installs what the tests need and
# a fresh machine may lack (cargo-nextest; kubectl, built from Go modules
# when missing; a Python virtualenv with third-party Kubernetes and Proxmox
# clients), then every test of the workspace.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
KUBECTL=$("$root/scripts/tools.sh")
export KUBECTL
TIDEPOOL_FIDELITY_PYTHON=$("$root/scripts/fidelity-venv.sh")
export TIDEPOOL_FIDELITY_PYTHON
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
