-- The app of scripts/cluster-test: a hello route and the /healthz route a
-- load balancer checks, which turns unhealthy (503) as soon as a graceful
-- shutdown begins. arg[1], arg[2]: the address and port to listen on.
local coserve = require "coserve"
local http = require "coserve.http"

local app = http.server{ host = arg[1] or "127.0.0.1", port = tonumber(arg[2]) or 8080 }
app:route("GET", "/", function(_, res)
  res:send(200, { ["content-type"] = "text/plain" }, "hello from " .. (arg[3] or "?") .. "\n")
end)
app:route("GET", "/healthz", function(_, res)
  res:send(coserve.exiting() and 503 or 200, { ["content-type"] = "text/plain" }, "")
end)
assert(app:start())
