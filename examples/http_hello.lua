-- The smallest HTTP app: GET /hello/NAME.
--   scripts/coserve examples/http_hello.lua [port]   (default 8080; 0 picks one)
local coserve = require "coserve"
local http = require "coserve.http"

local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8080 }

app:route("GET", "/hello/:name", function(req, res)
  res:send(200, { ["content-type"] = "text/plain" }, "hello " .. req.params.name .. "\n")
end)

local ok, err = true
coserve.spawn(function() ok, err = app:start() end)
assert(ok, err)
print(("http on %s:%d"):format(app.host, app.port))
io.stdout:flush()
