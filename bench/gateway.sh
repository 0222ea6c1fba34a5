#!/usr/bin/env bash
# Gateway benchmark: MCP `tools/call echo` to one fast HTTP upstream directly,
# through Gatehouse (API key) and through mcp-proxy (bearer token), side by
# side in one run (arm order rotated per round). Reports per round and as
# medians: RPS at CONNECTIONS, p50/p99 at 1 connection, the p50 each gateway
# adds, and the RPS ratio Gatehouse / mcp-proxy. Loopback only; bounded in time.
#
#   bench/gateway.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (defaults: 3 10 32)
#
# Targets (gateway issue): added p50 <= 150 us, Gatehouse / mcp-proxy RPS >= 1.5.
#
# CARGO_TARGET_DIR, when set, is where the release binaries are built and run from.
# Installs what it lacks: wrk (apt-get, when root on Debian/Ubuntu) and
# mcp-proxy (cargo install --locked into .tools/mcp-proxy; takes minutes the
# first time). MCP_PROXY_VERSION picks the version (default below, the one
# the README's numbers are from); GATEHOUSE_BENCH_MCP_PROXY=/path/to/mcp-proxy
# uses a binary already built. Every path speaks MCP 2025-11-25 with sessions
# (see bench/README.md for why); one more arm, gatehouse-2026, sends the same
# calls to the same Gatehouse as MCP 2026-07-28 requests without a session.
set -euo pipefail
rounds="${1:-3}"; seconds="${2:-10}"; conns="${3:-32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mcp_proxy_version="${MCP_PROXY_VERSION:-0.6.0}"

