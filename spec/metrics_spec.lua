-- SPEC §12: http.metrics(app) serves Prometheus's text format (0.0.4),
-- checked by promtool (Debian's prometheus package, scripts/test installs
-- it); the figures move with the requests; under -w 2 each worker labels
-- its own.
local coserve = require "coserve"
local http = require "coserve.http"
local testing = require "coserve.testing"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local run = testing.run

-- promtool check metrics < text: its exit status and what it said.
local function promtool_check(text)
  local dir = proc.tmpdir()
  local file = proc.write(dir .. "/metrics.txt", text)
  local out = dir .. "/out"
  local status = os.execute(("promtool check metrics <%s >%s 2>&1"):format(proc.quote(file),
    proc.quote(out)))
  local said = proc.read(out) or ""
  proc.rmdir(dir)
  return status, said
end

-- The samples of an exposition text: { ['name{labels}'] = value }, and
-- the TYPE of each family.
local function samples(text)
  local s, types = {}, {}
  for line in text:gmatch("([^\n]+)") do
    local name, kind = line:match("^# TYPE (%S+) (%S+)$")
    if name then
      types[name] = kind
    elseif not line:match("^#") then
      local key, value = line:match("^(%S+) (%S+)$")
      assert(key, "not a sample line: " .. line)
      s[key] = tonumber(value) or (value == "+Inf" and math.huge)
    end
  end
  return s, types
end

local function start_app()
  local app = http.server{ host = "127.0.0.1", port = 0 }
  app:route("GET", "/", function(_, res) res:send("ok\n") end)
  app:route("GET", "/slow", function(_, res) coserve.sleep(0.03) res:send("slow\n") end)
  app:route("POST", "/odd", function(_, res) res:send(299, "odd status\n") end)
  app:route("GET", "/metrics", http.metrics(app))
  coserve.spawn(function() assert(app:start()) end)
  return app
end

-- On a new connection each time (connection: close), so that under -w 2
-- the kernel spreads them over the workers.
local function request(port, method, path)
  local res = assert(http.request{ method = method, url = "http://127.0.0.1:" .. port .. path,
                                   timeout = 5, headers = { connection = "close" } })
  return res
end

