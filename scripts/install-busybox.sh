#!/usr/bin/env bash
# Installs Debian's busybox-static when /bin/busybox is missing: the test images, the pod sandbox
# and the node image's /bin/ip are built from it (no registry is reachable).
set -euo pipefail
if [ ! -x /bin/busybox ]; then
  echo "== installing busybox-static"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq busybox-static >/dev/null
fi
