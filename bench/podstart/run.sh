#!/usr/bin/env bash
# The pod start benchmark (see bench/README.md). Usage: bash bench/podstart/run.sh [--smoke] [options]
set -euo pipefail
bash "$(dirname "$0")/../../scripts/build-test-images.sh"
exec bash "$(dirname "$0")/../run.sh" podstart "$@"
