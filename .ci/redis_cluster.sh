#!/usr/bin/env bash
# Starts a Redis Cluster of primaries on loopback for the tests, unless one already
# answers on the first port: .ci/redis_cluster.sh DIR PORT PORT PORT…
# Prints the REDIS_CLUSTER_URL to use. Stop it with: kill $(cat DIR/*.pid)
set -euo pipefail
dir="$1"; shift
first="$1"
if redis-cli -p "$first" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
  echo "redis-cluster://$(printf '127.0.0.1:%s,' "$@" | sed 's/,$//')"
  exit 0
fi
mkdir -p "$dir"
nodes=()
for port in "$@"; do
  mkdir -p "$dir/$port"
  rm -f "$dir/$port/nodes.conf"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$dir/$port/nodes.conf" --dir "$dir/$port" \
    --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/$port.pid" --logfile "$dir/$port/log" >&2
  nodes+=("127.0.0.1:$port")
done
for port in "$@"; do
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >&2
ok=0
for _ in $(seq 1 100); do
  ok=1
  for port in "$@"; do
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.1
done
if [ "$ok" != 1 ]; then
  echo "redis_cluster.sh: the cluster on ports $* is not ok (see $dir/*/log)" >&2
  exit 1
fi
echo "redis-cluster://$(printf '127.0.0.1:%s,' "$@" | sed 's/,$//')"
