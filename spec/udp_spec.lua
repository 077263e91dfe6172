-- UDP (SPEC §4): coserve.udp() for servers (bind, recvfrom, sendto) and
-- clients (setpeername, send, receive), timeouts, truncation, IPv6, and a
-- server under 10,000 datagrams.
local coserve = require "coserve"
local testing = require "coserve.testing"

local run = testing.run

-- An echo server on host (port 0) that answers "re:" .. datagram, until
-- it gets "stop" or is closed; returns the socket and its port.
local function echo_server(host)
  local srv = coserve.udp()
  assert(srv:bind(host or "127.0.0.1", 0))
  local _, port = srv:getsockname()
  coserve.spawn(function()
    while true do
      local data, ip, cport = srv:recvfrom(-1)
      if not data or data == "stop" then break end
      srv:sendto("re:" .. data, ip, cport)
    end
    srv:close()
  end)
  return srv, port
end

describe("UDP", function()
  it("bind picks a port; sendto and recvfrom carry the sender's address", function()
    run(function()
      local srv, port = echo_server()
      assert.is_true(port > 0)
      local c = coserve.udp()
      assert(c:bind("127.0.0.1", 0))
      local _, my_port = c:getsockname()
      assert.is_true(c:sendto("ping", "127.0.0.1", port))
      assert.same({ "re:ping", "127.0.0.1", port }, { c:recvfrom(2) })
      assert(my_port > 0)
      c:sendto("stop", "127.0.0.1", port)
      c:close()
      assert(srv)
    end)
  end)

  it("connected mode: setpeername (a name too), send (a string or an array), receive", function()
    run(function()
      local _, port = echo_server()
      local c = coserve.udp()
      c:settimeout(2)
      assert.is_true(c:setpeername("127.0.0.1", port))
      assert.is_true(c:send("one"))
      assert.equal("re:one", c:receive())
      assert.is_true(c:send({ "t", "w", "o" }))
      assert.equal("re:two", c:receive())
      local byname = coserve.udp()
      byname:settimeout(2)
      assert.is_true(byname:setpeername("localhost", port)) -- resolved first
      byname:close()
      c:send("stop")
      c:close()
    end)
  end)

  it("receive and recvfrom time out with nil, 'timeout'", function()
    run(function()
      local u = coserve.udp()
      assert(u:bind("127.0.0.1", 0))
      u:settimeout(0.05)
      assert.same({ nil, "timeout" }, { u:recvfrom() })
      assert.same({ nil, "timeout" }, { u:recvfrom(0.01) })
      local _, port = u:getsockname()
      local c = coserve.udp()
      c:setpeername("127.0.0.1", port)
      c:settimeout(0.05)
      assert.same({ nil, "timeout" }, { c:receive() })
      u:close()
      c:close()
    end)
  end)

  it("a datagram larger than asked for is reported as truncated, not cut short", function()
    run(function()
      local _, port = echo_server()
      local c = coserve.udp()
      c:settimeout(2)
      c:setpeername("127.0.0.1", port)
      c:send(("x"):rep(100))
      assert.same({ nil, "truncated" }, { c:receive(50) }) -- "re:" .. 100 bytes
      c:send("small")
      assert.equal("re:small", c:receive(50)) -- the next one is whole
      assert.same({ nil, "message too long" }, { c:send(("x"):rep(70000)) })
      c:send("stop")
      c:close()
    end)
  end)

  it("works over IPv6", function()
    run(function()
      local _, port = echo_server("::1")
      local c = coserve.udp()
      c:settimeout(2)
      assert(c:setpeername("::1", port))
      c:send("six")
      assert.equal("re:six", c:receive())
      assert.equal("::1", (c:getsockname()))
      c:send("stop")
      c:close()
    end)
  end)

  it("a connected socket hears of a closed port as 'connection refused'", function()
    run(function()
      local probe = coserve.udp()
      probe:bind("127.0.0.1", 0)
      local _, port = probe:getsockname()
      probe:close() -- nothing listens there now
      local c = coserve.udp()
      c:settimeout(2)
      c:setpeername("127.0.0.1", port)
      c:send("anyone?")
      assert.same({ nil, "connection refused" }, { c:receive() })
      c:close()
    end)
  end)

  it("close wakes a parked receive with 'closed'; a second reader is 'busy'", function()
    run(function()
      local u = coserve.udp()
      u:bind("127.0.0.1", 0)
      local t = coserve.spawn(function() return u:recvfrom(5) end)
      assert.same({ nil, "busy" }, { u:recvfrom(0.01) })
      u:close()
      assert.same({ true, nil, "closed" }, { t:join(1) })
      assert.same({ nil, "closed" }, { u:send("x") })
      assert.same({ nil, "closed" }, { u:recvfrom() })
      assert.is_true(u:close()) -- twice is fine
    end)
  end)

  it("raises on programming errors, naming the function", function()
    run(function()
      local u = coserve.udp()
      assert.has_error(function() u:send("x") end,
        "send: no peer (call setpeername first, or use sendto)")
      assert.has_error(function() u:sendto(42, "127.0.0.1", 1) end,
        "bad argument #1 to 'sendto' (string expected)")
      assert.has_error(function() u:bind("::zz", 1) end,
        "bad argument #1 to 'bind' (IP address expected)")
      local ok, err = u:bind("no-such-host.invalid", 1) -- a name is looked up
      assert.is_nil(ok)
      assert.is_string(err)
      assert.has_error(function() u:receive(0) end)
      u:close()
    end)
  end)

  it("a server answers 10,000 datagrams from 4 clients", function()
    run(function()
      local srv, port = echo_server()
      local wg = coserve.waitgroup()
      local answered = 0
      for k = 1, 4 do
        wg:add(1)
        coserve.spawn(function()
          local c = coserve.udp()
          c:settimeout(2)
          c:setpeername("127.0.0.1", port)
          for i = 1, 2500 do
            local msg = k .. ":" .. i
            c:send(msg)
            if c:receive() == "re:" .. msg then answered = answered + 1 end
          end
          c:close()
          wg:done()
        end)
      end
      assert(wg:wait(20))
      assert.equal(10000, answered)
      srv:close()
    end, { timeout = 30 })
  end)

  it("an idle socket does not keep a script alive", function()
    local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                        .. "support/process.lua")
    local r = proc.run({ proc.BIN, "-e", [[
      local coserve = require "coserve"
      local u = coserve.udp()
      assert(u:bind("127.0.0.1", 0))
      print("bound")
    ]] }, { timeout = 10 })
    assert.equal("bound\n", r.out)
    assert.equal(0, r.status)
  end)
end)
