-- The examples, run with the CLI (COSERVE_BIN) on port 0 and driven as a
-- real client would drive them; and the embedding example host
-- ($COSERVE_BUILD/embed_host).
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local band, rshift, lshift, char, byte = bit.band, bit.rshift, bit.lshift, string.char, string.byte

-- Starts examples/NAME.lua on port 0; stopped by PID whatever the case's
-- outcome. Returns the process and the port it printed.
local function start_example(name, file)
  local p = proc.start({ proc.BIN, proc.ROOT .. "/examples/" .. (file or name) .. ".lua", "0" })
  finally(function() p:stop() end)
  return p, tonumber(p:wait_output(name .. " on 127%.0%.0%.1:(%d+)\n"))
end

local function connect(port)
  return assert(coserve.connect("127.0.0.1", port, { timeout = 5, max_frame = 64 * 1024 * 1024 }))
end

-- Stops a child server the way an operator does, and checks it went.
local function terminate(p)
  p:signal("TERM")
  assert.equal(0, p:wait_exit(5))
end

local function frame(body)
  local n = #body
  return char(rshift(n, 24), band(rshift(n, 16), 255), band(rshift(n, 8), 255), band(n, 255))
         .. body
end

-- Reads one length-prefixed frame: its body, or nil, err.
local function read_frame(c)
  local header, err = c:receive(4, 5)
  if not header then return nil, err end
  local a, b, d, e = byte(header, 1, 4)
  local n = lshift(a, 24) + lshift(b, 16) + lshift(d, 8) + e
  return c:receive(n, 5)
end

-- How many lines of `size` bytes surely overflow what a client that stops
-- reading can absorb: the kernel's largest TCP buffers on both sides of its
-- socket, then chat.lua's 64-line outbox, with room to spare.
local function lines_to_overflow(size)
  local function max_of(path)
    return tonumber((proc.read(path) or ""):match("(%d+)%s*$")) or 8 * 1024 * 1024
  end
  local kernel = max_of("/proc/sys/net/ipv4/tcp_rmem") + max_of("/proc/sys/net/ipv4/tcp_wmem")
  return math.ceil(kernel / size) + 64 + 32
end

