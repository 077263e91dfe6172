-- SPEC §12: coserve.http's access log (combined, json, a function), its
-- reopening on SIGUSR1 (logrotate's way), and --log-format json.
local coserve = require "coserve"
local http = require "coserve.http"
local testing = require "coserve.testing"
local cjson = require "cjson"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local run = testing.run

-- An app with a few routes, started in this process.
local function start_app(opts)
  local o = { host = "127.0.0.1", port = 0 }
  for k, v in pairs(opts) do o[k] = v end
  local app = http.server(o)
  app:route("GET", "/hello", function(_, res)
    res:send(200, { ["content-type"] = "text/plain" }, "hello\n")
  end)
  app:route("GET", "/stream", function(_, res)
    res:write("abc")
    res:write("defg")
  end)
  app:route("GET", "/headers", function(req, res) res:send(req.headers["user-agent"] or "") end)
  coserve.spawn(function() assert(app:start()) end)
  return app
end

-- Sends raw requests on one connection and reads each response whole.
local read_response = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                              .. "support/http_response.lua")
local function exchange(port, requests)
  local c = assert(coserve.connect("127.0.0.1", port))
  local statuses = {}
  for _, r in ipairs(requests) do
    assert(c:send(r))
    statuses[#statuses + 1] = read_response(c, r:match("^HEAD") and true or nil)
  end
  c:close()
  return statuses
end

-- The file's lines once it has n of them (the writer flushes within
-- 100 ms); waits at most 3 s.
local function lines_of(path, n)
  local lines
  proc.poll(3, function()
    lines = {}
    for line in (proc.read(path) or ""):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    return #lines >= n
  end)
  return lines
end

