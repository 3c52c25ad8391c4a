#!/usr/bin/env bash
# Memory (VmRSS, VmHWM) of one member while 1 MiB values are written in a loop, with a watcher that
# never reads (WATCH=1) or without. Issue 12's "memory stays bounded" figure; not run by CI.
# Usage: [WATCH=1] bash bench/memory/big-values.sh [path/to/skiff] [writes]
# Uses 127.0.0.1:17420 and :19420; the member runs no agent and no service proxy. It bootstraps its
# cluster and writes the admin credentials every client call presents (--credentials).
set -euo pipefail
bin=${1:-target/release/skiff}
dir=$(mktemp -d)
secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
creds=$dir/data/admin.conf
cat > $dir/m.toml <<TOML
id = 1
name = "m"
listen = "127.0.0.1:17420"
http_listen = "127.0.0.1:19420"
data_dir = "$dir/data"
initial_members = [{ id = 1, name = "m", addr = "127.0.0.1:17420" }]
[agent]
runtime = "none"
[services]
proxy = false
[security]
join_token = "$secret"
TOML
$bin node --config $dir/m.toml > $dir/node.log 2>&1 &
node=$!
watcher=
trap 'kill $node 2>/dev/null; [ -n "$watcher" ] && kill $watcher 2>/dev/null; rm -rf $dir' EXIT
export SKIFF_MEMBERS=127.0.0.1:17420
# The member writes its credentials at bootstrap; wait (at most 30 s) until it takes a write.
deadline=$((SECONDS + 30))
until [ -e "$creds" ] && $bin kv put ready x --credentials "$creds" --timeout 2 >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "the member did not take a write within 30 s; its log:" >&2
    tail -20 $dir/node.log >&2
    exit 1
  fi
  sleep 0.2
done
disk() { echo "state $(du -sm $dir/data/state | cut -f1) MiB, values $(du -sm $dir/data/values | cut -f1) MiB, log $(du -sm $dir/data/raft-log | cut -f1) MiB"; }
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' /proc/$node/status; echo; }
echo "idle: $(rss)"
# A watcher that never reads: its output goes to a pipe nobody drains.
mkfifo $dir/fifo
if [ -n "${WATCH:-}" ]; then
  $bin kv watch / --credentials "$creds" > $dir/fifo &
  watcher=$!
fi
exec 3<>$dir/fifo   # keep the fifo open without reading it
head -c 786432 /dev/urandom | base64 -w0 > $dir/value
for i in $(seq 1 ${2:-400}); do
  $bin kv put big/$((i % 50)) - --credentials "$creds" < $dir/value >/dev/null
  if [ $((i % 100)) -eq 0 ]; then echo "after $i writes of 1 MiB: $(rss) $(disk)"; fi
done
echo "end: $(rss) $(disk)"
grep -E "^(Rss|Anonymous)" /proc/$node/smaps_rollup
du -sm $dir/data/state/* $dir/data/values $dir/data/snapshot.bin $dir/data/raft-log/* 2>/dev/null
