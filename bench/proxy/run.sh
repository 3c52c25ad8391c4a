#!/usr/bin/env bash
# The service proxy benchmark (see bench/README.md): wrk through a Service's cluster IP and node port
# against straight to the pod. Usage: bash bench/proxy/run.sh [--smoke] [options]
set -euo pipefail
here="$(dirname "$0")"
bash "$here/../../scripts/apt-install.sh" wrk wrk "the load generator"
bash "$here/../../scripts/build-test-images.sh" # the pod sandbox image
bash "$here/build-image.sh"                     # the nginx backend
exec bash "$here/../run.sh" proxy "$@"
