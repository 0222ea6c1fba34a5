-- wrk script for bench/gateway.sh: MCP 2025-11-25 `tools/call echo` inside
-- sessions opened beforehand (bench/mcp_sessions.py), one session per request
-- in turn, each request with its own JSON-RPC id; or (GW_SESSIONS=stateless)
-- MCP 2026-07-28 requests without a session, each carrying its protocol
-- version and capabilities in `_meta` and the Mcp-Method/Mcp-Name headers.
--   GW_SESSIONS  Mcp-Session-Id values, separated by spaces, or "stateless"
--   GW_TOOL      the tool's name on this path (echo, bench__echo, bench/echo)
--   GW_KEY       the bearer credential (absent or empty: no Authorization)
local sessions = {}
for s in string.gmatch(os.getenv("GW_SESSIONS") or "", "%S+") do
  sessions[#sessions + 1] = s
end
if #sessions == 0 then
  io.stderr:write("GW_SESSIONS is empty\n")
  os.exit(2)
end
local stateless = sessions[1] == "stateless"
local tool = os.getenv("GW_TOOL") or "echo"
local marker = "gatehouse-bench-echo"
local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["MCP-Protocol-Version"] = "2025-11-25",
}
local meta = ""
if stateless then
  headers["MCP-Protocol-Version"] = "2026-07-28"
  headers["Mcp-Method"] = "tools/call"
  headers["Mcp-Name"] = tool
  meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{}}'
end
local key = os.getenv("GW_KEY")
if key and key ~= "" then
  headers["Authorization"] = "Bearer " .. key
end
local body_format = '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"' .. tool ..
  '","arguments":{"text":"' .. marker .. '"}' .. meta .. '}}'
local n = 0

request = function()
  n = n + 1
  if not stateless then
    headers["Mcp-Session-Id"] = sessions[(n % #sessions) + 1]
  end
  return wrk.format("POST", nil, headers, string.format(body_format, n))
end

-- Correct only when: HTTP 200, a JSON-RPC result (plain JSON or one SSE
-- event), the echoed text in it, and no error or isError = true.
local answers = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "answers.lua")
local bad_total = answers.check(function(status, body)
  return status == 200
    and string.find(body, '"result"', 1, true) ~= nil
    and string.find(body, '"text":"' .. marker .. '"', 1, true) ~= nil
    and not string.find(body, '"isError":true', 1, true)
    and not string.find(body, '"error":{', 1, true)
end)

done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT rps=%.1f requests=%d errors=%d non2xx_or_bad=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
      + summary.errors.status,
    bad_total(), latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
