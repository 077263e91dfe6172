-- coserve.ngx (SPEC §10): each function of the ngx subset, against coserve's
-- own servers; the Debian libraries on real servers are ngx_libs_spec.lua.
local coserve = require "coserve"
local testing = require "coserve.testing"
local support = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/"
local proc = dofile(support .. "process.lua")
local ngx = require "coserve.ngx"

local run, serve = testing.run, testing.server

-- A server that answers each line "PATTERN" with its reply; the handler
-- may be anything for the cases that need more.
local function line_server(handler, opts)
  return serve(handler or function(conn)
    while true do
      local line = conn:receive()
      if not line then return end
      conn:send(line .. "\n")
    end
  end, opts)
end

local function tcp_to(s, opts)
  local sock = ngx.socket.tcp()
  sock:settimeout(2000)
  assert.equal(1, sock:connect("127.0.0.1", s.port, opts))
  return sock
end

describe("coserve.ngx", function()
  it("is the ngx table; install() also sets the global ngx", function()
    assert.is_table(ngx)
    assert.is_nil(rawget(_G, "ngx"))
    assert.equal(ngx, ngx.install())
    assert.equal(ngx, rawget(_G, "ngx"))
    rawset(_G, "ngx", nil)
  end)

  it("can be the first module plain LuaJIT requires from coserve.so", function()
    local r = proc.run(proc.luajit("-e", ([[
      package.path = ""
      package.cpath = %q
      local ngx = require "coserve.ngx"
      print(type(ngx.socket.tcp), type(package.loaded.coserve))
    ]]):format(proc.BUILD .. "/lua/?.so")))
    assert.equal(0, r.status, r.err)
    assert.equal("function\ttable\n", r.out)
  end)

  it("raises 'coserve.ngx: ngx.X is not supported' for what it does not provide", function()
    local say = ngx.say                        -- taking it is fine: calling it is not
    assert.has_error(function() say("x") end, "coserve.ngx: ngx.say is not supported")
    assert.has_error(function() ngx.req.get_headers() end,
      "coserve.ngx: ngx.req.get_headers is not supported")
    assert.has_error(function() return ngx.var.uri end, "coserve.ngx: ngx.var.uri is not supported")
    assert.has_error(function() ngx.ctx.x = 1 end, "coserve.ngx: ngx.ctx.x is not supported")
    assert.has_error(function() return ngx.headers_sent end,
      "coserve.ngx: ngx.headers_sent is not supported")
    local http_version = ngx.req.http_version       -- taken when a library loads
    assert.has_error(function() http_version() end,
      "coserve.ngx: ngx.req.http_version is not supported")
    assert.has_error(function() ngx.socket.unix() end, "coserve.ngx: ngx.socket.unix is not supported")
    assert.has_error(function() ngx.re.split("a", ",") end, "coserve.ngx: ngx.re.split is not supported")
    assert.has_error(function() ngx.socket.tcp():setoption("keepalive", true) end,
      "coserve.ngx: ngx.socket.tcp:setoption is not supported")
    assert.has_error(function() ngx.shared.d:lpush("k", "v") end,
      "coserve.ngx: ngx.shared.DICT:lpush is not supported")
    assert.has_error(function() ngx.re.match("a", "a", "d") end,
      "coserve.ngx: ngx.re option \"d\" is not supported")
  end)

  describe("ngx.socket.tcp", function()
    it("connects, sends strings and nested arrays, receives lines, counts and everything", function()
      run(function()
        local s = line_server(function(conn)
          conn:send(assert(conn:receive()) .. "\n")      -- one line back
          conn:send("12345")
          conn:send("rest of it")
        end)
        local sock = tcp_to(s)
        -- An array with numbers and a nested array, as nginx.redis builds.
        assert.equal(12, sock:send({ "*", 1, { "\r", "x" }, true, "end\n" }))
        assert.equal("*1\rxtrueend", sock:receive())
        assert.equal("123", sock:receive(3))
        assert.equal("45", sock:receive("2"))          -- a count given as a string
        assert.equal("", sock:receive(0))
        assert.equal("rest of it", sock:receive("*a"))
        local none, err = sock:receive()
        assert.is_nil(none)
        assert.equal("closed", err)
        -- A read error closes the socket, as in ngx_lua.
        assert.same({ nil, "closed" }, { sock:send("x") })
        s:shutdown()
      end)
    end)

    it("receive returns nil, err, partial on a timeout in milliseconds, and stays usable", function()
      run(function()
        local s = line_server(function(conn)
          conn:send("part")
          conn:receive()                            -- until the client sends
          conn:send("ial line\n")
          conn:receive()
        end)
        local sock = tcp_to(s)
        sock:settimeout(50)
        local none, err, partial = sock:receive()
        assert.is_nil(none)
        assert.equal("timeout", err)
        assert.equal("part", partial)
        sock:settimeout(2000)
        sock:send("go\n")
        assert.equal("ial line", sock:receive())
        assert.equal(1, sock:close())
        assert.same({ nil, "closed" }, { sock:close() })
        s:shutdown()
      end)
    end)

    it("settimeouts(connect, send, read) are milliseconds", function()
      run(function()
        local s = line_server(function(conn) conn:receive() end)
        local sock = ngx.socket.tcp()
        sock:settimeouts(1000, 1000, 30)
        assert.equal(1, sock:connect("127.0.0.1", s.port))
        local t0 = coserve.now()
        assert.same({ nil, "timeout", "" }, { sock:receive(1) })
        assert.is_true(coserve.now() - t0 < 1)      -- 30 ms, not 30 s
        assert.has_error(function() sock:settimeouts(-1, 0, 0) end)
        sock:send("bye\n")
        sock:close()
        s:shutdown()
      end)
    end)

    it("receiveany returns what is there, at most n bytes", function()
      run(function()
        local s = line_server(function(conn) conn:send("abcdef") conn:receive() end)
        local sock = tcp_to(s)
        local got = assert(sock:receiveany(4))
        assert.is_true(#got >= 1 and #got <= 4)
        assert.equal(("abcdef"):sub(1, #got), got)
        assert.has_error(function() sock:receiveany(0) end)
        sock:close()
        s:shutdown()
      end)
    end)

    it("receiveuntil: an iterator, with inclusive, and with ngx_lua's size argument", function()
      run(function()
        local s = line_server(function(conn)
          conn:send("first--sep--second--sep--hello, world! -agentzh--sep--\r\n\r\nafter")
          conn:receive()
        end)
        local sock = tcp_to(s)
        local reader = sock:receiveuntil("--sep--")
        assert.equal("first", reader())
        local inclusive = sock:receiveuntil("--sep--", { inclusive = true })
        assert.equal("second--sep--", inclusive())
        local pieces = {}
        for _ = 1, 10 do
          local data, err = reader(4)
          if not data then
            assert.is_nil(err)                     -- the end of this part
            break
          end
          pieces[#pieces + 1] = data
        end
        assert.same({ "hell", "o, w", "orld", "! -a", "gent", "zh" }, pieces)
        local header = sock:receiveuntil("\r\n\r\n")
        assert.equal("", header())
        assert.equal("after", sock:receive(5))
        sock:settimeout(30)
        local none, err, partial = reader()
        assert.is_nil(none)
        assert.equal("timeout", err)
        assert.equal("", partial)
        sock:close()
        s:shutdown()
      end)
    end)

    it("connects to unix: paths, and ngx.socket.connect returns a connected socket", function()
      local dir = proc.tmpdir()
      run(function()
        local s = line_server(nil, { host = "unix:" .. dir .. "/s.sock" })
        local sock = ngx.socket.tcp()
        assert.equal(1, sock:connect("unix:" .. dir .. "/s.sock"))
        sock:send("over unix\n")
        assert.equal("over unix", sock:receive())
        sock:close()
        local sock2 = assert(ngx.socket.connect("unix:" .. dir .. "/s.sock"))
        sock2:send("again\n")
        assert.equal("again", sock2:receive())
        sock2:close()
        s:shutdown()
      end)
      proc.rmdir(dir)
    end)

    it("connect errors come back as nil, err", function()
      local port = proc.free_port()
      run(function()
        local sock = ngx.socket.tcp()
        assert.same({ nil, "connection refused" }, { sock:connect("127.0.0.1", port) })
        assert.same({ nil, "closed" }, { sock:send("x") })
        assert.same({ nil, "closed" }, { sock:receive() })
        assert.same({ nil, "closed" }, { sock:getreusedtimes() })
        local none, err = ngx.socket.connect("127.0.0.1", port)
        assert.is_nil(none)
        assert.equal("connection refused", err)
      end)
    end)

    it("setkeepalive(ms, size) pools per host:port or opts.pool; getreusedtimes counts", function()
      run(function()
        local accepted = 0
        local s = line_server(function(conn)
          accepted = accepted + 1
          while conn:receive() do conn:send("ok\n") end
        end)
        local a = tcp_to(s)
        assert.equal(0, a:getreusedtimes())
        assert.equal(1, a:setkeepalive(10000, 5))
        assert.same({ nil, "closed" }, { a:send("x") })   -- handed to the pool
        local b = tcp_to(s)
        assert.equal(1, b:getreusedtimes())
        b:send("x\n")
        assert.equal("ok", b:receive())
        assert.equal(1, b:setkeepalive())
        local c = tcp_to(s)
        assert.equal(2, c:getreusedtimes())
        local named = tcp_to(s, { pool = "other" })    -- another pool: a new connection
        assert.equal(0, named:getreusedtimes())
        c:close()
        named:close()
        assert.equal(2, accepted)
        -- Unread data: not reused (setkeepalive refuses it, or the pool
        -- drops it as soon as the loop sees it; see docs/ngx.md).
        local d = tcp_to(s)
        d:send("y\n")
        coserve.sleep(0.05)
        d:setkeepalive()
        coserve.sleep(0.05)
        local g = tcp_to(s)
        assert.equal(0, g:getreusedtimes())
        g:close()
        -- A pool keeps at most `size` idle connections: the oldest goes.
        local three = {}
        for i = 1, 3 do three[i] = tcp_to(s, { pool = "small" }) end
        for i = 1, 3 do assert.equal(1, three[i]:setkeepalive(10000, 2)) end
        local reuses = {}
        for i = 1, 3 do
          three[i] = tcp_to(s, { pool = "small" })
          reuses[i] = three[i]:getreusedtimes()
        end
        assert.same({ 1, 1, 0 }, reuses)
        for i = 1, 3 do three[i]:close() end
        -- An expired idle connection is not reused.
        local e = tcp_to(s)
        assert.equal(1, e:setkeepalive(10, 5))
        coserve.sleep(0.05)
        local f = tcp_to(s)
        assert.equal(0, f:getreusedtimes())
        f:close()
        s:shutdown()
      end)
    end)

    it("pool_size and backlog: connects beyond pool_size wait, beyond backlog fail", function()
      run(function()
        local s = line_server()
        local opts = { pool = "limited", pool_size = 1, backlog = 1 }
        local first = tcp_to(s, opts)
        local waited = coserve.channel(1)
        coserve.spawn(function()
          local second = ngx.socket.tcp()
          second:settimeout(2000)
          assert(second:connect("127.0.0.1", s.port, opts))
          waited:push(second:getreusedtimes())
          second:close()
        end)
        local third = ngx.socket.tcp()
        assert.same({ nil, "too many waiting connect operations" },
          { third:connect("127.0.0.1", s.port, opts) })
        assert.equal(1, first:setkeepalive())         -- the waiter takes it
        assert.equal(1, waited:pop(2))
        s:shutdown()
      end)
    end)

    it("sslhandshake(session, name, verify) upgrades to TLS; verify only when asked", function()
      local certs = testing.tls()
      run(function()
        local s = line_server(nil, { tls = { cert = certs.cert, key = certs.key } })
        local sock = tcp_to(s)
        assert.is_true(sock:sslhandshake(false, "localhost", false))
        sock:send("secret\n")
        assert.equal("secret", sock:receive())
        sock:close()
        -- The test CA is not in the system store: verification fails.
        local sock2 = tcp_to(s)
        local ok, err = sock2:sslhandshake(nil, "localhost", true)
        assert.is_nil(ok)
        assert.matches("verify", err)
        sock2:close()
        s:shutdown()
      end)
      os.execute("rm -rf '" .. certs.dir .. "'")
    end)
  end)

  describe("ngx.socket.udp", function()
    it("setpeername, send (string or array), receive (cut to size), settimeout, close", function()
      run(function()
        local server = assert(coserve.udp())
        assert(server:bind("127.0.0.1", 0))
        local _, port = server:getsockname()
        local sock = ngx.socket.udp()
        assert.equal(1, sock:setpeername("127.0.0.1", port))
        assert.equal(1, sock:send({ "ping ", 1 }))
        local data, ip, from = server:recvfrom(2)
        assert.equal("ping 1", data)
        server:sendto("pong, and more", ip, from)
        assert.equal("pong", sock:receive(4))   -- longer than size: cut, as recv(2)
        server:sendto("whole", ip, from)
        assert.equal("whole", sock:receive())
        sock:settimeout(30)
        assert.same({ nil, "timeout" }, { sock:receive() })
        assert.equal(1, sock:close())
        assert.same({ nil, "closed" }, { sock:send("x") })
        server:close()
      end)
    end)
  end)

  describe("time, sleep, log", function()
    it("ngx.now is wall-clock seconds with milliseconds; time, update_time, sleep", function()
      run(function()
        local t = ngx.now()
        assert.is_true(math.abs(t - os.time()) < 2)
        assert.equal(t, math.floor(t * 1000 + 0.5) / 1000)
        assert.equal(os.time(), ngx.time())
        ngx.update_time()
        local before = ngx.now()
        assert.is_true(ngx.sleep(0.02))
        assert.is_true(ngx.now() >= before + 0.015)
        assert.has_error(function() ngx.sleep(-1) end)
        assert.matches("^%d%d%d%d%-%d%d%-%d%d$", ngx.today())
      end)
    end)

    it("ngx.log writes through coserve.log, with ngx's levels", function()
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8 }, { ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT,
        ngx.ERR, ngx.WARN, ngx.NOTICE, ngx.INFO, ngx.DEBUG })
      local r = proc.run({ proc.BIN, "-e", [[
        local ngx = require "coserve.ngx"
        ngx.log(ngx.ERR, "bad ", 42, " ", nil, " ", ngx.null, " ", true)
        ngx.log(ngx.WARN, "warned")
        ngx.log(ngx.INFO, "informed")
        ngx.log(ngx.DEBUG, "not shown at the default level")
      ]] })
      assert.equal(0, r.status)
      assert.matches("error: %[lua%] [^\n]*: bad 42 nil null true\n", r.err)
      assert.matches("warn: [^\n]*warned", r.err)
      assert.matches("info: [^\n]*informed", r.err)
      assert.not_matches("not shown", r.err)
      assert.has_error(function() ngx.log(99, "x") end)
    end)

    it("ngx.null is the NULL light userdata, as cjson.null", function()
      assert.equal("userdata", type(ngx.null))
      local ok, cjson = pcall(require, "cjson")
      if ok then assert.equal(cjson.null, ngx.null) end
    end)
  end)

  describe("ngx.thread", function()
    it("spawn runs at once; wait returns the first to finish; kill stops one", function()
      run(function()
        local order = {}
        local slow = ngx.thread.spawn(function() ngx.sleep(0.2) return "slow" end)
        local fast = ngx.thread.spawn(function(a, b)
          order[#order + 1] = "fast started"
          ngx.sleep(0.01)
          return a + b, "done"
        end, 1, 2)
        order[#order + 1] = "after spawn"
        assert.same({ "fast started", "after spawn" }, order)
        assert.same({ true, 3, "done" }, { ngx.thread.wait(slow, fast) })
        assert.same({ false, "already waited or killed" }, { ngx.thread.wait(fast) })
        assert.is_true(ngx.thread.kill(slow))
        assert.same({ nil, "already waited or killed" }, { ngx.thread.kill(slow) })
        local failing = ngx.thread.spawn(function() ngx.sleep(0) error("boom", 0) end)
        assert.same({ false, "boom" }, { ngx.thread.wait(failing) })
        local finished = ngx.thread.spawn(function() return "now" end)
        assert.same({ true, "now" }, { ngx.thread.wait(finished) })
      end)
    end)
  end)

  describe("ngx.timer", function()
    it("at(delay, cb, ...) calls cb(premature, ...) later, in its own coroutine", function()
      run(function()
        local got = coserve.channel(1)
        assert.truthy(ngx.timer.at(0.01, function(premature, a, b)
          got:push({ premature, a, b })
        end, "x", 2))
        assert.same({ false, "x", 2 }, got:pop(2))
        local h = ngx.timer.at(10, function() got:push("never") end)
        assert.equal(1, ngx.timer.pending_count())
        h:cancel()
        assert.has_error(function() ngx.timer.at(1, "not a function") end)
      end)
    end)

    it("every(delay, cb, ...) ticks until canceled", function()
      run(function()
        local ticks = coserve.channel(10)
        local h = assert(ngx.timer.every(0.01, function(premature, tag)
          ticks:push({ premature, tag })
        end, "t"))
        for _ = 1, 3 do assert.same({ false, "t" }, ticks:pop(2)) end
        h:cancel()
      end)
    end)
  end)

  describe("ngx.timer at exit", function()
    it("pending timers fire at once with premature = true when the process exits", function()
      local p = proc.start({ proc.BIN, "-e", [[
        local ngx = require "coserve.ngx"
        ngx.timer.at(100, function(premature, tag)
          print("at", premature, tag)
          io.stdout:flush()
        end, "late")
        ngx.timer.every(100, function(premature)
          print("every", premature)
          io.stdout:flush()
        end)
        print("ready")
        io.stdout:flush()
      ]] })
      finally(function() p:stop() end)
      p:wait_output("ready\n")
      p:signal("TERM")
      assert.equal(0, p:wait_exit(5))
      assert.matches("at\ttrue\tlate\n", p:stdout())
      assert.matches("every\ttrue\n", p:stdout())
    end)
  end)

  describe("ngx.worker", function()
    it("id, pid, count, exiting in a process of its own", function()
      run(function()
        assert.equal(0, ngx.worker.id())
        assert.equal(1, ngx.worker.count())
        assert.is_false(ngx.worker.exiting())
        local stat = proc.read("/proc/self/stat")
        assert.equal(tonumber(stat:match("^(%d+)")), ngx.worker.pid())
      end)
    end)

    for _, w in ipairs{ "2", "auto" } do
    it("id and count under coserve -w " .. w, function()
      -- auto: one worker per CPU this process may run on, as nproc counts
      -- them without its OpenMP variables (and libuv, for the master).
      local n = w == "auto" and tonumber(proc.run({ "env", "-u", "OMP_NUM_THREADS", "-u",
        "OMP_THREAD_LIMIT", "nproc" }).out) or tonumber(w)
      local port = proc.free_port()
      local p = proc.start({ proc.BIN, "-w", w, "-e", ([[
        local coserve = require "coserve"
        local ngx = require "coserve.ngx"
        print(("worker %%d of %%d"):format(ngx.worker.id(), ngx.worker.count()))
        io.stdout:flush()
        local s = coserve.server{ host = "127.0.0.1", port = %d }
        s:handle(function() end)
        s:start()
      ]]):format(port) })
      local ok, err = pcall(function()
        for id = 0, n - 1 do p:wait_output(("worker %d of %d"):format(id, n), 10) end
      end)
      p:stop()
      assert(ok, err)
    end)
    end
  end)

  describe("ngx.re", function()
    it("match: groups, named groups, unmatched ones false, ctx.pos, options", function()
      local m = ngx.re.match("hello 1234 world", [[(?<num>\d+)\s+(\w+)(x)?]], "jo")
      assert.equal("1234 world", m[0])
      assert.equal("1234", m[1])
      assert.equal("world", m[2])
      assert.equal(false, m[3])
      assert.equal("1234", m.num)
      assert.is_nil(ngx.re.match("abc", [[\d]]))
      assert.equal("ABC", ngx.re.match("xABC", "abc", "i")[0])
      assert.is_nil(ngx.re.match("xabc", "abc", "a"))          -- anchored
      assert.equal("a\nb", ngx.re.match("a\nb", "a.b", "s")[0])
      assert.equal("b", ngx.re.match("a\nb", "^b", "m")[0])
      assert.equal("ab", ngx.re.match("ab", "a b  # comment", "x")[0])
      assert.equal("é", ngx.re.match("café", ".$", "u")[0])
      local ctx = { pos = 5 }
      assert.equal("5", ngx.re.match("12345", [[\d]], "jo", ctx)[0])
      assert.equal(6, ctx.pos)
      local none, err = ngx.re.match("x", "(")
      assert.is_nil(none)
      assert.matches("pcre2_compile%(%) failed: missing closing parenthesis", err)
      assert.has_error(function() ngx.re.match("x", "x", "Z") end)
    end)

    it("find: from, to; the nth group; ctx", function()
      assert.same({ 7, 11 }, { ngx.re.find("hello world", "w(or)ld") })
      assert.same({ 8, 9 }, { ngx.re.find("hello world", "w(or)ld", "jo", nil, 1) })
      assert.is_nil(ngx.re.find("hello", "z"))
      local ctx = {}
      assert.same({ 1, 1 }, { ngx.re.find("aXa", "a", "", ctx) })
      assert.same({ 3, 3 }, { ngx.re.find("aXa", "a", "", ctx) })
    end)

    it("gmatch iterates over every match, empty ones as Perl does", function()
      local got = {}
      for m in ngx.re.gmatch("a1b22c333", [[([a-z])(\d+)]]) do got[#got + 1] = m[1] .. "=" .. m[2] end
      assert.same({ "a=1", "b=22", "c=333" }, got)
      local empties = {}
      for m in ngx.re.gmatch("ab", "x*") do empties[#empties + 1] = m[0] end
      assert.same({ "", "", "" }, empties)
    end)

    it("sub and gsub: templates $0 $1 ${name} $$, functions, counts", function()
      assert.same({ "hello, [world]", 1 }, { ngx.re.sub("hello, world", [[\w+$]], "[$0]") })
      assert.same({ "b-a d-c", 2 }, { ngx.re.gsub("a-b c-d", [[(\w)-(?<second>\w)]], "${second}-$1") })
      assert.same({ "$5", 1 }, { ngx.re.sub("5", [[\d]], "$$$0") })
      assert.same({ "A1B2", 2 }, { ngx.re.gsub("a1b2", "[a-z]", function(m) return m[0]:upper() end) })
      assert.same({ "-a-b-", 3 }, { ngx.re.gsub("ab", "x*", "-") })
      assert.same({ "same", 0 }, { ngx.re.gsub("same", "z", "y") })
      local none, n, err = ngx.re.sub("a", "a", "$x")
      assert.is_nil(none)
      assert.is_nil(n)
      assert.matches("template", err)
    end)
  end)

  describe("digests and encodings", function()
    it("md5, md5_bin, sha1_bin, hmac_sha1, crc32 on OpenSSL and zlib", function()
      assert.equal("5d41402abc4b2a76b9719d911017c592", ngx.md5("hello"))
      assert.equal(16, #ngx.md5_bin("hello"))
      assert.equal("d41d8cd98f00b204e9800998ecf8427e", ngx.md5(""))
      assert.equal("qvTGHdzF6KLavt4PO0gs2a6pQ00=", ngx.encode_base64(ngx.sha1_bin("hello")))
      -- RFC 2202 test case 2, and the Wikipedia example.
      assert.equal("7/zfauXrL6LSdBbV8YTfnCWafHk=",
        ngx.encode_base64(ngx.hmac_sha1("Jefe", "what do ya want for nothing?")))
      assert.equal("3nybhbi3iqa8ino29wqQcBydtNk=", ngx.encode_base64(
        ngx.hmac_sha1("key", "The quick brown fox jumps over the lazy dog")))
      assert.equal(907060870, ngx.crc32_short("hello"))
      assert.equal(0x414FA339, ngx.crc32_long("The quick brown fox jumps over the lazy dog"))
    end)

    it("encode_base64 (and no_padding), decode_base64 (nil when malformed)", function()
      assert.equal("aGVsbG8=", ngx.encode_base64("hello"))
      assert.equal("aGVsbG8", ngx.encode_base64("hello", true))
      assert.equal("", ngx.encode_base64(""))
      assert.equal("hello", ngx.decode_base64("aGVsbG8="))
      assert.equal("hello", ngx.decode_base64("aGVsbG8"))
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      assert.equal(all, ngx.decode_base64(ngx.encode_base64(all)))
      assert.is_nil(ngx.decode_base64("a"))
      assert.is_nil(ngx.decode_base64("aGV*bG8="))
      assert.is_nil(ngx.decode_base64("aGVs bG8="))
    end)

    it("escape_uri, unescape_uri, encode_args, decode_args", function()
      assert.equal("a%20b%2Fc~d-e.f_%E2%82%AC", ngx.escape_uri("a b/c~d-e.f_€"))
      assert.equal("a b/c €", ngx.unescape_uri("a+b%2Fc%20%E2%82%AC"))
      assert.equal("100%", ngx.unescape_uri("100%"))
      local args = ngx.encode_args({ b = { "1", "2" }, c = true, d = false, e = "x y" })
      local parts = {}
      for p in args:gmatch("[^&]+") do parts[#parts + 1] = p end
      table.sort(parts)
      assert.same({ "b=1", "b=2", "c", "e=x%20y" }, parts)
      assert.same({ a = "1", b = { "2", "3" }, c = true, d = "", e = "x y" },
        ngx.decode_args("a=1&b=2&b=3&c&d=&e=x+y"))
      assert.same({ a = "1" }, ngx.decode_args("a=1&b=2", 1))
    end)
  end)

  it("ngx.config has what the libraries check", function()
    assert.equal("http", ngx.config.subsystem)
    assert.is_false(ngx.config.debug)
    assert.is_true(ngx.config.ngx_lua_version >= 9011)   -- nginx.websocket.client's check
    assert.is_number(ngx.config.nginx_version)
    assert.matches("/$", ngx.config.prefix())
  end)

  describe("ngx.shared.DICT (per process)", function()
    it("get, set with flags, add, replace, delete, incr, ttl, expire, keys, flush", function()
      run(function()
        local d = ngx.shared.spec_dict
        assert.equal(d, ngx.shared.spec_dict)
        assert.same({ true, nil, false }, { d:set("a", "1", 0, 7) })
        assert.same({ "1", 7 }, { d:get("a") })
        assert.same({ false, "exists", false }, { d:add("a", "2") })
        assert.same({ false, "not found", false }, { d:replace("b", "2") })
        assert.is_true((d:add("b", 2)))
        assert.is_true((d:replace("b", 3)))
        assert.equal(3, d:get("b"))
        assert.equal(8, d:incr("b", 5))
        assert.same({ nil, "not found" }, { d:incr("c", 1) })
        assert.equal(11, d:incr("c", 1, 10))
        assert.same({ nil, "not a number" }, { d:incr("a", 1) })
        assert.same({ false, "bad value type", false }, { d:set("t", {}) })
        assert.is_true(d:delete("c"))
        assert.is_nil(d:get("c"))
        assert.equal(0, d:ttl("a"))
        assert.is_true(d:expire("a", 0.03))
        assert.is_true(d:ttl("a") > 0)
        d:set("e", "short", 0.03)
        local keys = d:get_keys()
        table.sort(keys)
        assert.same({ "a", "b", "e" }, keys)
        coserve.sleep(0.05)
        assert.is_nil(d:get("a"))
        assert.is_nil(d:get("e"))
        assert.same({ nil, "not found" }, { d:ttl("e") })
        assert.same({ "b" }, d:get_keys(0))
        d:flush_all()
        assert.is_nil(d:get("b"))
        assert.same({ nil, "empty key" }, { d:get("") })
      end)
    end)
  end)
end)
