-- scripts/soak's program, run by the built coserve:
--   SOAK_BIN=build-soak/coserve coserve scripts/soak.lua MINUTES OUTDIR
--
-- Starts two targets running scripts/soak_app.lua side by side on ports of
-- their own, "single" (one process) and "w2" (`coserve -w 2`), and drives
-- both for MINUTES with the same mixed load:
--
--   echo    line echo clients, some lines pipelined, reconnecting now and then
--   wrk     HTTP keep-alive (Debian's wrk, GET / and POST /echo, paced)
--   short   HTTP on a new connection per request (Connection: close)
--   ws      WebSocket clients, messages of 10 B to 70 KB, close handshake
--   slow    slow readers: GET /big (4 MiB) read 16 KiB at a time with pauses
--   reset   abrupt resets: SO_LINGER 0 closes in the middle of a request
--           head, a body, a response being sent, a line, a WebSocket frame
--
-- Every few seconds it samples VmRSS and the open descriptors of every
-- process (the master and each worker included) into OUTDIR/samples.csv.
-- It fails (exit 1, one line saying why) if a process's RSS grows by more
-- than 5 % from the end of the warm-up (the first 20 % of the run, at least
-- 15 s) to the end (each the median of three samples), if a process has
-- more descriptors once the load has stopped and its clients are gone than
-- before the load began, if a process died, or if a kind of load served
-- nothing or failed more than 1 % of its attempts.
local coserve = require "coserve"
local ffi = require "ffi"
local bit = require "bit"

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/scripts/[^/]*$")) or "."
local proc = dofile(ROOT .. "/spec/support/process.lua")

local MINUTES = tonumber(arg[1]) or 30
local OUT = arg[2] or (ROOT .. "/build-soak/soak")
local BIN = os.getenv("SOAK_BIN") or (ROOT .. "/build-soak/coserve")
local APP = os.getenv("SOAK_APP") or (ROOT .. "/scripts/soak_app.lua")
local DURATION = MINUTES * 60
-- The warm-up is the first 20 % of the run, and at least 15 s (half of a
-- very short run): RSS climbs to its plateau in the first 5-10 s of load on
-- a busy 2-core machine, as LuaJIT's heap and malloc's arenas grow to fit it.
local WARMUP = math.max(0.2 * DURATION, math.min(15, 0.5 * DURATION))
local INTERVAL = DURATION >= 600 and 5 or 2
local RSS_LIMIT = 0.05
local ERROR_LIMIT = 0.01

-- Clients per target and kind; a few dozen connections per target keep
-- both targets busy on a 2-core machine that others share.
local N = {
  echo = tonumber(os.getenv("SOAK_ECHO")) or 8,
  wrk = tonumber(os.getenv("SOAK_WRK")) or 8,
  short = tonumber(os.getenv("SOAK_SHORT")) or 2,
  ws = tonumber(os.getenv("SOAK_WS")) or 4,
  slow = tonumber(os.getenv("SOAK_SLOW")) or 3,
  reset = tonumber(os.getenv("SOAK_RESET")) or 1,
}
-- wrk's pause between a connection's requests, in ms (Debian's wrk has no
-- rate option; its delay() hook paces it).
local WRK_DELAY = tonumber(os.getenv("SOAK_WRK_DELAY")) or 4
local KINDS = { "echo", "wrk", "short", "ws", "slow", "reset" }

local function say(fmt, ...)
  io.stdout:write(("[soak] " .. fmt .. "\n"):format(...))
  io.stdout:flush()
end

local function shell(cmd)
  local f = io.popen(cmd)
  local s = f:read("*a")
  f:close()
  return s
end

-- ---------------------------------------------------------------- /proc

local function rss_kb(pid)
  local s = proc.read("/proc/" .. pid .. "/status")
  return s and tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function fd_count(pid)
  return tonumber(shell("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l"))
end

local function children(pid)
  local list = {}
  for line in shell("pgrep -P " .. pid):gmatch("%d+") do list[#list + 1] = tonumber(line) end
  table.sort(list)
  return list
end

-- The processes of a target: { {role =, pid =}, ... }.
local function processes(t)
  if not t.workers then return { { role = "single", pid = t.p.pid } } end
  local list = { { role = "master", pid = t.p.pid } }
  for i, pid in ipairs(children(t.p.pid)) do list[#list + 1] = { role = "worker" .. i, pid = pid } end
  return list
end

-- ---------------------------------------------------------------- targets

local function free_port()
  local s = coserve.server{ host = "127.0.0.1", port = 0 }
  s:handle(function() end)
  local ok, err = true
  coserve.spawn(function() ok, err = s:start() end)
  assert(ok, err)
  local port = s.port
  s:shutdown()
  return port
end

local function start_target(name, workers)
  local t = { name = name, workers = workers, echo_port = free_port(), http_port = free_port() }
  local argv = { BIN, "--grace", "2" }
  if workers then argv[#argv + 1] = "-w"; argv[#argv + 1] = tostring(workers) end
  argv[#argv + 1] = APP
  argv[#argv + 1] = tostring(t.echo_port)
  argv[#argv + 1] = tostring(t.http_port)
  t.p = proc.start(argv)
  local want = workers or 1
  local ready = proc.poll(10, function()
    local _, n = t.p:stderr():gsub("soak app: echo on", "")
    return n >= want
  end)
  assert(ready, name .. " did not start: " .. t.p:stderr())
  return t
end

-- ---------------------------------------------------------------- counters

local function new_counts()
  local c = {}
  for _, k in ipairs(KINDS) do c[k] = { ok = 0, errors = {} } end
  return c
end

local function fail_op(t, kind, why)
  local e = t.counts[kind].errors
  e[why] = (e[why] or 0) + 1
end

local running = true

-- Runs body(t) over and over in its own task until the load stops; an
-- error raised inside counts as a "bug" of that kind (a wrong answer).
local function client_loop(t, kind, body, wg)
  wg:add(1)
  coserve.spawn(function()
    while running do
      local ok, err = pcall(body, t)
      if not ok then
        fail_op(t, kind, "wrong answer")
        if (t.reported or 0) < 5 then
          t.reported = (t.reported or 0) + 1
          say("%s %s: %s", t.name, kind, tostring(err))
        end
        coserve.sleep(0.1)
      end
    end
    wg:done()
  end)
end

-- ---------------------------------------------------------------- clients

-- Reads an HTTP response head: status, content-length (or nil, err).
local function read_head(c)
  local line, err = c:receive("*l", 10)
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
  assert(status, "bad status line: " .. line)
  local length
  while true do
    local h
    h, err = c:receive("*l", 10)
    if not h then return nil, err end
    if h == "" then break end
    local v = h:lower():match("^content%-length:%s*(%d+)")
    if v then length = tonumber(v) end
  end
  return status, length
end

local function echo_client(t)
  local c, err = coserve.connect("127.0.0.1", t.echo_port, { timeout = 10 })
  if not c then return fail_op(t, "echo", err) end
  local n = 0
  while running and n < 500 do
    -- One line, then now and then a batch of 10 pipelined lines.
    local batch = (n % 50 == 0) and 10 or 1
    local lines = {}
    for i = 1, batch do lines[i] = ("line %d.%d %s\n"):format(n, i, ("x"):rep(n % 200)) end
    local ok
    ok, err = c:send(lines)
    if not ok then fail_op(t, "echo", err) break end
    for i = 1, batch do
      local got
      got, err = c:receive("*l", 10)
      if not got then fail_op(t, "echo", err) c:close() return end
      assert(got .. "\n" == lines[i], "echo: got " .. got:sub(1, 40))
      t.counts.echo.ok = t.counts.echo.ok + 1
    end
    n = n + 1
    coserve.sleep(0.005)
  end
  c:close()
end

local function short_client(t)
  local c, err = coserve.connect("127.0.0.1", t.http_port, { timeout = 10 })
  if not c then return fail_op(t, "short", err) end
  c:send("GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
  local all
  all, err = c:receive("*a", 10)
  c:close()
  if not all then return fail_op(t, "short", err) end
  assert(all:match("^HTTP/1%.1 200 ") and all:match("\r\n\r\nhello\n$"), "short: " .. all:sub(1, 60))
  t.counts.short.ok = t.counts.short.ok + 1
  coserve.sleep(0.005)
end

local BIG = 4 * 1024 * 1024

local function slow_client(t)
  local c, err = coserve.connect("127.0.0.1", t.http_port, { timeout = 10 })
  if not c then return fail_op(t, "slow", err) end
  -- Two responses on one keep-alive connection, each read slowly.
  for _ = 1, 2 do
    if not running then break end
    c:send("GET /big HTTP/1.1\r\nHost: soak\r\n\r\n")
    local status, length = read_head(c)
    if not status then fail_op(t, "slow", length) c:close() return end
    assert(status == 200 and length == BIG, "slow: status " .. status)
    local got = 0
    while got < length do
      local chunk
      chunk, err = c:receiveany(math.min(16384, length - got), 10)
      if not chunk then fail_op(t, "slow", err) c:close() return end
      got = got + #chunk
      coserve.sleep(0.02)
    end
    t.counts.slow.ok = t.counts.slow.ok + 1
  end
  c:close()
end

-- A minimal WebSocket client: frames masked with a zero key (legal, and it
-- spares masking 70 KB in Lua; the server cannot tell).
local function ws_frame(opcode, payload)
  local n, head = #payload
  if n < 126 then
    head = string.char(0x80 + opcode, 0x80 + n)
  elseif n < 65536 then
    head = string.char(0x80 + opcode, 0x80 + 126, bit.rshift(n, 8), bit.band(n, 255))
  else
    head = string.char(0x80 + opcode, 0x80 + 127, 0, 0, 0, 0,
      bit.band(bit.rshift(n, 24), 255), bit.band(bit.rshift(n, 16), 255),
      bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
  end
  return head .. "\0\0\0\0" .. payload
end

local function ws_read(c)
  local h, err = c:receive(2, 10)
  if not h then return nil, err end
  local b1, b2 = h:byte(1, 2)
  local n = bit.band(b2, 127)
  if n == 126 then
    local x = assert(c:receive(2, 10))
    n = x:byte(1) * 256 + x:byte(2)
  elseif n == 127 then
    local x = assert(c:receive(8, 10))
    n = 0
    for i = 1, 8 do n = n * 256 + x:byte(i) end
  end
  local payload = n > 0 and c:receive(n, 10) or ""
  if not payload then return nil, "closed" end
  return bit.band(b1, 15), payload
end

local WS_SIZES = { 10, 200, 5000, 70000 }

local function ws_client(t)
  local c, err = coserve.connect("127.0.0.1", t.http_port, { timeout = 10 })
  if not c then return fail_op(t, "ws", err) end
  c:send("GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
  local status
  status, err = read_head(c)
  if not status then fail_op(t, "ws", err) c:close() return end
  assert(status == 101, "ws: handshake status " .. status)
  for i = 1, 100 do
    if not running then break end
    local size = WS_SIZES[i % #WS_SIZES + 1]
    local opcode = i % 2 == 0 and 1 or 2
    local msg = (i % 2 == 0 and "t" or "\0b\255"):rep(math.ceil(size / 3)):sub(1, size)
    c:send(ws_frame(opcode, msg))
    local op, payload = ws_read(c)
    if not op then fail_op(t, "ws", payload) c:close() return end
    assert(op == opcode and payload == msg, "ws: echo differs (opcode " .. op .. ")")
    t.counts.ws.ok = t.counts.ws.ok + 1
    coserve.sleep(0.01)
  end
  c:send(ws_frame(8, "\3\232"))          -- close, 1000
  local op = ws_read(c)
  assert(op == nil or op == 8, "ws: expected a close frame")
  c:close()
end

-- Abrupt resets with raw non-blocking sockets: SO_LINGER {1, 0} makes
-- close() send RST instead of FIN, which coserve's own connections cannot do.
ffi.cdef [[
struct soak_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
struct soak_linger { int onoff; int linger; };
struct soak_pollfd { int fd; short events; short revents; };
int socket(int domain, int type, int protocol);
int connect(int fd, const struct soak_sockaddr_in *addr, unsigned int len);
int setsockopt(int fd, int level, int name, const void *value, unsigned int len);
long send(int fd, const void *buf, size_t len, int flags);
long recv(int fd, void *buf, size_t len, int flags);
int close(int fd);
int poll(struct soak_pollfd *fds, unsigned long n, int timeout);
]]
local C = ffi.C
local AF_INET, SOCK_STREAM, SOCK_NONBLOCK = 2, 1, 2048
local SOL_SOCKET, SO_LINGER, MSG_NOSIGNAL = 1, 13, 0x4000
local POLLIN, POLLOUT = 1, 4

local function wait_fd(fd, events, limit)
  local p = ffi.new("struct soak_pollfd[1]")
  p[0].fd, p[0].events = fd, events
  local deadline = coserve.now() + limit
  repeat
    if C.poll(p, 1, 0) > 0 then return p[0].revents end
    coserve.sleep(0.002)
  until coserve.now() > deadline
end

local function raw_connect(port)
  local fd = C.socket(AF_INET, SOCK_STREAM + SOCK_NONBLOCK, 0)
  if fd < 0 then return nil, "socket failed" end
  local sa = ffi.new("struct soak_sockaddr_in", AF_INET,
    bit.bor(bit.rshift(port, 8), bit.lshift(bit.band(port, 255), 8)), 0x0100007F)
  C.connect(fd, sa, ffi.sizeof(sa))
  local ev = wait_fd(fd, POLLOUT, 10)
  if not ev or bit.band(ev, POLLOUT) == 0 then C.close(fd) return nil, "connect failed" end
  return fd
end

local function raw_send(fd, s) return C.send(fd, s, #s, MSG_NOSIGNAL) == #s end

local function raw_read_some(fd, max)
  local buf = ffi.new("char[?]", max)
  local got = 0
  while got < max do
    if not wait_fd(fd, POLLIN, 10) then break end
    local n = tonumber(C.recv(fd, buf + got, max - got, 0))
    if n <= 0 then break end
    got = got + n
  end
  return got
end

local function rst_close(fd)
  local l = ffi.new("struct soak_linger", 1, 0)
  C.setsockopt(fd, SOL_SOCKET, SO_LINGER, l, ffi.sizeof(l))
  C.close(fd)
end

local RESETS = {
  function(t)   -- half a request head
    local fd = raw_connect(t.http_port) if not fd then return false end
    raw_send(fd, "GET / HTTP/1.1\r\nHost: soak\r\nX-Pad: aaaa")
    coserve.sleep(0.01)
    rst_close(fd)
    return true
  end,
  function(t)   -- half a request body
    local fd = raw_connect(t.http_port) if not fd then return false end
    raw_send(fd, "POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 65536\r\n\r\n" .. ("b"):rep(20000))
    coserve.sleep(0.01)
    rst_close(fd)
    return true
  end,
  function(t)   -- while the 4 MiB response is being sent
    local fd = raw_connect(t.http_port) if not fd then return false end
    raw_send(fd, "GET /big HTTP/1.1\r\nHost: soak\r\n\r\n")
    local got = raw_read_some(fd, 65536)
    rst_close(fd)
    return got > 0
  end,
  function(t)   -- a line without its newline
    local fd = raw_connect(t.echo_port) if not fd then return false end
    raw_send(fd, "a line that never ends")
    coserve.sleep(0.01)
    rst_close(fd)
    return true
  end,
  function(t)   -- lines whose echoes are never read
    local fd = raw_connect(t.echo_port) if not fd then return false end
    raw_send(fd, ("unread echo line\n"):rep(2000))
    coserve.sleep(0.01)
    rst_close(fd)
    return true
  end,
  function(t)   -- half a WebSocket frame
    local fd = raw_connect(t.http_port) if not fd then return false end
    raw_send(fd, "GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    local got = raw_read_some(fd, 129)   -- the 101 response's length
    raw_send(fd, ws_frame(1, ("w"):rep(1000)):sub(1, 300))
    coserve.sleep(0.01)
    rst_close(fd)
    return got > 0
  end,
}

local function reset_client(t)
  t.reset_n = (t.reset_n or 0) + 1
  if RESETS[t.reset_n % #RESETS + 1](t) then
    t.counts.reset.ok = t.counts.reset.ok + 1
  else
    fail_op(t, "reset", "connect or read failed")
  end
  coserve.sleep(0.02)
end

-- wrk: keep-alive, GET / and POST /echo alternately, paced by delay().
local function wrk_script(path)
  proc.write(path, ([[
local n = 0
local get = wrk.format("GET", "/")
local post = wrk.format("POST", "/echo", { ["Content-Type"] = "text/plain" }, string.rep("p", 100))
function request() n = n + 1; if n %% 2 == 0 then return post end; return get end
function delay() return %d end
]]):format(WRK_DELAY))
  return path
end

local function start_wrk(t, seconds, script)
  return proc.start({ "wrk", "-t1", "-c" .. N.wrk, "-d" .. seconds .. "s", "--timeout", "10s",
                      "-s", script, "http://127.0.0.1:" .. t.http_port .. "/" })
end

local function wrk_result(t, w)
  local status = proc.poll(30, function() return w:status() end)
  local out = w:stdout()
  if status ~= 0 then fail_op(t, "wrk", "wrk exit " .. tostring(status)) return end
  local requests = tonumber(out:match("(%d+) requests in"))
  if not requests then fail_op(t, "wrk", "no wrk summary") return end
  local conn, read, write, timeout = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  local non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  t.counts.wrk.ok = requests - non2xx
  local e = t.counts.wrk.errors
  if non2xx > 0 then e["non-2xx"] = non2xx end
  for name, v in pairs({ connect = conn, read = read, write = write, timeout = timeout }) do
    if tonumber(v) and tonumber(v) > 0 then e[name] = tonumber(v) end
  end
end

-- ---------------------------------------------------------------- run

os.execute("mkdir -p " .. proc.quote(OUT))
say("%g min against one process and coserve -w 2 (%s), samples every %d s, warm-up %d s",
    MINUTES, BIN, INTERVAL, WARMUP)

local targets = { start_target("single"), start_target("w2", 2) }
for _, t in ipairs(targets) do t.counts = new_counts() end

-- samples.csv is written as the samples are taken, so that a run that is
-- stopped early still leaves its curve.
local csv = assert(io.open(OUT .. "/samples.csv", "w"))
csv:write("time_s,target,role,pid,rss_kb,fds,phase\n")
csv:flush()
local samples, t0 = {}, coserve.now()
local function sample(phase)
  local now = coserve.now() - t0
  for _, t in ipairs(targets) do
    for _, p in ipairs(processes(t)) do
      local rss, fds = rss_kb(p.pid), fd_count(p.pid)
      if rss then
        samples[#samples + 1] = { time = now, target = t.name, role = p.role, pid = p.pid,
                                  rss = rss, fds = fds, phase = phase }
        csv:write(("%.1f,%s,%s,%d,%d,%d,%s\n"):format(now, t.name, p.role, p.pid, rss, fds or -1, phase))
      end
    end
  end
  csv:flush()
end

-- The descriptors before any load: the listening sockets, the loop's own.
coserve.sleep(0.5)
local baseline = {}
for _, t in ipairs(targets) do
  for _, p in ipairs(processes(t)) do
    baseline[p.pid] = { target = t.name, role = p.role, fds = fd_count(p.pid) }
  end
end
sample("baseline")
t0 = coserve.now()

local wg = coserve.waitgroup()
local script = wrk_script(OUT .. "/wrk.lua")
local wrks = {}
for _, t in ipairs(targets) do
  wrks[t] = start_wrk(t, math.max(1, math.floor(DURATION)), script)
  for _ = 1, N.echo do client_loop(t, "echo", echo_client, wg) end
  for _ = 1, N.short do client_loop(t, "short", short_client, wg) end
  for _ = 1, N.ws do client_loop(t, "ws", ws_client, wg) end
  for _ = 1, N.slow do client_loop(t, "slow", slow_client, wg) end
  for _ = 1, N.reset do client_loop(t, "reset", reset_client, wg) end
end

local next_report = 60
while coserve.now() - t0 < DURATION do
  coserve.sleep(INTERVAL)
  local now = coserve.now() - t0
  sample(now < WARMUP and "warmup" or "load")
  if now >= next_report then
    next_report = next_report + 60
    local parts = {}
    for _, s in ipairs(samples) do
      if s.time == samples[#samples].time then
        parts[#parts + 1] = ("%s/%s %.1f MB %d fds"):format(s.target, s.role, s.rss / 1024, s.fds)
      end
    end
    say("%3d s: %s", now, table.concat(parts, ", "))
  end
end

-- Stop the load: clients finish what they are doing and close.
running = false
local drained = wg:wait(60)
for _, t in ipairs(targets) do wrk_result(t, wrks[t]) wrks[t]:stop() end
collectgarbage()
collectgarbage()
coserve.close_idle()

-- Every descriptor back to its baseline (the servers close a connection
-- when they see its EOF or reset), or 15 s.
local failures = {}
if not drained then failures[#failures + 1] = "the load's clients did not stop within 60 s" end
proc.poll(15, function()
  for _, t in ipairs(targets) do
    for _, p in ipairs(processes(t)) do
      if not baseline[p.pid] or (fd_count(p.pid) or 0) > baseline[p.pid].fds then return false end
    end
  end
  return true
end)
sample("after")
local load_end = coserve.now() - t0

-- ---------------------------------------------------------------- verdict

local function median3(list, from)
  local v = {}
  for i = from, math.min(from + 2, #list) do v[#v + 1] = list[i] end
  table.sort(v)
  return v[math.ceil(#v / 2)]
end

local lines = {}
local function report(fmt, ...)
  local s = fmt:format(...)
  lines[#lines + 1] = s
  say("%s", s)
end

report("duration %.0f s (warm-up %.0f s), %d samples per process", DURATION, WARMUP,
       #samples / (#targets + 2))
for _, t in ipairs(targets) do
  local now_pids = {}
  for _, p in ipairs(processes(t)) do now_pids[p.pid] = true end
  for pid, b in pairs(baseline) do
    if b.target == t.name and not now_pids[pid] then
      failures[#failures + 1] = ("%s %s: process %d is gone (died or was replaced)"):format(t.name, b.role, pid)
    end
  end
  for _, p in ipairs(processes(t)) do
    local rss, warm_i, first_rss, after_fds = {}, nil, nil, nil
    for _, s in ipairs(samples) do
      if s.pid == p.pid and s.target == t.name then
        if s.phase == "baseline" then first_rss = s.rss end
        if s.phase == "load" or s.phase == "warmup" then
          rss[#rss + 1] = s.rss
          if s.phase == "load" and not warm_i then warm_i = #rss end
        end
        if s.phase == "after" then after_fds = s.fds end
      end
    end
    if not warm_i or #rss < warm_i + 2 then
      failures[#failures + 1] = ("%s %s: too few samples after the warm-up"):format(t.name, p.role)
    else
      local warm, final = median3(rss, warm_i), median3(rss, #rss - 2)
      local max = 0
      for i = warm_i, #rss do max = math.max(max, rss[i]) end
      local growth = final / warm - 1
      report("%s %-8s pid %d: RSS start %.1f MB, after warm-up %.1f MB, end %.1f MB (%+.1f %%, max %.1f MB); fds %d before, %d after",
             t.name, p.role, p.pid, (first_rss or 0) / 1024, warm / 1024, final / 1024, growth * 100,
             max / 1024, baseline[p.pid] and baseline[p.pid].fds or -1, after_fds or -1)
      if growth > RSS_LIMIT then
        failures[#failures + 1] = ("%s %s: RSS grew %.1f %% after the warm-up (%.1f -> %.1f MB; limit %d %%)")
          :format(t.name, p.role, growth * 100, warm / 1024, final / 1024, RSS_LIMIT * 100)
      end
      if not baseline[p.pid] then
        failures[#failures + 1] = ("%s %s: pid %d was not there before the load (a worker restarted)")
          :format(t.name, p.role, p.pid)
      elseif (after_fds or math.huge) > baseline[p.pid].fds then
        failures[#failures + 1] = ("%s %s: %d open descriptors after the load, %d before (a leak)")
          :format(t.name, p.role, after_fds or -1, baseline[p.pid].fds)
      end
    end
  end
  for _, kind in ipairs(KINDS) do
    local c = t.counts[kind]
    local errs, parts = 0, {}
    for why, n in pairs(c.errors) do errs = errs + n; parts[#parts + 1] = why .. " " .. n end
    table.sort(parts)
    report("%s %-5s %9d ok, %d errors%s", t.name, kind, c.ok, errs,
           #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or "")
    if c.ok == 0 then
      failures[#failures + 1] = ("%s %s: nothing served"):format(t.name, kind)
    elseif errs > ERROR_LIMIT * (c.ok + errs) or (c.errors["wrong answer"] or 0) > 0 then
      failures[#failures + 1] = ("%s %s: %d errors in %d attempts"):format(t.name, kind, errs, c.ok + errs)
    end
  end
end

-- Stop the targets as an operator would: SIGTERM, then exit status 0.
for _, t in ipairs(targets) do
  t.p:signal("TERM")
  local status = t.p:wait_exit(20)
  if status ~= 0 then
    failures[#failures + 1] = ("%s: exit status %s after SIGTERM"):format(t.name, tostring(status))
  end
  local log = t.p:stderr()
  proc.write(OUT .. "/" .. t.name .. ".log", log)
  t.p:stop()
end

-- One data file per process for gnuplot, and summary.txt.
csv:close()
local series, order = {}, {}
for _, s in ipairs(samples) do
  local key = s.target == "single" and "one process" or ("-w 2 " .. s.role:gsub("worker", "worker "))
  if not series[key] then series[key] = {}; order[#order + 1] = key end
  table.insert(series[key], ("%.1f %.2f"):format(math.max(s.time, 0) / 60, s.rss / 1024))
end
local plots = {}
for i, key in ipairs(order) do
  local file = ("%s/rss-%d.dat"):format(OUT, i)
  proc.write(file, table.concat(series[key], "\n") .. "\n")
  plots[#plots + 1] = ("%q using 1:2 with lines lw 2 title %q"):format(file, key)
end
proc.write(OUT .. "/rss.gp", ([[
set terminal svg size 800,420 dynamic font "sans,12" background "white"
set output ARG1
set title "coserve RSS, %g-minute mixed load (scripts/soak)"
set xlabel "minutes"
set ylabel "RSS (MB)"
set key outside right
set grid
set yrange [0:*]
set autoscale xfix
set arrow from %g, graph 0 to %g, graph 1 nohead dashtype 2
set label "end of warm-up" at %g, graph 0.95 offset 0.5,0
plot %s
]]):format(MINUTES, WARMUP / 60, WARMUP / 60, WARMUP / 60, table.concat(plots, ", \\\n     ")))

if #failures > 0 then
  for _, f in ipairs(failures) do report("FAIL: %s", f) end
else
  report("PASS: RSS within %d %% after the warm-up, no descriptor left open, every kind served",
         RSS_LIMIT * 100)
end
proc.write(OUT .. "/summary.txt", table.concat(lines, "\n") .. "\n")
say("samples: %s/samples.csv (load ended at %.0f s)", OUT, load_end)
io.stdout:flush()
os.exit(#failures > 0 and 1 or 0)
