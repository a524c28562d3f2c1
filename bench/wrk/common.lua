-- Shared by the karajo wrk scripts (bench/http_load.py): per-thread status
-- counters and a done() that prints one machine-readable line.
--
-- wrk runs the script once in the main Lua state (setup, done) and once per
-- thread (init, request, response); the threads' counters are read back in
-- done() through thread:get().

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

-- counters of this thread (globals, so thread:get can read them)
n200, n403, n429, nother = 0, 0, 0, 0

function count_status(status)
   if status == 200 then
      n200 = n200 + 1
   elseif status == 429 then
      n429 = n429 + 1
   elseif status == 403 then
      n403 = n403 + 1
   else
      nother = nother + 1
      if nother <= 3 then
         io.stderr:write("karajo-bench: unexpected status " .. status .. "\n")
      end
   end
end

function response(status, headers, body)
   count_status(status)
end

function done(summary, latency, requests)
   local c = {n200 = 0, n403 = 0, n429 = 0, nother = 0}
   for _, t in ipairs(threads) do
      for k, _ in pairs(c) do
         c[k] = c[k] + (t:get(k) or 0)
      end
   end
   local e = summary.errors
   -- latencies are in microseconds
   io.write(string.format(
      "KARAJO-BENCH {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f," ..
      "\"s200\":%d,\"s403\":%d,\"s429\":%d,\"sother\":%d," ..
      "\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_timeout\":%d}\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      c.n200, c.n403, c.n429, c.nother,
      e.connect, e.read, e.write, e.timeout))
end
