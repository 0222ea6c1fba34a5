"""Connect the official Python MCP SDK to Gatehouse with OAuth.

The SDK discovers Gatehouse's authorization server, registers itself,
and this script opens your browser so you can sign in and allow access.
The browser then returns to a one-shot listener on 127.0.0.1, and the
script lists the tools you may use and calls `whoami`.

    python3 -m venv .venv && .venv/bin/pip install 'mcp==2.3.0'
    .venv/bin/python examples/python_oauth_client.py http://127.0.0.1:8787/mcp [STATE_FILE]

The registration and the tokens are kept in STATE_FILE (default
~/.config/gatehouse/python-example.json, readable only by you), as a real
client keeps them. A second run reuses the access token while it is valid
(15 minutes) and opens no browser. After that it signs in again with the
same registration and the same loopback port, so Gatehouse remembers your
consent (for a public client, consent is remembered only for the exact
redirect URI it was given for): a browser that is still signed in returns
at once. Delete the file to start over.
"""

import asyncio
import json
import os
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

DEFAULT_STATE = os.path.join(
    os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
    "gatehouse",
    "python-example.json",
)


class FileStorage(TokenStorage):
    """The registration, the tokens and the callback port, in one JSON file
    that only its owner can read (it holds a refresh token)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.state = json.load(f)
        except FileNotFoundError:
            self.state = {}

    def _save(self):
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=2)
        os.replace(temporary, self.path)

    @property
    def port(self):
        return self.state.get("callback_port", 0)

    def set_port(self, port):
        self.state["callback_port"] = port
        self._save()

    async def get_tokens(self):
        tokens = self.state.get("tokens")
        return OAuthToken.model_validate(tokens) if tokens else None

    async def set_tokens(self, tokens):
        self.state["tokens"] = tokens.model_dump(mode="json", exclude_none=True)
        self._save()

    async def get_client_info(self):
        info = self.state.get("client_info")
        return OAuthClientInformationFull.model_validate(info) if info else None

    async def set_client_info(self, client_info):
        self.state["client_info"] = client_info.model_dump(mode="json", exclude_none=True)
        self._save()


class Callback:
    """Waits on a loopback port (RFC 8252 §7.3) for the browser to come back.
    It asks for the port of the last run, so the redirect URI stays the same."""

    def __init__(self, port):
        self.result = {}
        self.done = threading.Event()
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = parse_qs(urlparse(self.path).query)
                callback.result = {k: v[0] for k, v in query.items()}
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                self.wfile.write(b"Signed in. You can close this window.\n")
                callback.done.set()

            def log_message(self, *args):
                pass

        try:
            self.server = HTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.redirect_uri = f"http://127.0.0.1:{self.server.server_port}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def wait(self):
        await asyncio.get_running_loop().run_in_executor(None, self.done.wait, 300)
        self.server.shutdown()
        if "error" in self.result:
            raise SystemExit(f"authorization failed: {self.result['error']}")
        return AuthorizationCodeResult(
            code=self.result["code"], state=self.result.get("state"), iss=self.result.get("iss")
        )


async def main(url, state_file):
    storage = FileStorage(state_file)
    callback = Callback(storage.port)
    storage.set_port(callback.server.server_port)

    async def open_browser(authorization_url):
        print(f"Opening your browser to sign in:\n  {authorization_url}")
        if not webbrowser.open(authorization_url):
            print("Could not open a browser; open the address above yourself.")

    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="Gatehouse Python example",
            redirect_uris=[callback.redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=open_browser,
        callback_handler=callback.wait,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                tools = await session.list_tools()
                print("Tools you may call:", ", ".join(t.name for t in tools.tools))
                who = await session.call_tool("whoami", {})
                print("whoami:", json.dumps(who.structured_content or who.content[0].text))


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8787/mcp",
            sys.argv[2] if len(sys.argv) > 2 else DEFAULT_STATE,
        )
    )
