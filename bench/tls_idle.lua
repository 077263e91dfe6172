-- Idle TLS connections for scripts/bench tls (bench/tls.sh): the server's
-- RSS per connection that has finished its TLS handshake and sent nothing.
--   coserve bench/tls_idle.lua PORT SERVER_PID N [HOLD_S [plain]]
-- Makes 20 warm-up connections (handshake, close) so that the server's
-- one-time allocations are in the baseline, reads the server's VmRSS, opens N
-- TLS connections (100 handshakes in flight at a time, certificates not
-- checked: a throw-away one), waits HOLD_S (default 2) seconds, reads VmRSS
-- again and prints one line:
--   conns=… errors=… rss_before_kib=… rss_after_kib=… kib_per_conn=… connect_s=…
-- "plain": the same without TLS (the plaintext baseline, by hand).
local coserve = require "coserve"

local port, pid, n = tonumber(arg[1]), arg[2], tonumber(arg[3])
local hold = tonumber(arg[4]) or 2
assert(port and pid and n, "usage: tls_idle.lua PORT SERVER_PID N [HOLD_S]")
local TLS = arg[5] ~= "plain" and { tls = { verify = false } } or {}

local function rss_kib()
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

for _ = 1, 20 do
  local c = coserve.connect("127.0.0.1", port, TLS)
  if c then c:close() end
end
coserve.sleep(0.5)
local before = rss_kib()

local conns, errors, first_err = {}, 0, nil
local t0 = coserve.now()
local next_i, WIDTH = 1, 100
local tasks = {}
for w = 1, WIDTH do
  tasks[w] = coserve.spawn(function()
    while next_i <= n do
      local i = next_i
      next_i = i + 1
      local c, err = coserve.connect("127.0.0.1", port, TLS)
      if c then conns[i] = c else errors = errors + 1; first_err = first_err or err end
    end
  end)
end
for w = 1, WIDTH do tasks[w]:join() end
local connect_s = coserve.now() - t0
coserve.sleep(hold)
local after = rss_kib()
local live = 0
for i = 1, n do if conns[i] then live = live + 1 end end
io.write(("conns=%d errors=%d rss_before_kib=%d rss_after_kib=%d kib_per_conn=%.1f connect_s=%.1f%s\n")
  :format(live, errors, before, after, live > 0 and (after - before) / live or 0, connect_s,
    first_err and (" first_error=" .. (tostring(first_err):gsub("%s", "_"))) or ""))
io.stdout:flush()
for i = 1, n do if conns[i] then conns[i]:close() end end
