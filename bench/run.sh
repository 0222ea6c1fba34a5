#!/usr/bin/env bash
# Load benchmark: `tools/call whoami` through Gatehouse with authentication
# off, with an API key, with an OAuth access token (JWT) and with a task
# token (token exchange; every call also passes the task-grant check), measured side by
# side in one run (interleaved rounds), reported as ratios to auth off. Then
# the token endpoint's client-credentials throughput. Loopback only; bounded
# in time.
#
#   bench/run.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (defaults: 3 10 32)
#
# With GATEHOUSE_BENCH_BASELINE=/path/to/an/older/gatehouse every arm also
# runs against that binary, in the same rounds, and the report adds the
# ratio this build / baseline per arm (a regression check side by side).
#
# Needs wrk (installed with apt-get if missing and running as root).
set -euo pipefail
rounds="${1:-3}"; seconds="${2:-10}"; conns="${3:-32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk
  else
    echo "wrk is required (Debian/Ubuntu: apt-get install wrk)" >&2; exit 1
  fi
fi
cargo build --release --quiet --bin gatehouse
bin="${CARGO_TARGET_DIR:-$root/target}/release/gatehouse"

cpus=$(nproc)
# Server on CPU 0, load generator on the others (or shared on a 1-CPU box).
server_cpu="0"; client_cpu="1-$((cpus - 1))"
[ "$cpus" -lt 2 ] && client_cpu="0"
pin() { if command -v taskset >/dev/null 2>&1; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Starts a server in the background of this shell (not in a subshell, so
# cleanup can stop it) and sets $url to its MCP endpoint.
start_server() { # name config-body [binary]
  local dir="$work/$1"; mkdir -p "$dir"
  local server_bin="${3:-$bin}"
  printf '%s\n' "$2" > "$dir/gatehouse.toml"
  # Not through the `pin` function: a function in the background runs in a
  # subshell, and $! would name the subshell, which cleanup cannot use to
  # stop the server. taskset execs the server, so $! is the server itself.
  local pin_server=()
  command -v taskset >/dev/null 2>&1 && pin_server=(taskset -c "$server_cpu")
  GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS=1 "${pin_server[@]}" "$server_bin" serve --json \
    --config "$dir/gatehouse.toml" --data-dir "$dir" --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  [ -n "$url" ] || { cat "$dir/err" >&2; echo "server $1 did not start" >&2; exit 1; }
}

declare -A arm_url=() arm_key=() arm_bin=()
clients=()
# Starts the four arms of one binary; names are prefixed ("" or "base_").
start_arms() { # prefix binary
  local p="$1" b="$2" url key client client_id client_secret jwt task
  start_server "${p}off" $'version = 1\n[auth]\nmode = "none"\nanonymous_role = "reader"' "$b"
  arm_url[${p}off]=$url; arm_key[${p}off]=""
  start_server "${p}key" $'version = 1' "$b"; arm_url[${p}key]=$url
  arm_key[${p}key]=$("$b" keys create --data-dir "$work/${p}key" --name bench --role reader --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  # The JWT arm gets its own server so that each arm's audit log grows at the
  # same rate (a bigger log makes writes slower).
  start_server "${p}jwt" $'version = 1' "$b"; arm_url[${p}jwt]=$url
  client=$("$b" clients create --data-dir "$work/${p}jwt" --name bench --role reader --json)
  client_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
  client_secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")
  clients+=("${p:-this_} ${url%/mcp} $client_id $client_secret")
  # Tokens live 15 minutes: long enough for the whole run.
  arm_key[${p}jwt]=$(curl -s -u "$client_id:$client_secret" -d grant_type=client_credentials "${url%/mcp}/oauth/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  # The task arm: an API key exchanged (RFC 8693) for a task token of the
  # task `research`, so every call also passes the task-grant check.
  start_server "${p}task" $'version = 1' "$b"; arm_url[${p}task]=$url
  key=$("$b" keys create --data-dir "$work/${p}task" --name bench --role reader --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  arm_key[${p}task]=$(curl -s "${url%/mcp}/oauth/token" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    -d subject_token="$key" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token -d task=research \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  for arm in off key jwt task; do arm_bin[${p}$arm]="$b"; done
}

arms=(off key jwt task)
start_arms "" "$bin"
baseline="${GATEHOUSE_BENCH_BASELINE:-}"
if [ -n "$baseline" ]; then
  [ -x "$baseline" ] || { echo "GATEHOUSE_BENCH_BASELINE=$baseline is not an executable" >&2; exit 1; }
  start_arms base_ "$baseline"
  arms+=(base_off base_key base_jwt base_task)
  echo "baseline: $baseline"
fi

load() { # url key -> RESULT line
  GATEHOUSE_KEY="$2" pin "$client_cpu" wrk -t1 -c"$conns" -d"${seconds}s" --latency \
    -s bench/whoami.lua "$1" | grep '^RESULT'
}

declare -A served=() ratios=() versus=()
for arm in "${arms[@]}"; do served[$arm]=0; done
count() { sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$1"; }
rps() { sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$1"; }

echo "warm-up (discarded)"
for arm in "${arms[@]}"; do
  w=$(load "${arm_url[$arm]}" "${arm_key[$arm]}"); served[$arm]=$((served[$arm] + $(count "$w")))
done

echo "rounds=$rounds seconds=$seconds connections=$conns server_cpu=$server_cpu client_cpu=$client_cpu"
for r in $(seq 1 "$rounds"); do
  # Rotate the order so drift does not favour one arm.
  declare -A result=()
  n=${#arms[@]}
  for i in $(seq 0 $((n - 1))); do
    arm=${arms[$(( (i + r) % n ))]}
    result[$arm]=$(load "${arm_url[$arm]}" "${arm_key[$arm]}")
    served[$arm]=$((served[$arm] + $(count "${result[$arm]}")))
  done
  for arm in "${arms[@]}"; do
    echo "round $r $arm: ${result[$arm]}"
    case "${result[$arm]}" in *"errors=0 non2xx_or_bad=0"*) ;; *) echo "a run had errors: ${result[$arm]}" >&2; exit 1;; esac
  done
  for arm in key jwt task; do
    ratios[$arm]+=" $(python3 -c "print(f'{$(rps "${result[$arm]}") / $(rps "${result[off]}"):.3f}')")"
  done
  if [ -n "$baseline" ]; then
    for arm in off key jwt task; do
      versus[$arm]+=" $(python3 -c "print(f'{$(rps "${result[$arm]}") / $(rps "${result[base_$arm]}"):.3f}')")"
    done
  fi
done
summary() { python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: per round {\" \".join(sys.argv[2:])}; median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})')" "$@"; }
# shellcheck disable=SC2086 # the ratios are a space-separated list
summary "api-key / auth-off RPS (target >= 0.90)" ${ratios[key]}
# shellcheck disable=SC2086
summary "jwt-bearer (validated-token cache) / auth-off RPS (target >= 0.85)" ${ratios[jwt]}
# shellcheck disable=SC2086
summary "task token (token exchange, task-grant check) / auth-off RPS" ${ratios[task]}
if [ -n "$baseline" ]; then
  for arm in off key jwt task; do
    # shellcheck disable=SC2086
    summary "$arm: this build / baseline RPS" ${versus[$arm]}
  done
fi

# Token endpoint: client-credentials grants per second (each signs an ES256
# JWT and writes its audit record before answering).
for c in "${clients[@]}"; do
  read -r label base_url client_id client_secret <<<"$c"
  t=$(GATEHOUSE_CLIENT_ID="$client_id" GATEHOUSE_CLIENT_SECRET="$client_secret" pin "$client_cpu" \
    wrk -t1 -c"$conns" -d"${seconds}s" --latency -s bench/token.lua "$base_url/oauth/token" | grep '^RESULT')
  echo "${label%_} token endpoint (client_credentials): $t"
  case "$t" in *"errors=0 non2xx_or_bad=0"*) ;; *) echo "token run had errors" >&2; exit 1;; esac
done

# Every answered call left its outcome record (a few more may exist for
# requests still in flight when wrk stopped counting).
for arm in "${arms[@]}"; do
  rows=$(GATEHOUSE_LOG=error "${arm_bin[$arm]}" audit query --data-dir "$work/$arm" --kind tool_outcome --limit 100000000 --json | wc -l)
  echo "$arm: ${served[$arm]} calls answered, $rows tool_outcome audit records"
  [ "$rows" -ge "${served[$arm]}" ] || { echo "audit records are missing" >&2; exit 1; }
done
