-- SPEC §8: limits and bad input that need a process of their own.
local coserve = require "coserve"
local testing = require "coserve.testing"

local BIN = os.getenv("COSERVE_BIN") or "build/coserve"

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- CPU time (user + system, in clock ticks) the process has used.
local function cpu_ticks(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  local fields = {}
  for f in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = f end
  return tonumber(fields[12]) + tonumber(fields[13])
end

describe("out of file descriptors (EMFILE)", function()
  it("keeps serving its connections, does not spin, and accepts again later", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local app = dir .. "/echo.lua"
    write_file(app, [[
      local coserve = require "coserve"
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      s:handle(function(conn)
        while true do
          local line = conn:receive()
          if not line then return end
          conn:send(line .. "\n")
        end
      end)
      coserve.spawn(function() s:start() end)
      print("port " .. s.port)
      io.stdout:flush()
    ]])
    local pid = io.popen(("sh -c 'ulimit -n 40; exec %q %q' >%s/out 2>%s/err & echo $!")
      :format(BIN, app, dir, dir)):read("*l")
    finally(function()
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      os.execute("rm -rf " .. dir)
    end)
    local port
    for _ = 1, 200 do
      port = read_file(dir .. "/out"):match("port (%d+)")
      if port then break end
      os.execute("sleep 0.02")
    end
    assert.is_not_nil(port, "the server did not start: " .. read_file(dir .. "/err"))
    port = tonumber(port)

    testing.run(function()
      local kept = {}
      for i = 1, 10 do
        kept[i] = assert(coserve.connect("127.0.0.1", port))
        kept[i]:send("k" .. i .. "\n")
        assert.equal("k" .. i, kept[i]:receive(nil, 2))
      end
      -- Far more connections than descriptors are left in the server.
      local extra = {}
      for i = 1, 60 do extra[i] = coserve.connect("127.0.0.1", port, { timeout = 1 }) end
      coserve.sleep(0.2)
      local t0 = cpu_ticks(pid)
      coserve.sleep(1)
      local used = cpu_ticks(pid) - t0
      assert.is_true(used < 30, ("server used %d ticks of CPU in 1 s while out of fds"):format(used))
      for i = 1, 10 do
        kept[i]:send("still " .. i .. "\n")
        assert.equal("still " .. i, kept[i]:receive(nil, 2))
      end
      for _, c in pairs(extra) do c:close() end
      coserve.sleep(0.3)
      local again
      for _ = 1, 20 do
        again = coserve.connect("127.0.0.1", port, { timeout = 1 })
        if again then
          again:send("again\n")
          if again:receive(nil, 1) == "again" then break end
          again:close()
          again = nil
        end
        coserve.sleep(0.1)
      end
      assert.is_not_nil(again, "no new connection was served after descriptors freed up")
      again:close()
      for i = 1, 10 do kept[i]:close() end
    end, { timeout = 20 })
  end)
end)
