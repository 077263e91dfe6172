-- coserve.ngx: the part of OpenResty's `ngx` API that libraries written for
-- ngx_lua's cosockets use (SPEC §10), over coserve's public API, so that
-- lua-resty-redis, -memcached, -dns, -websocket... run unmodified.
--
--   local ngx = require "coserve.ngx"   -- the table
--   require("coserve.ngx").install()    -- also the global `ngx` the libraries read
--
-- Timeouts of the socket adapters are milliseconds, as in ngx_lua (coserve's
-- own API takes seconds). There are no request phases: a handler, a task or
-- a timer is where cosockets run. ngx.shared dictionaries live in one
-- process. Whatever is not provided raises "coserve.ngx: ngx.X is not
-- supported" when it is used. See docs/ngx.md.
local coserve = require "coserve"
local core = require "coserve.core"
local bit = require "bit"

local type, tostring, tonumber, error, select = type, tostring, tonumber, error, select
local setmetatable, getmetatable, newproxy, rawset = setmetatable, getmetatable, newproxy, rawset
local pcall, unpack = pcall, unpack
local concat = table.concat
local sub, byte, char, find, format, gsub =
  string.sub, string.byte, string.char, string.find, string.format, string.gsub
local floor = math.floor
local bor = bit.bor
local spawn, sleep, exiting, now = coserve.spawn, coserve.sleep, coserve.exiting, coserve.now
local wait_exiting, max = coserve.wait_exiting, math.max
local log = coserve.log

local ngx = {}

---------------------------------------------------------------- not supported

-- What coserve.ngx does not provide is a stand-in that raises, with the
-- name, when it is called or assigned to: `local say = ngx.say` at a
-- library's load time still works; calling it fails loudly. Indexing one
-- gives a stand-in for the longer name (nginx.websocket.server takes
-- ngx.req.http_version when it loads), except in the tables that hold
-- values (ngx.var, ngx.header, ngx.ctx, ngx.arg): reading those raises.
local stand_ins = {}
local value_tables = { ["ngx.var"] = true, ["ngx.header"] = true, ["ngx.ctx"] = true,
                       ["ngx.arg"] = true }

local not_supported
not_supported = function(name)
  local p = stand_ins[name]
  if p then return p end
  p = newproxy(true)
  local mt = getmetatable(p)
  local msg = "coserve.ngx: " .. name .. " is not supported"
  mt.__call = function() error(msg, 2) end
  if value_tables[name] then
    mt.__index = function(_, k)
      error("coserve.ngx: " .. name .. "." .. tostring(k) .. " is not supported", 2)
    end
  else
    mt.__index = function(_, k) return not_supported(name .. "." .. tostring(k)) end
  end
  mt.__newindex = function(_, k)
    error("coserve.ngx: " .. name .. "." .. tostring(k) .. " is not supported", 2)
  end
  mt.__tostring = function() return msg end
  stand_ins[name] = p
  return p
end

-- A table whose missing fields are stand-ins named prefix .. key.
local function guarded(t, prefix)
  return setmetatable(t, { __index = function(_, k)
    if type(k) ~= "string" then return nil end
    return not_supported(prefix .. k)
  end })
end

-- Methods of an object: a missing method is a function that raises. The
-- objects' own fields are never nil (false instead), so this fallback is
-- reached only for names the object does not have.
local function guarded_methods(methods, prefix)
  local cache = {}
  return setmetatable(methods, { __index = function(_, k)
    if type(k) ~= "string" then return nil end
    local f = cache[k]
    if not f then
      local msg = "coserve.ngx: " .. prefix .. k .. " is not supported"
      f = function() error(msg, 2) end
      cache[k] = f
    end
    return f
  end })
end

---------------------------------------------------------------- constants

ngx.null = core.null                -- the NULL light userdata, as cjson.null
ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5
ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT = 0, 1, 2, 3
ngx.ERR, ngx.WARN, ngx.NOTICE, ngx.INFO, ngx.DEBUG = 4, 5, 6, 7, 8

---------------------------------------------------------------- time

local ffi = require "ffi"
local wall_clock
do
  -- CLOCK_REALTIME through a struct of our own name, so that another
  -- module's cdef of struct timespec does not collide with ours.
  local ok = pcall(ffi.cdef, [[
    typedef struct { long sec; long nsec; } coserve_ngx_timespec_t;
    int clock_gettime(int clk, coserve_ngx_timespec_t *ts);
  ]])
  local ts = ok and ffi.new("coserve_ngx_timespec_t")
  if ok and pcall(ffi.C.clock_gettime, 0, ts) then
    local clock_gettime = ffi.C.clock_gettime
    wall_clock = function()
      clock_gettime(0, ts)
      return tonumber(ts.sec) + floor(tonumber(ts.nsec) / 1e6) / 1000
    end
  else
    wall_clock = function() return os.time() end
  end
end

