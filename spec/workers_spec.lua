-- coserve -w N: a master and its workers (SPEC §6, issue 4).
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

-- An HTTP app that tells which process answered; /slow takes 1 s.
local APP = [[
  local coserve = require "coserve"
  local http = require "coserve.http"
  local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
  local pid = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
  app:route("GET", "/", function(_, res)
    res:send(200, { ["content-type"] = "text/plain" }, pid .. " " .. coserve.worker_id() .. "\n")
  end)
  app:route("GET", "/slow", function(_, res) coserve.sleep(1) res:send("slow done\n") end)
  coserve.log("info", "listening")
  assert(app:start())
]]

local free_port = proc.free_port

local function children(pid)
  local f = io.popen("pgrep -P " .. pid)
  local list = {}
  for line in f:lines() do list[#list + 1] = tonumber(line) end
  f:close()
  return list
end

local function alive(pid) return os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0 end

-- Starts `coserve -w 2 app.lua PORT` and waits until both workers listen.
local function start_master(extra)
  local dir = proc.tmpdir()
  proc.write(dir .. "/app.lua", APP)
  local port = free_port()
  local argv = { proc.BIN, "-w", "2" }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = dir .. "/app.lua"
  argv[#argv + 1] = tostring(port)
  local p = proc.start(argv)
  finally(function() p:stop() proc.rmdir(dir) end)
  assert(proc.poll(5, function()
    local _, n = p:stderr():gsub("info: listening", "")
    return n >= 2
  end), "the workers did not start: " .. p:stderr())
  return p, port, dir
end

local read_response = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                              .. "support/http_response.lua")

-- One request on a new connection: "pid worker_id".
local function ask(port, path)
  local c, err = coserve.connect("127.0.0.1", port, { timeout = 2 })
  if not c then return nil, err end
  c:send("GET " .. (path or "/") .. " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
  local all = c:receive("*a", 3)
  c:close()
  return all and all:match("\r\n\r\n(.*)\n$")
end

describe("coserve -w N", function()
  it("spreads 200 connections over both workers, each with its worker_id", function()
    local p, port = start_master()
    local seen = {}
    testing.run(function()
      for _ = 1, 200 do
        local answer = assert(ask(port))
        seen[answer] = (seen[answer] or 0) + 1
      end
    end, { timeout = 20 })
    local ids, pids = {}, {}
    for answer in pairs(seen) do
      local pid, id = answer:match("^(%d+) (%d+)$")
      pids[#pids + 1], ids[tonumber(id)] = tonumber(pid), true
    end
    assert.equal(2, #pids)
    assert.is_true(ids[1] and ids[2])
    assert.matches("coserve%[w1:%d+%] info: listening", p:stderr())
    p:signal("TERM")
    assert.equal(0, p:wait_exit(15))
  end)

  it("restarts a worker killed with -9 while the other keeps serving its clients", function()
    local p, port = start_master()
    local before = children(p.pid)
    assert.equal(2, #before)
    testing.run(function()
      -- Keep-alive clients; find one on each worker.
      local on = {}
      for _ = 1, 40 do
        local c = assert(coserve.connect("127.0.0.1", port))
        c:send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        local _, _, body = read_response(c)
        local pid = tonumber(body:match("^(%d+)"))
        if on[pid] then c:close() else on[pid] = c end
      end
      local victim, survivor = before[1], before[2]
      assert.is_not_nil(on[survivor], "no connection landed on the second worker")
      os.execute("kill -9 " .. victim)
      -- The survivor's client sees no error.
      for i = 1, 5 do
        on[survivor]:send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        local status, _, body = read_response(on[survivor])
        assert.equal(200, status, "request " .. i .. " to the surviving worker")
        assert.matches("^" .. survivor .. " ", body)
      end
      -- A new worker is serving within 2 s.
      local replaced
      for _ = 1, 40 do
        local kids = children(p.pid)
        for _, k in ipairs(kids) do
          if k ~= victim and k ~= survivor then replaced = k end
        end
        if replaced then break end
        coserve.sleep(0.05)
      end
      assert.is_not_nil(replaced, "no new worker within 2 s")
      for _, c in pairs(on) do c:close() end
    end, { timeout = 20 })
    p:signal("TERM")
    assert.equal(0, p:wait_exit(15))
  end)

  it("SIGTERM lets a 1 s request finish, then the master exits 0 and no worker is left", function()
    local p, port = start_master({ "--grace", "5" })
    local kids = children(p.pid)
    testing.run(function()
      local slow = coserve.spawn(function() return ask(port, "/slow") end)
      coserve.sleep(0.2)
      p:signal("TERM")
      assert.same({ true, "slow done" }, { slow:join(5) })
    end, { timeout = 20 })
    assert.equal(0, p:wait_exit(15))
    for _, k in ipairs(kids) do assert.is_false(alive(k)) end
  end)

  it("writes --pid-file with the master's PID and removes it at exit", function()
    local dir = proc.tmpdir()
    finally(function() proc.rmdir(dir) end)
    local p = start_master({ "--pid-file", dir .. "/coserve.pid" })
    assert.equal(tostring(p.pid), (proc.read(dir .. "/coserve.pid") or ""):match("%d+"))
    p:signal("TERM")
    assert.equal(0, p:wait_exit(15))
    assert.is_nil(proc.read(dir .. "/coserve.pid"))
  end)

  it("gives up, exit 1, when a worker keeps failing at start-up", function()
    local dir = proc.tmpdir()
    finally(function() proc.rmdir(dir) end)
    proc.write(dir .. "/bad.lua", 'error("broken at start")')
    local r = proc.run({ proc.BIN, "-w", "2", dir .. "/bad.lua" }, { timeout = 30 })
    assert.equal(1, r.status)
    assert.matches("broken at start", r.err)
    assert.matches("failed at start%-up 5 times in a row: giving up", r.err)
  end)

  it("refuses a bad worker count with exit 2", function()
    assert.equal(2, proc.run({ proc.BIN, "-w", "0", "-e", "" }).status)
    assert.equal(2, proc.run({ proc.BIN, "-w", "many", "-e", "" }).status)
  end)

  describe("reload on SIGHUP", function()
    local RELOAD_APP = [[
      local coserve = require "coserve"
      local http = require "coserve.http"
      local VERSION = "v1"
      local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
      app:route("GET", "/", function(_, res) res:send(200, { ["content-type"] = "text/plain" }, VERSION .. "\n") end)
      local echo = coserve.server{ host = "127.0.0.1", port = tonumber(arg[2]) }
      echo:handle(function(conn)
        while true do
          local line = conn:receive()
          if not line then return end
          conn:send(line .. " " .. VERSION .. "\n")
        end
      end)
      coserve.spawn(function() assert(echo:start()) end)
      coserve.log("info", "listening")
      assert(app:start())
    ]]

    local function start_reloadable()
      local dir = proc.tmpdir()
      proc.write(dir .. "/app.lua", RELOAD_APP)
      local port, echo_port = free_port(), free_port()
      local p = proc.start({ proc.BIN, "-w", "2", "--grace", "5", dir .. "/app.lua",
                             tostring(port), tostring(echo_port) })
      finally(function() p:stop() proc.rmdir(dir) end)
      assert(proc.poll(5, function()
        local _, n = p:stderr():gsub("info: listening", "")
        return n >= 2
      end), p:stderr())
      return p, port, echo_port, dir
    end

    local function wait_reloaded(p)
      assert(proc.poll(10, function() return p:stderr():find("new worker%(s%) ready") end),
        "no reload: " .. p:stderr())
    end

    it("under wrk: no socket error, no non-2xx, and the new code answers after", function()
      local p, port, _, dir = start_reloadable()
      local wrk_done
      testing.run(function()
        local t = coserve.spawn(function()
          return proc.run({ "wrk", "-t1", "-c20", "-d6s", "http://127.0.0.1:" .. port .. "/" },
                          { timeout = 30 })
        end)
        coserve.sleep(1.5)
        proc.write(dir .. "/app.lua", (RELOAD_APP:gsub('"v1"', '"v2"')))
        p:signal("HUP")
        wrk_done = select(2, t:join(20))
      end, { timeout = 40 })
      assert.equal(0, wrk_done.status, wrk_done.err)
      assert.matches("requests in", wrk_done.out)
      assert.not_matches("Socket errors", wrk_done.out)
      assert.not_matches("Non%-2xx", wrk_done.out)
      wait_reloaded(p)
      -- The old workers stop accepting when their loops handle the SIGTERM
      -- the master sent as it logged the reload; from then on, only v2.
      testing.run(function()
        local seen
        for _ = 1, 100 do
          seen = ask(port)
          if seen == "v2" then break end
          coserve.sleep(0.05)
        end
        assert.equal("v2", seen)
        for _ = 1, 20 do assert.equal("v2", ask(port)) end
      end, { timeout = 15 })
      p:signal("TERM")
      assert.equal(0, p:wait_exit(15))
    end)

    it("100 echo clients that stay connected across it get every echo (drained, not reset)", function()
      local p, _, echo_port, dir = start_reloadable()
      testing.run(function()
        local clients = {}
        for i = 1, 100 do clients[i] = assert(coserve.connect("127.0.0.1", echo_port)) end
        local function round(tag)
          local wg, failures = coserve.waitgroup(), {}
          for i, c in ipairs(clients) do
            wg:add(1)
            coserve.spawn(function()
              c:send(tag .. i .. "\n")
              local line, err = c:receive("*l", 5)
              if not line or not line:find("^" .. tag .. i .. " v%d$") then
                failures[#failures + 1] = tostring(line or err)
              end
              wg:done()
            end)
          end
          assert(wg:wait(10))
          assert.same({}, failures)
        end
        round("before")
        proc.write(dir .. "/app.lua", (RELOAD_APP:gsub('"v1"', '"v2"')))
        p:signal("HUP")
        wait_reloaded(p)
        for n = 1, 3 do
          round("after" .. n)
          coserve.sleep(0.2)
        end
        for _, c in ipairs(clients) do c:close() end
      end, { timeout = 40 })
      p:signal("TERM")
      assert.equal(0, p:wait_exit(15))
    end)

    it("keeps the old workers serving when the new code fails to load, and logs why", function()
      local p, port, _, dir = start_reloadable()
      proc.write(dir .. "/app.lua", "error('broken new code')")
      p:signal("HUP")
      assert(proc.poll(10, function() return p:stderr():find("reload failed", 1, true) end),
        p:stderr())
      assert.matches("broken new code", p:stderr())
      testing.run(function() assert.equal("v1", ask(port)) end)
      p:signal("TERM")
      assert.equal(0, p:wait_exit(15))
    end)
  end)
end)

