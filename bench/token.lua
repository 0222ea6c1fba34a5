-- wrk script: client-credentials token requests. The client id and secret
-- come from GATEHOUSE_CLIENT_ID / GATEHOUSE_CLIENT_SECRET.
local id = os.getenv("GATEHOUSE_CLIENT_ID") or ""
local secret = os.getenv("GATEHOUSE_CLIENT_SECRET") or ""
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&client_id=" .. id .. "&client_secret=" .. secret
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local answers = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "answers.lua")
local bad_total = answers.check(function(status, body)
  return status == 200 and string.find(body, '"access_token"', 1, true) ~= nil
end)

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f requests=%d errors=%d non2xx_or_bad=%d p50_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    bad_total(), latency:percentile(50), latency:percentile(99)))
end
