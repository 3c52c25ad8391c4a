#!/usr/bin/env bash
# The store benchmark (see bench/README.md). Usage: bash bench/store/run.sh [--smoke] [options]
set -euo pipefail
exec bash "$(dirname "$0")/../run.sh" store "$@"
