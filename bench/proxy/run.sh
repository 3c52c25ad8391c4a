#!/usr/bin/env bash
# The service proxy benchmark (see bench/README.md): wrk through a Service's cluster IP and node port
# against straight to the pod. Usage: bash bench/proxy/run.sh [--smoke] [options]
set -euo pipefail
here="$(dirname "$0")"
if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk (the load generator)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq wrk >/dev/null
fi
bash "$here/../../scripts/build-test-images.sh" # the pod sandbox image
bash "$here/build-image.sh"                     # the nginx backend
exec bash "$here/../run.sh" proxy "$@"
