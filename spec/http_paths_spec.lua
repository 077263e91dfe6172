-- The HTTP glue's paths that http_spec.lua and http_parser_spec.lua do not
-- reach (issue 9, coverage): response heads built from every kind of header
-- value, heads that do not fit, bodies too large to join the head, responses
-- and reads on closed connections, versions other than 1.x.
local coserve = require "coserve"
local core = require "coserve.core"
local testing = require "coserve.testing"

local run, serve, connect = testing.run, testing.server, testing.connect

-- Runs respond(conn) in a server's handler; returns what respond returned
-- (or the error it raised, as { false, message }) and every byte the client
-- read before the server closed.
local function respond_with(respond)
  local got
  run(function()
    local s = serve(function(conn)
      conn:receive()
      got = { pcall(respond, conn) }
    end)
    local c = assert(connect(s))
    c:send("go\n")
    local data = c:receive("*a", 5)
    got.bytes = data
    c:close()
    s:shutdown()
  end)
  return got
end

local function head_lines(bytes)
  local lines = {}
  for line in bytes:gmatch("([^\r\n]*)\r\n") do
    if line == "" then break end
    lines[#lines + 1] = line
  end
  return lines
end

describe("http_respond", function()
  it("writes array values as one line each, booleans and numbers as text, names lowercased", function()
    local got = respond_with(function(conn)
      return core.http_respond(conn, 200, "OK",
        { ["Set-Cookie"] = { "a=1", "b=2" }, ["X-Flag"] = true, ["X-Off"] = false,
          ["X-Num"] = 42, [1] = "ignored: not a name" },
        nil, 0, 2)
    end)
    assert.is_true(got[1])
    local lines = head_lines(got.bytes)
    assert.equal("HTTP/1.1 200 OK", lines[1])
    table.sort(lines)
    assert.same({ "HTTP/1.1 200 OK", "connection: keep-alive", "content-length: 0",
                  "date: " .. lines[4]:sub(7), "set-cookie: a=1", "set-cookie: b=2",
                  "x-flag: true", "x-num: 42", "x-off: false" }, lines)
    assert.matches("^date: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", lines[4])
  end)

  it("leaves date and content-length to the caller when given, in either table", function()
    local got = respond_with(function(conn)
      return core.http_respond(conn, 200, "OK", { Date = "yesterday" },
        { ["Content-Length"] = "3" }, 3, 0, "abc")
    end)
    assert.is_true(got[1])
    local lines = head_lines(got.bytes)
    table.sort(lines)
    assert.same({ "HTTP/1.1 200 OK", "content-length: 3", "date: yesterday" }, lines)
    assert.equal("abc", got.bytes:match("\r\n\r\n(.*)$"))
  end)

  it("cuts a header name of 256 bytes or more to 255", function()
    local got = respond_with(function(conn)
      return core.http_respond(conn, 204, "No Content", { [("N"):rep(300)] = "v" }, nil, 0, 0)
    end)
    assert.is_true(got[1])
    assert.matches("\r\n" .. ("n"):rep(255) .. ": v\r\n", got.bytes, 1, true)
    assert.is_nil(got.bytes:find("content-length", 1, true)) -- 204 has none
  end)

  it("a head over the runtime's head buffer raises", function()
    local got = respond_with(function(conn)
      return core.http_respond(conn, 200, "OK", { ["X-Big"] = ("v"):rep(20000) }, nil, 0, 0)
    end)
    assert.is_false(got[1])
    assert.matches("response head over %d+ bytes", got[2])
    assert.equal("", got.bytes)
  end)

  it("a status outside 100-999 raises, naming respond's argument", function()
    local got = respond_with(function(conn)
      local r = core.http_respond(conn, 1000, "Too Big", nil, nil, 0, 0)
      return r
    end)
    assert.is_false(got[1])
    assert.matches("status out of range (100-999)", got[2], 1, true)
  end)

  it("a body too large to join the head follows it from its own string", function()
    local body = ("0123456789abcdef"):rep(4096) -- 64 KiB
    local got = respond_with(function(conn)
      return core.http_respond(conn, 200, "OK", nil, nil, #body, 1, body)
    end)
    assert.is_true(got[1])
    local head, rest = got.bytes:match("^(.-\r\n\r\n)(.*)$")
    assert.matches("content-length: 65536\r\n", head, 1, true)
    assert.matches("connection: close\r\n", head, 1, true)
    assert.equal(body, rest)
  end)

  it("a chunked response says so, and a closed connection gives nil, 'closed'", function()
    local got = respond_with(function(conn)
      local first = { core.http_respond(conn, 200, "OK", nil, nil, -1, 0) }
      conn:close()
      local second = { core.http_respond(conn, 200, "OK", nil, nil, 0, 0) }
      return first, second
    end)
    assert.is_true(got[1])
    assert.is_number(got[2][1])
    assert.same({ nil, "closed" }, got[3])
    assert.matches("transfer-encoding: chunked\r\n", got.bytes, 1, true)
  end)
end)

describe("http parser edges", function()
  it("reports versions other than 1.0 and 1.1 as major.minor", function()
    local m = assert(core.http_parser("request"):head("GET / HTTP/2.0\r\nHost: x\r\n\r\n"))
    assert.equal("2.0", m.version)
    m = assert(core.http_parser("request"):head("GET / HTTP/0.9\r\nHost: x\r\n\r\n"))
    assert.equal("0.9", m.version)
  end)

  it("a read on a closed connection is nil, 'closed'; a negative timeout waits without limit", function()
    run(function()
      local got = {}
      local s = serve(function(conn)
        local p = core.http_parser("request")
        got.head = { p:read(conn, 1024, -5) }
        conn:close()
        got.closed = { p:read(conn, 1024, 1) }
      end)
      local c = assert(connect(s))
      coserve.sleep(0.05)
      c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal("", c:receive("*a", 5)) -- closed by the handler, no response
      c:close()
      s:shutdown()
      assert.same({ "GET", "/", "1.1", true, "none" }, { unpack(got.head, 1, 5) })
      assert.same({ nil, "closed" }, got.closed)
    end)
  end)

  it("core.http_date is the Date header's format", function()
    run(function()
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", core.http_date())
    end)
  end)
end)
