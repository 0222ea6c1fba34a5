#!/usr/bin/env bash
# Load benchmark: `tools/call whoami` through Gatehouse with authentication
# off versus with an API key, measured side by side in one run (interleaved
# A/B rounds), reported as a ratio. Loopback only; bounded in time.
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

start_server() { # name config-body -> prints base URL
  local dir="$work/$1"; mkdir -p "$dir"
  printf '%s\n' "$2" > "$dir/gatehouse.toml"
  GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS=1 pin "$server_cpu" "$bin" serve --json \
    --config "$dir/gatehouse.toml" --data-dir "$dir" --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out"
}

off_url=$(start_server off $'version = 1\n[auth]\nmode = "none"\nanonymous_role = "reader"')
key_url=$(start_server key $'version = 1')
key=$("$bin" keys create --data-dir "$work/key" --name bench --role reader --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

load() { # url key -> RESULT line
  GATEHOUSE_KEY="$2" pin "$client_cpu" wrk -t1 -c"$conns" -d"${seconds}s" --latency \
    -s bench/whoami.lua "$1" | grep '^RESULT'
}

served_off=0; served_key=0
count() { sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$1"; }

echo "warm-up (discarded)"
w=$(load "$off_url" ""); served_off=$((served_off + $(count "$w")))
w=$(load "$key_url" "$key"); served_key=$((served_key + $(count "$w")))

echo "rounds=$rounds seconds=$seconds connections=$conns server_cpu=$server_cpu client_cpu=$client_cpu"
ratios=()
for r in $(seq 1 "$rounds"); do
  # Alternate the order so drift does not favour one arm.
  if [ $((r % 2)) = 1 ]; then
    a=$(load "$off_url" ""); b=$(load "$key_url" "$key")
  else
    b=$(load "$key_url" "$key"); a=$(load "$off_url" "")
  fi
  served_off=$((served_off + $(count "$a"))); served_key=$((served_key + $(count "$b")))
  echo "round $r auth-off: $a"
  echo "round $r api-key:  $b"
  for line in "$a" "$b"; do
    case "$line" in *"errors=0 non2xx_or_bad=0"*) ;; *) echo "a run had errors: $line" >&2; exit 1;; esac
  done
  off_rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$a"); key_rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$b")
  ratios+=("$(python3 -c "print(f'{$key_rps / $off_rps:.3f}')")")
done
echo "api-key / auth-off RPS ratio per round: ${ratios[*]}"
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f'median ratio: {statistics.median(r):.3f}  (min {min(r):.3f}, max {max(r):.3f}; target >= 0.90)')" "${ratios[@]}"

# Every answered call left its outcome record (a few more may exist for
# requests still in flight when wrk stopped counting).
for arm in off key; do
  rows=$(GATEHOUSE_LOG=error "$bin" audit query --data-dir "$work/$arm" --kind tool_outcome --limit 100000000 --json | wc -l)
  served=$([ "$arm" = off ] && echo "$served_off" || echo "$served_key")
  echo "$arm: $served calls answered, $rows tool_outcome audit records"
  [ "$rows" -ge "$served" ] || { echo "audit records are missing" >&2; exit 1; }
done
