#!/usr/bin/env bash
# Builds the node image `skiff-node:dev` (label skiff.image=node) from the release binary and the shared
# libraries it needs. No registry is needed: the image is FROM scratch (docker/node/Dockerfile).
# Idempotent: the staging directory is rebuilt from scratch each time and Docker reuses unchanged layers.
# Env: SKIFF_NODE_IMAGE overrides the image name.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SKIFF_NODE_IMAGE:-skiff-node:dev}
stage=target/node-image

for tool in cargo ldd docker; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' is not installed; it is needed to build the node image" >&2
    exit 1
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is not reachable (is dockerd running, may this user use its socket?)" >&2
  exit 1
fi

echo "== building the release binary"
cargo build --release --bin skiff

# The service proxy's kernel data path (`[services] data_path = "nftables"`) runs `nft`.
bash scripts/apt-install.sh nft nftables "its nft goes into the image"

echo "== staging the binaries and their shared libraries in $stage"
rm -rf "$stage"
mkdir -p "$stage/rootfs/bin"

# Copies binary $1 to $2 in the image, with every library ldd resolves (the path after "=>") and
# the dynamic loader (an absolute path alone). linux-vdso has no file and is skipped. cp -L copies
# what symlinks point to, under the linked name.
stage_binary() {
  local binary=$1 target=$2 libs lib
  cp -L "$binary" "$stage/rootfs$target"
  libs=$(ldd "$binary" | awk '/=>/ && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  if ! grep -q 'ld-linux' <<<"$libs"; then
    echo "error: ldd named no dynamic loader for $binary:" >&2
    ldd "$binary" >&2 || true
    exit 1
  fi
  while read -r lib; do
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"
    echo "   $lib"
  done <<<"$libs"
}
stage_binary target/release/skiff /skiff
stage_binary "$(command -v nft)" /bin/nft
# The service proxy makes the service range local with `ip route` (busybox's, static).
bash scripts/install-busybox.sh
cp /bin/busybox "$stage/rootfs/bin/busybox"
ln -s busybox "$stage/rootfs/bin/ip"
# Containers write their data here (a volume in docker-compose.yml).
mkdir -p "$stage/rootfs/var/lib/skiff" "$stage/rootfs/tmp"
cp docker/node/Dockerfile "$stage/Dockerfile"

echo "== building image $image"
previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
docker build --quiet --label skiff.image=node -t "$image" "$stage" >/dev/null
# A rebuild leaves the previous image untagged; remove it unless a container still uses it.
current=$(docker image inspect -f '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
