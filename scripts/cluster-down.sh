#!/usr/bin/env bash
# Stops the docker-compose cluster. Extra arguments go to `docker-compose down` (e.g. -v).
set -euo pipefail
cd "$(dirname "$0")/.."
docker-compose down "$@"
