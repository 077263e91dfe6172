-- SPEC §4, first bullet: coserve.connect.
local coserve = require "coserve"
local testing = require "coserve.testing"
local ffi = require "ffi"

local run, serve = testing.run, testing.server

ffi.cdef [[
int socket(int domain, int type, int protocol);
int listen(int fd, int backlog);
int close(int fd);
struct cs_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; char zero[8]; };
int bind(int fd, const struct cs_sockaddr_in *addr, uint32_t len);
int getsockname(int fd, struct cs_sockaddr_in *addr, uint32_t *len);
]]

-- A listener on 127.0.0.1 that never accepts: once its queue is full,
-- the kernel drops further SYNs and a connect can only time out.
local function silent_listener()
  local fd = ffi.C.socket(2, 1, 0)
  local addr = ffi.new("struct cs_sockaddr_in", { family = 2, addr = 0x0100007f })
  assert(ffi.C.bind(fd, addr, ffi.sizeof(addr)) == 0)
  assert(ffi.C.listen(fd, 0) == 0)
  local len = ffi.new("uint32_t[1]", ffi.sizeof(addr))
  ffi.C.getsockname(fd, addr, len)
  local port = bit.bor(bit.lshift(bit.band(addr.port, 0xff), 8), bit.rshift(addr.port, 8))
  return fd, port
end

describe("coserve.connect", function()
  it("returns a connection that talks to the server", function()
    run(function()
      local s = serve(function(conn) conn:send("hello " .. conn:receive() .. "\n") end)
      local c = assert(coserve.connect("127.0.0.1", s.port))
      c:send("client\n")
      assert.equal("hello client", c:receive(nil, 1))
      c:close()
      s:shutdown()
    end)
  end)

  it("resolves host names", function()
    run(function()
      local s = serve(function(conn) conn:send("named\n") end)
      local c = assert(coserve.connect("localhost", s.port, { family = "inet" }))
      assert.equal("named", c:receive(nil, 1))
      c:close()
      s:shutdown()
    end)
  end)

  it("returns nil, 'connection refused' when nothing listens", function()
    run(function()
      local s = serve(function() end)
      local port = s.port
      s:shutdown()
      coserve.sleep(0.01)
      assert.same({ nil, "connection refused" }, { coserve.connect("127.0.0.1", port) })
    end)
  end)

  it("returns nil, 'timeout' when the connect takes longer than opts.timeout", function()
    local fd, port = silent_listener()
    local results = {}
    run(function()
      local held = {}
      for i = 1, 6 do
        local c, err = coserve.connect("127.0.0.1", port, { timeout = 0.1 })
        results[i] = err or "connected"
        held[#held + 1] = c
        if err == "timeout" then break end
      end
      for _, c in ipairs(held) do c:close() end
    end)
    ffi.C.close(fd)
    assert.equal("timeout", results[#results])
  end)

  it("returns nil, err for a host that does not resolve", function()
    run(function()
      local c, err = coserve.connect("no-such-host.invalid", 80)
      assert.is_nil(c)
      assert.is_string(err)
    end)
  end)

  it("connects to unix:/path", function()
    local path = os.tmpname()
    os.remove(path)
    run(function()
      local s = serve(function(conn) conn:send("over unix\n") end, { host = "unix:" .. path })
      local c = assert(coserve.connect("unix:" .. path, { timeout = 1 }))
      assert.equal("over unix", c:receive(nil, 1))
      c:close()
      s:shutdown()
    end)
    os.remove(path)
  end)

  it("raises on a bad argument, naming the function", function()
    run(function()
      assert.has_error(function() coserve.connect(42) end,
        "bad argument #1 to 'connect' (string expected)")
    end)
  end)
end)

describe("conn:setkeepalive", function()
  it("puts a connection in a pool that the next connect to the same place reuses", function()
    run(function()
      local s = serve(function(conn)
        while true do
          local line = conn:receive()
          if not line then return end
          conn:send(line .. "\n")
        end
      end)
      local a = assert(coserve.connect("127.0.0.1", s.port))
      a:send("one\n")
      assert.equal("one", a:receive(nil, 1))
      local _, port_a = a:getsockname()
      assert.is_true(a:setkeepalive())
      local b = assert(coserve.connect("127.0.0.1", s.port))
      local _, port_b = b:getsockname()
      assert.equal(port_a, port_b)
      b:send("two\n")
      assert.equal("two", b:receive(nil, 1))
      assert.equal(1, s:stats().accepted)
      b:close()
      s:shutdown()
    end)
  end)

  it("drops a pooled connection that the server closes", function()
    run(function()
      local s = serve(function(conn) conn:send("bye\n") end) -- then closes
      local a = assert(coserve.connect("127.0.0.1", s.port))
      assert.equal("bye", a:receive(nil, 1))
      coserve.sleep(0.05) -- the close arrives; a:setkeepalive() refuses or the pool drops it
      a:setkeepalive()
      coserve.sleep(0.05)
      local b = assert(coserve.connect("127.0.0.1", s.port))
      assert.equal("bye", b:receive(nil, 1))
      assert.equal(2, s:stats().accepted)
      b:close()
      s:shutdown()
    end)
  end)

  it("does not keep the process alive with idle pooled connections", function()
    -- The kernel completes connects to a listener that never accepts, so
    -- the pooled connection stays open and silent.
    local fd, port = silent_listener()
    local conn
    coserve.run(function()
      conn = assert(coserve.connect("127.0.0.1", port))
      assert.is_true(conn:setkeepalive(0))
    end) -- returns: the pooled connection did not keep the loop alive
    conn:close()
    coserve.run(function() end) -- lets the close complete
    ffi.C.close(fd)
    assert.equal(0, coserve.stats().connections)
  end)
end)
