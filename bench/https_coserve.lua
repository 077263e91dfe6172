-- HTTPS for scripts/bench tls (bench/tls.sh): the same routes nginx serves
-- in that benchmark, over TLS 1.3 with the certificate given.
--   coserve bench/https_coserve.lua PORT CERT KEY [BULK_BYTES [PIECE_BYTES]]
--   GET /      "Hello, World!" (keep-alive, or one per connection with
--              "Connection: close": the handshake benchmark)
--   GET /bulk  BULK_BYTES (default 1 GiB) of "x", res:write in pieces of
--              PIECE_BYTES (default 256 KiB) from one string in memory,
--              with a content-length
-- BENCH_HEADER_TIMEOUT=S: header_timeout (default 10 s; the idle-memory run
-- sets nginx's client_header_timeout, 60 s, so connections wait as long).
local http = require "coserve.http"

local port, cert, key = tonumber(arg[1]), arg[2], arg[3]
assert(port and cert and key, "usage: https_coserve.lua PORT CERT KEY [BULK_BYTES [PIECE_BYTES]]")
local bulk = tonumber(arg[4]) or 1024 * 1024 * 1024
local piece_size = tonumber(arg[5]) or 256 * 1024

local app = http.server{ host = "127.0.0.1", port = port,
  header_timeout = tonumber(os.getenv("BENCH_HEADER_TIMEOUT") or "10"),
  tls = { cert = cert, key = key, protocols = { "TLSv1.3" }, alpn = { "http/1.1" } } }

local hello_headers = { ["content-type"] = "text/plain" }
app:route("GET", "/", function(_, res)
  res:send(200, hello_headers, "Hello, World!")
end)

local piece = string.rep("x", piece_size)
local bulk_length = tostring(bulk)
app:route("GET", "/bulk", function(_, res)
  res:header("content-type", "application/octet-stream")
  res:header("content-length", bulk_length)
  local left = bulk
  while left > 0 do
    local n = left < piece_size and left or piece_size
    local ok = res:write(n == piece_size and piece or piece:sub(1, n))
    if not ok then return end
    left = left - n
  end
end)

assert(app:start())
