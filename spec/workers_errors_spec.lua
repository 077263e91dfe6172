-- Under -w N the master binds every listening socket: the errors of that
-- bind must reach the worker's server:start as nil, err, as they do without
-- a master; a server stopped and started again in a worker gets a socket
-- again; the master removes the unix sockets it made (issue 9, coverage).
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

-- Tries each server in turn and reports, on stderr, how each start went.
local APP = [[
local coserve = require "coserve"
local taken, sock = tonumber(arg[1]), arg[2]
local function try(opts)
  local s = coserve.server(opts)
  s:handle(function(conn) conn:send("w" .. coserve.worker_id() .. "\n") end)
  local t = coserve.spawn(function() return s:start() end)
  coserve.sleep(0.05)
  if t:done() then
    local _, ok, err = t:join()
    return s, tostring(ok) .. " " .. tostring(err)
  end
  return s, "listening"
end
local r = {}
r[1] = select(2, try{ host = "127.0.0.1", port = taken })
r[2] = select(2, try{ host = "999.0.0.1", port = 0 })
r[3] = select(2, try{ host = "unix:/tmp/" .. ("x"):rep(200) })
local again = try{ host = "127.0.0.1", port = 0 }
again:shutdown()
coserve.sleep(0.05)
r[4] = select(2, try{ host = "127.0.0.1", port = again.port })
r[5] = select(2, try{ host = "unix:" .. sock })
io.stderr:write(("worker %d: %s\n"):format(coserve.worker_id(), table.concat(r, " | "))) -- one write: the workers share stderr
]]

describe("coserve -w N: bind errors come from the master", function()
  it("in use, malformed, too long: start returns nil, err in every worker; the rest serve", function()
    local dir = proc.tmpdir()
    local sock = dir .. "/app.sock"
    proc.write(dir .. "/app.lua", APP)
    testing.run(function()
      -- A port this process holds for the whole case.
      local holder = testing.server(function() end)
      local p = proc.start({ proc.BIN, "-w", "2", dir .. "/app.lua", tostring(holder.port), sock })
      local ok, err = pcall(function()
        assert(proc.poll(10, function()
          return select(2, p:stderr():gsub("worker %d: ", "")) == 2
        end), p:stderr())
        for id = 1, 2 do
          assert.matches(("worker %d: nil address already in use | nil invalid argument | "
            .. "nil name too long | listening | listening\n"):format(id), p:stderr(), 1, true)
        end
        local c = assert(coserve.connect("unix:" .. sock, { timeout = 3 }))
        assert.matches("^w[12]$", c:receive("*l", 3))
        c:close()
        p:signal("TERM")
        assert.equal(0, p:wait_exit(8), p:stderr())
        -- The master made the unix socket, and removed it.
        assert.is_nil(io.open(sock))
      end)
      p:stop()
      holder:shutdown()
      assert(ok, err)
    end, { timeout = 30 })
    proc.rmdir(dir)
  end)
end)
