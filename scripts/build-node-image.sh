#!/usr/bin/env bash
# Builds the node image `skiff-node:dev` from the release binary and the shared libraries it needs.
# No registry is needed: the image is FROM scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SKIFF_NODE_IMAGE:-skiff-node:dev}
stage=target/node-image

echo "== building the release binary"
cargo build --release --bin skiff

echo "== staging the binary and its shared libraries in $stage"
rm -rf "$stage"
mkdir -p "$stage/rootfs"
cp target/release/skiff "$stage/rootfs/skiff"
# Every library ldd resolves (path after "=>"), and the dynamic loader (an absolute path alone).
ldd target/release/skiff | awk '/=>/ && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
  while read -r lib; do
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"
  done
# Containers write their data here (a volume in docker-compose.yml).
mkdir -p "$stage/rootfs/var/lib/skiff" "$stage/rootfs/tmp"
cp docker/node/Dockerfile "$stage/Dockerfile"

echo "== building image $image"
docker build --quiet --label skiff.image=node -t "$image" "$stage" >/dev/null
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
