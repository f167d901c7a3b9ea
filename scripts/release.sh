#!/usr/bin/env bash
# Builds Tidepool's release artifacts into OUT (default target/release-artifacts):
#   tidepool        the static binary (x86_64 Linux, glibc linked in, no
#                   dynamic loader needed) without the lab: the default-on
#                   `lab` feature is off, so the emulators are not shipped
#   oci/            the OCI image (an OCI image layout directory)
#   image.tar       the same image as a tarball `docker load`/`podman load` take
# TIDEPOOL_RELEASE_PROFILE picks the cargo profile: `release` (the default,
# what we ship) or `dev` (what scripts/test.sh uses to check the artifacts:
# the same static link and image, a fraction of the optimised build's time).
# The build has its own target directory outside the tree
# (TIDEPOOL_RELEASE_TARGET, default ~/.cache/tidepool/release-target), so a
# second run only rebuilds what changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/release-artifacts}
target_dir=${TIDEPOOL_RELEASE_TARGET:-$HOME/.cache/tidepool/release-target}
profile=${TIDEPOOL_RELEASE_PROFILE:-release}
triple=x86_64-unknown-linux-gnu
case "$profile" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "release.sh: TIDEPOOL_RELEASE_PROFILE must be release or dev, not \`$profile\`" >&2; exit 2 ;;
esac

# --target keeps RUSTFLAGS off build scripts and proc macros: only the
# binary is linked statically.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile "$profile" --locked \
  -p tidepool --no-default-features --target "$triple" --target-dir "$target_dir" >&2
mkdir -p "$out"
cp "$target_dir/$triple/$dir/tidepool" "$out/tidepool"
"$root/scripts/image.sh" "$out/tidepool" "$out"
echo "$out"
