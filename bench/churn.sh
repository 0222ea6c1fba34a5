#!/usr/bin/env bash
# Memory under churn: does Gatehouse's resident memory stay bounded while
# new access tokens and new sessions keep coming? One server (defaults:
# SQLite, embedded authorization server), ROUNDS rounds of TOKENS new tokens
# (each validated once: the validated-token cache holds at most 10,000) and
# SESSIONS sessions opened, used and ended (bench/churn.py); VmRSS after each.
#
#   bench/churn.sh [ROUNDS] [TOKENS] [SESSIONS]      (defaults: 8 5000 2000)
#
# Prints the RSS per round and the growth from the end of round 2 (caches
# warm) to the end of the last. Needs python3; CARGO_TARGET_DIR is honoured.
set -euo pipefail
rounds="${1:-8}"; tokens="${2:-5000}"; sessions="${3:-2000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v python3 >/dev/null 2>&1 || { echo "churn.sh: MISSING: python3" >&2; exit 1; }
cargo build --release --quiet -p gatehouse
gatehouse="${CARGO_TARGET_DIR:-$root/target}/release/gatehouse"

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# One client makes every session: the per-principal and per-minute limits
# are raised so that they do not refuse the churn itself.
cat > "$work/gatehouse.toml" <<EOF
version = 1
[server]
max_sessions_per_principal = 10000
initialize_per_minute = 1000000
EOF
GATEHOUSE_LOG=warn "$gatehouse" serve --json --config "$work/gatehouse.toml" --data-dir "$work" \
  --listen 127.0.0.1:0 > "$work/out" 2> "$work/err" &
pid=$!
for _ in $(seq 1 300); do grep -q '"listening"' "$work/out" 2>/dev/null && break; sleep 0.1; done
base=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"].rsplit("/mcp", 1)[0])' "$work/out")
[ -n "$base" ] || { cat "$work/err" >&2; echo "gatehouse did not start" >&2; exit 1; }
client=$("$gatehouse" clients create --data-dir "$work" --name churn --role reader --json)
client_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
client_secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")
key=$("$gatehouse" keys create --data-dir "$work" --name churn --role reader --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

echo "rounds=$rounds tokens/round=$tokens sessions/round=$sessions"
python3 bench/churn.py "$base" "$pid" "$client_id" "$client_secret" "$key" "$rounds" "$tokens" "$sessions" \
  | tee "$work/rss"
python3 - "$work/rss" <<'EOF'
import re, sys
rss = [int(m) for m in re.findall(r"rss_kb=(\d+)", open(sys.argv[1]).read())]
print()
print("RSS MB per round: " + " ".join(f"{r / 1024:.0f}" for r in rss))
if len(rss) > 3:
    print(f"growth from the end of round 2 to the end of round {len(rss) - 1}: "
          f"{(rss[-1] - rss[2]) / 1024:+.1f} MB (peak {max(rss) / 1024:.0f} MB)")
EOF
