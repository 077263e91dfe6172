-- Plaintext "Hello, World!" for scripts/bench http.
-- usage: coserve bench/http_coserve.lua PORT
local http = require "coserve.http"

local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8080 }
local headers = { ["content-type"] = "text/plain" }
app:route("GET", "/", function(_, res)
  res:send(200, headers, "Hello, World!")
end)
assert(app:start())
