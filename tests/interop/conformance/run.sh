#!/usr/bin/env bash
# The MCP conformance suite's server scenarios, through Gatehouse.
#
# Starts the suite's reference server (everything-server.mts beside this
# script), runs `conformance server --requirements 2025-11-25` and
# `--requirements 2026-07-28` against it directly, then starts a real
# Gatehouse fronting it (prefix "", authentication off on loopback: the
# suite cannot send credentials) and runs the same scenarios through
# Gatehouse. Prints both pass counts and fails when any check's status
# differs between the two (compare.mjs lists the few differences relaying
# cannot remove, each with its reason, and says by how much the pass counts
# differ because of them).
#
# Reuses the Node 22 and package installs of tests/interop/node (installing
# them when missing). Each requirement set runs in a few seconds.
set -euo pipefail

root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/tests/interop/conformance"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "conformance: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the MCP conformance run through Gatehouse: $1" >&2
  echo "!!! Install node and npm (any version; Node 22 is fetched with npm) to run it." >&2
  echo "" >&2
  echo "MCP conformance suite through Gatehouse: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

# Node 22 and the pinned packages ($tools, $conformance).
. "$root/tests/interop/node/setup.sh"
# ESM resolves the server's imports from its own folder upwards.
cp "$here/everything-server.mts" "$tools/"

cargo build --quiet --bin gatehouse
bin="$root/target/debug/gatehouse"
work="$(mktemp -d)"
cleanup() {
  [ -n "${gatehouse_pid:-}" ] && kill "$gatehouse_pid" 2>/dev/null || true
  [ -n "${upstream_pid:-}" ] && kill "$upstream_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
# wait_for URL PID LOG: until something answers at URL (any status).
wait_for() {
  for _ in $(seq 1 100); do
    node -e 'fetch(process.argv[1]).then(()=>process.exit(0),()=>process.exit(1))' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  cat "$3" >&2
  echo "conformance: nothing answers at $1" >&2
  exit 1
}

# The reference server reads its port from PORT (it prints localhost URLs).
port="$(free_port)"
upstream="http://localhost:$port/mcp"
PORT="$port" node "$tools/everything-server.mts" >"$work/upstream.log" 2>&1 &
upstream_pid=$!
wait_for "$upstream" "$upstream_pid" "$work/upstream.log"

# run LABEL URL REQUIREMENTS: the suite's exit code says nothing here (the
# reference server fails some checks itself); compare.mjs reads the results.
run() {
  node "$conformance" server --url "$2" --requirements "$3" -o "$work/$1-$3" >"$work/$1-$3.log" 2>&1 || true
  [ -n "$(ls -A "$work/$1-$3" 2>/dev/null)" ] || { cat "$work/$1-$3.log" >&2; echo "conformance: no results for $1 $3" >&2; exit 1; }
}
for requirements in 2025-11-25 2026-07-28; do
  run direct "$upstream" "$requirements"
done

# Gatehouse in front: every tool, prompt and resource of the upstream for
# the anonymous principal (the [upstreams.ref] section), loopback only.
# The suite opens one session per scenario and never ends them, and checks
# an Origin of http://localhost:<port>.
cp "$root/crates/gatehouse-policy/src/default_policy.toml" "$work/policy.toml"
cat >>"$work/policy.toml" <<'EOF'

[upstreams.ref]
scope = "tools:read"
roles = ["reader"]
EOF

# start_gatehouse REVISION: a fresh Gatehouse whose connection to the
# upstream speaks that protocol revision, and sets $gateway. One
# connection speaks one revision, and the reference server serves
# sampling, elicitation, resource subscriptions and logging levels only in
# a 2025-11-25 session, input-required results only statelessly.
start_gatehouse() {
  stop_gatehouse
  rm -rf "$work/data" && mkdir "$work/data"
  cat >"$work/gatehouse.toml" <<EOF
version = 1
[server]
allowed_origins = ["http://localhost:*"]
max_sessions_per_principal = 1000
initialize_per_minute = 1000
[auth]
mode = "none"
anonymous_role = "reader"
[policy]
file = "policy.toml"
[[upstreams]]
name = "ref"
url = "$upstream"
prefix = ""
protocol_version = "$1"
# The tasks-extension scenarios call tools the reference server does not
# list; with pinning on, Gatehouse refuses a tool it cannot check against
# a pinned definition (tool_definition_unreviewed), by design. This run
# measures the protocol passing through, so pinning is off here; pinning
# has its own tests (e2e::tool_pins).
pin = "off"
EOF
  : >"$work/gatehouse.out"
  "$bin" serve --json --config "$work/gatehouse.toml" --data-dir "$work/data" --listen 127.0.0.1:0 \
    >"$work/gatehouse.out" 2>>"$work/gatehouse.err" &
  gatehouse_pid=$!
  for _ in $(seq 1 100); do
    grep -q '"listening"' "$work/gatehouse.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '"listening"' "$work/gatehouse.out" || { cat "$work/gatehouse.err" >&2; echo "conformance: Gatehouse did not start" >&2; exit 1; }
  # The suite's DNS-rebinding scenario needs a localhost URL.
  local address
  address="$(sed -n 's/.*"address":"\([^"]*\)".*/\1/p' "$work/gatehouse.out" | head -n1)"
  gateway="http://localhost:${address##*:}/mcp"
}
stop_gatehouse() {
  if [ -n "${gatehouse_pid:-}" ]; then
    kill "$gatehouse_pid" 2>/dev/null || true
    wait "$gatehouse_pid" 2>/dev/null || true
    gatehouse_pid=""
  fi
}

status=0
for requirements in 2025-11-25 2026-07-28; do
  start_gatehouse "$requirements"
  run gatehouse "$gateway" "$requirements"
  node "$here/compare.mjs" "$requirements" "$work/direct-$requirements" "$work/gatehouse-$requirements" || status=1
done
stop_gatehouse
if [ "$status" != 0 ]; then
  echo "conformance: Gatehouse's log:" >&2
  grep -v ' DEBUG \| TRACE ' "$work/gatehouse.err" | tail -n 40 >&2
  exit 1
fi
echo "conformance: every check has the same status through Gatehouse as against the upstream, but those listed"
