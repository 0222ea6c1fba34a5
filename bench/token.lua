-- wrk script: client-credentials token requests. The client id and secret
-- come from GATEHOUSE_CLIENT_ID / GATEHOUSE_CLIENT_SECRET.
local id = os.getenv("GATEHOUSE_CLIENT_ID") or ""
local secret = os.getenv("GATEHOUSE_CLIENT_SECRET") or ""
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&client_id=" .. id .. "&client_secret=" .. secret
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

-- Counted in each thread's own Lua state (response() runs there); done()
-- runs in wrk's main state and adds them up through setup()'s handles (a
-- local read in done() would always be 0).
bad = 0
first_bad = nil
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
local function bad_total(summary)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("bad") or 0)
    local first = thread:get("first_bad")
    if first ~= nil then io.stderr:write("first bad response: " .. first .. "\n") end
  end
  return total
end
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"access_token"', 1, true) then
    bad = bad + 1
    if first_bad == nil then first_bad = status .. " " .. string.sub(body, 1, 300) end
  end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f requests=%d errors=%d non2xx_or_bad=%d p50_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    bad_total(summary), latency:percentile(50), latency:percentile(99)))
end