describe("http.metrics", function()
  it("serves text promtool accepts, with the families and types SPEC §12 names", function()
    run(function()
      local app = start_app()
      request(app.port, "GET", "/")
      local res = request(app.port, "GET", "/metrics")
      app:shutdown()
      assert.equal(200, res.status)
      assert.equal("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
      local ok, said = promtool_check(res.body)
      assert.is_true(ok == 0 or ok == true, said .. "\n" .. res.body)
      local _, types = samples(res.body)
      assert.same({
        coserve_http_requests_total = "counter",
        coserve_http_request_duration_seconds = "histogram",
        coserve_connections_open = "gauge",
        coserve_tasks = "gauge",
        coserve_lua_heap_bytes = "gauge",
        process_resident_memory_bytes = "gauge",
      }, types)
    end)
  end)

  it("promtool rejects a broken exposition (the check can fail)", function()
    local ok = promtool_check("# TYPE x counter\nx{le=\"1\" 3\n")
    assert.is_false(ok == 0 or ok == true)
  end)

  it("counts requests by method and status, and the histogram moves with them", function()
    run(function()
      local app = start_app()
      local before = samples(request(app.port, "GET", "/metrics").body)
      for _ = 1, 3 do request(app.port, "GET", "/") end
      request(app.port, "GET", "/missing")
      request(app.port, "POST", "/odd")
      request(app.port, "DELETE", "/")
      request(app.port, "GET", "/slow")
      -- Three idle connections besides the scrape's own.
      local idle = {}
      for i = 1, 3 do idle[i] = assert(coserve.connect("127.0.0.1", app.port)) end
      coserve.sleep(0.05) -- the server accepts them
      local text = request(app.port, "GET", "/metrics").body
      for _, c in ipairs(idle) do c:close() end
      app:shutdown()
      local s = samples(text)
      -- GET 200: the first scrape, three of /, and /slow.
      assert.equal(5, s['coserve_http_requests_total{method="GET",status="200"}'])
      assert.equal(1, s['coserve_http_requests_total{method="GET",status="404"}'])
      assert.equal(1, s['coserve_http_requests_total{method="POST",status="299"}'])
      assert.equal(1, s['coserve_http_requests_total{method="DELETE",status="405"}'])
      assert.is_nil(before['coserve_http_requests_total{method="GET",status="404"}'])
      -- Every request before this scrape: the first scrape and the 7 above.
      local count = s.coserve_http_request_duration_seconds_count
      assert.equal(8, count)
      assert.equal(count, s['coserve_http_request_duration_seconds_bucket{le="+Inf"}'])
      local last = 0
      for _, le in ipairs{ "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
                           "5", "10", "+Inf" } do
        local v = s['coserve_http_request_duration_seconds_bucket{le="' .. le .. '"}']
        assert.is_true(v >= last, le)
        last = v
      end
      -- /slow slept 30 ms: it is past the 25 ms bucket, whatever the load.
      assert.is_true(s['coserve_http_request_duration_seconds_bucket{le="0.025"}'] < count)
      assert.is_true(s.coserve_http_request_duration_seconds_sum >= 0.03)
      assert.is_true(s.coserve_connections_open >= 4)
      assert.is_true(s.coserve_tasks >= 1)
      assert.is_true(s.coserve_lua_heap_bytes > 0)
      assert.is_true(s.process_resident_memory_bytes > 1024 * 1024)
      local ok, said = promtool_check(text)
      assert.is_true(ok == 0 or ok == true, said)
    end)
  end)

  it("counts requests refused before they were parsed, by their method or \"\", outside the histogram", function()
    run(function()
      local app = start_app()
      for _, raw in ipairs{ "\x16\x03\x01\x00\x05", "GET / HTTP/1.1\r\nno colon\r\n\r\n",
                            "BREW /pot HTTP/1.1\r\n\r\n" } do
        local c = assert(coserve.connect("127.0.0.1", app.port))
        assert(c:send(raw))
        assert.matches("^HTTP/1%.1 400 ", c:receive("*a"))
        c:close()
      end
      local text = request(app.port, "GET", "/metrics").body
      app:shutdown()
      local s = samples(text)
      assert.equal(2, s['coserve_http_requests_total{method="",status="400"}'])
      assert.equal(1, s['coserve_http_requests_total{method="GET",status="400"}'])
      assert.equal(0, s.coserve_http_request_duration_seconds_count)
      local ok, said = promtool_check(text)
      assert.is_true(ok == 0 or ok == true, said)
    end)
  end)

  it("wants an http.server", function()
    assert.has_error(function() http.metrics({}) end,
      "bad argument #1 to 'metrics' (http.server expected)")
  end)
end)

describe("http.metrics under -w 2", function()
  it("labels each worker's figures worker=\"k\", one worker per scrape", function()
    local dir = proc.tmpdir()
    proc.write(dir .. "/app.lua", [[
      local coserve = require "coserve"
      local http = require "coserve.http"
      local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
      app:route("GET", "/metrics", http.metrics(app))
      coserve.log("info", "listening")
      assert(app:start())
    ]])
    local port = proc.free_port()
    local p = proc.start({ proc.BIN, "-w", "2", dir .. "/app.lua", tostring(port) })
    finally(function() p:stop() proc.rmdir(dir) end)
    assert(p:wait_count("info: listening", 2, 5), p:stderr())
    local by_worker = {}
    run(function()
      for _ = 1, 200 do
        local res = request(port, "GET", "/metrics")
        local w = res.body:match('coserve_tasks{worker="(%d+)"}')
        assert(w, res.body)
        by_worker[w] = res.body
        if by_worker["1"] and by_worker["2"] then break end
      end
    end, { timeout = 30 })
    for _, w in ipairs{ "1", "2" } do
      local text = assert(by_worker[w], "no scrape reached worker " .. w)
      local ok, said = promtool_check(text)
      assert.is_true(ok == 0 or ok == true, said)
      -- Every sample of a scrape carries that worker's label.
      for line in text:gmatch("([^\n]+)") do
        if not line:match("^#") then
          assert.matches('{worker="' .. w .. '"', line, 1, true)
        end
      end
      assert.is_true(samples(text)['coserve_http_request_duration_seconds_count{worker="' .. w
        .. '"}'] >= 0)
    end
  end)
end)
