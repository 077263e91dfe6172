-- The write paths of a connection that tcp_spec.lua does not reach (issue 9,
-- coverage): empty sends, arrays of many strings, an array the kernel only
-- takes part of (the rest is written from a copy, while a second writer
-- gets "busy"), and sends to a peer that is gone.
local coserve = require "coserve"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect

-- A server whose handler reads exactly n bytes, then answers with their
-- length and whether they were what expect says.
local function reader_server(n, expect)
  return serve(function(conn)
    local data = conn:receive(n, 10)
    conn:send(("%d %s\n"):format(data and #data or -1, tostring(data == expect)))
  end)
end

describe("sending", function()
  it("an empty string or an empty array sends nothing and returns 0", function()
    run(function()
      local s = reader_server(1, "x")
      local c = assert(connect(s))
      assert.equal(0, c:send(""))
      assert.equal(0, c:send({}))
      assert.equal(0, c:send({ "", "" }))
      assert.equal(1, c:send("x"))
      assert.equal("1 true", c:receive())
      c:close()
      s:shutdown()
    end)
  end)

  it("an array of more strings than fit on the stack goes out whole and in order", function()
    run(function()
      local parts = {}
      for i = 1, 100 do parts[i] = ("%03d,"):format(i) end
      local whole = table.concat(parts)
      local s = reader_server(#whole, whole)
      local c = assert(connect(s))
      assert.equal(#whole, c:send(parts))
      assert.equal(#whole .. " true", c:receive())
      c:close()
      s:shutdown()
    end)
  end)

  it("a number is sent as its decimal string", function()
    run(function()
      local s = reader_server(3, "4.5")
      local c = assert(connect(s))
      assert.equal(3, c:send(4.5))
      assert.equal("3 true", c:receive())
      c:close()
      s:shutdown()
    end)
  end)

  it("an array the kernel takes only part of is finished from a copy; a second writer is busy", function()
    run(function()
      -- 16 MiB in 4 KiB pieces: more than loopback buffers take at once.
      local parts, n = {}, 4096
      for i = 1, n do parts[i] = string.char(65 + i % 26):rep(4096) end
      local whole = table.concat(parts)
      local go = coserve.channel(1)
      local s = serve(function(conn)
        go:pop(5) -- wait until the client's send has parked
        local data = conn:receive(#whole, 10)
        conn:send(("%d %s\n"):format(data and #data or -1, tostring(data == whole)))
      end, { max_frame = 2 * #whole })
      local c = assert(connect(s))
      local writer = coserve.spawn(function()
        local sent, err = c:send(parts, 10)
        return sent, err
      end)
      -- The writer is parked: the caller may change its table meanwhile,
      -- and another coroutine may not write.
      for i = 1, n do parts[i] = "changed" end
      assert.same({ nil, "busy" }, { c:send("x") })
      go:push(true)
      assert.same({ true, #whole }, { writer:join(10) })
      assert.equal(#whole .. " true", c:receive("*l", 10))
      c:close()
      s:shutdown()
    end, { timeout = 20 })
  end)

  it("an array item that is not a string raises, naming send and the item", function()
    run(function()
      local s = reader_server(1, "x")
      local c = assert(connect(s))
      local ok, err = pcall(function() local r = c:send({ "a", {} }) return r end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'send' (item 2 is not a string)", err, 1, true)
      ok, err = pcall(function() local r = c:send(true) return r end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'send' (string or array of strings expected)", err, 1, true)
      c:close()
      s:shutdown()
    end)
  end)

  it("a send to a peer that has reset the connection returns nil, 'closed'", function()
    run(function()
      local got = coserve.channel(1)
      local s = serve(function(conn)
        conn:receive() -- the client's line, then its reset
        coserve.sleep(0.05)
        local results = {}
        for i = 1, 20 do
          local sent, err = conn:send(("x"):rep(65536))
          if not sent then results = { nil, err } break end
          results = { sent }
          coserve.sleep(0.01)
          if i == 20 then break end
        end
        got:push(results)
      end)
      local c = assert(connect(s))
      c:send("hi\n")
      -- SO_LINGER 0 is not reachable from Lua: a close with unread data
      -- pending makes the kernel send a reset instead.
      coserve.sleep(0.02)
      c:close()
      local results = got:pop(5)
      assert.same({ nil, "closed" }, results)
      s:shutdown()
    end)
  end)

  it("a handler that returns with bytes in its send buffer still delivers them all", function()
    run(function()
      local big = ("0123456789abcdef"):rep(262144) -- 4 MiB
      local sent
      local s = serve(function(conn)
        -- The kernel takes part; the send buffer holds the rest, so send
        -- returns at once, and the handler ends before the peer has read.
        sent = { conn:send(big) }
      end, { send_buffer = 2 * #big })
      local c = assert(connect(s))
      coserve.sleep(0.1)
      local parts, err = {}, nil
      for _ = 1, 100000 do
        local chunk
        chunk, err = c:receiveany(1024 * 1024, 5)
        if not chunk then break end
        parts[#parts + 1] = chunk
      end
      assert.equal("closed", err)
      assert.same({ #big }, sent)
      local data = table.concat(parts)
      assert.equal(#big, #data)
      assert.is_true(data == big)
      c:close()
      s:shutdown()
    end, { timeout = 20 })
  end)

  it("a closed connection whose peer never reads stops flushing after send_timeout", function()
    run(function()
      local big = ("x"):rep(16 * 1024 * 1024)
      local sent
      local s = serve(function(conn)
        sent = { conn:send(big) }
      end, { send_buffer = 2 * #big, send_timeout = 0.2 })
      local c = assert(connect(s))
      -- Not reading: after send_timeout (checked every 0.1 s) the server
      -- gives up on the bytes it still holds and closes. What the kernels
      -- already have still arrives, then the end: less than was sent.
      coserve.sleep(0.6)
      local got, err = 0, nil
      for _ = 1, 100000 do
        local chunk
        chunk, err = c:receiveany(1024 * 1024, 5)
        if not chunk then break end
        got = got + #chunk
      end
      assert.equal("closed", err)
      assert.same({ #big }, sent) -- buffered: send did not wait for the peer
      assert.is_true(got < #big, "got everything: the flush was not cut")
      c:close()
      s:shutdown()
    end, { timeout = 20 })
  end)

  it("several connections flush at once; one that finishes first leaves the others flushing", function()
    run(function()
      local big = ("y"):rep(8 * 1024 * 1024)
      local sent = {}
      local s = serve(function(conn)
        sent[#sent + 1] = conn:send(big)
      end, { send_buffer = 2 * #big, send_timeout = 1 })
      local function read_all(c)
        local got, err = 0, nil
        for _ = 1, 100000 do
          local chunk
          chunk, err = c:receiveany(1024 * 1024, 5)
          if not chunk then break end
          got = got + #chunk
        end
        return got, err
      end
      -- a, b and c start flushing in that order; b, in the middle of the
      -- server's list, reads and finishes first; a and c never read.
      local a = assert(connect(s))
      coserve.sleep(0.05)
      local b = assert(connect(s))
      coserve.sleep(0.05)
      local c = assert(connect(s))
      coserve.sleep(0.05)
      assert.same({ #big, #big, #big }, sent)
      assert.same({ #big, "closed" }, { read_all(b) })
      coserve.sleep(1.3)
      for _, conn in ipairs({ a, c }) do
        local got, err = read_all(conn)
        assert.equal("closed", err)
        assert.is_true(got < #big, "got everything: the flush was not cut")
      end
      a:close() b:close() c:close()
      s:shutdown()
    end, { timeout = 20 })
  end)
end)
