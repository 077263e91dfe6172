-- The `coserve` CLI (SPEC §6), run as a child process the way a user runs
-- it: options and their exit statuses, error reports, `arg`, the end of
-- the run, and signals. COSERVE_BIN names the binary under test.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local BIN = proc.BIN

-- A server for the signal cases. It prints its port, and "got LINE" once a
-- request has arrived; arg[1] picks what the handler does before replying:
--   slow    sleeps 0.5 s          finish   waits for a second line
--   hang    waits for the shutdown, prints "draining", then sleeps 60 s
local SERVER_APP = [[
local coserve = require "coserve"
local mode = arg[1]
local server = coserve.server{ host = "127.0.0.1", port = 0 }
server:handle(function(conn)
  local line = conn:receive("*l")
  if not line then return end
  print("got " .. line) io.stdout:flush()
  if mode == "slow" then
    coserve.sleep(0.5)
  elseif mode == "finish" then
    conn:receive("*l")
  elseif mode == "hang" then
    while not coserve.exiting() do coserve.sleep(0.01) end
    print("draining") io.stdout:flush()
    coserve.sleep(60)
  end
  conn:send("reply " .. line .. "\n")
end)
local ok, err = true
coserve.spawn(function() ok, err = server:start() end)
assert(ok, err)
print("port " .. server.port) io.stdout:flush()
]]

