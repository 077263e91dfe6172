-- coserve: coroutine-style servers for LuaJIT on libuv.
--
-- The C core (coserve.core) owns the loop, tasks, connections and
-- servers. This module adds what composes over park/wake: channels, wait
-- groups, semaphores, timers, and the host-name handling of clients and
-- servers.
local core = require "coserve.core"

local park, wake, current = core.park, core.wake, core.current
local spawn, sleep = core.spawn, core.sleep
local setmetatable, getmetatable, newproxy = setmetatable, getmetatable, newproxy
local type, error = type, error
local tremove = table.remove

local M = {
  version = core.version,
  libuv_version = core.libuv_version,
  spawn = spawn,
  sleep = sleep,
  now = core.now,
  exiting = core.exiting,
  wait_exiting = core.wait_exiting,
  worker_id = core.worker_id,
  stats = core.stats,
  log = core.log,
  log_level = core.log_level,
  shutdown = core.shutdown,
  poll = core.poll,
}

local function run_results(ok, ...)
  if not ok then error((...), 0) end
  return ...
end

-- coserve.run(fn, ...) -> fn's results; raises fn's error (with traceback).
function M.run(fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'run' (function expected)", 2) end
  return run_results(core.run(fn, ...))
end

-- A FIFO of parked tasks. A waiter that timed out removes itself; one
-- that timed out but has not run yet is skipped because wake() says no.
local function unlink(list, item)
  for i = 1, #list do
    if list[i] == item then
      tremove(list, i)
      return
    end
  end
end

local function wait_in(list, entry, timeout)
  list[#list + 1] = entry
  local v, err = park(timeout)
  if v == nil then
    unlink(list, entry)
    return nil, err
  end
  return v
end

local function current_task(fname)
  local t = current()
  if not t then error(fname .. ": not inside a coserve coroutine", 3) end
  return t
end

---------------------------------------------------------------- channel

local Channel = {}
Channel.__index = Channel

local function ch_len(ch) return ch.tail - ch.head + 1 end

-- coserve.channel([capacity]): capacity 0 (the default) is a rendezvous.
-- A channel is a userdata proxy so that #ch works on LuaJIT, whose tables
-- ignore __len; its fields live in a table behind the proxy.
function M.channel(capacity)
  capacity = capacity or 0
  if type(capacity) ~= "number" or capacity < 0 then
    error("bad argument #1 to 'channel' (non-negative number expected)", 2)
  end
  local state = setmetatable({ cap = capacity, items = {}, head = 1, tail = 0,
                               pushers = {}, poppers = {}, closed = false }, Channel)
  local ch = newproxy(true)
  local mt = getmetatable(ch)
  mt.__index, mt.__newindex, mt.__len = state, state, ch_len
  mt.__tostring = function() return "coserve.channel" end
  return ch
end

local function ch_shift(ch)
  local v = ch.items[ch.head]
  ch.items[ch.head] = nil
  ch.head = ch.head + 1
  return v
end

local function ch_append(ch, v)
  ch.tail = ch.tail + 1
  ch.items[ch.tail] = v
end

-- ch:push(v [, timeout]) -> true | nil, "closed" | nil, "timeout" | nil, "canceled"
function Channel:push(v, timeout)
  if v == nil then error("bad argument #1 to 'push' (value expected)", 2) end
  if self.closed then return nil, "closed" end
  local poppers = self.poppers
  while #poppers > 0 do
    if wake(tremove(poppers, 1), v) then return true end
  end
  if ch_len(self) < self.cap then
    ch_append(self, v)
    return true
  end
  local me = { task = current_task("push"), value = v }
  return wait_in(self.pushers, me, timeout)
end

-- Takes a parked pusher's value: into the buffer, or straight to us.
local function ch_take_pusher(ch)
  local pushers = ch.pushers
  while #pushers > 0 do
    local p = tremove(pushers, 1)
    if wake(p.task, true) then return true, p.value end
  end
  return false
end

-- ch:pop([timeout]) -> v | nil, "closed" (closed and drained) | nil, "timeout"
function Channel:pop(timeout)
  if self.tail >= self.head then
    local v = ch_shift(self)
    local ok, pv = ch_take_pusher(self)
    if ok then ch_append(self, pv) end
    return v
  end
  local ok, pv = ch_take_pusher(self)
  if ok then return pv end
  if self.closed then return nil, "closed" end
  return wait_in(self.poppers, current_task("pop"), timeout)
end

-- ch:close(): parked poppers get nil, "closed"; so do parked pushers.
function Channel:close()
  if self.closed then return end
  self.closed = true
  local poppers, pushers = self.poppers, self.pushers
  self.poppers, self.pushers = {}, {}
  for i = 1, #poppers do wake(poppers[i], nil, "closed") end
  for i = 1, #pushers do wake(pushers[i].task, nil, "closed") end
end

---------------------------------------------------------------- waitgroup

local WaitGroup = {}
WaitGroup.__index = WaitGroup

function M.waitgroup()
  return setmetatable({ n = 0, waiters = {} }, WaitGroup)
end

local function wg_add(wg, n, level)
  wg.n = wg.n + n
  if wg.n < 0 then
    wg.n = 0
    error("waitgroup: more done() than add()", level)
  end
  if wg.n == 0 then
    local waiters = wg.waiters
    wg.waiters = {}
    for i = 1, #waiters do wake(waiters[i], true) end
  end
end

function WaitGroup:add(n) wg_add(self, n or 1, 3) end

function WaitGroup:done() wg_add(self, -1, 3) end


-- wg:wait([timeout]) -> true | nil, "timeout"
function WaitGroup:wait(timeout)
  if self.n == 0 then return true end
  return wait_in(self.waiters, current_task("wait"), timeout)
end

---------------------------------------------------------------- semaphore

local Semaphore = {}
Semaphore.__index = Semaphore

function M.semaphore(n)
  return setmetatable({ n = n or 0, waiters = {} }, Semaphore)
end

-- sem:wait([timeout]) -> true | nil, err
function Semaphore:wait(timeout)
  if self.n > 0 and #self.waiters == 0 then
    self.n = self.n - 1
    return true
  end
  return wait_in(self.waiters, current_task("wait"), timeout)
end

function Semaphore:post(n)
  for _ = 1, n or 1 do
    local handed = false
    local waiters = self.waiters
    while #waiters > 0 and not handed do
      handed = wake(tremove(waiters, 1), true)
    end
    if not handed then self.n = self.n + 1 end
  end
end

function Semaphore:count() return self.n end

---------------------------------------------------------------- timers

local Timer = {}
Timer.__index = Timer

-- Once canceled, a timer starts nothing more, even when its wait had
-- already ended and it was about to.
function Timer:cancel()
  self.canceled = true
  self.task:cancel()
end

-- coserve.after(s, fn): fn runs in a coroutine of its own after s seconds.
function M.after(s, fn)
  local timer = setmetatable({ canceled = false }, Timer)
  timer.task = spawn(function()
    if sleep(s) and not timer.canceled then spawn(fn) end
  end)
  return timer
end

-- coserve.every(s, fn): fn runs in a coroutine of its own every s seconds;
-- a slow fn does not delay the next tick.
function M.every(s, fn)
  if s <= 0 then error("bad argument #1 to 'every' (positive interval expected)", 2) end
  local timer = setmetatable({ canceled = false }, Timer)
  timer.task = spawn(function()
    local due = core.now() + s
    while sleep(due - core.now()) and not timer.canceled do
      spawn(fn)
      due = due + s
    end
  end)
  return timer
end

---------------------------------------------------------------- network

local function is_literal(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true)
end

-- coserve.resolve(host) -> { "addr", ... } | nil, err
function M.resolve(host, family)
  if type(host) ~= "string" then error("bad argument #1 to 'resolve' (string expected)", 2) end
  if is_literal(host) then return { host } end
  return core.resolve(host, family)
end

-- Keep-alive pools, as OpenResty's: conn:setkeepalive() parks an idle
-- client connection under its (host, port); the next coserve.connect to
-- the same place takes it back. Pooled connections do not keep the
-- process alive, and one that its peer closes (or writes to) while pooled
-- is dropped at once.
local pools = {}                               -- "host:port" -> { {conn, expires}, ... }
local pool_keys = setmetatable({}, { __mode = "k" }) -- conn -> "host:port"
local conn_methods = core.conn_methods

local function pool_take(key)
  local pool = pools[key]
  while pool and #pool > 0 do
    local entry = tremove(pool)                -- the most recently used first
    if entry.expires > core.now() and entry.conn:_pool(false) then
      return entry.conn
    end
    entry.conn:close()
  end
end

-- conn:setkeepalive([idle_timeout [, pool_size]]) -> true | nil, err
-- idle_timeout: seconds it may wait in the pool (default 60; 0 = no limit);
-- pool_size: connections kept per (host, port) (default 30). The
-- connection must not be used after this call.
function conn_methods:setkeepalive(idle_timeout, pool_size)
  local key = pool_keys[self]
  if not key then
    self:close()
    return nil, "not a pooled client connection"
  end
  local ok, err = self:_pool(true)
  if not ok then
    self:close()
    return nil, err
  end
  idle_timeout = idle_timeout or 60
  local pool = pools[key] or {}
  pools[key] = pool
  if #pool >= (pool_size or 30) then tremove(pool, 1).conn:close() end
  pool[#pool + 1] = { conn = self,
    expires = idle_timeout > 0 and core.now() + idle_timeout or math.huge }
  return true
end

-- coserve.close_idle(): closes every pooled connection (Go's
-- CloseIdleConnections): before a shutdown, or at the end of a test.
function M.close_idle()
  local all = pools
  pools = {}
  for _, pool in pairs(all) do
    for _, entry in ipairs(pool) do entry.conn:close() end
  end
end

---------------------------------------------------------------- UDP

-- coserve.udp() -> a datagram socket (SPEC §4; docs/api.md). A host name
-- given to bind, setpeername or sendto is resolved first (its first
-- address); data may be a string or an array of strings.
local udp_methods = core.udp_methods

local function udp_address(host)
  if type(host) ~= "string" or is_literal(host) then return host end
  local addrs, err = M.resolve(host)
  if not addrs then return nil, err end
  if #addrs == 0 then return nil, "host not found" end
  return addrs[1]
end

for _, name in ipairs({ "bind", "setpeername" }) do
  local raw = udp_methods[name]
  udp_methods[name] = function(self, host, port)
    local ip, err = udp_address(host)
    if not ip then return nil, err end
    return raw(self, ip, port)
  end
end

local raw_sendto, raw_send = udp_methods.sendto, udp_methods.send

function udp_methods:sendto(data, host, port)
  if type(data) == "table" then data = table.concat(data) end
  local ip, err = udp_address(host)
  if not ip then return nil, err end
  return raw_sendto(self, data, ip, port)
end

function udp_methods:send(data)
  if type(data) == "table" then data = table.concat(data) end
  return raw_send(self, data)
end

M.udp = core.udp

---------------------------------------------------------------- TLS

-- Client contexts are made once per set of options: loading the system's
-- CA certificates is the expensive part of a context.
local client_contexts = {}

local function context_key(tls)
  return table.concat({ tostring(tls.verify ~= false), tls.ca or "", tls.cert or "",
    tls.key or "", type(tls.alpn) == "table" and table.concat(tls.alpn, ",") or tls.alpn or "",
    tls.ciphers or "", type(tls.protocols) == "table" and table.concat(tls.protocols, ",")
      or tls.protocols or "" }, "\0")
end

local function client_context(tls)
  local key = context_key(tls)
  local ctx = client_contexts[key]
  if ctx then return ctx end
  local err
  ctx, err = core.tls_context(tls, false)
  if ctx then client_contexts[key] = ctx end
  return ctx, err
end

-- conn:sslhandshake([server_name [, verify]]) -> true | nil, err
-- OpenResty's upgrade of a connected socket to TLS. verify (default true)
-- checks the certificate against the system's CAs and server_name (or
-- the address connected to). A second call returns true at once.
function conn_methods:sslhandshake(server_name, verify)
  if server_name ~= nil and type(server_name) ~= "string" then
    error("bad argument #1 to 'sslhandshake' (string expected)", 2)
  end
  local tls = { verify = verify }
  local ctx, err = client_context(tls)
  if not ctx then return nil, err end
  local key = pool_keys[self]
  local ok
  ok, err = self:_tls_handshake(ctx, server_name or (key and key:match("^(.*):%d+$")),
    verify ~= false)
  if ok and key and not key:find("|tls", 1, true) then
    -- Pooled apart from plaintext ones, as coserve.connect's tls option does.
    pool_keys[self] = key .. "|tls:" .. (server_name or "") .. "\0" .. context_key(tls)
  end
  return ok, err
end

-- coserve.connect(host, port [, opts]) -> conn | nil, err
-- coserve.connect("unix:/path" [, opts])
-- opts.tls = true | { server_name =, verify = true, ca =, cert =, key =,
-- alpn =, protocols =, ciphers = }: the connection is TLS once returned.
function M.connect(host, port, opts)
  if type(host) ~= "string" then error("bad argument #1 to 'connect' (string expected)", 2) end
  local key, conn, err
  if host:sub(1, 5) == "unix:" then
    opts = type(port) == "table" and port or opts or {}
    key = host
    if opts.tls then return nil, "tls: not over unix sockets" end
    conn = pool_take(key)
    if conn then return conn end
    conn, err = core.connect(host, nil, opts.timeout, opts.max_frame, opts.send_buffer)
  else
    opts = opts or {}
    if type(port) ~= "number" then error("bad argument #2 to 'connect' (port expected)", 2) end
    key = host .. ":" .. port
    local tls = opts.tls
    if tls then
      if tls == true then tls = {} end
      if type(tls) ~= "table" then error("coserve.connect: option 'tls' must be true or a table", 2) end
      -- Only a connection made with the same checks may be reused.
      key = key .. "|tls:" .. (tls.server_name or host) .. "\0" .. context_key(tls)
    end
    conn = pool_take(key)
    if conn then return conn end
    local addrs
    addrs, err = M.resolve(host, opts.family)
    if not addrs then return nil, err end
    if #addrs == 0 then return nil, "host not found" end
    for i = 1, #addrs do
      conn, err = core.connect(addrs[i], port, opts.timeout, opts.max_frame, opts.send_buffer)
      if conn or err == "canceled" then break end
    end
  end
  if not conn then return nil, err end
  if opts.tls then
    local tls = opts.tls == true and {} or opts.tls
    local ctx
    ctx, err = client_context(tls)
    local ok
    if ctx then
      ok, err = conn:_tls_handshake(ctx, tls.server_name or host, tls.verify ~= false, opts.timeout)
    end
    if not ok then
      conn:close()
      return nil, err
    end
  end
  pool_keys[conn] = key
  return conn
end

-- coserve.server(opts): a host name is resolved once. Inside a coroutine
-- that happens here, so that start() binds before its first wait: the port
-- is known as soon as a task running start() has begun. Outside one (or
-- when that lookup failed), start() resolves it.
local server_methods = core.server_methods
local raw_start = server_methods.start

local function resolve_host(server)
  local addrs, err = core.resolve(server.host)
  if not addrs then return nil, err end
  if #addrs == 0 then return nil, "host not found" end
  server:_sethost(addrs[1])
  return true
end

local function needs_resolving(server)
  return not server.is_unix and not is_literal(server.host)
end

-- A TLS server's options; its context is made by each start(), so that a
-- reload (a new process) or a restart reads renewed certificates.
local tls_options = setmetatable({}, { __mode = "k" })

function server_methods.start(self)
  if needs_resolving(self) then
    local ok, err = resolve_host(self)
    if not ok then return nil, err end
  end
  local tls = tls_options[self]
  if tls then
    local ctx, err = core.tls_context(tls, true)
    if not ctx then return nil, err end
    self:_settls(ctx)
  end
  return raw_start(self)
end

-- On a TLS server, the handshake runs in the connection's own task before
-- the handler (never in the accept path): a silent or plaintext client
-- costs its own connection only, closed when the handshake fails or
-- handshake_timeout passes.
local raw_handle = server_methods.handle

function server_methods.handle(self, fn)
  local tls = tls_options[self]
  if tls and type(fn) == "function" then
    local handler, timeout = fn, tls.handshake_timeout or 10
    fn = function(conn)
      if conn:_tls_handshake(nil, nil, nil, timeout) then return handler(conn) end
    end
  end
  return raw_handle(self, fn)
end

function M.server(opts)
  local tls = type(opts) == "table" and opts.tls
  if tls then
    if type(tls) ~= "table" then error("coserve.server: option 'tls' must be a table", 2) end
    local rest = {}
    for k, v in pairs(opts) do
      if k ~= "tls" then rest[k] = v end
    end
    opts = rest
  end
  local server = core.server(opts)
  tls_options[server] = tls or nil
  if needs_resolving(server) and current() then resolve_host(server) end
  return server
end

return M
