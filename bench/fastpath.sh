#!/usr/bin/env bash
# The fast-path benchmark: a stateless MCP 2026-07-28 `tools/call whoami`
# with an API key through Gatehouse, side by side on one core with a bare
# axum JSON-RPC echo (bench/echo-jsonrpc, the ceiling) and a bare rmcp server
# (bench/bare-rmcp, the SDK alone: no auth, no audit). Then Gatehouse on two
# cores, its p99 at half of its one-core saturation, and two consecutive
# rounds on one server with the audit files' sizes after each (does
# throughput fall as they grow?). Loopback only; bounded in time.
#
#   bench/fastpath.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (defaults: 3 8 32)
#
# Environment: CARGO_TARGET_DIR (where the release binaries are built);
# FASTPATH_WAIT_QUIET=0 skips waiting, before each timed run, until the
# machine is quiet (no rustc, cc1, wrk, perf or valgrind; CPUs under 20 %
# busy); the wait is the default, at most FASTPATH_QUIET_MAX seconds (1800),
# then the run goes ahead and is marked NOT QUIET, as is a run during which
# other processes used more than 10 % of a CPU (`others_cpu=` on its line);
# FASTPATH_DECLINE_ROUNDS (default 2) is the number of rounds in part (c);
# GATEHOUSE_BENCH_COMPARE=/path/to/another/gatehouse adds that build as a
# fourth arm of the one-core rounds (same settings, same rounds), so that a
# change's effect is a ratio measured side by side.
# See bench/README.md and bench/PROFILE.md.
#
# Needs wrk (installed with apt-get if missing and running as root), taskset
# (util-linux) and python3.
set -euo pipefail
rounds="${1:-3}"; seconds="${2:-8}"; conns="${3:-32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk
  else
    echo "wrk is required (Debian/Ubuntu: apt-get install wrk)" >&2; exit 1
  fi
fi
for tool in taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "fastpath.sh: $tool is required" >&2; exit 1; }
done
cargo build --release --quiet -p gatehouse -p bench-echo-jsonrpc -p bench-bare-rmcp
target="${CARGO_TARGET_DIR:-$root/target}"
gatehouse="$target/release/gatehouse"
echo_bin="$target/release/bench-echo-jsonrpc"
rmcp_bin="$target/release/bench-bare-rmcp"

cpus=$(nproc)
[ "$cpus" -ge 2 ] || { echo "fastpath.sh needs 2 CPUs (server on CPU 0, wrk on CPU 1)" >&2; exit 1; }
# Server on CPU 0, load generator on the others.
server_cpu="0"; client_cpu="1-$((cpus - 1))"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Waits until the machine looks quiet (other builds and benchmarks skew the
# numbers): no compiler (rustc, cc1), no other load generator or profiler
# (wrk, perf, valgrind), and the CPUs under 20 % busy over a second (this
# script's own servers are idle meanwhile). `quiet` says whether the run had
# the machine to itself as far as this can tell.
quiet=yes
others_running() {
  local p
  for p in rustc cc1 wrk perf valgrind; do pgrep -x "$p" >/dev/null && return 0; done
  return 1
}
busy_percent() { # all CPUs, over one second
  python3 -c 'import time
def snap():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3] + f[4]
t0, i0 = snap(); time.sleep(1); t1, i1 = snap()
print(round(100 * (1 - (i1 - i0) / max(1, t1 - t0))))'
}
wait_quiet() {
  quiet=yes
  [ "${FASTPATH_WAIT_QUIET:-1}" = 0 ] && return 0
  local waited=0 max="${FASTPATH_QUIET_MAX:-1800}"
  while others_running || [ "$(busy_percent)" -ge 20 ]; do
    [ "$waited" -ge "$max" ] && { quiet=no; echo "  (machine still busy after ${max}s: going ahead)" >&2; return 0; }
    sleep 5; waited=$((waited + 6))
  done
  [ "$waited" -gt 0 ] && echo "  (waited ${waited}s for the machine to be quiet)" >&2
  return 0
}
# After a run: a compiler or profiler that started meanwhile makes it not
# quiet (wrk is not checked: this script's own may still be exiting).
# So does another process's using more than 10 % of a CPU during the run
# (`others_cpu=` of the run's RESULT line, given as the argument).
check_quiet() { # [result line]
  local p others
  for p in rustc cc1 perf valgrind; do pgrep -x "$p" >/dev/null && quiet=no; done
  others=$(sed -nE 's/.* others_cpu=([0-9]+)%.*/\1/p' <<<"${1:-}")
  [ -n "$others" ] && [ "$others" -gt 10 ] && quiet=no
  return 0
}

