-- POST a pool of pre-signed webhook payloads, each sent once.
--
--   wrk ... -s bench/wrk/signed.lua URL -- POOLFILE [HEADER]
--
-- POOLFILE has one request per line: "<hex signature> <json body>"
-- (made by bench/http_load.py: wrk's Lua has no HMAC).  Thread i of n takes
-- lines i, i+n, i+2n, ... so no two requests carry the same payload (the
-- replay guard would refuse a repeat); it wraps around only when its share
-- runs out, and those repeats then show up as 403s.
-- KARAJO_WRK_DIR must name this directory (bench/http_load.py sets it).
dofile((os.getenv("KARAJO_WRK_DIR") or "bench/wrk") .. "/common.lua")

local pool = {}
local pos = 0

function init(args)
   local file = args[1]
   local header = args[2] or "X-Karajo-Sign"
   local nthreads = tonumber(args[3] or "1")
   local f = assert(io.open(file, "r"))
   local i = 0
   for line in f:lines() do
      if i % nthreads == tid then
         local sig, body = line:match("^(%S+) (.*)$")
         local headers = {
            ["Content-Type"] = "application/json",
            [header] = sig,
         }
         -- pre-format the whole request: request() only hands it out
         pool[#pool + 1] = wrk.format("POST", nil, headers, body)
      end
      i = i + 1
   end
   f:close()
   if #pool == 0 then
      error("empty pool " .. file)
   end
end

function request()
   pos = pos + 1
   if pos > #pool then
      pos = 1
   end
   return pool[pos]
end
