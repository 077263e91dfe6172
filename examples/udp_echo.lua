-- A UDP echo server: every datagram is sent back to where it came from.
--   scripts/coserve examples/udp_echo.lua [port]      (default 9502)
-- then: echo hi | nc -u -w1 127.0.0.1 9502
local coserve = require "coserve"

local port = tonumber(arg[1]) or 9502
local udp = coserve.udp()
assert(udp:bind("127.0.0.1", port))
local _, bound = udp:getsockname()
print("udp_echo on 127.0.0.1:" .. bound)
io.stdout:flush()

while not coserve.exiting() do
  -- A timeout now and then lets a graceful shutdown (Ctrl-C) end the loop.
  local data, ip, from = udp:recvfrom(1)
  if data then
    udp:sendto(data, ip, from)
  elseif data == nil and ip ~= "timeout" then
    print("recvfrom: " .. ip)
    break
  end
end
udp:close()
