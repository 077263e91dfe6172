-- Full TLS handshakes for scripts/bench tls (bench/tls.sh), case "hs": a new
-- TLS connection per request, never a resumed session (coserve's client
-- keeps no session; wrk's does resume, see docs/benchmarks.md).
--   coserve bench/tls_handshakes.lua PORT CONNS SECONDS
-- CONNS coroutines each loop: connect + handshake (certificate not checked:
-- a throw-away one; the server's signature is still verified, as TLS 1.3
-- requires), GET / with "Connection: close", read to the end, close. Prints
--   requests=… errors=… seconds=… rps=…[ first_error=…]
-- counting every exchange that got "Hello, World!", the ones in flight when
-- the time is up included (their server work is in the measured window).
local coserve = require "coserve"

local port, conns, secs = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
assert(port and conns and secs, "usage: tls_handshakes.lua PORT CONNS SECONDS")
local TLS = { tls = { verify = false } }
local REQ = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

local done, errors, first_err, stop = 0, 0, nil, false
local function fail(err)
  errors = errors + 1
  first_err = first_err or err
end

local tasks = {}
local t0 = coserve.now()
for w = 1, conns do
  tasks[w] = coserve.spawn(function()
    while not stop do
      local c, err = coserve.connect("127.0.0.1", port, TLS)
      if not c then
        fail(err)
      else
        local body
        if c:send(REQ) then body, err = c:receive("*a") end
        if body and body:find("Hello, World!", 1, true) then done = done + 1 else fail(err or "bad answer") end
        c:close()
      end
    end
  end)
end
coserve.sleep(secs)
stop = true
for w = 1, conns do tasks[w]:join() end
local elapsed = coserve.now() - t0
io.write(("requests=%d errors=%d seconds=%.2f rps=%.1f%s\n"):format(done, errors, elapsed,
  done / elapsed, first_err and (" first_error=" .. (tostring(first_err):gsub("%s", "_"))) or ""))
io.stdout:flush()
