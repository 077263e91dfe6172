-- Length-prefixed frames: each frame is a 4-byte big-endian body length and
-- the body; every frame a client sends comes back with its body upper-cased.
--   scripts/coserve examples/framed.lua [port]    (default 9503; 0 picks one)
--
-- The server's framing does the reassembly: recv() returns one whole frame
-- (header included) however the bytes were split or batched on the wire.
local coserve = require "coserve"

local band, rshift, char = bit.band, bit.rshift, string.char

local HEADER = 4 -- bytes of the u32be length in front of each body

local server = coserve.server{
  host = "127.0.0.1",
  port = tonumber(arg[1]) or 9503,
  framing = { length = { type = "u32be", offset = 0, body_offset = HEADER } },
}

local function u32be(n)
  return char(rshift(n, 24), band(rshift(n, 16), 255), band(rshift(n, 8), 255), band(n, 255))
end

server:handle(function(conn)
  while true do
    local frame = conn:recv()
    if not frame then break end         -- "closed", "timeout" or "too large"
    local body = frame:sub(HEADER + 1):upper()
    conn:send({ u32be(#body), body })
  end
end)

-- start() parks until shutdown, so it gets a task of its own; spawn returns
-- as soon as that task is listening, or has failed to bind.
local ok, err = true
coserve.spawn(function() ok, err = server:start() end)
assert(ok, err)
print(("framed on %s:%d"):format(server.host, server.port))
io.stdout:flush()
