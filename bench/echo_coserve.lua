-- Raw TCP echo used by scripts/bench: every byte received is sent back.
-- usage: coserve bench/echo_coserve.lua PORT
local coserve = require "coserve"

local server = coserve.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 9501 }
server:handle(function(conn)
  while true do
    local data = conn:receiveany(65536)
    if not data then return end
    if not conn:send(data) then return end
  end
end)
assert(server:start())
