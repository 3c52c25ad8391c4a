#!/usr/bin/env bash
# Builds what it needs and starts the three-member docker-compose cluster, then waits until every member
# answers and all agree on one leader. The members share a bootstrap secret made here (or
# SKIFF_JOIN_TOKEN); node1 makes the cluster CA and the admin credentials, which are copied to
# ./skiff-credentials.conf (mode 0600) for the host's CLI. Env: SKIFF_PORT1..3 (host ports, default
# 7421..7423), COMPOSE_PROJECT_NAME (default skiff), SKIFF_UP_TIMEOUT (seconds to wait, default 60),
# SKIFF_CREDENTIALS_OUT (where to write the credentials, default ./skiff-credentials.conf).
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-skiff}

if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 is needed to read 'skiff cluster status -o json'" >&2
  exit 1
fi

bash scripts/build-node-image.sh
bash scripts/build-test-images.sh # the pod sandbox image skiff-pause:1 (and the test workload image)
# 128 random bits, hex: what `[security] join_token` accepts as a bootstrap secret.
export SKIFF_JOIN_TOKEN=${SKIFF_JOIN_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
echo "== starting the cluster (compose project $COMPOSE_PROJECT_NAME)"
docker-compose up -d

members="127.0.0.1:${SKIFF_PORT1:-7421},127.0.0.1:${SKIFF_PORT2:-7422},127.0.0.1:${SKIFF_PORT3:-7423}"
skiff=target/release/skiff
timeout=${SKIFF_UP_TIMEOUT:-60}
deadline=$(($(date +%s) + timeout))
credentials=${SKIFF_CREDENTIALS_OUT:-./skiff-credentials.conf}

# The admin credentials node1 wrote at bootstrap, with the members as the host reaches them.
fetch_credentials() {
  local tmp
  tmp=$(mktemp)
  if docker cp "$(docker-compose ps -q node1):/var/lib/skiff/admin.conf" "$tmp" 2>/dev/null; then
    (umask 077 && python3 - "$tmp" "$members" >"$credentials" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
members = ", ".join('"%s"' % m for m in sys.argv[2].split(","))
print(re.sub(r"^members = \[.*?\]$", "members = [%s]" % members, text, count=1, flags=re.M), end="")
PY
    )
    rm -f "$tmp"
    return 0
  fi
  rm -f "$tmp"
  return 1
}

echo "== waiting up to ${timeout} s for node1's admin credentials"
until fetch_credentials; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "error: node1 wrote no admin credentials within ${timeout} s; see: docker-compose -p $COMPOSE_PROJECT_NAME logs node1" >&2
    exit 1
  fi
  sleep 0.5 # poll interval; the deadline above bounds the wait
done
chmod 600 "$credentials"
export SKIFF_CREDENTIALS=$credentials

# Ready: a leader, three members that all answer without error, and each of them names that leader.
ready() {
  "$skiff" --members "$members" --timeout 2 cluster status -o json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = s["members"]
ok = s["leaderId"] > 0 and len(m) == 3 and all(x["error"] == "" and x["leaderId"] > 0 for x in m)
sys.exit(0 if ok and len({x["leaderId"] for x in m}) == 1 else 1)'
}

echo "== waiting up to ${timeout} s for a leader and three members"
until ready; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "error: the cluster was not ready within ${timeout} s; last status:" >&2
    "$skiff" --members "$members" --timeout 2 cluster status >&2 || true
    echo "see: docker-compose -p $COMPOSE_PROJECT_NAME logs" >&2
    exit 1
  fi
  sleep 0.5 # poll interval; the deadline above bounds the wait
done
"$skiff" --members "$members" cluster status
cat <<EOT

The cluster is up. Talk to it with:
  export SKIFF_MEMBERS=$members
  export SKIFF_CREDENTIALS=$(realpath "$credentials")
  $skiff kv put greeting hello
  $skiff kv get greeting
  $skiff cluster status
  $skiff cluster credentials --name alice --role read-only -o alice.conf   # more credentials
  $skiff cluster join-token                                               # for a new member
Stop it with: bash scripts/cluster-down.sh   (add -v to drop the data volumes)
EOT
