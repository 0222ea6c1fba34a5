#!/usr/bin/env bash
# /metrics checked by Prometheus' own linter: starts a real Gatehouse with
# the admin listener on a free loopback port, makes an allowed call, a
# denied call and an unauthenticated one, scrapes /metrics and runs
# `promtool check metrics` (Debian's prometheus package) on what it got.
#
# promtool missing: with GATEHOUSE_TEST_INSTALL_SYSTEM=1, as root on
# Debian, it is installed with apt-get (CI does this); otherwise this check
# is SKIPPED with a loud message (a failure with CI=true).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "metrics test: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the promtool check of /metrics: $1" >&2
  echo "!!! Install Debian's prometheus package (apt-get install prometheus) to run it," >&2
  echo "!!! or run as root with GATEHOUSE_TEST_INSTALL_SYSTEM=1 to let this script install it." >&2
  echo "" >&2
  echo "promtool check metrics: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

if ! command -v promtool >/dev/null 2>&1; then
  # A system-wide install only when asked for (CI asks).
  if [ "${GATEHOUSE_TEST_INSTALL_SYSTEM:-}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "metrics test: installing Debian's prometheus (for promtool) with apt-get (GATEHOUSE_TEST_INSTALL_SYSTEM=1)" >&2
    apt-get update -qq >/dev/null || true
    # The package's service is not started: policy-rc.d or no init in
    # containers; only the promtool binary is used.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || skip "apt-get install prometheus failed"
  fi
  command -v promtool >/dev/null 2>&1 || skip "promtool is not installed"
fi
command -v curl >/dev/null 2>&1 || skip "curl is not installed"

# With the workspace's features (as `cargo test --workspace` built them).
cargo build --quiet --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/debug/gatehouse"
data="$(mktemp -d)"
out="$data/serve.out"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

printf 'version = 1\n[metrics]\nlisten = "127.0.0.1:0"\n' >"$data/gatehouse.toml"
"$bin" serve --json --config "$data/gatehouse.toml" --data-dir "$data" --listen 127.0.0.1:0 \
  >"$out" 2>"$data/serve.err" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '"listening"' "$out" 2>/dev/null && break
  sleep 0.1
done
grep -q '"listening"' "$out" || { cat "$data/serve.err" >&2; echo "server did not start" >&2; exit 1; }

field() { grep "\"$1\"" "$out" | sed -e "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/" | head -n 1; }
mcp_url="$(field listening mcp_url)"
metrics_url="$(field listening metrics_url)"
# The first start's secrets are in the file the event names (standard
# output is not a terminal, so they are not printed).
key="$(sed -n -e 's/.*"api_key": *"\([^"]*\)".*/\1/p' "$(field first_run credentials_file)")"
[ -n "$metrics_url" ] && [ -n "$key" ] || { cat "$out" >&2; echo "no metrics_url or key" >&2; exit 1; }
reader="$("$bin" keys create --name reader --role reader --data-dir "$data" --config "$data/gatehouse.toml" --json \
  | sed -e 's/.*"key":"\([^"]*\)".*/\1/')"

call() {
  local tool="$1"; shift
  curl -s -o /dev/null -w '%{http_code}' "$@" "$mcp_url" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H "mcp-name: $tool" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$tool\",\"arguments\":{},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}"
}
[ "$(call whoami -H "authorization: Bearer $reader")" = 200 ] || { echo "allowed call failed" >&2; exit 1; }
[ "$(call execute_code -H "authorization: Bearer $reader")" = 200 ] || { echo "denied call did not answer 200" >&2; exit 1; }
[ "$(call whoami)" = 401 ] || { echo "unauthenticated call was not refused" >&2; exit 1; }

curl -sf "$metrics_url" >"$data/metrics.txt"
grep -q 'gatehouse_decisions_total{decision="deny",reason="role_not_allowed"} 1' "$data/metrics.txt" \
  || { cat "$data/metrics.txt" >&2; echo "the denied call was not counted" >&2; exit 1; }
echo "metrics test: $(promtool --version 2>&1 | head -n 1)"
if ! promtool check metrics <"$data/metrics.txt"; then
  cat "$data/metrics.txt" >&2
  echo "promtool check metrics failed" >&2
  exit 1
fi
echo "metrics test: promtool check metrics passed ($(grep -vc '^#' "$data/metrics.txt") samples)"
