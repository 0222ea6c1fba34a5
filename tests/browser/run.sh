#!/usr/bin/env bash
# Gatehouse's login, consent and device pages in a real headless Chromium
# (Debian's chromium package), driven by playwright-core (pinned below)
# installed into a project-local folder (.tools/browser). Playwright's own
# browser download is never used. Starts a real Gatehouse on a free port
# with a fresh data directory. See tests/browser/README.md.
set -euo pipefail

PLAYWRIGHT_VERSION="1.64.1"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "browser test: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the browser test: $1" >&2
  echo "!!! Install Debian's chromium (apt-get install chromium) and Node.js 20+ with npm to run it," >&2
  echo "!!! or run as root with GATEHOUSE_TEST_INSTALL_SYSTEM=1 to let this script install chromium." >&2
  echo "" >&2
  echo "Chromium page tests: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

if [ ! -x "$CHROMIUM" ]; then
  # A system-wide install only when asked for (CI asks): a test run should
  # not change the machine behind its user's back.
  if [ "${GATEHOUSE_TEST_INSTALL_SYSTEM:-}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "browser test: installing Debian's chromium system-wide with apt-get (GATEHOUSE_TEST_INSTALL_SYSTEM=1)" >&2
    # An old or missing package list makes the install fail: refresh it.
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
      || skip "apt-get install chromium failed"
  fi
  [ -x "$CHROMIUM" ] || skip "$CHROMIUM is not installed"
fi

command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || skip "node $(node -v) is older than 20"

tools="$root/.tools/browser"
installed="$(node -p "require('$tools/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{ "private": true, "type": "module" }' >"$tools/package.json"
  # playwright-core has no install script and downloads no browser.
  echo "browser test: installing playwright-core $PLAYWRIGHT_VERSION (npm) into $tools" >&2
  (cd "$tools" && npm install --silent --no-audit --no-fund --save-exact "playwright-core@$PLAYWRIGHT_VERSION")
fi

# With the workspace's features (as `cargo test --workspace` built them),
# so nothing is compiled a second time with a narrower feature set.
cargo build --quiet --workspace --bins
bin="$root/target/debug/gatehouse"
data="$(mktemp -d)"
out="$data/serve.out"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

"$bin" serve --json --data-dir "$data" --listen 127.0.0.1:0 >"$out" 2>"$data/serve.err" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '"listening"' "$out" 2>/dev/null && break
  sleep 0.1
done
grep -q '"listening"' "$out" || { cat "$data/serve.err" >&2; echo "server did not start" >&2; exit 1; }

json() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l.trim())continue;const o=JSON.parse(l);if(!process.argv[2]||o.event===process.argv[2]){console.log(o[process.argv[1]]);break}}})' "$@"; }
mcp_url="$(json mcp_url listening <"$out")"
base="${mcp_url%/mcp}"
user="browser-reader"
client_name="web-browser-test"
password="$("$bin" users add "$user" --role reader --data-dir "$data" --json | json password)"
user2="browser-reader-2"
password2="$("$bin" users add "$user2" --role reader --data-dir "$data" --json | json password)"
client_id="$("$bin" clients create --name "$client_name" --public --redirect-uri http://localhost:9/callback --data-dir "$data" --json | json client_id)"
# The approval page: an agent key acting for alice (an executor, so the
# default policy lets it call send_email once a human approves), and bob,
# another executor of the same tenant who may not decide alice's calls.
approver="alice"
approver_password="$("$bin" users add "$approver" --role executor --data-dir "$data" --json | json password)"
outsider="bob"
outsider_password="$("$bin" users add "$outsider" --role executor --data-dir "$data" --json | json password)"
agent_key="$("$bin" keys create --name mailer --role executor --owner "$approver" --data-dir "$data" --json | json key)"

# ESM resolves bare imports from the importing file's folder upwards, so the
# test runs from the folder that holds its node_modules.
cp tests/browser/pages.test.mjs "$tools/pages.test.mjs"
echo "browser test: Gatehouse at $base, $("$CHROMIUM" --version 2>/dev/null), playwright-core $PLAYWRIGHT_VERSION, node $(node -v)"
GATEHOUSE_BASE="$base" GATEHOUSE_MCP_URL="$mcp_url" GATEHOUSE_USER="$user" GATEHOUSE_PASSWORD="$password" \
  GATEHOUSE_USER2="$user2" GATEHOUSE_PASSWORD2="$password2" \
  GATEHOUSE_CLIENT_ID="$client_id" GATEHOUSE_CLIENT_NAME="$client_name" CHROMIUM="$CHROMIUM" \
  GATEHOUSE_APPROVER="$approver" GATEHOUSE_APPROVER_PASSWORD="$approver_password" \
  GATEHOUSE_OUTSIDER="$outsider" GATEHOUSE_OUTSIDER_PASSWORD="$outsider_password" \
  GATEHOUSE_AGENT_KEY="$agent_key" GATEHOUSE_BIN="$bin" GATEHOUSE_DATA_DIR="$data" \
  node "$tools/pages.test.mjs"
