-- wrk script: `tools/call whoami` with a different access token on each
-- request, in turn, from the file in GATEHOUSE_TOKENS (one per line), so
-- no validation can be reused. Every answer must be a 200 with a result.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},' ..
  '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "whoami"

local tokens = {}
for line in io.lines(os.getenv("GATEHOUSE_TOKENS")) do
  tokens[#tokens + 1] = line
end
local next_token = 0

request = function()
  next_token = next_token % #tokens + 1
  wrk.headers["Authorization"] = "Bearer " .. tokens[next_token]
  return wrk.format()
end

local answers = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "answers.lua")
local bad_total = answers.check(function(status, body)
  return status == 200 and string.find(body, '"structuredContent"', 1, true) ~= nil
end)

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f requests=%d errors=%d non2xx_or_bad=%d p50_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    bad_total(), latency:percentile(50), latency:percentile(99)))
end
