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
  if stats.handles > 0 or stats.connections > 0 or stats.tasks > 0 then
    error(("test left %d handle(s), %d connection(s), %d task(s) open")
      :format(stats.handles, stats.connections, stats.tasks), 2)
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

return M
