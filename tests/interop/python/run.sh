#!/usr/bin/env bash
# Interoperability test with the official Python MCP SDK (pinned below),
# installed into a project-local virtual environment (.tools/pyvenv).
# Starts a real Gatehouse on a free port with a fresh data directory.
set -euo pipefail

MCP_VERSION="2.3.0"
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"

skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "python interop: $1 (failing: CI must run this test)" >&2
    exit 1
  fi
  echo "" >&2
  echo "!!! SKIPPING the Python MCP interop test: $1" >&2
  echo "!!! Install python3 (with venv and pip) to run it." >&2
  echo "" >&2
  echo "Python MCP SDK interop: $1" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
  exit 0
}

command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"
venv="$root/.tools/pyvenv"
if ! "$venv/bin/python" -c "import mcp, sys; sys.exit(0 if __import__('importlib.metadata').metadata.version('mcp') == '$MCP_VERSION' else 1)" 2>/dev/null; then
  echo "python interop: installing the MCP SDK (mcp==$MCP_VERSION, from PyPI) into $venv" >&2
  python3 -m venv "$venv" || skip "python3 cannot create a virtual environment"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_VERSION"
fi

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

"$bin" serve --json --data-dir "$data" --listen 127.0.0.1:0 >"$out" 2>"$data/serve.err" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '"listening"' "$out" 2>/dev/null && break
  sleep 0.1
done
grep -q '"listening"' "$out" || { cat "$data/serve.err" >&2; echo "server did not start" >&2; exit 1; }

field() { "$venv/bin/python" -c "import json,sys
for line in open(sys.argv[1]):
    event = json.loads(line)
    if event.get('event') == sys.argv[2]:
        print(event[sys.argv[3]])" "$out" "$1" "$2"; }
url="$(field listening mcp_url)"
# The first start's secrets are in the file the event names (standard
# output is not a terminal, so they are not printed).
admin_key="$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$(field first_run credentials_file)")"
reader_key="$("$bin" keys create --data-dir "$data" --name py-reader --role reader --json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

"$venv/bin/python" tests/interop/python/client.py "$url" "$admin_key" "$reader_key"

# The denial the client saw is in the audit log.
"$bin" audit query --data-dir "$data" --outcome denied --tool execute_code --json | grep -q role_not_allowed \
  || { echo "the denied call is missing from the audit log" >&2; exit 1; }
echo "python interop: denied call found in the audit log"

# A task grant and a human-approved call through the SDK.
"$bin" users add py-owner --role executor --data-dir "$data" --json >/dev/null
mailer_key="$("$bin" keys create --data-dir "$data" --name py-mailer --role executor --owner py-owner --json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
"$venv/bin/python" tests/interop/python/task_client.py "$url" "$mailer_key" "$bin" "$data"
echo "python interop: task grant and operation token passed"

# OAuth: the SDK's own OAuthClientProvider registers, sends a person (our
# scripted browser) through login and consent, calls tools, and refreshes.
password="$("$bin" users add py-alice --role reader --data-dir "$data" --json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["password"])')"
(cd tests/interop/python && "$venv/bin/python" oauth_client.py "$url" py-alice "$password")
"$bin" audit query --data-dir "$data" --tool oauth/authorize --json | grep -q consent_granted \
  || { echo "the consent is missing from the audit log" >&2; exit 1; }
echo "python interop: OAuth flow passed; consent found in the audit log"

# The README's example client, with a scripted stand-in for the browser
# (Python's webbrowser module runs $BROWSER) that signs in and returns to
# the example's loopback callback. It keeps its registration and tokens in a
# state file: the second run reuses the token and opens no browser; a run
# without a valid token signs in again with the same registration, and the
# consent is remembered (no second consent record, one registered client).
state="$data/python-example.json"
example() {
  GATEHOUSE_TEST_USER=py-alice GATEHOUSE_TEST_PASSWORD="$password" \
    BROWSER="$venv/bin/python $root/tests/interop/python/login_browser.py %s" \
    PYTHONPATH="$root/tests/interop/python" \
    "$venv/bin/python" examples/python_oauth_client.py "$url" "$state"
}
output="$(example)"
echo "$output" | grep -q '"human": "py-alice"' \
  || { echo "$output" >&2; echo "the README example did not sign in" >&2; exit 1; }
echo "$output" | grep -q 'Opening your browser' \
  || { echo "$output" >&2; echo "the first run did not open the browser" >&2; exit 1; }
[ "$(stat -c %a "$state")" = "600" ] || { echo "the example's state file is readable by others" >&2; exit 1; }
output="$(example)"
echo "$output" | grep -q '"human": "py-alice"' \
  || { echo "$output" >&2; echo "the example's second run did not call whoami" >&2; exit 1; }
if echo "$output" | grep -q 'Opening your browser'; then
  echo "$output" >&2; echo "the example's second run opened the browser although its token is valid" >&2; exit 1
fi
"$venv/bin/python" -c 'import json,sys
state = json.load(open(sys.argv[1])); state.pop("tokens")
json.dump(state, open(sys.argv[1], "w"))' "$state"
output="$(example)"
echo "$output" | grep -q '"human": "py-alice"' \
  || { echo "$output" >&2; echo "the example did not sign in again" >&2; exit 1; }
client_id="$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_info"]["client_id"])' "$state")"
consents="$("$bin" audit query --data-dir "$data" --tool oauth/authorize --json | grep consent_granted | grep -c "$client_id" || true)"
[ "$consents" = "1" ] || { echo "the example's consent was asked $consents times, not remembered" >&2; exit 1; }
registered="$("$bin" clients list --data-dir "$data" --json | grep -o 'Gatehouse Python example' | wc -l)"
[ "$registered" = "1" ] || { echo "the example registered $registered clients, not one" >&2; exit 1; }
echo "python interop: the README's OAuth example signed in, reused its token, and its consent was remembered"
