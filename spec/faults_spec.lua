-- Faults under load (issue 9): a worker killed with -9 in the middle of a
-- wrk run, and a server that runs out of file descriptors while 1000
-- clients connect. The servers run as the CLI would, children of this
-- process recorded by PID and stopped by PID.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

-- The sockets a process holds (/proc/PID/fd links to "socket:[inode]").
local function sockets(pid)
  local f = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
  local n = 0
  for line in f:lines() do
    if line:find("socket:", 1, true) then n = n + 1 end
  end
  f:close()
  return n
end

local function fd_count(pid)
  local f = io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l")
  local n = tonumber(f:read("*a"))
  f:close()
  return n
end

-- utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15).
local CLK_TCK = tonumber(io.popen("getconf CLK_TCK"):read("*a")) or 100
local function cpu_seconds(pid)
  local stat = proc.read("/proc/" .. pid .. "/stat") or ""
  local fields = {}
  for field in (stat:match("%) (.*)$") or ""):gmatch("%S+") do fields[#fields + 1] = field end
  -- fields[1] is field 3 (state): utime is field 14, stime field 15.
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

-- FAULTS_VERBOSE=1 prints the figures each case measured (for docs/).
local function note(fmt, ...)
  if os.getenv("FAULTS_VERBOSE") then io.stderr:write(("[faults] " .. fmt .. "\n"):format(...)) end
end

describe("faults under load", function()
  describe("kill -9 of one worker of coserve -w 2 during a wrk run", function()
    -- Answers with the PID of the worker that served the request.
    local APP = [[
      local coserve = require "coserve"
      local http = require "coserve.http"
      local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
      local pid = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
      app:route("GET", "/", function(_, res)
        res:send(200, { ["content-type"] = "text/plain" }, pid .. "\n")
      end)
      coserve.log("info", "listening")
      assert(app:start())
    ]]
    -- wrk counts 200s and other statuses per wall-clock second in each
    -- thread, and prints them with its socket errors when it is done.
    local WRK_SCRIPT = [[
      local threads = {}
      function setup(thread) threads[#threads + 1] = thread end
      function init() ok, bad = {}, {} end
      function response(status)
        local t = os.time()
        if status == 200 then ok[t] = (ok[t] or 0) + 1 else bad[t] = (bad[t] or 0) + 1 end
      end
      function done(summary)
        local e = summary.errors
        io.write(("errors connect %d read %d write %d timeout %d status %d\n")
          :format(e.connect, e.read, e.write, e.timeout, e.status))
        for _, thread in ipairs(threads) do
          for t, n in pairs(thread:get("ok")) do io.write(("ok %d %d\n"):format(t, n)) end
          for t, n in pairs(thread:get("bad")) do io.write(("bad %d %d\n"):format(t, n)) end
        end
      end
    ]]

    it("fails at most the requests on that worker's connections, restarts it, and the run goes on with 200s", function()
      local dir = proc.tmpdir()
      finally(function() proc.rmdir(dir) end)
      proc.write(dir .. "/app.lua", APP)
      proc.write(dir .. "/count.lua", WRK_SCRIPT)
      local port = proc.free_port()
      local p = proc.start({ proc.BIN, "-w", "2", dir .. "/app.lua", tostring(port) })
      finally(function() p:stop() end)
      assert(p:wait_count("info: listening", 2, 10), "the workers did not start: " .. p:stderr())
      local before = proc.children(p.pid)
      assert.equal(2, #before)
      local victim, survivor = before[1], before[2]
      local idle_sockets = sockets(victim)

      local wrk = proc.start({ "wrk", "-t2", "-c20", "-d6s", "--timeout", "5s", "-s", dir .. "/count.lua",
                               "http://127.0.0.1:" .. port .. "/" })
      finally(function() wrk:stop() end)
      local held, killed_at
      testing.run(function()
        coserve.sleep(2)
        -- wrk's connections are keep-alive: the victim's count is stable.
        held = sockets(victim) - idle_sockets
        killed_at = os.time()
        os.execute("kill -9 " .. victim)
      end, { timeout = 10 })
      local status = proc.poll(20, function() return wrk:status() end)
      local out = wrk:stdout()
      assert.equal(0, status, out .. wrk:stderr())

      -- Only the victim's connections may have failed, at most one
      -- request each: the one in flight when it died.
      assert.is_true(held > 0, "no wrk connection landed on the killed worker")
      local c, r, w, t, s = out:match("errors connect (%d+) read (%d+) write (%d+) timeout (%d+) status (%d+)")
      assert.is_not_nil(c, out)
      local failed = c + r + w + t + s
      note("kill -9: the victim held %d of 20 connections; wrk: connect %s read %s write %s timeout %s status %s",
           held, c, r, w, t, s)
      assert.is_true(failed <= held, ("%d failed requests, but the killed worker held %d connections\n%s")
        :format(failed, held, out))

      -- After the kill, wrk kept getting 200s, and nothing else.
      local ok_after, bad_after = 0, 0
      for kind, sec, n in out:gmatch("(%a+) (%d+) (%d+)\n") do
        sec, n = tonumber(sec), tonumber(n)
        if sec > killed_at + 1 then
          if kind == "ok" then ok_after = ok_after + n elseif kind == "bad" then bad_after = bad_after + n end
        end
      end
      note("kill -9: %d responses 200 and %d others from the second after the kill on; %s",
           ok_after, bad_after, out:match("(%d+ requests in [^\n]*)") or "")
      assert.is_true(ok_after > 0, "no 200 after the kill\n" .. out)
      assert.equal(0, bad_after)

      -- The master logged the death and started a new worker, which serves.
      assert.matches("worker %d died by signal 9", p:stderr())
      local replacement
      for _, k in ipairs(proc.children(p.pid)) do
        if k ~= victim and k ~= survivor then replacement = k end
      end
      assert.is_not_nil(replacement, "no new worker\n" .. p:stderr())
      assert.matches("coserve%[w%d:" .. replacement .. "%] info: listening", p:stderr())
      testing.run(function()
        local seen = {}
        for _ = 1, 60 do
          local conn = assert(coserve.connect("127.0.0.1", port, { timeout = 2 }))
          conn:send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
          local all = assert(conn:receive("*a", 3))
          conn:close()
          assert.matches("^HTTP/1%.1 200 ", all)
          seen[tonumber(all:match("\r\n\r\n(%d+)\n$"))] = true
          if seen[replacement] and seen[survivor] then break end
        end
        assert.is_true(seen[replacement], "the new worker answered no request")
        assert.is_true(seen[survivor], "the surviving worker answered no request")
      end, { timeout = 20 })
      p:signal("TERM")
      assert.equal(0, p:wait_exit(15))
    end)
  end)

  describe("EMFILE under load: ulimit -n 256 and 1000 clients", function()
    local APP = [[
      local coserve = require "coserve"
      local server = coserve.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
      server:handle(function(conn)
        while true do
          local line = conn:receive("*l")
          if not line then return end
          conn:send(line .. "\n")
        end
      end)
      local ok, err = true
      coserve.spawn(function() ok, err = server:start() end)
      assert(ok, err)
      coserve.log("info", "listening")
    ]]
    local CLIENTS = 1000

    it("does not spin, keeps serving the connections it has, and accepts again afterwards", function()
      local limits = proc.read("/proc/self/limits") or ""
      local soft = tonumber(limits:match("Max open files%s+(%d+)"))
      assert.is_true(soft == nil or soft >= CLIENTS + 200,
        "this spec needs ulimit -n >= " .. (CLIENTS + 200) .. " for its own clients, has " .. tostring(soft))
      local dir = proc.tmpdir()
      finally(function() proc.rmdir(dir) end)
      proc.write(dir .. "/app.lua", APP)
      local port = proc.free_port()
      local p = proc.start({ "sh", "-c", 'ulimit -n 256; exec "$0" "$@"', proc.BIN,
                             dir .. "/app.lua", tostring(port) })
      finally(function() p:stop() end)
      assert(proc.poll(10, function() return p:stderr():find("info: listening") end),
        "the server did not start: " .. p:stderr())
      local idle_fds = fd_count(p.pid)

      local stats = { served = 0, shed = 0, pings = 0, ping_failures = 0, connect_failures = 0 }
      local cpu, wall, shed_in_window
      testing.run(function()
        local stop, wg = false, coserve.waitgroup()
        -- Each client connects and sends a line. Answered, it stays and
        -- pings every 0.5 s; shed (closed, or no answer in 2 s), it retries
        -- 0.25 s later, which keeps the server at its limit.
        for i = 1, CLIENTS do
          wg:add(1)
          coserve.spawn(function()
            local conn
            while not stop do
              local c = coserve.connect("127.0.0.1", port, { timeout = 2 })
              if not c then
                stats.connect_failures = stats.connect_failures + 1
                coserve.sleep(0.25)
              else
                c:send("hello " .. i .. "\n")
                if c:receive("*l", 2) == "hello " .. i then
                  stats.served = stats.served + 1
                  conn = c
                  break
                end
                c:close()
                stats.shed = stats.shed + 1
                coserve.sleep(0.25)
              end
            end
            while conn and not stop do
              coserve.sleep(0.5)
              if stop then break end
              conn:send("ping\n")
              if conn:receive("*l", 5) == "ping" then
                stats.pings = stats.pings + 1
              else
                stats.ping_failures = stats.ping_failures + 1
                break
              end
            end
            if conn then conn:close() end
            wg:done()
          end)
          if i % 100 == 0 then coserve.sleep(0.01) end
        end
        -- The server reaches its limit and sheds the others.
        assert(proc.poll(15, function() return stats.shed >= 200 and stats.served >= 100 end),
          "no sustained EMFILE: " .. stats.served .. " served, " .. stats.shed .. " shed")
        -- Over 3 s of it, the server's CPU time stays a fraction of the
        -- wall time: a listener spinning on EMFILE would use all it can
        -- get, and on a 2-core machine shared with other work (this spec's
        -- own clients included) a busy loop measured 40 % and more, so the
        -- bound is a quarter. Shedding costs the server about 5 %.
        local shed0, cpu0, t0 = stats.shed, cpu_seconds(p.pid), coserve.now()
        coserve.sleep(3)
        cpu, wall = cpu_seconds(p.pid) - cpu0, coserve.now() - t0
        shed_in_window = stats.shed - shed0
        stop = true
        assert(wg:wait(20), "the clients did not stop")
      end, { timeout = 60 })

      note("EMFILE: %d served, %d shed (%d in the 3 s window), %d connect failures, %d pings answered, %d failed; CPU %.2f s in %.2f s (%.0f %%)",
           stats.served, stats.shed, shed_in_window, stats.connect_failures, stats.pings, stats.ping_failures,
           cpu, wall, 100 * cpu / wall)
      assert.is_true(shed_in_window >= 100,
        "EMFILE was not sustained while the CPU was measured: " .. shed_in_window .. " shed")
      assert.is_true(cpu < 0.25 * wall, ("the server used %.2f s of CPU in %.2f s at EMFILE"):format(cpu, wall))
      -- The connections it had were served throughout.
      assert.is_true(stats.served >= 100 and stats.served < CLIENTS, stats.served .. " served")
      assert.is_true(stats.pings > 0, "no ping answered")
      assert.equal(0, stats.ping_failures)

      -- Once the clients are gone, it accepts and serves again, and has no
      -- more descriptors open than before the storm.
      testing.run(function()
        local wg, answered = coserve.waitgroup(), 0
        for i = 1, 50 do
          wg:add(1)
          coserve.spawn(function()
            local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5 }))
            c:send("after " .. i .. "\n")
            if c:receive("*l", 5) == "after " .. i then answered = answered + 1 end
            c:close()
            wg:done()
          end)
        end
        assert(wg:wait(10))
        assert.equal(50, answered)
      end, { timeout = 20 })
      assert.is_true(proc.poll(5, function() return fd_count(p.pid) <= idle_fds end),
        fd_count(p.pid) .. " descriptors open after the storm, " .. idle_fds .. " before")
      p:signal("TERM")
      assert.equal(0, p:wait_exit(15))
    end)
  end)
end)
