#!/usr/bin/env bash
# Gatehouse's audit records reach a real syslog daemon: Debian's rsyslog,
# started here (unprivileged, foreground, its own configuration and work
# directory) with a TCP and a UDP input on free loopback ports, writing what
# it receives in RFC 5424 form to a file. For each transport a Gatehouse
# server sends its records there; the test finds an allowed and a denied
# call's records, parses them as RFC 5424 with the record's JSON as MSG, and
# (TCP) checks back-pressure: with rsyslog stopped a call is refused, not
# answered unrecorded, and once rsyslog is back the next call goes through;
# a CLI command's record (keys revoke-signing) arrives too.
#
# Then TLS (RFC 5425): a second rsyslog with its gtls (GnuTLS) driver, a
# throwaway CA made here with openssl, requiring a client certificate that CA
# signed for a permitted name. The records arrive over TLS; a Gatehouse that
# trusts another CA refuses calls (the receiver is never sent a record), and
# one without a client certificate, which rsyslog drops after the
# handshake, refuses calls after the first batch.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

part="syslog test"
skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "$part: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the $part: $1" >&2
  echo "!!! It needs Debian's rsyslog and rsyslog-gnutls (apt-get install rsyslog rsyslog-gnutls), openssl, python3 and curl." >&2
  echo "" >&2
  echo "$part (rsyslog): $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

