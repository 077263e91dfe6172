-- Line-based chat room: every line a client sends goes to every other
-- connected client.
--   scripts/coserve examples/chat.lua [port]      (default 9502; 0 picks one)
--
-- Each client has an outbox and a writer coroutine that drains it, so a
-- broadcast only queues lines and never waits for a slow reader. A client
-- whose outbox is full (OUTBOX lines behind, on top of what the kernel
-- buffers) is disconnected: keeping it would mean buffering without bound
-- or making the whole room wait for it.
local coserve = require "coserve"

local OUTBOX = 64

local server = coserve.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 9502 }
local outboxes = {}   -- conn -> its outbox channel

local function broadcast(from, line)
  for conn, outbox in pairs(outboxes) do
    if conn ~= from then
      if #outbox < OUTBOX then
        outbox:push(line)               -- room in the buffer: never parks
      else
        outboxes[conn] = nil
        conn:close()                    -- its handler and writer unwind
      end
    end
  end
end

server:handle(function(conn)
  local outbox = coserve.channel(OUTBOX)
  -- The writer belongs to the connection: it is canceled when it closes.
  conn:spawn(function()
    for line in function() return outbox:pop() end do
      if not conn:send(line) then break end
    end
    conn:close()
  end)
  -- Once welcomed, a client is in the room: every line said later reaches it.
  local n = 0
  for _ in pairs(outboxes) do n = n + 1 end
  outbox:push(("* welcome, %d other(s) here\n"):format(n))
  outboxes[conn] = outbox
  while true do
    local line = conn:receive("*l")
    if not line then break end          -- "closed" or "timeout"
    broadcast(conn, line .. "\n")
  end
  outboxes[conn] = nil
  outbox:close()
end)

-- start() parks until shutdown, so it gets a task of its own; spawn returns
-- as soon as that task is listening, or has failed to bind.
local ok, err = true
coserve.spawn(function() ok, err = server:start() end)
assert(ok, err)
print(("chat on %s:%d"):format(server.host, server.port))
io.stdout:flush()