describe("http access_log", function()
  local dir
  before_each(function() dir = proc.tmpdir() end)
  after_each(function() proc.rmdir(dir) end)

  it("writes nginx's combined format to a file, escaped as nginx does", function()
    local path = dir .. "/access.log"
    run(function()
      local app = start_app{ access_log = path }
      exchange(app.port, {
        "GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nuser-AGENT:  Mozilla/5.0 \"quoted\" caf\xc3\xa9 \r\n" ..
          "Referer: http://example.test/from\r\n\r\n",
        "GET /missing HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /stream HTTP/1.0\r\nHost: t\r\n\r\n",
      })
      local lines = lines_of(path, 3)
      app:shutdown()
      assert.equal(3, #lines, table.concat(lines, "\n"))
      local date = "%[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [+-]%d%d%d%d%]"
      assert.matches("^127%.0%.0%.1 %- %- " .. date ..
        ' "GET /hello%?x=1 HTTP/1%.1" 200 6 "http://example%.test/from" ' ..
        '"Mozilla/5%.0 \\x22quoted\\x22 caf\\xC3\\xA9"$', lines[1])
      assert.matches('^127%.0%.0%.1 %- %- ' .. date .. ' "GET /missing HTTP/1%.1" 404 10 "%-" "%-"$',
        lines[2])
      -- A streamed body counts its bytes, not the chunked framing.
      assert.matches('"GET /stream HTTP/1%.0" 200 7 "%-" "%-"$', lines[3])
    end)
  end)

  it("writes one JSON object per line with access_log_format = \"json\"", function()
    local path = dir .. "/access.json"
    run(function()
      local app = start_app{ access_log = path, access_log_format = "json" }
      exchange(app.port, {
        "GET /hello?a=1&b=2 HTTP/1.1\r\nHost: t\r\nUser-Agent: tester/1\r\n\r\n",
        "HEAD /hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: given-id-42\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: t\r\nUser-Agent: caf\xc3\xa9 \xff\"\\\r\n\r\n",
        "GET /h%C3%A9llo HTTP/1.1\r\nHost: t\r\nUser-Agent: a\tb\r\n\r\n",
      })
      local lines = lines_of(path, 4)
      app:shutdown()
      assert.equal(4, #lines)
      local e = {}
      for i, line in ipairs(lines) do e[i] = cjson.decode(line) end
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[+-]%d%d:%d%d$", e[1].time)
      assert.equal("127.0.0.1", e[1].remote)
      assert.equal("GET", e[1].method)
      assert.equal("/hello", e[1].path)
      assert.equal("a=1&b=2", e[1].query)
      assert.equal(200, e[1].status)
      assert.equal(6, e[1].bytes)
      assert.is_number(e[1].duration)
      assert.is_true(e[1].duration >= 0 and e[1].duration < 5)
      assert.equal("tester/1", e[1].user_agent)
      assert.equal(cjson.null, e[1].referer)
      assert.matches("^%x+$", e[1].request_id)
      assert.equal(32, #e[1].request_id)
      -- HEAD: no body bytes; the client's X-Request-Id is kept.
      assert.equal("HEAD", e[2].method)
      assert.equal(0, e[2].bytes)
      assert.equal("given-id-42", e[2].request_id)
      assert.equal(cjson.null, e[2].user_agent)
      -- Generated ids differ from request to request.
      assert.not_equal(e[1].request_id, e[3].request_id)
      -- UTF-8 passes, a byte that is not UTF-8 becomes U+FFFD, quotes escape.
      assert.equal("caf\xc3\xa9 \xef\xbf\xbd\"\\", e[3].user_agent)
      assert.equal(404, e[4].status)
      assert.equal("/h%C3%A9llo", e[4].path)
      assert.equal("a\tb", e[4].user_agent)
    end)
  end)

  it("calls a function with one table per request", function()
    local entries = {}
    run(function()
      local app = start_app{ access_log = function(entry) entries[#entries + 1] = entry end }
      exchange(app.port, {
        "GET /hello HTTP/1.1\r\nHost: t\r\nUser-Agent: fn/1\r\nReferer: r\r\n\r\n",
        "GET /stream?q HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc\r\n\r\n",
      })
      app:shutdown()
    end)
    assert.equal(2, #entries)
    local a, b = entries[1], entries[2]
    assert.equal("127.0.0.1", a.remote)
    assert.same({ "GET", "/hello", 200, 6, "fn/1", "r", "1.1" },
      { a.method, a.path, a.status, a.bytes, a.user_agent, a.referer, a.version })
    assert.is_number(a.time)
    assert.is_true(math.abs(a.time - os.time()) < 60)
    assert.is_true(a.duration >= 0)
    assert.equal(32, #a.request_id)
    assert.same({ "/stream", "q", "/stream?q", 7, "abc" }, { b.path, b.query, b.url, b.bytes, b.request_id })
  end)

  it("gives a handler req.id, the id its log line carries (X-Request-Id when sent)", function()
    local path = dir .. "/ids.json"
    local entries, seen = {}, {}
    run(function()
      local function routes(app)
        app:route("GET", "/id", function(req, res)
          seen[#seen + 1] = req.id
          assert.equal(req.id, seen[#seen]) -- the same on every read
          res:send(req.id)
        end)
      end
      local japp = start_app{ access_log = path, access_log_format = "json" }
      local fapp = start_app{ access_log = function(e) entries[#entries + 1] = e end }
      routes(japp)
      routes(fapp)
      local plain = http.server{ host = "127.0.0.1", port = 0 } -- no log at all
      routes(plain)
      coserve.spawn(function() assert(plain:start()) end)
      for _, a in ipairs{ japp, fapp, plain } do
        exchange(a.port, { "GET /id HTTP/1.1\r\nHost: t\r\n\r\n",
                           "GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: given-7\r\n\r\n",
                           "GET /id HTTP/1.1\r\nHost: t\r\n\r\n" })
      end
      local lines = lines_of(path, 3)
      japp:shutdown()
      fapp:shutdown()
      plain:shutdown()
      assert.equal(9, #seen)
      for i = 0, 2 do
        assert.matches("^%x+$", seen[3 * i + 1])
        assert.equal(32, #seen[3 * i + 1])
        assert.equal("given-7", seen[3 * i + 2])
        assert.not_equal(seen[3 * i + 1], seen[3 * i + 3])
      end
      for i, line in ipairs(lines) do assert.equal(seen[i], cjson.decode(line).request_id) end
      for i, e in ipairs(entries) do assert.equal(seen[3 + i], e.request_id) end
    end)
  end)

  it("raises when req.id is first read after the request was handled", function()
    run(function()
      local late = coserve.channel(1)
      local app = start_app{}
      app:route("GET", "/late", function(req, res)
        res:send("ok")
        coserve.spawn(function()
          coserve.sleep(0.05)
          late:push({ pcall(function() return req.id end) })
        end)
      end)
      exchange(app.port, { "GET /late HTTP/1.1\r\nHost: t\r\n\r\n" })
      local r = late:pop(5)
      app:shutdown()
      assert.is_false(r[1])
      assert.matches("req.id read after the request was handled", r[2])
    end)
  end)

  -- Requests refused before they were parsed, each on its own connection:
  -- junk (400 from the first bytes), a bad header line (400), a head over
  -- max_header (431), a head not finished within header_timeout (408).
  local REFUSED = {
    "\x16\x03\x01\x02\x00\x01\x00",
    "GET /bad HTTP/1.1\r\nUser-Agent: ua/1\r\nno colon here\r\n\r\n",
    "GET /big HTTP/1.1\r\nUser-Agent: big/1\r\nX-Big: " .. ("b"):rep(600) .. "\r\n\r\n",
    "POST /slow HTTP/1.1\r\nHost: t\r\n",
  }
  local function send_refused(port)
    for _, r in ipairs(REFUSED) do
      local c = assert(coserve.connect("127.0.0.1", port))
      assert(c:send(r))
      assert.truthy(c:receive("*a"))
      c:close()
    end
  end
  local REFUSED_OPTS = { max_header = 512, header_timeout = 0.2 }
  local function with(opts, more)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    for k, v in pairs(more) do o[k] = v end
    return o
  end

  it("logs requests refused before they were parsed, with their request line as it came", function()
    local path, jpath = dir .. "/access.log", dir .. "/access.json"
    run(function()
      local app = start_app(with(REFUSED_OPTS, { access_log = path }))
      local japp = start_app(with(REFUSED_OPTS, { access_log = jpath, access_log_format = "json" }))
      send_refused(app.port)
      send_refused(japp.port)
      local lines, jlines = lines_of(path, 4), lines_of(jpath, 4)
      app:shutdown()
      japp:shutdown()
      assert.equal(4, #lines, table.concat(lines, "\n"))
      assert.matches(' "\\x16\\x03\\x01\\x02\\x00\\x01\\x00" 400 12 "%-" "%-"$', lines[1])
      assert.matches(' "GET /bad HTTP/1%.1" 400 12 "%-" "ua/1"$', lines[2])
      assert.matches(' "GET /big HTTP/1%.1" 431 32 "%-" "big/1"$', lines[3])
      assert.matches('^127%.0%.0%.1 %- %- %[.-%] "POST /slow HTTP/1%.1" 408 16 "%-" "%-"$', lines[4])
      local e = {}
      for i, line in ipairs(jlines) do e[i] = cjson.decode(line) end
      assert.equal(4, #e)
      assert.same({ "", "\22\3\1\2\0\1\0", 400, 12 }, { e[1].method, e[1].request, e[1].status, e[1].bytes })
      assert.same({ "GET", "GET /bad HTTP/1.1", 400, "ua/1" },
        { e[2].method, e[2].request, e[2].status, e[2].user_agent })
      assert.same({ "GET", 431, "big/1" }, { e[3].method, e[3].status, e[3].user_agent })
      assert.same({ "POST", "POST /slow HTTP/1.1", 408 }, { e[4].method, e[4].request, e[4].status })
      for i = 1, 4 do
        assert.equal(cjson.null, e[i].duration)
        assert.is_nil(e[i].path)
        assert.equal(32, #e[i].request_id)
      end
    end)
  end)

  it("gives a function refused requests as entries with refused = true", function()
    local entries = {}
    run(function()
      local app = start_app(with(REFUSED_OPTS,
        { access_log = function(entry) entries[#entries + 1] = entry end }))
      send_refused(app.port)
      exchange(app.port, { "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" })
      app:shutdown()
    end)
    assert.equal(5, #entries)
    assert.same({ true, 400, "\22\3\1\2\0\1\0" }, { entries[1].refused, entries[1].status, entries[1].request })
    assert.is_nil(entries[1].method)
    assert.same({ true, "GET", 400, "GET /bad HTTP/1.1", "ua/1" }, { entries[2].refused,
      entries[2].method, entries[2].status, entries[2].request, entries[2].user_agent })
    assert.same({ 431, 408, "POST" }, { entries[3].status, entries[4].status, entries[4].method })
    assert.is_nil(entries[5].refused)
    assert.equal("/hello", entries[5].path)
  end)

  it("keeps serving when the log function fails, and says so once per request", function()
    local calls = 0
    run(function()
      local app = start_app{ access_log = function() calls = calls + 1 error("log broke") end }
      local s = exchange(app.port, { "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
                                     "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" })
      app:shutdown()
      assert.same({ 200, 200 }, s)
    end)
    assert.equal(2, calls)
  end)

  it("refuses a format it does not know and a file it cannot open", function()
    assert.has_error(function()
      http.server{ port = 0, access_log = dir .. "/x.log", access_log_format = "xml" }
    end, "bad access_log_format 'xml' (\"combined\" or \"json\")")
    local ok, err = pcall(http.server, { port = 0, access_log = dir .. "/no/such/dir/x.log" })
    assert.is_false(ok)
    assert.matches("cannot open access_log .*no/such/dir/x%.log: .*directory", err)
    assert.has_error(function() http.server{ port = 0, access_log = 42 } end)
  end)
end)

-- An app for the CLI: logs to arg[2] (a path in which "%w" becomes the
-- worker id) in arg[3]'s format.
local CLI_APP = [[
  local coserve = require "coserve"
  local http = require "coserve.http"
  local path = arg[2]:gsub("%%w", tostring(coserve.worker_id()))
  local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]),
                           access_log = path, access_log_format = arg[3] }
  app:route("GET", "/", function(_, res) res:send(coserve.worker_id() .. "\n") end)
  coserve.log("info", "listening")
  assert(app:start())
]]

local function get(port, path)
  local status, body
  run(function()
    local res = http.request{ url = "http://127.0.0.1:" .. port .. (path or "/"), timeout = 3,
                              headers = { connection = "close" } }
    status, body = res and res.status, res and res.body
  end)
  return status, body
end

local function start_cli(dir, argv_extra, log_path, format)
  proc.write(dir .. "/app.lua", CLI_APP)
  local port = proc.free_port()
  local argv = { proc.BIN }
  for _, a in ipairs(argv_extra) do argv[#argv + 1] = a end
  for _, a in ipairs{ dir .. "/app.lua", tostring(port), log_path, format or "combined" } do
    argv[#argv + 1] = a
  end
  local p = proc.start(argv)
  return p, port
end

local function wait_listening(p, n)
  assert(proc.poll(5, function()
    local _, k = p:stderr():gsub("listening", "")
    return k >= n
  end), "the app did not start: " .. p:stderr())
end

describe("http access_log under the CLI", function()
  local dir
  before_each(function() dir = proc.tmpdir() end)
  after_each(function() proc.rmdir(dir) end)

  it("reopens the file on SIGUSR1 after logrotate renamed it", function()
    local path = dir .. "/access.log"
    local p, port = start_cli(dir, {}, path)
    finally(function() p:stop() end)
    wait_listening(p, 1)
    assert.equal(200, (get(port, "/?before")))
    assert.equal(1, #lines_of(path, 1))
    assert(os.rename(path, path .. ".1"))
    p:signal("USR1")
    -- The reopen happens in the loop, a moment after the signal.
    assert(proc.poll(3, function() return proc.read(path) ~= nil end), "not reopened")
    assert.equal(200, (get(port, "/?after")))
    local new = lines_of(path, 1)
    assert.equal(1, #new)
    assert.matches('"GET /%?after HTTP/1%.1" 200', new[1])
    local old = lines_of(path .. ".1", 1)
    assert.equal(1, #old)
    assert.matches('"GET /%?before HTTP/1%.1" 200', old[1])
    assert.is_nil(p:status()) -- still running
    p:signal("TERM")
    assert.equal(0, p:wait_exit(5))
  end)

  it("writes what is buffered when the app fails with the server still running", function()
    local path = dir .. "/access.log"
    proc.write(dir .. "/app.lua", [[
      local coserve = require "coserve"
      local http = require "coserve.http"
      local app = http.server{ host = "127.0.0.1", port = 0, access_log = arg[1] }
      app:route("GET", "/", function(_, res) res:send("ok\n") end)
      coserve.spawn(function() app:start() end)
      for i = 1, 3 do
        assert(http.request{ url = "http://127.0.0.1:" .. app.port .. "/?n=" .. i })
      end
      error("the app gives up") -- app:start() never returns: the runtime's teardown writes
    ]])
    local r = proc.run({ proc.BIN, dir .. "/app.lua", path })
    assert.equal(1, r.status)
    assert.matches("the app gives up", r.err)
    local lines = lines_of(path, 3)
    assert.equal(3, #lines, r.err)
    assert.matches('"GET /%?n=3 HTTP/1%.1" 200 3 ', lines[3])
  end)

  it("writes to stderr with access_log = \"stderr\"", function()
    proc.write(dir .. "/app.lua", [[
      local coserve = require "coserve"
      local http = require "coserve.http"
      local app = http.server{ host = "127.0.0.1", port = 0, access_log = "stderr" }
      app:route("GET", "/", function(_, res) res:send("ok\n") end)
      coserve.spawn(function() app:start() end)
      assert(http.request{ url = "http://127.0.0.1:" .. app.port .. "/?via=stderr" })
      app:shutdown()
    ]])
    local r = proc.run({ proc.BIN, dir .. "/app.lua" })
    assert.equal(0, r.status, r.err)
    assert.matches('^127%.0%.0%.1 %- %- %[[^]]+%] "GET /%?via=stderr HTTP/1%.1" 200 3 "%-" "coserve"\n$',
      r.err)
  end)

  it("survives SIGUSR1 without an access log", function()
    proc.write(dir .. "/app.lua", [[
      local http = require "coserve.http"
      local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) }
      app:route("GET", "/", function(_, res) res:send("ok\n") end)
      require("coserve").log("info", "listening")
      assert(app:start())
    ]])
    local port = proc.free_port()
    local p = proc.start({ proc.BIN, dir .. "/app.lua", tostring(port) })
    finally(function() p:stop() end)
    wait_listening(p, 1)
    p:signal("USR1")
    proc.sleep(0.2)
    assert.is_nil(p:status())
    assert.equal(200, (get(port)))
  end)

  it("under -w 2, the master passes SIGUSR1 on and each worker reopens its log", function()
    local pattern = dir .. "/access-%w.log"
    local p, port = start_cli(dir, { "-w", "2" }, pattern, "json")
    finally(function() p:stop() end)
    wait_listening(p, 2)
    local f1, f2 = dir .. "/access-1.log", dir .. "/access-2.log"
    -- Both files exist from the start; rotate them both.
    assert(proc.poll(3, function() return proc.read(f1) and proc.read(f2) end))
    assert(os.rename(f1, f1 .. ".1"))
    assert(os.rename(f2, f2 .. ".1"))
    p:signal("USR1")
    assert(proc.poll(3, function() return proc.read(f1) and proc.read(f2) end),
      "the workers did not reopen: " .. p:stderr())
    -- New connections reach both workers (reuse_port): each new file gets
    -- the lines of its worker's requests.
    local seen = {}
    for _ = 1, 200 do
      local status, body = get(port)
      assert.equal(200, status)
      seen[tonumber(body)] = true
      if seen[1] and seen[2] then break end
    end
    assert.is_true(seen[1] and seen[2])
    for _, f in ipairs{ f1, f2 } do
      local lines = lines_of(f, 1)
      assert.is_true(#lines >= 1)
      assert.equal(200, cjson.decode(lines[1]).status)
    end
    assert.is_nil(p:status())
  end)
end)

describe("--log-format json", function()
  local dir
  before_each(function() dir = proc.tmpdir() end)
  after_each(function() proc.rmdir(dir) end)

  local function decode_lines(text)
    local objs = {}
    for line in text:gmatch("([^\n]+)") do
      local ok, obj = pcall(cjson.decode, line)
      assert(ok, "not JSON: " .. line)
      objs[#objs + 1] = obj
    end
    return objs
  end

  it("prints coserve's own lines as JSON, an error's traceback inside the object", function()
    proc.write(dir .. "/app.lua", [[
      local coserve = require "coserve"
      coserve.log("info", "starting \"up\"")
      local function fail() error("config missing") end
      fail()
    ]])
    local r = proc.run({ proc.BIN, "--log-format", "json", dir .. "/app.lua" })
    assert.equal(1, r.status)
    local objs = decode_lines(r.err)
    assert.equal(2, #objs, r.err)
    assert.equal("info", objs[1].level)
    assert.equal('starting "up"', objs[1].msg)
    assert.is_number(objs[1].pid)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", objs[1].time)
    assert.equal("error", objs[2].level)
    assert.matches("app%.lua:3: config missing$", objs[2].msg)
    assert.matches("in function 'fail'", objs[2].traceback)
    assert.matches("app%.lua:4", objs[2].traceback)
    -- Text stays the default.
    r = proc.run({ proc.BIN, dir .. "/app.lua" })
    assert.matches("^coserve%[%d+%] info: starting \"up\"\n", r.err)
  end)

  it("prints a handler's error with its traceback as one object", function()
    proc.write(dir .. "/app.lua", [[
      local coserve = require "coserve"
      local http = require "coserve.http"
      local app = http.server{ host = "127.0.0.1", port = 0 }
      app:route("GET", "/", function() error("handler broke") end)
      coserve.spawn(function() assert(app:start()) end)
      local res = http.request{ url = "http://127.0.0.1:" .. app.port .. "/" }
      print(res.status)
      app:shutdown()
    ]])
    local r = proc.run({ proc.BIN, "--log-format", "json", dir .. "/app.lua" })
    assert.equal(0, r.status, r.err)
    assert.equal("500\n", r.out)
    local objs = decode_lines(r.err)
    assert.equal(1, #objs, r.err)
    assert.equal("error", objs[1].level)
    assert.matches("http handler failed: .*handler broke", objs[1].msg)
    assert.is_string(objs[1].traceback)
  end)

  it("under -w 2: the master's and the workers' lines, worker starts, exits and reloads", function()
    local p, port = start_cli(dir, { "-w", "2", "--log-format", "json" }, dir .. "/a-%w.log")
    finally(function() p:stop() end)
    wait_listening(p, 2)
    assert.equal(200, (get(port)))
    p:signal("HUP")
    assert(proc.poll(5, function() return p:stderr():find("new worker%(s%) ready") end),
      p:stderr())
    p:signal("TERM")
    assert.equal(0, p:wait_exit(10))
    local objs = decode_lines(p:stderr())
    local master, workers, starts, exits, reloads = 0, {}, 0, 0, 0
    for _, o in ipairs(objs) do
      if o.role == "master" then
        master = master + 1
        if o.msg:find("^worker %d started") then starts = starts + 1 end
        if o.msg:find("^worker %d %(pid %d+%) exited") then exits = exits + 1 end
        if o.msg:find("^reload") then reloads = reloads + 1 end
      elseif o.worker then
        workers[o.worker] = true
      end
    end
    assert.equal(4, starts, p:stderr())  -- two, then two more for the reload
    assert.equal(4, exits, p:stderr())   -- the retired two, then the last two
    assert.is_true(reloads >= 2)
    assert.is_true(workers[1] and workers[2])
  end)

  it("refuses a format it does not know", function()
    local r = proc.run({ proc.BIN, "--log-format", "xml", "-e", "" })
    assert.equal(2, r.status)
    assert.matches("^coserve: invalid %-%-log%-format 'xml'", r.err)
  end)
end)
