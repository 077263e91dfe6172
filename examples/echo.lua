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

coserve.log("info", "echo server on 127.0.0.1:" .. (arg[1] or 9501))
assert(server:start())
