-- Line echo server: every line a client sends comes back.
--   scripts/coserve examples/echo.lua [port]      (default 9501; 0 picks one)
local coserve = require "coserve"

local server = coserve.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 9501 }

server:handle(function(conn)
  while true do
    local line, err = conn:receive("*l")
    if not line then break end          -- "closed" or "timeout"
    conn:send(line .. "\n")
  end
end)

-- start() parks until shutdown, so it gets a task of its own; spawn returns
-- as soon as that task is listening (server.port is then the bound port),
-- or has failed to bind.
local ok, err = true
coserve.spawn(function() ok, err = server:start() end)
assert(ok, err)
print(("echo on %s:%d"):format(server.host, server.port))
io.stdout:flush()
