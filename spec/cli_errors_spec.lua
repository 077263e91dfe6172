-- The CLI's and the master's error paths (issue 9, coverage): options
-- without their argument, a grace period that runs out, handler hooks that
-- fail, workers that do not stop, reloads that cannot happen, a pid file
-- that cannot be written. Every child is stopped by PID; where a case
-- expects a clean exit it asserts the status.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local BIN = proc.BIN

-- A worker app: serves "w<id>" on PORT, reports its PID on stderr (not
-- buffered), and blocks in C for BLOCK seconds first, before it is ready,
-- when BLOCK is set in its environment.
local WORKER_APP = [[
local coserve = require "coserve"
local ffi = require "ffi"
ffi.cdef "int getpid(void); int usleep(unsigned int usec);"
local block = tonumber(os.getenv("BLOCK_MS") or "0")
if block > 0 then ffi.C.usleep(block * 1000) end
local s = coserve.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
s:handle(function(conn)
  conn:send("w" .. coserve.worker_id() .. "\n")
  conn:receive()
end)
io.stderr:write(("worker %d pid %d\n"):format(coserve.worker_id(), ffi.C.getpid()))
if os.getenv("STUCK") then
  -- Ready (the main task waits), then stuck in C for up to 10 s: SIGTERM
  -- cannot be seen (a signal only cuts one usleep short).
  coserve.after(0.05, function()
    local t0 = os.time()
    while os.time() - t0 < 10 do ffi.C.usleep(100000) end
  end)
end
assert(s:start())
]]

local function app(dir, text)
  return proc.write(dir .. "/app.lua", text)
end

local function count(s, pattern)
  return select(2, s:gsub(pattern, ""))
end

-- The PIDs the workers reported, newest last.
local function worker_pids(p)
  local pids = {}
  for pid in p:stderr():gmatch("worker %d+ pid (%d+)") do pids[#pids + 1] = tonumber(pid) end
  return pids
end

local function hello(port)
  local line
  testing.run(function()
    local c = coserve.connect("127.0.0.1", port, { timeout = 3 })
    if c then
      line = c:receive("*l", 3)
      c:close()
    end
  end, { timeout = 10 })
  return line
end

describe("CLI usage errors", function()
  it("an option that needs an argument says so, with exit status 2", function()
    for _, o in ipairs({ "-e", "--eval", "--pid-file" }) do
      local r = proc.run({ BIN, o })
      assert.equal(2, r.status)
      assert.matches("option '" .. o .. "' needs an argument", r.err, 1, true)
    end
  end)

  it("no app.lua is a usage error", function()
    local r = proc.run({ BIN })
    assert.equal(2, r.status)
    assert.matches("no app.lua given", r.err, 1, true)
    r = proc.run({ BIN, "--log-level", "debug" })
    assert.equal(2, r.status)
    assert.matches("no app.lua given", r.err, 1, true)
  end)

  it("-- ends the options: a script named like an option runs", function()
    local dir = proc.tmpdir()
    proc.write(dir .. "/-w", "print('ran with', ...)")
    local r = proc.run({ BIN, "--", dir .. "/-w", "x" })
    proc.rmdir(dir)
    assert.equal(0, r.status, r.err)
    assert.equal("ran with\tx\n", r.out)
  end)
end)

describe("CLI shutdown", function()
  it("a task that outlives the grace period is cut off: exit 0; a second TERM changes nothing", function()
    local dir = proc.tmpdir()
    app(dir, [[
      local coserve = require "coserve"
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      s:handle(function(conn) conn:receive() end)
      coserve.spawn(function() assert(s:start()) end)
      coserve.spawn(function() coserve.sleep(30) end)
      io.stderr:write("listening\n")
    ]])
    local p = proc.start({ BIN, "--grace", "0.2", dir .. "/app.lua" })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return p:stderr():find("listening", 1, true) end), p:stderr())
    p:signal("TERM")
    proc.sleep(0.05)
    p:signal("TERM")
    -- Cut off 0.1 s after the grace period, long before the 30 s sleep.
    assert.equal(0, p:wait_exit(5), p:stderr())
  end)

  it("failing onerror and onshutdown hooks are logged; the process goes on", function()
    local dir = proc.tmpdir()
    app(dir, [[
      local coserve = require "coserve"
      local function run_server(setup)
        local s = coserve.server{ host = "127.0.0.1", port = 0 }
        s:handle(function(conn) conn:receive() error("handler broke") end)
        setup(s)
        coserve.spawn(function() assert(s:start()) end)
        local c = assert(coserve.connect("127.0.0.1", s.port))
        c:send("x\n")
        assert(c:receive() == nil)
        c:close()
        s:shutdown(1)
      end
      run_server(function(s) s:onerror(function() error("onerror broke") end) end)
      run_server(function(s) s:onshutdown(function() error("onshutdown broke") end) end)
      print("done")
    ]])
    local r = proc.run({ BIN, dir .. "/app.lua" })
    proc.rmdir(dir)
    assert.equal(0, r.status, r.err)
    assert.equal("done\n", r.out)
    assert.matches("server onerror handler failed: [^\n]*onerror broke", r.err)
    assert.matches("connection handler failed: [^\n]*handler broke", r.err)
    assert.matches("server onshutdown handler failed: [^\n]*onshutdown broke", r.err)
  end)