# Starts a bench server (prints `listening URL`) on CPU 0 with one worker;
# sets $url and $pid.
start_bench() { # name binary
  local dir="$work/$1"; mkdir -p "$dir"
  # taskset execs the server, so $! is the server itself.
  TOKIO_WORKER_THREADS=1 taskset -c "$server_cpu" "$2" 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 1 100); do grep -q '^listening ' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^listening //p' "$dir/out")
  [ -n "$url" ] || { cat "$dir/err" >&2; echo "$1 did not start" >&2; exit 1; }
}

# Starts Gatehouse (default configuration: audit to SQLite and audit.jsonl,
# rotated at 100 MB) with a reader API key; sets $url, $pid and $key.
# WORKERS=1 pins it to CPU 0; more runs it unpinned.
start_gatehouse() { # name workers [binary]
  local dir="$work/$1" workers="$2" gatehouse="${3:-$gatehouse}"; mkdir -p "$dir"
  printf 'version = 1\n' > "$dir/gatehouse.toml"
  local pin_server=()
  [ "$workers" = 1 ] && pin_server=(taskset -c "$server_cpu")
  GATEHOUSE_LOG=warn TOKIO_WORKER_THREADS="$workers" "${pin_server[@]}" "$gatehouse" serve --json \
    --config "$dir/gatehouse.toml" --data-dir "$dir" --listen 127.0.0.1:0 > "$dir/out" 2> "$dir/err" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 1 100); do grep -q '"listening"' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  url=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["mcp_url"])' "$dir/out")
  [ -n "$url" ] || { cat "$dir/err" >&2; echo "gatehouse $1 did not start" >&2; exit 1; }
  key=$("$gatehouse" keys create --data-dir "$dir" --name bench --role reader --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
}

declare -A arm_url=() arm_key=() arm_expect=() arm_pid=() served=()
start_bench echo "$echo_bin"; arm_url[echo]=$url; arm_key[echo]=""; arm_expect[echo]='"result":'; arm_pid[echo]=$pid
start_bench rmcp "$rmcp_bin"; arm_url[rmcp]=$url; arm_key[rmcp]=""; arm_expect[rmcp]='"result":'; arm_pid[rmcp]=$pid
start_gatehouse gatehouse 1; arm_url[gatehouse]=$url; arm_key[gatehouse]=$key
arm_expect[gatehouse]='"structuredContent"'; gh_pid=$pid; arm_pid[gatehouse]=$pid
arms=(echo rmcp gatehouse)
compare="${GATEHOUSE_BENCH_COMPARE:-}"
if [ -n "$compare" ]; then
  [ -x "$compare" ] || { echo "fastpath.sh: no executable at GATEHOUSE_BENCH_COMPARE=$compare" >&2; exit 1; }
  start_gatehouse compare 1 "$compare"; arm_url[compare]=$url; arm_key[compare]=$key
  arm_expect[compare]='"structuredContent"'; arm_pid[compare]=$pid
  arms+=(compare)
