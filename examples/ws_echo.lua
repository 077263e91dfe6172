-- WebSocket echo: every message comes back, text as text, binary as binary.
--   scripts/coserve examples/ws_echo.lua [port]      (default 8082; 0 picks one)
local coserve = require "coserve"
local http = require "coserve.http"

local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8082 }

app:websocket("/echo", function(ws)
  while true do
    local message, kind = ws:receive()
    if not message then break end         -- "closed" (with code, reason), "timeout", ...
    ws:send(message, kind)
  end
end)

local ok, err = true
coserve.spawn(function() ok, err = app:start() end)
assert(ok, err)
print(("ws_echo on %s:%d"):format(app.host, app.port))
io.stdout:flush()