describe("coserve CLI", function()
  local dir

  before_each(function() dir = proc.tmpdir() end)
  after_each(function() proc.rmdir(dir) end)

  local function app(name, source) return proc.write(dir .. "/" .. name, source) end

  local function run(...) return proc.run({ BIN, ... }) end

  -- Starts SERVER_APP with CLI options and a mode; stopped by PID whatever
  -- the case's outcome. Returns the process and the port it listens on.
  local function start_server(options, mode)
    local argv = { BIN }
    for _, o in ipairs(options) do argv[#argv + 1] = o end
    argv[#argv + 1] = app("server.lua", SERVER_APP)
    argv[#argv + 1] = mode
    local p = proc.start(argv)
    finally(function() p:stop() end)
    return p, tonumber(p:wait_output("port (%d+)\n"))
  end

  describe("options", function()
    it("--version prints the coserve, LuaJIT and libuv versions and exits 0", function()
      local r = run("--version")
      assert.equal(0, r.status)
      assert.truthy(r.out:find("coserve " .. coserve.version, 1, true), r.out)
      assert.truthy(r.out:find("LuaJIT %d+%.%d+"), r.out)
      assert.truthy(r.out:find("libuv " .. coserve.libuv_version, 1, true), r.out)
    end)

    it("--help prints the usage with every option and exits 0", function()
      local r = run("--help")
      assert.equal(0, r.status)
      assert.truthy(r.out:find("usage: coserve", 1, true), r.out)
      for _, o in ipairs{ "--workers", "--grace", "--check", "--eval", "--log-level", "--version" } do
        assert.truthy(r.out:find(o, 1, true), o .. " missing from --help")
      end
    end)

    it("an unknown flag exits 2 with a message naming it and the usage on stderr", function()
      local r = run("--frobnicate", app("never.lua", "print('ran')\n"))
      assert.equal(2, r.status)
      assert.equal("", r.out)
      assert.truthy(r.err:find("^coserve: [^\n]*%-%-frobnicate"), r.err)
      assert.truthy(r.err:find("usage: coserve", 1, true), r.err)
    end)

    it("an invalid --log-level exits 2 with the usage, a valid one is accepted", function()
      local script = app("level.lua", "print('ran')\n")
      local r = run("--log-level", "loud", script)
      assert.equal(2, r.status)
      assert.equal("", r.out)
      assert.truthy(r.err:find("^coserve: [^\n]*loud"), r.err)
      assert.truthy(r.err:find("usage: coserve", 1, true), r.err)
      r = run("--log-level", "debug", script)
      assert.equal(0, r.status, r.err)
      assert.equal("ran\n", r.out)
    end)

    it("-w 0 exits 2 with a message; -w 1 runs the app in one process", function()
      local script = app("workers.lua", "print('ran', require('coserve').worker_id())\n")
      local r = run("-w", "0", script)
      assert.equal(2, r.status)
      assert.equal("", r.out)
      assert.truthy(r.err:find("^coserve: [^\n]*workers"), r.err)
      r = run("-w", "1", script)
      assert.equal(0, r.status, r.err)
      assert.equal("ran\t0\n", r.out)
    end)
  end)

  describe("errors", function()
    it("a missing file exits 1 with a one-line `coserve: ...` message", function()
      local missing = dir .. "/no_such_app.lua"
      local r = run(missing)
      assert.equal(1, r.status)
      assert.truthy(r.err:find("^coserve: [^\n]*no_such_app%.lua[^\n]*\n$"), r.err)
    end)

    it("a syntax error exits 1 reporting `coserve: file.lua:LINE:`", function()
      local r = run(app("syntax.lua", "local x = 1\nlocal y = = 2\n"))
      assert.equal(1, r.status)
      assert.truthy(r.err:find("^coserve: [^\n]*syntax%.lua:2: "), r.err)
    end)

    it("a load-time error prints `coserve: file.lua:LINE: message` and a traceback, exit 1",
      function()
        local r = run(app("load_error.lua", [[
local function check(v)
  if not v then
    error("config missing")
  end
end
check(false)
print("not reached")
]]))
        assert.equal(1, r.status)
        assert.equal("", r.out)
        assert.truthy(r.err:find("^coserve: [^\n]*load_error%.lua:3: config missing\n"), r.err)
        assert.truthy(r.err:find("stack traceback:", 1, true), r.err)
        assert.truthy(r.err:find("load_error.lua:6", 1, true), r.err) -- the calling line
      end)

    it("a runtime error in the main chunk (after it has waited) is reported the same way, exit 1",
      function()
        local r = run(app("run_error.lua", [[
local coserve = require "coserve"
coserve.sleep(0.01)
local settings = nil
print(settings.port)
]]))
        assert.equal(1, r.status)
        assert.truthy(r.err:find("^coserve: [^\n]*run_error%.lua:4: attempt to index"), r.err)
        assert.truthy(r.err:find("stack traceback:", 1, true), r.err)
      end)

    -- Found while writing this spec: the main chunk's error used to be
    -- reported only once the loop had nothing left, so with a server
    -- listening the process hung silently. The error must come at once, and
    -- first: not after a "task failed: ... canceled" from the unwinding.
    it("a main-chunk error while a server listens is reported at once and first, exit 1",
      function()
        local r = proc.run({ BIN, app("error_after_start.lua", [[
local coserve = require "coserve"
local server = coserve.server{ host = "127.0.0.1", port = 0 }
server:handle(function(conn) end)
coserve.spawn(function() assert(server:start()) end)
error("typo after start")
]]) }, { timeout = 4 })
        assert.truthy(r.err:find("^coserve: [^\n]*error_after_start%.lua:5: typo after start"),
                      ("status %s, stderr: %s"):format(tostring(r.status), r.err))
        assert.equal(1, r.status)
      end)
  end)

  describe("running", function()
    it("--check compiles a good file and exits 0 without running it", function()
      local r = run("--check", app("good.lua", "print('ran')\nerror('must not run')\n"))
      assert.equal(0, r.status, r.err)
      assert.equal("", r.out)
      assert.equal("", r.err)
    end)

    it("--check exits 1 on a file with a syntax error, naming file and line", function()
      local r = run("--check", app("bad.lua", "print('ok')\nfunction (\n"))
      assert.equal(1, r.status)
      assert.equal("", r.out)
      assert.truthy(r.err:find("^coserve: [^\n]*bad%.lua:2: "), r.err)
    end)

    it("-e CODE runs CODE as the app, with coserve available", function()
      local r = run("-e", "local c = require 'coserve'; c.sleep(0.01); print('evaluated', 1 + 2)")
      assert.equal(0, r.status, r.err)
      assert.equal("evaluated\t3\n", r.out)
    end)

    it("`arg` is built as luajit builds it and `...` holds the script's arguments", function()
      local script = app("args.lua", [[
print(arg[0], arg[1], arg[2], #arg, arg[-1], arg[-2], arg[-3], arg[-4])
print(select("#", ...), ...)
]])
      local r = run("--log-level", "warn", script, "one", "two words")
      assert.equal(0, r.status, r.err)
      assert.equal(table.concat({ script, "one", "two words", "2", "warn", "--log-level", BIN,
                                  "nil" }, "\t") .. "\n2\tone\ttwo words\n", r.out)
    end)

    it("exits 0 once the main chunk has returned and its spawned task has finished", function()
      local r = run(app("linger.lua", [[
local coserve = require "coserve"
coserve.spawn(function()
  coserve.sleep(0.1)
  print("task done")
end)
print("main done")
]]))
      assert.equal(0, r.status, r.err)
      assert.equal("main done\ntask done\n", r.out)
    end)

    it("regression: the main chunk is a real task (metatable set): spawn/join, waitgroup:wait "
       .. "and core.current() work in it", function()
      local r = run(app("main_task.lua", [[
local coserve = require "coserve"
local core = require "coserve.core"
local me = core.current()
assert(me, "core.current() is nil in the main chunk")
assert(tostring(me):find("^coserve%.task"), tostring(me))
local t = coserve.spawn(function(a, b) coserve.sleep(0.01) return a + b end, 40, 2)
local ok, sum = t:join(2)
assert(ok == true and sum == 42, tostring(sum))
local wg = coserve.waitgroup()
local done = 0
for _ = 1, 3 do
  wg:add(1)
  coserve.spawn(function() coserve.sleep(0.01) done = done + 1 wg:done() end)
end
assert(wg:wait(2) == true)
print("ok", done)
]]))
      assert.equal(0, r.status, r.err)
      assert.equal("ok\t3\n", r.out)
    end)
  end)

  describe("signals", function()
    it("SIGTERM is graceful: a request in flight still gets its reply, then exit 0", function()
      local p, port = start_server({}, "slow")
      testing.run(function()
        local c = assert(coserve.connect("127.0.0.1", port))
        assert(c:send("one\n"))
        p:wait_output("got one\n")
        p:signal("TERM")
        assert.same({ "reply one" }, { c:receive("*l", 5) })
        c:close()
      end, { timeout = 10 })
      assert.equal(0, p:wait_exit(5))
    end)

    it("SIGTERM stops accepting at once while a live connection drains", function()
      local p, port = start_server({ "--grace", "5" }, "finish")
      testing.run(function()
        local c = assert(coserve.connect("127.0.0.1", port))
        assert(c:send("one\n"))
        p:wait_output("got one\n")
        p:signal("TERM")
        local refused = proc.poll(3, function()
          local other, err = coserve.connect("127.0.0.1", port, { timeout = 1 })
          if other then other:close() return false end
          return err
        end)
        assert.equal("connection refused", refused)
        assert(c:send("done\n"))
        assert.same({ "reply one" }, { c:receive("*l", 5) })
        c:close()
      end, { timeout = 10 })
      assert.equal(0, p:wait_exit(5))
    end)

    it("--grace bounds the drain: a handler still busy is cut off, then exit 0", function()
      local p, port = start_server({ "--grace", "0.3" }, "hang")
      testing.run(function()
        local c = assert(coserve.connect("127.0.0.1", port))
        assert(c:send("one\n"))
        p:wait_output("got one\n")
        p:signal("TERM")
        local line, err = c:receive("*l", 5)
        assert.is_nil(line)
        assert.equal("closed", err)
        c:close()
      end, { timeout = 10 })
      -- The handler would sleep 60 s: exiting within 5 proves the cut-off.
      assert.equal(0, p:wait_exit(5))
    end)

    it("SIGINT with no connections shuts down and exits 0 without waiting for the grace period",
      function()
        local p = start_server({}, "slow")
        p:signal("INT")
        -- The default grace is 10 s; with nothing to drain it is not used.
        assert.equal(0, p:wait_exit(5))
      end)

    -- Found while writing this spec: after a signal the CLI drops every
    -- error of the main chunk (main.c reports only when no signal came).
    it("an error the main chunk raises after a SIGTERM shutdown is still reported, exit 1",
      function()
        local p = proc.start({ BIN, app("after_stop.lua", [[
local coserve = require "coserve"
local server = coserve.server{ host = "127.0.0.1", port = 0 }
server:handle(function(conn) end)
local serving = coserve.spawn(function() return server:start() end)
print("listening") io.stdout:flush()
assert(serving:join())
error("cleanup failed")
]]) })
        finally(function() p:stop() end)
        p:wait_output("listening\n")
        p:signal("TERM")
        local status = p:wait_exit(5)
        assert.truthy(p:stderr():find("^coserve: [^\n]*after_stop%.lua:7: cleanup failed"),
                      ("status %s, stderr: %s"):format(tostring(status), p:stderr()))
        assert.equal(1, status)
      end)

    it("a second SIGINT while draining exits at once with status 130", function()
      local p, port = start_server({ "--grace", "5" }, "hang")
      testing.run(function()
        local c = assert(coserve.connect("127.0.0.1", port))
        assert(c:send("one\n"))
        p:wait_output("got one\n")
        p:signal("INT")
        p:wait_output("draining\n")
        p:signal("INT")
        -- Before the 5 s grace ends: otherwise the status would be 0.
        assert.equal(130, p:wait_exit(4))
        c:close()
      end, { timeout = 10 })
    end)
  end)
end)
