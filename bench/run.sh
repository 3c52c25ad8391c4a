#!/usr/bin/env bash
# Runs one benchmark of skiff-bench: Skiff and a three-member etcd side by side in the same run.
# Usage: bash bench/run.sh store|failover [--smoke] [extra skiff-bench options]
set -euo pipefail
cd "$(dirname "$0")/.."

bench=${1:?usage: bench/run.sh store|failover [--smoke] [options]}
shift
smoke=()
if [ "${1:-}" = "--smoke" ]; then
  smoke=(--smoke)
  shift
fi

if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing etcd-server (the reference)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi

echo "== building skiff and skiff-bench (release)"
cargo build --release -p skiff -p skiff-bench --bins

echo "== machine: $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); etcd $(etcd --version | head -1)"
timeout 1800 target/release/skiff-bench "${smoke[@]}" "$bench" "$@"
