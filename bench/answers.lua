-- The answer check shared by the wrk scripts of bench/: each script loads
-- it (from its own directory, whatever the working directory) and calls
-- `check(good)` with a function that says whether an answer is right.
--
-- Bad answers are counted in each thread's own Lua state, where response()
-- runs; done() runs in wrk's main state, so the total is added up through
-- the threads' handles that setup() keeps (a plain variable read in done()
-- would always be 0).
local answers = {}

-- Defines wrk's setup() and response(); returns bad_total() for done(),
-- which also prints the first bad answer of each thread to stderr.
function answers.check(good)
  bad = 0
  first_bad = nil
  local threads = {}
  setup = function(thread)
    table.insert(threads, thread)
  end
  response = function(status, headers, body)
    if not good(status, body) then
      bad = bad + 1
      if first_bad == nil then first_bad = status .. " " .. string.sub(body, 1, 300) end
    end
  end
  return function()
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + (thread:get("bad") or 0)
      local first = thread:get("first_bad")
      if first ~= nil then io.stderr:write("first bad response: " .. first .. "\n") end
    end
    return total
  end
end

return answers
