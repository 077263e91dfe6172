-- systemd socket activation (LISTEN_FDS): a server whose address matches an
-- inherited socket uses it instead of binding.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local free_port = proc.free_port

describe("socket activation", function()
  it("systemd-socket-activate -l 127.0.0.1:PORT coserve app.lua serves on the inherited socket", function()
    local dir = proc.tmpdir()
    local port, other = free_port(), free_port()
    proc.write(dir .. "/app.lua", ([[
      local coserve = require "coserve"
      local inherited = coserve.server{ host = "127.0.0.1", port = %d }
      inherited:handle(function(conn) conn:send("inherited\n") end)
      local bound = coserve.server{ host = "127.0.0.1", port = %d }
      bound:handle(function(conn) conn:send("bound\n") end)
      coserve.spawn(function() assert(bound:start()) end)
      assert(inherited:start())
    ]]):format(port, other))
    local p = proc.start({ "systemd-socket-activate", "-l", "127.0.0.1:" .. port,
                           proc.BIN, dir .. "/app.lua" })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return p:stderr():find("Listening on", 1, true) end),
      p:stderr())
    testing.run(function()
      -- The first connection makes systemd-socket-activate start coserve
      -- with the listening socket as fd 3.
      local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5 }))
      assert.equal("inherited", c:receive("*l", 5))
      c:close()
      -- A server with another address still binds its own socket.
      local d = assert(coserve.connect("127.0.0.1", other, { timeout = 5 }))
      assert.equal("bound", d:receive("*l", 5))
      d:close()
    end, { timeout = 15 })
    assert.matches("Execing", p:stderr())
  end)
end)
