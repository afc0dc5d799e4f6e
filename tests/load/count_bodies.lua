-- For wrk -s: counts responses by status and by the first line of their body (hello's --text, which
-- the load tests set to the instance's name), so a test can tell which instances answered. wrk runs
-- each thread in a Lua state of its own: done() collects every thread's tables and prints
-- "status <code> <n>" and "body <first line> <n>" lines after wrk's report.
--
-- LOAD_WRK_DELAY_MS=N in the environment paces each connection: N ms before each request (wrk
-- calls delay() only if the script defines it, which it learns when the script is loaded).
local threads = {}

local pause_ms = tonumber(os.getenv("LOAD_WRK_DELAY_MS") or "")
if pause_ms then
  function delay()
    return pause_ms
  end
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local first = body and body:match("^[^\n]*") or ""
  bodies[first] = (bodies[first] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\n", code, n))
    end
    for first, n in pairs(thread:get("bodies")) do
      io.write(string.format("body %s %d\n", first, n))
    end
  end
end
