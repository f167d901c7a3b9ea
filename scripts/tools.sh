#!/usr/bin/env bash
# Makes sure the tools the test suite drives are on this machine, installing
# what is missing from the package registries, and prints the kubectl to use.
#
# - kubectl: the machine's own when it has one; otherwise built once from the
#   k8s.io/kubectl Go module (pinned below) into a cache outside the tree.
# - cargo-nextest: compiled from crates.io with `cargo install` when missing
#   (it lands in ~/.cargo/bin, so later runs reuse it).
# - chromium: Debian's package, for the web dashboard's browser test.
#
# Usage: KUBECTL=$(scripts/tools.sh). Set TIDEPOOL_TOOLS_CACHE to move the
# cache; TIDEPOOL_BUILD_KUBECTL=1 builds kubectl even when one is installed.
set -euo pipefail

cache="${TIDEPOOL_TOOLS_CACHE:-$HOME/.cache/tidepool/tools}"
kubectl_module_version=v0.32.4 # the kubectl of Kubernetes 1.32
kubectl_git_version=v1.32.4   # what `kubectl version` reports
nextest_version=0.9.151

log() { echo "tools: $*" >&2; }

build_kubectl() {
  local out="$cache/kubectl-$kubectl_module_version/kubectl"
  if [ -x "$out" ]; then
    echo "$out"
    return
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "no kubectl and no Go toolchain to build one: install Go or Debian's kubernetes-client"
    exit 1
  fi
  log "building kubectl $kubectl_module_version from Go modules (once; cached in $cache)"
  local src
  src=$(mktemp -d)
  cat > "$src/go.mod" <<MOD
module tidepool.dev/tools/kubectl

go 1.23

require k8s.io/kubectl $kubectl_module_version
MOD
  # The upstream command's main, in a module of our own: the kubectl
  # command tree of k8s.io/kubectl, run the way the upstream binary runs it.
  cat > "$src/main.go" <<'GO'
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
GO
  (cd "$src" && go mod tidy >&2 && mkdir -p "$(dirname "$out")" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-X k8s.io/component-base/version.gitVersion=$kubectl_git_version -X k8s.io/client-go/pkg/version.gitVersion=$kubectl_git_version" \
    -o "$out.tmp" . >&2)
  mv "$out.tmp" "$out"
  rm -rf "$src"
  echo "$out"
}

kubectl_path() {
  if [ "${TIDEPOOL_BUILD_KUBECTL:-}" != 1 ]; then
    if [ -n "${KUBECTL:-}" ] && [ -x "${KUBECTL}" ]; then
      echo "$KUBECTL"
      return
    fi
    if command -v kubectl >/dev/null 2>&1; then
      command -v kubectl
      return
    fi
  fi
  build_kubectl
}

ensure_nextest() {
  if cargo nextest --version >/dev/null 2>&1; then
    return
  fi
  log "installing cargo-nextest $nextest_version (compiled once from crates.io)"
  cargo install --locked --quiet cargo-nextest --version "$nextest_version" >&2
}

# Headless Chromium for the web dashboard's browser tests: Debian's
# package (the only browser source these machines reach).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return
  fi
  local sudo=
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      log "no chromium, and neither root nor sudo to install Debian's package: install 'chromium'"
      exit 1
    fi
    sudo=sudo
  fi
  log "installing Debian's chromium (once)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    chromium fonts-dejavu-core >&2
}

mkdir -p "$cache"
ensure_nextest
ensure_chromium
kubectl_path
