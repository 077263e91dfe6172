-- SPEC §3: the TCP server and its connections.
local coserve = require "coserve"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect

local function echo_lines(conn)
  while true do
    local line = conn:receive()
    if not line then return end
    conn:send(line .. "\n")
  end
end

describe("server lifecycle", function()
  it("binds port 0 to a free port, reported as server.port", function()
    run(function()
      local s = serve(echo_lines)
      assert.is_true(s.port > 0)
      local c = assert(connect(s))
      c:send("x\n")
      assert.equal("x", c:receive())
      c:close()
      s:shutdown()
    end)
  end)

  it("start returns nil, 'address already in use' at once when it cannot bind", function()
    run(function()
      local s = serve(echo_lines)
      local other = coserve.server{ host = "127.0.0.1", port = s.port }
      other:handle(echo_lines)
      assert.same({ nil, "address already in use" }, { other:start() })
      s:shutdown()
    end)
  end)

  it("start returns true after shutdown, and the server can start again", function()
    run(function()
      local s = coserve.server{ host = "127.0.0.1", port = 0 }
      s:handle(echo_lines)
      for _ = 1, 2 do
        local t = coserve.spawn(function() return s:start() end)
        local c = assert(coserve.connect("127.0.0.1", s.port))
        c:send("again\n")
        assert.equal("again", c:receive())
        c:close()
        s:shutdown()
        assert.same({ true, true }, { t:join(2) })
      end
    end)
  end)

  it("runs several servers in one process", function()
    run(function()
      local a = serve(function(conn) conn:send("a\n") end)
      local b = serve(function(conn) conn:send("b\n") end)
      assert.equal("a", assert(connect(a)):receive())
      assert.equal("b", assert(connect(b)):receive())
      a:shutdown()
      b:shutdown()
    end)
  end)

  it("reuse_port lets two servers listen on one port", function()
    run(function()
      local a = serve(function(conn) conn:send("a\n") end, { reuse_port = true })
      local b = serve(function(conn) conn:send("b\n") end, { reuse_port = true, port = a.port })
      assert.equal(a.port, b.port)
      local c = assert(coserve.connect("127.0.0.1", a.port))
      assert.is_truthy(({ a = true, b = true })[c:receive(nil, 1)])
      c:close()
      a:shutdown()
      b:shutdown()
    end)
  end)

  it("raises on an unknown option, naming it", function()
    assert.has_error(function() coserve.server{ port = 0, prot = 1 } end,
      "coserve.server: unknown option 'prot'")
  end)

  it("shutdown from inside a handler stops the server", function()
    run(function()
      local s
      s = serve(function(conn)
        conn:receive()
        s:shutdown()
      end)
      local c = assert(connect(s))
      c:send("stop\n")
      assert.same({ nil, "closed", "" }, { c:receive(nil, 2) })
      assert.same({ nil, "connection refused" }, { coserve.connect("127.0.0.1", s.port) })
    end)
  end)

  it("shutdown(grace) lets a handler in flight finish, then closes the rest", function()
    run(function()
      local s = serve(function(conn)
        local line = conn:receive()
        coserve.sleep(0.05)
        conn:send(line .. " done\n")
        conn:receive() -- parked until the grace period ends
      end)
      local c = assert(connect(s))
      c:send("work\n")
      coserve.sleep(0.01)
      s:shutdown(0.2)
      assert.equal("work done", c:receive(nil, 2))
      assert.same({ nil, "closed", "" }, { c:receive(nil, 2) })
    end)
  end)

  it("stats counts connections, accepted and bytes", function()
    run(function()
      local s = serve(echo_lines)
      local c = assert(connect(s))
      c:send("12345\n")
      assert.equal("12345", c:receive())
      local st = s:stats()
      assert.equal(1, st.connections)
      assert.equal(1, st.accepted)
      assert.equal(0, st.rejected)
      assert.equal(6, st.bytes_in)
      assert.equal(6, st.bytes_out)
      c:close()
      s:shutdown()
    end)
  end)
end)

