#!/usr/bin/env bash
# Interoperability tests with the official Node tooling (pinned in setup.sh):
#   a. the TypeScript MCP SDK's OAuth client (DCR, PKCE, resource, iss,
#      refresh) through Gatehouse's login and consent pages;
#   b. the MCP conformance suite's `authorization` command against the
#      embedded authorization server;
#   c. the MCP Inspector CLI with a bearer token.
# Node 22 and the packages are installed into project-local folders
# (.tools/node22 and .tools/node-interop) with the system npm; later runs
# reuse them. Starts a real Gatehouse on a free port with a fresh data
# directory.
set -euo pipefail

root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/tests/interop/node"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "node interop: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the Node MCP interop test: $1" >&2
  echo "!!! Install node and npm (any version; Node 22 is fetched with npm) to run it." >&2
  echo "" >&2
  echo "TypeScript SDK, conformance and Inspector interop: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

# Node 22 and the pinned packages ($tools, $conformance).
. "$here/setup.sh"
inspector="$modules/inspector/clients/launcher/build/index.js"
# ESM resolves bare imports ('@modelcontextprotocol/sdk/...') from the
# importing file's own folder upwards and ignores NODE_PATH, so the scripts
# run from a copy next to the installed node_modules.
cp "$here/browser.mjs" "$here/ts_oauth_client.mjs" "$tools/"

cargo build --quiet --bin gatehouse
bin="$root/target/debug/gatehouse"
data="$(mktemp -d)"
out="$data/serve.out"
cleanup() {
  [ -n "${suite_pid:-}" ] && kill "$suite_pid" 2>/dev/null || true
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

# json <key> reads one JSON document on stdin and prints a top-level field.
json() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"; }
url="$(grep '"listening"' "$out" | json mcp_url)"
issuer="${url%/mcp}"

# a. The TypeScript SDK's own OAuth client, a person (our scripted browser)
#    logging in and consenting, tool calls, and a refresh.
password="$("$bin" users add ts-alice --role reader --data-dir "$data" --json | json password)"
node "$tools/ts_oauth_client.mjs" "$url" ts-alice "$password"
"$bin" audit query --data-dir "$data" --tool oauth/authorize --json | grep -q consent_granted \
  || { echo "the consent is missing from the audit log" >&2; exit 1; }
echo "node interop: TypeScript SDK OAuth flow passed; consent found in the audit log"

# b. The conformance suite's authorization-server scenarios. The suite
#    listens for the callback on 127.0.0.1:<port>; the client is
#    registered for exactly that redirect URI.
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
client_id="$("$bin" clients create --name conformance --public \
  --redirect-uri "http://127.0.0.1:$port/callback" --data-dir "$data" --json | json client_id)"
suite_log="$data/conformance.log"
# (It would wait 5 minutes for the callback; `timeout` caps a hang.)
timeout 120 node "$conformance" authorization --url "$issuer" --client-id "$client_id" --resource "$url" \
  -p "$port" -o "$data/conformance" >"$suite_log" 2>&1 &
suite_pid=$!
authorize_url=""
for _ in $(seq 1 300); do
  authorize_url="$(grep -m1 -oE "^$issuer/authorize\?[^ ]+" "$suite_log" || true)"
  [ -n "$authorize_url" ] && grep -q 'Callback server started' "$suite_log" && break
  kill -0 "$suite_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$authorize_url" ] && grep -q 'Callback server started' "$suite_log" \
  || { cat "$suite_log" >&2; echo "the conformance suite printed no authorization URL" >&2; exit 1; }
password="$("$bin" users add conf-bob --role reader --data-dir "$data" --json | json password)"
# The person logs in and consents; the browser then goes to the suite's callback.
location="$(node "$tools/browser.mjs" "$authorize_url" conf-bob "$password")"
case "$location" in
  "http://127.0.0.1:$port/callback?"*) ;;
  *) echo "unexpected redirect after consent: $location" >&2; exit 1 ;;