describe("examples", function()
  it("echo.lua returns each line: `hi\\r\\n` comes back as `hi\\n`", function()
    local p, port = start_example("echo")
    testing.run(function()
      local c = connect(port)
      assert(c:send("hi\r\n"))
      assert.equal("hi\n", c:receive(3, 5))
      assert(c:send("second line\n"))
      assert.equal("second line", c:receive("*l", 5))
      c:close()
    end, { timeout = 10 })
    terminate(p)
  end)

  it("udp_echo.lua sends each datagram back to its sender", function()
    local p, port = start_example("udp_echo")
    testing.run(function()
      local u = coserve.udp()
      u:settimeout(5)
      assert(u:setpeername("127.0.0.1", port))
      assert(u:send("datagram"))
      assert.equal("datagram", u:receive())
      u:close()
    end, { timeout = 10 })
    terminate(p)
  end)

  it("chat.lua sends a line to every other client, not back to its sender", function()
    local p, port = start_example("chat")
    testing.run(function()
      local a, b, c = connect(port), connect(port), connect(port)
      -- The welcome says the server has registered the client.
      for _, conn in ipairs{ a, b, c } do
        assert.truthy(assert(conn:receive("*l", 5)):find("^%* welcome"))
      end
      assert(a:send("hello from a\n"))
      assert.equal("hello from a", b:receive("*l", 5))
      assert.equal("hello from a", c:receive("*l", 5))
      -- Had a's line been echoed to a, it would be queued before b's.
      assert(b:send("hello from b\n"))
      assert.equal("hello from b", a:receive("*l", 5))
      assert.equal("hello from b", c:receive("*l", 5))
      a:close() b:close() c:close()
    end, { timeout = 10 })
    terminate(p)
  end)

  it("chat.lua disconnects a client that stops reading while the others keep up", function()
    local p, port = start_example("chat")
    local line = ("x"):rep(65535)
    local count = lines_to_overflow(#line + 1)
    testing.run(function()
      local talker, stalled, reader = connect(port), connect(port), connect(port)
      for _, conn in ipairs{ talker, stalled, reader } do
        assert(conn:receive("*l", 5))
      end
      -- The reader takes each line before the next is said: it keeps up.
      for i = 1, count do
        assert(talker:send(line .. "\n"))
        local got, err = reader:receive("*l", 5)
        assert(got == line, ("line %d: %s"):format(i, tostring(err)))
      end
      -- The server closed the stalled client: "*a" ends (it would time out
      -- on an open connection) with less than everything that was said.
      local rest, err, partial = stalled:receive("*a", 10)
      assert(rest, ("%s after %d bytes"):format(tostring(err), partial and #partial or 0))
      assert.is_true(#rest < count * (#line + 1))
      talker:close() stalled:close() reader:close()
    end, { timeout = 25 })
    terminate(p)
  end)

  it("framed.lua answers two frames sent in one send with two upper-cased frames", function()
    local p, port = start_example("framed")
    testing.run(function()
      local c = connect(port)
      assert(c:send(frame("first frame") .. frame("second")))
      assert.equal("FIRST FRAME", read_frame(c))
      assert.equal("SECOND", read_frame(c))
      c:close()
    end, { timeout = 10 })
    terminate(p)
  end)

  it("framed.lua reassembles a frame sent one byte at a time into one reply", function()
    local p, port = start_example("framed")
    testing.run(function()
      local c = connect(port)
      local bytes = frame("split across many writes")
      for i = 1, #bytes do
        assert(c:send(bytes:sub(i, i)))
        coserve.sleep(0.005)
      end
      assert.equal("SPLIT ACROSS MANY WRITES", read_frame(c))
      -- Nothing else follows: the frame was answered once, not piecemeal.
      assert(c:send(frame("next")))
      assert.equal("NEXT", read_frame(c))
      c:close()
    end, { timeout = 10 })
    terminate(p)
  end)

  it("embed_host serves its Lua handler through coserve.h, then `quit` exits it with 0",
    function()
      local p = proc.start({ proc.BUILD .. "/embed_host", "0" })
      finally(function() p:stop() end)
      local port = tonumber(p:wait_output("listening on (%d+)\n"))
      testing.run(function()
        local c = connect(port)
        assert(c:send("hello embed\n"))
        assert.equal("HELLO EMBED", c:receive("*l", 5))
        assert(c:send("quit\n"))
        local line, err = c:receive("*l", 5)
        assert.is_nil(line)
        assert.equal("closed", err)
        c:close()
      end, { timeout = 10 })
      assert.equal(0, p:wait_exit(5))
    end)
end)

describe("HTTP examples", function()
  local http = require "coserve.http"

  it("http_hello answers GET /hello/NAME", function()
    local p, port = start_example("http", "http_hello")
    testing.run(function()
      local r = assert(http.request{ url = ("http://127.0.0.1:%d/hello/you"):format(port) })
      assert.equal(200, r.status)
      assert.equal("hello you\n", r.body)
    end, { timeout = 10 })
    terminate(p)
  end)

  it("rest keeps a to-do list: create, list, update, delete, 404 and 400", function()
    local p, port = start_example("rest")
    testing.run(function()
      local base = ("http://127.0.0.1:%d/todos"):format(port)
      local r = assert(http.request{ method = "POST", url = base, body = '{"title":"x"}' })
      assert.equal(201, r.status)
      assert.equal("/todos/1", r.headers.location)
      assert.matches('"title":"x"', r.body)
      r = assert(http.request{ url = base })
      assert.matches('^%[{.*"id":1.*}%]$', r.body)
      r = assert(http.request{ method = "PUT", url = base .. "/1", body = '{"done":true}' })
      assert.matches('"done":true', r.body)
      assert.equal(204, assert(http.request{ method = "DELETE", url = base .. "/1" }).status)
      assert.equal(404, assert(http.request{ url = base .. "/1" }).status)
      assert.equal(400, assert(http.request{ method = "POST", url = base, body = "nope" }).status)
      assert.equal("[]", assert(http.request{ url = base }).body)
    end, { timeout = 10 })
    terminate(p)
  end)
end)
