"""Drives Gatehouse with the official Python MCP SDK over Streamable HTTP.

Usage: python client.py <mcp-url> <admin-key> <reader-key>

Checks, with a real MCP client, that:
  * an admin key lists and calls tools (Authorization: Bearer header);
  * a reader key (sent as X-API-Key) sees only its tools, can call an
    allowed one, and gets a named denial for a tool outside its role;
  * a request without a key is refused with 401.
Exits non-zero with a message on the first failed check.
"""

import asyncio
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")



async def run_as(url, headers, body):
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                return await body(session, init)


async def admin_checks(session, init):
    check(init.server_info.name == "gatehouse", f"server identifies as gatehouse ({init.protocol_version})")
    tools = await session.list_tools()
    names = sorted(t.name for t in tools.tools)
    check(len(names) == 9, f"admin sees all nine tools: {names}")
    who = await session.call_tool("whoami", {})
    check(not who.is_error, "admin calls whoami")
    check(who.structured_content["roles"] == ["admin"], "whoami reports the admin role")
    written = await session.call_tool("write_file", {"path": "interop/hello.txt", "content": "from python"})
    check(not written.is_error, "admin writes a file")


async def reader_checks(session, init):
    tools = await session.list_tools()
    names = sorted(t.name for t in tools.tools)
    check(names == ["read_file", "search_database", "whoami"], f"reader sees only its tools: {names}")
    read = await session.call_tool("read_file", {"path": "interop/hello.txt"})
    check(not read.is_error and read.content[0].text == "from python", "reader reads the admin's file")
    found = await session.call_tool("search_database", {"query": "a", "limit": 2})
    check(not found.is_error, "reader searches the dataset")
    try:
        denied = await session.call_tool("execute_code", {"expression": "1 + 1"})
    except MCPError as error:
        data = error.data or {}
        check(data.get("reason") == "role_not_allowed", f"denial names its reason: {error.message}")
    else:
        check(False, f"reader's execute_code must be denied, got {denied}")


async def main():
    url, admin_key, reader_key = sys.argv[1], sys.argv[2], sys.argv[3]
    await run_as(url, {"Authorization": f"Bearer {admin_key}"}, admin_checks)
    await run_as(url, {"X-API-Key": reader_key}, reader_checks)
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                   headers={"Accept": "application/json, text/event-stream"})
        check(response.status_code == 401, "a request without a key gets 401")
        check("resource_metadata=" in response.headers.get("www-authenticate", ""), "401 names the resource metadata")
    print("python interop: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
