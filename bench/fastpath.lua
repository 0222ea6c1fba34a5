-- wrk script of bench/fastpath.sh: one stateless MCP 2026-07-28
-- `tools/call whoami` per request (the same request as bench/whoami.lua),
-- sent to any of the three servers (the JSON-RPC echo, bare rmcp,
-- Gatehouse), every answer checked.
--
-- Environment:
--   GATEHOUSE_KEY    the API key (absent or empty: no Authorization header)
--   FASTPATH_EXPECT  a string every answer's body must hold (default
--                    `"result":`, a JSON-RPC result; Gatehouse's whoami is
--                    checked for `"structuredContent"`)
--   FASTPATH_RATE    paces the requests to this many per second in all
--                    (run wrk with -t1), instead of as fast as the server
--                    answers: wrk has no constant-rate mode, so `delay()`
--                    (wrk's SCRIPTING) holds each connection back until the
--                    next slot of a fixed schedule shared by all of them.
--                    Latency counts from when the request is written, not
--                    from its slot: a request that found every connection
--                    busy is not charged the wait (no coordinated-omission
--                    correction; the achieved rate shows when that happened).
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
local expect = os.getenv("FASTPATH_EXPECT")
if not expect or expect == "" then
  expect = '"result":'
end

local rate = tonumber(os.getenv("FASTPATH_RATE") or "")
if rate and rate > 0 then
  -- wrk is built with LuaJIT: its FFI reads the monotonic clock (os.clock
  -- is CPU time, os.time whole seconds).
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } fastpath_timespec;
    int clock_gettime(int clock, fastpath_timespec *ts);
  ]]
  local ts = ffi.new("fastpath_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local slot = nil
  -- Called before each request of any connection (wrk's timers count whole
  -- milliseconds; the schedule keeps the average exact).
  delay = function()
    local t = now_ms()
    -- Behind by more than 50 ms (every connection was busy): start the
    -- schedule over rather than send a burst to catch up.
    if slot == nil or slot < t - 50 then
      slot = t
    end
    slot = slot + interval
    local d = slot - t
    if d <= 0 then
      return 0
    end
    return math.floor(d + 0.5)
  end
end

local answers = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "answers.lua")
local bad_total = answers.check(function(status, body)
  return status == 200 and string.find(body, expect, 1, true) ~= nil
    and not string.find(body, '"isError":true', 1, true)
end)

done = function(summary, latency, requests)
  -- Machine-readable last line for fastpath.sh. wrk counts non-2xx/3xx
  -- answers in errors.status.
  io.write(string.format(
    "RESULT rps=%.1f requests=%d errors=%d non2xx_or_bad=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    bad_total() + summary.errors.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
