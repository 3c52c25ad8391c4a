#!/usr/bin/env bash
# The failover benchmark (see bench/README.md). Usage: bash bench/failover/run.sh [--smoke] [options]
set -euo pipefail
exec bash "$(dirname "$0")/../run.sh" failover "$@"
