"""A task grant and a human-approved call, with the official Python MCP SDK.

Usage: python task_client.py <mcp-url> <executor-key> <gatehouse-binary> <data-dir>

Checks, with a real MCP client, that:
  * the key exchanged (RFC 8693) for a task token of `outreach` lists only
    the grant's tools and is refused a tool outside the task;
  * send_email is refused with approval_required, an approval id and URL;
  * after `gatehouse approvals approve`, the SDK's call with the operation
    token in `meta` runs once, and the same call again is refused.
Exits non-zero with a message on the first failed check.
"""

import asyncio
import json
import subprocess
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

META = "io.gatehouse/operation_token"
EMAIL = {"to": "bob@example.com", "subject": "Hi", "body": "Report attached."}


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def task_token(base, key):
    response = httpx2.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": key,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "task": "outreach",
        },
    )
    check(response.status_code == 200, f"token exchange answers 200 ({response.status_code})")
    body = response.json()
    check(body["authorization_details"][0]["task"] == "outreach", "the task token covers outreach")
    return body["access_token"]


async def refused(session, name, arguments, meta=None):
    try:
        result = await session.call_tool(name, arguments, meta=meta)
    except MCPError as error:
        return error.error.data or {}
    check(False, f"{name} was not refused: {result}")


async def run(url, key, binary, data_dir):
    base = url.rsplit("/mcp", 1)[0]
    token = task_token(base, key)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                names = sorted(t.name for t in (await session.list_tools()).tools)
                check(names == ["search_database", "send_email", "whoami"], f"only the grant's tools: {names}")
                outside = await refused(session, "read_file", {"path": "x.txt"})
                check(outside.get("reason") == "outside_task", f"read_file is outside the task: {outside}")
                pending = await refused(session, "send_email", EMAIL)
                check(pending.get("reason") == "approval_required", f"send_email needs approval: {pending}")
                check(pending["approval_url"].endswith(pending["approval_id"]), "the refusal names the approval page")
                approved = subprocess.run(
                    [binary, "approvals", "approve", pending["approval_id"], "--data-dir", data_dir, "--json"],
                    check=True, capture_output=True, text=True,
                )
                operation_token = json.loads(approved.stdout)["operation_token"]
                ran = await session.call_tool("send_email", EMAIL, meta={META: operation_token})
                check(not ran.is_error, "the approved call runs with the operation token in _meta")
                again = await refused(session, "send_email", EMAIL, meta={META: operation_token})
                check(again.get("reason") == "operation_token_used", f"the token works once: {again}")


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:5]))
