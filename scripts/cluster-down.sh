#!/usr/bin/env bash
# Stops the docker-compose cluster that scripts/cluster-up.sh started. Extra arguments go to
# `docker-compose down` (e.g. -v to drop the data volumes too).
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-skiff}
echo "== stopping the cluster (compose project $COMPOSE_PROJECT_NAME)"
docker-compose down --remove-orphans "$@"
