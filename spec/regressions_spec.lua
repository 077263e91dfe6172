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
end)
