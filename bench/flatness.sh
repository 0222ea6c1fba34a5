#!/usr/bin/env bash
# Does a call cost more as the store grows? A stateless MCP 2026-07-28
# `tools/call whoami` with an API key, on one core, against three copies of
# one data directory, side by side in one run (arm order rotated per round):
#
#   fresh   the store as `gatehouse keys create` left it: one key, no audit rows
#   keys    the same plus FLATNESS_KEYS (100,000) other API keys
#   rows    the same plus FLATNESS_ROWS (1,000,000) audit rows, written by
#           Gatehouse itself under load before the rounds start
#
# Every run starts a server on a new copy of its arm's directory, so no arm
# gains rows from the rounds before it. Target (trust-over-time issue): keys
# and rows each within 10 % of fresh (ratio >= 0.90).
#
#   bench/flatness.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (defaults: 3 8 32)
#
# The other keys are rows written into `api_keys` with Python's sqlite3
# (creating 100,000 with the CLI takes most of an hour): the same shape as
# the real key's row, each with its own id and a random secret hash; nobody
# calls with them. Needs wrk, taskset and python3; CARGO_TARGET_DIR is honoured.
set -euo pipefail
rounds="${1:-3}"; seconds="${2:-8}"; conns="${3:-32}"
extra_keys="${FLATNESS_KEYS:-100000}"; extra_rows="${FLATNESS_ROWS:-1000000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
for tool in wrk taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "flatness.sh: MISSING: $tool" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "flatness.sh needs 2 CPUs (server on CPU 0, wrk on CPU 1)" >&2; exit 1; }
cargo build --release --quiet -p gatehouse
gatehouse="${CARGO_TARGET_DIR:-$root/target}/release/gatehouse"

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Starts Gatehouse on DIR (WORKERS=1: pinned to CPU 0); sets $pid and $url.
start() { # dir workers
  local pin=()
  [ "$2" = 1 ] && pin=(taskset -c 0)
  GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS="$2" "${pin[@]}" "$gatehouse" serve --json \
    --config "$1/gatehouse.toml" --data-dir "$1" --listen 127.0.0.1:0 > "$1/out" 2> "$1/err" &
  pid=$!
  for _ in $(seq 1 300); do grep -q '"listening"' "$1/out" 2>/dev/null && break; sleep 0.1; done
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$1/out")
  [ -n "$url" ] || { cat "$1/err" >&2; echo "gatehouse on $1 did not start" >&2; exit 1; }
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
# One wrk run of whoami; prints its RESULT line; any wrong answer stops the run.
load() { # url seconds connections cpu
  local line
  line=$(GATEHOUSE_KEY="$key" FASTPATH_EXPECT='"structuredContent"' taskset -c "$4" \
    wrk -t1 -c"$3" -d"$2s" --latency -s bench/fastpath.lua "$1" 2> "$work/wrk.err" | grep '^RESULT') \
    || { cat "$work/wrk.err" >&2; echo "wrk failed" >&2; exit 1; }
  case "$line" in *"errors=0 non2xx_or_bad=0"*) ;; *) echo "wrong answers: $line" >&2; exit 1 ;; esac
  echo "$line"
}
rows_in() { # dir -> the audit table's row count
  python3 -c 'import sqlite3,sys
print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM audit_events").fetchone()[0])' "$1/gatehouse.db"
}

# --- the three directories ------------------------------------------------------------
mkdir -p "$work/fresh"
printf 'version = 1\n' > "$work/fresh/gatehouse.toml"
key=$("$gatehouse" keys create --data-dir "$work/fresh" --name bench --role reader --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
cp -a "$work/fresh" "$work/keys"
python3 - "$work/keys/gatehouse.db" "$extra_keys" <<'EOF'
import secrets, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
(model,) = db.execute("SELECT id FROM api_keys").fetchall()
# Same alphabet and length as real ids; the secret hash is random hex.
def row(n):
    return (secrets.token_hex(6), f"bulk-{n}", secrets.token_hex(32), model[0])
db.executemany(
    "INSERT INTO api_keys (id, name, tenant, role, scopes, owner, secret_hash, created_at, "
    "expires_at, revoked_at, last_used_at, rotated_to) SELECT ?, ?, tenant, role, scopes, owner, ?, "
    "created_at, expires_at, revoked_at, last_used_at, rotated_to FROM api_keys WHERE id = ?",
    (row(n) for n in range(int(sys.argv[2]))))
db.commit()
print(f"keys: {db.execute('SELECT count(*) FROM api_keys').fetchone()[0]} API keys in the store")
EOF
cp -a "$work/fresh" "$work/rows"
echo "rows: filling the audit table to $extra_rows rows (Gatehouse under load, two workers)"
start "$work/rows" 2
while [ "$(rows_in "$work/rows")" -lt "$extra_rows" ]; do load "$url" 10 "$conns" 1 > /dev/null; done
stop
echo "rows: $(rows_in "$work/rows") audit rows in the store; database $(du -h "$work/rows/gatehouse.db" | cut -f1)"

# --- rounds ---------------------------------------------------------------------------
results="$work/results"; : > "$results"
arms=(fresh keys rows)
echo "rounds=$rounds seconds=$seconds connections=$conns (server: CPU 0, one worker; wrk: CPU 1)"
for r in $(seq 1 "$rounds"); do
  for i in 0 1 2; do
    arm=${arms[$(( (i + r) % 3 ))]}
    rm -rf "$work/run"; cp -a "$work/$arm" "$work/run"
    # The copy's dirty pages are written back now, not during the run.
    sync
    start "$work/run" 1
    load "$url" 2 "$conns" 1 > /dev/null   # warm-up, discarded
    line=$(load "$url" "$seconds" "$conns" 1)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    stop
    echo "$r $arm $line rss_kb=$rss" | tee -a "$results"
  done
done
rm -rf "$work/run"

python3 - "$results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, arm, rest = line.split(" ", 2)
    rows[(int(r), arm)] = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", rest)}
rounds = sorted({r for r, _ in rows})
print()
print(f"{'round':>5} | {'RPS fresh':>9} {'keys':>9} {'rows':>9} | {'keys/fresh':>10} {'rows/fresh':>10} | "
      f"{'p99 fresh':>9} {'keys':>7} {'rows':>7} | {'RSS MB fresh':>12} {'keys':>6} {'rows':>6}")
ratios = {"keys": [], "rows": []}
for r in rounds:
    f, k, w = rows[(r, "fresh")], rows[(r, "keys")], rows[(r, "rows")]
    ratios["keys"].append(k["rps"] / f["rps"]); ratios["rows"].append(w["rps"] / f["rps"])
    print(f"{r:>5} | {f['rps']:>9.0f} {k['rps']:>9.0f} {w['rps']:>9.0f} | {ratios['keys'][-1]:>10.3f} "
          f"{ratios['rows'][-1]:>10.3f} | {f['p99_us']:>7.0f}us {k['p99_us']:>5.0f}us {w['p99_us']:>5.0f}us | "
          f"{f['rss_kb'] / 1024:>12.0f} {k['rss_kb'] / 1024:>6.0f} {w['rss_kb'] / 1024:>6.0f}")
print()
for arm in ("keys", "rows"):
    m = statistics.median(ratios[arm])
    print(f"{arm}/fresh RPS (median): {m:.3f} (min {min(ratios[arm]):.3f}, max {max(ratios[arm]):.3f}; "
          f"target >= 0.90): {'met' if m >= 0.90 else 'MISSED'}")
EOF
