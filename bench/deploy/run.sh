#!/usr/bin/env bash
# The deployment benchmark (see bench/README.md). Usage: bash bench/deploy/run.sh [--smoke] [options]
set -euo pipefail
bash "$(dirname "$0")/../../scripts/build-test-images.sh"
exec bash "$(dirname "$0")/../run.sh" deploy "$@"
