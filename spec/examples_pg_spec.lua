-- examples/pg_api.lua run with the CLI (COSERVE_BIN) on port 0 against a
-- private PostgreSQL (spec/support/pg_server.lua), driven by an HTTP client.
local coserve = require "coserve"
local testing = require "coserve.testing"
local http = require "coserve.http"
local cjson = require "cjson.safe"
local support = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "support/"
local proc = dofile(support .. "process.lua")
local pg_server = dofile(support .. "pg_server.lua")

describe("examples/pg_api.lua", function()
  local server

  lazy_setup(function() server = pg_server.start() end)
  lazy_teardown(function() if server then server:stop() end end)

  local function start()
    local p = proc.start({ proc.BIN, proc.ROOT .. "/examples/pg_api.lua", "0", server.conninfo })
    finally(function() p:stop() end)
    return p, tonumber(p:wait_output("pg_api on 127%.0%.0%.1:(%d+)\n", 10))
  end

  it("creates, lists, reads and deletes items; 409 for a taken name, 422, 404", function()
    local p, port = start()
    testing.run(function()
      local base = ("http://127.0.0.1:%d"):format(port)
      local function call(method, path, body)
        local r = assert(http.request{ method = method, url = base .. path, body = body })
        return r.status, r.body ~= "" and cjson.decode(r.body) or nil, r
      end
      local status, item, r = call("POST", "/items", cjson.encode{ name = "it's a \"tea\" 🍵", price = 12.5 })
      assert.equal(201, status)
      assert.same({ id = 1, name = "it's a \"tea\" 🍵", price = "12.50" }, item)
      assert.equal("/items/1", r.headers.location)
      assert.equal(409, (call("POST", "/items", cjson.encode{ name = "it's a \"tea\" 🍵", price = 1 })))
      assert.equal(422, (call("POST", "/items", '{"name":"x"}')))
      local _, coffee = call("POST", "/items", cjson.encode{ name = "coffee", price = 3 })
      assert.same({ id = coffee.id, name = "coffee", price = "3.00" }, coffee)
      local _, list = call("GET", "/items")
      assert.same({ "it's a \"tea\" 🍵", "coffee" }, { list[1].name, list[2].name })
      assert.same(coffee, select(2, call("GET", "/items/" .. coffee.id)))
      assert.equal(404, (call("GET", "/items/99")))
      assert.equal(204, (call("DELETE", "/items/1")))
      assert.equal(404, (call("DELETE", "/items/1")))
      assert.equal(1, #select(2, call("GET", "/items")))
    end, { timeout = 15 })
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5))
  end)

  it("serves 40 concurrent requests through its pool of 8 connections", function()
    local p, port = start()
    testing.run(function()
      local wg, ok = coserve.waitgroup(), 0
      for i = 1, 40 do
        wg:add(1)
        coserve.spawn(function()
          local r = http.request{ method = "POST", url = ("http://127.0.0.1:%d/items"):format(port),
                                  body = cjson.encode{ name = "n" .. i, price = i } }
          if r and r.status == 201 then ok = ok + 1 end
          wg:done()
        end)
      end
      assert(wg:wait(20))
      assert.equal(40, ok)
      local stats = cjson.decode(assert(http.request{
        url = ("http://127.0.0.1:%d/stats"):format(port) }).body)
      assert.is_true(stats.max_open <= 8 and stats.opened <= 8, cjson.encode(stats))
    end, { timeout = 25 })
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5))
  end)
end)