end)

describe("master errors", function()
  it("a pid file that cannot be written is reported; the master serves anyway", function()
    local dir = proc.tmpdir()
    local port = proc.free_port()
    app(dir, WORKER_APP)
    local p = proc.start({ BIN, "-w", "2", "--pid-file", dir .. "/missing/pid", dir .. "/app.lua",
                           tostring(port) })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return #worker_pids(p) == 2 end), p:stderr())
    assert.matches("cannot write " .. dir .. "/missing/pid", p:stderr(), 1, true)
    assert.matches("^w[12]$", hello(port))
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5), p:stderr())
  end)

  it("workers that ignore SIGTERM past grace + 2 s are killed; the master exits 0", function()
    local dir = proc.tmpdir()
    local port = proc.free_port()
    app(dir, WORKER_APP)
    local p = proc.start({ "env", "STUCK=1", BIN, "-w", "2", "--grace", "0", dir .. "/app.lua",
                           tostring(port) })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return #worker_pids(p) == 2 end), p:stderr())
    proc.sleep(0.2) -- both are stuck in usleep now
    p:signal("TERM")
    assert.equal(0, p:wait_exit(8), p:stderr())
    assert.matches("2 worker(s) still running after the grace period: killed", p:stderr(), 1, true)
  end)

  it("a second SIGINT exits at once with status 130", function()
    local dir = proc.tmpdir()
    local port = proc.free_port()
    app(dir, WORKER_APP)
    local p = proc.start({ "env", "STUCK=1", BIN, "-w", "2", dir .. "/app.lua", tostring(port) })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return #worker_pids(p) == 2 end), p:stderr())
    proc.sleep(0.2)
    p:signal("INT")
    proc.sleep(0.2)
    p:signal("INT")
    assert.equal(130, p:wait_exit(5), p:stderr())
    assert.matches("coserve: interrupted", p:stderr(), 1, true)
  end)

  it("SIGHUP during a reload, or while the old generation drains, is ignored", function()
    local dir = proc.tmpdir()
    local port = proc.free_port()
    app(dir, WORKER_APP)
    -- Each worker takes 0.5 s to get ready: the second HUP finds the
    -- reload under way.
    local p = proc.start({ "env", "BLOCK_MS=500", BIN, "-w", "2", dir .. "/app.lua",
                           tostring(port) })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return #worker_pids(p) == 2 end), p:stderr())
    testing.run(function()
      -- A connection held open keeps its old worker draining after the reload.
      local c = assert(coserve.connect("127.0.0.1", port, { timeout = 3 }))
      assert.matches("^w[12]$", c:receive("*l", 3))
      p:signal("HUP")
      proc.sleep(0.1)
      p:signal("HUP")
      assert(proc.poll(5, function()
        return p:stderr():find("new worker(s) ready", 1, true)
      end), p:stderr())
      p:signal("HUP")
      assert(proc.poll(3, function()
        return p:stderr():find("previous generation is still draining", 1, true)
      end), p:stderr())
      c:close()
    end, { timeout = 15 })
    assert.matches("reload ignored: a reload is under way", p:stderr(), 1, true)
    assert.matches("^w[12]$", hello(port))
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5), p:stderr())
  end)

  it("a reload that cannot start a worker fails; the old workers keep serving", function()
    local dir = proc.tmpdir()
    local port = proc.free_port()
    app(dir, WORKER_APP)
    -- The master runs from a copy of the binary that is then removed: a
    -- new worker cannot be started from it.
    local copy = dir .. "/coserve-copy"
    assert(os.execute(("cp %s %s"):format(proc.quote(BIN), proc.quote(copy))) == 0)
    local p = proc.start({ copy, "-w", "2", dir .. "/app.lua", tostring(port) })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return #worker_pids(p) == 2 end), p:stderr())
    os.remove(copy)
    p:signal("HUP")
    assert(proc.poll(5, function()
      return p:stderr():find("reload failed (a new worker could not be started)", 1, true)
    end), p:stderr())
    assert.matches("cannot start worker 1", p:stderr(), 1, true)
    assert.matches("^w[12]$", hello(port))
    -- A worker that dies cannot be restarted either: the master gives up
    -- with status 1.
    os.execute("kill -KILL " .. worker_pids(p)[1])
    assert.equal(1, p:wait_exit(8), p:stderr())
    assert.matches("worker %d died by signal 9", p:stderr())
  end)
end)
