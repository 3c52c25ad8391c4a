#!/usr/bin/env bash
# Runs one benchmark of skiff-bench: Skiff and its reference (etcd, plain Docker, Docker Swarm) side by
# side in the same run.
# Usage: bash bench/run.sh store|failover|api|podstart|deploy|nodeloss|scale|proxy [--smoke] [extra skiff-bench options]
#
# Bounded in time: the build and the run each have a limit. The harness kills every member process
# it started when it ends, fails, panics or gets SIGINT/SIGTERM; `timeout` runs it in a process group
# of its own and, past the limit, signals that whole group (the members included).
set -euo pipefail
cd "$(dirname "$0")/.."

bench=${1:?usage: bench/run.sh store|failover|api|podstart|deploy|nodeloss|scale|proxy [--smoke] [options]}
shift
case "$bench" in
  store | failover | api | podstart | deploy | nodeloss | scale | proxy) ;;
  *)
    echo "unknown benchmark '$bench' (store, failover, api, podstart, deploy, nodeloss, scale or proxy)" >&2
    exit 2
    ;;
esac
smoke=()
limit=3600
if [ "${1:-}" = "--smoke" ]; then
  smoke=(--smoke)
  limit=300
  shift
fi

bash scripts/apt-install.sh etcd etcd-server "the reference"

# A full run keeps everything it prints (each run's table and the summary) in bench/results/.
if [ ${#smoke[@]} -eq 0 ]; then
  mkdir -p bench/results
  base="bench/results/$bench-$(date -u +%Y-%m-%d)-$(git rev-parse --short HEAD)"
  out="$base.txt"
  n=2
  while [ -e "$out" ]; do
    out="$base-$n.txt"
    n=$((n + 1))
  done
  echo "== the output is kept in $out"
  exec > >(tee "$out") 2>&1
fi

echo "== building skiff and skiff-bench (release)"
timeout 1800 cargo build --release -p skiff -p skiff-bench --bins

started=$(date +%s)
echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git rev-parse --short HEAD)"
changed=$(git status --porcelain -- crates src Cargo.toml Cargo.lock | awk '{print $2}' | tr '\n' ' ')
if [ -n "$changed" ]; then
  echo "== uncommitted changes built into this run: $changed"
fi
echo "== machine: $(nproc) cores; $(etcd --version | head -1)"
echo "== uptime: $(uptime)"
cmd=(target/release/skiff-bench "${smoke[@]}" "$bench" "$@")
echo "== running (at most ${limit} s): ${cmd[*]}"

timeout --kill-after=20 "$limit" "${cmd[@]}" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
# A trapped signal ends `wait` early: wait again until the harness has killed its members and exited.
while kill -0 "$pid" 2>/dev/null; do
  status=0
  wait "$pid" || status=$?
done
trap - INT TERM

echo "== uptime: $(uptime)"
case "$status" in
  0) outcome="finished" ;;
  124) outcome="TIMED OUT after ${limit} s" ;;
  *) outcome="FAILED (exit $status)" ;;
esac
echo "== $bench benchmark${smoke[*]:+ (smoke)}: $outcome in $(($(date +%s) - started)) s"
exit "$status"
