#!/usr/bin/env bash
# Replays the README section "An agent with a task, and a human in the loop"
# against a real Gatehouse (fresh data directory, free port), with the
# README's own `mcp()` helper, and fails when an output no longer matches
# what the README shows: every JSON answer the section prints is read from
# README.md and compared field by field with the server's answer ("..." in
# the README matches anything), plus fixed checks of the values the section
# relies on. The human's click on the approval page is replaced by
# `gatehouse approvals approve` (the page itself is tested in tests/browser
# and crates/gatehouse/tests/e2e/approvals.rs). See tests/readme/README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

for tool in curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
      echo "README walkthrough: $tool is not installed (failing: CI must run this test)" >&2
      exit 1
    fi
    echo "" >&2
    echo "!!! SKIPPING the README walkthrough test: $tool is not installed" >&2
    echo "!!! Install curl and python3 to run it." >&2
    echo "" >&2
    echo "README walkthrough: $tool is not installed" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
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
# The README's `gatehouse` (an alias for `cargo run -q --`), already built.
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
[ -n "$base" ] || { cat "$out" >&2; echo "no listening address" >&2; exit 1; }

checks=0
fail() {
  echo "" >&2
  echo "README walkthrough FAILED: $*" >&2
  echo "(the README section \"An agent with a task, and a human in the loop\" no longer matches the server)" >&2
  exit 1
}

# check JSON PYTHON-EXPRESSION DESCRIPTION: the expression sees the parsed
# JSON as `v` (a list for JSON Lines output) and the server's base URL as `base`.
check() {
  python3 -c 'import json,sys
text = sys.argv[1]
try:
    v = json.loads(text)
except ValueError:
    v = [json.loads(l) for l in text.splitlines() if l.strip()]
base = sys.argv[3]
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" "$base" || fail "$3
  expected: $2
  got:      $1"
  checks=$((checks + 1))
}

# readme_check N RESPONSE DESCRIPTION: the N-th JSON answer shown in the
# section (0-based, in order) must match RESPONSE: every field the README
# shows is there with the same value; "..." inside a string matches any
# text, and a trailing ", ..." in an object allows more fields.
readme_snippets='
import json, re
text = open("README.md", encoding="utf-8").read()
head = "\n## An agent with a task, and a human in the loop\n"
if head not in text:
    raise SystemExit("README.md has no section \"An agent with a task, and a human in the loop\"")
section = text.split(head, 1)[1].split("\n## ", 1)[0]
snippets, lines = [], section.splitlines()
for i, line in enumerate(lines):
    if line.startswith("{\""):
        s = line
        for more in lines[i + 1:]:
            if not more.startswith(" "): break
            s += more
        snippets.append(s)
def parse(s):
    # `, ...` standing for more fields outside a string is not JSON.
    return json.loads(re.sub(r",\s*\.\.\.\s*(?=[}\]])", "", s))
'
readme_check() {
  python3 -c "$readme_snippets"'
import sys
n, got, base, what = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
if len(snippets) != 4:
    raise SystemExit("expected 4 JSON answers in the README section, found %d" % len(snippets))
want = parse(snippets[n].replace("http://127.0.0.1:8787", base))
def same(w, g, path):
    if isinstance(w, dict):
        if not isinstance(g, dict): return ["%s: README shows an object, server sent %r" % (path, g)]
        errs = []
        for k, wv in w.items():
            if k not in g: errs.append("%s.%s: shown in the README, missing in the answer" % (path, k))
            else: errs += same(wv, g[k], path + "." + k)
        return errs
    if isinstance(w, list):
        if not isinstance(g, list) or len(g) != len(w):
            return ["%s: README shows %r, server sent %r" % (path, w, g)]
        return [e for i, (a, b) in enumerate(zip(w, g)) for e in same(a, b, "%s[%d]" % (path, i))]
    if isinstance(w, str) and "..." in w:
        pattern = ".*".join(re.escape(p) for p in w.split("..."))
        if isinstance(g, str) and re.fullmatch(pattern, g, re.S): return []
    elif w == g and type(w) == type(g):
        return []
    return ["%s: README shows %s, server sent %s" % (path, json.dumps(w), json.dumps(g))]
errs = same(want, got, "answer")
if errs:
    print("README answer #%d (%s) differs:" % (n + 1, what), file=sys.stderr)
    for e in errs: print("  " + e, file=sys.stderr)
    sys.exit(1)' "$1" "$2" "$base" "$3" || fail "$3: the answer differs from the README's
  got: $2"
  checks=$((checks + 1))
}
# The value of a field of a JSON document on stdin.
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The README's own helper, pointed at this server.
helper="$(awk '/^mcp\(\) \{/{on=1} on{print} on&&/^\}$/{exit}' README.md)"
[ -n "$helper" ] || fail "no mcp() helper (a line starting with 'mcp() {' up to a line '}') in README.md"
case "$helper" in *127.0.0.1:8787*) ;; *) fail "the README's mcp() helper does not name 127.0.0.1:8787";; esac
# The helper reads $OPTOKEN, unset in the README's shell until the approval.
OPTOKEN=""
eval "${helper//127.0.0.1:8787/${base#http://}}"

# "the default policy has the tasks research and outreach; gatehouse policy show prints them"
policy="$(gatehouse policy show)"
case "$policy" in *"[tasks.research]"*"[tasks.outreach]"*) checks=$((checks + 1));;
  *) fail "gatehouse policy show does not print the tasks research and outreach";; esac

