-- TLS (SPEC §9) between coserve's own servers and clients: the connection
-- API unchanged over TLS, verification and its refusals, mTLS, SNI, ALPN,
-- sslhandshake, pools, and the bad input a TLS port meets.
local coserve = require "coserve"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect

describe("TLS", function()
  local certs
  setup(function() certs = testing.tls() end)
  teardown(function() os.execute("rm -rf '" .. certs.dir .. "'") end)

  local function tls_server(handler, tls, opts)
    opts = opts or {}
    opts.tls = tls or { cert = certs.cert, key = certs.key }
    return serve(handler, opts)
  end

  local function tls_client(s, tls, opts)
    opts = opts or {}
    opts.tls = tls or { ca = certs.ca, server_name = "localhost" }
    return connect(s, opts)
  end

  local function echo(conn)
    while true do
      local line = conn:receive()
      if not line then return end
      conn:send(line .. "\n")
    end
  end

  describe("a coserve server and client", function()
    it("echo lines; conn:tls() and server:stats() tell what was negotiated", function()
      run(function()
        local info = coserve.channel(1)
        local s = tls_server(function(conn)
          info:push(conn:tls())
          echo(conn)
        end)
        local c = assert(tls_client(s))
        assert.equal(6, c:send("hello\n"))
        assert.equal("hello", c:receive())
        local mine, theirs = c:tls(), info:pop(1)
        assert.equal("TLSv1.3", mine.version)
        assert.equal(mine.cipher, theirs.cipher)
        assert.equal("localhost", theirs.server_name)
        assert.matches("CN=localhost", mine.peer_subject)
        c:close()
        s:shutdown()
        local st = s:stats()
        assert.equal(1, st.tls_handshakes)
        assert.equal(0, st.tls_failures)
      end)
    end)

    it("keeps every receive pattern, framing and large transfers both ways", function()
      run(function()
        local s = tls_server(function(conn)
          assert.equal("line", conn:receive("*l"))
          assert.equal("12345", conn:receive(5))
          local until_x = conn:receiveuntil("XX")
          assert.equal("before", until_x())
          local big = assert(conn:receive(3 * 1024 * 1024))
          assert(conn:send({ "size ", tostring(#big), "\n" }))
          assert(conn:send(big:upper()))
          assert.equal("the rest", conn:receive("*a"))
        end, nil, { max_frame = 8 * 1024 * 1024 })
        local c = assert(tls_client(s, nil, { max_frame = 8 * 1024 * 1024 }))
        local big = ("abcdefgh"):rep(3 * 1024 * 1024 / 8)
        assert(c:send("line\n12345beforeXX"))
        assert(c:send(big))
        assert.equal("size " .. #big, c:receive())
        assert.equal(big:upper(), c:receive(#big))
        assert(c:send("the rest"))
        c:close()
        s:shutdown(5)
      end, { timeout = 20 })
    end)

    it("a send to a peer that stops reading parks, then times out, within send_buffer", function()
      run(function()
        local result = coserve.channel(1)
        local s = tls_server(function(conn)
          local piece, sent = ("x"):rep(65536), 0
          for _ = 1, 400 do
            local n, err = conn:send(piece)
            if not n then return result:push({ sent, err }) end
            sent = sent + n
          end
          result:push({ sent, "all" })
        end, nil, { send_timeout = 0.3, send_buffer = 256 * 1024 })
        local c = assert(tls_client(s))
        local r = result:pop(10)
        assert.equal("timeout", r[2])
        assert.is_true(r[1] < 400 * 65536)
        c:close()
        s:shutdown()
      end)
    end)

    it("framing works over TLS", function()
      run(function()
        local s = tls_server(function(conn)
          local frame = conn:recv()
          conn:send(frame)
        end, nil, { framing = { eof = "\r\n" } })
        local c = assert(tls_client(s))
        c:send("one\r\ntwo\r\n")
        assert.equal("one", c:receive("*l"))
        c:close()
        s:shutdown()
      end)
    end)

    it("a pooled TLS connection is reused, and kept apart from plaintext ones", function()
      run(function()
        local s = tls_server(echo)
        local c = assert(tls_client(s))
        local id = c.id
        c:send("a\n")
        assert.equal("a", c:receive())
        coserve.sleep(0.05) -- session tickets arrive meanwhile: not a reason to drop it
        assert(c:setkeepalive())
        local again = assert(tls_client(s))
        assert.equal(id, again.id)
        again:send("b\n")
        assert.equal("b", again:receive())
        again:close()
        s:shutdown()
      end)
    end)

    it("conn:sslhandshake upgrades a connected socket (OpenResty's order)", function()
      run(function()
        local s = tls_server(echo)
        local c = assert(connect(s))
        assert.is_nil(c:tls())
        local ok, err = c:sslhandshake("localhost") -- the system's CAs do not know ours
        assert.is_nil(ok)
        assert.matches("^tls: certificate verify failed: ", err)
        c:close()
        c = assert(connect(s))
        assert.is_true(c:sslhandshake("localhost", false))
        assert.is_true(c:sslhandshake("localhost", false)) -- done already
        c:send("up\n")
        assert.equal("up", c:receive())
        c:close()
        s:shutdown()
      end)
    end)
  end)

  describe("the client refuses", function()
    local function refused(cert_name, opts, tls)
      local err
      run(function()
        local cert, key = certs.make(cert_name, opts)
        local s = tls_server(echo, { cert = cert, key = key })
        local c
        c, err = tls_client(s, tls)
        assert.is_nil(c)
        s:shutdown()
      end)
      return err
    end

    it("a certificate from an unknown CA", function()
      assert.equal("tls: certificate verify failed: self-signed certificate",
        refused("selfsigned", { san = "DNS:localhost", self_signed = true }))
    end)

    it("an expired certificate", function()
      assert.equal("tls: certificate verify failed: certificate has expired",
        refused("expired", { san = "DNS:localhost", not_before = -86400 * 10, not_after = -86400 }))
    end)

    it("a certificate for another host", function()
      assert.equal("tls: certificate verify failed: hostname mismatch",
        refused("other", { san = "DNS:other.example" }))
    end)

    it("a certificate whose IP address is not the one asked for", function()
      assert.equal("tls: certificate verify failed: IP address mismatch",
        refused("ip", { san = "IP:10.1.2.3" }, { ca = certs.ca, server_name = "127.0.0.1" }))
    end)

    it("but verify = false accepts any certificate", function()
      run(function()
        local cert, key = certs.make("anyone", { self_signed = true })
        local s = tls_server(echo, { cert = cert, key = key })
        local c = assert(tls_client(s, { verify = false }))
        c:send("ok\n")
        assert.equal("ok", c:receive())
        c:close()
        s:shutdown()
      end)
    end)
  end)

  describe("server options", function()
    it("a missing, unreadable or mismatched cert or key: start() says which file", function()
      run(function()
        local function start_err(tls)
          local s = coserve.server{ host = "127.0.0.1", port = 0, tls = tls }
          s:handle(echo)
          local ok, err = s:start()
          assert.is_nil(ok)
          return err
        end
        assert.matches("tls: cannot use certificate /nonexistent.pem",
          start_err({ cert = "/nonexistent.pem", key = certs.key }), 1, true)
        assert.matches("tls: cannot use key /nonexistent.key",
          start_err({ cert = certs.cert, key = "/nonexistent.key" }), 1, true)
        assert.matches("tls: cannot use certificate " .. certs.key,
          start_err({ cert = certs.key, key = certs.key }), 1, true)
        assert.matches("tls: cannot use key " .. certs.client_key .. ": key values mismatch",
          start_err({ cert = certs.cert, key = certs.client_key }), 1, true)
        assert.has_error(function() coserve.server{ port = 0, tls = "yes" } end,
          "coserve.server: option 'tls' must be a table")
      end)
    end)

    it("mTLS: verify = 'required' refuses a client without a certificate", function()
      run(function()
        local subject = coserve.channel(1)
        local s = tls_server(function(conn)
          subject:push(conn:tls().peer_subject)
          echo(conn)
        end, { cert = certs.cert, key = certs.key, ca = certs.ca, verify = "required" })
        local c = tls_client(s)
        -- TLS 1.3: the client learns of the refusal at its first read.
        if c then
          c:send("x\n")
          local line, err = c:receive()
          assert.is_nil(line)
          assert.matches("^tls: ", err)
          c:close()
        end
        c = assert(tls_client(s, { ca = certs.ca, server_name = "localhost",
                                   cert = certs.client_cert, key = certs.client_key }))
        c:send("hi\n")
        assert.equal("hi", c:receive())
        assert.matches("CN=client", subject:pop(1))
        c:close()
        s:shutdown()
        assert.equal(1, s:stats().tls_failures)
      end)
    end)

    it("a new connection to the same server, name and verification resumes the last session", function()
      run(function()
        local s = tls_server(echo)
        -- The TLS 1.3 ticket comes after the handshake: the echo reads it.
        local function reused(tls)
          local c = assert(tls_client(s, tls))
          c:send("x\n")
          assert.equal("x", c:receive())
          local info = c:tls()
          c:close()
          assert.matches("CN=localhost", info.peer_subject)
          return info.reused
        end
        assert.is_false(reused())
        assert.is_true(reused())
        assert.is_true(reused())
        -- Another name on the same context, or no verification: full handshakes.
        local unverified = { verify = false, server_name = "localhost" }
        assert.is_false(reused(unverified))
        assert.is_true(reused(unverified))
        assert.is_false(reused({ verify = false, server_name = "other.test" }))
        -- TLS 1.2 sessions resume too.
        local t12 = { ca = certs.ca, server_name = "localhost", protocols = "TLSv1.2" }
        assert.is_false(reused(t12))
        assert.is_true(reused(t12))
        s:shutdown()
        assert.equal(8, s:stats().tls_handshakes)
      end)
    end)

    it("SNI picks the certificate; ALPN negotiates http/1.1", function()
      run(function()
        local other_cert, other_key = certs.make("other", { san = "DNS:other.test" })
        local s = tls_server(echo, { cert = certs.cert, key = certs.key,
          sni = { ["other.test"] = { cert = other_cert, key = other_key } },
          alpn = { "http/1.1" } })
        local c = assert(tls_client(s, { ca = certs.ca, server_name = "other.test",
                                         alpn = { "h2", "http/1.1" } }))
        assert.matches("CN=other", c:tls().peer_subject)
        assert.equal("http/1.1", c:tls().alpn)
        c:close()
        c = assert(tls_client(s))
        assert.matches("CN=localhost", c:tls().peer_subject)
        c:close()
        s:shutdown()
      end)
    end)

    it("protocols = 'TLSv1.2' and a TLS 1.2 cipher list", function()
      run(function()
        local s = tls_server(echo, { cert = certs.cert, key = certs.key, protocols = "TLSv1.2",
                                     ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256" })
        local c = assert(tls_client(s))
        assert.equal("TLSv1.2", c:tls().version)
        assert.equal("ECDHE-ECDSA-AES128-GCM-SHA256", c:tls().cipher)
        c:close()
        s:shutdown()
      end)
    end)
  end)

  -- Connects to 127.0.0.1:port and closes with a reset (SO_LINGER 0),
  -- which coserve's connections do not offer: a raw socket through the FFI.
  local function reset_connect(port)
    local ffi = require "ffi"
    pcall(ffi.cdef, [[
      struct tls_spec_sin { uint16_t family; uint16_t port; uint32_t addr; char zero[8]; };
      struct tls_spec_linger { int onoff; int linger; };
      int socket(int, int, int);
      int connect(int, const void *, uint32_t);
      int setsockopt(int, int, int, const void *, uint32_t);
      int close(int);
    ]])
    local fd = ffi.C.socket(2, 1, 0) -- AF_INET, SOCK_STREAM
    assert(fd >= 0)
    local sin = ffi.new("struct tls_spec_sin", 2, bit.rshift(bit.bswap(port), 16),
                        bit.bswap(0x7f000001))
    assert(ffi.C.connect(fd, sin, ffi.sizeof(sin)) == 0)
    local l = ffi.new("struct tls_spec_linger", 1, 0)
    assert(ffi.C.setsockopt(fd, 1, 13, l, ffi.sizeof(l)) == 0) -- SOL_SOCKET, SO_LINGER
    ffi.C.close(fd)
  end

  describe("bad input on a TLS port costs that connection only", function()
    -- Each case: a bad client, and meanwhile a good one is served.
    local function survives(bad)
      run(function()
        local s = tls_server(echo, { cert = certs.cert, key = certs.key, handshake_timeout = 0.3 })
        local b = assert(connect(s))
        bad(b)
        local c = assert(tls_client(s))
        c:send("still here\n")
        assert.equal("still here", c:receive())
        c:close()
        -- The server closes the bad connection: read it to the end.
        assert.same({ "" }, { (b:receive("*a", 5)) and "" or "" })
        b:close()
        s:shutdown()
        assert.equal(1, s:stats().tls_failures)
      end)
    end

    it("plaintext bytes", function()
      survives(function(b) b:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n") end)
    end)

    it("a garbage ClientHello", function()
      survives(function(b) b:send("\22\3\1\0\5\1\0\0\1\0") end)
    end)

    it("a truncated ClientHello, then silence: closed after handshake_timeout", function()
      survives(function(b) b:send("\22\3\1\2\0\1\0\1\252\3\3") end)
    end)

    it("a client that connects and never speaks", function()
      survives(function() end)
    end)

    it("a client that closes or resets before a byte (a TCP health check) is not a failure", function()
      run(function()
        local s = tls_server(echo, { cert = certs.cert, key = certs.key })
        for _ = 1, 3 do
          assert(connect(s)):close()
          reset_connect(s.port) -- HAProxy's checks end with a reset
        end
        coserve.sleep(0.1) -- the server sees them go
        local c = assert(tls_client(s))
        c:send("after checks\n")
        assert.equal("after checks", c:receive())
        c:close()
        s:shutdown()
        assert.equal(0, s:stats().tls_failures)
        assert.equal(1, s:stats().tls_handshakes)
      end)
    end)
  end)

  describe("HTTPS and wss", function()
    local http = require "coserve.http"

    it("http.server{tls} answers http.request('https://...') on a pooled connection", function()
      run(function()
        local app = http.server{ host = "127.0.0.1", port = 0,
          tls = { cert = certs.cert, key = certs.key, alpn = { "http/1.1" } } }
        app:route("GET", "/hello/:name", function(req, res)
          res:send(200, { ["content-type"] = "text/plain" },
            "hello " .. req.params.name .. " over " .. req.conn:tls().version)
        end)
        local task = coserve.spawn(function() assert(app:start()) end)
        local url = ("https://localhost:%d/hello/"):format(app.port)
        for i = 1, 3 do
          local res = assert(http.request{ url = url .. i, tls = { ca = certs.ca } })
          assert.equal(200, res.status)
          assert.equal("hello " .. i .. " over TLSv1.3", res.body)
        end
        assert.equal(1, app:stats().tls_handshakes) -- one connection, kept alive
        local res, err = http.request{ url = url .. "x" } -- the system's CAs do not know ours
        assert.is_nil(res)
        assert.matches("^tls: certificate verify failed", err)
        coserve.close_idle()
        app:shutdown()
        assert(task:join(5))
      end)
    end)

    it("wss: a WebSocket over TLS", function()
      run(function()
        local app = http.server{ host = "127.0.0.1", port = 0,
          tls = { cert = certs.cert, key = certs.key } }
        app:websocket("/ws", function(ws)
          local msg = ws:receive()
          ws:send("echo: " .. tostring(msg))
        end)
        local task = coserve.spawn(function() assert(app:start()) end)
        local c = assert(coserve.connect("localhost", app.port, { tls = { ca = certs.ca } }))
        c:send("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n" ..
          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" ..
          "Sec-WebSocket-Version: 13\r\n\r\n")
        assert.equal("HTTP/1.1 101 Switching Protocols", c:receive())
        repeat local line = c:receive() until line == ""
        -- One masked text frame "hi", as a client sends it.
        local mask = "\1\2\3\4"
        local payload = string.char(bit.bxor(("h"):byte(), 1), bit.bxor(("i"):byte(), 2))
        c:send("\129\130" .. mask .. payload)
        local head = c:receive(2)
        assert.equal(129, head:byte(1))
        local len = head:byte(2)
        assert.equal("echo: hi", c:receive(len))
        c:close()
        app:shutdown(1)
        assert(task:join(5))
      end)
    end)
  end)
end)
