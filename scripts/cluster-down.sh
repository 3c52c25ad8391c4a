#!/usr/bin/env bash
# Stops the docker-compose cluster that scripts/cluster-up.sh started, and its pods: the members
# stop first (so that no agent starts a pod again), then every container of the pods they ran
# (found by the cluster id their sandboxes on the cluster's network carry), then `docker-compose
# down`. The pods' desired state stays in the members' data: a cluster started again on the same
# volumes runs them again. Extra arguments go to `docker-compose down` (e.g. -v to drop the data
# volumes too). Env: COMPOSE_PROJECT_NAME (default skiff), SKIFF_NETWORK (default skiff_default).
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-skiff}
network=${SKIFF_NETWORK:-skiff_default}
echo "== stopping the members (compose project $COMPOSE_PROJECT_NAME)"
docker-compose stop -t 10
clusters=$(docker ps -aq --filter "network=$network" --filter label=skiff.pod.uid |
  xargs -r docker inspect -f '{{index .Config.Labels "skiff.cluster"}}' | sort -u)
for cluster in $clusters; do
  pods=$(docker ps -aq --filter "label=skiff.cluster=$cluster" --filter label=skiff.pod.uid)
  if [ -n "$pods" ]; then
    echo "== removing the pods of cluster $cluster ($(wc -w <<<"$pods") containers)"
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $pods >/dev/null
  fi
done
echo "== removing the cluster"
docker-compose down --remove-orphans "$@"