fi
narms=${#arms[@]}
for arm in "${arms[@]}"; do served[$arm]=0; done

# One wrk run; prints its RESULT line. Every answer is checked (HTTP 200,
# the expected body; bench/fastpath.lua): any other answer stops the run.
# CPU: "pinned" puts wrk on CPU 1, "free" lets it run anywhere.
# CPU ticks: the whole machine's busy time, the time the hypervisor gave to
# other guests (steal), and one process's (all threads).
ticks() { # pid
  echo "$(awk '/^cpu /{print $2+$3+$4+$7+$8, $9}' /proc/stat) $(awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0)"
}
# One wrk run; prints its RESULT line plus `others_cpu=`: the CPU that
# processes other than the server and wrk used meanwhile, in % of one CPU
# (other builds, benchmarks, this script's idle servers' background work),
# and `steal=`: CPU time the hypervisor gave to other guests (a VM).
# Every answer is checked (HTTP 200, the expected body; bench/fastpath.lua):
# any other answer stops the run. CPU: "pinned" puts wrk on CPU 1, "free"
# lets it run anywhere.
load() { # url key expect seconds cpu server-pid [rate]
  local line before after cmd=(wrk -t1 -c"$conns" -d"$4s" --latency -s bench/fastpath.lua "$1")
  [ "$5" = pinned ] && cmd=(taskset -c "$client_cpu" "${cmd[@]}")
  rm -f "$work/wrk.time"
  [ -x /usr/bin/time ] && cmd=(/usr/bin/time -f '%U %S' -o "$work/wrk.time" "${cmd[@]}")
  before=$(ticks "$6")
  line=$(GATEHOUSE_KEY="$2" FASTPATH_EXPECT="$3" FASTPATH_RATE="${7:-}" "${cmd[@]}" 2> "$work/wrk.err" | grep '^RESULT') \
    || { cat "$work/wrk.err" >&2; echo "wrk failed" >&2; exit 1; }
  after=$(ticks "$6")
  case "$line" in
    *" errors=0 non2xx_or_bad=0 "*) ;;
    *) cat "$work/wrk.err" >&2; echo "answers were not all correct: $line" >&2; exit 1 ;;
  esac
  echo "$line others_cpu=$(python3 -c 'import os, sys
b, a, secs = sys.argv[1].split(), sys.argv[2].split(), float(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
try:
    wrk = sum(float(x) for x in open(sys.argv[4]).read().split()[-2:]) * hz
except (OSError, ValueError):
    print("unknown"); sys.exit()
others = (int(a[0]) - int(b[0])) - (int(a[2]) - int(b[2])) - wrk
steal = int(a[1]) - int(b[1])
print(f"{max(0.0, 100 * others / (secs * hz)):.0f}% steal={100 * steal / (secs * hz):.0f}%")' "$before" "$after" "$4" "$work/wrk.time")"
}
# Sets $line to the RESULT line and counts the answered calls (not in a
# command substitution: a subshell would lose the count).
run_arm() { # arm seconds
  line=$(load "${arm_url[$1]}" "${arm_key[$1]}" "${arm_expect[$1]}" "$2" pinned "${arm_pid[$1]}")
  served[$1]=$((served[$1] + $(field requests "$line")))
}
field() { sed -E "s/.* $1=([0-9.]+).*/\\1/" <<<"$2"; }
ratio() { python3 -c "print(f'{float(\"$1\") / float(\"$2\"):.3f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.3f}')" "$@"; }

echo "fastpath: rounds=$rounds seconds=$seconds connections=$conns cpus=$cpus server_cpu=$server_cpu client_cpu=$client_cpu"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "build: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
echo
echo "warm-up, 2 s per arm (discarded)"
wait_quiet
for arm in "${arms[@]}"; do run_arm "$arm" 2; done

declare -A rps_list=() ratio_list=()
not_quiet=0
for r in $(seq 1 "$rounds"); do
  declare -A result=()
  order=""
  for i in $(seq 0 $((narms - 1))); do
    # Alternate the order (forwards in odd rounds, backwards in even ones,
    # rotated) so drift does not favour one arm.
    if [ $((r % 2)) = 1 ]; then arm=${arms[$(( (i + r) % narms ))]}; else arm=${arms[$(( (narms - 1 - i + r) % narms ))]}; fi
    order+=" $arm"
    wait_quiet
    run_arm "$arm" "$seconds"; result[$arm]=$line
    check_quiet "$line"; [ "$quiet" = yes ] || { not_quiet=$((not_quiet + 1)); result[$arm]+=" (NOT QUIET)"; }
  done
  echo "round $r (order:$order; load average $(cut -d' ' -f1-3 /proc/loadavg))"
  for arm in "${arms[@]}"; do
    printf '  %-9s rps=%-9s p50=%6s us  p99=%6s us   %s\n' "$arm" "$(field rps "${result[$arm]}")" \
      "$(field p50_us "${result[$arm]}")" "$(field p99_us "${result[$arm]}")" "${result[$arm]}"
    rps_list[$arm]+=" $(field rps "${result[$arm]}")"
  done
  ge=$(ratio "$(field rps "${result[gatehouse]}")" "$(field rps "${result[echo]}")")
  gr=$(ratio "$(field rps "${result[gatehouse]}")" "$(field rps "${result[rmcp]}")")
  re=$(ratio "$(field rps "${result[rmcp]}")" "$(field rps "${result[echo]}")")
  ratio_list[ge]+=" $ge"; ratio_list[gr]+=" $gr"; ratio_list[re]+=" $re"
  echo "  gatehouse/echo=$ge  gatehouse/rmcp=$gr  rmcp/echo=$re"
  if [ -n "$compare" ]; then
    gc=$(ratio "$(field rps "${result[gatehouse]}")" "$(field rps "${result[compare]}")")
    ratio_list[gc]+=" $gc"; echo "  gatehouse/compare=$gc (this build / GATEHOUSE_BENCH_COMPARE)"
  fi
