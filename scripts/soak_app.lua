-- The server scripts/soak runs its mixed load against: a line echo server
-- and an HTTP app with WebSocket, in one process (or in each worker of
-- `coserve -w 2`).
--   coserve scripts/soak_app.lua ECHO_PORT HTTP_PORT
--
--   echo   every line comes back
--   GET /       "hello\n"
--   POST /echo  the request body comes back
--   GET /big    4 MiB, for the slow readers (one string, built once, so a
--               response allocates nothing per request)
--   /ws         WebSocket echo, text as text, binary as binary
local coserve = require "coserve"
local http = require "coserve.http"

local echo_port, http_port = tonumber(arg[1]), tonumber(arg[2])
assert(echo_port and http_port, "usage: soak_app.lua ECHO_PORT HTTP_PORT")

local BIG = string.rep("0123456789abcdef", 4 * 1024 * 1024 / 16)
local TEXT = { ["content-type"] = "text/plain" }

local echo = coserve.server{ host = "127.0.0.1", port = echo_port }
echo:handle(function(conn)
  while true do
    local line = conn:receive("*l")
    if not line then return end
    if not conn:send(line .. "\n") then return end
  end
end)

local app = http.server{ host = "127.0.0.1", port = http_port }
app:route("GET", "/", function(_, res) res:send(200, TEXT, "hello\n") end)
app:route("GET", "/big", function(_, res) res:send(200, TEXT, BIG) end)
app:route("POST", "/echo", function(req, res)
  local body, err = req:body()
  if not body then return res:send(400, TEXT, err .. "\n") end
  res:send(200, TEXT, body)
end)
app:websocket("/ws", function(ws)
  while true do
    local message, kind = ws:receive()
    if not message then return end
    if not ws:send(message, kind) then return end
  end
end)

local ok, err = true
coserve.spawn(function() ok, err = echo:start() end)
assert(ok, err)
coserve.spawn(function() ok, err = app:start() end)
assert(ok, err)
coserve.log("info", ("soak app: echo on %d, http on %d"):format(echo.port, app.port))
