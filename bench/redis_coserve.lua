-- HTTP endpoint for scripts/bench redis (bench/redis.sh): GET / does the
-- Redis calls of bench/redis_calls.lua (nginx.redis through coserve.ngx)
-- and answers with the value read, as nginx + ngx_lua does there.
--   coserve bench/redis_coserve.lua PORT REDIS_PORT
local http = require "coserve.http"
require("coserve.ngx").install()      -- the global `ngx` nginx.redis reads
package.path = "bench/?.lua;" .. package.path
local redis_calls = require "redis_calls"

local port, redis_port = tonumber(arg[1]), tonumber(arg[2])
assert(port and redis_port, "usage: redis_coserve.lua PORT REDIS_PORT")

local app = http.server{ host = "127.0.0.1", port = port }
local headers = { ["content-type"] = "text/plain" }
app:route("GET", "/", function(_, res)
  local value, err = redis_calls(redis_port)
  if not value then return res:send(502, headers, err) end
  res:send(200, headers, value)
end)
assert(app:start())
