"""A small MCP server (official Python SDK) that misbehaves on request.

Used by the gatehouse-upstream tests as a real upstream, over stdio or
Streamable HTTP:

    server.py stdio [--legacy] [--tools N] [--page-size K] [--definitions FILE]
    server.py http PORT_FILE [--legacy] [--resumable] [--tools N] [--page-size K] [--definitions FILE]

`http` binds 127.0.0.1 on a free port and writes the port to PORT_FILE.
`--legacy` removes `server/discover`, so the server behaves like a
2025-11-25 one (initialize + sessions). `--tools N` adds N filler tools and
`--page-size K` makes tools/list return K tools per page. `--definitions
FILE` is read at every tools/list when it exists: a JSON object
{tool: {field: value}} whose fields (wire names: description, inputSchema,
...) replace the listed ones, as a server changing its tools after review
would. `--cancel-signal` lets a cancelled call run to its end (unanswered), as a
server that does not stop work on cancellation would. `--resumable` (http) keeps the events of each response stream, so
that the tool `pause` can close its stream mid-call (SEP-1699) and the
client resumes it with Last-Event-ID.
"""

import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys

from typing import Annotated

from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp.server.streamable_http import EventMessage, EventStore
from mcp_types import (
    Completion,
    EmptyResult,
    ListToolsResult,
    SamplingMessage,
    SubscribeRequestParams,
    TextContent,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel

parser = argparse.ArgumentParser()
parser.add_argument("transport", choices=["stdio", "http"])
parser.add_argument("port_file", nargs="?")
parser.add_argument("--legacy", action="store_true")
parser.add_argument("--resumable", action="store_true")
parser.add_argument("--tools", type=int, default=0)
parser.add_argument("--page-size", type=int, default=0)
# Listed only (never registered, so cheap): N more tools in tools/list.
parser.add_argument("--listed-only", type=int, default=0)
parser.add_argument("--definitions")
parser.add_argument("--cancel-signal", action="store_true")
# While this file exists, tools/list (resources/subscribe) does not answer.
parser.add_argument("--hang-listings-while")
# No resources at all (two of these servers behind one gateway would
# otherwise both claim the same URIs).
parser.add_argument("--no-resources", action="store_true")
parser.add_argument("--hang-subscriptions-while")
options = parser.parse_args()

if options.cancel_signal:
    # A server that, told a call is cancelled, finishes it anyway and (as
    # the spec asks) never answers it: the SDK's "signal" cancel mode.
    from mcp.shared import jsonrpc_dispatcher

    _dispatcher_init = jsonrpc_dispatcher.JSONRPCDispatcher.__init__

    def _signal_mode(self, *args, **kwargs):
        kwargs["peer_cancel_mode"] = "signal"
        _dispatcher_init(self, *args, **kwargs)

    jsonrpc_dispatcher.JSONRPCDispatcher.__init__ = _signal_mode


def overridden(tools):
    if not options.definitions or not os.path.exists(options.definitions):
        return tools
    with open(options.definitions) as f:
        overrides = json.load(f)
    return [
        type(tool).model_validate(
            {**tool.model_dump(by_alias=True, exclude_none=True), **overrides.get(tool.name, {})}
        )
        for tool in tools
    ]


class PagedServer(MCPServer):
    async def _handle_list_tools(self, ctx, params):
        while options.hang_listings_while and os.path.exists(options.hang_listings_while):
            await asyncio.sleep(0.05)
        # Counted by tests, as the resource listings are (below).
        sys.stderr.write("upstream listed its tools\n")
        sys.stderr.flush()
        tools = overridden(await self.list_tools())
        if options.listed_only:
            template = tools[0]
            tools = tools + [
                template.model_copy(update={"name": f"listed_{i:05d}"})
                for i in range(options.listed_only)
            ]
        if options.page_size <= 0:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + options.page_size
        return ListToolsResult(
            tools=tools[start:end],
            next_cursor=str(end) if end < len(tools) else None,
        )

    async def _handle_list_resources(self, ctx, params):
        # On stderr (which the gateway logs), so a test can count how often
        # the gateway lists the resources.
        sys.stderr.write("upstream listed its resources\n")
        sys.stderr.flush()
        return await super()._handle_list_resources(ctx, params)


server = PagedServer("gatehouse-test-upstream")


@server.tool()
def echo(text: str) -> str:
    """Returns its argument."""
    return text


@server.tool()
def env_dump() -> dict:
    """The process environment, to prove what the gateway passed."""
    return dict(os.environ)


@server.tool()
def request_headers(ctx: Context) -> dict:
    """The HTTP headers this request arrived with (a spy: what did the
    gateway send?). Empty over stdio."""
    headers = {k.lower(): v for k, v in dict(ctx.headers or {}).items()}
    # Gatehouse replaces its own credential in what comes back; its digest
    # says which credential arrived.
    if "authorization" in headers:
        digest = hashlib.sha256(headers["authorization"].encode()).hexdigest()
        headers["authorization_sha256"] = digest
    return headers


@server.tool()
def request_meta(ctx: Context) -> dict:
    """The request's _meta as it arrived (a spy: what did the gateway add?)."""
    meta = ctx.request_context.meta
    if meta is None:
        return {}
    if hasattr(meta, "model_dump"):
        return meta.model_dump(by_alias=True, exclude_none=True)
    return dict(meta)


def note() -> str:
    """A resource the gateway routes by its URI."""
    return "the team note"


def item(n: str) -> str:
    """Any number of resources (one template), for limits on watching them."""
    return f"item {n}"


if not options.no_resources:
    server.resource("memo://team/note")(note)
    server.resource("memo://items/{n}")(item)


# 2025-11-25 `resources/subscribe`: the URIs the client subscribed to.
subscribed = set()


async def subscribe(ctx, params: SubscribeRequestParams) -> EmptyResult:
    while options.hang_subscriptions_while and os.path.exists(options.hang_subscriptions_while):
        await asyncio.sleep(0.05)
    subscribed.add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx, params: UnsubscribeRequestParams) -> EmptyResult:
    subscribed.discard(str(params.uri))
    return EmptyResult()