missing() { echo "gateway.sh: MISSING: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
for tool in python3 curl; do command -v "$tool" >/dev/null 2>&1 || missing "$tool"; done
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing wrk (apt-get)"
    apt-get update -qq && apt-get install -y -qq wrk
  else
    missing "wrk (Debian/Ubuntu: apt-get install wrk)"
  fi
fi
mcp_proxy="${GATEHOUSE_BENCH_MCP_PROXY:-}"
if [ -z "$mcp_proxy" ]; then
  mcp_proxy="$root/.tools/mcp-proxy/bin/mcp-proxy"
  if ! [ -x "$mcp_proxy" ] || ! grep -q "\"mcp-proxy $mcp_proxy_version " "$root/.tools/mcp-proxy/.crates2.json" 2>/dev/null; then
    command -v cargo >/dev/null 2>&1 || missing "cargo, to install mcp-proxy"
    echo "installing mcp-proxy $mcp_proxy_version into .tools/mcp-proxy (cargo install --locked; several minutes)"
    cargo install mcp-proxy --version "$mcp_proxy_version" --locked --root "$root/.tools/mcp-proxy" \
      || missing "mcp-proxy: 'cargo install mcp-proxy --version $mcp_proxy_version --locked --root .tools/mcp-proxy' failed (see above)"
  fi
fi
[ -x "$mcp_proxy" ] || missing "mcp-proxy at $mcp_proxy"
cargo build --release --quiet --bin gatehouse
cargo build --release --quiet -p bench-echo-upstream
target="${CARGO_TARGET_DIR:-$root/target}"
gatehouse="$target/release/gatehouse"
upstream_bin="$target/release/bench-echo-upstream"

# --- pinning -----------------------------------------------------------------
# Two CPUs: the gateway under test alone on CPU 0 (one Tokio worker, so each
# gateway gets exactly one core); the upstream and wrk share CPU 1 (the
# upstream costs a few microseconds per call). With more CPUs the upstream
# gets its own. Without taskset nothing is pinned.
cpus=$(nproc)
gw_cpu=0; wrk_cpu=1; up_cpu=1
[ "$cpus" -ge 3 ] && up_cpu=2
[ "$cpus" -lt 2 ] && { gw_cpu=0; wrk_cpu=0; up_cpu=0; }
pin=()
if command -v taskset >/dev/null 2>&1; then pin=(taskset -c); else echo "taskset missing: nothing is pinned" >&2; fi
wrk_cmd=(wrk)
[ ${#pin[@]} -gt 0 ] && wrk_cmd=(taskset -c "$wrk_cpu" wrk)
pinned() { # cpu command... (execs, so $! of a background call is the command itself)
  if [ ${#pin[@]} -gt 0 ]; then exec "${pin[@]}" "$1" "${@:2}"; else exec "${@:2}"; fi
}

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_for() { # file pattern what
  for _ in $(seq 1 150); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "$3 did not start:" >&2; cat "$1" "$1.err" 2>/dev/null >&2; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the upstream -----------------------------------------------------------------
(pinned "$up_cpu" "$upstream_bin" 127.0.0.1:0 > "$work/upstream.out" 2> "$work/upstream.out.err") &
pids+=($!); up_pid=$!
wait_for "$work/upstream.out" '^listening' "the upstream"
upstream_url=$(sed -n 's/^listening //p' "$work/upstream.out")

# --- Gatehouse: one HTTP upstream, a policy covering it, an API key -------------------
start_gatehouse() { # name [LD_PRELOAD library] -> sets gh_url, gh_key, gh_pid
  local dir="$work/$1"; mkdir -p "$dir"
  cat > "$dir/policy.toml" <<'EOF'
version = 1
# The shipped roles (the server needs `admin`); no built-in tool is named.
[roles.reader]
[roles.analyst]
inherits = ["reader"]
[roles.executor]
inherits = ["analyst"]
[roles.admin]
inherits = ["executor"]
# Everything the upstream `bench` serves: readers, scope tools:read.
[upstreams.bench]
scope = "tools:read"
roles = ["reader"]
EOF
  cat > "$dir/gatehouse.toml" <<EOF
version = 1
[server]
# wrk's sessions all belong to one principal.
max_sessions_per_principal = 1000
initialize_per_minute = 6000
[policy]
file = "policy.toml"
[[upstreams]]
name = "bench"
url = "$upstream_url"
EOF
  (export GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS=1; [ -n "${2:-}" ] && export LD_PRELOAD="$2"
   pinned "$gw_cpu" "$gatehouse" serve --json --config "$dir/gatehouse.toml" --data-dir "$dir" \
     --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/out.err") &
  pids+=($!); gh_pid=$!
  wait_for "$dir/out" '"listening"' "Gatehouse ($1)"
  gh_url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  gh_key=$("$gatehouse" keys create --data-dir "$dir" --name bench --role reader --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
}
start_gatehouse gatehouse
gh1_url="$gh_url"; gh1_key="$gh_key"; gh1_pid="$gh_pid"

# --- mcp-proxy: the same upstream, a bearer token ----------------------------------------
mkdir -p "$work/mcp-proxy"
mp_port=$(free_port)
mp_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
cat > "$work/mcp-proxy/proxy.toml" <<EOF
[proxy]
name = "bench"
[proxy.listen]
host = "127.0.0.1"
port = $mp_port
[auth]
type = "bearer"
tokens = ["$mp_key"]
[[backends]]
name = "bench"
transport = "http"
url = "$upstream_url"
[observability]
log_level = "warn"
EOF
(export TOKIO_WORKER_THREADS=1; pinned "$gw_cpu" "$mcp_proxy" --config "$work/mcp-proxy/proxy.toml" \
  > "$work/mcp-proxy/out" 2> "$work/mcp-proxy/out.err") &
pids+=($!); mp_pid=$!
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$mp_port/livez" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$mp_port/livez" >/dev/null || { cat "$work/mcp-proxy/out"* >&2; echo "mcp-proxy did not start" >&2; exit 1; }
mp_url="http://127.0.0.1:$mp_port/"

# --- sessions (2025-11-25), checked end to end --------------------------------------------
declare -A url=([direct]="$upstream_url" [gatehouse]="$gh1_url" [mcp-proxy]="$mp_url")
declare -A tool=([direct]="echo" [gatehouse]="bench__echo" [mcp-proxy]="bench/echo")
declare -A key=([direct]="" [gatehouse]="$gh1_key" [mcp-proxy]="$mp_key")
declare -A pid=([direct]="$up_pid" [gatehouse]="$gh1_pid" [mcp-proxy]="$mp_pid")
declare -A sessions=()
arms=(direct gatehouse mcp-proxy gatehouse-2026)
# The same Gatehouse, called as MCP 2026-07-28 without sessions: the path
# its own fast path answers (no SDK on the caller's side).
url[gatehouse-2026]="$gh1_url"; tool[gatehouse-2026]="bench__echo"
key[gatehouse-2026]="$gh1_key"; pid[gatehouse-2026]="$gh1_pid"
# Diagnostic arm (GATEHOUSE_BENCH_NODELAY=1): a second Gatehouse whose
# accepted sockets get TCP_NODELAY from an LD_PRELOAD shim (bench/nodelay.c,
# built with cc), to show what Nagle's algorithm costs on its answers. Not a
# configuration anyone can deploy; the source is unchanged.
if [ "${GATEHOUSE_BENCH_NODELAY:-0}" = 1 ]; then
  command -v cc >/dev/null 2>&1 || missing "cc, for GATEHOUSE_BENCH_NODELAY=1"
  cc -shared -fPIC -O2 -o "$work/nodelay.so" bench/nodelay.c -ldl
  start_gatehouse gatehouse-nodelay "$work/nodelay.so"
  url[gatehouse-nodelay]="$gh_url"; tool[gatehouse-nodelay]="bench__echo"
  key[gatehouse-nodelay]="$gh_key"; pid[gatehouse-nodelay]="$gh_pid"
  arms+=(gatehouse-nodelay)
fi
# Comparison arms (GATEHOUSE_BENCH_COMPARE=/path/to/another/gatehouse): the
# same configuration served by another build (the commit before a change,
# say), called with and without sessions in the same rounds: a change's
# effect measured side by side rather than across runs.
if [ -n "${GATEHOUSE_BENCH_COMPARE:-}" ]; then
  [ -x "$GATEHOUSE_BENCH_COMPARE" ] || missing "an executable at GATEHOUSE_BENCH_COMPARE=$GATEHOUSE_BENCH_COMPARE"
  this_build="$gatehouse"; gatehouse="$GATEHOUSE_BENCH_COMPARE"
  start_gatehouse gatehouse-compare
  gatehouse="$this_build"
  for arm in gatehouse-compare gatehouse-compare-2026; do
    url[$arm]="$gh_url"; tool[$arm]="bench__echo"; key[$arm]="$gh_key"; pid[$arm]="$gh_pid"
  done
  arms+=(gatehouse-compare gatehouse-compare-2026)
fi
for arm in "${arms[@]}"; do
  case "$arm" in *-2026) sessions[$arm]=stateless; continue ;; esac
  # The gateways connect to the upstream in the background: wait (one
  # session per try) until the tool answers, then open the sessions.
  for attempt in $(seq 1 50); do
    python3 bench/mcp_sessions.py "${url[$arm]}" "${tool[$arm]}" 1 "${key[$arm]}" > /dev/null 2> "$work/sessions.err" && break
    [ "$attempt" = 50 ] && { cat "$work/sessions.err" >&2; echo "$arm: tools/call ${tool[$arm]} does not work" >&2; exit 1; }
    sleep 0.2
  done
  sessions[$arm]=$(python3 bench/mcp_sessions.py "${url[$arm]}" "${tool[$arm]}" "$conns" "${key[$arm]}")
done

# --- load ----------------------------------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
load() { # arm connections -> RESULT line (+ cpu_us=, the arm's server CPU per call)
  local arm="$1" c="$2" before after line
  before=$(cpu_ticks "${pid[$arm]}")
  line=$(GW_SESSIONS="${sessions[$arm]}" GW_TOOL="${tool[$arm]}" GW_KEY="${key[$arm]}" \
    "${wrk_cmd[@]}" -t1 -c"$c" -d"${seconds}s" --latency -s bench/gateway.lua "${url[$arm]}" \
    2> "$work/wrk.err" | grep '^RESULT') || { cat "$work/wrk.err" >&2; echo "$arm: wrk failed" >&2; exit 1; }
  after=$(cpu_ticks "${pid[$arm]}")
  case "$line" in
    *" errors=0 non2xx_or_bad=0 "*) ;;
    *) cat "$work/wrk.err" >&2; echo "$arm (c=$c): responses were not all correct: $line" >&2; exit 1 ;;
  esac
  local requests=${line#*requests=}; requests=${requests%% *}
  [ "$requests" -gt 0 ] || { echo "$arm (c=$c): no requests" >&2; exit 1; }
  echo "$line cpu_us=$(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / $requests, 1))")"
}

echo "upstream $upstream_url (CPU $up_cpu); gateways on CPU $gw_cpu, one Tokio worker; wrk on CPU $wrk_cpu"
echo "mcp-proxy $mcp_proxy_version; protocol 2025-11-25 (sessions: $conns per arm, rotated per request)"
echo "warm-up (discarded)"
for arm in "${arms[@]}"; do load "$arm" "$conns" > /dev/null; load "$arm" 1 > /dev/null; done

echo "rounds=$rounds seconds=$seconds connections=$conns load: $(cut -d' ' -f1-3 /proc/loadavg)"
results="$work/results"
: > "$results"
n=${#arms[@]}
for r in $(seq 1 "$rounds"); do
  for i in $(seq 0 $((n - 1))); do
    arm=${arms[$(( (i + r) % n ))]}
    echo "$r $arm c$conns $(load "$arm" "$conns")" | tee -a "$results"
  done
  for i in $(seq 0 $((n - 1))); do
    arm=${arms[$(( (n - 1 - i + r) % n ))]}
    echo "$r $arm c1 $(load "$arm" 1)" | tee -a "$results"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" "$conns" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, arm, c, rest = line.split(" ", 3)
    rows[(int(r), arm, c)] = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", rest)}
conns = sys.argv[2]
rounds = sorted({k[0] for k in rows})
arms = ["direct", "gatehouse", "mcp-proxy"]
cols = {}
def add(name, values): cols.setdefault(name, []).extend(values)
print()
print(f"{'round':>5} | {'RPS c' + conns + ' direct':>16} {'gatehouse':>10} {'mcp-proxy':>10} | "
      f"{'p50 c1 direct':>13} {'gatehouse':>10} {'mcp-proxy':>10} | {'added p50 GH':>12} {'added p50 MP':>12} | "
      f"{'RPS GH/MP':>9} | {'CPU us/call GH':>14} {'MP':>6}")
for r in rounds:
    rps = {a: rows[(r, a, "c" + conns)]["rps"] for a in arms}
    p50 = {a: rows[(r, a, "c1")]["p50_us"] for a in arms}
    cpu = {a: rows[(r, a, "c" + conns)]["cpu_us"] for a in arms}
    added_gh, added_mp = p50["gatehouse"] - p50["direct"], p50["mcp-proxy"] - p50["direct"]
    ratio = rps["gatehouse"] / rps["mcp-proxy"]
    for name, v in [("rps_direct", rps["direct"]), ("rps_gh", rps["gatehouse"]), ("rps_mp", rps["mcp-proxy"]),
                    ("p50_direct", p50["direct"]), ("p50_gh", p50["gatehouse"]), ("p50_mp", p50["mcp-proxy"]),
                    ("added_gh", added_gh), ("added_mp", added_mp), ("ratio", ratio),
                    ("cpu_gh", cpu["gatehouse"]), ("cpu_mp", cpu["mcp-proxy"])]:
        add(name, [v])
    print(f"{r:>5} | {rps['direct']:>16.0f} {rps['gatehouse']:>10.0f} {rps['mcp-proxy']:>10.0f} | "
          f"{p50['direct']:>13.0f} {p50['gatehouse']:>10.0f} {p50['mcp-proxy']:>10.0f} | "
          f"{added_gh:>12.0f} {added_mp:>12.0f} | {ratio:>9.3f} | {cpu['gatehouse']:>14.1f} {cpu['mcp-proxy']:>6.1f}")
m = {k: statistics.median(v) for k, v in cols.items()}
print(f"{'median':>5} | {m['rps_direct']:>16.0f} {m['rps_gh']:>10.0f} {m['rps_mp']:>10.0f} | "
      f"{m['p50_direct']:>13.0f} {m['p50_gh']:>10.0f} {m['p50_mp']:>10.0f} | "
      f"{m['added_gh']:>12.0f} {m['added_mp']:>12.0f} | {m['ratio']:>9.3f} | {m['cpu_gh']:>14.1f} {m['cpu_mp']:>6.1f}")
print()
print("Gatehouse called as MCP 2026-07-28 without sessions (its fast path), same rounds")
st_added, st_ratio = [], []
for r in rounds:
    st = rows[(r, "gatehouse-2026", "c" + conns)]
    st1 = rows[(r, "gatehouse-2026", "c1")]
    added = st1["p50_us"] - rows[(r, "direct", "c1")]["p50_us"]
    ratio = st["rps"] / rows[(r, "mcp-proxy", "c" + conns)]["rps"]
    st_added.append(added); st_ratio.append(ratio)
    print(f"  round {r}: RPS c{conns} {st['rps']:.0f}, p50 c1 {st1['p50_us']:.0f} us (added {added:.0f} us), "
          f"p99 c1 {st1['p99_us']:.0f} us, RPS / mcp-proxy {ratio:.3f}, CPU {st['cpu_us']:.1f} us/call")
m["added_st"] = statistics.median(st_added); m["ratio_st"] = statistics.median(st_ratio)
print(f"  median: added p50 {m['added_st']:.0f} us, RPS / mcp-proxy {m['ratio_st']:.3f}")
diagnostics = [
    ("gatehouse-nodelay", "diagnostic: Gatehouse with TCP_NODELAY forced (LD_PRELOAD shim), same rounds"),
    ("gatehouse-compare", "comparison: the other build (GATEHOUSE_BENCH_COMPARE), in sessions, same rounds"),
    ("gatehouse-compare-2026", "comparison: the other build, MCP 2026-07-28 without sessions, same rounds"),
]
for arm, title in diagnostics:
    if not any(k[1] == arm for k in rows):
        continue
    print()
    print(title)
    d_added, d_rps, d_ratio, d_cpu = [], [], [], []
    for r in rounds:
        d = rows[(r, arm, "c" + conns)]
        d1 = rows[(r, arm, "c1")]
        added = d1["p50_us"] - rows[(r, "direct", "c1")]["p50_us"]
        ratio = d["rps"] / rows[(r, "mcp-proxy", "c" + conns)]["rps"]
        d_added.append(added); d_rps.append(d["rps"]); d_ratio.append(ratio); d_cpu.append(d["cpu_us"])
        print(f"  round {r}: RPS c{conns} {d['rps']:.0f}, p50 c1 {d1['p50_us']:.0f} us (added {added:.0f} us), "
              f"RPS / mcp-proxy {ratio:.3f}, CPU {d['cpu_us']:.1f} us/call")
    print(f"  median: RPS {statistics.median(d_rps):.0f}, added p50 {statistics.median(d_added):.0f} us, "
          f"RPS / mcp-proxy {statistics.median(d_ratio):.3f}, CPU {statistics.median(d_cpu):.1f} us/call")
print()
ok_p50 = m["added_gh"] <= 150
ok_ratio = m["ratio"] >= 1.5
print(f"Gatehouse added p50 (median): {m['added_gh']:.0f} us (target <= 150 us): {'met' if ok_p50 else 'MISSED'}")
print(f"mcp-proxy added p50 (median): {m['added_mp']:.0f} us")
print(f"RPS Gatehouse / mcp-proxy (median): {m['ratio']:.3f} (min {min(cols['ratio']):.3f}, max {max(cols['ratio']):.3f}; "
      f"target >= 1.5): {'met' if ok_ratio else 'MISSED'}")
print(f"Gatehouse 2026-07-28 (median): added p50 {m['added_st']:.0f} us "
      f"({'met' if m['added_st'] <= 150 else 'MISSED'}), RPS / mcp-proxy {m['ratio_st']:.3f} "
      f"({'met' if m['ratio_st'] >= 1.5 else 'MISSED'})")
EOF

# Gatehouse audited every call it answered (outcome records), as in bench/run.sh.
records=$(GATEHOUSE_LOG=error "$gatehouse" audit query --data-dir "$work/gatehouse" --kind tool_outcome --limit 100000000 --json | wc -l)
echo "Gatehouse wrote $records tool_outcome audit records"
