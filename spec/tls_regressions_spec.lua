-- One spec per bug fuzz/tls_server found in the TLS paths (runtime/tls.c,
-- runtime/stream.c), named after the bug; the input that found it is kept
-- as a regress_* seed in fuzz/corpus/tls_server/.
local coserve = require "coserve"
local testing = require "coserve.testing"
local ffi = require "ffi"

local run, serve, connect = testing.run, testing.server, testing.connect
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

-- The process's libcrypto (the one coserve is linked with: one library,
-- one per-thread error queue).
ffi.cdef [[
void ERR_new(void);
void ERR_set_debug(const char *file, int line, const char *func);
void ERR_set_error(int lib, int reason, const char *fmt, ...);
unsigned long ERR_peek_error(void);
void ERR_clear_error(void);
]]
local ok, crypto = pcall(ffi.load, "libcrypto.so.3")
if not ok then crypto = ffi.load("crypto") end

-- What another user of OpenSSL in the process (a Lua C module, a failed
-- call nobody cleared after) may leave behind: ERR_raise(ERR_LIB_SSL,
-- SSL_R_NO_CIPHER_MATCH).
local function leave_openssl_error()
  crypto.ERR_new()
  crypto.ERR_set_debug("elsewhere.c", 1, "elsewhere")
  crypto.ERR_set_error(20, 185, nil)
  assert(crypto.ERR_peek_error() ~= 0)
end

describe("TLS regressions", function()
  local certs
  setup(function() certs = testing.tls() end)
  teardown(function() os.execute("rm -rf '" .. certs.dir .. "'") end)

  for _, version in ipairs({ "TLSv1.2", "TLSv1.3" }) do
    it("an error another OpenSSL user left in the thread's queue does not fail a " ..
       version .. " connection", function()
      -- fuzz/corpus/tls_server/regress_stale_openssl_error*: OpenSSL's
      -- SSL_get_error() reads the thread's error queue, so a stale entry
      -- turned the server's next "want more bytes" into a failure
      -- ("tls: no cipher match"), and the connection was dropped without
      -- close_notify. tls.c now empties the queue before each SSL call.
      run(function()
        local results = {}
        local s = serve(function(conn)
          while true do
            local line, err = conn:receive()
            results[#results + 1] = line or err
            if not line then return end
            if not conn:send(line .. "\n") then return end
          end
        end, { tls = { cert = certs.cert, key = certs.key, protocols = version } })
        local c = assert(connect(s, { tls = { ca = certs.ca, server_name = "localhost" } }))
        assert(c:send("one\n"))
        assert.equal("one", c:receive())
        leave_openssl_error()
        assert(c:send("two\n"))
        assert.equal("two", c:receive())
        crypto.ERR_clear_error()
        assert(c:send("three\n"))
        assert.same({ "three" }, { c:receive("*l", 2) })
        c:close()
        for _ = 1, 200 do -- the handler reads the end: at most 2 s
          if #results == 4 then break end
          coserve.sleep(0.01)
        end
        s:shutdown()
        assert.same({ "one", "two", "three", "closed" }, results)
      end)
    end)
  end

  -- `openssl s_client` saves its session, then offers it again; stdin is
  -- held open a moment so that it reads the server's tickets. Runs while
  -- the caller's servers go on: {status =, out =}.
  local function s_client(port, args)
    local p = proc.start({ "sh", "-c", "sleep 0.5 | openssl s_client -connect 127.0.0.1:" ..
      port .. " " .. args })
    local status = p:wait_exit(10)
    local r = { status = status, out = p:stdout() .. p:stderr() }
    p:stop()
    return r
  end

  for _, case in ipairs({
    { "TLSv1.2", "optional", "-tls1_2" },
    { "TLSv1.3", "optional", "-tls1_3" },
    { "TLSv1.3", "required", "-tls1_3 -cert %s -key %s" },
  }) do
    local version, verify, args = case[1], case[2], case[3]
    it(("a server with verify = '%s' resumes a %s session instead of failing the handshake")
       :format(verify, version), function()
      -- fuzz/corpus/tls_server/regress_resume_verify*: with verify on and no
      -- session id context, OpenSSL answered every resumption attempt (a
      -- TLS 1.2 session or ticket, a TLS 1.3 PSK) with a fatal
      -- internal_error alert, so every client that reconnects with the
      -- session it kept failed. Server contexts now set one.
      run(function()
        local dir = proc.tmpdir()
        finally(function() proc.rmdir(dir) end)
        local s = serve(function(conn) while conn:receive() do end end,
          { tls = { cert = certs.cert, key = certs.key, ca = certs.ca, verify = verify } })
        local opts = args:format(certs.client_cert, certs.client_key) ..
          " -CAfile " .. proc.quote(certs.ca) .. " -sess_"
        local first = s_client(s.port, opts .. "out " .. proc.quote(dir .. "/sess"))
        assert.equal(0, first.status, first.out)
        assert.matches("New, " .. version, first.out, 1, true)
        local again = s_client(s.port, opts .. "in " .. proc.quote(dir .. "/sess"))
        assert.equal(0, again.status, again.out)
        assert.matches("Reused, " .. version, again.out, 1, true)
        local st = s:stats()
        s:shutdown()
        assert.equal(2, st.tls_handshakes)
        assert.equal(0, st.tls_failures)
      end, { timeout = 30 })
    end)
  end
end)
