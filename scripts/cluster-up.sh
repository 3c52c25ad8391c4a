#!/usr/bin/env bash
# Builds what it needs and starts the three-member docker-compose cluster, then waits for a leader.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-node-image.sh
echo "== starting the cluster"
docker-compose up -d

members="127.0.0.1:${SKIFF_PORT1:-7421},127.0.0.1:${SKIFF_PORT2:-7422},127.0.0.1:${SKIFF_PORT3:-7423}"
skiff=target/release/skiff
deadline=$(( $(date +%s) + 60 ))
until "$skiff" --members "$members" --timeout 2 cluster status -o json 2>/dev/null | grep -q '"leaderId": [1-9]'; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "error: no leader within 60 s; see 'docker-compose logs'" >&2
    exit 1
  fi
  sleep 0.5
done
"$skiff" --members "$members" cluster status
cat <<EOT

The cluster is up. Talk to it with:
  export SKIFF_MEMBERS=$members
  $skiff kv put greeting hello
  $skiff kv get greeting
  $skiff cluster status
Stop it with: bash scripts/cluster-down.sh   (add -v to drop the data volumes)
EOT
