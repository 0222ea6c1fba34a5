#!/usr/bin/env bash
# External-issuer validation: `tools/call whoami` with an identity
# provider's access token (an RS256 JWT and an ES256 JWT, validated against
# the provider's cached JWKS) next to authentication off, side by side in
# interleaved rounds, reported as ratios. Then the unknown-kid flood: good
# ES256 traffic alone and while a distributed flood of tokens naming unknown
# key ids hits the same server, and how many JWKS fetches the flood caused.
#
#   bench/external.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (defaults: 3 10 32)
#
# Arms rotate their order each round; use a multiple of 3 rounds so each
# arm runs first, second and third equally often.
#
# Needs wrk (installed with apt-get if missing and running as root), node
# (the provider and the flood, bench/external_idp.mjs and bench/flood.mjs)
# and python3.
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
command -v node >/dev/null 2>&1 || { echo "node is required" >&2; exit 1; }
cargo build --release --quiet --bin gatehouse
bin="$root/target/release/gatehouse"

cpus=$(nproc)
server_cpu="0"; client_cpu="1-$((cpus - 1))"
[ "$cpus" -lt 2 ] && client_cpu="0"
pin() { if command -v taskset >/dev/null 2>&1; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The provider: keys, discovery, and the tokens the arms send. Tokens carry
# a fixed audience so they can be made before the servers' ports are known.
audience="urn:gatehouse:bench"
pin "$client_cpu" node bench/external_idp.mjs "$work" "$audience" >"$work/idp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/issuer" ] && break; sleep 0.1; done
[ -s "$work/issuer" ] || { cat "$work/idp.log" >&2; echo "the provider did not start" >&2; exit 1; }
issuer="$(cat "$work/issuer")"
fetches() { curl -s "$issuer/count"; }

start_server() { # name config-body; sets $url
  local dir="$work/$1"; mkdir -p "$dir"
  printf '%s\n' "$2" > "$dir/gatehouse.toml"
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

external_config="version = 1
[[issuers]]
issuer = \"$issuer\"
internal = true
audiences = [\"$audience\"]
roles_claim = \"groups\"
role_map = { \"mcp-readers\" = \"reader\" }"

declare -A arm_url=() arm_key=()
start_server off $'version = 1\n[auth]\nmode = "none"\nanonymous_role = "reader"'
arm_url[off]=$url; arm_key[off]=""
# One server per arm, so each arm's audit log grows at the same rate.
start_server rs256 "$external_config"; arm_url[rs256]=$url; arm_key[rs256]="$(cat "$work/rs256.token")"
start_server es256 "$external_config"; arm_url[es256]=$url; arm_key[es256]="$(cat "$work/es256.token")"
arms=(off rs256 es256)

load() { # url key -> RESULT line
  # Every server shares CPU 0: let the previous run's background work (the
  # audit writer, the log checkpoint) finish first, or the arm that runs
  # next in a round pays for it.
  sleep 2
  GATEHOUSE_KEY="$2" pin "$client_cpu" wrk -t1 -c"$conns" -d"${seconds}s" --latency \
    -s bench/whoami.lua "$1" | grep '^RESULT'
}
rps() { sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$1"; }
ok_run() { case "$1" in *"errors=0 non2xx_or_bad=0"*) ;; *) echo "a run had errors: $1" >&2; exit 1;; esac; }

echo "warm-up (discarded)"
for arm in "${arms[@]}"; do ok_run "$(load "${arm_url[$arm]}" "${arm_key[$arm]}")"; done
echo "rounds=$rounds seconds=$seconds connections=$conns server_cpu=$server_cpu client_cpu=$client_cpu"
declare -A ratios=()
for r in $(seq 1 "$rounds"); do
  declare -A result=()
  n=${#arms[@]}
  for i in $(seq 0 $((n - 1))); do
    arm=${arms[$(( (i + r) % n ))]}
    result[$arm]=$(load "${arm_url[$arm]}" "${arm_key[$arm]}")
    ok_run "${result[$arm]}"
  done
  for arm in "${arms[@]}"; do echo "round $r $arm: ${result[$arm]}"; done
  for arm in rs256 es256; do
    ratios[$arm]+=" $(python3 -c "print(f'{$(rps "${result[$arm]}") / $(rps "${result[off]}"):.3f}')")"
  done
done
summary() { python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: per round {\" \".join(sys.argv[2:])}; median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})')" "$@"; }
# shellcheck disable=SC2086
summary "external JWT RS256 (cached JWKS) / auth-off RPS (target >= 0.85)" ${ratios[rs256]}
# shellcheck disable=SC2086
summary "external JWT ES256 (cached JWKS) / auth-off RPS (target >= 0.85)" ${ratios[es256]}

# The flood: good ES256 traffic alone, then with the flood on the same
# server (alternating, so drift does not favour one), and the JWKS fetches
# the flood caused (at most one per 30 s cooldown, however many tokens).
declare -a flood_ratios=()
for r in $(seq 1 "$rounds"); do
  alone=$(load "${arm_url[es256]}" "${arm_key[es256]}"); ok_run "$alone"
  before=$(fetches)
  pin "$client_cpu" node bench/flood.mjs "${arm_url[es256]}" "$work/unknown_kid.tokens" "$seconds" 8 \
    >"$work/flood.out" 2>&1 &
  flood_pid=$!
  flooded=$(load "${arm_url[es256]}" "${arm_key[es256]}"); ok_run "$flooded"
  wait "$flood_pid"
  after=$(fetches)
  flood=$(grep '^RESULT' "$work/flood.out" || { cat "$work/flood.out" >&2; exit 1; })
  case "$flood" in *"not_refused=0"*) ;; *) echo "a flood token was not refused: $flood" >&2; exit 1;; esac
  echo "round $r good alone: $alone"
  echo "round $r good during flood: $flooded"
  echo "round $r flood (unknown kids, a new source address per request): $flood; JWKS fetches during it: $((after - before))"
  flood_ratios+=("$(python3 -c "print(f'{$(rps "$flooded") / $(rps "$alone"):.3f}')")")
done
summary "good ES256 traffic during the flood / alone RPS" "${flood_ratios[@]}"
echo "JWKS fetches in all: $(fetches) (one at start per server, then at most one per 30 s cooldown during the floods)"