server._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
server._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


@server.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Says that the resource `uri` changed, to whoever subscribed to it."""
    if uri in subscribed:
        await ctx.session.send_resource_updated(uri)
    try:
        await ctx.notify_resource_updated(uri)
    except Exception as exc:  # noqa: BLE001 - best effort, either era
        sys.stderr.write(f"notify_resource_updated: {exc}\n")
    return "subscribed" if uri in subscribed else "not subscribed"


@server.prompt()
def summarize(topic: str) -> str:
    """A prompt with one argument."""
    return f"Summarize {topic} in three sentences."


@server.completion()
async def complete(ref, argument, context):
    """Completes any argument: what was typed, then "-suggested" (so a
    test sees which value reached the server)."""
    return Completion(values=[f"{argument.value}-suggested"])


@server.tool()
async def sleep_forever() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "woke up"


stubborn_released = asyncio.Event()
stubborn_asked = asyncio.Event()


@server.tool()
async def stubborn(ctx: Context) -> str:
    """Waits for release_stubborn, then asks the client's model (sampling)
    whatever became of the call, and answers with what it heard."""
    await stubborn_released.wait()
    try:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text="a question of the stubborn call"))],
            max_tokens=50,
            related_request_id=ctx.request_id,
        )
        heard = f"model said: {result.content.text}"
    except Exception as exc:  # noqa: BLE001 - the refusal is the expected outcome
        heard = f"refused: {exc}"
    finally:
        stubborn_asked.set()
    return heard


@server.tool()
async def release_stubborn() -> str:
    """Lets stubborn go on; answers once stubborn has had its answer."""
    stubborn_released.set()
    await stubborn_asked.wait()
    return "released"


@server.tool()
def crash() -> str:
    """Exits the process in the middle of the call."""
    sys.stderr.write("crashing on purpose\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def big(size: int) -> str:
    """Returns a text of `size` bytes."""
    return "x" * size


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


def added() -> str:
    """A tool that appears when add_tool is called."""
    return "added"


@server.tool()
async def add_tool(ctx: Context) -> str:
    """Adds the tool `added` and announces the change."""
    server.add_tool(added)
    try:
        await ctx.notify_tools_changed()
    except Exception as exc:  # noqa: BLE001 - best effort, either era
        sys.stderr.write(f"notify_tools_changed: {exc}\n")
    try:
        await ctx.session.send_tool_list_changed()
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write(f"send_tool_list_changed: {exc}\n")
    return "ok"


@server.tool()
async def flood_changes(count: int, ctx: Context) -> str:
    """Announces a tools change `count` times, 10 ms apart: a hostile
    upstream keeping the gateway re-listing it."""
    for _ in range(count):
        try:
            await ctx.session.send_tool_list_changed()
        except Exception as exc:  # noqa: BLE001
            sys.stderr.write(f"send_tool_list_changed: {exc}\n")
        await asyncio.sleep(0.01)
    return "ok"


@server.tool()
async def progress_steps(steps: int, ctx: Context) -> str:
    """Reports `steps` progress notifications, then answers."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
    return "done"


@server.tool()
async def log_lines(ctx: Context) -> str:
    """Logs one message at debug, one at info and one at error."""
    await ctx.debug("a debug line")
    await ctx.info("an info line")
    await ctx.error("an error line")
    return "logged"


@server.tool()
async def ask_model(question: str, ctx: Context) -> str:
    """Asks the client's model (sampling) and returns its answer."""
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=question))],
        max_tokens=50,
        related_request_id=ctx.request_id,
    )
    return f"model said: {result.content.text}"


class Name(BaseModel):
    name: str


@server.tool()
async def ask_user(ctx: Context) -> str:
    """Asks the client's user for a name (elicitation)."""
    result = await ctx.elicit("What is your name?", Name)
    name = result.data.name if getattr(result, "data", None) else ""
    return f"{result.action}: {name}"


def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


@server.tool()
async def greet(name: Annotated[Name, Resolve(ask_name)]) -> str:
    """Greets the user, asking for their name in the caller's era: mid-call
    (2025-11-25) or with an input-required result (2026-07-28)."""
    return f"hello, {name.name}"


for i in range(options.tools):
    def filler(i=i) -> str:
        return str(i)

    server.add_tool(filler, name=f"filler_{i:03d}", description=f"filler {i}")

if options.legacy:
    server._lowlevel_server._request_handlers.pop("server/discover", None)


class MemoryEventStore(EventStore):
    """Every event of every stream, in order (a test server lives briefly)."""

    def __init__(self):
        self.events = []  # (event id, stream id, message)

    async def store_event(self, stream_id, message):
        event_id = str(len(self.events))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        known = [i for i, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id]
        if not known:
            return None
        stream = self.events[known[0]][1]
        for event_id, stream_id, message in self.events[known[0] + 1 :]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


@server.tool()
async def pause(ctx: Context) -> str:
    """Closes this call's response stream, then answers (on the resumed stream)."""
    await ctx.close_sse_stream()
    await asyncio.sleep(0.5)
    return "answered after the pause"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if options.transport == "stdio":
    server.run("stdio")
else:
    port = free_port()
    with open(options.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(options.port_file + ".tmp", options.port_file)
    if options.resumable:
        server.run(
            "streamable-http",
            host="127.0.0.1",
            port=port,
            event_store=MemoryEventStore(),
            retry_interval=100,
        )
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)
