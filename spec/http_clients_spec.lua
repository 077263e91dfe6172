-- coserve.http against real clients: curl, Python's http.client, wrk.
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local function start_app()
  local dir = proc.tmpdir()
  local app = dir .. "/app.lua"
  proc.write(app, [[
    local coserve = require "coserve"
    local http = require "coserve.http"
    local app = http.server{ host = "127.0.0.1", port = 0 }
    app:route("GET", "/hello/:name", function(req, res)
      res:send(200, { ["content-type"] = "text/plain" }, "hello " .. req.params.name .. "\n")
    end)
    app:route("POST", "/echo", function(req, res)
      local body = req:body()
      if body then res:send(200, { ["x-length"] = #body }, body) end
    end)
    coserve.spawn(function() assert(app:start()) end)
    print("http on 127.0.0.1:" .. app.port)
    io.stdout:flush()
  ]])
  local p = proc.start({ proc.BIN, app })
  finally(function() p:stop() proc.rmdir(dir) end)
  return p, tonumber(p:wait_output("http on 127%.0%.0%.1:(%d+)\n"))
end

local function curl(args)
  local argv = { "curl", "-sS", "--noproxy", "*", "--max-time", "5" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = proc.run(argv)
  assert.equal(0, r.status, r.err)
  return r.out
end

describe("real HTTP clients", function()
  it("curl: GET, POST with a body, a chunked upload and -I (HEAD)", function()
    local _, port = start_app()
    local base = "http://127.0.0.1:" .. port
    assert.equal("hello curl\n", curl({ base .. "/hello/curl" }))
    assert.equal("posted", curl({ "--data-binary", "posted", base .. "/echo" }))
    local dir = proc.tmpdir()
    finally(function() proc.rmdir(dir) end)
    local big = ("0123456789"):rep(10000)
    proc.write(dir .. "/body", big)
    local out = curl({ "-i", "-H", "Transfer-Encoding: chunked", "--data-binary",
                       "@" .. dir .. "/body", base .. "/echo" })
    assert.matches("x%-length: 100000", out)
    assert.equal(big, out:match("\r\n\r\n(.*)$"))
    local head = curl({ "-I", base .. "/hello/head" })
    assert.matches("^HTTP/1.1 200 OK\r\n", head)
    assert.matches("content%-length: 11\r\n", head)
  end)

  it("Python's http.client: 100 requests on one keep-alive connection", function()
    local _, port = start_app()
    local r = proc.run({ "python3", proc.ROOT .. "/spec/support/keepalive_client.py",
                         tostring(port) })
    assert.equal(0, r.status, r.err)
    assert.matches("100 requests on one connection", r.out)
  end)

  it("wrk -t1 -c50 -d3s: no socket errors, no non-2xx responses", function()
    local _, port = start_app()
    local r = proc.run({ "wrk", "-t1", "-c50", "-d3s", "http://127.0.0.1:" .. port .. "/hello/wrk" },
                       { timeout = 30 })
    assert.equal(0, r.status, r.err)
    assert.matches("requests in", r.out)
    assert.not_matches("Socket errors", r.out)
    assert.not_matches("Non%-2xx", r.out)
  end)
end)
