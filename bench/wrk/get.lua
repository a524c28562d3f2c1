-- GET wrk's URL path; counts statuses and prints percentiles (common.lua).
-- KARAJO_WRK_DIR must name this directory (bench/http_load.py sets it).
dofile((os.getenv("KARAJO_WRK_DIR") or "bench/wrk") .. "/common.lua")

wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
if os.getenv("KARAJO_WRK_GZIP") then
   wrk.headers["Accept-Encoding"] = "gzip"
end