esac
node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),e=>{console.error(e);process.exit(1)})' "$location"
suite_status=0
wait "$suite_pid" || suite_status=$?
suite_pid=""
cat "$suite_log"
[ "$suite_status" = 0 ] || { echo "the conformance suite failed (exit $suite_status)" >&2; exit 1; }
# Both scenarios must have run and passed every check (the exit code alone
# would also be 0 if a scenario were silently dropped).
node - "$data/conformance" <<'EOF'
const fs = require('fs'), path = require('path');
const dir = process.argv[2];
const found = {};
for (const entry of fs.readdirSync(dir, { recursive: true })) {
  if (path.basename(entry) !== 'checks.json') continue;
  const checks = JSON.parse(fs.readFileSync(path.join(dir, entry), 'utf8'));
  for (const c of checks) console.log(`  ${c.status.padEnd(8)} ${c.id}: ${c.description ?? ''}`);
  found[path.basename(path.dirname(entry))] = checks;
}
let failed = false;
for (const scenario of ['authorization-server-metadata-endpoint', 'authorization-code-grant']) {
  // Result folders are named authorization-server-<scenario>-<timestamp>.
  const checks = Object.entries(found).find(([name]) => name.startsWith(`authorization-server-${scenario}-`))?.[1];
  if (!checks || checks.length === 0) { console.error(`FAIL: scenario ${scenario} did not run`); failed = true; continue; }
  const bad = checks.filter((c) => c.status === 'FAILURE');
  if (bad.length) { console.error(`FAIL: ${scenario}: ${bad.map((c) => c.id).join(', ')}`); failed = true; }
  else console.log(`ok: conformance scenario ${scenario} passed (${checks.length} checks)`);
}
process.exit(failed ? 1 : 0);
EOF
echo "node interop: conformance authorization suite passed"

# c. The MCP Inspector CLI with a bearer token from the client-credentials
#    grant. HOME points into the temp dir: the inspector keeps state in
#    ~/.mcp-inspector.
creds="$("$bin" clients create --name inspector --role reader --data-dir "$data" --json)"
inspector_client="$(echo "$creds" | json client_id)"
token="$(node -e '
const [issuer, id, secret, resource] = process.argv.slice(1);
fetch(`${issuer}/oauth/token`, {
  method: "POST",
  headers: { authorization: "Basic " + Buffer.from(`${id}:${secret}`).toString("base64") },
  body: new URLSearchParams({ grant_type: "client_credentials", resource }),
}).then(async (r) => {
  const body = await r.json();
  if (r.status !== 200 || !body.access_token) { console.error(r.status, body); process.exit(1); }
  console.log(body.access_token);
});' "$issuer" "$inspector_client" "$(echo "$creds" | json client_secret)" "$url")"
mkdir -p "$data/home"
inspect() {
  HOME="$data/home" MCP_INSPECTOR_SECRET_STORE=memory \
    node "$inspector" --cli "$url" --transport http "$@" </dev/null
}
listed="$(inspect --header "Authorization: Bearer $token" --method tools/list)"
echo "$listed" | node -e '
let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{
  const names = JSON.parse(s).tools.map(t => t.name);
  if (!names.includes("whoami") || names.includes("execute_code")) { console.error("FAIL: inspector tools/list:", names); process.exit(1); }
  console.log(`ok: the inspector lists the reader tools: ${names}`);
});'
called="$(inspect --header "Authorization: Bearer $token" --method tools/call --tool-name whoami)"
echo "$called" | node -e '
let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{
  const result = JSON.parse(s);
  if (result.isError || !result.content[0].text.includes(process.argv[1])) { console.error("FAIL: inspector whoami:", s); process.exit(1); }
  console.log(`ok: the inspector called whoami as ${process.argv[1]}`);
});' "$inspector_client"
if inspect --stored-auth-only --method tools/list >"$data/noauth.out" 2>&1; then
  cat "$data/noauth.out" >&2; echo "FAIL: the inspector listed tools without a token" >&2; exit 1
fi
grep -q 'auth_required' "$data/noauth.out" || { cat "$data/noauth.out" >&2; echo "FAIL: unexpected inspector error without a token" >&2; exit 1; }
echo "ok: the inspector without a token is refused"
echo "node interop: MCP Inspector CLI passed"
