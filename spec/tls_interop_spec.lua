-- TLS (SPEC §9) against clients and servers nobody here wrote: openssl
-- s_client and s_server, curl, Python's ssl module (spec/support/tls_peer.py);
-- the bad input only such peers send (a TLS 1.2 renegotiation, a reset in
-- the middle of a handshake or of a record); and certificates read again
-- by a SIGHUP reload or a new start().
--
-- Each tool runs as a child process (spec/support/process.lua): started in
-- the background, polled with coserve.sleep so that this process's servers
-- keep serving meanwhile, every wait bounded, stopped by PID.
local coserve = require "coserve"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local run, serve = testing.run, testing.server
local PEER = proc.ROOT .. "/spec/support/tls_peer.py"

-- Runs argv to its end (killed after `limit` seconds) while the caller's
-- servers go on: {status =, out =, err =}; status is nil if it was killed.
local function tool(argv, limit)
  local p = proc.start(argv)
  local status = p:wait_exit(limit or 10)
  local r = { status = status, out = p:stdout(), err = p:stderr() }
  p:stop()
  return r
end

-- `printf INPUT | argv...` as one child (its stdin is otherwise /dev/null).
local function piped(input, argv)
  local words = {}
  for i = 1, #argv do words[i] = proc.quote(argv[i]) end
  return { "sh", "-c", input .. " | " .. table.concat(words, " ") }
end

-- Echoes lines until "quit" (then closes: a tool that waits for the end
-- of the connection stops there) or the end of the connection; what ended
-- it goes to `ended` when given.
local function echo(ended)
  return function(conn)
    while true do
      local line, err = conn:receive()
      if not line or line == "quit" then
        if ended then ended:push({ line = line, err = err or "quit" }) end
        return
      end
      conn:send(line .. "\n")
    end
  end
end

