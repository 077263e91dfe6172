-- One spec per bug found after the first release, named after the bug.
local coserve = require "coserve"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect
local BIN = os.getenv("COSERVE_BIN") or "build/coserve"

local function sh(cmd)
  local f = io.popen(cmd .. " 2>&1; echo \"status=$?\"")
  local out = f:read("*a")
  f:close()
  return out
end

describe("regressions", function()
  it("send of an array holding numbers: refused instead of sending freed bytes", function()
    run(function()
      local s = serve(function(conn) conn:receive() end)
      local c = assert(connect(s))
      assert.has_error(function() c:send({ "a", 12345 }) end,
        "bad argument #1 to 'send' (item 2 is not a string)")
      assert.equal(3, c:send(123))
      c:close()
      s:shutdown()
    end)
  end)

  it("send(true) names the data argument, not self", function()
    run(function()
      local s = serve(function(conn) conn:receive() end)
      local c = assert(connect(s))
      local ok, err = pcall(c.send, c, true)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'send'", err)
      c:close()
      s:shutdown()
    end)
  end)

  it("a reader woken by a server shutdown reads 'closed', not 'canceled'", function()
    run(function()
      local got = coserve.channel(1)
      local s = serve(function(conn) got:push({ conn:receive() }) end)
      local c = assert(connect(s))
      c:send("partial")
      coserve.sleep(0.02)
      s:shutdown()
      assert.same({ nil, "closed", "partial" }, got:pop(1))
      c:close()
    end)
  end)

  it("idle_timeout = 0 turns the idle sweep off", function()
    run(function()
      local s = serve(function(conn) return conn:receive(nil, 0.3) end, { idle_timeout = 0 })
      local c = assert(connect(s))
      coserve.sleep(0.1)
      c:send("still here\n")
      assert.same({ nil, "closed", "" }, { c:receive(nil, 1) }) -- handler returned
      assert.equal(0, s:stats().rejected)
      c:close()
      s:shutdown()
    end)
  end)

  it("testing.server outside testing.run raises a clear error", function()
    assert.has_error(function() testing.server(function() end) end,
      "testing.server: call it inside testing.run (or another coserve coroutine)")
  end)

  it("waitgroup: more done() than add() points at the caller", function()
    run(function()
      local ok, err = pcall(function() coserve.waitgroup():done() end)
      assert.is_false(ok)
      assert.matches("regressions_spec.lua:%d+: waitgroup: more done", err)
    end)
  end)

  it("coserve.run(non-function) points at the caller", function()
    local ok, err = pcall(function() coserve.run(42) end)
    assert.is_false(ok)
    assert.matches("regressions_spec.lua:%d+: bad argument #1 to 'run'", err)
  end)

  it("CLI: a deadlock is reported once, without a doubled prefix", function()
    local out = sh(("%q -e %q"):format(BIN, "require('coserve').channel():pop()"))
    assert.matches("^coserve: the main coroutine was left waiting", out)
    assert.not_matches("coserve: coserve:", out)
    assert.matches("status=1", out)
  end)

  it("CLI: -e followed by options keeps arg[0] the program, not an option's value", function()
    local out = sh(("%q -e %q --log-level debug a b"):format(BIN, "print(arg[0], arg[1], arg[2], ...)"))
    assert.matches("coserve\ta\tb\ta\tb", out)
  end)

  it("CLI: --grace inf and nan are refused", function()
    assert.matches("status=2", sh(("%q --grace inf -e ''"):format(BIN)))
    assert.matches("status=2", sh(("%q --grace nan -e ''"):format(BIN)))
  end)

  it("fuzz: trailer fields after a chunked body no longer crash the server", function()
    local http = require "coserve.http"
    run(function()
      local app = http.server{ host = "127.0.0.1", port = 0 }
      app:route("POST", "/echo", function(req, res) res:send(assert(req:body())) end)
      coserve.spawn(function() assert(app:start()) end)
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
      assert.equal("HTTP/1.1 200 OK", c:receive("*l", 2))
      local body
      while true do
        local line = assert(c:receive("*l", 2))
        if line == "" then break end
      end
      body = c:receive(3, 2)
      assert.equal("abc", body)
      assert.equal("HTTP/1.1 405 Method Not Allowed", c:receive("*l", 2))
      c:close()
      app:shutdown()
    end)
  end)

  it("fuzz: a response whose body ends at close may be empty", function()
    local http = require "coserve.http"
    run(function()
      local s = serve(function(conn)
        conn:receiveuntil("\r\n\r\n")()
        conn:send("HTTP/1.1 200 OK\r\n\r\n")
      end)
      local res = assert(http.request{ url = "http://127.0.0.1:" .. s.port .. "/" })
      assert.equal(200, res.status)
      assert.equal("", res.body)
      s:shutdown()
    end)
  end)

  it("fuzz: writing to a peer that has gone does not kill the process (SIGPIPE)", function()
    local app = [[
      local coserve = require "coserve"
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      local results = coserve.channel(1)
      s:handle(function(conn)
        coserve.sleep(0.1)
        local chunk = ("x"):rep(65536)
        local ok, err
        for _ = 1, 50 do
          ok, err = conn:send(chunk)
          if not ok then break end
        end
        results:push(err or "sent")
      end)
      coserve.spawn(function() s:start() end)
      local c = assert(coserve.connect("127.0.0.1", s.port))
      c:close()
      print(results:pop(5))
      s:shutdown()
    ]]
    local out = sh(("%q -e %q"):format(BIN, app))
    assert.matches("closed\nstatus=0", out)
  end)

  it("a wait inside dofile raises a clear error instead of crashing the server", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = io.open(dir .. "/server.lua", "w")
    f:write('local coserve = require "coserve"\n',
      'local s = coserve.server{ host = "127.0.0.1", port = 0 }\n',
      's:handle(function() end)\nassert(s:start())\n')
    f:close()
    local out = sh(("%q -e %q"):format(BIN, ("dofile(%q)"):format(dir .. "/server.lua")))
    os.execute("rm -rf " .. dir)
    assert.matches("start: cannot wait inside a C call that cannot yield", out)
    assert.matches("status=1", out)
  end)

  it("a pooled connection taken back in the same loop turn is not handed out with bytes its peer sent meanwhile", function()
    local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                        .. "support/process.lua")
    -- The peer is another process: it answers, then 50 ms later sends a
    -- line nobody asked for, while this process's loop does not poll.
    local p = proc.start({ BIN, "-e", [[
      local coserve = require "coserve"
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      s:handle(function(conn)
        conn:receive()
        conn:send("answer\n")
        coserve.sleep(0.05)
        conn:send("stale bytes nobody asked for\n")
        conn:receive()
      end)
      coserve.spawn(function() s:start() end)
      print("port " .. s.port) io.stdout:flush()
    ]] })
    finally(function() p:stop() end)
    local port = tonumber(p:wait_output("port (%d+)"))
    run(function()
      local c = assert(coserve.connect("127.0.0.1", port))
      local id = c.id
      c:send("question\n")
      assert.equal("answer", c:receive())
      local t = coserve.now() + 0.2
      while coserve.now() < t do end -- the stale line arrives, unread
      assert(c:setkeepalive())
      local again = assert(coserve.connect("127.0.0.1", port)) -- the same loop turn
      assert.are_not.equal(id, again.id)
      again:close()
    end)
  end)
  it("max_frame = math.huge means no limit (it was an undefined conversion to size_t)", function()
    run(function()
      local s = serve(function(conn) conn:send(#conn:receive(3 * 1024 * 1024) .. "\n") end,
        { max_frame = math.huge, send_buffer = math.huge })
      local c = assert(connect(s, { max_frame = math.huge }))
      c:send(("x"):rep(3 * 1024 * 1024))
      assert.equal(tostring(3 * 1024 * 1024), c:receive())
      c:close()
      s:shutdown()
    end)
  end)
end)