rsyslogd="$(command -v rsyslogd || echo /usr/sbin/rsyslogd)"
# rsyslog's TLS driver (Debian's rsyslog-gnutls), beside its other modules.
gtls_installed() {
  compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null || compgen -G '/usr/lib*/rsyslog/lmnsd_gtls.so' >/dev/null
}
missing=()
[ -x "$rsyslogd" ] || missing+=(rsyslog)
gtls_installed || missing+=(rsyslog-gnutls)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ] && [ "${GATEHOUSE_TEST_INSTALL_SYSTEM:-}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "syslog test: installing Debian's ${missing[*]} system-wide with apt-get (GATEHOUSE_TEST_INSTALL_SYSTEM=1)" >&2
  apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || skip "apt-get install ${missing[*]} failed"
fi
[ -x "$rsyslogd" ] || skip "rsyslogd is not installed"
command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"
command -v curl >/dev/null 2>&1 || skip "curl is not installed"

cargo build --quiet --bin gatehouse
bin="${CARGO_TARGET_DIR:-$root/target}/debug/gatehouse"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
work="$(mktemp -d)"
cleanup() {
  [ -n "${rs_pid:-}" ] && kill "$rs_pid" 2>/dev/null || true
  [ -n "${gh_pid:-}" ] && kill "$gh_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r tcp_port udp_port tls_port < <(python3 -c '
import socket
t = socket.socket(); t.bind(("127.0.0.1", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
s = socket.socket(); s.bind(("127.0.0.1", 0))
print(t.getsockname()[1], u.getsockname()[1], s.getsockname()[1])')

cat >"$work/rsyslog.conf" <<CONF
global(workDirectory="$work" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
input(type="imtcp" address="127.0.0.1" port="$tcp_port")
input(type="imudp" address="127.0.0.1" port="$udp_port")
*.* action(type="omfile" file="$work/received.log" template="RSYSLOG_SyslogProtocol23Format")
CONF

start_rsyslog() { # [configuration] [port it listens on]
  local conf="${1:-$work/rsyslog.conf}" port="${2:-$tcp_port}"
  "$rsyslogd" -n -iNONE -f "$conf" >>"$work/rsyslog.out" 2>&1 &
  rs_pid=$!
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "rsyslogd did not start:" >&2; cat "$work/rsyslog.out" >&2; exit 1
}
start_rsyslog

# One server per transport: an allowed and a denied call, then a graceful stop.
run_server() { # name [[audit.syslog] settings: address first]
  local dir="$work/gh-$1"; mkdir -p "$dir"
  local syslog="${2:-}"
  if [ -z "$syslog" ]; then
    local port="$tcp_port"; [ "$1" = udp ] && port="$udp_port"
    # Each transport its own HOSTNAME: rsyslog writes both to one file, and
    # the UDP check must not be passed by the TCP server's records.
    syslog="address = \"$1://127.0.0.1:$port\"
hostname = \"gatehouse-test-$1\""
  fi
  cat >"$dir/gatehouse.toml" <<CONF
version = 1
[audit.syslog]
$syslog
CONF
  "$bin" serve --json --config "$dir/gatehouse.toml" --data-dir "$dir" --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
  gh_pid=$!
  for _ in $(seq 1 150); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  grep -q '"listening"' "$dir/out" || { echo "gatehouse did not start:" >&2; cat "$dir/err" >&2; exit 1; }
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  # `keys create` audits itself through the same sinks: with rsyslog
  # unreachable it prints the key, then fails saying its record could not
  # be written (the untrusted-CA case below expects exactly that).
  local created status=0
  created=$("$bin" keys create --name syslog --role reader --json --config "$dir/gatehouse.toml" \
    --data-dir "$dir" 2>"$dir/keys-create.err") || status=$?
  if [ "$status" != 0 ]; then
    case "$1" in
      tls-untrusted|tls-anonymous) grep -q 'its audit record could not be written' "$dir/keys-create.err" ;;
      *) false ;;
    esac || { echo "keys create failed (exit $status):" >&2; cat "$dir/keys-create.err" >&2; exit 1; }
  fi
  key=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
}

call() { # tool -> the response body
  curl -s -X POST "$url" -H "authorization: Bearer $key" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H "mcp-name: $1" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":{},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}"
}

check_received() { # transport [file rsyslog wrote]
  python3 - "${2:-$work/received.log}" "$1" <<'PY'
import json, re, sys
path, transport = sys.argv[1], sys.argv[2]
# <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG  (RFC 5424 section 6)
line_re = re.compile(r'^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)$')
records = []
for line in open(path, encoding="utf-8"):
    m = line_re.match(line.rstrip("\n"))
    if not m or m.group(3) != "gatehouse-test-" + transport or m.group(4) != "gatehouse":
        continue
    msg = m.group(8).lstrip("\ufeff")
    record = json.loads(msg)
    records.append((int(m.group(1)), m.group(6), record))
allowed = [r for r in records if r[1] == "tool_outcome" and r[2].get("tool") == "whoami" and r[2]["outcome"] == "success"]
denied = [r for r in records if r[1] == "tool_decision" and r[2].get("reason") == "role_not_allowed"]
assert allowed, f"{transport}: no outcome record of the allowed call in {len(records)} records"
assert denied, f"{transport}: no record of the denied call"
pri, _, record = denied[-1]
assert pri == 13 * 8 + 4, f"{transport}: PRI {pri} is not log audit / warning"
assert allowed[-1][0] == 13 * 8 + 6, f"{transport}: PRI {allowed[-1][0]} is not log audit / informational"
assert record["link"]["hash"] and record["link"]["seq"] >= 1, record
command = [r for r in records if r[2].get("tool") == "keys/revoke-signing"]
assert command, f"{transport}: no record of the keys revoke-signing command"
assert command[-1][2]["link"]["chain"].startswith("run-"), command[-1]
print(f"syslog test ({transport}): rsyslog received {len(records)} RFC 5424 records, the allowed and the denied call among them")
PY
}

# Stops the server, revokes its signing key with the CLI (a command's records
# go to syslog too), and waits for rsyslog, which writes asynchronously.
stop_revoke_and_check() { # transport [file rsyslog wrote]
  kill -TERM "$gh_pid"; wait "$gh_pid" 2>/dev/null || true; gh_pid=""
  local dir="$work/gh-$1"
  kid=$("$bin" keys list-signing --json --config "$dir/gatehouse.toml" --data-dir "$dir" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["kid"])')
  "$bin" keys revoke-signing "$kid" --force --config "$dir/gatehouse.toml" --data-dir "$dir" >/dev/null
  for _ in $(seq 1 50); do
    check_received "$@" >/dev/null 2>&1 && break
    sleep 0.1
  done
  check_received "$@"
}

refused() { # response body: the call was not answered
  ! echo "$1" | grep -q '"structuredContent"'
}

for transport in tcp udp; do
  run_server "$transport"
  call whoami | grep -q '"structuredContent"' || { echo "the allowed call failed" >&2; exit 1; }
  call web_fetch | grep -q 'role_not_allowed' || { echo "the denied call was not refused" >&2; exit 1; }
  if [ "$transport" = tcp ]; then
    # Back-pressure: rsyslog gone, the call is refused, not answered.
    kill "$rs_pid"; wait "$rs_pid" 2>/dev/null || true
    body=$(call whoami || true)
    refused "$body" || { echo "a call was answered while its records could not reach syslog: $body" >&2; exit 1; }
    start_rsyslog
    ok=""
    for _ in $(seq 1 20); do
      if call whoami | grep -q '"structuredContent"'; then ok=1; break; fi
      sleep 0.2
    done
    [ -n "$ok" ] || { echo "calls did not resume once rsyslog was back" >&2; exit 1; }
    echo "syslog test (tcp): with rsyslog down a call was refused; once it was back calls went through"
  fi
  stop_revoke_and_check "$transport"
done
kill "$rs_pid"; wait "$rs_pid" 2>/dev/null || true; rs_pid=""

# TLS (RFC 5425): rsyslog's gtls driver, a CA made here, a client
# certificate required and its name checked (x509/name).
part="syslog test's TLS case"
command -v openssl >/dev/null 2>&1 || skip "openssl is not installed"
gtls_installed || skip "rsyslog's TLS driver is not installed (apt-get install rsyslog-gnutls)"
tls="$work/tls"; mkdir -p "$tls"
# The unit tests' script: ca.pem signed server.pem (127.0.0.1, localhost)
# and client.pem (gatehouse-test-client); other-ca.pem signed neither.
crates/gatehouse-audit/src/syslog/testdata/generate.sh "$tls"
cat >"$work/rsyslog-tls.conf" <<CONF
global(workDirectory="$work" maxMessageSize="64k")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/name"
       permittedPeer=["gatehouse-test-client"])
input(type="imtcp" address="127.0.0.1" port="$tls_port" streamDriver.caFile="$tls/ca.pem"
      streamDriver.certFile="$tls/server.pem" streamDriver.keyFile="$tls/server.key")
*.* action(type="omfile" file="$work/received-tls.log" template="RSYSLOG_SyslogProtocol23Format")
CONF
start_rsyslog "$work/rsyslog-tls.conf" "$tls_port"

# Verified by name (the address is an IP), with the client certificate.
run_server tls "address = \"tls://127.0.0.1:$tls_port\"
server_name = \"localhost\"
hostname = \"gatehouse-test-tls\"
ca_file = \"$tls/ca.pem\"
client_cert_file = \"$tls/client.pem\"
client_key_file = \"$tls/client.key\""
call whoami | grep -q '"structuredContent"' || { echo "the allowed call failed over TLS" >&2; exit 1; }
call web_fetch | grep -q 'role_not_allowed' || { echo "the denied call was not refused over TLS" >&2; exit 1; }
stop_revoke_and_check tls "$work/received-tls.log"

status() { # tool -> the HTTP status of a call
  curl -s -o /dev/null -w '%{http_code}' -X POST "$url" -H "authorization: Bearer $key" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H "mcp-name: $1" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":{},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}"
}
sent_by() { # HOSTNAME -> how many records rsyslog wrote from it
  grep -c " $1 gatehouse " "$work/received-tls.log" || true
}

# Verification is real: trusting another CA, the handshake fails, the call
# is refused and the next request gets 503; rsyslog gets nothing. Then the
# right CA file is put in place and the server told (SIGHUP): calls go
# through again without a restart.
mkdir -p "$work/gh-tls-untrusted"
cp "$tls/other-ca.pem" "$work/gh-tls-untrusted/ca.pem"
run_server tls-untrusted "address = \"tls://127.0.0.1:$tls_port\"
hostname = \"gatehouse-untrusted\"
ca_file = \"$work/gh-tls-untrusted/ca.pem\"
client_cert_file = \"$tls/client.pem\"
client_key_file = \"$tls/client.key\""
body=$(call whoami || true)
refused "$body" || { echo "a call was answered though rsyslog's certificate did not verify: $body" >&2; exit 1; }
code=$(status whoami)
[ "$code" = 503 ] || { echo "a request got HTTP $code, not 503, while the audit sink was failing" >&2; exit 1; }
grep -q 'its audit record could not be written' "$work/gh-tls-untrusted/keys-create.err" \
  || { echo "keys create did not fail on its unwritable audit record:" >&2; cat "$work/gh-tls-untrusted/keys-create.err" >&2; exit 1; }
grep -q 'UnknownIssuer' "$work/gh-tls-untrusted/err" \
  || { echo "the server did not log why the handshake failed:" >&2; cat "$work/gh-tls-untrusted/err" >&2; exit 1; }
[ "$(sent_by gatehouse-untrusted)" = 0 ] || { echo "records reached rsyslog from a server that trusts another CA" >&2; exit 1; }
echo "syslog test (tls): trusting another CA, the handshake failed and calls were refused (HTTP 503)"
cp "$tls/ca.pem" "$work/gh-tls-untrusted/ca.pem"
kill -HUP "$gh_pid"
answered=""
for _ in $(seq 1 50); do
  if call whoami | grep -q '"structuredContent"'; then answered=1; break; fi
  sleep 0.2
done
[ -n "$answered" ] || { echo "with the right CA file in place and SIGHUP sent, calls were still refused:" >&2; cat "$work/gh-tls-untrusted/err" >&2; exit 1; }
grep -q 'syslog TLS files reloaded' "$work/gh-tls-untrusted/err" \
  || { echo "the server did not log the reload:" >&2; cat "$work/gh-tls-untrusted/err" >&2; exit 1; }
kill -TERM "$gh_pid"; wait "$gh_pid" 2>/dev/null || true; gh_pid=""
for _ in $(seq 1 50); do [ "$(sent_by gatehouse-untrusted)" != 0 ] && break; sleep 0.1; done
[ "$(sent_by gatehouse-untrusted)" != 0 ] || { echo "after the reload no record reached rsyslog" >&2; exit 1; }
echo "syslog test (tls): the right CA file put in place and SIGHUP sent, calls went through again without a restart"

# Without a client certificate rsyslog completes the handshake, then drops
# the connection: the records of that first connection are lost, and the
# calls after it refused.
run_server tls-anonymous "address = \"tls://127.0.0.1:$tls_port\"
hostname = \"gatehouse-anonymous\"
ca_file = \"$tls/ca.pem\""
call whoami >/dev/null || true
sleep 0.2
for n in 1 2; do
  body=$(call whoami || true)
  refused "$body" || { echo "call $n was answered though rsyslog refuses the client: $body" >&2; exit 1; }
done
kill -TERM "$gh_pid"; wait "$gh_pid" 2>/dev/null || true; gh_pid=""
[ "$(sent_by gatehouse-anonymous)" = 0 ] || { echo "rsyslog took records from a client without a certificate" >&2; exit 1; }
echo "syslog test (tls): without a client certificate rsyslog dropped the connection and calls were refused"
