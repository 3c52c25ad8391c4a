#!/usr/bin/env bash
# Runs every Skiff test: unit, storage suite, in-process clusters, real processes, real Docker and the
# docker-compose cluster. Works on a fresh machine: installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# tests/durability.rs proves with strace that acknowledged writes were synced first.
bash scripts/apt-install.sh strace strace "the durability tests trace syncs"

echo "== clearing leftovers labelled skiff.test"
if docker info >/dev/null 2>&1; then
  ids=$(docker ps -aq --filter label=skiff.test)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null
  fi
  vols=$(docker volume ls -q --filter label=skiff.test)
  if [ -n "$vols" ]; then
    # shellcheck disable=SC2086
    docker volume rm -f $vols >/dev/null
  fi
  nets=$(docker network ls -q --filter label=skiff.test)
  if [ -n "$nets" ]; then
    # shellcheck disable=SC2086
    docker network rm $nets >/dev/null
  fi
  echo "== building the node image"
  bash scripts/build-node-image.sh
  echo "== building the test images"
  bash scripts/build-test-images.sh
else
  echo "error: the Docker engine is not reachable; the Docker and compose tests need it" >&2
  exit 1
fi

echo "== running the tests"
cargo nextest run --workspace --no-fail-fast "$@"
