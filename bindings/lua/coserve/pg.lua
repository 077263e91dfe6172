-- coserve.pg: PostgreSQL from coroutines, on libpq's asynchronous API
-- (SPEC §11; docs/pg.md). The C side (bindings/lua/lpg.c) is a set of
-- steps that never block: start a connection and poll it, send a query,
-- flush, consume input, take a result, cancel on libuv's thread pool. The
-- loops around them are here, and every wait parks only the calling
-- coroutine (conn:wait is cs_poll on libpq's socket).
--
--   local pg = require "coserve.pg"
--   local db = assert(pg.connect("host=127.0.0.1 dbname=app user=app"))
--   local rows, info = db:query("select id, name from users where id = $1", 42)
--   local pool = pg.pool{ conninfo = "...", size = 10 }
--   local rows, err, sqlstate = pool:query("select now()")
--
-- Ownership: a db owns its libpq connection (closed by db:close() or the
-- garbage collector). One query runs on a connection at a time: a second
-- coroutine's query waits for the first. A query whose coroutine is
-- canceled (or whose query_timeout passes) is canceled on the server by a
-- short-lived task of its own, which then gives the connection back (or
-- closes it if it did not come back clean); until then it stays busy.
local coserve = require "coserve"
local core = require "coserve.core"

local C = core.pg
local now, spawn, park, wake, current = core.now, core.spawn, core.park, core.wake, core.current
local setmetatable, type, error, select, pcall = setmetatable, type, error, select, pcall
local tremove, tconcat = table.remove, table.concat

local M = { null = C.null, libpq_version = C.libpq_version }

-- Seconds left before deadline, for a wait; -1 (none) without one.
local function left(deadline)
  if not deadline then return -1 end
  local d = deadline - now()
  return d > 0 and d or 0
end

-- Waits for libpq's socket. A socket in error (POLLERR, which libuv
-- reports as "closed") counts as ready: the next libpq call says what the
-- error is ("connection refused", "server closed the connection").
local function wait(conn, events, deadline)
  local ev, err = conn:wait(events, left(deadline))
  if ev or err ~= "closed" then return ev, err end
  return "rw"
end

---------------------------------------------------------------- connect

local function is_ip(h)
  return h:match("^%d+%.%d+%.%d+%.%d+$") or h:find(":", 1, true)
end