-- ngx.now(): wall-clock seconds with milliseconds. ngx_lua caches it per
-- event-loop turn; this reads the clock every time, so update_time has
-- nothing to do.
ngx.now = wall_clock
ngx.time = function() return os.time() end
ngx.update_time = function() end
ngx.today = function() return os.date("%Y-%m-%d") end
ngx.localtime = function() return os.date("%Y-%m-%d %H:%M:%S") end
ngx.utctime = function() return os.date("!%Y-%m-%d %H:%M:%S") end
ngx.http_time = function(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", t) end
ngx.cookie_time = function(t) return os.date("!%a, %d-%b-%y %H:%M:%S GMT", t) end

-- ngx.sleep(seconds): seconds, as in ngx_lua.
ngx.sleep = function(s)
  if type(s) ~= "number" or s < 0 then
    error("bad argument #1 to 'sleep' (non-negative number expected)", 2)
  end
  return sleep(s)
end

---------------------------------------------------------------- log

local level_names = { [0] = "error", "error", "error", "error", "error", "warn", "info", "info", "debug" }
local level_rank = { error = 1, warn = 2, info = 3, debug = 4 }
local log_level = coserve.log_level

local function log_arg(v)
  if v == nil then return "nil" end
  if v == ngx.null then return "null" end
  return tostring(v)
end

-- ngx.log(level, ...): the arguments joined, as ngx_lua does, written with
-- coserve.log ("error" up to ngx.ERR, "warn", "info" for NOTICE and INFO,
-- "debug"), prefixed with the caller's place.
ngx.log = function(level, ...)
  local name = level_names[level]
  if not name then error("bad argument #1 to 'log' (bad log level)", 2) end
  if level_rank[name] > level_rank[log_level()] then return end
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = log_arg((select(i, ...))) end
  local info = debug.getinfo(2, "Sl")
  local where = info and (info.short_src .. ":" .. (info.currentline or 0) .. ": ") or ""
  log(name, "[lua] " .. where .. concat(parts))
end

---------------------------------------------------------------- tcp

local coserve_connect = coserve.connect

-- ngx timeouts are milliseconds. As in ngx_lua, a value that is not a
-- number counts as 0 (lua_tonumber), and 0 means the default (60 s, as
-- lua_socket_*_timeout): Debian's lua-nginx-redis-connector 0.06 passes
-- its own table as a read timeout and gets the default from nginx too.
local function ms_arg(ms, fname)
  if type(ms) ~= "number" then ms = tonumber(ms) or 0 end
  if ms < 0 or ms >= 2147483648 then error("bad argument to '" .. fname .. "' (bad timeout value)", 3) end
  return ms
end

-- Seconds for coserve: 0 (or false, unset) is the default.
local function seconds(ms, default)
  if not ms or ms == 0 then return default end
  return ms / 1000
end

-- Keep-alive pools, named as ngx_lua names them ("host:port", the unix
-- path, or opts.pool), kept here rather than in coserve.connect's pools
-- so that a named pool is a pool of its own.
local pools = {}                               -- name -> pool
local reused = setmetatable({}, { __mode = "k" }) -- conn -> times reused

-- A pool's idle connections and their expiry times are two arrays (no
-- table per setkeepalive), the most recently pooled last.
local function new_pool(size, backlog)
  return { size = size, backlog = backlog or false, active = 0,
           idle = {}, expires = {}, waiting = 0, sem = false }
end

local function pool_take(pool)
  local idle, expires = pool.idle, pool.expires
  local n = #idle
  if n == 0 then return nil end
  local t = now()
  while n > 0 do
    local conn, e = idle[n], expires[n]       -- the most recently pooled first
    idle[n], expires[n] = nil, nil
    n = n - 1
    if e > t and conn:_pool(false) then return conn end
    conn:close()
  end
end

-- ngx_lua's backlog: with opts.backlog, at most pool_size connections of a
-- pool are in use at once; more connects wait, at most `backlog` of them,
-- for the connect timeout, and take the connection put back first. (Idle
-- ones do not count, as they do in ngx_lua; a pool never holds more than
-- pool_size idle ones either.)
local function slot_acquire(pool, timeout)
  if not pool.backlog then return true end
  if pool.active < pool.size then
    pool.active = pool.active + 1
    return true
  end
  if pool.waiting >= pool.backlog then return nil, "too many waiting connect operations" end
  if not pool.sem then pool.sem = coserve.semaphore(0) end
  pool.waiting = pool.waiting + 1
  local ok, err = pool.sem:wait(timeout or 60)
  pool.waiting = pool.waiting - 1
  if not ok then return nil, err end
  pool.active = pool.active + 1
  return true
end

local function slot_release(pool)
  if not pool or not pool.backlog then return end
  pool.active = pool.active - 1
  if pool.waiting > 0 then pool.sem:post() end
end

local Tcp = {}
local tcp_mt = { __index = Tcp }
guarded_methods(Tcp, "ngx.socket.tcp:")

local function tcp()
  -- Every field is set (false when empty): a missing one would reach the
  -- "not supported" fallback of Tcp.
  return setmetatable({ c = false, reused = 0, pool = false, held = false,
                        ct = false, st = false, rt = false }, tcp_mt)
end

local function apply_timeouts(self)
  self.c:settimeouts(nil, seconds(self.st, 60), seconds(self.rt, 60))
end

local function drop(self)
  local c = self.c
  self.c = false
  if self.held then
    self.held = false
    slot_release(self.pool)
  end
  return c
end

-- sock:connect(host, port [, opts]) / sock:connect("unix:/path" [, opts])
-- -> 1 | nil, err. opts: pool (name), pool_size, backlog.
function Tcp:connect(host, port, opts)
  if type(host) ~= "string" then error("bad argument #1 to 'connect' (string expected)", 2) end
  if self.c then self:close() end
  local name
  if sub(host, 1, 5) == "unix:" then
    if type(port) == "table" then opts = port end
    port = nil
    name = host
  else
    port = tonumber(port)
    if not port then error("bad argument #2 to 'connect' (port expected)", 2) end
    name = host .. ":" .. port
  end
  local size, backlog
  if opts ~= nil then
    if type(opts) ~= "table" then error("bad argument #3 to 'connect' (table expected)", 2) end
    name = opts.pool or name
    size, backlog = opts.pool_size, opts.backlog
    if size ~= nil and (type(size) ~= "number" or size < 1) then
      error("bad argument #3 to 'connect' (bad \"pool_size\" option value)", 2)
    end
    if backlog ~= nil and (type(backlog) ~= "number" or backlog < 0) then
      error("bad argument #3 to 'connect' (bad \"backlog\" option value)", 2)
    end
    if backlog and not size then size = 30 end
  end
  local pool = pools[name]
  if not pool then
    pool = new_pool(size or 30, backlog)
    pools[name] = pool
  end
  self.pool = pool
  -- A pool with a backlog counts the connections in use, pooled ones too:
  -- its slot comes first.
  local conn = not pool.backlog and pool_take(pool)
  local ok, err
  if not conn then
    ok, err = slot_acquire(pool, seconds(self.ct, 60))
    if not ok then return nil, err end
    self.held = pool.backlog and true or false
    -- One pooled while this connect waited for its slot is reused.
    conn = pool_take(pool)
    if not conn then
      conn, err = coserve_connect(host, port, { timeout = seconds(self.ct, 60) })
      if not conn then
        drop(self)
        return nil, err
      end
      self.c, self.reused = conn, 0
      apply_timeouts(self)
      return 1
    end
  end
  local times = (reused[conn] or 0) + 1
  reused[conn] = times
  self.c, self.reused = conn, times
  apply_timeouts(self)
  return 1
