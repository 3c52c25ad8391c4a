#!/usr/bin/env bash
# The node loss benchmark (see bench/README.md). Usage: bash bench/nodeloss/run.sh [--smoke] [options]
set -euo pipefail
bash "$(dirname "$0")/../../scripts/build-test-images.sh"
exec bash "$(dirname "$0")/../run.sh" nodeloss "$@"
