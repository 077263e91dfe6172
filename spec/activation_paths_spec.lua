-- Where a server's socket comes from, beyond activation_spec.lua: systemd
-- sockets of every family (IPv4, IPv6, unix) matched to the servers that
-- ask for their address, an inherited socket no server claims, and host
-- names that resolve to several addresses (issue 9, coverage). The children
-- are stopped with SIGTERM and must exit cleanly: exit status 0.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local free_port = proc.free_port

describe("socket activation, every family", function()
  it("IPv4, IPv6 and unix sockets go to the servers at their address; the rest bind", function()
    local dir = proc.tmpdir()
    local p4, p6, unused, bound = free_port(), free_port(), free_port(), free_port()
    local sock = dir .. "/app.sock"
    proc.write(dir .. "/app.lua", ([[
      local coserve = require "coserve"
      local function serve(host, port, name)
        local s = coserve.server{ host = host, port = port }
        s:handle(function(conn) conn:send(name .. "\n") end)
        coserve.spawn(function() assert(s:start()) end)
      end
      serve("127.0.0.1", %d, "v4")
      serve("::1", %d, "v6")
      serve("unix:%s", nil, "unix")
      serve("127.0.0.1", %d, "bound")
      print("started")
    ]]):format(p4, p6, sock, bound))
    -- Were coserve to bind these itself, start would fail: systemd holds
    -- the ports and the path ("address already in use").
    local p = proc.start({ "systemd-socket-activate", "-l", "127.0.0.1:" .. p4,
                           "-l", "[::1]:" .. p6, "-l", sock, "-l", "127.0.0.1:" .. unused,
                           proc.BIN, dir .. "/app.lua" })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return select(2, p:stderr():gsub("Listening on", "")) == 4 end),
      p:stderr())
    testing.run(function()
      local function hello(host, port)
        local c = assert(coserve.connect(host, port, { timeout = 5 }))
        local line, err = c:receive("*l", 5)
        c:close()
        return line or err
      end
      assert.equal("v4", hello("127.0.0.1", p4))
      assert.equal("v6", hello("::1", p6))
      assert.equal("unix", hello("unix:" .. sock))
      assert.equal("bound", hello("127.0.0.1", bound))
    end, { timeout = 15 })
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5), p:stderr())
    assert.matches("started", p:stdout())
  end)
end)

describe("socket activation under -w 2", function()
  it("the master takes the inherited sockets and hands them to every worker", function()
    local dir = proc.tmpdir()
    local p4, p6, bound = free_port(), free_port(), free_port()
    proc.write(dir .. "/app.lua", ([[
      local coserve = require "coserve"
      local function serve(host, port, name)
        local s = coserve.server{ host = host, port = port }
        s:handle(function(conn) conn:send(name .. coserve.worker_id() .. "\n") end)
        coserve.spawn(function() assert(s:start()) end)
      end
      serve("127.0.0.1", %d, "v4-")
      serve("::1", %d, "v6-")
      serve("127.0.0.1", %d, "bound-")
    ]]):format(p4, p6, bound))
    local p = proc.start({ "systemd-socket-activate", "-l", "127.0.0.1:" .. p4,
                           "-l", "[::1]:" .. p6, proc.BIN, "-w", "2", dir .. "/app.lua" })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(proc.poll(5, function() return select(2, p:stderr():gsub("Listening on", "")) == 2 end),
      p:stderr())
    testing.run(function()
      local function hello(host, port)
        for _ = 1, 50 do -- the workers may still be starting
          local c = coserve.connect(host, port, { timeout = 5 })
          if c then
            local line, err = c:receive("*l", 5)
            c:close()
            return line or err
          end
          coserve.sleep(0.1)
        end
      end
      assert.matches("^v4%-[12]$", hello("127.0.0.1", p4))
      assert.matches("^v6%-[12]$", hello("::1", p6))
      assert.matches("^bound%-[12]$", hello("127.0.0.1", bound))
    end, { timeout = 20 })
    p:signal("TERM")
    assert.equal(0, p:wait_exit(8), p:stderr())
  end)
end)

describe("a host name with several addresses", function()
  -- A private mount namespace gives the child its own /etc/hosts, where
  -- one name has ::1 (twice) and 127.0.0.1.
  local function can_unshare()
    return os.execute("unshare -m true >/dev/null 2>&1") == 0
  end

  it("resolve lists each address once; connect tries them in order", function()
    if not can_unshare() then
      pending("unshare -m is not available")
      return
    end
    local dir = proc.tmpdir()
    proc.write(dir .. "/hosts", "::1 dualhost\n127.0.0.1 dualhost\n::1 dualhost\n")
    proc.write(dir .. "/app.lua", [[
      local coserve = require "coserve"
      print("addresses " .. table.concat(assert(coserve.resolve("dualhost")), " "))
      print("inet " .. table.concat(assert(coserve.resolve("dualhost", "inet")), " "))
      -- A server on 127.0.0.1 only: ::1 refuses, 127.0.0.1 answers.
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      s:handle(function(conn) conn:send("hello\n") end)
      coserve.spawn(function() assert(s:start()) end)
      local c = assert(coserve.connect("dualhost", s.port))
      print("connected " .. c:getpeername() .. " " .. c:receive())
      c:close()
      -- A server on the name listens on its first address.
      local d = coserve.server{ host = "dualhost", port = 0 }
      d:handle(function(conn) conn:send("named\n") end)
      coserve.spawn(function() assert(d:start()) end)
      while d.port == 0 do coserve.sleep(0.01) end
      print("server host " .. d.host)
      local e = assert(coserve.connect("::1", d.port))
      print("named " .. e:receive())
      e:close()
      s:shutdown()
      d:shutdown()
    ]])
    local r = proc.run({ "unshare", "-m", "sh", "-c",
      'mount --bind "$1" /etc/hosts && exec "$2" "$3"', "sh",
      dir .. "/hosts", proc.BIN, dir .. "/app.lua" })
    proc.rmdir(dir)
    assert.equal(0, r.status, r.err)
    assert.matches("addresses ::1 127.0.0.1\n", r.out, 1, true)
    assert.matches("inet 127.0.0.1\n", r.out, 1, true)
    assert.matches("connected 127.0.0.1 hello\n", r.out, 1, true)
    assert.matches("server host ::1\n", r.out, 1, true)
    assert.matches("named named\n", r.out, 1, true)
  end)
end)