describe("handler errors", function()
  it("are passed to onerror with a traceback; the connection closes; others are served", function()
    run(function()
      local errors = {}
      local s = serve(function(conn)
        local line = conn:receive()
        if line == "crash" then error("handler crashed") end
        echo_lines(conn)
      end)
      s:onerror(function(err, conn) errors[#errors + 1] = { err = err, id = conn.id } end)
      local good = assert(connect(s))
      good:send("hello\n")
      local bad = assert(connect(s))
      bad:send("crash\n")
      assert.same({ nil, "closed", "" }, { bad:receive(nil, 2) })
      good:send("still here\n")
      assert.equal("still here", good:receive(nil, 2))
      assert.equal(1, #errors)
      assert.matches("handler crashed", errors[1].err)
      assert.matches("stack traceback", errors[1].err)
      good:close()
      s:shutdown()
    end)
  end)
end)

describe("max_connections", function()
  it("accepts and closes connections beyond the limit, counting them as rejected", function()
    run(function()
      local s = serve(echo_lines, { max_connections = 1 })
      local first = assert(connect(s))
      first:send("one\n")
      assert.equal("one", first:receive())
      local second = assert(connect(s))
      assert.same({ nil, "closed", "" }, { second:receive(nil, 2) })
      local st = s:stats()
      assert.equal(2, st.accepted)
      assert.equal(1, st.rejected)
      first:close()
      s:shutdown()
    end)
  end)
end)

describe("conn:receive", function()
  local function with_pair(handler_body, client_body, opts)
    run(function()
      local done = coserve.channel(1)
      local s = serve(function(conn) done:push({ handler_body(conn) }) end, opts)
      local c = assert(connect(s))
      client_body(c)
      local r = done:pop(2)
      c:close()
      s:shutdown()
      return r
    end)
  end

  it("'*l' returns lines without '\\n' or a trailing '\\r'", function()
    local got
    with_pair(function(conn) got = { conn:receive("*l"), conn:receive(), conn:receive() } end,
      function(c) c:send("one\r\ntwo\n\n") end)
    assert.same({ "one", "two", "" }, got)
  end)

  it("a number reads exactly that many bytes, across several packets", function()
    local got
    with_pair(function(conn) got = conn:receive(10) end, function(c)
      for ch in ("0123456789"):gmatch(".") do c:send(ch) coserve.sleep(0.001) end
    end)
    assert.equal("0123456789", got)
  end)

  it("'*a' reads until the peer closes", function()
    local got
    with_pair(function(conn) got = conn:receive("*a") end,
      function(c) c:send("all of it\nand more") c:close() end)
    assert.equal("all of it\nand more", got)
  end)

  it("returns nil, 'timeout' and the partial data on a timeout", function()
    local got
    with_pair(function(conn) got = { conn:receive(100, 0.05) } end,
      function(c) c:send("partial") end)
    assert.same({ nil, "timeout", "partial" }, got)
  end)

  it("returns nil, 'closed' and the partial line when the peer closes", function()
    local got
    with_pair(function(conn) got = { conn:receive() } end,
      function(c) c:send("no newline") c:close() end)
    assert.same({ nil, "closed", "no newline" }, got)
  end)

  it("uses the server's read_timeout by default", function()
    local got
    with_pair(function(conn) got = { conn:receive() } end, function() end,
      { read_timeout = 0.05 })
    assert.same({ nil, "timeout", "" }, got)
  end)

  it("settimeouts overrides the read timeout", function()
    local got
    with_pair(function(conn)
      conn:settimeouts(nil, nil, 0.02)
      got = { conn:receive() }
    end, function() end)
    assert.same({ nil, "timeout", "" }, got)
  end)

  it("a line over max_frame is 'too large' and closes the connection", function()
    local got
    with_pair(function(conn) got = { conn:receive() } end,
      function(c) c:send(("x"):rep(200)) end, { max_frame = 100 })
    assert.same({ nil, "too large" }, got)
  end)

  it("gives 'busy' to a second coroutine reading the same connection", function()
    local got
    with_pair(function(conn)
      local first = conn:spawn(function() return conn:receive() end)
      got = { conn:receive(nil, 1) }
      conn:send("go\n")
      got[#got + 1] = select(2, first:join(1))
    end, function(c)
      coserve.sleep(0.02)
      assert.equal("go", c:receive(nil, 1))
      c:send("first\n")
    end)
    assert.same({ nil, "busy", "first" }, got)
  end)

  it("is woken with nil, 'closed' when another coroutine closes the connection", function()
    local got
    with_pair(function(conn)
      coserve.spawn(function() coserve.sleep(0.02) conn:close() end)
      got = { conn:receive(nil, 2) }
    end, function() end)
    assert.same({ nil, "closed" }, { got[1], got[2] })
  end)

  it("receiveany returns what is there, up to max", function()
    local got
    with_pair(function(conn) got = { conn:receiveany(4), conn:receiveany(100) } end,
      function(c) c:send("abcdefg") end)
    assert.same({ "abcd", "efg" }, got)
  end)

  it("receiveuntil returns the data before each delimiter, or with it when inclusive", function()
    local got = {}
    with_pair(function(conn)
      local read = conn:receiveuntil("--")
      got[1], got[2] = read(), read()
      got[3] = conn:receiveuntil("::", { inclusive = true })()
    end, function(c) c:send("ab--c") coserve.sleep(0.01) c:send("d--ef::") end)
    assert.same({ "ab", "cd", "ef::" }, got)
  end)

  it("receiveuntil keeps a delimiter built at run time while it waits through a collection", function()
    local got
    with_pair(function(conn)
      got = conn:receiveuntil(("<%s>"):format("end"))()
    end, function(c)
      coserve.sleep(0.01)
      for _ = 1, 3 do collectgarbage() end
      ("x"):rep(64):gsub(".", function(ch) return ch .. "pad" end) -- reuse freed memory
      c:send("body<end>")
    end)
    assert.equal("body", got)
  end)

  it("recv without framing returns what arrived", function()
    local got
    with_pair(function(conn) got = conn:recv() end, function(c) c:send("raw bytes") end)
    assert.equal("raw bytes", got)
  end)

  it("keeps the first message intact when the handler starts slowly (Swoole ordering)", function()
    local got
    with_pair(function(conn)
      coserve.sleep(0.2)
      got = { conn:receive(), conn:receive() }
    end, function(c) c:send("first\n") c:send("second\n") end)
    assert.same({ "first", "second" }, got)
  end)
end)

describe("framing", function()
  local function collect(opts, send, n)
    local frames = {}
    run(function()
      local s = serve(function(conn)
        for i = 1, n do
          local f, err = conn:recv(2)
          frames[i] = f or err
          if not f then return end
        end
      end, opts)
      local c = assert(connect(s))
      send(c)
      coserve.sleep(0.05)
      c:close()
      s:shutdown(1)
    end)
    return frames
  end

  local eof = { framing = { eof = "\r\n" } }
  local len = { framing = { length = { type = "u32be", offset = 0, body_offset = 4 } } }
  local function u32(s)
    local n = #s
    return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
      math.floor(n / 256) % 256, n % 256) .. s
  end

  it("eof: frames that arrive together are handed out one by one, delimiter included", function()
    assert.same({ "a\r\n", "bc\r\n", "d\r\n" },
      collect(eof, function(c) c:send("a\r\nbc\r\nd\r\n") end, 3))
  end)

  it("eof: a frame fed one byte at a time comes whole", function()
    assert.same({ "hello\r\n" }, collect(eof, function(c)
      for ch in ("hello\r\n"):gmatch(".") do c:send(ch) coserve.sleep(0.001) end
    end, 1))
  end)

  it("length: coalesced frames are split, each with its header", function()
    assert.same({ u32("one"), u32(""), u32("three") },
      collect(len, function(c) c:send(u32("one") .. u32("") .. u32("three")) end, 3))
  end)

  it("length: a frame fed one byte at a time comes whole", function()
    local frame = u32("split body")
    assert.same({ frame }, collect(len, function(c)
      for ch in frame:gmatch(".") do c:send(ch) coserve.sleep(0.001) end
    end, 1))
  end)

  it("length: a header announcing more than max_frame is 'too large' at once", function()
    local opts = { framing = len.framing, max_frame = 100 }
    assert.same({ "too large" }, collect(opts, function(c)
      c:send(string.char(0, 0, 1, 0)) -- 256 bytes announced, none sent
    end, 1))
  end)

  it("eof: a frame over max_frame is 'too large'", function()
    local opts = { framing = eof.framing, max_frame = 16 }
    assert.same({ "too large" }, collect(opts, function(c) c:send(("z"):rep(40)) end, 1))
  end)

  it("binary garbage under length framing closes only that connection", function()
    run(function()
      local s = serve(function(conn)
        while conn:recv(1) do conn:send("ok") end
      end, { framing = len.framing, max_frame = 64 })
      local good = assert(connect(s))
      local bad = assert(connect(s))
      bad:send("\255\255\255\255garbage")
      good:send(u32("hi"))
      assert.equal("ok", good:receive(2, 1))
      assert.same({ nil, "closed", "" }, { bad:receive(1, 1) })
      good:close()
      s:shutdown()
    end)
  end)
end)

describe("conn:send", function()
  it("writes an array of strings as one message", function()
    run(function()
      local s = serve(function(conn) assert.equal(11, conn:send({ "hello", " ", "world" })) end)
      local c = assert(connect(s))
      assert.equal("hello world", c:receive("*a", 2))
      s:shutdown()
    end)
  end)

  it("parks under backpressure and never buffers more than the peer takes", function()
    -- The handler sends 200 MB while the client does not read: the server's
    -- memory must stay bounded; once the client reads, everything arrives.
    local function rss_kib()
      local f = io.open("/proc/self/status")
      local kib = tonumber(f:read("*a"):match("VmRSS:%s*(%d+)"))
      f:close()
      return kib
    end
    run(function()
      local chunk = ("x"):rep(65536)
      local sent, total = 0, 200 * 1024 * 1024
      local s = serve(function(conn)
        while sent < total do
          assert(conn:send(chunk))
          sent = sent + #chunk
        end
      end)
      local c = assert(connect(s))
      local before = rss_kib()
      coserve.sleep(0.2)
      local stalled = sent
      assert.is_true(stalled < total)          -- the handler is parked
      assert.is_true(rss_kib() - before < 32 * 1024)
      local got = 0
      while got < total do
        local data = c:receiveany(1024 * 1024, 5)
        if not data then break end
        got = got + #data
      end
      assert.equal(total, got)
      -- What the in-process client read is garbage now; nothing is retained.
      collectgarbage()
      assert.is_true(rss_kib() - before < 64 * 1024)
      c:close()
      s:shutdown()
    end, { timeout = 30 })
  end)

  it("a send that times out returns nil, 'timeout' and closes the connection", function()
    run(function()
      local result = coserve.channel(1)
      local s = serve(function(conn)
        conn:settimeouts(nil, 0.05, nil)
        local chunk = ("y"):rep(1024 * 1024)
        for _ = 1, 64 do
          local n, err = conn:send(chunk)
          if not n then
            result:push({ err, (conn:send("more")) == nil })
            return
          end
        end
        result:push({ "all sent" })
      end, { send_timeout = 5 })
      local c = assert(connect(s))
      assert.same({ "timeout", true }, result:pop(5))
      c:close()
      s:shutdown()
    end)
  end)

  it("returns nil, 'closed' once the connection is closed", function()
    run(function()
      local s = serve(function(conn) conn:receive() end)
      local c = assert(connect(s))
      c:close()
      assert.same({ nil, "closed" }, { c:send("late") })
      assert.is_true(c:close()) -- idempotent
      s:shutdown()
    end)
  end)

  it("a reader and a writer may use one connection from two coroutines", function()
    run(function()
      local s = serve(function(conn)
        local reader = conn:spawn(function() return conn:receive(nil, 1) end)
        conn:send("from writer\n")
        assert.same({ true, "from client" }, { reader:join(1) })
      end)
      local c = assert(connect(s))
      c:send("from client\n")
      assert.equal("from writer", c:receive(nil, 1))
      s:shutdown(1)
    end)
  end)
end)

describe("connections", function()
  it("have unique ids and report peer and local addresses", function()
    run(function()
      local ids = {}
      local s = serve(function(conn)
        ids[#ids + 1] = conn.id
        local ip, port = conn:getpeername()
        conn:send(ip .. " " .. port .. "\n")
      end)
      local a, b = assert(connect(s)), assert(connect(s))
      local ip, port = a:getsockname()
      assert.equal(ip .. " " .. port, a:receive(nil, 1))
      b:receive(nil, 1)
      assert.equal(2, #ids)
      assert.are_not.equal(ids[1], ids[2])
      assert.equal("127.0.0.1", ip)
      s:shutdown()
    end)
  end)

  it("cancel their conn:spawn coroutines when they close", function()
    run(function()
      local child
      local s = serve(function(conn)
        child = conn:spawn(function() return coserve.sleep(10) end)
        conn:receive()
      end)
      local c = assert(connect(s))
      coserve.sleep(0.01)
      c:close()
      assert.same({ true, nil, "canceled" }, { child:join(1) })
      s:shutdown()
    end)
  end)

  it("are closed after idle_timeout without IO", function()
    run(function()
      local s = serve(function(conn) conn:receive(nil, -1) end, { idle_timeout = 0.05 })
      local c = assert(connect(s))
      assert.same({ nil, "closed", "" }, { c:receive(nil, 2) })
      s:shutdown()
    end)
  end)

  it("work over IPv6", function()
    run(function()
      local s = serve(echo_lines, { host = "::1" })
      local c = assert(coserve.connect("::1", s.port))
      c:send("six\n")
      assert.equal("six", c:receive(nil, 1))
      assert.equal("::1", (c:getpeername()))
      c:close()
      s:shutdown()
    end)
  end)

  it("work over a unix socket", function()
    local path = os.tmpname()
    os.remove(path)
    run(function()
      local s = serve(echo_lines, { host = "unix:" .. path, port = nil })
      local c = assert(coserve.connect("unix:" .. path))
      c:send("local\n")
      assert.equal("local", c:receive(nil, 1))
      c:close()
      s:shutdown()
    end)
    os.remove(path)
  end)
end)
