#!/usr/bin/env bash
# Runs Tidepool's whole test suite: first installs what the tests need and
# a fresh machine may lack (cargo-nextest; kubectl, built from Go modules
# when missing; a Python virtualenv with third-party Kubernetes and Proxmox
# clients; etcd, the Kubernetes control plane and kwok, built from Go
# modules by scripts/upstream.sh into a cache outside the tree), then every
# test of the workspace, then the end-to-end scenario suites a second time
# with the lab on the real control plane (TIDEPOOL_LAB_KUBERNETES=upstream).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
KUBECTL=$("$root/scripts/tools.sh")
export KUBECTL
TIDEPOOL_FIDELITY_PYTHON=$("$root/scripts/fidelity-venv.sh")
export TIDEPOOL_FIDELITY_PYTHON
# The directories of the upstream binaries, PATH-style, for the lab.
TIDEPOOL_UPSTREAM_BIN=$("$root/scripts/upstream.sh" etcd kubernetes kwok |
  awk '{print $2}' | xargs -n1 dirname | sort -u | paste -sd:)
export TIDEPOOL_UPSTREAM_BIN
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
