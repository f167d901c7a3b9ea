#!/usr/bin/env bash
# Builds the upstream components the lab and the tests run beside Tidepool,
# from Go modules at pinned versions, into a cache outside the tree that
# later runs reuse (a second run with everything built takes well under a
# second). Nothing is downloaded but Go modules from the module proxy.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                  from k8s.io/kubernetes (through a wrapper module that
#                  repeats its replace directives for the k8s.io staging
#                  modules at the matching v0.x version)
#   etcd           from go.etcd.io/etcd/server/v3 (the etcd the apiserver
#                  of that Kubernetes release is tested with)
#   kwok           from sigs.k8s.io/kwok (simulated kubelets)
#   talosctl       from github.com/siderolabs/talos, at the Talos version
#                  the lab emulates
#   helm           from helm.sh/helm/v3
#   crane          from github.com/google/go-containerregistry
#
# Usage: scripts/upstream.sh [COMPONENT...]   (default: all)
# Missing components are built side by side, TIDEPOOL_UPSTREAM_JOBS (3) at
# a time; Go's module and build caches (~/go/pkg/mod, ~/.cache/go-build)
# are reused, so a new version rebuilds only what changed.
# Prints one line per component: `NAME PATH`. Components: kubernetes (the
# four binaries above), etcd, kwok, talosctl, helm, crane.
# TIDEPOOL_UPSTREAM_CACHE moves the cache (default ~/.cache/tidepool/upstream).
set -euo pipefail

cache="${TIDEPOOL_UPSTREAM_CACHE:-$HOME/.cache/tidepool/upstream}"

kubernetes_version=v1.33.13 # the apiserver the lab's emulator answers as (1.33)
staging_version=v0.33.13   # the k8s.io/* staging modules of that release
etcd_version=v3.5.21       # the etcd Kubernetes 1.33 is built and tested with
kwok_version=v0.7.0
talos_version=v1.10.6 # tidepool_lab_talos::DEFAULT_TALOS_VERSION
helm_version=v3.21.4
crane_version=v0.22.1

log() { echo "upstream: $*" >&2; }

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    log "no Go toolchain: install Go to build the upstream components"
    exit 1
  fi
}

