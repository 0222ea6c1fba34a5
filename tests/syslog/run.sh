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
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "syslog test: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the syslog test: $1" >&2
  echo "!!! It needs Debian's rsyslog (apt-get install rsyslog), python3 and curl." >&2
  echo "" >&2
  echo "syslog (rsyslog) test: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

rsyslogd="$(command -v rsyslogd || echo /usr/sbin/rsyslogd)"
if [ ! -x "$rsyslogd" ]; then
  if [ "${GATEHOUSE_TEST_INSTALL_SYSTEM:-}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "syslog test: installing Debian's rsyslog system-wide with apt-get (GATEHOUSE_TEST_INSTALL_SYSTEM=1)" >&2
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog >/dev/null \
      || skip "apt-get install rsyslog failed"
  fi
  [ -x "$rsyslogd" ] || skip "rsyslogd is not installed"
fi
command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"
command -v curl >/dev/null 2>&1 || skip "curl is not installed"

cargo build --quiet --bin gatehouse
bin="$root/target/debug/gatehouse"
work="$(mktemp -d)"
cleanup() {
  [ -n "${rs_pid:-}" ] && kill "$rs_pid" 2>/dev/null || true
  [ -n "${gh_pid:-}" ] && kill "$gh_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r tcp_port udp_port < <(python3 -c '
import socket
t = socket.socket(); t.bind(("127.0.0.1", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(t.getsockname()[1], u.getsockname()[1])')

cat >"$work/rsyslog.conf" <<CONF
global(workDirectory="$work" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
input(type="imtcp" address="127.0.0.1" port="$tcp_port")
input(type="imudp" address="127.0.0.1" port="$udp_port")
*.* action(type="omfile" file="$work/received.log" template="RSYSLOG_SyslogProtocol23Format")
CONF

start_rsyslog() {
  "$rsyslogd" -n -iNONE -f "$work/rsyslog.conf" >>"$work/rsyslog.out" 2>&1 &
  rs_pid=$!
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $tcp_port), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "rsyslogd did not start:" >&2; cat "$work/rsyslog.out" >&2; exit 1
}
start_rsyslog

# One server per transport: an allowed and a denied call, then a graceful stop.
run_server() { # transport
  local dir="$work/gh-$1"; mkdir -p "$dir"
  local port="$tcp_port"; [ "$1" = udp ] && port="$udp_port"
  cat >"$dir/gatehouse.toml" <<CONF
version = 1
[audit.syslog]
address = "$1://127.0.0.1:$port"
hostname = "gatehouse-test"
CONF
  "$bin" serve --json --config "$dir/gatehouse.toml" --data-dir "$dir" --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
  gh_pid=$!
  for _ in $(seq 1 150); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  grep -q '"listening"' "$dir/out" || { echo "gatehouse did not start:" >&2; cat "$dir/err" >&2; exit 1; }
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  key=$("$bin" keys create --name syslog --role reader --json --config "$dir/gatehouse.toml" --data-dir "$dir" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
}

call() { # tool -> the response body
  curl -s -X POST "$url" -H "authorization: Bearer $key" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H "mcp-name: $1" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":{},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}"
}

check_received() { # transport
  python3 - "$work/received.log" "$1" <<'PY'
import json, re, sys
path, transport = sys.argv[1], sys.argv[2]
# <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG  (RFC 5424 section 6)
line_re = re.compile(r'^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)$')
records = []
for line in open(path, encoding="utf-8"):
    m = line_re.match(line.rstrip("\n"))
    if not m or m.group(3) != "gatehouse-test" or m.group(4) != "gatehouse":
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

for transport in tcp udp; do
  run_server "$transport"
  call whoami | grep -q '"structuredContent"' || { echo "the allowed call failed" >&2; exit 1; }
  call web_fetch | grep -q 'role_not_allowed' || { echo "the denied call was not refused" >&2; exit 1; }
  if [ "$transport" = tcp ]; then
    # Back-pressure: rsyslog gone, the call is refused, not answered.
    kill "$rs_pid"; wait "$rs_pid" 2>/dev/null || true
    body=$(call whoami || true)
    if echo "$body" | grep -q '"structuredContent"'; then
      echo "a call was answered while its records could not reach syslog: $body" >&2; exit 1
    fi
    start_rsyslog
    ok=""
    for _ in $(seq 1 20); do
      if call whoami | grep -q '"structuredContent"'; then ok=1; break; fi
      sleep 0.2
    done
    [ -n "$ok" ] || { echo "calls did not resume once rsyslog was back" >&2; exit 1; }
    echo "syslog test (tcp): with rsyslog down a call was refused; once it was back calls went through"
  fi
  kill -TERM "$gh_pid"; wait "$gh_pid" 2>/dev/null || true; gh_pid=""
  # A command's records go to syslog too: revoking the signing key.
  dir="$work/gh-$transport"
  kid=$("$bin" keys list-signing --json --config "$dir/gatehouse.toml" --data-dir "$dir" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["kid"])')
  "$bin" keys revoke-signing "$kid" --force --config "$dir/gatehouse.toml" --data-dir "$dir" >/dev/null
  # rsyslog writes asynchronously: give it a moment to flush.
  for _ in $(seq 1 50); do
    check_received "$transport" >/dev/null 2>&1 && break
    sleep 0.1
  done
  check_received "$transport"
done
