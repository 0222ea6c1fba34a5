#!/usr/bin/env bash
# Regenerates the syslog TLS test certificates (valid for 100 years) here,
# or writes a fresh set into the directory named (tests/syslog/run.sh):
# ca.pem signed server.pem (127.0.0.1, localhost) and client.pem;
# other-ca.pem signed neither. Test material only: never trust it.
set -euo pipefail
cd "${1:-$(dirname "$0")}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
days=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -subj "/CN=gatehouse syslog test CA" -days "$days" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
ec "$tmp/other-ca.key"
openssl req -x509 -new -key "$tmp/other-ca.key" -subj "/CN=gatehouse syslog test other CA" -days "$days" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out other-ca.pem
leaf() { # name subject extensions
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
  printf '%s\n' "$3" >"$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial -CAserial "$tmp/serial" \
    -days "$days" -extfile "$tmp/$1.ext" -out "$1.pem" 2>/dev/null
}
leaf server 127.0.0.1 "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
leaf client gatehouse-test-client "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:gatehouse-test-client"
