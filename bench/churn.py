"""Memory under credential and session churn, for bench/churn.sh.

    python3 bench/churn.py BASE_URL PID CLIENT_ID CLIENT_SECRET API_KEY ROUNDS TOKENS SESSIONS

Each round: TOKENS new access tokens from the token endpoint (client
credentials), each used once for a stateless `tools/call whoami` (a token the
validated-token cache has never seen); then SESSIONS MCP 2025-11-25 sessions
opened with the API key (`initialize`, `notifications/initialized`, one
`tools/call whoami`) and ended with DELETE. After each round it prints the
server's resident memory (VmRSS of PID) and how many tokens and sessions it
has seen so far. Every answer is checked; a wrong one stops the run.
"""

import http.client
import json
import sys
import urllib.parse

MODERN = "2026-07-28"
LEGACY = "2025-11-25"


class Client:
    def __init__(self, base):
        url = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    def request(self, method, path, body, headers):
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.getheader("mcp-session-id"), response.read()


def result_of(body):
    """The JSON-RPC message in a plain JSON or one-event SSE body."""
    text = body.decode()
    if text.startswith("{"):
        return json.loads(text)
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            return json.loads(line[5:])
    raise ValueError(f"no message in {text[:200]!r}")


def check(status, body, what):
    if status != 200:
        raise SystemExit(f"{what}: HTTP {status}: {body[:300]!r}")
    message = result_of(body)
    if "result" not in message:
        raise SystemExit(f"{what}: {message}")
    return message["result"]


def whoami_stateless(client, bearer):
    params = {"name": "whoami", "arguments": {}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {}}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    status, _, answer = client.request("POST", "/mcp", body, {
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "whoami",
        "Authorization": f"Bearer {bearer}"})
    check(status, answer, "whoami with a new token")


def token(client, client_id, secret):
    form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                   "client_id": client_id, "client_secret": secret})
    status, _, answer = client.request("POST", "/oauth/token", form, {
        "Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise SystemExit(f"token endpoint: HTTP {status}: {answer[:300]!r}")
    return json.loads(answer)["access_token"]


def session(client, key):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": LEGACY, "Authorization": f"Bearer {key}"}
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "churn", "version": "1"}}})
    status, session_id, answer = client.request("POST", "/mcp", init, headers)
    check(status, answer, "initialize")
    if not session_id:
        raise SystemExit("initialize: no Mcp-Session-Id")
    headers["Mcp-Session-Id"] = session_id
    done = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    status, _, answer = client.request("POST", "/mcp", done, headers)
    if status != 202:
        raise SystemExit(f"notifications/initialized: HTTP {status}: {answer[:300]!r}")
    call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "whoami", "arguments": {}}})
    status, _, answer = client.request("POST", "/mcp", call, headers)
    check(status, answer, "whoami in a session")
    status, _, answer = client.request("DELETE", "/mcp", None, headers)
    if status not in (200, 202, 204):
        raise SystemExit(f"DELETE session: HTTP {status}: {answer[:300]!r}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {pid}")


def main():
    base, pid, client_id, secret, key, rounds, tokens, sessions = sys.argv[1:9]
    client = Client(base)
    seen_tokens = seen_sessions = 0
    print(f"round 0 rss_kb={rss_kb(pid)} tokens=0 sessions=0", flush=True)
    for r in range(1, int(rounds) + 1):
        for _ in range(int(tokens)):
            whoami_stateless(client, token(client, client_id, secret))
        seen_tokens += int(tokens)
        for _ in range(int(sessions)):
            session(client, key)
        seen_sessions += int(sessions)
        print(f"round {r} rss_kb={rss_kb(pid)} tokens={seen_tokens} sessions={seen_sessions}",
              flush=True)


if __name__ == "__main__":
    main()
