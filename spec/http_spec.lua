-- SPEC §5: the HTTP/1.1 server (coserve.http), driven by raw clients.
local coserve = require "coserve"
local http = require "coserve.http"
local testing = require "coserve.testing"

local run = testing.run

local function app_with_routes(opts)
  local o = { host = "127.0.0.1", port = 0 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local app = http.server(o)
  app:route("GET", "/hello/:name", function(req, res)
    res:send(200, { ["content-type"] = "text/plain" }, "hello " .. req.params.name)
  end)
  app:route("POST", "/echo", function(req, res)
    local body = req:body()
    if body then res:send(body) end -- else coserve.http answers (413, 400)
  end)
  app:route("GET", "/query", function(req, res)
    res:send(req.query.a .. "," .. req.query.b .. "," .. req.headers["X-Test"])
  end)
  app:route("GET", "/stream", function(_, res)
    for i = 1, 3 do res:write("part " .. i .. ";") end
  end)
  app:route("GET", "/boom", function() error("kaboom") end)
  app:route("GET", "/slow", function(_, res) coserve.sleep(0.1) res:send("slow done") end)
  coserve.spawn(function() assert(app:start()) end)
  return app
end

-- Reads one response: status, headers (lowercased), body.
local function read_response(c, head_only)
  local status_line, err = c:receive("*l", 2)
  if not status_line then return nil, err end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d+)"))
  local headers = {}
  while true do
    local line = assert(c:receive("*l", 2))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  local body = ""
  if head_only then return status, headers, body end
  if headers["content-length"] then
    body = assert(c:receive(tonumber(headers["content-length"]), 2))
  elseif headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(c:receive("*l", 2)), 16)
      if size == 0 then assert(c:receive("*l", 2)) break end
      parts[#parts + 1] = assert(c:receive(size, 2))
      assert(c:receive("*l", 2))
    end
    body = table.concat(parts)
  end
  return status, headers, body
end

local function get(path, extra)
  return "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n" .. (extra or "") .. "\r\n"
end

describe("coserve.http server", function()
  it("routes with :params and answers with content-length and a date", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send(get("/hello/world"))
      local status, h, body = read_response(c)
      assert.equal(200, status)
      assert.equal("hello world", body)
      assert.equal("text/plain", h["content-type"])
      assert.matches("GMT$", h.date)
      c:close()
      app:shutdown()
    end)
  end)

  it("serves 100 requests on one keep-alive connection", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      for i = 1, 100 do
        c:send(get("/hello/" .. i))
        local status, _, body = read_response(c)
        assert.equal(200, status)
        assert.equal("hello " .. i, body)
      end
      assert.equal(1, app:stats().accepted)
      c:close()
      app:shutdown()
    end)
  end)

  it("answers 3 pipelined requests in order", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send(get("/slow") .. get("/hello/b") .. get("/hello/c", "Connection: close\r\n"))
      assert.equal("slow done", select(3, read_response(c)))
      assert.equal("hello b", select(3, read_response(c)))
      local _, h, body = read_response(c)
      assert.equal("hello c", body)
      assert.equal("close", h.connection)
      assert.same({ nil, "closed", "" }, { c:receive(1, 2) })
      app:shutdown()
    end)
  end)

  it("decodes the query string and looks headers up case-insensitively", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send(get("/query?a=1%202&b=x+y", "x-test: yes\r\n"))
      assert.equal("1 2,x y,yes", select(3, read_response(c)))
      c:close()
      app:shutdown()
    end)
  end)

  it("reads a content-length body and a chunked body", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
      assert.equal("hello", select(3, read_response(c)))
      c:send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
      assert.equal("abcde", select(3, read_response(c)))
      c:close()
      app:shutdown()
    end)
  end)

  it("streams a response with chunked encoding", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send(get("/stream"))
      local _, h, body = read_response(c)
      assert.equal("chunked", h["transfer-encoding"])
      assert.equal("part 1;part 2;part 3;", body)
      c:close()
      app:shutdown()
    end)
  end)

  it("answers HEAD from the GET route without a body", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send("HEAD /hello/x HTTP/1.1\r\nHost: t\r\n\r\n")
      local status, h = read_response(c, true)
      assert.equal(200, status)
      assert.equal("7", h["content-length"])
      c:send(get("/hello/y"))
      assert.equal("hello y", select(3, read_response(c)))
      c:close()
      app:shutdown()
    end)
  end)

  it("sends 100 Continue when the handler reads a body the client announced", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
      assert.equal("HTTP/1.1 100 Continue", c:receive("*l", 2))
      assert.equal("", c:receive("*l", 2))
      c:send("ok")
      assert.equal("ok", select(3, read_response(c)))
      c:close()
      app:shutdown()
    end)
  end)

  it("answers 404 for an unknown path and 405 with Allow for a wrong method", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send(get("/nowhere"))
      assert.equal(404, (read_response(c)))
      c:send("DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n")
      local status, h = read_response(c)
      assert.equal(405, status)
      assert.equal("POST", h.allow)
      c:close()
      app:shutdown()
    end)
  end)

  it("answers 500 when a handler raises, and keeps serving others", function()
    run(function()
      local app = app_with_routes()
      local a = assert(coserve.connect("127.0.0.1", app.port))
      local b = assert(coserve.connect("127.0.0.1", app.port))
      a:send(get("/boom"))
      assert.equal(500, (read_response(a)))
      b:send(get("/hello/b"))
      assert.equal("hello b", select(3, read_response(b)))
      a:close()
      b:close()
      app:shutdown()
    end)
  end)

  it("answers HTTP/1.0 and closes after it", function()
    run(function()
      local app = app_with_routes()
      local c = assert(coserve.connect("127.0.0.1", app.port))
      c:send("GET /hello/old HTTP/1.0\r\n\r\n")
      local _, h, body = read_response(c)
      assert.equal("hello old", body)
      assert.equal("close", h.connection)
      assert.same({ nil, "closed", "" }, { c:receive(1, 2) })
      app:shutdown()
    end)
  end)

  describe("hostile input", function()
    local function expect_status_then_close(opts, send, code)
      run(function()
        local app = app_with_routes(opts)
        local c = assert(coserve.connect("127.0.0.1", app.port))
        send(c)
        assert.equal(code, (read_response(c)))
        assert.same({ nil, "closed", "" }, { c:receive(1, 2) })
        app:shutdown()
      end)
    end

    it("garbage bytes get 400 and a close", function()
      expect_status_then_close(nil, function(c) c:send("\1\2\3\4 garbage\r\n\r\n") end, 400)
    end)

    it("a 20 KiB header gets 431", function()
      expect_status_then_close(nil, function(c)
        c:send("GET / HTTP/1.1\r\nX-Big: " .. ("a"):rep(20 * 1024) .. "\r\n\r\n")
      end, 431)
    end)

    it("a body over max_body gets 413", function()
      expect_status_then_close({ max_body = 10 }, function(c)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
      end, 413)
    end)

    it("a chunked body over max_body gets 413", function()
      expect_status_then_close({ max_body = 4 }, function(c)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" ..
          "8\r\n12345678\r\n0\r\n\r\n")
      end, 413)
    end)

    it("a malformed chunked body gets 400", function()
      expect_status_then_close(nil, function(c)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
      end, 400)
    end)

    it("Content-Length with Transfer-Encoding (smuggling) gets 400", function()
      expect_status_then_close(nil, function(c)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n" ..
          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
      end, 400)
    end)

    it("two different Content-Lengths (smuggling) get 400", function()
      expect_status_then_close(nil, function(c)
        c:send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
      end, 400)
    end)

    it("a head sent too slowly gets 408 while a normal client is served", function()
      run(function()
        local app = app_with_routes({ header_timeout = 0.3 })
        local slow = assert(coserve.connect("127.0.0.1", app.port))
        local dribble = coserve.spawn(function()
          for ch in ("GET /hello/slow HTTP/1.1\r\nHost: t\r\n"):gmatch(".") do
            if not slow:send(ch) then return end
            coserve.sleep(0.02)
          end
        end)
        local fast = assert(coserve.connect("127.0.0.1", app.port))
        fast:send(get("/hello/fast"))
        assert.equal("hello fast", select(3, read_response(fast)))
        assert.equal(408, (read_response(slow)))
        dribble:cancel()
        fast:close()
        slow:close()
        app:shutdown()
      end)
    end)
  end)

  it("a shutdown closes idle keep-alive connections at once and lets requests finish", function()
    run(function()
      local app = app_with_routes()
      local idle = assert(coserve.connect("127.0.0.1", app.port))
      idle:send(get("/hello/i"))
      read_response(idle)
      local busy = assert(coserve.connect("127.0.0.1", app.port))
      busy:send(get("/slow"))
      coserve.sleep(0.02)
      app:shutdown(5)
      assert.same({ nil, "closed", "" }, { idle:receive(1, 1) })
      local _, h, body = read_response(busy)
      assert.equal("slow done", body)
      assert.equal("close", h.connection)
      busy:close()
    end)
  end)
