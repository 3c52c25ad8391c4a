#!/usr/bin/env bash
# Installs Debian package $2 when command $1 is missing (as root, or through sudo). Usage:
#   bash scripts/apt-install.sh COMMAND PACKAGE [WHY]
# COMMAND may be a path (/bin/busybox) or a name looked up on PATH.
set -euo pipefail
command=$1 package=$2 why=${3:-}
if [ -x "$command" ] || command -v "$command" >/dev/null 2>&1; then
  exit 0
fi
echo "== installing $package${why:+ ($why)}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$package" >/dev/null
