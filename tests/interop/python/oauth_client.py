"""The Python MCP SDK's own OAuth client against Gatehouse's embedded
authorization server: discovery (401 -> protected resource metadata ->
AS metadata), dynamic registration, authorization code with PKCE and
`resource`, the `iss` check, a tool call, refresh with rotation, and
refresh-token reuse revoking the whole grant.

Usage: python oauth_client.py <mcp-url> <username> <password>
The user must have the reader role (whoami allowed, execute_code not).
"""

import asyncio
import sys
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from mcp.shared.exceptions import MCPError

from browser import Browser

REDIRECT_URI = "http://localhost:9/callback"  # never contacted


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


class MemoryStorage(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


async def session_calls(url, provider, body):
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)


async def main(url, username, password):
    browser = Browser(username, password)
    captured = {}
    issuer = url.rsplit("/mcp", 1)[0]

    async def redirect_handler(authorization_url):
        query = parse_qs(urlparse(authorization_url).query)
        check(query.get("code_challenge_method") == ["S256"], "the SDK sends a PKCE S256 challenge")
        check(query.get("resource") == [url], "the SDK names the MCP server as resource")
        location = await browser.authorize(authorization_url)
        check(location.startswith(REDIRECT_URI), "after login and consent the browser goes to the redirect URI")
        answer = parse_qs(urlparse(location).query)
        check(answer.get("iss") == [issuer], "the response carries iss (RFC 9207)")
        captured.update(
            code=answer["code"][0],
            state=answer.get("state", [None])[0],
            iss=answer.get("iss", [None])[0],
        )

    async def callback_handler():
        return AuthorizationCodeResult(**captured)

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="python-sdk-interop",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def first_session(session):
        tools = [t.name for t in (await session.list_tools()).tools]
        check("whoami" in tools and "execute_code" not in tools, f"the reader's tools are listed: {tools}")
        who = await session.call_tool("whoami", {})
        text = who.content[0].text
        check(username in text, f"whoami names the signed-in user: {text}")
        try:
            result = await session.call_tool("execute_code", {"code": "1+1"})
            denied = result.isError
        except MCPError:
            denied = True
        check(denied, "a tool outside the user's role is denied")

    await session_calls(url, provider, first_session)
    check(any("Sign in" in p.text for p in browser.pages), "the login page was shown")
    check(any("Allow" in p.text for p in browser.pages), "the consent page was shown")
    for page in browser.pages:
        check(page.headers.get("x-frame-options") == "DENY", "pages refuse framing (X-Frame-Options)")
        check("frame-ancestors 'none'" in page.headers.get("content-security-policy", ""),
              "pages refuse framing (CSP frame-ancestors)")

    first = await storage.get_tokens()
    check(first.refresh_token is not None, "a refresh token was issued")
    client = await storage.get_client_info()
    check(client.client_id.startswith("ghc_"), f"the SDK registered dynamically: {client.client_id}")

    # Make the SDK believe its access token expired: it must refresh.
    provider.context.token_expiry_time = 1

    async def second_session(session):
        who = await session.call_tool("whoami", {})
        check(username in who.content[0].text, "a call after refresh works")

    await session_calls(url, provider, second_session)
    second = await storage.get_tokens()
    check(second.access_token != first.access_token, "refresh issued a new access token")
    check(second.refresh_token != first.refresh_token, "refresh rotated the refresh token")

    # The spent refresh token comes back: the whole grant is revoked.
    async with httpx2.AsyncClient(timeout=30) as http:
        replay = await http.post(
            f"{issuer}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first.refresh_token,
                "client_id": client.client_id,
            },
        )
        check(replay.status_code == 400 and replay.json()["error"] == "invalid_grant",
              "a reused refresh token is refused")
        after = await http.post(
            url,
            headers={
                "Authorization": f"Bearer {second.access_token}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "tools/list",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}},
        )
        check(after.status_code == 401, "the reuse revoked the newest access token too")
        current = await http.post(
            f"{issuer}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": second.refresh_token,
                "client_id": client.client_id,
            },
        )
        check(current.status_code == 400, "and the newest refresh token")
    await browser.close()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