# The section's commands, in its order.
added="$(gatehouse users add alice --role executor)"           # prints alice's password once
case "$added" in *password*) checks=$((checks + 1));; *) fail "users add printed no password: $added";; esac
MAILER="$(gatehouse keys create --name mailer --role executor --owner alice --json | field key)"

exchanged="$(curl -s "$base/oauth/token" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    -d subject_token="$MAILER" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token -d task=outreach)"
readme_check 0 "$exchanged" "token exchange"
check "$exchanged" 'v["access_token"].startswith("eyJ") and v["token_type"] == "Bearer" and v["expires_in"] == 1800' "the task token"
check "$exchanged" 'v["authorization_details"] == [{"type": "mcp_task", "task": "outreach", "tools": ["whoami", "search_database", "send_email"], "grant_id": v["authorization_details"][0]["grant_id"]}] and v["authorization_details"][0]["grant_id"].startswith("tg_")' "the task grant"
TASK="$(echo "$exchanged" | field access_token)"
grant_id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["authorization_details"][0]["grant_id"])' "$exchanged")"

r="$(mcp "$TASK" tools/call search_database '{"query":"acme"}')"     # allowed
check "$r" '"error" not in v and "result" in v and v["result"].get("isError") is False' "search_database is allowed in the task"
r="$(mcp "$TASK" tools/call read_file '{"path":"notes.txt"}')"
readme_check 1 "$r" "read_file outside the task"
check "$r" 'v["error"]["code"] == -32001 and v["error"]["data"]["reason"] == "outside_task" and v["error"]["data"]["tool"] == "read_file"' "read_file is outside the task"
check "$r" 'v["error"]["message"].startswith("tool '"'read_file'"' is not part of the task grant for task '"'outreach'"'")' "the outside-task message"

# "gatehouse grants list shows live grants"
check "$(gatehouse grants list --json)" 'any(g["id"] == "'"$grant_id"'" and g["task"] == "outreach" and g["human"] == "alice" and g["tools"] == ["whoami", "search_database", "send_email"] for g in v)' "grants list shows the grant"
case "$(gatehouse grants list)" in *"$grant_id"*outreach*) checks=$((checks + 1));; *) fail "gatehouse grants list does not show $grant_id";; esac

email='{"to":"bob@example.com","subject":"Hi","body":"Report attached."}'
r="$(mcp "$TASK" tools/call send_email "$email")"
readme_check 2 "$r" "send_email needs approval"
check "$r" 'v["error"]["code"] == -32001 and v["error"]["data"]["reason"] == "approval_required" and v["error"]["data"]["tool"] == "send_email"' "send_email needs approval"
check "$r" 'v["error"]["data"]["approval_id"].startswith("apr_") and v["error"]["data"]["approval_url"] == base + "/approvals/" + v["error"]["data"]["approval_id"]' "the approval id and URL"
check "$r" 'v["error"]["message"].startswith("tool '"'send_email'"' needs a human'"'s"' approval: open " + v["error"]["data"]["approval_url"] + " to approve, then retry ")' "the approval message"
# The helper sends $OPTOKEN under the _meta key the server names.
meta="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["error"]["data"]["operation_token_meta"])' "$r")"
case "$helper" in *"$meta"*) checks=$((checks + 1));;
  *) fail "the server asks for the operation token in _meta[\"$meta\"], the README's mcp() helper does not send it there";; esac
id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["error"]["data"]["approval_id"])' "$r")"

# "gatehouse approvals list and gatehouse approvals approve apr_... do the same from a shell"
check "$(gatehouse approvals list --json)" 'any(a["id"] == "'"$id"'" and a["status"] == "pending" and a["tool"] == "send_email" and a["task"] == "outreach" and a["task_grant"] == "'"$grant_id"'" and a["human"] == "alice" and a["arguments"] == json.loads('"'$email'"') for a in v)' "approvals list shows the call pending"
case "$(gatehouse approvals list)" in *"$id"*pending*) checks=$((checks + 1));; *) fail "gatehouse approvals list does not show $id as pending";; esac
approved="$(gatehouse approvals approve "$id" --json)"
check "$approved" 'v["id"] == "'"$id"'" and v["status"] == "approved" and v["operation_token"].startswith("gho_")' "approve prints an operation token gho_..."
export OPTOKEN="$(echo "$approved" | field operation_token)"

r="$(mcp "$TASK" tools/call send_email "$email")"               # runs once
check "$r" '"error" not in v and "result" in v and v["result"].get("isError") is False' "the retry with the operation token runs"
r="$(mcp "$TASK" tools/call send_email "$email")"
readme_check 3 "$r" "the second retry"
check "$r" 'v["error"]["code"] == -32001 and v["error"]["data"]["reason"] == "operation_token_used" and v["error"]["data"]["tool"] == "send_email"' "the second retry is refused"
check "$r" 'v["error"]["message"] == "the operation token for tool '"'send_email'"' was not accepted (operation_token_used)"' "the used-token message"

# "Claiming another task with the task token ... is refused and recorded as
# an anomaly in the audit log (gatehouse audit query --kind anomaly)."
r="$(curl -s "$base/oauth/token" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    -d subject_token="$TASK" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token -d task=research)"
check "$r" '"access_token" not in v and "error" in v' "claiming another task with the task token is refused"
gatehouse audit query --kind anomaly >/dev/null
check "$(gatehouse audit query --kind anomaly --json)" 'any(e["kind"] == "anomaly" and e["human"] == "alice" and e["outcome"] == "denied" and e["reason"] == "task_escalation" for e in (v if isinstance(v, list) else [v]))' "the refused claim is an anomaly in the audit log"

echo "README walkthrough: $checks checks passed"
