-- The llhttp glue under coserve.http: parser:head and parser:body.
local core = require "coserve.core"

local function request(head, no_body)
  return core.http_parser("request"):head(head, no_body)
end

describe("http parser", function()
  it("parses a request head: method, url, version, headers as sent", function()
    local m = assert(request("GET /a/b?x=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\n"))
    assert.equal("GET", m.method)
    assert.equal("/a/b?x=1", m.url)
    assert.equal("1.1", m.version)
    assert.is_true(m.keep_alive)
    assert.equal("none", m.body)
    assert.same({ "Host", "x", "X-A", "1", "X-A", "2" }, m.headers)
  end)

  it("keeps empty header values as empty strings", function()
    local m = assert(request("GET / HTTP/1.1\r\nX-A:\r\nX-B: 1\r\nX-C: \r\n\r\n"))
    assert.same({ "X-A", "", "X-B", "1", "X-C", "" }, m.headers)
  end)

  it("reads a head off a connection: values, then headers() on demand", function()
    local coserve = require "coserve"
    require("coserve.testing").run(function()
      local srv = coserve.server{ host = "127.0.0.1", port = 0 }
      local got = {}
      srv:handle(function(conn)
        local p = core.http_parser("request")
        got[#got + 1] = { p:read(conn, 1024, 5) }
        got.headers = p:headers()
        got[#got + 1] = { p:read(conn, 1024, 5) }
        got[#got + 1] = { p:read(conn, 20, 5) }
        srv:shutdown()
      end)
      local server = coserve.spawn(function() return srv:start() end)
      local c = assert(coserve.connect("127.0.0.1", srv.port))
      c:send("PUT /x?y HTTP/1.0\r\nContent-Length: 4\r\nA: b\r\n\r\n" ..
             "\1garbage\r\n\r\nGET /" .. ("x"):rep(30))
      assert(server:join())
      c:close()
      assert.same({ "PUT", "/x?y", "1.0", false, "length", 4 }, got[1])
      assert.same({ "Content-Length", "4", "A", "b" }, got.headers)
      -- A refusal comes with the bytes that had come, for the access log.
      assert.same({ false, "Invalid method encountered", "\1garbage\r\n\r\n" }, got[2])
      assert.same({ nil, "too large", "GET /" .. ("x"):rep(30) }, got[3])
    end)
  end)

  it("knows HTTP/1.0 and Connection: close are not keep-alive", function()
    assert.is_false(request("GET / HTTP/1.0\r\n\r\n").keep_alive)
    assert.is_false(request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive)
  end)

  it("stops a Content-Length body at its end, leaving a pipelined request alone", function()
    local p = core.http_parser("request")
    local m = assert(p:head("POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\n"))
    assert.equal("length", m.body)
    assert.equal(5, m.length)
    assert.same({ "hel", 3, false }, { p:body("hel") })
    assert.same({ "lo", 2, true }, { p:body("loGET / HTTP/1.1\r\n") })
  end)

  it("removes chunked framing and stops after the last chunk", function()
    local p = core.http_parser("request")
    assert.equal("chunked", assert(p:head("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")).body)
    local data, used, done = p:body("3\r\nabc\r\n4\r\ndefg\r\n")
    assert.same({ "abcdefg", 17, false }, { data, used, done })
    assert.same({ "", 5, true }, { p:body("0\r\n\r\nNEXT") })
  end)

  it("parses a chunked body fed one byte at a time", function()
    local p = core.http_parser("request")
    assert(p:head("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
    local wire, got, done = "5\r\nhello\r\n0\r\n\r\n", {}, false
    for i = 1, #wire do
      local data, used, complete = p:body(wire:sub(i, i))
      assert.equal(1, used)
      got[#got + 1] = data
      done = complete
    end
    assert.is_true(done)
    assert.equal("hello", table.concat(got))
  end)

  it("rejects request smuggling: Content-Length with Transfer-Encoding", function()
    local m, err = request("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert.is_nil(m)
    assert.matches("Content%-Length", err)
  end)

  it("rejects request smuggling: two different Content-Lengths", function()
    local m, err = request("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert.is_nil(m)
    assert.matches("Content%-Length", err)
  end)

  it("rejects garbage", function()
    assert.is_nil((request("\1\2\3garbage\r\n\r\n")))
  end)

  it("limits the number of headers", function()
    local lines = {}
    for i = 1, 200 do lines[i] = "X-" .. i .. ": v\r\n" end
    assert.same({ nil, "too many headers" },
      { request("GET / HTTP/1.1\r\n" .. table.concat(lines) .. "\r\n") })
  end)

  it("parses a response: status, reason and a body until the peer closes", function()
    local p = core.http_parser("response")
    local m = assert(p:head("HTTP/1.1 200 OK\r\n\r\n"))
    assert.equal(200, m.status)
    assert.equal("OK", m.reason)
    assert.equal("eof", m.body)
    assert.same({ "abc", 3, false }, { p:body("abc") })
    assert.same({ "", 0, true }, { p:body("") })
  end)

  it("gives a response to HEAD no body, whatever its Content-Length says", function()
    local m = assert(core.http_parser("response"):head(
      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true))
    assert.equal("none", m.body)
  end)

  it("fuzz: a CONNECT head has no body and ends the conversation", function()
    local m = assert(request("CONNECT a:1 HTTP/1.1\r\nContent-Length: 3\r\n\r\n"))
    assert.equal("none", m.body)
    assert.is_false(m.keep_alive)
  end)
end)
