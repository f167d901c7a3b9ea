#!/usr/bin/env bash
# Runs Tidepool's whole test suite: first installs what the tests need and
# a fresh machine may lack, then every test of the workspace.
#
# - cargo-nextest, and kubectl built from Go modules when missing
#   (scripts/tools.sh);
# - a Python virtualenv with third-party Kubernetes, Proxmox and MCP
#   clients (scripts/fidelity-venv.sh);
# - the upstream components built from Go modules (scripts/upstream.sh:
#   kube-apiserver and friends, etcd, kwok, talosctl, helm, crane), linked
#   into one directory passed as TIDEPOOL_UPSTREAM_BIN (TIDEPOOL_HELM for
#   the chart tests);
# Everything slow is cached outside the tree (~/.cache/tidepool, Go's
# caches), so only the first run on a machine pays for it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
KUBECTL=$("$root/scripts/tools.sh")
export KUBECTL
TIDEPOOL_FIDELITY_PYTHON=$("$root/scripts/fidelity-venv.sh")
export TIDEPOOL_FIDELITY_PYTHON

bin="${TIDEPOOL_UPSTREAM_CACHE:-$HOME/.cache/tidepool/upstream}/bin"
mkdir -p "$bin"
while read -r name path; do
  ln -sf "$path" "$bin/$name"
done < <("$root/scripts/upstream.sh")
export TIDEPOOL_UPSTREAM_BIN="$bin"
export TIDEPOOL_HELM="$bin/helm"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
