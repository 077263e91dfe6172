-- One spec per bug fuzz/tls_server found in the TLS paths (runtime/tls.c,
-- runtime/stream.c), named after the bug; the input that found it is kept
-- as a regress_* seed in fuzz/corpus/tls_server/.
local coserve = require "coserve"
local testing = require "coserve.testing"
local ffi = require "ffi"

local run, serve, connect = testing.run, testing.server, testing.connect

-- The process's libcrypto (the one coserve is linked with: one library,
-- one per-thread error queue).
ffi.cdef [[
void ERR_new(void);
void ERR_set_debug(const char *file, int line, const char *func);
void ERR_set_error(int lib, int reason, const char *fmt, ...);
unsigned long ERR_peek_error(void);
void ERR_clear_error(void);
]]
local crypto = ffi.load("libcrypto.so.3")

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
end)
