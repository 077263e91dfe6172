-- coserve.testing: run handler tests the way coserve tests itself.
--
--   local testing = require "coserve.testing"
--   it("echoes", function()
--     testing.run(function()
--       local server = testing.server(function(conn) ... end)
--       local client = assert(testing.connect(server))
--       ...
--       server:shutdown()
--     end)
--   end)
--
-- testing.run fails the case when it runs past its deadline, when it
-- leaves a task running or a handle open, or when it raises.
local coserve = require "coserve"
local core = require "coserve.core"

local M = {}

local unpack = unpack or table.unpack

local function pack(...) return { n = select("#", ...), ... } end

-- Waits, boundedly, for tasks other than the caller to end.
local function settle(limit)
  local deadline = coserve.now() + limit
  while core.stats().tasks > 1 and coserve.now() < deadline do
    coserve.sleep(0.005)
  end
  return core.stats().tasks - 1
end

-- testing.run(fn [, {timeout = 5}]) -> fn's results
function M.run(fn, opts)
  local timeout = opts and opts.timeout or 5
  -- What an earlier case left open is that case's failure, not this one's.
  local before = core.stats()
  local failure
  local results = coserve.run(function()
    local body = coserve.spawn(fn)
    local r = pack(body:join(timeout))
    if not r[1] then
      if r[2] == "timeout" then
        failure = ("test ran past its %g s deadline"):format(timeout)
        body:cancel()
      else
        failure = r[2]
      end
    end
    -- Pooled client connections are idle by definition; client
    -- connections the case dropped without closing are closed by their
    -- __gc, as they would be in a long-running program.
    coserve.close_idle()
    collectgarbage()
    collectgarbage()
    local left = settle(failure and 0.2 or 1)
    if left > 0 then
      failure = failure or ("test left %d task(s) running (stop servers, join or cancel tasks)")
        :format(left)
      core.abort_all()
      settle(1)
    end
    return r
  end)
  if failure then error(failure, 2) end
  local stats = core.stats()
  local handles, conns = stats.handles - before.handles, stats.connections - before.connections
  if handles > 0 or conns > 0 or stats.tasks > 0 then
    error(("test left %d handle(s), %d connection(s), %d task(s) open (open handles: %s)")
      :format(handles, conns, stats.tasks, stats.handle_kinds), 2)
  end
  return unpack(results, 2, results.n)
end

-- testing.server(handler [, opts]) -> a started server on 127.0.0.1 and a
-- free port (server.port); stop it with server:shutdown().
function M.server(handler, opts)
  if not core.current() then
    error("testing.server: call it inside testing.run (or another coserve coroutine)", 2)
  end
  local o = { host = "127.0.0.1", port = 0 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local server = coserve.server(o)
  server:handle(handler)
  local started, err
  coserve.spawn(function()
    started = true
    local ok, e = server:start()
    if not ok then err = e end
  end)
  -- spawn runs the task until start() parks: it is listening now.
  assert(started and not err, err)
  return server
end

-- testing.connect(server [, opts]) -> a client connection to it
function M.connect(server, opts)
  if server.is_unix then return coserve.connect(server.host, opts) end
  return coserve.connect("127.0.0.1", server.port, opts)
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

-- testing.tls([dir]) -> a throw-away CA and certificates signed by it,
-- written as PEM files in dir (default: a new directory under /tmp):
--   { dir =, ca =, ca_key =,                     the CA
--     cert =, key =,                              for localhost, 127.0.0.1, ::1
--     client_cert =, client_key =,                CN "client", for mTLS
--     make = function(name, opts) -> cert, key }  more: opts = { cn =, san =,
--                                                 not_before =, not_after = (s from
--                                                 now), self_signed = true }
-- so a TLS handler test reads:
--   local certs = testing.tls()
--   local server = testing.server(handler, { tls = { cert = certs.cert, key = certs.key } })
--   local client = testing.connect(server, { tls = { ca = certs.ca } })
-- Remove dir when done (os.execute("rm -r " .. certs.dir)), or keep one for a suite.
function M.tls(dir)
  if not dir then
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 '" .. dir .. "'") == 0, "cannot make " .. dir)
  end
  local ca_pem, ca_key = core.tls_make_cert{ cn = "coserve test CA", ca = true }
  local t = { dir = dir, ca = write_file(dir .. "/ca.pem", ca_pem),
              ca_key = write_file(dir .. "/ca.key", ca_key) }
  function t.make(name, opts)
    opts = opts or {}
    local cert, key = core.tls_make_cert{
      cn = opts.cn or name, san = opts.san, not_before = opts.not_before,
      not_after = opts.not_after,
      issuer_cert = not opts.self_signed and ca_pem or nil,
      issuer_key = not opts.self_signed and ca_key or nil }
    return write_file(dir .. "/" .. name .. ".pem", cert), write_file(dir .. "/" .. name .. ".key", key)
  end
  t.cert, t.key = t.make("localhost", { san = "DNS:localhost,IP:127.0.0.1,IP:::1" })
  t.client_cert, t.client_key = t.make("client")
  return t
end

return M
