#!/usr/bin/env bash
# Assembles Tidepool's OCI image from a static binary, without a container
# engine: one layer (the binary as /tidepool, an /etc/passwd naming the
# non-root user 65532, an empty /tmp and the CA bundle), put together by
# go-containerregistry's crane (built by scripts/upstream.sh) against its
# own in-process registry on loopback, then saved as an OCI layout and a
# tarball. No shell, no package manager: the entrypoint is `tidepool`.
#
# Usage: scripts/image.sh BINARY OUT   (writes OUT/oci and OUT/image.tar)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=$1
out=$2
version=$(grep -m1 '^version = ' "$root/Cargo.toml" | sed 's/.*"\(.*\)"/\1/')
crane=$("$root/scripts/upstream.sh" crane | awk '{print $2}')

work=$(mktemp -d)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

rootfs="$work/rootfs"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/tidepool"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
fi
# A reproducible layer: sorted, owned by root, timestamps at the epoch.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -C "$rootfs" -cf "$work/layer.tar" .

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$crane" registry serve --address "127.0.0.1:$port" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do
  if "$crane" catalog "127.0.0.1:$port" --insecure > /dev/null 2>&1; then break; fi
  sleep 0.1
done
ref="127.0.0.1:$port/tidepool:$version"
"$crane" append --insecure --oci-empty-base -f "$work/layer.tar" -t "$ref" > /dev/null
"$crane" mutate --insecure "$ref" \
  --set-platform linux/amd64 \
  --entrypoint /tidepool \
  --user 65532:65532 \
  --workdir / \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label "org.opencontainers.image.title=tidepool" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.description=Elastic Kubernetes worker pools on Proxmox VE" \
  > /dev/null
rm -rf "$out/oci" "$out/image.tar"
mkdir -p "$out"
"$crane" pull --insecure --format oci "$ref" "$out/oci"
"$crane" pull --insecure "$ref" "$out/image.tar"
echo "image: $out/oci and $out/image.tar ($("$crane" digest --insecure "$ref"))" >&2
