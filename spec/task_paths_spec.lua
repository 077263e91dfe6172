-- Scheduler paths that sched_spec.lua does not reach (issue 9, coverage):
-- one of several joiners giving up, connection-owned tasks ending in any
-- order, cancel after the end.
local coserve = require "coserve"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect

describe("tasks", function()
  it("a joiner that times out leaves the other joiners waiting", function()
    run(function()
      local target = coserve.spawn(function() coserve.sleep(0.2) return "done" end)
      -- first joins first; second joins after it, and so is ahead of it in
      -- the target's list of joiners.
      local first = coserve.spawn(function() return target:join(0.05) end)
      local second = coserve.spawn(function() return target:join(2) end)
      local third = coserve.spawn(function() return target:join(2) end)
      assert.same({ true, false, "timeout" }, { first:join(2) })
      assert.same({ true, true, "done" }, { second:join(2) })
      assert.same({ true, true, "done" }, { third:join(2) })
    end)
  end)

  it("cancel after the end changes nothing", function()
    run(function()
      local t = coserve.spawn(function() return 7 end)
      assert.same({ true, 7 }, { t:join(1) })
      t:cancel()
      assert.same({ true, 7 }, { t:join(1) })
    end)
  end)

  it("tasks a connection owns may end in any order; the rest still end with it", function()
    run(function()
      local order = {}
      local s = serve(function(conn)
        local tasks = {}
        for i, delay in ipairs({ 0.06, 0.02, 0.04, 5 }) do
          tasks[i] = conn:spawn(function()
            local ok, err = coserve.sleep(delay)
            if ok then order[#order + 1] = i else order.fourth = err end
          end)
        end
        for i = 1, 3 do assert(tasks[i]:join(2)) end
        conn:send("three done\n")
        conn:receive() -- until the client closes: task 4 is canceled then
      end)
      local c = assert(connect(s))
      assert.equal("three done", c:receive("*l", 5))
      c:close()
      coserve.sleep(0.05)
      s:shutdown()
      assert.same({ 2, 3, 1, fourth = "canceled" }, order)
    end)
  end)

  it("sleep(0) in a canceled task returns nil, 'canceled'", function()
    run(function()
      local t = coserve.spawn(function()
        local first = { coserve.sleep(10) }
        local second = { coserve.sleep(0) }
        return first, second
      end)
      t:cancel()
      local ok, first, second = t:join(2)
      assert.is_true(ok)
      assert.same({ nil, "canceled" }, first)
      assert.same({ nil, "canceled" }, second)
    end)
  end)

  it("core.wake on a task that is not parked in park() returns false", function()
    run(function()
      local core = require "coserve.core"
      local sleeper = coserve.spawn(function() return coserve.sleep(0.05) end)
      assert.is_false(core.wake(sleeper, "x"))
      assert.same({ true, true }, { sleeper:join(2) })
      assert.is_false(core.wake(sleeper, "x")) -- done
    end)
  end)
end)

describe("keep-alive pools", function()
  it("a pooled connection its peer writes to is dropped; the next connect is a new one", function()
    run(function()
      local s = serve(function(conn)
        conn:receive()
        conn:send("ok\n")
        coserve.sleep(0.05) -- the client has pooled it by now
        conn:send("unsolicited\n")
        conn:receive(nil, 2)
      end)
      local a = assert(coserve.connect("127.0.0.1", s.port))
      a:send("first\n")
      assert.equal("ok", a:receive())
      local id = a.id
      assert.is_true(a:setkeepalive(10))
      coserve.sleep(0.2)
      local b = assert(coserve.connect("127.0.0.1", s.port))
      assert.is_not.equal(id, b.id)
      b:close()
      assert.equal(2, s:stats().accepted)
      s:shutdown()
    end)
  end)
end)
