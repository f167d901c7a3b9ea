#!/usr/bin/env bash
# Runs Tidepool's whole test suite: first installs what the tests need and
# a fresh machine may lack:
#
# - cargo-nextest, and kubectl built from Go modules when missing
#   (scripts/tools.sh);
# - a Python virtualenv with third-party Kubernetes, Proxmox and MCP
#   clients (scripts/fidelity-venv.sh);
# - the upstream components the tests run, built from Go modules
#   (scripts/upstream.sh: kube-apiserver and friends, etcd, kwok, talosctl,
#   helm, and crane, which assembles the release image), linked
#   into one directory passed as TIDEPOOL_UPSTREAM_BIN (TIDEPOOL_HELM for
#   the chart tests);
# - the release artifacts (scripts/release.sh: the static binary without
#   the lab and the OCI image around it, from a dev-profile build), passed
#   as TIDEPOOL_RELEASE_DIR;
# then every test of the workspace, then the end-to-end scenario suites a
# second time with the lab on the real control plane
# (TIDEPOOL_LAB_KUBERNETES=upstream). Everything slow is cached outside the
# tree (~/.cache/tidepool, Go's caches), so only the first run on a machine
# pays for it.
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
done < <("$root/scripts/upstream.sh" kubernetes etcd kwok talosctl helm crane)
export TIDEPOOL_UPSTREAM_BIN="$bin"
export TIDEPOOL_HELM="$bin/helm"
# The artifacts are checked from a dev-profile build (the optimised one
# costs ~23 CPU-minutes more; `scripts/release.sh` alone builds that).
export TIDEPOOL_RELEASE_PROFILE=${TIDEPOOL_RELEASE_PROFILE:-dev}
TIDEPOOL_RELEASE_DIR=$("$root/scripts/release.sh")
export TIDEPOOL_RELEASE_DIR

if cargo nextest --version >/dev/null 2>&1; then
  run=(cargo nextest run --no-fail-fast)
else
  run=(cargo test --no-fail-fast)
fi
"${run[@]}" --workspace "$@"
# The scenario suites against the real control plane: burst, TTL, spot
# preemption, GPU placement, a drain against a PodDisruptionBudget, crash
# safety and failover, reconciliation, the CLI and MCP against a
# lab, the deploy manifests, and the lab's own end-to-end checks. Each test
# starts its own etcd, API server, scheduler, controller-manager and kwok,
# so two run at a time.
NEXTEST_TEST_THREADS=2 RUST_TEST_THREADS=2 TIDEPOOL_LAB_KUBERNETES=upstream "${run[@]}" \
  -p tidepool-runtime --test live_scenarios --test live_autoscale --test live_faults \
  --test live_run --test live_recon \
  -p tidepool --test cli_lab --test deploy \
  -p tidepool-lab --test lab_end_to_end --test lab_upstream "$@"
