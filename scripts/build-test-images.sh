#!/usr/bin/env bash
# Builds the images the Docker tests run (no registry is reachable, nothing is pulled):
#   skiff-test/busybox:1   Debian's busybox-static (sh, sleep, httpd, nc, wget...)
#   skiff-pause:1          the pod sandbox image (also what `skiff node` uses by default)
#   stand-ins with the names the Kubernetes documentation's examples use (docker/stand-ins/):
#   registry.k8s.io/busybox:1.27.2, registry.k8s.io/e2e-test-images/agnhost:2.40 (liveness),
#   registry.k8s.io/goproxy:0.1 (TCP 8080), nginx:1.14.2 and nginx:latest (HTTP 80),
#   gcr.io/google-samples/hello-go-gke:1.0 (HTTP 80)
#   skiff-bench/nginx:1 and :2   Debian's nginx, keep-alive (bench/proxy/build-image.sh)
# Installs busybox-static when it is missing. Idempotent: Docker reuses the unchanged layers.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-busybox.sh
if ! file -L /bin/busybox 2>/dev/null | grep -q "statically linked" && ! ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
  echo "error: /bin/busybox is not statically linked; install busybox-static" >&2
  exit 1
fi

build() { # image, dockerfile dir
  local image=$1 dir=$2 stage=target/test-images/$2
  rm -rf "$stage"
  mkdir -p "$stage"
  cp "docker/$dir/Dockerfile" "$stage/"
  cp /bin/busybox "$stage/busybox"
  echo "== building $image"
  # The legacy builder (no buildx here) prints a deprecation notice: show the output only on failure.
  if ! out=$(DOCKER_BUILDKIT=0 docker build -q -t "$image" "$stage" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
}
build skiff-test/busybox:1 busybox
build skiff-pause:1 pause

# Stand-ins: built FROM the local busybox image (present, so nothing is pulled).
stand_ins=target/test-images/stand-ins
rm -rf "$stand_ins"
cp -r docker/stand-ins "$stand_ins"
chmod +x "$stand_ins/agnhost"
standin() { # image dockerfile [build args...]
  local image=$1 file=$2
  shift 2
  echo "== building stand-in $image"
  if ! out=$(DOCKER_BUILDKIT=0 docker build -q -t "$image" -f "$stand_ins/$file" "$@" "$stand_ins" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
}
docker tag skiff-test/busybox:1 registry.k8s.io/busybox:1.27.2
standin registry.k8s.io/e2e-test-images/agnhost:2.40 Dockerfile.agnhost
standin registry.k8s.io/goproxy:0.1 Dockerfile.http --build-arg PORT=8080
standin nginx:1.14.2 Dockerfile.http --build-arg PORT=80
docker tag nginx:1.14.2 nginx:latest
docker tag nginx:1.14.2 gcr.io/google-samples/hello-go-gke:1.0
# A real nginx (Debian's) with keep-alive: bench/proxy's backend and tests/docker_services.rs'.
bash bench/proxy/build-image.sh
