-- WebSocket (RFC 6455): app:websocket and coserve.websocket.
local coserve = require "coserve"
local http = require "coserve.http"
local websocket = require "coserve.websocket"
local core = require "coserve.core"
local testing = require "coserve.testing"
local support = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/"
local proc = dofile(support .. "process.lua")
local read_response = dofile(support .. "http_response.lua")

local run = testing.run
local band, bor, rshift, char, byte = bit.band, bit.bor, bit.rshift, string.char, string.byte

local function echo_app(opts)
  local app = http.server{ host = "127.0.0.1", port = 0 }
  app:websocket("/echo", function(ws)
    while true do
      local message, kind = ws:receive()
      if not message then return end
      ws:send(message, kind)
    end
  end, opts)
  coserve.spawn(function() assert(app:start()) end)
  return app
end

-- A client frame: masked, as RFC 6455 requires of clients.
local function frame(opcode, payload, fin, unmasked)
  local n = #payload
  local first = bor(fin == false and 0 or 0x80, opcode)
  local mask = unmasked and 0 or 0x80
  local head
  if n < 126 then head = char(first, bor(mask, n))
  else head = char(first, bor(mask, 126), rshift(n, 8), band(n, 255)) end
  if unmasked then return head .. payload end
  local key = "\1\2\3\4"
  return head .. key .. core.ws_mask(payload, key)
end

local function read_frame(c)
  local h = assert(c:receive(2, 2))
  local n = band(byte(h, 2), 0x7f)
  if n == 126 then
    local e = assert(c:receive(2, 2))
    n = byte(e, 1) * 256 + byte(e, 2)
  end
  return band(byte(h, 1), 0x0f), n > 0 and assert(c:receive(n, 2)) or ""
end

local function handshake(app, extra)
  local c = assert(coserve.connect("127.0.0.1", app.port))
  c:send("GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" ..
    (extra or "Sec-WebSocket-Version: 13\r\n") .. "\r\n")
  local _, headers, _, status_line = read_response(c, true)
  return c, status_line, headers
end

describe("WebSocket", function()
  it("computes the RFC 6455 example accept key", function()
    assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
  end)

  it("upgrades, echoes text, binary and fragmented messages, answers pings", function()
    run(function()
      local app = echo_app()
      local c, status, h = handshake(app)
      assert.equal("HTTP/1.1 101 Switching Protocols", status)
      assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", h["sec-websocket-accept"])
      c:send(frame(1, "hi"))
      assert.same({ 1, "hi" }, { read_frame(c) })
      local blob = ("\0\255"):rep(500)
      c:send(frame(2, blob))
      assert.same({ 2, blob }, { read_frame(c) })
      c:send(frame(1, "frag", false) .. frame(9, "p") .. frame(0, "mented"))
      assert.same({ 10, "p" }, { read_frame(c) })
      assert.same({ 1, "fragmented" }, { read_frame(c) })
      c:send(frame(8, "\3\232"))
      assert.same({ 8, "\3\232" }, { read_frame(c) })
      assert.same({ nil, "closed", "" }, { c:receive(1, 2) })
      app:shutdown()
    end)
  end)

  it("closes with 1002 on an unmasked client frame", function()
    run(function()
      local app = echo_app()
      local c = handshake(app)
      c:send(frame(1, "bare", true, true))
      assert.same({ 8, "\3\234" }, { read_frame(c) })
      assert.same({ nil, "closed", "" }, { c:receive(1, 2) })
      app:shutdown()
    end)
  end)

  it("closes with 1009 on a message over max_message, fragments counted together", function()
    run(function()
      local app = echo_app({ max_message = 8 })
      local c = handshake(app)
      c:send(frame(1, "12345", false) .. frame(0, "6789"))
      assert.same({ 8, "\3\241" }, { read_frame(c) })
      app:shutdown()
    end)
  end)

  it("checks text is UTF-8: whole messages, code points split across fragments", function()
    assert.is_true(core.utf8_valid("h\195\169llo \226\130\172 \240\159\152\128"))
    for _, bad in ipairs({ "\255", "\192\175", "\237\160\128", "\244\144\128\128",
                           "\226\130", "\128" }) do
      assert.is_false(core.utf8_valid(bad), ("%q"):format(bad))
    end
    run(function()
      local app = echo_app()
      local c = handshake(app)
      c:send(frame(1, "caf\195", false) .. frame(0, "\169"))
      assert.same({ 1, "caf\195\169" }, { read_frame(c) })
      c:send(frame(1, "bad \192\175"))
      assert.same({ 8, "\3\239" }, { read_frame(c) }) -- 1007
      assert.same({ nil, "closed", "" }, { c:receive(1, 2) })
      app:shutdown()
    end)
  end)

  it("closes with 1002 on a close code a peer may not send, 1007 on a bad close reason", function()
    run(function()
      local app = echo_app()
      local c = handshake(app)
      c:send(frame(8, "\3\237")) -- 1005: only reported, never sent
      assert.same({ 8, "\3\234" }, { read_frame(c) })
      local d = handshake(app)
      d:send(frame(8, "\3\232\255"))
      assert.same({ 8, "\3\239" }, { read_frame(d) })
      app:shutdown()
    end)
  end)

  it("answers 400 to a request without the handshake, 426 to another version", function()
    run(function()
      local app = echo_app()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send("GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
      assert.equal("HTTP/1.1 400 Bad Request", c:receive("*l", 2))
      c:close()
      local d, status = handshake(app, "Sec-WebSocket-Version: 8\r\n")
      assert.matches("^HTTP/1.1 426", status)
      d:close()
      app:shutdown()
    end)
  end)

  it("talks to a client written with Python's standard library (examples/ws_echo.lua)", function()
    local p = proc.start({ proc.BIN, proc.ROOT .. "/examples/ws_echo.lua", "0" })
    finally(function() p:stop() end)
    local port = tonumber(p:wait_output("ws_echo on 127%.0%.0%.1:(%d+)\n"))
    local r = proc.run({ "python3", proc.ROOT .. "/spec/support/ws_client.py", tostring(port) })
    assert.equal(0, r.status, r.err)
    assert.matches("handshake ok\ntext echo ok\nbinary echo ok\nping and fragments ok\nclose ok\n", r.out)
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5))
  end)
end)