end

-- sock:settimeout(ms): connect, send and read.
function Tcp:settimeout(ms)
  ms = ms_arg(ms, "settimeout")
  self.ct, self.st, self.rt = ms, ms, ms
  if self.c then apply_timeouts(self) end
  return true
end

-- sock:settimeouts(connect_ms, send_ms, read_ms)
function Tcp:settimeouts(ct, st, rt)
  self.ct, self.st, self.rt =
    ms_arg(ct, "settimeouts"), ms_arg(st, "settimeouts"), ms_arg(rt, "settimeouts")
  if self.c then apply_timeouts(self) end
  return true
end

-- A table to send: strings, numbers and booleans, nested tables (a
-- pipeline of requests), joined into one string as ngx_lua does.
local function flatten(t, out, n)
  for i = 1, #t do
    local v = t[i]
    local tv = type(v)
    if tv == "string" then
      n = n + 1
      out[n] = v
    elseif tv == "number" or tv == "boolean" then
      n = n + 1
      out[n] = tostring(v)
    elseif tv == "table" then
      n = flatten(v, out, n)
    elseif v == ngx.null then
      n = n + 1
      out[n] = "null"
    else
      error("bad argument #1 to 'send' (bad data type " .. tv .. " found)", 4)
    end
  end
  return n
end

local function serialize(t)
  -- The common case, an array of strings and numbers (a redis command),
  -- is one table.concat.
  for i = 1, #t do
    local tv = type(t[i])
    if tv ~= "string" and tv ~= "number" then
      local out = {}
      flatten(t, out, 0)
      return concat(out)
    end
  end
  return concat(t)
end

-- sock:send(data) -> bytes | nil, err
function Tcp:send(data)
  local c = self.c
  if not c then return nil, "closed" end
  local td = type(data)
  if td == "table" then
    data = serialize(data)
  elseif td ~= "string" then
    if td ~= "number" and td ~= "boolean" then
      error("bad argument #1 to 'send' (string, number, boolean, nil, or array table expected, got " .. td .. ")", 2)
    end
    data = tostring(data)
  end
  local bytes, err = c:send(data)
  if not bytes then
    drop(self):close()
    return nil, err
  end
  return bytes
end

-- A read error other than a timeout closes the socket, as in ngx_lua.
local function read_failed(self, err, partial)
  if err ~= "timeout" then drop(self):close() end
  return nil, err, partial
end

-- sock:receive([pattern]) -> data | nil, err, partial
function Tcp:receive(pattern)
  local c = self.c
  if not c then return nil, "closed" end
  if type(pattern) == "string" and byte(pattern, 1) ~= 42 then  -- not "*...": a count
    pattern = tonumber(pattern) or pattern
  end
  if pattern == 0 then return "" end
  local data, err, partial = c:receive(pattern)
  if data then return data end
  return read_failed(self, err, partial)
end

-- sock:receiveany(max) -> data | nil, err
function Tcp:receiveany(max)
  local c = self.c
  if not c then return nil, "closed" end
  if type(max) ~= "number" or max <= 0 then
    error("bad argument #1 to 'receiveany' (bad max argument)", 2)
  end
  local data, err, partial = c:receiveany(max)
  if data then return data end
  return read_failed(self, err, partial)
end

-- sock:receiveuntil(pattern [, {inclusive = true}]) -> iterator. The
-- iterator takes ngx_lua's optional size: with it, the data before the
-- delimiter comes in pieces of at most `size` bytes, and then one nil (no
-- error) ends it. coserve reads the whole part first (bounded by the
-- connection's max_frame); the pieces are cut from it.
function Tcp:receiveuntil(pattern, opts)
  if type(pattern) ~= "string" or pattern == "" then
    error("bad argument #1 to 'receiveuntil' (non-empty string expected)", 2)
  end
  local c = self.c
  if not c then return function() return nil, "closed" end end
  local reader = c:receiveuntil(pattern, opts and opts.inclusive and { inclusive = true } or nil)
  local pending, pos = false, 1
  local sock = self
  return function(size)
    if size ~= nil and (type(size) ~= "number" or size < 1) then
      error("bad argument #1 to iterator (bad size)", 2)
    end
    if not pending then
      if not sock.c then return nil, "closed" end
      local data, err, partial = reader()
      if not data then return read_failed(sock, err, partial) end
      if size == nil then return data end
      if data == "" then return nil end
      pending, pos = data, 1
    end
    local n = #pending
    if pos > n then                          -- every piece was returned: the end
      pending = false
      return nil
    end
    local last = size and pos + size - 1 or n
    local piece = sub(pending, pos, last)
    pos = last + 1
    return piece
  end
end

-- sock:sslhandshake(reused_session, server_name, ssl_verify) -> true | nil, err
-- ngx_lua verifies only when ssl_verify is true; so does this adapter.
-- Sessions are not reused: the first value is true either way.
function Tcp:sslhandshake(_, server_name, verify)
  local c = self.c
  if not c then return nil, "closed" end
  local ok, err = c:sslhandshake(server_name or nil, verify == true)
  if not ok then return nil, err end
  return true
end

-- sock:setkeepalive([timeout_ms [, size]]) -> 1 | nil, err
function Tcp:setkeepalive(ms, size)
  local c = self.c
  if not c then return nil, "closed" end
  if ms ~= nil then ms = ms_arg(ms, "setkeepalive") end
  local pool = self.pool
  drop(self)
  local ok, err = c:_pool(true)
  if not ok then
    c:close()
    return nil, err
  end
  local idle, expires = pool.idle, pool.expires
  local limit = pool.backlog and pool.size or size or pool.size
  if #idle >= limit then
    table.remove(expires, 1)
    table.remove(idle, 1):close()
  end
  if ms == nil then ms = 60000 end
  local n = #idle + 1
  idle[n], expires[n] = c, ms == 0 and math.huge or now() + ms / 1000
  return 1
end

-- coserve.close_idle() closes this adapter's idle connections too (its
-- pools are its own; coserve.testing calls close_idle after each case).
local function close_idle()
  for _, pool in pairs(pools) do
    local idle = pool.idle
    for i = 1, #idle do idle[i]:close() end
    pool.idle, pool.expires = {}, {}
  end
