#!/usr/bin/env bash
# Replays the README section "An agent with a task, and a human in the loop"
# against a real Gatehouse (fresh data directory, free port), with the
# README's own `mcp()` helper, and fails when an output no longer matches
# what the README shows. The human's click on the approval page is replaced
# by `gatehouse approvals approve` (the page itself is tested in
# tests/browser and crates/gatehouse/tests/e2e/approvals.rs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

for tool in curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then echo "README walkthrough: $tool is missing (failing: CI must run this)" >&2; exit 1; fi
    echo "" >&2; echo "!!! SKIPPING the README walkthrough: $tool is not installed" >&2; echo "" >&2
    exit 0
  fi
done

cargo build --quiet --bin gatehouse
bin="$root/target/debug/gatehouse"
data="$(mktemp -d)"
out="$data/serve.out"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
export GATEHOUSE_DATA_DIR="$data"
gatehouse() { "$bin" "$@"; }

"$bin" serve --json --listen 127.0.0.1:0 >"$out" 2>"$data/serve.err" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '"listening"' "$out" 2>/dev/null && break
  sleep 0.1
done
grep -q '"listening"' "$out" || { cat "$data/serve.err" >&2; echo "server did not start" >&2; exit 1; }
base="$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "listening": print(e["mcp_url"].rsplit("/mcp", 1)[0])' "$out")"

checks=0
fail() { echo "README walkthrough: $*" >&2; exit 1; }
# check JSON PYTHON-EXPRESSION DESCRIPTION: the expression sees the parsed JSON as `v`.
check() {
  python3 -c 'import json,sys
v = json.loads(sys.argv[1])
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" || fail "$3; got: $1"
  checks=$((checks + 1))
}
# The README's own helper, pointed at this server.
helper="$(awk '/^mcp\(\) \{/{on=1} on{print} on&&/^\}$/{exit}' README.md)"
[ -n "$helper" ] || fail "no mcp() helper in README.md"
# The helper reads $OPTOKEN, unset in the README's shell until the approval.
OPTOKEN=""
eval "${helper//http:\/\/127.0.0.1:8787/$base}"

# The section's commands, in its order.
gatehouse users add alice --role executor --json >/dev/null
MAILER="$(gatehouse keys create --name mailer --role executor --owner alice --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
exchanged="$(curl -s "$base/oauth/token" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token="$MAILER" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token -d task=outreach)"
check "$exchanged" 'v["token_type"] == "Bearer" and v["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"' "token exchange answer"
check "$exchanged" 'v["expires_in"] == 1800' "outreach grants live 30 minutes"
check "$exchanged" 'v["authorization_details"][0]["tools"] == ["whoami", "search_database", "send_email"] and v["authorization_details"][0]["grant_id"].startswith("tg_")' "the grant's tools"
TASK="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$exchanged")"

r="$(mcp "$TASK" tools/call search_database '{"query":"acme"}')"
check "$r" '"result" in v and not v["result"].get("isError")' "search_database is allowed"
r="$(mcp "$TASK" tools/call read_file '{"path":"notes.txt"}')"
check "$r" 'v["error"]["data"]["reason"] == "outside_task"' "read_file is outside the task"
check "$r" 'v["error"]["message"] == "tool '"'"'read_file'"'"' is not part of the task grant for task '"'"'outreach'"'"'"' "the README's outside-task message"

grants="$(gatehouse grants list --json)"
check "$grants" 'v[0]["task"] == "outreach"' "grants list shows the grant"
gatehouse audit query --kind anomaly >/dev/null

email='{"to":"bob@example.com","subject":"Hi","body":"Report attached."}'
r="$(mcp "$TASK" tools/call send_email "$email")"
check "$r" 'v["error"]["code"] == -32001 and v["error"]["data"]["reason"] == "approval_required"' "send_email needs approval"
check "$r" 'v["error"]["data"]["approval_id"].startswith("apr_")' "an approval id"
check "$r" 'v["error"]["data"]["approval_url"] == "'"$base"'/approvals/" + v["error"]["data"]["approval_id"]' "the approval URL"
check "$r" 'v["error"]["message"].startswith("tool '"'"'send_email'"'"' needs a human'"'"'s approval: open '"$base"'/approvals/apr_") and " to approve, then retry " in v["error"]["message"]' "the README's approval message"
id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["error"]["data"]["approval_id"])' "$r")"
pending="$(gatehouse approvals list --json)"
check "$pending" 'v[0]["id"] == "'"$id"'" and v[0]["status"] == "pending"' "approvals list shows it pending"
OPTOKEN="$(gatehouse approvals approve "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["operation_token"])')"
export OPTOKEN
r="$(mcp "$TASK" tools/call send_email "$email")"
check "$r" '"result" in v and not v["result"].get("isError")' "the retry with the operation token runs"
r="$(mcp "$TASK" tools/call send_email "$email")"
check "$r" 'v["error"]["data"]["reason"] == "operation_token_used"' "the second retry is refused"
check "$r" 'v["error"]["message"] == "the operation token for tool '"'"'send_email'"'"' was not accepted (operation_token_used)"' "the README's used-token message"

echo "README walkthrough: $checks checks passed"
