#!/usr/bin/env bash
# The resource API benchmark (see bench/README.md). Usage: bash bench/api/run.sh [--smoke] [options]
set -euo pipefail
exec bash "$(dirname "$0")/../run.sh" api "$@"
