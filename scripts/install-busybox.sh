#!/usr/bin/env bash
# Installs Debian's busybox-static when /bin/busybox is missing: the test images, the pod sandbox
# and the node image's /bin/ip are built from it (no registry is reachable).
set -euo pipefail
bash "$(dirname "$0")/apt-install.sh" /bin/busybox busybox-static
