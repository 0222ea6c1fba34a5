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
bin="$root/target/release/gatehouse"

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
start_server() { # name config-body
  local dir="$work/$1"; mkdir -p "$dir"
  printf '%s\n' "$2" > "$dir/gatehouse.toml"
  # Not through the `pin` function: a function in the background runs in a
  # subshell, and $! would name the subshell, which cleanup cannot use to
  # stop the server. taskset execs the server, so $! is the server itself.
  local pin_server=()
  command -v taskset >/dev/null 2>&1 && pin_server=(taskset -c "$server_cpu")
  GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS=1 "${pin_server[@]}" "$bin" serve --json \
    --config "$dir/gatehouse.toml" --data-dir "$dir" --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  [ -n "$url" ] || { cat "$dir/err" >&2; echo "server $1 did not start" >&2; exit 1; }
}

start_server off $'version = 1\n[auth]\nmode = "none"\nanonymous_role = "reader"'; off_url=$url
start_server key $'version = 1'; key_url=$url
# The JWT arm gets its own server so that each arm's audit log grows at the
# same rate (a bigger log makes writes slower).
start_server jwt $'version = 1'; jwt_url=$url
key=$("$bin" keys create --data-dir "$work/key" --name bench --role reader --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
client=$("$bin" clients create --data-dir "$work/jwt" --name bench --role reader --json)
client_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
client_secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")
base_url="${jwt_url%/mcp}"
# Tokens live 15 minutes: long enough for the whole run.
jwt=$(curl -s -u "$client_id:$client_secret" -d grant_type=client_credentials "$base_url/oauth/token" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# The task arm: an API key exchanged (RFC 8693) for a task token of the
# task `research`, so every call also passes the task-grant check.
start_server task $'version = 1'; task_url=$url
task_key=$("$bin" keys create --data-dir "$work/task" --name bench --role reader --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
task=$(curl -s "${task_url%/mcp}/oauth/token" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token="$task_key" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token -d task=research \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

load() { # url key -> RESULT line
  GATEHOUSE_KEY="$2" pin "$client_cpu" wrk -t1 -c"$conns" -d"${seconds}s" --latency \
    -s bench/whoami.lua "$1" | grep '^RESULT'
}

arms=(off key jwt task)
declare -A arm_url=([off]="$off_url" [key]="$key_url" [jwt]="$jwt_url" [task]="$task_url")
declare -A arm_key=([off]="" [key]="$key" [jwt]="$jwt" [task]="$task")
declare -A served=([off]=0 [key]=0 [jwt]=0 [task]=0)
declare -A ratios=([key]="" [jwt]="" [task]="")
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
  for i in 0 1 2 3; do
    arm=${arms[$(( (i + r) % 4 ))]}
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
done
summary() { python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: per round {\" \".join(sys.argv[2:])}; median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})')" "$@"; }
# shellcheck disable=SC2086 # the ratios are a space-separated list
summary "api-key / auth-off RPS (target >= 0.90)" ${ratios[key]}
# shellcheck disable=SC2086
summary "jwt-bearer (validated-token cache) / auth-off RPS (target >= 0.85)" ${ratios[jwt]}
# shellcheck disable=SC2086
summary "task token (token exchange, task-grant check) / auth-off RPS" ${ratios[task]}

# Token endpoint: client-credentials grants per second (each signs an ES256
# JWT and writes its audit record before answering).
t=$(GATEHOUSE_CLIENT_ID="$client_id" GATEHOUSE_CLIENT_SECRET="$client_secret" pin "$client_cpu" \
  wrk -t1 -c"$conns" -d"${seconds}s" --latency -s bench/token.lua "$base_url/oauth/token" | grep '^RESULT')
echo "token endpoint (client_credentials): $t"
case "$t" in *"errors=0 non2xx_or_bad=0"*) ;; *) echo "token run had errors" >&2; exit 1;; esac

# Every answered call left its outcome record (a few more may exist for
# requests still in flight when wrk stopped counting).
for arm in "${arms[@]}"; do
  rows=$(GATEHOUSE_LOG=error "$bin" audit query --data-dir "$work/$arm" --kind tool_outcome --limit 100000000 --json | wc -l)
  echo "$arm: ${served[$arm]} calls answered, $rows tool_outcome audit records"
  [ "$rows" -ge "${served[$arm]}" ] || { echo "audit records are missing" >&2; exit 1; }
done
