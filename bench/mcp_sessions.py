"""Opens MCP 2025-11-25 sessions for bench/gateway.sh and checks the path.

    mcp_sessions.py URL TOOL COUNT [KEY]

For each of COUNT sessions: `initialize` (protocol 2025-11-25), then
`notifications/initialized`. On the first session it also checks that
`tools/list` lists TOOL and that `tools/call TOOL {"text": ...}` echoes the
text. Prints the Mcp-Session-Id values on one line, separated by spaces;
exits 1 with the reason on stderr otherwise. Standard library only.
"""

import json
import sys
import urllib.error
import urllib.request

PROTOCOL = "2025-11-25"
url, tool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = sys.argv[4] if len(sys.argv) > 4 else ""


def post(message, session=None):
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL,
    }
    if key:
        headers["Authorization"] = "Bearer " + key
    if session:
        headers["Mcp-Session-Id"] = session
    request = urllib.request.Request(url, json.dumps(message).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, body = response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit(f"{url}: {message.get('method')}: HTTP {e.code}: {e.read().decode()[:500]}")
    if not body.strip():
        return status, got, None
    if got.get("Content-Type", "").startswith("text/event-stream"):
        # The answer is the data of the event that carries it.
        for line in body.splitlines():
            if line.startswith("data:") and line[5:].strip():
                answer = json.loads(line[5:])
                if "id" in answer:
                    return status, got, answer
        sys.exit(f"{url}: {message.get('method')}: no answer in the event stream: {body[:500]}")
    return status, got, json.loads(body)


sessions = []
for i in range(count):
    _, headers, answer = post({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "gatehouse-bench", "version": "1"}},
    })
    session = headers.get("Mcp-Session-Id")
    if not session or not answer or "result" not in answer:
        sys.exit(f"{url}: initialize gave no session: {answer}")
    version = answer["result"].get("protocolVersion")
    if version != PROTOCOL:
        sys.exit(f"{url}: initialize negotiated {version}, not {PROTOCOL}")
    post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    sessions.append(session)

_, _, listed = post({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, sessions[0])
names = [t["name"] for t in (listed or {}).get("result", {}).get("tools", [])]
if tool not in names:
    sys.exit(f"{url}: tools/list does not list {tool}: {names}")
_, _, called = post({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                     "params": {"name": tool, "arguments": {"text": "check"}}}, sessions[0])
result = (called or {}).get("result") or {}
content = result.get("content") or [{}]
if result.get("isError") or content[0].get("text") != "check":
    sys.exit(f"{url}: tools/call {tool} did not echo: {called}")
print(" ".join(sessions))
