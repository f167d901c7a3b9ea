#!/usr/bin/env bash
# Tidepool's planner and Karpenter's provisioning scheduler, on this
# machine, in one run, on the closest comparable workload (see
# crates/core/benches/karpenter_workload.rs and
# scripts/bench-scheduler/tidepool_sizes_test.go):
#
#   1. Tidepool: `cargo bench -p tidepool-core --bench karpenter_workload`
#      (Karpenter's generic pods into one pool of three sizes); it prints
#      the sizes' allocatable on a SIZES line.
#   2. Karpenter: sigs.k8s.io/karpenter at $karpenter_version, from the Go
#      module proxy, copied out of the module cache into
#      ~/.cache/tidepool/karpenter-<version> with our benchmark file added
#      to pkg/controllers/provisioning/scheduling, built once with the
#      test_performance tag; then BenchmarkTidepoolSizes* (the same pods,
#      instance types with the sizes' allocatable) and Karpenter's own
#      BenchmarkScheduling1000 and 10000 (diverse pods, 400 instance
#      types) for reference.
#   3. A table: pods/s of both and the ratio.
#
# Usage: scripts/bench-scheduler.sh [COUNT...]   (default 1000 5000 10000 20000)
# Go builds run under `nice -n 10`. Needs Go and cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
karpenter_version=v1.13.0 # the newest that builds with Go 1.26.8 (v1.14 wants 1.26.10)
cache="$HOME/.cache/tidepool/karpenter-$karpenter_version"
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 5000 10000 20000)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== Tidepool planner (release build)" >&2
(cd "$root" && cargo bench -q -p tidepool-core --bench karpenter_workload -- "${counts[@]}") | tee "$out/tidepool"
sizes=$(sed -n 's/^SIZES //p' "$out/tidepool")

echo "== Karpenter $karpenter_version provisioning scheduler" >&2
pkg=pkg/controllers/provisioning/scheduling
if [ ! -x "$cache/scheduling.test" ] ||
  ! cmp -s "$root/scripts/bench-scheduler/tidepool_sizes_test.go" "$cache/src/$pkg/tidepool_sizes_test.go"; then
  src=$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/karpenter@$karpenter_version" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$cache/src"
  mkdir -p "$cache"
  cp -r "$src" "$cache/src"
  chmod -R u+w "$cache/src"
  cp "$root/scripts/bench-scheduler/tidepool_sizes_test.go" "$cache/src/$pkg/"
  (cd "$cache/src" && nice -n 10 go test -c -tags test_performance -o "$cache/scheduling.test.tmp" "./$pkg" >&2)
  mv "$cache/scheduling.test.tmp" "$cache/scheduling.test"
fi
pattern="BenchmarkTidepoolSizes($(IFS='|'; echo "${counts[*]}"))\$|BenchmarkScheduling(1000|10000)\$"
(cd "$cache/src/$pkg" && TIDEPOOL_SIZES="$sizes" "$cache/scheduling.test" \
  -test.run XXX -test.bench "$pattern" -test.benchtime 3x -test.count 3) | tee "$out/karpenter"

echo
echo "Side by side (Karpenter: median of three runs of three solves; Tidepool: median wall time)"
echo "| pods | Tidepool pods/s | Tidepool workers | Karpenter pods/s | Karpenter nodes | ratio (Tidepool / Karpenter) |"
echo "|---:|---:|---|---:|---|---:|"
for n in "${counts[@]}"; do
  t_rate=$(awk -F'|' -v n="$n" '$2 ~ "^ "n" $" {gsub(/ /, "", $4); print $4}' "$out/tidepool")
  t_mix=$(awk -F'|' -v n="$n" '$2 ~ "^ "n" $" {sub(/^ /, "", $5); sub(/ $/, "", $5); print $5}' "$out/tidepool")
  k_rate=$(awk -v n="$n" '$1 ~ "^BenchmarkTidepoolSizes"n"(-[0-9]+)?$" {for (i = 2; i < NF; i++) if ($(i+1) == "pods/sec") print $i}' "$out/karpenter" |
    sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}')
  k_mix=$(awk -v n="$n" '$1 ~ "^BenchmarkTidepoolSizes"n"(-[0-9]+)?$" {s = ""; for (i = 2; i < NF; i++) if ($(i+1) ~ /^(small|medium|large|nodes)$/) s = s $i " " $(i+1) " "; print s; exit}' "$out/karpenter")
  ratio=$(awk -v t="$t_rate" -v k="$k_rate" 'BEGIN {if (k > 0) printf "%.0f", t / k; else print "-"}')
  echo "| $n | $t_rate | $t_mix | ${k_rate%.*} | $k_mix | $ratio× |"
done
