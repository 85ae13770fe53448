#!/usr/bin/env bash
# A certificate authority of its own and one certificate it signs, for the TLS servers the
# tests start: .ci/test_certs.sh DIR NAME SUBJECT_ALT_NAMES (e.g. DNS:localhost).
# Writes DIR/ca.pem (and its key) and DIR/NAME.pem with DIR/NAME.key.
set -euo pipefail
dir="$1"; name="$2"; san="$3"
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tower-idempotency test CA ($name)" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$san" > "$dir/$name.ext"
openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -days 30 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
