#!/usr/bin/env bash
# Builds skiff-bench/nginx:1 (label skiff.image=bench): Debian's nginx binary and the shared libraries
# ldd lists, with bench/proxy/nginx.conf, FROM scratch, and tags it skiff-bench/nginx:2 too (a
# "new version" for rollouts in tests/docker_services.rs). Downloads the package from Debian's
# registry (apt-get download: nothing is installed on the host). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
image=skiff-bench/nginx:1
stage=target/bench-images/nginx
rm -rf "$stage"
mkdir -p "$stage/deb" "$stage/rootfs/etc/nginx" "$stage/rootfs/tmp" "$stage/rootfs/var/log/nginx"
(
  cd "$stage/deb"
  if ! apt-get download nginx >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download nginx >/dev/null
  fi
)
dpkg -x "$stage"/deb/nginx_*.deb "$stage/deb/x"
binary="$stage/deb/x/usr/sbin/nginx"
mkdir -p "$stage/rootfs/usr/sbin"
cp "$binary" "$stage/rootfs/usr/sbin/nginx"
libs=$(ldd "$binary" | awk '/=>/ && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
while read -r lib; do
  mkdir -p "$stage/rootfs$(dirname "$lib")"
  cp -L "$lib" "$stage/rootfs$lib"
done <<<"$libs"
cp bench/proxy/nginx.conf "$stage/rootfs/etc/nginx/nginx.conf"
printf 'root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$stage/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/rootfs/etc/group"
chmod 1777 "$stage/rootfs/tmp"
cp bench/proxy/Dockerfile "$stage/Dockerfile"
if ! out=$(DOCKER_BUILDKIT=0 docker build -q --label skiff.image=bench -t "$image" "$stage" 2>&1); then
  echo "$out" >&2
  exit 1
fi
docker tag "$image" skiff-bench/nginx:2
echo "built $image (and skiff-bench/nginx:2)"