# replace_directives MODULE VERSION NESTED_VERSION
# The replace directives of MODULE@VERSION's go.mod, with every replacement
# by a local directory (k8s.io/kubernetes' ./staging/src/k8s.io/api, Talos'
# ./pkg/machinery) turned into the published module at NESTED_VERSION.
replace_directives() {
  local module=$1 version=$2 nested=$3 gomod
  gomod=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  awk -v nested="$nested" '
    /^replace \($/ { block = 1; next }
    block && /^\)/ { block = 0; next }
    /^replace / { sub(/^replace /, ""); line = $0 }
    block { line = $0 }
    line != "" {
      sub(/\/\/.*/, "", line)
      n = split(line, f, " ")
      if (n >= 3 && f[2] == "=>") {
        if (f[3] ~ /^\.\.?\//) print "replace " f[1] " => " f[1] " " nested
        else print "replace " line
      }
      line = ""
    }
  ' "$gomod"
}

# build_wrapped NAME MODULE VERSION NESTED_VERSION LDFLAGS PACKAGE...
# Builds each PACKAGE (a main package of MODULE) from a throwaway module
# that requires MODULE@VERSION with MODULE's own replace directives, into
# $cache/NAME-VERSION/. Skips the build when every binary is already there.
build_wrapped() {
  local name=$1 module=$2 version=$3 nested=$4 ldflags=$5
  shift 5
  local out="$cache/$name-$version" pkg missing=0
  for pkg in "$@"; do
    [ -x "$out/$(basename "$pkg")" ] || missing=1
  done
  if [ "$missing" = 1 ]; then
    need_go
    log "building $name $version from Go modules (once; cached in $out)"
    local src
    src=$(mktemp -d)
    {
      echo "module tidepool.dev/upstream/$name"
      echo
      echo "go 1.24"
      echo
      echo "require $module $version"
      replace_directives "$module" "$version" "$nested"
    } > "$src/go.mod"
    {
      echo "//go:build tools"
      echo
      echo "// Package tools names the upstream commands this module builds."
      echo "package tools"
      echo
      echo "import ("
      for pkg in "$@"; do echo "	_ \"$pkg\""; done
      echo ")"
    } > "$src/tools.go"
    mkdir -p "$out"
    (
      cd "$src"
      GOFLAGS=-mod=mod go mod tidy >&2
      # One go build for every command of the module: the packages they
      # share are compiled once and the links run in parallel.
      mkdir -p "$out/.tmp"
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/.tmp/" "$@" >&2
      for pkg in "$@"; do
        mv "$out/.tmp/$(basename "$pkg")" "$out/$(basename "$pkg")"
      done
      rmdir "$out/.tmp"
    )
    rm -rf "$src"
  fi
  for pkg in "$@"; do
    echo "$(basename "$pkg") $out/$(basename "$pkg")"
  done
}

kubernetes() {
  local minor=${kubernetes_version#v1.}
  minor=${minor%%.*}
  local v="k8s.io/component-base/version" c="k8s.io/client-go/pkg/version"
  local ldflags="-s -w"
  for pkg in $v $c; do
    ldflags+=" -X $pkg.gitVersion=$kubernetes_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  build_wrapped kubernetes k8s.io/kubernetes "$kubernetes_version" "$staging_version" "$ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
}

etcd() {
  local out="$cache/etcd-$etcd_version"
  if [ ! -x "$out/etcd" ]; then
    need_go
    log "building etcd $etcd_version from Go modules (once; cached in $out)"
    local src
    src=$(mktemp -d)
    printf 'module tidepool.dev/upstream/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
      "$etcd_version" > "$src/go.mod"
    # The etcd command is a one-line main around etcdmain.
    cat > "$src/main.go" <<'GO'
// Command etcd runs the etcd server of go.etcd.io/etcd/server/v3.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    mkdir -p "$out"
    (cd "$src" && GOFLAGS=-mod=mod go mod tidy >&2 &&
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" . >&2)
    mv "$out/etcd.tmp" "$out/etcd"
    rm -rf "$src"
  fi
  echo "etcd $out/etcd"
}

kwok() {
  build_wrapped kwok sigs.k8s.io/kwok "$kwok_version" "$kwok_version" \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version" \
    sigs.k8s.io/kwok/cmd/kwok
}

talosctl() {
  build_wrapped talos github.com/siderolabs/talos "$talos_version" "$talos_version" \
    "-s -w -X github.com/siderolabs/talos/pkg/machinery/version.Tag=$talos_version" \
    github.com/siderolabs/talos/cmd/talosctl
}

helm() {
  build_wrapped helm helm.sh/helm/v3 "$helm_version" "$helm_version" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
    helm.sh/helm/v3/cmd/helm
}

crane() {
  build_wrapped crane github.com/google/go-containerregistry "$crane_version" "$crane_version" \
    "-s -w" github.com/google/go-containerregistry/cmd/crane
}

components=("$@")
if [ ${#components[@]} = 0 ] || [ "${components[0]}" = all ]; then
  components=(kubernetes etcd kwok talosctl helm crane)
fi
for c in "${components[@]}"; do
  case "$c" in
    kubernetes | etcd | kwok | talosctl | helm | crane) ;;
    *)
      log "unknown component '$c' (kubernetes, etcd, kwok, talosctl, helm, crane)"
      exit 2
      ;;
  esac
done
# Components are built side by side, at most $jobs at once, so one's module
# downloads and links overlap another's compiling; their lines are printed
# in the order asked.
jobs=${TIDEPOOL_UPSTREAM_JOBS:-3}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
pids=()
for c in "${components[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  "$c" > "$results/$c" &
  pids+=("$!")
done
status=0
for i in "${!components[@]}"; do
  if ! wait "${pids[$i]}"; then
    log "building ${components[$i]} failed"
    status=1
  fi
done
[ "$status" = 0 ] || exit 1
for c in "${components[@]}"; do
  cat "$results/$c"
done
