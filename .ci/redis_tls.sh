#!/usr/bin/env bash
# Starts a Redis server that speaks only TLS (and wants a password) on loopback, with a
# certificate authority and a server certificate for `localhost` generated here:
# .ci/redis_tls.sh DIR PORT. Prints the variables the TLS tests read:
#   REDIS_TLS_URL=rediss://:PASSWORD@localhost:PORT  REDIS_TLS_CA=DIR/ca.pem
# Stop it with: kill $(cat DIR/redis.pid)
set -euo pipefail
dir="$1"; port="$2"
password="tls-test-password"
mkdir -p "$dir"
if ! redis-cli --tls --cacert "$dir/ca.pem" -h localhost -p "$port" -a "$password" --no-auth-warning ping 2>/dev/null | grep -q PONG; then
  "$(dirname "$0")/test_certs.sh" "$dir" server DNS:localhost
  redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 \
    --tls-cert-file "$dir/server.pem" --tls-key-file "$dir/server.key" \
    --tls-ca-cert-file "$dir/ca.pem" --tls-auth-clients no --requirepass "$password" \
    --save "" --appendonly no --daemonize yes --dir "$dir" \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
  ready=""
  for _ in $(seq 1 50); do
    if redis-cli --tls --cacert "$dir/ca.pem" -h localhost -p "$port" -a "$password" --no-auth-warning ping 2>/dev/null | grep -q PONG; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "redis_tls.sh: the TLS Redis on port $port does not answer (is the port taken? see $dir/redis.log)" >&2
    exit 1
  fi
fi
echo "REDIS_TLS_URL=rediss://:$password@localhost:$port REDIS_TLS_CA=$dir/ca.pem"