-- libpq would resolve a host name with a blocking getaddrinfo, so names
-- are resolved here (coserve.resolve, on libuv's thread pool) and handed
-- to libpq as hostaddr, host staying for SSL and authentication. A host
-- that is a directory (a Unix socket) or an IP address needs no lookup.
-- Only a name's first address is tried.
local function connect_params(conninfo)
  local params, err = C.parse(conninfo)
  if not params then return nil, err end
  local host = params.host or os.getenv("PGHOST")
  if params.hostaddr or os.getenv("PGHOSTADDR") or not host or host == "" then
    return params
  end
  local addrs, any = {}, false
  for h in (host .. ","):gmatch("([^,]*),") do
    local first = h:sub(1, 1)
    if h == "" or first == "/" or first == "@" then
      addrs[#addrs + 1] = ""
    elseif is_ip(h) then
      addrs[#addrs + 1], any = h, true
    else
      local list, rerr = coserve.resolve(h)
      if not list then return nil, ("cannot resolve %s: %s"):format(h, rerr) end
      addrs[#addrs + 1], any = list[1], true
    end
  end
  if any then
    params.host = host
    params.hostaddr = tconcat(addrs, ",")
  end
  return params
end

local DB = {}
DB.__index = DB

-- pg.connect(conninfo [, { timeout = 10, query_timeout = none,
--                           statement_cache = 256 }]) -> db | nil, err
-- conninfo: "key=value ..." or a postgresql:// URI, as libpq takes them.
function M.connect(conninfo, opts)
  if type(conninfo) ~= "string" then
    error("bad argument #1 to 'connect' (string expected)", 2)
  end
  local timeout = opts and opts.timeout or 10
  local cache = opts and opts.statement_cache
  if cache == nil then cache = 256 end
  if type(cache) ~= "number" or cache < 0 then
    error("bad argument #2 to 'connect' (statement_cache: number >= 0 expected)", 2)
  end
  local deadline = timeout >= 0 and now() + timeout or nil
  local params, err = connect_params(conninfo)
  if not params then return nil, err end
  local conn, cerr = C.connect_start(params)
  if not conn then return nil, cerr end
  local want = "w" -- libpq: wait for writable before the first step
  while true do
    local ev, werr = wait(conn, want, deadline)
    if not ev then
      conn:finish()
      return nil, werr == "timeout" and "connect timeout" or werr
    end
    local st, perr = conn:connect_poll()
    if not st then
      conn:finish()
      return nil, perr
    end
    if st == "ok" then break end
    want = st
  end
  return setmetatable({
    conn = conn,
    lock = coserve.semaphore(1),
    busy = false,     -- a coroutine holds the lock (a query or wait_notify)
    cleaning = false, -- an interrupted query is being canceled and drained
    closed = false,
    query_timeout = opts and opts.query_timeout,
    -- Statements with parameters, prepared once per connection: sql -> name.
    stmts = {},
    nstmts = 0,
    max_stmts = cache,
    stmt_seq = 0,     -- names are never reused (an interrupted prepare may have landed)
    stale = {},       -- names of stale statements still on the server
  }, DB)
end

---------------------------------------------------------------- query

-- Gives the connection back after a query: the next waiter's turn. A
-- connection that db:close() shut down meanwhile is closed now.
local function release(db)
  db.busy = false
  if db.closed or db.broken then
    db.closed = true
    db.conn:finish()
  end
  db.lock:post()
  local after = db.after_cleanup
  if after then
    db.after_cleanup = nil
    after(db)
  end
end

-- Runs in a task of its own when a query was interrupted (its coroutine
-- canceled, or query_timeout): asks the server to cancel the query, reads
-- and drops what is left of it, and releases the connection, closed if it
-- did not come back to a clean state within 5 s.
local function cleanup(db)
  local conn = db.conn
  local deadline = now() + 5
  local ok = not db.closed and conn:cancel(5)
  while ok do
    while ok and conn:busy() do
      ok = wait(conn, "r", deadline) and conn:consume() ~= nil
    end
    if not ok then break end
    local r, _, _, broken = conn:result()
    if r == false then break end
    -- Each result comes from the server: a bounded number. A connection
    -- libpq cannot read from any more ends it.
    ok = not broken and conn:status() == "ok"
  end
  if not ok or conn:status() ~= "ok" then
    db.closed = true
  end
  db.cleaning = false
  release(db)
end

local function interrupted(db, err)
  db.cleaning = true
  spawn(cleanup, db) -- runs until its first wait, then this coroutine goes on
  return nil, err
end

-- Sends and reads one query: rows, info | nil, err, sqlstate. Only a
-- failed wait (timeout, canceled) leaves the query running on the server.
local function exec(db, deadline, ok, err, ...)
  if not ok then
    release(db)
    error(err, 3) -- a parameter of the wrong type: the caller's bug
  end
  if not err then return nil, select(1, ...) end
  local conn = db.conn
  -- A large query may not fit the socket buffer: flush waits for
  -- writable, and reads meanwhile so that the server is never stuck
  -- writing to us while we write to it.
  while true do
    local done, ferr = conn:flush()
    if done == nil then return nil, ferr end
    if done then break end
    local ev, werr = wait(conn, "rw", deadline)
    if not ev then return interrupted(db, werr) end
    if ev ~= "w" and conn:consume() == nil then return nil, "closed" end
  end
  -- Every result is read up to PQgetResult's NULL; the last one is
  -- returned, or the first error.
  local rows, info, e1, e2
  while true do
    while true do
      local busy, berr = conn:busy()
      if busy == nil then return nil, e1 or berr, e2 end
      if not busy then break end
      local ev, werr = wait(conn, "r", deadline)
      if not ev then return interrupted(db, werr) end
      local _, cerr = conn:consume()
      if cerr then return nil, e1 or cerr, e2 end
    end
    local r, i, s, broken = conn:result()
    if r == false then break end
    if broken then
      db.broken = true
      return nil, e1 or i, e2
    end
    if e1 == nil then
      if r then
        rows, info = r, i
      else
        e1, e2 = i, s
      end
    end
  end
  if e1 then return nil, e1, e2 end
  return rows, info
end

local function finish_query(db, ...)
  local closed = db.closed -- by db:close() during the query
  if not db.cleaning then release(db) end
  if closed and (...) == nil then return nil, "closed" end
  return ...
end

-- SQLSTATEs after which a prepared statement is gone or stale: 26000
-- (DISCARD ALL or DEALLOCATE ran: a pool in front of the server may do
-- it), 0A000 ("cached plan must not change result type": a table it reads
-- was altered). pgx prepares again in both cases, as here.
local STALE = { ["26000"] = true, ["0A000"] = true }

-- Deallocates the statements forget() set aside as stale, outside a
-- transaction block (in a failed one, DEALLOCATE would fail too). true |
-- nil, err, sqlstate
local function sweep(db, deadline)
  local conn = db.conn
  local _, tx = conn:status()
  if tx ~= "idle" then return true end
  local stale = db.stale
  while stale[1] do
    local ok, err, state = exec(db, deadline, pcall(conn.send, conn, "DEALLOCATE " .. stale[#stale]))
    if not ok and state ~= "26000" then return nil, err, state end -- 26000: gone already
    stale[#stale] = nil
  end
  return true
end

-- The statement's name on this connection, prepared now if it is new
-- (one more round trip, once): name | false (not cached: the cache is
-- full or off) | nil, err, sqlstate (the prepare failed or was interrupted).
local function prepared(db, deadline, sql)
  local name = db.stmts[sql]
  if name then return name end
  if db.nstmts >= db.max_stmts then return false end
  if db.stale[1] then
    local ok, err, state = sweep(db, deadline)
    if not ok then return nil, err, state end
  end
  db.stmt_seq = db.stmt_seq + 1
  name = "coserve_" .. db.stmt_seq
  local ok, err, state = exec(db, deadline, pcall(db.conn.prepare, db.conn, name, sql))
  if not ok then return nil, err, state end
  db.stmts[sql], db.nstmts = name, db.nstmts + 1
  return name
end

-- Forgets statements the server says are gone (26000: all of them, after
-- DISCARD ALL or DEALLOCATE ALL) or stale (sql's, set aside for sweep()).
local function forget(db, sql, sqlstate)
  if sqlstate == "26000" then
    db.stmts, db.nstmts, db.stale = {}, 0, {}
  elseif db.stmts[sql] then
    db.stale[#db.stale + 1] = db.stmts[sql]
    db.stmts[sql], db.nstmts = nil, db.nstmts - 1
  end
end

-- Takes the connection for a query or a wait (release() gives it back):
-- true | nil, "closed" | nil, the lock's error (timeout, canceled).
local function hold(db, timeout)
  if db.closed then return nil, "closed" end
  local ok, err = db.lock:wait(timeout)
  if not ok then return nil, err end
  if db.closed then
    db.lock:post()
    return nil, "closed"
  end
  db.busy = true
  return true
end

-- db:query(sql, ...) -> rows, { affected =, command = } | nil, err, sqlstate
-- With arguments, $1... are bound to them (sent apart from the SQL, never
-- interpolated), and the statement is prepared on the connection the first
-- time (statement_cache); without, sql may hold several statements.
function DB:query(sql, ...)
  if type(sql) ~= "string" then error("bad argument #1 to 'query' (string expected)", 2) end
  local ok, err = hold(self)
  if not ok then return nil, err end
  local qt = self.query_timeout
  local deadline = qt and qt >= 0 and now() + qt or nil
  local conn = self.conn
  if select("#", ...) == 0 then
    return finish_query(self, exec(self, deadline, pcall(conn.send, conn, sql)))
  end
  for attempt = 1, 2 do
    local name, perr, pstate = prepared(self, deadline, sql)
    if name == nil then return finish_query(self, nil, perr, pstate) end
    if not name then
      return finish_query(self, exec(self, deadline, pcall(conn.send, conn, sql, ...)))
    end
    local rows, info, sqlstate = exec(self, deadline, pcall(conn.send_prepared, conn, name, ...))
    if rows or not STALE[sqlstate] then return finish_query(self, rows, info, sqlstate) end
    forget(self, sql, sqlstate)
    -- The statement did not run. Outside a transaction block (whose error
    -- state a retry cannot leave), it is prepared again and run, once.
    local _, tx = conn:status()
    if attempt == 2 or tx ~= "idle" then return finish_query(self, rows, info, sqlstate) end
  end
end

-- db:wait_notify([timeout]) -> { channel =, payload =, pid = } | nil, err
-- The next NOTIFY on a channel this connection LISTENs to (those that came
-- during a query first). No timeout: wait as long as it takes. It holds the
-- connection: other coroutines' queries on it wait meanwhile.
function DB:wait_notify(timeout)
  local deadline = timeout and timeout >= 0 and now() + timeout or nil
  local ok, err = hold(self, timeout)
  if not ok then return nil, err end
  local conn = self.conn
  local n = conn:notify()
  while not n do
    local ev, werr = wait(conn, "r", deadline)
    if not ev then
      err = werr
      break
    end
    local _, cerr = conn:consume()
    if cerr then
      err = cerr
      break
    end
    n = conn:notify()
  end
  release(self)
  if n then return n end
  return nil, self.closed and "closed" or err
end

-- db:close() -> true. A query running in another coroutine ends with
-- nil, "closed" (its socket is shut down; that coroutine closes it).
function DB:close()
  if not self.closed then
    self.closed = true
    if self.busy or self.cleaning then
      self.conn:shutdown()
    else
      self.conn:finish()
    end
  end
  return true
end

-- db:pid() -> the server process serving this connection
function DB:pid() return self.conn:pid() end

-- db:status() -> "ok" | "bad" | "closed", transaction state
function DB:status() return self.conn:status() end

---------------------------------------------------------------- pool

local Pool = {}
Pool.__index = Pool

local SLOT = {} -- handed to a waiter: a slot came free, open a connection

-- pg.pool{ conninfo, size = 10, idle_timeout = 60, wait_timeout = 30,
--          timeout = 10, query_timeout = none, statement_cache = 256 }
-- At most `size` connections are open (or opening) at once; a query
-- borrows one, and a coroutine finding all of them busy queues for
-- wait_timeout seconds. Connections idle longer than idle_timeout (0: no
-- limit) are closed when the pool is next used.
function M.pool(opts)
  if type(opts) ~= "table" or type(opts.conninfo or opts[1]) ~= "string" then
    error("bad argument #1 to 'pool' ({ conninfo = string, ... } expected)", 2)
  end
  local size = opts.size or 10
  if type(size) ~= "number" or size < 1 then
    error("bad argument #1 to 'pool' (size: positive number expected)", 2)
  end
  return setmetatable({
    conninfo = opts.conninfo or opts[1],
    size = size,
    idle_timeout = opts.idle_timeout or 60,
    wait_timeout = opts.wait_timeout or 30,
    connect_opts = { timeout = opts.timeout, query_timeout = opts.query_timeout,
                     statement_cache = opts.statement_cache },
    idle = {},    -- { db =, since = }, the most recently used last
    waiters = {}, -- tasks parked in acquire()
    open = 0,     -- connections open or opening, borrowed or idle
    opened = 0,   -- connections opened since the start
    max_open = 0, -- the most open at once
    closed = false,
  }, Pool)
end

-- A slot came free: a waiter takes it (and opens a connection), or it is
-- given up.
local function free_slot(pool)
  local waiters = pool.waiters
  while #waiters > 0 do
    if wake(tremove(waiters, 1), SLOT) then return end
  end
  pool.open = pool.open - 1
end

local function open_one(pool)
  local db, err = M.connect(pool.conninfo, pool.connect_opts)
  if not db then
    free_slot(pool)
    return nil, err
  end
  db.pool = pool
  db.borrowed = true
  pool.opened = pool.opened + 1
  return db
end

local function sweep(pool)
  local idle, limit = pool.idle, pool.idle_timeout
  if limit <= 0 then return end
  local t = now()
  while idle[1] and t - idle[1].since > limit do
    tremove(idle, 1).db:close()
    pool.open = pool.open - 1
  end
end

-- An idle connection is checked before it is lent: what the server sent
-- meanwhile is read, so that one whose backend ended (a restart,
-- pg_terminate_backend) is seen closed and replaced.
local function healthy(db)
  return not db.closed and db.conn:check()
end

-- pool:acquire([timeout]) -> db | nil, err
-- Borrows a connection for several queries (a transaction); give it back
-- with pool:release(db). A connection given back inside a transaction is
-- closed, not reused.
function Pool:acquire(timeout)
  if self.closed then return nil, "closed" end
  sweep(self)
  while true do
    local entry = tremove(self.idle)
    if entry then
      if healthy(entry.db) then
        entry.db.borrowed = true
        return entry.db
      end
      entry.db:close()
      self.open = self.open - 1
    elseif self.open < self.size then
      self.open = self.open + 1
      if self.open > self.max_open then self.max_open = self.open end
      return open_one(self)
    else
      local me = current()
      if not me then error("acquire: not inside a coserve coroutine", 2) end
      local waiters = self.waiters
      waiters[#waiters + 1] = me
      local v, err = park(timeout or self.wait_timeout)
      if v == nil then
        for i = 1, #waiters do
          if waiters[i] == me then
            tremove(waiters, i)
            break
          end
        end
        return nil, err
      end
      if v == false then return nil, "closed" end
      if v == SLOT then return open_one(self) end
      v.borrowed = true
      return v
    end
  end
end

-- pool:release(db): gives a borrowed connection back. One still busy with
-- an interrupted query comes back once that is canceled and drained.
function Pool:release(db)
  if db.pool ~= self or not db.borrowed then
    error("bad argument #1 to 'release' (a connection borrowed from this pool expected)", 2)
  end
  if db.cleaning then
    db.after_cleanup = function() self:release(db) end
    return
  end
  db.borrowed = false
  local st, tx = db.conn:status()
  if self.closed or db.closed or st ~= "ok" or tx ~= "idle" then
    db:close()
    free_slot(self)
    return
  end
  local waiters = self.waiters
  while #waiters > 0 do
    if wake(tremove(waiters, 1), db) then
      db.borrowed = true
      return
    end
  end
  self.idle[#self.idle + 1] = { db = db, since = now() }
end

local function give_back(pool, db, ...)
  pool:release(db)
  return ...
end

-- pool:query(sql, ...) -> as db:query, on a borrowed connection
function Pool:query(sql, ...)
  local db, err = self:acquire()
  if not db then return nil, err end
  return give_back(self, db, db:query(sql, ...))
end

-- pool:stats() -> { open =, idle =, waiting =, opened =, max_open =, size = }
function Pool:stats()
  return { open = self.open, idle = #self.idle, waiting = #self.waiters,
           opened = self.opened, max_open = self.max_open, size = self.size }
end

-- pool:close(): closes the idle connections now and borrowed ones as they
-- come back; coroutines waiting for one get nil, "closed".
function Pool:close()
  self.closed = true
  local idle, waiters = self.idle, self.waiters
  self.idle, self.waiters = {}, {}
  for i = 1, #idle do
    idle[i].db:close()
    self.open = self.open - 1
  end
  for i = 1, #waiters do wake(waiters[i], false) end
  return true
end

return M