end)

describe("http.request", function()
  it("gets a content-length, a chunked and a HEAD response, reusing one connection", function()
    run(function()
      local app = app_with_routes()
      local base = "http://127.0.0.1:" .. app.port
      local r = assert(http.request{ url = base .. "/hello/client" })
      assert.equal(200, r.status)
      assert.equal("hello client", r.body)
      assert.equal("text/plain", r.headers["content-type"])
      r = assert(http.request{ url = base .. "/stream" })
      assert.equal("part 1;part 2;part 3;", r.body)
      r = assert(http.request{ method = "HEAD", url = base .. "/hello/h" })
      assert.equal("", r.body)
      assert.equal("7", r.headers["content-length"])
      r = assert(http.request{ method = "POST", url = base .. "/echo", body = "payload" })
      assert.equal("payload", r.body)
      assert.equal(1, app:stats().accepted)
      app:shutdown()
    end)
  end)

  it("returns errors as nil, err", function()
    run(function()
      assert.same({ nil, "bad url (http://host[:port]/path expected)" },
        { http.request{ url = "ftp://x/" } })
      local app = app_with_routes()
      local port = app.port
      app:shutdown()
      coserve.sleep(0.01)
      assert.same({ nil, "connection refused" },
        { http.request{ url = "http://127.0.0.1:" .. port .. "/" } })
    end)
  end)

  it("times out on a server that does not answer", function()
    run(function()
      local s = testing.server(function(conn) conn:receive("*a", 2) end)
      assert.same({ nil, "timeout" },
        { http.request{ url = "http://127.0.0.1:" .. s.port .. "/", timeout = 0.05 } })
      s:shutdown()
    end)
  end)
end)
