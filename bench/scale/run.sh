#!/usr/bin/env bash
# The scale benchmark (see bench/README.md). Usage: bash bench/scale/run.sh [--smoke] [options]
set -euo pipefail
exec bash "$(dirname "$0")/../run.sh" scale "$@"
