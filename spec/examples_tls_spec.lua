-- The TLS examples, run with the CLI (COSERVE_BIN) on port 0 and driven as
-- a user would: examples/https_hello.lua and examples/https_client.lua.
local coserve = require "coserve"
local testing = require "coserve.testing"
local http = require "coserve.http"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local function example(name) return proc.ROOT .. "/examples/" .. name .. ".lua" end

-- Starts https_hello.lua on port 0 (with extra args); stopped by PID
-- whatever the case's outcome. Returns the process and its port.
local function start_hello(...)
  local p = proc.start({ proc.BIN, example("https_hello"), "0", ... })
  finally(function() p:stop() end)
  return p, tonumber(p:wait_output("https on 127%.0%.0%.1:(%d+)\n"))
end

-- Stops a child server the way an operator does, and checks it went.
local function terminate(p)
  p:signal("TERM")
  assert.equal(0, p:wait_exit(5))
end

-- https_client.lua's run, while this process waits without serving.
local function client(...)
  return proc.run({ proc.BIN, example("https_client"), ... }, { timeout = 15 })
end

describe("TLS examples", function()
  local certs
  setup(function() certs = testing.tls() end)
  teardown(function() os.execute("rm -rf '" .. certs.dir .. "'") end)

  it("https_hello with no certificate makes a throw-away CA, prints it, removes it at exit",
    function()
      local p, port = start_hello()
      local ca = p:wait_output("\nca (/tmp/[^\n]+/ca%.pem)\n")
      testing.run(function()
        local r = assert(http.request{ url = ("https://localhost:%d/hello/you"):format(port),
                                       tls = { ca = ca } })
        assert.equal(200, r.status)
        assert.equal("hello you over TLSv1.3\n", r.body)
        -- Not with the system's CAs: it is a throw-away one.
        local res, err = http.request{ url = ("https://localhost:%d/hello/x"):format(port) }
        assert.is_nil(res)
        assert.matches("^tls: certificate verify failed", err)
      end, { timeout = 10 })
      terminate(p)
      assert.is_nil(io.open(ca), "the throw-away CA is still there")
    end)

  it("https_hello serves the certificate and key it is given", function()
    local p, port = start_hello(certs.cert, certs.key)
    assert.not_matches("\nca ", p:stdout())
    testing.run(function()
      local c = assert(coserve.connect("localhost", port, { timeout = 5,
        tls = { ca = certs.ca, alpn = { "http/1.1" } } }))
      assert.equal("http/1.1", c:tls().alpn)
      assert.matches("CN=localhost", c:tls().peer_subject)
      c:close()
    end, { timeout = 10 })
    -- curl, keeping the connection for a second URL.
    local base = ("https://localhost:%d/hello/"):format(port)
    local r = proc.run({ "curl", "-sS", "--max-time", "8", "--cacert", certs.ca,
      "--resolve", ("localhost:%d:127.0.0.1"):format(port), base .. "a", base .. "b" })
    assert.equal(0, r.status, r.err)
    assert.equal("hello a over TLSv1.3\nhello b over TLSv1.3\n", r.out)
    terminate(p)
  end)

  it("https_hello with a bad key file fails at start, naming it", function()
    local r = proc.run({ proc.BIN, example("https_hello"), "0", certs.cert, "/nonexistent.key" })
    assert.equal(1, r.status)
    assert.matches("tls: cannot use key /nonexistent.key", r.err, 1, true)
  end)

  it("https_client prints the status and body; --ca verifies against a given CA", function()
    local p, port = start_hello(certs.cert, certs.key)
    local r = client(("https://localhost:%d/hello/client"):format(port), "--ca", certs.ca)
    assert.equal(0, r.status, r.err)
    assert.equal("status 200 OK\nhello client over TLSv1.3\n", r.out)
    r = client(("https://localhost:%d/nothing"):format(port), "--ca", certs.ca)
    assert.equal(0, r.status, r.err)
    assert.matches("^status 404 ", r.out)
    terminate(p)
  end)

  it("https_client refuses an unknown CA (exit 1, the reason), unless --insecure", function()
    local cert, key = certs.make("selfsigned", { san = "DNS:localhost", self_signed = true })
    local p, port = start_hello(cert, key)
    local url = ("https://localhost:%d/hello/anyway"):format(port)
    local r = client(url)
    assert.equal(1, r.status)
    assert.equal("", r.out)
    assert.equal("https_client: tls: certificate verify failed: self-signed certificate\n", r.err)
    r = client(url, "--ca", certs.ca) -- our CA did not sign it either
    assert.equal(1, r.status)
    assert.matches("certificate verify failed", r.err)
    r = client(url, "--insecure")
    assert.equal(0, r.status, r.err)
    assert.equal("status 200 OK\nhello anyway over TLSv1.3\n", r.out)
    terminate(p)
  end)

  it("https_client without a URL prints its usage and exits 2", function()
    local r = client()
    assert.equal(2, r.status)
    assert.matches("^usage: https_client%.lua URL", r.err)
  end)
end)
