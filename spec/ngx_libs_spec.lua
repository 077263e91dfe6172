-- Debian's packages of OpenResty's cosocket libraries (lua-nginx-redis,
-- -redis-connector, -memcached, -dns, -websocket), unmodified, on
-- coserve.ngx (SPEC §10), each against its real server: redis-server,
-- memcached and dnsmasq started here on a loopback port and stopped by
-- PID, and coserve's own WebSocket server.
local coserve = require "coserve"
local http = require "coserve.http"
local testing = require "coserve.testing"
local support = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/"
local proc = dofile(support .. "process.lua")
local ngx = require("coserve.ngx").install()

local run = testing.run

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == 0
end

-- A server process on a free loopback port, ready once `ready` (a Lua
-- pattern) is on its stdout or stderr.
local function start_server(argv_of_port, ready)
  local port = proc.free_port()
  local p = proc.start(argv_of_port(port))
  local ok = proc.poll(10, function()
    return (p:stdout() .. p:stderr()):find(ready) or p:status()
  end)
  if not ok or p:status() then
    local out, err = p:stdout(), p:stderr()
    p:stop()
    error("server did not start: " .. out .. err)
  end
  return p, port
end

describe("nginx.redis on coserve.ngx, against redis-server", function()
  local redis = require "nginx.redis"
  local server, port, dir

  lazy_setup(function()
    assert(have("redis-server"), "redis-server is missing (scripts/test installs it)")
    dir = proc.tmpdir()
    server, port = start_server(function(p)
      return { "redis-server", "--port", tostring(p), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", dir, "--daemonize", "no" }
    end, "Ready to accept connections")
  end)

  lazy_teardown(function()
    if server then server:stop() end
    proc.rmdir(dir)
  end)

  local function client(timeout_ms)
    local r = assert(redis:new())
    r:set_timeout(timeout_ms or 2000)
    assert(r:connect("127.0.0.1", port))
    return r
  end

  it("runs commands: strings, counters, hashes, lists, a missing key is ngx.null", function()
    run(function()
      local r = client()
      assert.equal("OK", r:set("ngx:a", "hello"))
      assert.equal("hello", r:get("ngx:a"))
      assert.equal(ngx.null, r:get("ngx:missing"))
      r:set("ngx:n", 1)
      assert.equal(1, r:del("ngx:n"))
      assert.equal(0, r:del("ngx:n"))
      assert.equal(5, r:incrby("ngx:n", 5))
      assert.equal("OK", r:hmset("ngx:h", "f1", "v1", "f2", "v2"))
      assert.same({ f1 = "v1", f2 = "v2" }, r:array_to_hash(r:hgetall("ngx:h")))
      r:del("ngx:l")
      assert.equal(3, r:rpush("ngx:l", "x", "y", "z"))
      assert.same({ "x", "y", "z" }, r:lrange("ngx:l", 0, -1))
      local big = string.rep("b", 300000)        -- many reads for one bulk reply
      assert.equal("OK", r:set("ngx:big", big))
      assert.equal(big, r:get("ngx:big"))
      assert.equal("PONG", r:ping())
      r:del("ngx:a", "ngx:n", "ngx:h", "ngx:l", "ngx:big")
      assert.equal(1, r:close())
    end)
  end)

  it("returns redis errors as nil/false, err and keeps the connection usable", function()
    local closed_port = proc.free_port()
    run(function()
      local r = client()
      r:set("ngx:str", "x")
      local res, err = r:lpush("ngx:str", "y")
      assert.falsy(res)
      assert.matches("^WRONGTYPE", err)
      local _, err2 = r:incr("ngx:str")
      assert.matches("not an integer", err2)
      assert.equal("x", r:get("ngx:str"))       -- the same connection goes on
      r:del("ngx:str")
      r:close()
      -- Nothing listens: the connect error comes back as a value.
      local r2 = redis:new()
      local ok, cerr = r2:connect("127.0.0.1", closed_port)
      assert.is_nil(ok)
      assert.equal("connection refused", cerr)
    end)
  end)

  it("pipelines 200 commands in one send and reads every reply in order", function()
    run(function()
      local r = client()
      r:init_pipeline()
      for i = 1, 100 do
        r:set("ngx:p" .. i, i)
        r:get("ngx:p" .. i)
      end
      local results = assert(r:commit_pipeline())
      assert.equal(200, #results)
      for i = 1, 100 do
        assert.equal("OK", results[2 * i - 1])
        assert.equal(tostring(i), results[2 * i])
      end
      r:init_pipeline()
      r:set("ngx:pstr", "x")
      r:lpush("ngx:pstr", "y")                  -- an error inside a pipeline
      local res = r:commit_pipeline()
      assert.equal("OK", res[1])
      assert.same(false, res[2][1])
      assert.matches("WRONGTYPE", res[2][2])
      r:init_pipeline()
      for i = 1, 100 do r:del("ngx:p" .. i) end
      r:del("ngx:pstr")
      r:commit_pipeline()
      r:close()
    end)
  end)

  it("subscribes, receives what another connection publishes, unsubscribes", function()
    run(function()
      local sub = client()
      local res = assert(sub:subscribe("ngx:chan"))
      assert.same({ "subscribe", "ngx:chan", 1 }, res)
      local pub = client()
      for i = 1, 3 do assert.equal(1, pub:publish("ngx:chan", "msg" .. i)) end
      for i = 1, 3 do
        assert.same({ "message", "ngx:chan", "msg" .. i }, assert(sub:read_reply()))
      end
      -- Nothing published: read_reply times out, and the subscription goes on.
      sub:set_timeout(100)
      local none, err = sub:read_reply()
      assert.is_nil(none)
      assert.equal("timeout", err)
      sub:set_timeout(2000)
      pub:publish("ngx:chan", "after")
      assert.same({ "message", "ngx:chan", "after" }, assert(sub:read_reply()))
      assert.same({ "unsubscribe", "ngx:chan", 0 }, assert(sub:unsubscribe("ngx:chan")))
      assert.equal("PONG", sub:ping())
      sub:close()
      pub:close()
    end)
  end)

  it("reuses a pooled connection: set_keepalive, then get_reused_times counts", function()
    run(function()
      local r = client()
      assert.equal(0, r:get_reused_times())
      r:select(3)                               -- state that the pool keeps
      assert.equal(1, r:set_keepalive(10000, 10))
      for n = 1, 3 do
        local r2 = client()
        assert.equal(n, r2:get_reused_times())
        assert.equal("OK", r2:set("ngx:db3", "here"))
        assert.equal(1, r2:set_keepalive(10000, 10))
      end
      -- A named pool is a pool of its own.
      local r3 = redis:new()
      assert(r3:connect("127.0.0.1", port, { pool = "ngx-db0" }))
      assert.equal(0, r3:get_reused_times())
      assert.equal(ngx.null, r3:get("ngx:db3"))  -- db 0
      r3:close()
      local r4 = client()
      assert.equal(4, r4:get_reused_times())
      assert.equal("here", r4:get("ngx:db3"))
      r4:del("ngx:db3")
      r4:close()
      -- A connection the server closed while pooled is not handed out.
      local r5 = client()
      local killer = client()
      local id = r5:client("id")
      assert.equal(1, r5:set_keepalive(10000, 10))
      assert.equal(1, killer:client("kill", "id", id))
      killer:close()
      assert.truthy(proc.poll(2, function()
        local r6 = client()
        local fresh = r6:get_reused_times() == 0
        r6:close()
        return fresh
      end))
    end)
  end)

  it("times out a read after the adapter's milliseconds, and the next connection works", function()
    run(function()
      local r = client(100)
      local t0 = coserve.now()
      local res, err = r:blpop("ngx:never", 2)   -- blocks 2 s on the server
      assert.is_nil(res)
      assert.equal("timeout", err)
      assert.is_true(coserve.now() - t0 < 1.5)   -- the 100 ms, not the 2 s
      r:close()
      assert.equal("PONG", client():ping())
    end)
  end)

  it("serves 50 coroutines, each with its own commands in order", function()
    run(function()
      local wg = coserve.waitgroup()
      local bad = {}
      for i = 1, 50 do
        wg:add(1)
        coserve.spawn(function()
          local r = client()
          for j = 1, 20 do
            local key = "ngx:c" .. i
            r:set(key, i * 1000 + j)
            local v = r:get(key)
            if v ~= tostring(i * 1000 + j) then bad[#bad + 1] = key .. "=" .. tostring(v) end
          end
          r:del("ngx:c" .. i)
          r:set_keepalive(10000, 100)
          wg:done()
        end)
      end
      assert(wg:wait(10))
      assert.same({}, bad)
    end, { timeout = 15 })
  end)

  it("nginx.redis.connector connects from a URL, selects the db, and pools", function()
    local connector = require "nginx.redis.connector"
    local closed_port = proc.free_port()
    run(function()
      local rc = connector.new({ url = "redis://127.0.0.1:" .. port .. "/5",
                                 connect_timeout = 500, read_timeout = 2000 })
      local r = assert(rc:connect())
      assert.equal("OK", r:set("ngx:conn", "five"))
      assert.equal(1, rc:set_keepalive(r))
      local r2 = assert(rc:connect())
      assert.equal(1, r2:get_reused_times())
      assert.equal("five", r2:get("ngx:conn"))
      r2:del("ngx:conn")
      r2:close()
      local plain = client()
      plain:select(5)
      assert.equal(ngx.null, plain:get("ngx:conn"))
      plain:close()
      -- Host and port as parameters, and a refused connect.
      local bad = connector.new({ host = "127.0.0.1", port = closed_port, connect_timeout = 500 })
      local none, err = bad:connect()
      assert.is_nil(none)
      assert.matches("connection refused", err)
    end)
  end)
end)

describe("nginx.memcached on coserve.ngx, against memcached", function()
  local memcached = require "nginx.memcached"
  local server, port

  lazy_setup(function()
    assert(have("memcached"), "memcached is missing (scripts/test installs it)")
    server, port = start_server(function(p)
      return { "memcached", "-l", "127.0.0.1", "-p", tostring(p), "-U", "0", "-m", "16", "-vv",
               "-u", "nobody" }
    end, "server listening")
  end)

  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function client()
    local m = assert(memcached:new())
    m:set_timeout(2000)
    assert(m:connect("127.0.0.1", port))
    return m
  end

  it("sets, gets, adds, replaces, counts, deletes, and cas", function()
    run(function()
      local m = client()
      assert(m:flush_all())
      assert.equal(1, m:set("ngx key/1", "value 1", 0, 7))  -- escaped with ngx.escape_uri
      local v, flags = m:get("ngx key/1")
      assert.equal("value 1", v)
      assert.equal("7", flags)
      local none, err = m:get("nothing")
      assert.is_nil(none)
      assert.is_nil(err)
      local ok, aerr = m:add("ngx key/1", "again")
      assert.falsy(ok)
      assert.equal("NOT_STORED", aerr)
      assert.equal(1, m:replace("ngx key/1", "value 2"))
      assert.equal(1, m:set("n", 10))
      assert.equal(15, tonumber((m:incr("n", 5))))
      assert.equal(12, tonumber((m:decr("n", 3))))
      local value, fl, cas = m:gets("ngx key/1")
      assert.equal("value 2", value)
      assert.equal("0", fl)
      assert.equal(1, m:cas("ngx key/1", "value 3", cas))
      local again, cerr = m:cas("ngx key/1", "value 4", cas)
      assert.falsy(again)
      assert.equal("EXISTS", cerr)
      local many = assert(m:get({ "ngx key/1", "n", "nothing" }))
      assert.same({ "value 3", "0" }, many["ngx key/1"])
      assert.same({ "12", "0" }, many.n)
      assert.is_nil(many.nothing)
      assert.equal(1, m:delete("n"))
      assert.truthy(m:version():match("^%d+%.%d+"))
      m:close()
    end)
  end)

  it("stores a 500 KB value and reads it back", function()
    run(function()
      local m = client()
      local big = string.rep("0123456789", 50000)
      assert.equal(1, m:set("big", big))
      assert.equal(big, (m:get("big")))
      m:delete("big")
      m:close()
    end)
  end)

  it("pools with set_keepalive and counts reuse", function()
    run(function()
      local m = client()
      assert.equal(0, m:get_reused_times())
      assert.equal(1, m:set_keepalive(10000, 5))
      local m2 = client()
      assert.equal(1, m2:get_reused_times())
      assert.equal(1, m2:set("k", "v"))
      assert.equal(1, m2:set_keepalive(10000, 5))
    end)
  end)
end)

describe("the nginx.* modules", function()
  it("all load; what needs nginx itself fails with the name of what is missing", function()
    for _, name in ipairs({ "nginx.redis", "nginx.redis.connector", "nginx.redis.sentinel",
      "nginx.memcached", "nginx.dns.resolver", "nginx.websocket.client", "nginx.websocket.protocol",
      "nginx.websocket.server", "nginx.kafka.producer", "nginx.kafka.client", "nginx.kafka.broker" }) do
      assert.is_table(require(name), name)
    end
    -- The server side of nginx.websocket reads the request through nginx.
    local server = require "nginx.websocket.server"
    assert.has_error(function() server:new() end, "coserve.ngx: ngx.headers_sent is not supported")
  end)
end)

describe("nginx.websocket.client on coserve.ngx, against coserve's WebSocket server", function()
  local client_mod = require "nginx.websocket.client"

  local function echo_app()
    local app = http.server{ host = "127.0.0.1", port = 0 }
    app:websocket("/echo", function(ws)
      while true do
        local message, kind = ws:receive()
        if not message then return end
        ws:send(message, kind)
      end
    end)
    coserve.spawn(function() assert(app:start()) end)
    return app
  end

  it("connects, exchanges text and binary frames, pings, and closes", function()
    run(function()
      local app = echo_app()
      local wb = assert(client_mod:new({ timeout = 2000, max_payload_len = 1000000 }))
      assert(wb:connect("ws://127.0.0.1:" .. app.port .. "/echo"))
      assert(wb:send_text("hello"))
      local data, typ = wb:recv_frame()
      assert.equal("hello", data)
      assert.equal("text", typ)
      local blob = string.rep("\0\1\2\255", 20000)  -- a 64-bit length
      assert(wb:send_binary(blob))
      data, typ = wb:recv_frame()
      assert.equal(blob, data)
      assert.equal("binary", typ)
      assert(wb:send_ping("are you there"))
      data, typ = wb:recv_frame()
      assert.equal("are you there", data)
      assert.equal("pong", typ)
      assert(wb:send_close(1000, "bye"))
      data, typ = wb:recv_frame()
      assert.equal("close", typ)
      wb:close()
      app:shutdown()
    end)
  end)

  it("reports a refused handshake", function()
    run(function()
      local app = http.server{ host = "127.0.0.1", port = 0 }
      app:route("GET", "/", function(_, res) res:send(200, {}, "no websocket here") end)
      coserve.spawn(function() assert(app:start()) end)
      local wb = client_mod:new({ timeout = 2000 })
      -- The library checks only the status line's protocol, so its connect
      -- succeeds; the body that follows is no frame and the read fails.
      assert.equal(1, wb:connect("ws://127.0.0.1:" .. app.port .. "/"))
      local data, _, err = wb:recv_frame()
      assert.is_nil(data)
      assert.truthy(err)
      -- After a fatal error the library's close() leaves the socket alone
      -- (ngx_lua closes it when the request ends): close it here.
      assert.same({ nil, "fatal error already happened" }, { wb:close() })
      wb.sock:close()
      app:shutdown()
    end)
  end)
end)

describe("nginx.dns.resolver on coserve.ngx, against dnsmasq", function()
  local resolver = require "nginx.dns.resolver"
  local server, port, dir

  lazy_setup(function()
    assert(have("dnsmasq"), "dnsmasq is missing (scripts/test installs it)")
    dir = proc.tmpdir()
    local hosts = { "10.0.0.1 host.test", "fd00::1 host.test" }
    -- More A records than a 512-byte UDP answer holds: dnsmasq sets TC and
    -- the resolver must ask again over TCP.
    for i = 1, 60 do hosts[#hosts + 1] = "10.1.0." .. i .. " many.test" end
    proc.write(dir .. "/hosts", table.concat(hosts, "\n") .. "\n")
    local user = io.popen("id -un"):read("*l")
    server, port = start_server(function(p)
      return { "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--port=" .. p,
               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
               "--addn-hosts=" .. dir .. "/hosts", "--conf-file=/dev/null", "--pid-file=",
               "--local=/test/", "--txt-record=txt.test,hello dns",
               "--cname=alias.test,host.test", "--user=" .. user }
    end, "read .*hosts")
  end)

  lazy_teardown(function()
    if server then server:stop() end
    proc.rmdir(dir)
  end)

  local function new(opts)
    opts = opts or {}
    return assert(resolver:new{ nameservers = { { "127.0.0.1", opts.port or port } },
                                retrans = opts.retrans or 2, timeout = opts.timeout or 2000 })
  end

  it("answers A, AAAA, TXT and CNAME queries over UDP", function()
    run(function()
      local r = new()
      local ans = assert(r:query("host.test", { qtype = r.TYPE_A }))
      assert.equal(1, #ans)
      assert.equal("10.0.0.1", ans[1].address)
      assert.equal(r.TYPE_A, ans[1].type)
      ans = assert(r:query("host.test", { qtype = r.TYPE_AAAA }))
      assert.equal("fd00::1", resolver.compress_ipv6_addr(ans[1].address))
      ans = assert(r:query("txt.test", { qtype = r.TYPE_TXT }))
      assert.equal("hello dns", ans[1].txt)
      ans = assert(r:query("alias.test"))
      assert.equal("host.test", ans[1].cname)
      assert.equal("10.0.0.1", ans[2].address)
    end)
  end)

  it("answers reverse (PTR) queries, for IPv4 and IPv6 addresses", function()
    run(function()
      local r = new()
      assert.equal("1.0.0.10.in-addr.arpa", resolver.arpa_str("10.0.0.1"))
      local ans = assert(r:reverse_query("10.0.0.1"))
      assert.equal("host.test", ans[1].ptrdname)
      ans = assert(r:reverse_query("fd00::1"))
      assert.equal("host.test", ans[1].ptrdname)
    end)
  end)

  it("reports a name that does not exist as NXDOMAIN", function()
    run(function()
      local ans = assert(new():query("nothing.test"))
      assert.equal(3, ans.errcode)
      assert.equal(0, #ans)
    end)
  end)

  it("queries over TCP, and falls back to TCP when the UDP answer is truncated", function()
    run(function()
      local r = new()
      local ans = assert(r:tcp_query("host.test"))
      assert.equal("10.0.0.1", ans[1].address)
      ans = assert(r:query("many.test"))
      assert.equal(60, #ans)            -- 60 answers do not fit in 512 bytes of UDP
      local seen = {}
      for i = 1, #ans do seen[ans[i].address] = true end
      assert.truthy(seen["10.1.0.1"] and seen["10.1.0.60"])
    end)
  end)

  it("times out against a server that never answers, after its retransmissions", function()
    run(function()
      local silent = assert(coserve.udp())
      assert(silent:bind("127.0.0.1", 0))
      local _, silent_port = silent:getsockname()
      local r = new({ port = silent_port, retrans = 2, timeout = 100 })
      local ans, err = r:query("host.test")
      assert.is_nil(ans)
      assert.matches("timeout", err)
      -- The queries did arrive: two of them, one per try.
      local got = 0
      for _ = 1, 2 do
        if silent:recvfrom(0.5) then got = got + 1 end
      end
      assert.equal(2, got)
      silent:close()
    end)
  end)

  it("resolves from 20 coroutines at once, each getting its own answer", function()
    run(function()
      local wg = coserve.waitgroup()
      local bad = {}
      for i = 1, 20 do
        wg:add(1)
        coserve.spawn(function()
          local ans, err = new():query("host.test")
          if not (ans and ans[1] and ans[1].address == "10.0.0.1") then
            bad[#bad + 1] = tostring(err or (ans and ans.errstr))
          end
          wg:done()
        end)
      end
      assert(wg:wait(10))
      assert.same({}, bad)
    end)
  end)
end)
