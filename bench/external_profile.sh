#!/usr/bin/env bash
# Instructions per stateless `tools/call whoami`, counted with callgrind (a
# figure that does not depend on how busy the machine is), for four arms:
# authentication off; an identity provider's RS256 and ES256 access tokens,
# one token per arm (so the validation is reused); and ES256 with a new
# token on every request (every one verified). Each arm is its own release
# server under `valgrind --tool=callgrind` with one Tokio worker; after a
# warm-up the counters are zeroed, CONNECTIONS connections call for
# SECONDS, and the instructions are divided by the `tool_outcome` records
# written meanwhile. Prints instructions per call and the ratios to auth off.
#
#   bench/external_profile.sh [SECONDS] [CONNECTIONS]      (defaults: 10 4)
#
# GATEHOUSE_PROFILE_KEEP=DIR keeps each arm's callgrind file there.
# Needs valgrind, wrk, node and python3.
set -euo pipefail
seconds="${1:-10}"; conns="${2:-4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

for tool in python3 node wrk valgrind callgrind_control callgrind_annotate; do
  command -v "$tool" >/dev/null 2>&1 || { echo "external_profile.sh: MISSING: $tool" >&2; exit 1; }
done
cargo build --release --quiet --bin gatehouse
bin="$root/target/release/gatehouse"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

audience="urn:gatehouse:bench"
node bench/external_idp.mjs "$work" "$audience" >"$work/idp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/issuer" ] && break; sleep 0.1; done
[ -s "$work/issuer" ] || { cat "$work/idp.log" >&2; echo "the provider did not start" >&2; exit 1; }
issuer="$(cat "$work/issuer")"

external_config="version = 1
[[issuers]]
issuer = \"$issuer\"
internal = true
audiences = [\"$audience\"]
roles_claim = \"groups\"
role_map = { \"mcp-readers\" = \"reader\" }"
off_config=$'version = 1\n[auth]\nmode = "none"\nanonymous_role = "reader"'

# measure NAME CONFIG LUA ENV... -> sets $per_call
measure() {
  local name="$1" config="$2" lua="$3"; shift 3
  local dir="$work/$name"; mkdir -p "$dir"
  # The count reads audit.jsonl: it must not be rotated meanwhile.
  printf '%s\n[audit]\nrotate_bytes = 0\nrotate_after = "0s"\n' "$config" > "$dir/gatehouse.toml"
  (export GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS=1
   exec valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
     "$bin" serve --json --config "$dir/gatehouse.toml" --data-dir "$dir" \
     --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/out.err") &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.2; done
  local url
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  [ -n "$url" ] || { cat "$dir/out.err" >&2; echo "$name did not start" >&2; exit 1; }
  # Warm-up: keys fetched, caches and connections made.
  env "$@" wrk -t1 -c"$conns" -d3s -s "$lua" "$url" > /dev/null
  callgrind_control -z "$pid" > /dev/null
  local before after line
  before=$(grep -c '"kind":"tool_outcome"' "$dir/audit.jsonl" || true)
  line=$(env "$@" wrk -t1 -c"$conns" -d"${seconds}s" -s "$lua" "$url" | grep '^RESULT')
  case "$line" in *" errors=0 non2xx_or_bad=0 "*) ;; *) echo "$name: bad responses: $line" >&2; exit 1;; esac
  sleep 1
  callgrind_control -d "$pid" > /dev/null
  after=$(grep -c '"kind":"tool_outcome"' "$dir/audit.jsonl" || true)
  local dump total
  dump=$(ls -t "$dir"/callgrind.out* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  per_call=$((total / (after - before)))
  if [ -n "${GATEHOUSE_PROFILE_KEEP:-}" ]; then
    mkdir -p "$GATEHOUSE_PROFILE_KEEP"; cp "$dump" "$GATEHOUSE_PROFILE_KEEP/$name.callgrind"
  fi
  kill "$pid" 2>/dev/null || true
  echo "$name: calls=$((after - before)) instructions_per_call=$per_call"
}

declare -A per=()
measure off "$off_config" bench/whoami.lua GATEHOUSE_KEY=; per[off]=$per_call
measure rs256 "$external_config" bench/whoami.lua GATEHOUSE_KEY="$(cat "$work/rs256.token")"; per[rs256]=$per_call
measure es256 "$external_config" bench/whoami.lua GATEHOUSE_KEY="$(cat "$work/es256.token")"; per[es256]=$per_call
measure es256_distinct "$external_config" bench/tokens.lua GATEHOUSE_TOKENS="$work/es256_distinct.tokens"
per[es256_distinct]=$per_call
for arm in rs256 es256 es256_distinct; do
  python3 -c "print(f'$arm: auth-off instructions / $arm instructions per call = {${per[off]} / ${per[$arm]}:.3f}')"
done
