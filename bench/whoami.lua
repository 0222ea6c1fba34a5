-- wrk script: one stateless MCP 2026-07-28 `tools/call whoami` per request.
-- The API key comes from the GATEHOUSE_KEY environment variable (absent: no
-- Authorization header, for the auth-off arm).
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},' ..
  '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "whoami"
local key = os.getenv("GATEHOUSE_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

local answers = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "answers.lua")
local bad_total = answers.check(function(status, body)
  return status == 200 and string.find(body, '"structuredContent"', 1, true) ~= nil
end)

done = function(summary, latency, requests)
  -- Machine-readable last line for run.sh.
  io.write(string.format("RESULT rps=%.1f requests=%d errors=%d non2xx_or_bad=%d p50_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    bad_total(), latency:percentile(50), latency:percentile(99)))
end
