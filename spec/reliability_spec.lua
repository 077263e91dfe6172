-- Issue 9's defects and gaps, each as a user meets it: a case per point,
-- written to fail on the code before its fix.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local run, serve, connect = testing.run, testing.server, testing.connect

-- A peer in another process that answers one line and then keeps the
-- connection open until it is killed. arg[1]: "tcp" or a unix path.
local HOLDER_APP = [[
local coserve = require "coserve"
local where = arg[1]
local server = where == "tcp" and coserve.server{ host = "127.0.0.1", port = 0 }
                              or coserve.server{ host = "unix:" .. where }
server:handle(function(conn)
  local line = conn:receive("*l")
  conn:send("re " .. tostring(line) .. "\n")
  coserve.sleep(3600)
end)
local ok, err = true
coserve.spawn(function() ok, err = server:start() end)
assert(ok, err)
print("ready " .. tostring(server.port)) io.stdout:flush()
]]

describe("reliability (issue 9)", function()
  describe("1. a client connection nothing can reach", function()
    local function exits_after_talking(where, target)
      local dir = proc.tmpdir()
      finally(function() proc.rmdir(dir) end)
      local holder = proc.start({ proc.BIN, proc.write(dir .. "/holder.lua", HOLDER_APP), where })
      finally(function() holder:stop() end)
      local port = holder:wait_output("ready (%S+)")
      local client = proc.write(dir .. "/client.lua", ([[
local coserve = require "coserve"
local c = assert(coserve.connect(%s))
assert(c:send("hello\n"))
print(assert(c:receive()))
]]):format(target(port)))
      -- The peer never closes: before the fix this run hung until killed.
      local r = proc.run({ proc.BIN, client }, { timeout = 10 })
      assert.equal("re hello\n", r.out)
      assert.equal(0, r.status)
    end

    it("does not keep a script alive (TCP)", function()
      exits_after_talking("tcp", function(port) return ("'127.0.0.1', %s"):format(port) end)
    end)

    it("does not keep a script alive (unix:)", function()
      local path = os.tmpname()
      os.remove(path)
      finally(function() os.remove(path) end)
      exits_after_talking(path, function() return ("'unix:%s'"):format(path) end)
    end)

    it("still keeps the loop alive while a coroutine waits on it", function()
      run(function()
        local s = serve(function(conn)
          coserve.sleep(0.2) -- nothing else keeps this process busy meanwhile
          conn:send("late\n")
          conn:receive()
        end)
        local c = assert(connect(s))
        s:shutdown(5) -- the server drains: only the client's read is left
        assert.equal("late", c:receive(nil, 5))
        c:close()
      end)
    end)
  end)

  describe("6. receive(n) and receive('*a') are bounded by max_frame", function()
    local function handled(max_frame, fn, payload, close)
      local got = coserve.channel(1)
      run(function()
        local s = serve(function(conn) got:push({ fn(conn) }) end, { max_frame = max_frame })
        local c = assert(connect(s))
        c:send(payload)
        if close then c:close() end
        local r = got:pop(5)
        if not close then c:close() end
        s:shutdown()
        got = r
      end)
      return got
    end

    it("receive(n) over max_frame: nil, 'too large' at once", function()
      assert.same({ nil, "too large" },
        handled(1024, function(conn) return conn:receive(1025) end, "x"))
    end)

    it("receive(n) at max_frame is still served", function()
      assert.same({ ("y"):rep(1024) },
        handled(1024, function(conn) return conn:receive(1024) end, ("y"):rep(1024)))
    end)

    it("receive('*a') over max_frame: nil, 'too large', and the connection is closed", function()
      local r = handled(1024, function(conn)
        local data, err = conn:receive("*a")
        return data, err, (conn:send("more"))
      end, ("z"):rep(4096))
      assert.same({ nil, "too large", nil }, r)
    end)

    it("receive('*a') under max_frame returns everything once the peer closes", function()
      assert.same({ ("w"):rep(1000) },
        handled(1024, function(conn) return conn:receive("*a") end, ("w"):rep(1000), true))
    end)
  end)
end)
