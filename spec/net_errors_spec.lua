-- The error paths of the network layer and its Lua surface (issue 9,
-- coverage): resolver failures, connects and binds that fail at once, bad
-- arguments that must name their function, server options that are wrong.
-- Each case checks what the caller gets back, and testing.run checks that
-- nothing (handle, connection, task) is left behind.
local coserve = require "coserve"
local core = require "coserve.core"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect

local function pack(...) return { n = select("#", ...), ... } end

describe("resolver errors", function()
  it("a name the resolver rejects before any lookup returns nil, err at once", function()
    run(function()
      -- libuv refuses a host name longer than 255 bytes synchronously.
      assert.same({ nil, "invalid argument" }, { coserve.resolve(("a"):rep(300) .. ".test") })
    end)
  end)

  it("a lookup whose task is canceled returns nil, 'canceled'; the late answer is dropped", function()
    run(function()
      local got
      local t = coserve.spawn(function() got = pack(coserve.resolve("localhost")) end)
      -- spawn ran the task up to its first wait: the lookup is in flight.
      assert.is_nil(got)
      t:cancel()
      assert.is_true((t:join(2)))
      assert.same({ n = 2, nil, "canceled" }, got)
      -- The lookup still completes on the thread pool: its answer must find
      -- no task to wake, and a new lookup works.
      coserve.sleep(0.05)
      assert.same({ "127.0.0.1" }, coserve.resolve("localhost", "inet"))
    end)
  end)

  it("an unknown name is 'host not found'", function()
    run(function()
      assert.same({ nil, "host not found" }, { coserve.resolve("no-such-host.invalid") })
    end)
  end)

  it("an IPv6 literal comes back from the resolver as itself", function()
    run(function()
      assert.same({ "::1" }, core.resolve("::1"))
      assert.same({ "::1" }, coserve.resolve("::1"))
      assert.same({ "127.0.0.1" }, core.resolve("127.0.0.1", "inet"))
    end)
  end)

  it("a family other than inet or inet6 raises", function()
    run(function()
      local ok, err = pcall(function() local r = coserve.resolve("localhost", "ipx") return r end)
      assert.is_false(ok)
      assert.matches([[bad argument #2 to 'resolve' ("inet" or "inet6" expected)]], err, 1, true)
      assert.has_error(function() coserve.resolve(42) end,
        "bad argument #1 to 'resolve' (string expected)")
    end)
  end)
end)

describe("connect errors", function()
  it("a malformed address literal raises, naming connect", function()
    run(function()
      local ok, err = pcall(function() local c = coserve.connect("999.1.1.1", 80) return c end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'connect' (IP address or unix:path expected)", err, 1, true)
      assert.has_error(function() coserve.connect("127.0.0.1", "80") end,
        "bad argument #2 to 'connect' (port expected)")
      assert.has_error(function() coserve.connect(nil, 80) end,
        "bad argument #1 to 'connect' (string expected)")
    end)
  end)

  it("a connect the kernel refuses at once returns nil, err and leaves nothing open", function()
    run(function()
      -- The broadcast address: connect(2) fails in the kernel (EACCES or
      -- ENETUNREACH) before any packet is sent.
      local c, err = coserve.connect("255.255.255.255", 9, { timeout = 2 })
      assert.is_nil(c)
      assert.is_string(err)
      assert.is_not.equal("timeout", err)
    end)
  end)

  it("a refused connect to a port nobody listens on is 'connection refused'", function()
    run(function()
      local s = serve(function() end)
      local port = s.port
      s:shutdown()
      assert.same({ nil, "connection refused" }, { coserve.connect("127.0.0.1", port) })
      assert.same({ nil, "connection refused" }, { coserve.connect("::ffff:127.0.0.1", port) })
    end)
  end)

  it("a unix: path with no server is an error, not a raise", function()
    run(function()
      local c, err = coserve.connect("unix:/nonexistent-dir/coserve.sock")
      assert.is_nil(c)
      assert.is_string(err)
    end)
  end)
end)

describe("bind errors", function()
  it("a malformed address literal as host is nil, 'invalid argument' from start", function()
    run(function()
      for _, host in ipairs({ "999.0.0.1", "::zz" }) do
        local s = coserve.server{ host = host, port = 0 }
        s:handle(function() end)
        assert.same({ nil, "invalid argument" }, { s:start() })
      end
    end)
  end)

  it("an address this host does not have is nil, err from start (bind fails at once)", function()
    run(function()
      -- 192.0.2.1 is TEST-NET-1: bind(2) fails locally, nothing is sent.
      local s = coserve.server{ host = "192.0.2.1", port = 0 }
      s:handle(function() end)
      local ok, err = s:start()
      assert.is_nil(ok)
      assert.equal("address not available", err)
    end)
  end)

  it("a unix: path in a missing directory is nil, err from start", function()
    run(function()
      local s = coserve.server{ host = "unix:/nonexistent-dir/coserve.sock" }
      s:handle(function() end)
      local ok, err = s:start()
      assert.is_nil(ok)
      assert.is_string(err)
    end)
  end)

  it("a host name is resolved when start runs, and the server serves there", function()
    run(function()
      local s = coserve.server{ host = "localhost", port = 0 }
      s:handle(function(conn) conn:send("hi\n") end)
      local t = coserve.spawn(function() return s:start() end)
      for _ = 1, 200 do
        if s.port > 0 then break end
        coserve.sleep(0.01)
      end
      assert.equal("127.0.0.1", s.host)
      local c = assert(coserve.connect("127.0.0.1", s.port))
      assert.equal("hi", c:receive())
      c:close()
      s:shutdown()
      assert.same({ true, true }, { t:join(2) })
    end)
  end)

  it("a host name that does not resolve is nil, 'host not found' from start", function()
    run(function()
      local s = coserve.server{ host = "no-such-host.invalid", port = 0 }
      s:handle(function() end)
      assert.same({ nil, "host not found" }, { s:start() })
    end)
  end)

  it("start raises when the server is running or has no handler", function()
    run(function()
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      assert.has_error(function() s:start() end,
        "start: no handler (call server:handle(fn) first)")
      s:handle(function() end)
      local t = coserve.spawn(function() return s:start() end)
      assert.has_error(function() s:start() end, "start: the server is already running")
      s:shutdown()
      assert.is_true((t:join(2)))
    end)
  end)
end)

describe("server options that are wrong", function()
  local cases = {
    { { port = "80" }, "option 'port' must be a number" },
    { { port = 70000 }, "option 'port' must be a port number (0 picks one)" },
    { { port = 1.5 }, "option 'port' must be a port number (0 picks one)" },
    { { port = 0, host = 42 }, nil }, -- a number is a string to Lua: accepted, fails later
    { { port = 0, host = {} }, "option 'host' must be a string" },
    { { port = 0, host = ("h"):rep(300) }, "option 'host' must be a string" },
    { { port = 0, backlog = 0 }, "option 'backlog' must be at least 1" },
    { { port = 0, max_frame = "big" }, "option 'max_frame' must be a number" },
    { { port = 0, [1] = true }, "unknown option 'number'" },
    { { port = 0, framing = "x" }, "table expected" },
    { { port = 0, framing = {} }, "framing takes one of eof = string or length = table" },
    { { port = 0, framing = { eof = "" } }, "framing.eof must be a string of 1 to 32 bytes" },
    { { port = 0, framing = { eof = ("x"):rep(33) } }, "framing.eof must be a string of 1 to 32 bytes" },
    { { port = 0, framing = { eof = "\n", length = {} } },
      "framing takes one of eof = string or length = table" },
    { { port = 0, framing = { length = 4 } }, "framing takes one of eof = string or length = table" },
    { { port = 0, framing = { length = { type = "u24" } } }, "framing.length.type must be u8" },
    { { port = 0, framing = { length = { offset = -1 } } }, "framing.length needs 0 <= offset" },
    { { port = 0, framing = { length = { type = "u16le", body_offset = 1 } } },
      "framing.length needs 0 <= offset" },
  }
  for i, case in ipairs(cases) do
    local opts, message = case[1], case[2]
    if message then
      it(("raises, naming the problem (%d: %s)"):format(i, message), function()
        local ok, err = pcall(coserve.server, opts)
        assert.is_false(ok)
        assert.matches(message, err, 1, true)
      end)
    end
  end

  it("accepts every length type and a body offset past the field", function()
    for _, ty in ipairs({ "u8", "u16be", "u16le", "u32be", "u32le", "u64be", "u64le" }) do
      assert.is_truthy(coserve.server{ port = 0,
        framing = { length = { type = ty, offset = 2, body_offset = 20 } } })
    end
  end)
end)

describe("bad arguments name their function", function()
  it("conn:receive with an unknown pattern", function()
    run(function()
      local s = serve(function(conn) conn:receive() end)
      local c = assert(connect(s))
      local function message(fn)
        local ok, err = pcall(fn)
        assert.is_false(ok)
        return err
      end
      assert.matches("bad argument #1 to 'receive' (invalid pattern",
        message(function() local r = c:receive("*x") return r end), 1, true)
      assert.matches("bad argument #1 to 'receive' (byte count must not be negative)",
        message(function() local r = c:receive(-1) return r end), 1, true)
      assert.matches("bad argument #1 to 'receiveany' (must be positive)",
        message(function() local r = c:receiveany(0) return r end), 1, true)
      c:close()
      s:shutdown()
    end)
  end)

  it("a task cannot join itself", function()
    run(function()
      local t
      t = coserve.spawn(function()
        coserve.sleep(0)
        return pcall(t.join, t)
      end)
      local ok, pok, err = t:join(2)
      assert.is_true(ok)
      assert.is_false(pok)
      assert.matches("join: a task cannot join itself", err, 1, true)
    end)
  end)

  it("log_level reads, sets, and rejects an unknown level", function()
    run(function()
      local was = coserve.log_level()
      assert.is_string(was)
      assert.equal("debug", coserve.log_level("debug"))
      assert.equal("debug", coserve.log_level())
      local ok, err = pcall(function() local r = coserve.log_level("loud") return r end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'log_level' (invalid option 'loud')", err, 1, true)
      assert.equal(was, coserve.log_level(was))
    end)
  end)
end)

describe("task and connection objects", function()
  it("task:done() is false while it runs and true once it has finished", function()
    run(function()
      local t = coserve.spawn(function() coserve.sleep(0.01) return 1 end)
      assert.is_false(t:done())
      assert.matches("parked", tostring(t), 1, true)
      assert.same({ true, 1 }, { t:join(2) })
      assert.is_true(t:done())
      assert.matches("done", tostring(t), 1, true)
    end)
  end)

  it("tostring(conn) says its id, and whether it is closed", function()
    run(function()
      local s = serve(function(conn) conn:receive() end)
      local c = assert(connect(s))
      assert.equal("coserve.conn #" .. c.id, tostring(c))
      c:close()
      assert.equal("coserve.conn #" .. c.id .. " (closed)", tostring(c))
      s:shutdown()
    end)
  end)

  it("a unix: connection names both ends unix:PATH", function()
    run(function()
      local path = os.tmpname()
      os.remove(path)
      local server_name = {}
      local s = serve(function(conn)
        server_name = { conn:getsockname() }
        conn:send("x\n")
        conn:receive()
      end, { host = "unix:" .. path, port = nil })
      local c = assert(coserve.connect("unix:" .. path))
      assert.equal("x", c:receive())
      assert.same({ "unix:" .. path }, { c:getpeername() })
      assert.same({ "unix:" .. path }, server_name)
      c:close()
      s:shutdown()
      os.remove(path)
    end)
  end)

  it("a receiveuntil reader on a closed connection returns nil, 'closed'", function()
    run(function()
      local s = serve(function(conn) conn:receive() end)
      local c = assert(connect(s))
      local reader = c:receiveuntil("--")
      c:close()
      assert.same({ nil, "closed" }, { reader() })
      s:shutdown()
    end)
  end)
end)
