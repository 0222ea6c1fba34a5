#!/usr/bin/env bash
# Gatehouse against a real OpenID provider: oidc-provider from the npm
# registry (pinned below), started here with a test configuration
# (provider.mjs), and a Gatehouse that trusts it three ways: its JWT access
# tokens, its opaque tokens through introspection, and sign-in through it
# (in Debian's headless Chromium, driven by playwright-core). Both run on
# free loopback ports with a fresh data directory. See README.md here.
set -euo pipefail

OIDC_PROVIDER_VERSION="9.13.3"
PLAYWRIGHT_VERSION="1.64.1"
NODE_MAJOR="22"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "oidc-provider test: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the oidc-provider test: $1" >&2
  echo "!!! It needs Node.js 20+ with npm and Debian's chromium (apt-get install chromium)." >&2
  echo "" >&2
  echo "oidc-provider (identity provider) test: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

if [ ! -x "$CHROMIUM" ]; then
  # A system-wide install only when asked for (CI asks), as tests/browser does.
  if [ "${GATEHOUSE_TEST_INSTALL_SYSTEM:-}" = "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "oidc-provider test: installing Debian's chromium system-wide with apt-get (GATEHOUSE_TEST_INSTALL_SYSTEM=1)" >&2
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
      || skip "apt-get install chromium failed"
  fi
  [ -x "$CHROMIUM" ] || skip "$CHROMIUM is not installed"
fi
command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"

# oidc-provider supports Node 22 LTS: Node 22 as an npm package, in the
# same project-local folder the other Node tests use.
node22="$root/.tools/node22"
if ! "$node22/node_modules/.bin/node" -e "process.exit(process.versions.node.split('.')[0] === '$NODE_MAJOR' ? 0 : 1)" 2>/dev/null; then
  echo "oidc-provider test: installing Node $NODE_MAJOR (the npm package node@$NODE_MAJOR) into $node22" >&2
  npm install --prefix "$node22" --no-audit --no-fund --loglevel=error "node@$NODE_MAJOR" \
    || skip "npm could not install node@$NODE_MAJOR"
fi
export PATH="$node22/node_modules/.bin:$PATH"

tools="$root/.tools/oidc"
have() { node -e "try { process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1) } catch { process.exit(1) }" "$tools/node_modules/$1/package.json" "$2"; }
if ! have oidc-provider "$OIDC_PROVIDER_VERSION" || ! have playwright-core "$PLAYWRIGHT_VERSION"; then
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{ "private": true, "type": "module" }' >"$tools/package.json"
  echo "oidc-provider test: installing oidc-provider $OIDC_PROVIDER_VERSION and playwright-core $PLAYWRIGHT_VERSION (npm) into $tools" >&2
  (cd "$tools" && npm install --silent --no-audit --no-fund --save-exact \
    "oidc-provider@$OIDC_PROVIDER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION") \
    || skip "npm could not install oidc-provider"
fi

cargo build --quiet --workspace --bins
bin="$root/target/debug/gatehouse"
data="$(mktemp -d)"
cleanup() {
  [ -n "${op_pid:-}" ] && kill "$op_pid" 2>/dev/null || true
  [ -n "${gh_pid:-}" ] && kill "$gh_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# Each side must know the other's address before it starts (the provider
# registers Gatehouse's redirect URI, Gatehouse names the provider's
# issuer): two free ports, asked of the kernel just before.
read -r op_port gh_port < <(node -e '
  const net = require("net");
  const free = () => new Promise((ok) => { const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); }); });
  (async () => console.log(await free(), await free()))();')
op="http://localhost:$op_port"  # another site than Gatehouse: see provider.mjs
base="http://127.0.0.1:$gh_port"
export OIDC_GATEHOUSE_SECRET="oidc-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

cp tests/interop/oidc/provider.mjs tests/interop/oidc/oidc.test.mjs "$tools/"
(cd "$tools" && exec node provider.mjs "$op_port" "$base") >"$data/op.out" 2>"$data/op.err" &
op_pid=$!
for _ in $(seq 1 100); do
  grep -q '"listening"' "$data/op.out" 2>/dev/null && break
  sleep 0.1
done
grep -q '"listening"' "$data/op.out" || { cat "$data/op.err" >&2; echo "oidc-provider did not start" >&2; exit 1; }

config="$data/gatehouse.toml"
cat >"$config" <<EOF
version = 1
[server]
listen = "127.0.0.1:$gh_port"
[oauth]
local_login = false
[[oauth.identity_providers]]
name = "op"
issuer = "$op"
internal = true
client_id = "gatehouse"
client_secret = "env:OIDC_GATEHOUSE_SECRET"
display_name = "Test OP"
scopes = ["email", "groups"]
create_users = true
roles_claim = "groups"
role_map = { "mcp-ops" = "executor", "mcp-readers" = "reader" }
[[issuers]]
issuer = "$op"
internal = true
roles_claim = "groups"
role_map = { "mcp-readers" = "reader" }
introspection = { client_id = "gatehouse", client_secret = "env:OIDC_GATEHOUSE_SECRET" }
EOF

"$bin" serve --json --config "$config" --data-dir "$data" >"$data/serve.out" 2>"$data/serve.err" &
gh_pid=$!
for _ in $(seq 1 100); do
  grep -q '"listening"' "$data/serve.out" 2>/dev/null && break
  sleep 0.1
done
grep -q '"listening"' "$data/serve.out" || { cat "$data/serve.err" >&2; echo "Gatehouse did not start" >&2; exit 1; }

client_id="$("$bin" clients create --name oidc-test-app --public --redirect-uri http://localhost:9/callback \
  --config "$config" --data-dir "$data" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).client_id))')"

echo "oidc-provider test: Gatehouse at $base, oidc-provider $OIDC_PROVIDER_VERSION at $op, $("$CHROMIUM" --version 2>/dev/null), node $(node -v)"
status=0
GATEHOUSE_BASE="$base" GATEHOUSE_CLIENT_ID="$client_id" OP_ISSUER="$op" CHROMIUM="$CHROMIUM" \
  GATEHOUSE_BIN="$bin" GATEHOUSE_DATA_DIR="$data" GATEHOUSE_CONFIG="$config" \
  node "$tools/oidc.test.mjs" || status=$?
if [ "$status" != 0 ]; then
  echo "--- Gatehouse log ---" >&2; tail -40 "$data/serve.err" >&2
  echo "--- oidc-provider log ---" >&2; tail -40 "$data/op.err" >&2
fi
exit "$status"
