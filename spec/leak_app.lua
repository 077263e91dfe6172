-- Used by scripts/test under valgrind: a server accepts and closes N
-- connections made by in-process clients, then shuts down.
local coserve = require "coserve"
local n = tonumber(arg[1]) or 1000

local server = coserve.server{ host = "127.0.0.1", port = 0 }
local handled = 0
server:handle(function(conn)
  local line = conn:receive()
  if line then conn:send(line .. "\n") end
  handled = handled + 1
end)
coserve.spawn(function() assert(server:start()) end)

local wg = coserve.waitgroup()
for i = 1, n do
  wg:add(1)
  coserve.spawn(function()
    local c = assert(coserve.connect("127.0.0.1", server.port))
    c:send("ping " .. i .. "\n")
    assert(c:receive() == "ping " .. i)
    c:close()
    wg:done()
  end)
  if i % 100 == 0 then wg:wait() end
end
wg:wait()
server:shutdown()
print(("accepted %d, handled %d"):format(server:stats().accepted, handled))
