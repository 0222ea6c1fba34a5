#!/usr/bin/env bash
# Instructions per upstream `tools/call` through Gatehouse, counted with
# callgrind: a figure that does not depend on how busy the machine is, so
# two builds can be compared across days (wall-clock numbers on a shared VM
# cannot). Gatehouse (release build, one Tokio worker) runs under
# `valgrind --tool=callgrind` in front of bench-echo-upstream; after start-up
# and a warm-up the counters are zeroed, CONNECTIONS sessions call
# `bench__echo` for SECONDS, and the instructions counted are divided by the
# `tool_outcome` records Gatehouse wrote meanwhile (one per answered call).
#
#   bench/profile.sh [SECONDS] [CONNECTIONS]        (defaults: 15 4)
#
# Prints `instructions_per_call=N` and the functions with the most
# instructions (inclusive, per call); the callgrind file is kept when
# GATEHOUSE_PROFILE_KEEP=DIR names a directory. Needs valgrind, wrk, python3.
set -euo pipefail
seconds="${1:-15}"; conns="${2:-4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

missing() { echo "profile.sh: MISSING: $*" >&2; exit 1; }
for tool in python3 wrk valgrind callgrind_control callgrind_annotate; do
  command -v "$tool" >/dev/null 2>&1 || missing "$tool (Debian: apt-get install valgrind wrk)"
done
cargo build --release --quiet --bin gatehouse
cargo build --release --quiet -p bench-echo-upstream
target="${CARGO_TARGET_DIR:-$root/target}"
gatehouse="$target/release/gatehouse"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_for() { # file pattern what tries
  for _ in $(seq 1 "${4:-150}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "$3 did not start:" >&2; cat "$1" "$1.err" 2>/dev/null >&2; exit 1
}

# The upstream.
("$target/release/bench-echo-upstream" 127.0.0.1:0 > "$work/upstream.out" 2> "$work/upstream.out.err") &
pids+=($!)
wait_for "$work/upstream.out" '^listening' "the upstream"
upstream_url=$(sed -n 's/^listening //p' "$work/upstream.out")

# Gatehouse under callgrind: the same configuration as bench/gateway.sh.
dir="$work/gatehouse"; mkdir -p "$dir"
cat > "$dir/policy.toml" <<'EOF'
version = 1
[roles.reader]
[roles.analyst]
inherits = ["reader"]
[roles.executor]
inherits = ["analyst"]
[roles.admin]
inherits = ["executor"]
[upstreams.bench]
scope = "tools:read"
roles = ["reader"]
EOF
cat > "$dir/gatehouse.toml" <<EOF
version = 1
[server]
max_sessions_per_principal = 1000
initialize_per_minute = 6000
[policy]
file = "policy.toml"
[audit]
# The count below reads audit.jsonl: it must not be rotated meanwhile.
rotate_bytes = 0
rotate_after = "0s"
[[upstreams]]
name = "bench"
url = "$upstream_url"
EOF
(export GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS=1
 exec valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
   "$gatehouse" serve --json --config "$dir/gatehouse.toml" --data-dir "$dir" \
   --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/out.err") &
pids+=($!); gh_pid=$!
wait_for "$dir/out" '"listening"' "Gatehouse under callgrind" 600
url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
key=$("$gatehouse" keys create --data-dir "$dir" --name bench --role reader --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# Warm-up (the upstream connection, the catalogue, the caches), then the sessions.
for attempt in $(seq 1 100); do
  python3 bench/mcp_sessions.py "$url" bench__echo 1 "$key" > /dev/null 2> "$work/sessions.err" && break
  [ "$attempt" = 100 ] && { cat "$work/sessions.err" >&2; echo "tools/call bench__echo does not work" >&2; exit 1; }
  sleep 0.5
done
sessions=$(python3 bench/mcp_sessions.py "$url" bench__echo "$conns" "$key")
outcomes() { grep -c '"kind":"tool_outcome"' "$dir/audit.jsonl" || true; }

# Counted: only the load.
callgrind_control -z "$gh_pid" > /dev/null
before=$(outcomes)
line=$(GW_SESSIONS="$sessions" GW_TOOL=bench__echo GW_KEY="$key" \
  wrk -t1 -c"$conns" -d"${seconds}s" -s bench/gateway.lua "$url" 2> "$work/wrk.err" | grep '^RESULT') \
  || { cat "$work/wrk.err" >&2; echo "wrk failed" >&2; exit 1; }
case "$line" in
  *" errors=0 non2xx_or_bad=0 "*) ;;
  *) echo "responses were not all correct: $line" >&2; exit 1 ;;
esac
sleep 1
callgrind_control -d "$gh_pid" > /dev/null
after=$(outcomes)
calls=$((after - before))
[ "$calls" -gt 0 ] || { echo "no call was answered" >&2; exit 1; }
# The dump just taken is the newest file (the whole run's comes at exit).
dump=$(ls -t "$work"/callgrind.out* 2>/dev/null | head -1)
[ -n "$dump" ] || { echo "callgrind wrote no dump" >&2; exit 1; }
total=$(callgrind_annotate "$dump" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
[ -n "$total" ] || { echo "could not read the instruction total of $dump" >&2; exit 1; }
echo "calls=$calls instructions=$total"
echo "instructions_per_call=$((total / calls))"
if [ -n "${GATEHOUSE_PROFILE_KEEP:-}" ]; then
  mkdir -p "$GATEHOUSE_PROFILE_KEEP"; cp "$dump" "$GATEHOUSE_PROFILE_KEEP/"
  echo "kept $(basename "$dump") in $GATEHOUSE_PROFILE_KEEP"
fi
echo
echo "Most instructions, inclusive, per call (callgrind_annotate --inclusive=yes):"
callgrind_annotate --inclusive=yes --threshold=99 "$dump" 2>/dev/null \
  | grep -E '^ *[0-9,]+ ' | grep -v 'PROGRAM TOTALS' | head -40 \
  | awk -v calls="$calls" '{n=$1; gsub(",","",n); $1=""; printf "%10d %s\n", n/calls, $0}' \
  || true  # head stops reading early