end

local coserve_close_idle = coserve.close_idle
coserve.close_idle = function()
  coserve_close_idle()
  close_idle()
end

-- sock:getreusedtimes() -> n | nil, err
function Tcp:getreusedtimes()
  if not self.c then return nil, "closed" end
  return self.reused
end

-- sock:close() -> 1 | nil, "closed"
function Tcp:close()
  if not self.c then return nil, "closed" end
  drop(self):close()
  return 1
end

-- ngx.socket.connect(host, port [, opts]) -> sock | nil, err
local function socket_connect(...)
  local sock = tcp()
  local ok, err = sock:connect(...)
  if not ok then return nil, err end
  return sock
end

---------------------------------------------------------------- udp

local Udp = {}
local udp_mt = { __index = Udp }
guarded_methods(Udp, "ngx.socket.udp:")

local function udp()
  return setmetatable({ u = false, t = false }, udp_mt)
end

-- sock:setpeername(host, port) -> 1 | nil, err
function Udp:setpeername(host, port)
  if type(host) ~= "string" then error("bad argument #1 to 'setpeername' (string expected)", 2) end
  if sub(host, 1, 5) == "unix:" then return nil, "unix datagram sockets are not supported" end
  port = tonumber(port)
  if not port then error("bad argument #2 to 'setpeername' (port expected)", 2) end
  if not coserve.udp then return nil, "coserve.udp is not available" end
  if self.u then self.u:close() end
  local u, err = coserve.udp()
  if not u then return nil, err end
  local ok
  ok, err = u:setpeername(host, port)
  if not ok then
    u:close()
    return nil, err
  end
  self.u = u
  u:settimeout(seconds(self.t, 60))
  return 1
end

function Udp:settimeout(ms)
  self.t = ms_arg(ms, "settimeout")
  if self.u then self.u:settimeout(seconds(self.t, 60)) end
  return true
end

-- sock:send(data) -> 1 | nil, err
function Udp:send(data)
  local u = self.u
  if not u then return nil, "closed" end
  if type(data) == "table" then
    data = serialize(data)
  elseif type(data) ~= "string" then
    data = tostring(data)
  end
  local ok, err = u:send(data)
  if not ok then return nil, err end
  return 1
end

-- sock:receive([size]) -> data | nil, err. As ngx_lua (and recv(2)), a
-- datagram longer than size is cut to size.
function Udp:receive(size)
  local u = self.u
  if not u then return nil, "closed" end
  size = size or 65536
  local data, err = u:receive()
  if not data then return nil, err end
  if #data > size then data = sub(data, 1, size) end
  return data
end

function Udp:close()
  local u = self.u
  if not u then return nil, "closed" end
  self.u = false
  u:close()
  return 1
end

ngx.socket = guarded({ tcp = tcp, stream = tcp, udp = udp, connect = socket_connect },
  "ngx.socket.")

---------------------------------------------------------------- threads

local Thread = {}
local thread_mt = { __index = Thread }

local function pack(...) return { n = select("#", ...), ... } end

local function thread_body(th, fn, ...)
  local res = pack(pcall(fn, ...))
  th.res, th.done = res, true
  if not res[1] then log("error", "coserve.ngx: thread aborted: " .. tostring(res[2])) end
  local waiters = th.waiters
  for i = 1, #waiters do waiters[i]:push(th) end
end

