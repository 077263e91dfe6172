-- Plaintext "Hello, World!" for scripts/bench http.
-- usage: coserve bench/http_coserve.lua PORT
local http = require "coserve.http"

-- BENCH_ACCESS_LOG=PATH (and BENCH_ACCESS_LOG_FORMAT=json): the same with
-- an access log, to measure its cost (docs/benchmarks.md, docs/http.md).
local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8080,
  access_log = os.getenv("BENCH_ACCESS_LOG"),
  access_log_format = os.getenv("BENCH_ACCESS_LOG_FORMAT") }
local headers = { ["content-type"] = "text/plain" }
app:route("GET", "/", function(_, res)
  res:send(200, headers, "Hello, World!")
end)
-- BENCH_METRICS=1: with http.metrics counting every request.
if os.getenv("BENCH_METRICS") then app:route("GET", "/metrics", http.metrics(app)) end
assert(app:start())
