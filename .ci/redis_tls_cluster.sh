#!/usr/bin/env bash
# Starts a Redis Cluster of primaries on loopback that speaks only TLS (clients, the
# cluster bus) and wants a password, with a certificate authority of its own and one
# certificate for `localhost` and 127.0.0.1 (the address the nodes announce):
# .ci/redis_tls_cluster.sh DIR PORT PORT PORT…  Prints the variables the tests read:
#   REDIS_TLS_CLUSTER_URL=rediss-cluster://:PASSWORD@127.0.0.1:PORT,…  REDIS_TLS_CLUSTER_CA=DIR/ca.pem
# Stop it with: kill $(cat DIR/*.pid)
set -euo pipefail
dir="$1"; shift
password="tls-cluster-test-password"
mkdir -p "$dir"
tls=(--tls --cacert "$dir/ca.pem" -a "$password" --no-auth-warning)
url="rediss-cluster://:$password@$(printf '127.0.0.1:%s,' "$@" | sed 's/,$//')"
if redis-cli "${tls[@]}" -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
  echo "REDIS_TLS_CLUSTER_URL=$url REDIS_TLS_CLUSTER_CA=$dir/ca.pem"
  exit 0
fi
"$(dirname "$0")/test_certs.sh" "$dir" node DNS:localhost,IP:127.0.0.1
nodes=()
for port in "$@"; do
  mkdir -p "$dir/$port"
  rm -f "$dir/$port/nodes.conf"
  redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
    --tls-cert-file "$dir/node.pem" --tls-key-file "$dir/node.key" \
    --tls-ca-cert-file "$dir/ca.pem" --tls-auth-clients no \
    --tls-cluster yes --tls-replication yes \
    --requirepass "$password" --masterauth "$password" \
    --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" --dir "$dir/$port" \
    --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/$port.pid" --logfile "$dir/$port/log" >&2
  nodes+=("127.0.0.1:$port")
done
for port in "$@"; do
  ready=""
  for _ in $(seq 1 50); do
    if redis-cli "${tls[@]}" -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "redis_tls_cluster.sh: the TLS node on port $port does not answer (is the port taken? see $dir/$port/log)" >&2
    exit 1
  fi
done
redis-cli "${tls[@]}" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >&2
ok=0
for _ in $(seq 1 100); do
  ok=1
  for port in "$@"; do
    redis-cli "${tls[@]}" -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.1
done
if [ "$ok" != 1 ]; then
  echo "redis_tls_cluster.sh: the TLS cluster on ports $* is not ok (see $dir/*/log)" >&2
  exit 1
fi
echo "REDIS_TLS_CLUSTER_URL=$url REDIS_TLS_CLUSTER_CA=$dir/ca.pem"
