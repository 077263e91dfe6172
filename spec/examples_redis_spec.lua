-- examples/redis_session.lua (Swoole's Redis scenario) and
-- examples/rest_redis.lua, run with the CLI against a redis-server that
-- this spec starts on a loopback port and stops by PID.
local coserve = require "coserve"
local http = require "coserve.http"
local testing = require "coserve.testing"
local cjson = require "cjson"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

describe("examples on Redis", function()
  local redis_proc, redis_port, dir

  lazy_setup(function()
    dir = proc.tmpdir()
    redis_port = proc.free_port()
    redis_proc = proc.start({ "redis-server", "--port", tostring(redis_port), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no" })
    redis_proc:wait_output("Ready to accept connections", 10)
  end)

  lazy_teardown(function()
    if redis_proc then redis_proc:stop() end
    proc.rmdir(dir)
  end)

  local function start_example(name)
    local p = proc.start({ proc.BIN, proc.ROOT .. "/examples/" .. name .. ".lua", "0",
                           tostring(redis_port) })
    finally(function() p:stop() end)
    return p, tonumber(p:wait_output(name .. " on 127%.0%.0%.1:(%d+)"))
  end

  -- What redis holds under a prefix, with a raw RESP client.
  local function redis_keys(pattern)
    local c = assert(coserve.connect("127.0.0.1", redis_port, { timeout = 5 }))
    c:send(("*2\r\n$4\r\nKEYS\r\n$%d\r\n%s\r\n"):format(#pattern, pattern))
    local n = tonumber(assert(c:receive()):match("^%*(%d+)"))
    local keys = {}
    for _ = 1, n do
      c:receive()
      keys[#keys + 1] = c:receive()
    end
    c:close()
    return keys
  end

  local function terminate(p)
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5))
  end

  it("redis_session: 200 concurrent clients, each gets back the value stored for it", function()
    local p, port = start_example("redis_session")
    testing.run(function()
      local wg = coserve.waitgroup()
      local wrong = {}
      for i = 1, 200 do
        wg:add(1)
        coserve.spawn(function()
          local c, err = coserve.connect("127.0.0.1", port, { timeout = 5 })
          if not c then
            wrong[#wrong + 1] = "connect: " .. err
            return wg:done()
          end
          local ip, me = c:getsockname()
          if i % 2 == 0 then coserve.sleep(0.01) end      -- requests at different moments
          c:send("whoami\n")
          local answer, rerr = c:receive("*l", 5)
          if answer ~= ip .. ":" .. me then
            wrong[#wrong + 1] = ("%s:%d got %s"):format(ip, me, tostring(answer or rerr))
          end
          c:close()
          wg:done()
        end)
      end
      assert(wg:wait(20))
      assert.same({}, wrong)
      -- Other requests are refused; every session key was removed after use.
      local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5 }))
      c:send("flush everything\n")
      assert.equal("-ERR unknown command", c:receive("*l", 5))
      c:close()
      assert.truthy(proc.poll(2, function() return #redis_keys("redis_session:*") == 0 end))
    end, { timeout = 30 })
    terminate(p)
  end)

  it("redis_session answers -ERR when Redis is not there", function()
    local closed = proc.free_port()
    local p = proc.start({ proc.BIN, proc.ROOT .. "/examples/redis_session.lua", "0", tostring(closed) })
    finally(function() p:stop() end)
    local port = tonumber(p:wait_output("redis_session on 127%.0%.0%.1:(%d+)"))
    testing.run(function()
      local c = assert(coserve.connect("127.0.0.1", port, { timeout = 5 }))
      assert.equal("-ERR redis: connection refused", c:receive("*l", 5))
      c:close()
    end)
    terminate(p)
  end)

  it("rest_redis: put, get, list, delete, counters, 404, 400", function()
    local p, port = start_example("rest_redis")
    local base = ("http://127.0.0.1:%d"):format(port)
    testing.run(function()
      local function call(method, path, body)
        local r = assert(http.request{ method = method, url = base .. path, body = body })
        return r.status, r.body ~= "" and cjson.decode(r.body) or nil
      end
      local status, v = call("PUT", "/items/colour", '{"value":"blue"}')
      assert.equal(200, status)
      assert.same({ name = "colour", value = "blue" }, v)
      assert.equal(200, (call("PUT", "/items/sizes", '{"value":[1,2,3]}')))
      status, v = call("GET", "/items/sizes")
      assert.equal(200, status)
      assert.same({ name = "sizes", value = { 1, 2, 3 } }, v)
      status, v = call("GET", "/items")
      assert.equal(200, status)
      assert.same({ items = { colour = "blue", sizes = { 1, 2, 3 } } }, v)
      assert.equal(404, (call("GET", "/items/nothing")))
      assert.equal(400, (call("PUT", "/items/x", "not json")))
      assert.equal(204, (call("DELETE", "/items/colour")))
      assert.equal(404, (call("DELETE", "/items/colour")))
      for i = 1, 3 do
        status, v = call("POST", "/counters/hits")
        assert.equal(200, status)
        assert.same({ name = "hits", value = i }, v)
      end
      -- 50 concurrent requests on pooled Redis connections: 50 increments.
      local wg = coserve.waitgroup()
      local failed = 0
      for _ = 1, 50 do
        wg:add(1)
        coserve.spawn(function()
          if call("POST", "/counters/many") ~= 200 then failed = failed + 1 end
          wg:done()
        end)
      end
      assert(wg:wait(10))
      assert.equal(0, failed)
      assert.same({ name = "many", value = 51 }, select(2, call("POST", "/counters/many")))
      call("DELETE", "/items/sizes")
    end, { timeout = 20 })
    terminate(p)
  end)

  it("rest_redis answers 502 when Redis is not there", function()
    local closed = proc.free_port()
    local p = proc.start({ proc.BIN, proc.ROOT .. "/examples/rest_redis.lua", "0", tostring(closed) })
    finally(function() p:stop() end)
    local port = tonumber(p:wait_output("rest_redis on 127%.0%.0%.1:(%d+)"))
    testing.run(function()
      local r = assert(http.request{ url = ("http://127.0.0.1:%d/items/x"):format(port) })
      assert.equal(502, r.status)
      assert.same({ error = "redis: connection refused" }, cjson.decode(r.body))
    end)
    terminate(p)
  end)
end)