describe("TLS with peers nobody here wrote", function()
  local certs
  setup(function() certs = testing.tls() end)
  teardown(function() os.execute("rm -rf '" .. certs.dir .. "'") end)

  local function tls_server(handler, tls, opts)
    opts = opts or {}
    opts.tls = tls or { cert = certs.cert, key = certs.key }
    return serve(handler, opts)
  end

  -- coserve's own client, the good one served meanwhile in the bad cases.
  local function good_client(s, line)
    local c = assert(coserve.connect("127.0.0.1", s.port,
      { timeout = 5, tls = { ca = certs.ca, server_name = "localhost" } }))
    assert(c:send(line .. "\n"))
    assert.equal(line, c:receive("*l", 5))
    c:close()
  end

  describe("openssl s_client", function()
    it("verifies the chain and the name localhost (return code 0), and its line comes back",
      function()
        run(function()
          local s = tls_server(echo())
          local r = tool(piped("printf 'hello from s_client\\nquit\\n'", {
            "openssl", "s_client", "-connect", "127.0.0.1:" .. s.port, "-servername", "localhost",
            "-CAfile", certs.ca, "-verify_hostname", "localhost", "-verify_return_error",
            "-ign_eof" }))
          assert.equal(0, r.status, r.err)
          assert.matches("Verify return code: 0 %(ok%)", r.out)
          assert.matches("Verified peername: localhost", r.out)
          assert.matches("TLSv1.3", r.out)
          assert.matches("\nhello from s_client\n", r.out)
          s:shutdown()
          assert.equal(1, s:stats().tls_handshakes)
          assert.equal(0, s:stats().tls_failures)
        end, { timeout = 15 })
      end)

    it("a name the certificate is not for: s_client's own check fails (the test can fail)",
      function()
        run(function()
          local s = tls_server(echo())
          local r = tool(piped("printf 'quit\\n'", {
            "openssl", "s_client", "-connect", "127.0.0.1:" .. s.port, "-CAfile", certs.ca,
            "-verify_hostname", "other.example", "-verify_return_error" }))
          assert.not_equal(0, r.status)
          assert.not_matches("Verify return code: 0 %(ok%)", r.out)
          s:shutdown()
        end, { timeout = 15 })
      end)

    it("a TLS 1.2 renegotiation (R) is refused: that connection ends, others are served",
      function()
        run(function()
          local ended = coserve.channel(4)
          local s = tls_server(echo(ended), { cert = certs.cert, key = certs.key,
                                              protocols = "TLSv1.2" })
          -- "before" is echoed; once the go file exists, R (alone in its
          -- read, as s_client wants it) asks for a renegotiation; "after"
          -- would be echoed only if the connection outlived it.
          local dir = proc.tmpdir()
          local go = proc.quote(dir .. "/go")
          local p = proc.start(piped(
            "{ printf 'before\\n'; i=0; while [ ! -e " .. go .. " ] && [ $i -lt 200 ]; do " ..
            "sleep 0.05; i=$((i+1)); done; printf 'R\\n'; sleep 1; printf 'after\\n'; sleep 1; }",
            { "openssl", "s_client", "-tls1_2", "-connect", "127.0.0.1:" .. s.port,
              "-servername", "localhost", "-CAfile", certs.ca }))
          finally(function() p:stop() proc.rmdir(dir) end)
          proc.poll(5, function() return p:stdout():find("\nbefore\n", 1, true) end)
          good_client(s, "served while s_client is connected")
          proc.write(dir .. "/go", "")
          assert(p:wait_exit(10), "s_client did not end")
          local out, err = p:stdout(), p:stderr()
          assert.matches("\nbefore\n", out)
          assert.matches("RENEGOTIATING", out .. err)
          assert.matches("no renegotiation", out .. err)
          assert.not_matches("\nafter\n", out)
          -- The good client's handler ended first; then s_client's, with
          -- the alert s_client sent on being refused (not a crash).
          assert.equal("closed", assert(ended:pop(5)).err)
          local r = assert(ended:pop(5))
          assert.is_nil(r.line)
          assert.matches("^tls: [^\n]*alert", r.err)
          good_client(s, "and after")
          s:shutdown()
          assert.equal(3, s:stats().tls_handshakes) -- no second one on the first connection
        end, { timeout = 20 })
      end)
  end)

  describe("curl", function()
    it("curl --cacert fetches two URLs over one kept-alive connection: one handshake", function()
      local http = require "coserve.http"
      run(function()
        local app = http.server{ host = "127.0.0.1", port = 0,
          tls = { cert = certs.cert, key = certs.key, alpn = { "http/1.1" } } }
        app:route("GET", "/hello/:name", function(req, res)
          res:send(200, { ["content-type"] = "text/plain" },
            "hello " .. req.params.name .. " over " .. req.conn:tls().version .. "\n")
        end)
        local task = coserve.spawn(function() assert(app:start()) end)
        local base = ("https://localhost:%d/hello/"):format(app.port)
        local r = tool({ "curl", "-sS", "-v", "--max-time", "8", "--cacert", certs.ca,
          "--resolve", ("localhost:%d:127.0.0.1"):format(app.port),
          "-w", "connects %{num_connects}\n", base .. "one", base .. "two" })
        assert.equal(0, r.status, r.err)
        -- num_connects: 1 for the first URL, 0 for the second (reused).
        assert.equal("hello one over TLSv1.3\nconnects 1\nhello two over TLSv1.3\nconnects 0\n",
          r.out)
        assert.matches("ALPN[^\n]*http/1.1", r.err)
        assert.matches("SSL certificate verify ok", r.err)
        assert.equal(1, app:stats().tls_handshakes)
        -- Without our CA curl refuses the certificate (exit 60).
        r = tool({ "curl", "-sS", "--max-time", "8", "--resolve",
          ("localhost:%d:127.0.0.1"):format(app.port), base .. "x" })
        assert.equal(60, r.status)
        app:shutdown(1)
        assert(task:join(5))
      end, { timeout = 25 })
    end)
  end)

  describe("Python's ssl module", function()
    local function python(...)
      return tool({ "python3", PEER, ... })
    end

    it("an echo client: TLSv1.3, the certificate verified for localhost", function()
      run(function()
        local s = tls_server(echo())
        local r = python("client", tostring(s.port), certs.ca, "localhost", "hello from python")
        assert.equal(0, r.status, r.out .. r.err)
        assert.equal("version TLSv1.3\npeer localhost\nreply hello from python\n", r.out)
        s:shutdown()
        assert.equal(1, s:stats().tls_handshakes)
      end, { timeout = 15 })
    end)

    it("mTLS, verify = 'required': served with a client certificate, refused without", function()
      run(function()
        local subjects = coserve.channel(4)
        local s = tls_server(function(conn)
          subjects:push(conn:tls().peer_subject)
          echo()(conn)
        end, { cert = certs.cert, key = certs.key, ca = certs.ca, verify = "required" })
        local port = tostring(s.port)
        local r = python("client", port, certs.ca, "localhost", "with", certs.client_cert,
                         certs.client_key)
        assert.equal(0, r.status, r.out .. r.err)
        assert.matches("reply with\n", r.out)
        assert.matches("CN=client", subjects:pop(1))
        -- TLS 1.3: the refusal reaches the client at its first read.
        r = python("client", port, certs.ca, "localhost", "without")
        assert.equal(3, r.status, r.out .. r.err)
        assert.matches("error SSLError [^\n]*certificate required", r.out)
        assert.not_matches("reply", r.out)
        s:shutdown()
        assert.equal(0, #subjects) -- the handler never ran for it
        assert.equal(1, s:stats().tls_handshakes)
        assert.equal(1, s:stats().tls_failures)
      end, { timeout = 15 })
    end)

    it("SNI: the name the client sends picks between two certificates", function()
      run(function()
        local other_cert, other_key = certs.make("other", { san = "DNS:other.test" })
        local names = coserve.channel(4)
        local s = tls_server(function(conn)
          names:push(conn:tls().server_name)
          echo()(conn)
        end, { cert = certs.cert, key = certs.key,
               sni = { ["other.test"] = { cert = other_cert, key = other_key } } })
        local port = tostring(s.port)
        local r = python("client", port, certs.ca, "other.test", "to other")
        assert.equal(0, r.status, r.out .. r.err)
        assert.equal("version TLSv1.3\npeer other\nreply to other\n", r.out)
        assert.equal("other.test", names:pop(1))
        r = python("client", port, certs.ca, "localhost", "to localhost")
        assert.equal(0, r.status, r.out .. r.err)
        assert.equal("version TLSv1.3\npeer localhost\nreply to localhost\n", r.out)
        assert.equal("localhost", names:pop(1))
        s:shutdown()
      end, { timeout = 15 })
    end)
  end)

  describe("coserve's client against other servers", function()
    -- Starts a server child, returns it and the port it printed.
    local function start_server(argv, pattern)
      local p = proc.start(argv)
      finally(function() p:stop() end)
      return p, tonumber(p:wait_output(pattern, 10))
    end

    it("a Python ssl server: echo, verified; a name it is not for is refused", function()
      run(function()
        local p, port = start_server({ "python3", PEER, "server", certs.cert, certs.key, "2" },
                                     "port (%d+)\n")
        local c = assert(coserve.connect("localhost", port,
          { timeout = 5, tls = { ca = certs.ca } }))
        local info = c:tls()
        assert.equal("TLSv1.3", info.version)
        assert.matches("CN=localhost", info.peer_subject)
        assert(c:send("hello python\n"))
        assert.equal("py: hello python", c:receive("*l", 5))
        c:close()
        local c2, err = coserve.connect("127.0.0.1", port,
          { timeout = 5, tls = { ca = certs.ca, server_name = "other.example" } })
        assert.is_nil(c2)
        assert.equal("tls: certificate verify failed: hostname mismatch", err)
        assert.equal(0, p:wait_exit(10))
        local out = p:stdout()
        assert.matches("accepted TLSv1.3 %-\n", out)
        assert.matches("\nerror SSLError", out) -- Python saw our alert
        assert.matches("done\n$", out)
      end, { timeout = 20 })
    end)

    it("a Python ssl server that requires a client certificate (mTLS)", function()
      run(function()
        local p, port = start_server({ "python3", PEER, "server", certs.cert, certs.key, "1",
                                       certs.ca }, "port (%d+)\n")
        local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5, tls = {
          ca = certs.ca, server_name = "localhost",
          cert = certs.client_cert, key = certs.client_key } }))
        assert(c:send("mutual\n"))
        assert.equal("py: mutual", c:receive("*l", 5))
        c:close()
        assert.equal(0, p:wait_exit(10))
        assert.matches("accepted TLSv1.3 client\n", p:stdout())
      end, { timeout = 20 })
    end)

    for _, case in ipairs{ { version = "TLSv1.3", args = {} },
                           { version = "TLSv1.2", args = { "-tls1_2" } } } do
      it("openssl s_server " .. (case.args[1] or "") .. ": " .. case.version ..
         ", -rev echo; the second connection resumes the session", function()
          run(function()
            local argv = { "openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", certs.cert,
                           "-key", certs.key, "-rev", "-naccept", "2" }
            for _, a in ipairs(case.args) do argv[#argv + 1] = a end
            local p, port = start_server(argv, "ACCEPT 127%.0%.0%.1:(%d+)\n")
            for i = 1, 2 do
              local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5,
                tls = { ca = certs.ca, server_name = "localhost" } }))
              assert.equal(case.version, c:tls().version)
              assert.matches("CN=localhost", c:tls().peer_subject)
              assert.equal(i == 2, c:tls().reused)
              assert(c:send("coserve\n"))
              assert.equal("evresoc", c:receive("*l", 5))
              c:close()
            end
            assert.equal(0, p:wait_exit(10), p:stderr())
            assert.matches("Protocol version: " .. case.version, p:stdout() .. p:stderr())
          end, { timeout = 20 })
        end)
    end

    it("openssl s_server -Verify 1: coserve's client presents its certificate", function()
      run(function()
        local p, port = start_server({ "openssl", "s_server", "-accept", "127.0.0.1:0",
          "-cert", certs.cert, "-key", certs.key, "-CAfile", certs.ca, "-Verify", "1",
          "-verify_return_error", "-rev", "-naccept", "1" }, "ACCEPT 127%.0%.0%.1:(%d+)\n")
        local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5, tls = {
          ca = certs.ca, server_name = "localhost",
          cert = certs.client_cert, key = certs.client_key } }))
        assert(c:send("mutual\n"))
        assert.equal("lautum", c:receive("*l", 5))
        c:close()
        assert.equal(0, p:wait_exit(10), p:stderr())
        local said = p:stdout() .. p:stderr()
        assert.matches("Peer certificate: CN ?= ?client", said)
        assert.matches("Verification: OK", said)
      end, { timeout = 20 })
    end)
  end)

  describe("a peer that resets (SO_LINGER 0) costs its own connection only", function()
    -- tls_peer.py begins `when`, says "ready", waits for the go file, then
    -- resets; a good client is served meanwhile, and another after.
    local function reset_case(when, check)
      run(function()
        local ended = coserve.channel(4)
        local s = tls_server(echo(ended))
        local dir = proc.tmpdir()
        local p = proc.start({ "python3", PEER, "reset", tostring(s.port), certs.ca, when,
                               dir .. "/go" })
        finally(function() p:stop() proc.rmdir(dir) end) -- busted keeps one finally a case
        p:wait_output("ready\n", 10)
        good_client(s, "served meanwhile")
        proc.write(dir .. "/go", "")
        assert.equal(0, p:wait_exit(10), p:stdout() .. p:stderr())
        assert.matches("reset\n$", p:stdout())
        check(s, ended)
        good_client(s, "served after")
        s:shutdown()
      end, { timeout = 20 })
    end

    local function failed_handshake(s, ended)
      -- Counted as a failed handshake; no handler ran for it.
      assert(proc.poll(5, function() return s:stats().tls_failures == 1 end),
        "tls_failures = " .. s:stats().tls_failures)
      assert.equal(1, s:stats().tls_handshakes)
      proc.poll(5, function() return #ended > 0 end)
      assert.equal(1, #ended) -- the good client's handler only
    end

    it("mid-handshake: after half a ClientHello", function()
      reset_case("hello", failed_handshake)
    end)

    it("mid-handshake: after the server's answer, before the client's Finished", function()
      reset_case("handshake", failed_handshake)
    end)

    it("mid-record: a whole record, then half of the next", function()
      reset_case("record", function(s, ended)
        -- The good client's connection ended first, then the reset one's
        -- handler: it had its whole line, and the half record is no data.
        local first, second = assert(ended:pop(5)), assert(ended:pop(5))
        assert.is_nil(first.line)
        assert.is_nil(second.line)
        assert.equal("closed", second.err)
        assert.equal(2, s:stats().tls_handshakes)
        assert.equal(0, s:stats().tls_failures)
      end)
    end)
  end)

  describe("renewed certificates are read again", function()
    -- Writes a certificate for localhost with common name `cn` to
    -- dir/server.pem and dir/server.key (each replaced by a rename).
    local function install(dir, cn)
      local cert, key = certs.make(cn, { san = "DNS:localhost,IP:127.0.0.1" })
      assert(os.rename(cert, dir .. "/server.pem.new"))
      assert(os.rename(key, dir .. "/server.key.new"))
      assert(os.rename(dir .. "/server.pem.new", dir .. "/server.pem"))
      assert(os.rename(dir .. "/server.key.new", dir .. "/server.key"))
    end

    local function peer_subject(port)
      local c, err = coserve.connect("127.0.0.1", port, { timeout = 2,
        tls = { ca = certs.ca, server_name = "localhost" } })
      if not c then return nil, err end
      local subject = c:tls().peer_subject
      c:close()
      return subject
    end

    it("by a SIGHUP reload under -w 2: new connections get the new certificate; a bad one fails the reload",
      function()
      local dir = proc.tmpdir()
      install(dir, "first")
      proc.write(dir .. "/app.lua", [[
        local coserve = require "coserve"
        local s = coserve.server{ host = "127.0.0.1", port = tonumber(arg[1]),
          tls = { cert = arg[2] .. "/server.pem", key = arg[2] .. "/server.key" } }
        s:handle(function(conn)
          while true do
            local line = conn:receive()
            if not line then return end
            conn:send(line .. "\n")
          end
        end)
        coserve.log("info", "listening")
        assert(s:start())
      ]])
      local port = proc.free_port()
      local p = proc.start({ proc.BIN, "-w", "2", "--grace", "5", dir .. "/app.lua",
                             tostring(port), dir })
      finally(function() p:stop() proc.rmdir(dir) end)
      assert(p:wait_count("info: listening", 2, 5), "the workers did not start: " .. p:stderr())
      testing.run(function()
        local subject = proc.poll(5, function() return peer_subject(port) end)
        assert.matches("CN=first", subject)
        -- One connection made before the reload, kept across it.
        local old = assert(coserve.connect("127.0.0.1", port, { timeout = 5,
          tls = { ca = certs.ca, server_name = "localhost" } }))
        assert(old:send("before\n"))
        assert.equal("before", old:receive("*l", 5))
        install(dir, "renewed")
        p:signal("HUP")
        assert(proc.poll(10, function() return p:stderr():find("new worker%(s%) ready") end),
          "no reload: " .. p:stderr())
        subject = proc.poll(5, function()
          local sub = peer_subject(port)
          return sub and sub:find("CN=renewed", 1, true) and sub
        end)
        assert.matches("CN=renewed", subject)
        for _ = 1, 10 do assert.matches("CN=renewed", peer_subject(port)) end
        -- The old connection keeps its session and is still served.
        assert.matches("CN=first", old:tls().peer_subject)
        assert(old:send("after\n"))
        assert.equal("after", old:receive("*l", 5))
        old:close()
      end, { timeout = 30 })
      -- openssl s_client agrees, and verifies it.
      local r = proc.run({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port,
        "-CAfile", certs.ca, "-verify_hostname", "localhost", "-verify_return_error" },
        { timeout = 10 })
      assert.matches("subject=CN ?= ?renewed", r.out)
      assert.matches("Verify return code: 0 %(ok%)", r.out)
      -- A broken certificate at the next reload: the new workers cannot
      -- start, the reload fails and says why, the others keep serving.
      assert(proc.poll(10, function() return #proc.children(p.pid) == 2 end),
        "the old workers did not exit")
      proc.write(dir .. "/server.pem", "not a certificate\n")
      p:signal("HUP")
      assert(proc.poll(10, function() return p:stderr():find("reload failed", 1, true) end),
        p:stderr())
      assert.matches("tls: cannot use certificate " .. dir .. "/server.pem", p:stderr(), 1, true)
      testing.run(function() assert.matches("CN=renewed", assert(peer_subject(port))) end)
      p:signal("TERM")
      assert.equal(0, p:wait_exit(15))
    end)

    it("by one process: a server started again reads the files again", function()
      local dir = proc.tmpdir()
      finally(function() proc.rmdir(dir) end)
      install(dir, "first")
      run(function()
        local s = coserve.server{ host = "127.0.0.1", port = 0,
          tls = { cert = dir .. "/server.pem", key = dir .. "/server.key" } }
        s:handle(echo())
        for _, cn in ipairs{ "first", "renewed" } do
          install(dir, cn)
          local task = coserve.spawn(function() return s:start() end)
          assert.matches("CN=" .. cn, assert(peer_subject(s.port)))
          s:shutdown()
          assert.same({ true, true }, { task:join(5) })
        end
      end, { timeout = 15 })
    end)
  end)
end)