done
echo
echo "medians over $rounds rounds (one core each, $conns connections):"
for arm in "${arms[@]}"; do
  # shellcheck disable=SC2086 # space-separated lists
  echo "  $arm RPS: median $(median ${rps_list[$arm]}) (per round:${rps_list[$arm]})"
done
# shellcheck disable=SC2086
echo "  gatehouse/echo: median $(median ${ratio_list[ge]}) (per round:${ratio_list[ge]}; target >= 0.25)"
# shellcheck disable=SC2086
echo "  gatehouse/rmcp: median $(median ${ratio_list[gr]}) (per round:${ratio_list[gr]})"
# shellcheck disable=SC2086
echo "  rmcp/echo:      median $(median ${ratio_list[re]}) (per round:${ratio_list[re]})"
# shellcheck disable=SC2086
[ -z "$compare" ] || echo "  gatehouse/compare: median $(median ${ratio_list[gc]}) (per round:${ratio_list[gc]}; this build / $compare)"
[ "$not_quiet" = 0 ] || echo "  WARNING: $not_quiet timed runs overlapped a compiler run (marked NOT QUIET above)"
# shellcheck disable=SC2086
one_core=$(median ${rps_list[gatehouse]})

# The audit files of a Gatehouse data directory: the database, its
# write-ahead log and shared-memory index, the JSON-lines file (and how many
# rotated files beside it, with their bytes).
sizes() { # name
  python3 - "$work/$1" <<'EOF'
import glob, os, sys
d = sys.argv[1]
def size(p):
    try: return os.path.getsize(p)
    except OSError: return 0
mb = lambda n: f"{n / 1e6:.1f} MB"
rotated = [p for p in glob.glob(os.path.join(d, "audit.*.jsonl"))]
print(f"gatehouse.db={mb(size(os.path.join(d, 'gatehouse.db')))} "
      f"gatehouse.db-wal={mb(size(os.path.join(d, 'gatehouse.db-wal')))} "
      f"gatehouse.db-shm={mb(size(os.path.join(d, 'gatehouse.db-shm')))} "
      f"audit.jsonl={mb(size(os.path.join(d, 'audit.jsonl')))} "
      f"rotated_jsonl={len(rotated)} files, {mb(sum(size(p) for p in rotated))}")
EOF
}

echo
echo "(a) Gatehouse on two cores: TOKIO_WORKER_THREADS=2, not pinned; wrk not pinned either."
echo "    On a 2-CPU machine the load generator shares the two cores with the server, so this"
echo "    understates how Gatehouse scales. Compared with a fresh one-core server measured just"
echo "    before it (same age of audit log) and with the one-core median above."
start_gatehouse one_core_fresh 1; fresh1_url=$url; fresh1_key=$key; fresh1_pid=$pid
start_gatehouse two_cores 2; two_url=$url; two_key=$key; two_pid=$pid
wait_quiet
load "$fresh1_url" "$fresh1_key" '"structuredContent"' 2 pinned "$fresh1_pid" > /dev/null
one=$(load "$fresh1_url" "$fresh1_key" '"structuredContent"' "$seconds" pinned "$fresh1_pid")
check_quiet "$one"; q1=$quiet
wait_quiet
load "$two_url" "$two_key" '"structuredContent"' 2 free "$two_pid" > /dev/null
two=$(load "$two_url" "$two_key" '"structuredContent"' "$seconds" free "$two_pid")
check_quiet "$two"; q2=$quiet
echo "  one core (fresh server, pinned, wrk on CPU 1): $one (quiet: $q1)"
echo "  two cores (fresh server, unpinned, wrk unpinned): $two (quiet: $q2)"
echo "  two cores / one core (fresh server): $(ratio "$(field rps "$two")" "$(field rps "$one")") (target >= 1.7)"
echo "  two cores / one-core median of the rounds: $(ratio "$(field rps "$two")" "$one_core")"
stop "$fresh1_pid"; stop "$two_pid"

