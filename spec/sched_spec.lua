-- SPEC §2: the runtime and its coroutines.
local coserve = require "coserve"
local core = require "coserve.core"
local testing = require "coserve.testing"

local run = testing.run

describe("coserve.run", function()
  it("returns the function's results and passes its arguments", function()
    local a, b = coserve.run(function(x, y) coserve.sleep(0.001) return x + y, "ok" end, 2, 3)
    assert.equal(5, a)
    assert.equal("ok", b)
  end)

  it("re-raises the function's error with a traceback", function()
    local ok, err = pcall(coserve.run, function() coserve.sleep(0.001) error("boom") end)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.matches("stack traceback", err)
  end)

  it("can be called again after it returned", function()
    for i = 1, 3 do assert.equal(i, coserve.run(function() coserve.sleep(0) return i end)) end
  end)

  it("raises when called from inside a running loop", function()
    local ok, err = pcall(coserve.run, function()
      return coserve.run(function() end)
    end)
    assert.is_false(ok)
    assert.matches("already running", err)
  end)

  it("waits for everything the function spawned", function()
    local finished = false
    coserve.run(function()
      coserve.spawn(function() coserve.sleep(0.02) finished = true end)
    end)
    assert.is_true(finished)
  end)

  it("reports a main coroutine that nothing can wake (deadlock)", function()
    local ok, err = pcall(coserve.run, function() coserve.channel():pop() end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
    assert.equal(0, core.stats().tasks)
  end)
end)

describe("waiting outside a coserve coroutine", function()
  it("raises a clear error naming the function", function()
    local ok, err = pcall(coserve.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("coserve.sleep: not inside a coserve coroutine", err, 1, true)
  end)

  it("raises inside a user coroutine.wrap within a task, instead of corrupting it", function()
    run(function()
      local ok, err = pcall(coroutine.wrap(function() coserve.sleep(0.01) end))
      assert.is_false(ok)
      assert.matches("not inside a coserve coroutine", err)
    end)
  end)

  it("fails a task that calls coroutine.yield itself, with a clear message", function()
    run(function()
      local t = coserve.spawn(function() coroutine.yield(1) end)
      local ok, err = t:join(1)
      assert.is_false(ok)
      assert.matches("coroutine.yield called in a coserve coroutine", err)
    end)
  end)
end)

describe("coserve.spawn", function()
  it("runs the new task until its first wait, then the caller continues", function()
    run(function()
      local order = {}
      coserve.spawn(function()
        order[#order + 1] = "child start"
        coserve.sleep(0)
        order[#order + 1] = "child end"
      end)
      order[#order + 1] = "parent"
      coserve.sleep(0.01)
      assert.same({ "child start", "parent", "child end" }, order)
    end)
  end)

  it("keeps other tasks running when one raises", function()
    run(function()
      local bad = coserve.spawn(function() coserve.sleep(0.001) error("task error") end)
      local good = coserve.spawn(function() coserve.sleep(0.01) return "fine" end)
      local ok, err = bad:join()
      assert.is_false(ok)
      assert.matches("task error", err)
      assert.same({ true, "fine" }, { good:join() })
    end)
  end)
end)

describe("task:join", function()
  it("returns true and the results", function()
    run(function()
      local t = coserve.spawn(function(a) coserve.sleep(0.001) return a, nil, 3 end, 1)
      local r = { t:join() }
      assert.same({ true, 1, nil, 3 }, r)
    end)
  end)

  it("returns the results of a task that finished long ago", function()
    run(function()
      local t = coserve.spawn(function() return "early" end)
      coserve.sleep(0.01)
      assert.same({ true, "early" }, { t:join() })
    end)
  end)

  it("returns false and the error with its traceback", function()
    run(function()
      local t = coserve.spawn(function() coserve.sleep(0) error("failed here") end)
      local ok, err = t:join()
      assert.is_false(ok)
      assert.matches("failed here", err)
      assert.matches("stack traceback", err)
    end)
  end)

  it("returns false, 'timeout' when the task outlives the timeout", function()
    run(function()
      local t = coserve.spawn(function() coserve.sleep(0.2) end)
      assert.same({ false, "timeout" }, { t:join(0.01) })
      t:cancel()
    end)
  end)

  it("lets several tasks join the same task", function()
    run(function()
      local t = coserve.spawn(function() coserve.sleep(0.01) return 7 end)
      local a = coserve.spawn(function() return t:join() end)
      local b = coserve.spawn(function() return t:join() end)
      assert.same({ true, true, 7 }, { a:join() })
      assert.same({ true, true, 7 }, { b:join() })
    end)
  end)
end)

describe("task:cancel", function()
  it("wakes a parked task with nil, 'canceled'", function()
    run(function()
      local t = coserve.spawn(function() return coserve.sleep(10) end)
      t:cancel()
      assert.same({ true, nil, "canceled" }, { t:join(1) })
    end)
  end)

  it("makes every later wait return 'canceled' so the task unwinds", function()
    run(function()
      local t = coserve.spawn(function()
        local first = { coserve.sleep(10) }
        local second = { coserve.channel():pop(10) }
        return first[2], second[2]
      end)
      t:cancel()
      assert.same({ true, "canceled", "canceled" }, { t:join(1) })
    end)
  end)

  it("cancels a task parked in join as well", function()
    run(function()
      local long = coserve.spawn(function() coserve.sleep(10) end)
      local joiner = coserve.spawn(function() return long:join() end)
      joiner:cancel()
      assert.same({ true, false, "canceled" }, { joiner:join(1) })
      long:cancel()
    end)
  end)
end)

describe("coserve.sleep and coserve.now", function()
  it("sleeps at least the time asked and returns true", function()
    run(function()
      local t0 = coserve.now()
      assert.is_true(coserve.sleep(0.03))
      assert.is_true(coserve.now() - t0 >= 0.03)
    end)
  end)

  it("sleeps at least the time asked after a busy stretch, and over many short sleeps", function()
    run(function()
      -- Woken by IO, the task runs after the loop read its clock; 20 ms
      -- of work leaves that clock 20 ms behind, and a deadline taken from
      -- it would end the sleep after only 10 ms.
      local u = coserve.udp()
      assert(u:bind("127.0.0.1", 0))
      local _, port = u:getsockname()
      local slept
      local sleeper = coserve.spawn(function()
        assert(u:receive())
        local spin = coserve.now()
        while coserve.now() - spin < 0.02 do end
        local t0 = coserve.now()
        coserve.sleep(0.03)
        slept = coserve.now() - t0
      end)
      coserve.sleep(0.01)
      assert(u:sendto("wake", "127.0.0.1", port))
      sleeper:join()
      u:close()
      assert.is_true(slept >= 0.03, slept)
      local t0
      -- The clock counts whole milliseconds: a sleep must not lose the
      -- fraction of the one it started in.
      for _ = 1, 20 do
        t0 = coserve.now()
        coserve.sleep(0.002)
        slept = coserve.now() - t0
        assert.is_true(slept >= 0.002, slept)
      end
    end)
  end)

  it("sleep(0) lets other ready tasks run", function()
    run(function()
      local ran = false
      coserve.spawn(function() coserve.sleep(0) ran = true end)
      assert.is_false(ran)
      coserve.sleep(0)
      coserve.sleep(0)
      assert.is_true(ran)
    end)
  end)

  it("now() is monotonic", function()
    local a = coserve.now()
    local b = coserve.now()
    assert.is_true(b >= a)
  end)
end)

describe("coserve.channel", function()
  it("queues up to its capacity and counts with #", function()
    run(function()
      local ch = coserve.channel(2)
      assert.is_true(ch:push(1))
      assert.is_true(ch:push(2))
      assert.equal(2, #ch)
      assert.same({ nil, "timeout" }, { ch:push(3, 0.01) })
      assert.equal(1, ch:pop())
      assert.equal(2, ch:pop())
      assert.equal(0, #ch)
    end)
  end)

  it("capacity 0 is a rendezvous: push waits for a pop", function()
    run(function()
      local ch = coserve.channel()
      local pushed = false
      coserve.spawn(function() ch:push("x") pushed = true end)
      assert.is_false(pushed)
      assert.equal("x", ch:pop(1))
      coserve.sleep(0)
      assert.is_true(pushed)
    end)
  end)

  it("keeps values in order across parked pushers", function()
    run(function()
      local ch = coserve.channel(1)
      for i = 1, 5 do coserve.spawn(function() ch:push(i) end) end
      local got = {}
      for _ = 1, 5 do got[#got + 1] = ch:pop(1) end
      assert.same({ 1, 2, 3, 4, 5 }, got)
    end)
  end)

  it("pop times out with nil, 'timeout'", function()
    run(function()
      assert.same({ nil, "timeout" }, { coserve.channel(1):pop(0.01) })
    end)
  end)

  it("close: queued values drain, then pop gives nil, 'closed'; push gives nil, 'closed'", function()
    run(function()
      local ch = coserve.channel(4)
      ch:push("a")
      ch:close()
      assert.equal("a", ch:pop())
      assert.same({ nil, "closed" }, { ch:pop() })
      assert.same({ nil, "closed" }, { ch:push("b") })
    end)
  end)

  it("close wakes parked poppers with nil, 'closed'", function()
    run(function()
      local ch = coserve.channel()
      local t = coserve.spawn(function() return ch:pop() end)
      ch:close()
      assert.same({ true, nil, "closed" }, { t:join(1) })
    end)
  end)

  it("a popper that timed out is not handed a value", function()
    run(function()
      local ch = coserve.channel(1)
      assert.same({ nil, "timeout" }, { ch:pop(0.001) })
      ch:push("kept")
      assert.equal("kept", ch:pop(0.1))
    end)
  end)
end)

describe("coserve.waitgroup", function()
  it("wait returns once every add is matched by done", function()
    run(function()
      local wg, n = coserve.waitgroup(), 0
      for i = 1, 3 do
        wg:add(1)
        coserve.spawn(function() coserve.sleep(0.001 * i) n = n + 1 wg:done() end)
      end
      assert.is_true(wg:wait(1))
      assert.equal(3, n)
    end)
  end)

  it("wait times out with nil, 'timeout'", function()
    run(function()
      local wg = coserve.waitgroup()
      wg:add(1)
      assert.same({ nil, "timeout" }, { wg:wait(0.01) })
    end)
  end)
end)

describe("coserve.semaphore", function()
  it("lets at most n tasks in at once", function()
    run(function()
      local sem, inside, most = coserve.semaphore(2), 0, 0
      local wg = coserve.waitgroup()
      for _ = 1, 6 do
        wg:add(1)
        coserve.spawn(function()
          sem:wait()
          inside = inside + 1
          most = math.max(most, inside)
          coserve.sleep(0.002)
          inside = inside - 1
          sem:post()
          wg:done()
        end)
      end
      wg:wait(2)
      assert.equal(2, most)
      assert.equal(2, sem:count())
    end)
  end)

  it("wait times out when no permit comes", function()
    run(function()
      assert.same({ nil, "timeout" }, { coserve.semaphore(0):wait(0.01) })
    end)
  end)
end)

describe("coserve.after and coserve.every", function()
  it("after runs the function once, in its own coroutine", function()
    run(function()
      local calls = 0
      coserve.after(0.01, function() calls = calls + 1 coserve.sleep(0) end)
      coserve.sleep(0.05)
      assert.equal(1, calls)
    end)
  end)

  it("every repeats until canceled", function()
    run(function()
      local calls = 0
      local timer = coserve.every(0.005, function() calls = calls + 1 end)
      coserve.sleep(0.06)
      timer:cancel()
      local seen = calls
      assert.is_true(seen >= 3)
      coserve.sleep(0.02)
      assert.equal(seen, calls)
    end)
  end)

  it("a canceled after never runs", function()
    run(function()
      local ran = false
      coserve.after(0.01, function() ran = true end):cancel()
      coserve.sleep(0.03)
      assert.is_false(ran)
    end)
  end)
end)

describe("coserve.exiting", function()
  it("is false until a graceful shutdown begins, then true", function()
    run(function()
      assert.is_false(coserve.exiting())
      local s = testing.server(function(conn)
        while not coserve.exiting() do coserve.sleep(0.005) end
        conn:send("bye\n")
      end)
      local c = assert(testing.connect(s))
      coserve.sleep(0.02)
      coserve.shutdown(1)
      assert.is_true(coserve.exiting())
      assert.equal("bye", c:receive(nil, 1))
      c:close()
    end)
    run(function() assert.is_false(coserve.exiting()) end)
  end)

  it("wait_exiting parks until the shutdown begins, or its timeout, or a cancel", function()
    run(function()
      assert.same({ nil, "timeout" }, { coserve.wait_exiting(0.01) })
      local canceled = coserve.spawn(function() return coserve.wait_exiting() end)
      local woken = {}
      for i = 1, 3 do
        coserve.spawn(function()
          -- A loop that works every 10 s, and stops at once on a shutdown
          -- (true) or a cancel; only "timeout" goes round again.
          local ok, err
          repeat ok, err = coserve.wait_exiting(10) until err ~= "timeout"
          woken[i] = ok
        end)
      end
      coserve.sleep(0.02)
      canceled:cancel()
      assert.same({ true, nil, "canceled" }, { canceled:join() })
      assert.same({}, woken)
      coserve.shutdown()
      coserve.sleep(0) -- the woken tasks run
      coserve.sleep(0)
      assert.same({ true, true, true }, woken)
      assert.is_true(coserve.wait_exiting()) -- at once, once it has begun
    end)
    -- A new run starts without a shutdown.
    run(function() assert.same({ nil, "timeout" }, { coserve.wait_exiting(0) }) end)
  end)
end)

describe("coserve.resolve", function()
  it("resolves localhost to a loopback address", function()
    run(function()
      local addrs = assert(coserve.resolve("localhost"))
      local loopback = false
      for _, a in ipairs(addrs) do loopback = loopback or a == "127.0.0.1" or a == "::1" end
      assert.is_true(loopback)
    end)
  end)

  it("returns literals as they are", function()
    run(function()
      assert.same({ "::1" }, coserve.resolve("::1"))
    end)
  end)

  it("returns nil, err for a name that does not exist", function()
    run(function()
      local addrs, err = coserve.resolve("no-such-host.invalid")
      assert.is_nil(addrs)
      assert.is_string(err)
    end)
  end)
end)

describe("coserve.testing", function()
  it("fails a case that runs past its deadline", function()
    local ok, err = pcall(testing.run, function() coserve.sleep(5) end, { timeout = 0.05 })
    assert.is_false(ok)
    assert.matches("deadline", err)
  end)

  it("fails a case that leaves a task running", function()
    local ok, err = pcall(testing.run, function()
      coserve.spawn(function() coserve.sleep(5) end)
    end)
    assert.is_false(ok)
    assert.matches("left 1 task", err)
    assert.equal(0, core.stats().tasks)
  end)

  it("fails a case that keeps a connection open, and that case only", function()
    local kept
    local ok, err = pcall(testing.run, function()
      local s = testing.server(function(conn) conn:receive() end)
      kept = assert(testing.connect(s))
      -- The server's side closes when the server shuts down; the client's
      -- is kept outside the case.
      s:shutdown()
    end)
    assert.is_false(ok)
    assert.matches("test left 1 handle%(s%), 1 connection%(s%), 0 task%(s%) open %(open handles: tcp", err)
    -- The next case does not inherit the failure.
    testing.run(function() coserve.sleep(0) end)
    kept:close()
    testing.run(function() coserve.sleep(0) end)
    assert.equal(0, core.stats().connections)
  end)
end)
