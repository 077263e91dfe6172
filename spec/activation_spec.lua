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

  it("under -w 2: both workers serve on the inherited socket, and a reload keeps it", function()
    local dir = proc.tmpdir()
    local port = free_port()
    proc.write(dir .. "/app.lua", ([[
      local coserve = require "coserve"
      local VERSION = "v1"
      local s = coserve.server{ host = "127.0.0.1", port = %d }
      s:handle(function(conn) conn:send(VERSION .. " " .. coserve.worker_id() .. "\n") end)
      coserve.log("info", "listening")
      assert(s:start())
    ]]):format(port))
    local p = proc.start({ "systemd-socket-activate", "-l", "127.0.0.1:" .. port,
                           proc.BIN, "-w", "2", "--grace", "2", dir .. "/app.lua" })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return p:stderr():find("Listening on", 1, true) end),
      p:stderr())
    -- Answers "vN id" lines until both worker ids of version v have
    -- answered; every connection must be served.
    local function both(v)
      local seen = {}
      for _ = 1, 400 do
        local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5 }))
        local line = assert(c:receive("*l", 5))
        c:close()
        local version, id = line:match("^(v%d) (%d)$")
        assert.is_not_nil(version, line)
        if version == v then seen[id] = true end
        if seen["1"] and seen["2"] then return true end
      end
      return false
    end
    testing.run(function()
      -- The first connection makes systemd-socket-activate exec (in its
      -- own process) the master, with the listening socket as fd 3.
      assert.is_true(both("v1"), "not both workers served: " .. p:stderr())
      proc.write(dir .. "/app.lua", (proc.read(dir .. "/app.lua"):gsub('"v1"', '"v2"')))
      p:signal("HUP")
      assert(proc.poll(10, function() return p:stderr():find("new worker%(s%) ready") end),
        p:stderr())
      assert.is_true(both("v2"), "not both new workers served: " .. p:stderr())
    end, { timeout = 30 })
    assert.matches("Execing", p:stderr())
    -- The workers never bound the port themselves: a bind would have
    -- failed (systemd's socket has no SO_REUSEPORT) and been reported.
    assert.not_matches("address already in use", p:stderr())
    assert.not_matches("no listening socket from the master", p:stderr())
  end)
end)