echo
half=$(python3 -c "print(round($one_core / 2))")
echo "(b) Gatehouse (the one-core server of the rounds) paced at half of its one-core saturation:"
echo "    target $half requests/s in all over $conns connections (bench/fastpath.lua, FASTPATH_RATE)"
wait_quiet
paced=$(load "${arm_url[gatehouse]}" "${arm_key[gatehouse]}" '"structuredContent"' "$seconds" pinned "$gh_pid" "$half")
check_quiet "$paced"
served[gatehouse]=$((served[gatehouse] + $(field requests "$paced")))
echo "  achieved $(field rps "$paced") requests/s (target $half): p50=$(field p50_us "$paced") us" \
  "p90=$(field p90_us "$paced") us p99=$(field p99_us "$paced") us (target < 2000 us)" \
  "p99.9=$(field p999_us "$paced") us max=$(field max_us "$paced") us (quiet: $quiet)"
echo "  $paced"

# CPU time of a process's threads, summed by thread name (Tokio workers,
# SQLite connection threads, the audit-file thread), in clock ticks.
cpu_snapshot() { # pid file
  python3 -c 'import glob, json, os, sys
ticks = {}
for t in glob.glob(f"/proc/{sys.argv[1]}/task/*"):
    try:
        name = open(f"{t}/comm").read().strip()
        stat = open(f"{t}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    ticks[name] = ticks.get(name, 0) + int(stat[11]) + int(stat[12])
json.dump(ticks, open(sys.argv[2], "w"))' "$1" "$2"
}
cpu_per_call() { # before after calls
  python3 -c 'import json, os, sys
a, b, calls = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
per = {k: (b.get(k, 0) - a.get(k, 0)) * 1e6 / hz / max(1, calls) for k in b}
total = sum(per.values())
print(f"CPU per call {total:.0f} us: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0))' "$1" "$2" "$3"
}

echo
decline_rounds="${FASTPATH_DECLINE_ROUNDS:-2}"
echo "(c) $decline_rounds consecutive rounds of ${seconds}s on one fresh Gatehouse server (one core), no restart:"
start_gatehouse decline 1; decline_url=$url; decline_key=$key; decline_pid=$pid
echo "  before: $(sizes decline)"
wait_quiet
decline_served=0
for r in $(seq 1 "$decline_rounds"); do
  cpu_snapshot "$decline_pid" "$work/cpu.before"
  line=$(load "$decline_url" "$decline_key" '"structuredContent"' "$seconds" pinned "$decline_pid")
  cpu_snapshot "$decline_pid" "$work/cpu.after"
  quiet=yes; check_quiet "$line"
  decline_served=$((decline_served + $(field requests "$line")))
  echo "  round $r: rps=$(field rps "$line") p50=$(field p50_us "$line") us p99=$(field p99_us "$line") us" \
    "(others_cpu=$(sed -E 's/.* others_cpu=//' <<<"$line"), quiet: $quiet)"
  echo "    $(cpu_per_call "$work/cpu.before" "$work/cpu.after" "$(field requests "$line")")"
  echo "    after: $(sizes decline)"
done

# Every answered call left its outcome record (a few more may exist for
# calls in flight when wrk stopped counting). Read with SQLite directly: the
# CLI's JSON of a million records takes a while.
outcomes() { # name
  python3 -c 'import sqlite3,sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(c.execute("SELECT count(*) FROM audit_events WHERE kind = ?", ("tool_outcome",)).fetchone()[0])' \
    "$work/$1/gatehouse.db"
}
echo
for check in "gatehouse ${served[gatehouse]}" "decline $decline_served"; do
  read -r name answered <<<"$check"
  rows=$(outcomes "$name")
  echo "$name: $answered calls answered in the timed and paced runs, $rows tool_outcome audit records"
  [ "$rows" -ge "$answered" ] || { echo "audit records are missing" >&2; exit 1; }
done
stop "$decline_pid"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