-- ngx.thread.spawn(fn, ...) -> thread: runs fn now, until its first wait.
local function thread_spawn(fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'spawn' (function expected)", 2) end
  local th = setmetatable({ done = false, res = false, waiters = {}, task = false,
                            waited = false, killed = false }, thread_mt)
  th.task = spawn(thread_body, th, fn, ...)
  return th
end

local function thread_result(th)
  th.waited = true
  local res = th.res
  return unpack(res, 1, res.n)
end

-- ngx.thread.wait(th, ...) -> true, results... | false, err: the first of
-- the threads to finish.
local function thread_wait(...)
  local n = select("#", ...)
  if n == 0 then error("bad argument #1 to 'wait' (thread expected)", 2) end
  for i = 1, n do
    local th = select(i, ...)
    if getmetatable(th) ~= thread_mt then error("bad argument #" .. i .. " to 'wait' (thread expected)", 2) end
    if th.waited or th.killed then return false, "already waited or killed" end
    if th.done then return thread_result(th) end
  end
  local ch = coserve.channel(n)
  for i = 1, n do
    local w = select(i, ...).waiters
    w[#w + 1] = ch
  end
  local th, err = ch:pop()
  for i = 1, n do
    local w = select(i, ...).waiters
    for j = #w, 1, -1 do
      if w[j] == ch then table.remove(w, j) end
    end
  end
  if not th then return false, err end
  return thread_result(th)
end

-- ngx.thread.kill(th) -> true | nil, err
local function thread_kill(th)
  if getmetatable(th) ~= thread_mt then error("bad argument #1 to 'kill' (thread expected)", 2) end
  if th.waited or th.killed then return nil, "already waited or killed" end
  if th.done then return nil, "already terminated" end
  th.killed = true
  th.task:cancel()
  return true
end

ngx.thread = guarded({ spawn = thread_spawn, wait = thread_wait, kill = thread_kill }, "ngx.thread.")

---------------------------------------------------------------- timers

local timers_running, timers_pending = 0, 0

-- A timer's wait: its delay, cut short when the process begins to exit
-- (SIGTERM, a reload): then it fires at once with premature = true, as
-- ngx_lua's do. Returns premature: true unless the delay ran out.
local function timer_wait(delay)
  local _, err = wait_exiting(delay)
  return err ~= "timeout" or exiting()
end

local function run_timer(cb, premature, args)
  timers_running = timers_running + 1
  local ok, err = pcall(cb, premature, unpack(args, 1, args.n))
  timers_running = timers_running - 1
  if not ok then log("error", "coserve.ngx: timer callback failed: " .. tostring(err)) end
end

local function check_timer(delay, cb)
  if type(delay) ~= "number" or delay < 0 then
    error("bad argument #1 to 'at' (non-negative number expected)", 3)
  end
  if type(cb) ~= "function" then error("bad argument #2 to 'at' (function expected)", 3) end
end

-- A timer's handle: ngx_lua returns true; this is true too, and can also
-- be canceled (coserve's extension).
local TimerHandle = {}
TimerHandle.__index = TimerHandle
function TimerHandle:cancel()
  self.canceled = true
  self.task:cancel()
  return true
end

-- ngx.timer.at(delay, cb, ...) -> handle | nil, err: cb(premature, ...)
-- runs in a coroutine of its own after delay seconds; premature is true
-- when the process is exiting (or the timer's wait was canceled).
local function timer_at(delay, cb, ...)
  check_timer(delay, cb)
  if delay > 0 and exiting() then return nil, "process exiting" end
  local args = pack(...)
  local h = setmetatable({ canceled = false, task = false }, TimerHandle)
  timers_pending = timers_pending + 1
  h.task = spawn(function()
    local premature = timer_wait(delay)
    timers_pending = timers_pending - 1
    if h.canceled then return end
    run_timer(cb, premature, args)
  end)
  return h
end

-- ngx.timer.every(delay, cb, ...) -> handle | nil, err: cb(false, ...)
-- every delay seconds, each in a coroutine of its own; once the process
-- exits, a last cb(true, ...).
local function timer_every(delay, cb, ...)
  check_timer(delay, cb)
  if delay <= 0 then error("bad argument #1 to 'every' (positive number expected)", 2) end
  if exiting() then return nil, "process exiting" end
  local args = pack(...)
  local h = setmetatable({ canceled = false, task = false }, TimerHandle)
  timers_pending = timers_pending + 1
  h.task = spawn(function()
    local due = now() + delay
    while true do
      local premature = timer_wait(max(0, due - now()))
      if h.canceled then break end
      if premature then
        run_timer(cb, true, args)
        break
      end
      spawn(run_timer, cb, false, args)
      due = due + delay
    end
    timers_pending = timers_pending - 1
  end)
  return h
end

ngx.timer = guarded({ at = timer_at, every = timer_every,
  running_count = function() return timers_running end,
  pending_count = function() return timers_pending end }, "ngx.timer.")

---------------------------------------------------------------- worker

local getpid
do
  pcall(ffi.cdef, "int getpid(void);")
  local ok, f = pcall(function() return ffi.C.getpid end)
  getpid = ok and function() return tonumber(f()) end or function() return 0 end
end

-- The worker count of `coserve -w N` (or `-w auto`): the master puts it
-- in each worker's environment, COSERVE_WORKERS. 1 without workers.
local function count_workers()
  return coserve.worker_id() > 0 and tonumber(os.getenv("COSERVE_WORKERS")) or 1
end

ngx.worker = guarded({
  -- ngx_lua numbers workers from 0; coserve from 1 (0: no workers).
  id = function()
    local id = coserve.worker_id()
    return id > 0 and id - 1 or 0
  end,
  pid = getpid,
  count = count_workers,
  exiting = exiting,
}, "ngx.worker.")

---------------------------------------------------------------- config

local function prefix()
  local pwd = os.getenv("PWD") or "."
  return sub(pwd, -1) == "/" and pwd or pwd .. "/"
end

ngx.config = guarded({
  subsystem = "http",
  debug = false,
  ngx_lua_version = 10023,               -- what the libraries check against (0.10.23)
  nginx_version = 1022001,
  prefix = prefix,
  nginx_configure = function() return "" end,
}, "ngx.config.")

ngx.get_phase = function() return "timer" end

---------------------------------------------------------------- crypto

local digest, hmac = core.digest, core.hmac
ngx.md5 = function(s) return digest("md5", tostring(s), true) end
ngx.md5_bin = function(s) return digest("md5", tostring(s)) end
ngx.sha1_bin = function(s) return digest("sha1", tostring(s)) end
ngx.hmac_sha1 = function(key, s) return hmac("sha1", tostring(key), tostring(s)) end
ngx.crc32_short = function(s) return core.crc32(tostring(s)) end
ngx.crc32_long = ngx.crc32_short

ngx.encode_base64 = function(s, no_padding)
  if type(s) ~= "string" then
    if s == nil then s = "" else s = tostring(s) end
  end
  return core.base64_encode(s, no_padding)
end

ngx.decode_base64 = function(s)
  if type(s) ~= "string" then error("bad argument #1 to 'decode_base64' (string expected)", 2) end
  return core.base64_decode(s)
end

---------------------------------------------------------------- URI

local function hex_escape(c) return format("%%%02X", byte(c)) end

-- ngx.escape_uri(s): every byte but letters, digits and "-._~" escaped
-- (a URI component, ngx_lua's default).
ngx.escape_uri = function(s)
  if type(s) ~= "string" then
    if s == nil then return "" end
    s = tostring(s)
  end
  if not find(s, "[^%w%-%._~]") then return s end
  return (gsub(s, "[^%w%-%._~]", hex_escape))
end

local function hex_unescape(h) return char(tonumber(h, 16)) end

-- ngx.unescape_uri(s): %XX decoded, "+" as a space; a malformed escape is
-- kept as it is.
ngx.unescape_uri = function(s)
  if type(s) ~= "string" then
    if s == nil then return "" end
    s = tostring(s)
  end
  if not find(s, "[%%+]") then return s end
  s = gsub(s, "+", " ")
  return (gsub(s, "%%(%x%x)", hex_unescape))
end

local escape_uri, unescape_uri = ngx.escape_uri, ngx.unescape_uri

-- ngx.encode_args(t): "k=v&k2=v2"; true: the key alone; false: left out;
-- an array: the key once per item.
ngx.encode_args = function(t)
  if type(t) ~= "table" then error("bad argument #1 to 'encode_args' (table expected)", 2) end
  local out, n = {}, 0
  for k, v in pairs(t) do
    if type(k) ~= "string" and type(k) ~= "number" then
      error("bad argument #1 to 'encode_args' (bad key type)", 2)
    end
    local ek = escape_uri(tostring(k))
    local items = type(v) == "table" and v or { v }
    for i = 1, #items do
      local item = items[i]
      if item == true then
        n = n + 1
        out[n] = ek
      elseif item ~= false then
        local ti = type(item)
        if ti ~= "string" and ti ~= "number" then
          error("bad argument #1 to 'encode_args' (bad value type)", 2)
        end
        n = n + 1
        out[n] = ek .. "=" .. escape_uri(tostring(item))
      end
    end
  end
  return concat(out, "&")
end

-- ngx.decode_args(s [, max_args]) -> table: a repeated key gives an array,
-- a key without "=" is true; at most max_args (100; 0: no limit).
ngx.decode_args = function(s, max_args)
  if type(s) ~= "string" then error("bad argument #1 to 'decode_args' (string expected)", 2) end
  max_args = max_args or 100
  local t, count = {}, 0
  for pair in s:gmatch("[^&]+") do
    if max_args > 0 and count >= max_args then break end
    count = count + 1
    local eq = find(pair, "=", 1, true)
    local k, v
    if eq then
      k, v = unescape_uri(sub(pair, 1, eq - 1)), unescape_uri(sub(pair, eq + 1))
    else
      k, v = unescape_uri(pair), true
    end
    if k ~= "" then
      local old = t[k]
      if old == nil then
        t[k] = v
      elseif type(old) == "table" then
        old[#old + 1] = v
      else
        t[k] = { old, v }
      end
    end
  end
  return t
end

ngx.quote_sql_str = not_supported("ngx.quote_sql_str")

---------------------------------------------------------------- ngx.re

-- Regular expressions on PCRE2 through Debian's lua-rex-pcre2 (a binding:
-- no regex engine of ours). Compiled patterns are cached per option string.
local rex, rex_flags
local function load_rex()
  local ok, r = pcall(require, "rex_pcre2")
  if not ok then
    error("coserve.ngx: ngx.re needs the rex_pcre2 module (Debian: apt-get install lua-rex-pcre2)", 3)
  end
  rex, rex_flags = r, r.flags()
end

local option_cache = {}                        -- options string -> compile flags
local regex_cache, regex_cached = {}, 0        -- options -> pattern -> regex

local function compile_flags(opts)
  local cf = option_cache[opts]
  if cf then return cf end
  local F = rex_flags
  cf = 0
  for i = 1, #opts do
    local ch = sub(opts, i, i)
    if ch == "i" then cf = bor(cf, F.CASELESS)
    elseif ch == "x" then cf = bor(cf, F.EXTENDED)
    elseif ch == "s" then cf = bor(cf, F.DOTALL)
    elseif ch == "m" then cf = bor(cf, F.MULTILINE)
    elseif ch == "u" then cf = bor(cf, F.UTF)
    elseif ch == "U" then cf = bor(cf, F.UTF, F.NO_UTF_CHECK)
    elseif ch == "a" then cf = bor(cf, F.ANCHORED)
    elseif ch == "D" then cf = bor(cf, F.DUPNAMES)
    elseif ch == "j" or ch == "o" then       -- PCRE2's JIT; caching: always done here
    elseif ch == "d" or ch == "J" then
      error("coserve.ngx: ngx.re option \"" .. ch .. "\" is not supported", 4)
    else
      error("unknown flag \"" .. ch .. "\" (flags \"" .. opts .. "\")", 4)
    end
  end
  option_cache[opts] = cf
  return cf
end

local function compile(re, opts)
  if not rex then load_rex() end
  if type(re) ~= "string" then error("bad argument #2 (string expected for the regex)", 3) end
  opts = opts or ""
  local by_opts = regex_cache[opts]
  if by_opts then
    local r = by_opts[re]
    if r then return r end
  else
    by_opts = {}
    regex_cache[opts] = by_opts
  end
  local ok, r = pcall(rex.new, re, compile_flags(opts))
  if not ok then return nil, "pcre2_compile() failed: " .. tostring(r) .. " in \"" .. re .. "\"" end
  if regex_cached >= 1024 then                 -- a bound, for patterns built at run time
    regex_cache, regex_cached = { [opts] = by_opts }, 0
  end
  regex_cached = regex_cached + 1
  by_opts[re] = r
  return r
end

local function check_subject(s)
  if type(s) == "string" then return s end
  if type(s) == "number" then return tostring(s) end
  error("bad argument #1 (string expected)", 3)
end

-- ngx.re.match(subject, regex [, options [, ctx [, res]]]) -> captures | nil
-- captures[0] is the whole match, [1..n] the groups (false when a group
-- did not take part), and named groups by name. ctx.pos: where to start;
-- set past the match.
local function re_match(subject, re, opts, ctx, res)
  subject = check_subject(subject)
  local r, err = compile(re, opts)
  if not r then return nil, err end
  local init = ctx and ctx.pos or 1
  local s, e, caps = r:tfind(subject, init)
  if not s then return nil end
  if ctx then ctx.pos = e + 1 end
  if res then
    for k, v in pairs(caps) do res[k] = v end
    caps = res
  end
  caps[0] = sub(subject, s, e)
  return caps
end

-- ngx.re.find(subject, regex [, options [, ctx [, nth]]]) -> from, to | nil
local function re_find(subject, re, opts, ctx, nth)
  subject = check_subject(subject)
  local r, err = compile(re, opts)
  if not r then return nil, nil, err end
  local init = ctx and ctx.pos or 1
  local s, e, offs = r:exec(subject, init)
  if not s then return nil end
  if ctx then ctx.pos = e + 1 end
  if nth and nth > 0 then
    s, e = offs[2 * nth - 1], offs[2 * nth]
    if not s then return nil end
  end
  return s, e
end

-- ngx.re.gmatch(subject, regex [, options]) -> iterator of captures tables.
-- After an empty match, the next one must not be empty at the same place
-- (as Perl and ngx_lua).
local function re_gmatch(subject, re, opts)
  subject = check_subject(subject)
  local r, err = compile(re, opts)
  if not r then return nil, err end
  local pos, ef, len, done = 1, 0, #subject, false
  local retry = bor(rex_flags.NOTEMPTY_ATSTART, rex_flags.ANCHORED)
  return function()
    while not done do
      if pos > len + 1 then
        done = true
        return nil
      end
      local s, e, caps = r:tfind(subject, pos, ef)
      if s then
        caps[0] = sub(subject, s, e)
        pos = e + 1
        ef = e < s and retry or 0
        return caps
      end
      if ef == 0 then
        done = true
        return nil
      end
      pos, ef = pos + 1, 0                    -- nothing non-empty here: one byte on
    end
    return nil
  end
end

-- Replacement templates: "$0", "$1", "${1}", "${name}", "$$".
local template_cache = {}

local function compile_template(t)
  local parts = template_cache[t]
  if parts then return parts end
  parts = {}
  local n, i, len = 0, 1, #t
  while i <= len do
    local d = find(t, "$", i, true)
    if not d then
      n = n + 1
      parts[n] = sub(t, i)
      break
    end
    if d > i then
      n = n + 1
      parts[n] = sub(t, i, d - 1)
    end
    local nxt = sub(t, d + 1, d + 1)
    if nxt == "$" then
      n = n + 1
      parts[n] = "$"
      i = d + 2
    elseif find(nxt, "%d") then
      local digits = t:match("^%d+", d + 1)
      n = n + 1
      parts[n] = tonumber(digits)
      i = d + 1 + #digits
    elseif nxt == "{" then
      local close = find(t, "}", d + 2, true)
      if not close then return nil, "failed to compile the replacement template" end
      local name = sub(t, d + 2, close - 1)
      if not find(name, "^[%w_]+$") then return nil, "failed to compile the replacement template" end
      n = n + 1
      parts[n] = tonumber(name) or { name }
      i = close + 1
    else
      return nil, "failed to compile the replacement template"
    end
  end
  template_cache[t] = parts
  return parts
end

local function expand(parts, caps, out, n)
  for i = 1, #parts do
    local p = parts[i]
    local tp = type(p)
    local v
    if tp == "string" then
      v = p
    elseif tp == "number" then
      v = caps[p]
    else
      v = caps[p[1]]
    end
    if v then
      n = n + 1
      out[n] = v
    end
  end
  return n
end

local function substitute(subject, re, repl, opts, global)
  subject = check_subject(subject)
  local r, err = compile(re, opts)
  if not r then return nil, nil, err end
  local parts
  local tr = type(repl)
  if tr == "string" or tr == "number" then
    parts, err = compile_template(tostring(repl))
    if not parts then return nil, nil, err end
  elseif tr ~= "function" then
    error("bad argument #3 (string or function expected)", 3)
  end
  local retry = bor(rex_flags.NOTEMPTY_ATSTART, rex_flags.ANCHORED)
  local out, n, count = {}, 0, 0
  local pos, ef, len = 1, 0, #subject
  while pos <= len + 1 do
    local s, e, caps = r:tfind(subject, pos, ef)
    if not s then
      if ef == 0 then break end
      -- No non-empty match where the empty one was: keep one byte, go on.
      if pos <= len then
        n = n + 1
        out[n] = sub(subject, pos, pos)
      end
      pos, ef = pos + 1, 0
    else
      if s > pos then
        n = n + 1
        out[n] = sub(subject, pos, s - 1)
      end
      caps[0] = sub(subject, s, e)
      if parts then
        n = expand(parts, caps, out, n)
      else
        local v = repl(caps)
        if v ~= nil then
          n = n + 1
          out[n] = tostring(v)
        end
      end
      count = count + 1
      pos = e + 1
      ef = e < s and retry or 0
      if not global then break end
    end
  end
  if count == 0 then return subject, 0 end
  if pos <= len then
    n = n + 1
    out[n] = sub(subject, pos)
  end
  return concat(out, "", 1, n), count
end

ngx.re = guarded({
  match = re_match,
  find = re_find,
  gmatch = re_gmatch,
  sub = function(subject, re, repl, opts) return substitute(subject, re, repl, opts, false) end,
  gsub = function(subject, re, repl, opts) return substitute(subject, re, repl, opts, true) end,
}, "ngx.re.")

---------------------------------------------------------------- shared dicts

-- ngx.shared.NAME: a dictionary of this process only (coserve workers do
-- not share memory). It exists from its first use: there is no
-- lua_shared_dict to declare it.
local Dict = {}
local dict_mt = { __index = Dict }
guarded_methods(Dict, "ngx.shared.DICT:")

local function check_key(key)
  if type(key) == "number" then key = tostring(key) end
  if type(key) ~= "string" then return nil, "bad key type" end
  if key == "" then return nil, "empty key" end
  if #key > 65535 then return nil, "key too long" end
  return key
end

local function check_value(v)
  local tv = type(v)
  return tv == "string" or tv == "number" or tv == "boolean" or v == nil
end

local function expiry(exptime)
  if exptime == nil or exptime == 0 then return 0 end
  if type(exptime) ~= "number" or exptime < 0 then error("bad \"exptime\" argument", 3) end
  return now() + exptime
end

-- The live value of key, or nil (an expired one is removed).
local function live(d, key)
  local v = d.values[key]
  if v == nil then return nil end
  local e = d.expires[key]
  if e ~= 0 and e <= now() then
    d.values[key], d.expires[key], d.flags[key] = nil, nil, nil
    return nil
  end
  return v
end

function Dict:get(key)
  local err
  key, err = check_key(key)
  if not key then return nil, err end
  local v = live(self, key)
  if v == nil then return nil end
  local f = self.flags[key]
  if f ~= 0 then return v, f end
  return v
end

function Dict:get_stale(key)
  local err
  key, err = check_key(key)
  if not key then return nil, err end
  local v = self.values[key]
  if v == nil then return nil end
  local e = self.expires[key]
  local f = self.flags[key]
  return v, f ~= 0 and f or nil, e ~= 0 and e <= now()
end

local function store(d, key, value, exptime, flags)
  if value == nil then
    d.values[key], d.expires[key], d.flags[key] = nil, nil, nil
  else
    d.values[key], d.expires[key], d.flags[key] = value, expiry(exptime), flags or 0
  end
  return true, nil, false
end

function Dict:set(key, value, exptime, flags)
  local err
  key, err = check_key(key)
  if not key then return false, err, false end
  if not check_value(value) then return false, "bad value type", false end
  return store(self, key, value, exptime, flags)
end
Dict.safe_set = Dict.set

function Dict:add(key, value, exptime, flags)
  local err
  key, err = check_key(key)
  if not key then return false, err, false end
  if not check_value(value) then return false, "bad value type", false end
  if live(self, key) ~= nil then return false, "exists", false end
  return store(self, key, value, exptime, flags)
end
Dict.safe_add = Dict.add

function Dict:replace(key, value, exptime, flags)
  local err
  key, err = check_key(key)
  if not key then return false, err, false end
  if not check_value(value) then return false, "bad value type", false end
  if live(self, key) == nil then return false, "not found", false end
  return store(self, key, value, exptime, flags)
end

function Dict:delete(key)
  local err
  key, err = check_key(key)
  if not key then return false, err end
  store(self, key, nil)
  return true
end

-- dict:incr(key, value [, init [, init_ttl]]) -> new value | nil, err
function Dict:incr(key, value, init, init_ttl)
  local err
  key, err = check_key(key)
  if not key then return nil, err end
  if type(value) ~= "number" then return nil, "value not a number" end
  local v = live(self, key)
  if v == nil then
    if init == nil then return nil, "not found" end
    if type(init) ~= "number" then return nil, "init not a number" end
    v = init + value
    store(self, key, v, init_ttl)
    return v, nil, false
  end
  if type(v) ~= "number" then return nil, "not a number" end
  v = v + value
  self.values[key] = v
  return v, nil
end

-- dict:ttl(key) -> seconds left (0: never expires) | nil, "not found"
function Dict:ttl(key)
  local err
  key, err = check_key(key)
  if not key then return nil, err end
  if live(self, key) == nil then return nil, "not found" end
  local e = self.expires[key]
  if e == 0 then return 0 end
  return e - now()
end

-- dict:expire(key, exptime) -> true | nil, "not found"
function Dict:expire(key, exptime)
  local err
  key, err = check_key(key)
  if not key then return nil, err end
  if live(self, key) == nil then return nil, "not found" end
  self.expires[key] = expiry(exptime)
  return true
end

function Dict:flush_all()
  self.values, self.expires, self.flags = {}, {}, {}
end

-- dict:flush_expired([max_count]) -> number removed
function Dict:flush_expired(max_count)
  local t, removed = now(), 0
  for key, e in pairs(self.expires) do
    if e ~= 0 and e <= t then
      self.values[key], self.expires[key], self.flags[key] = nil, nil, nil
      removed = removed + 1
      if max_count and max_count > 0 and removed >= max_count then break end
    end
  end
  return removed
end

-- dict:get_keys([max_count]) -> the live keys, at most max_count (1024;
-- 0: all).
function Dict:get_keys(max_count)
  max_count = max_count or 1024
  local keys, n, t = {}, 0, now()
  for key in pairs(self.values) do
    local e = self.expires[key]
    if e == 0 or e > t then
      n = n + 1
      keys[n] = key
      if max_count > 0 and n >= max_count then break end
    end
  end
  return keys
end

ngx.shared = setmetatable({}, { __index = function(t, name)
  if type(name) ~= "string" then return nil end
  local d = setmetatable({ name = name, values = {}, expires = {}, flags = {} }, dict_mt)
  rawset(t, name, d)
  return d
end })

---------------------------------------------------------------- the rest

-- The request API and the rest of ngx_lua have no meaning without nginx:
-- every other name is a stand-in that raises when used.
-- The fields that are values, not functions or tables, raise when read.
local value_fields = { headers_sent = true, status = true, is_subrequest = true }
setmetatable(ngx, { __index = function(_, k)
  if type(k) ~= "string" then return nil end
  if value_fields[k] then error("coserve.ngx: ngx." .. k .. " is not supported", 2) end
  return not_supported("ngx." .. k)
end })

-- install(): also sets the global `ngx` that ngx_lua libraries read when
-- they are loaded. Returns the table.
rawset(ngx, "install", function()
  rawset(_G, "ngx", ngx)
  return ngx
end)

return ngx
