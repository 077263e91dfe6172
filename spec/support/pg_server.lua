-- A private PostgreSQL server for the specs (spec/pg_spec.lua,
-- spec/examples_pg_spec.lua) and bench/pg_bench.lua: initdb into a fresh
-- directory, trust authentication, a Unix socket in that directory and
-- localhost on a free port, started as a child recorded by PID and stopped
-- by PID.
--
--   local pg_server = dofile("spec/support/pg_server.lua")
--   local server = pg_server.start()      -- raises if it cannot
--   server.conninfo                        -- Unix socket: "host=DIR port=N user=postgres dbname=postgres"
--   server.tcp_conninfo                    -- the same over 127.0.0.1
--   server:stop()                          -- safe twice
--
-- PostgreSQL refuses to run as root, and specs run as root: initdb and the
-- server run as the `postgres` user (Debian's package creates it) through
-- setpriv, which execs, so that the PID recorded is the postmaster's.
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "process.lua")

local M = {}

-- The newest installed server's bin directory.
function M.bindir()
  local p = io.popen("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1")
  local dir = p:read("*l")
  p:close()
  assert(dir and dir ~= "", "no PostgreSQL server under /usr/lib/postgresql (Debian's postgresql)")
  return dir
end

local function is_root()
  local p = io.popen("id -u")
  local uid = p:read("*l")
  p:close()
  return uid == "0"
end

local Server = {}
Server.__index = Server

-- pg_server.start([{ settings = { name = value } }]) -> server
function M.start(opts)
  local bin = M.bindir()
  local dir = proc.tmpdir()
  local data = dir .. "/data"
  local as_postgres = is_root() and { "setpriv", "--reuid=postgres", "--regid=postgres",
                                      "--init-groups" } or {}
  if #as_postgres > 0 then
    assert(os.execute("chown postgres:postgres " .. proc.quote(dir)) == 0, "chown " .. dir)
  end
  local function argv(...)
    local t = {}
    for _, a in ipairs(as_postgres) do t[#t + 1] = a end
    for _, a in ipairs({ ... }) do t[#t + 1] = a end
    return t
  end
  local r = proc.run(argv(bin .. "/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--locale=C", "--no-sync"), { timeout = 60 })
  if r.status ~= 0 then
    proc.rmdir(dir)
    error("initdb failed (" .. tostring(r.status) .. "): " .. r.out .. r.err)
  end
  local port = proc.free_port()
  local args = { bin .. "/postgres", "-D", data, "-k", dir, "-p", tostring(port),
                 "-c", "listen_addresses=localhost", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200", "-c", "shared_buffers=32MB",
                 "-c", "logging_collector=off" }
  for k, v in pairs(opts and opts.settings or {}) do
    args[#args + 1] = "-c"
    args[#args + 1] = k .. "=" .. tostring(v)
  end
  local p = proc.start(argv(unpack(args)))
  local server = setmetatable({ dir = dir, port = port, proc = p, pid = p.pid, bin = bin,
                                as_postgres = as_postgres }, Server)
  local ready = proc.poll(30, function()
    return p:stderr():match("ready to accept connections") or p:status()
  end)
  if type(ready) == "string" then
    server.conninfo = ("host=%s port=%d user=postgres dbname=postgres"):format(dir, port)
    server.tcp_conninfo = ("host=127.0.0.1 port=%d user=postgres dbname=postgres"):format(port)
    return server
  end
  local log = p:stderr()
  server:stop()
  error("postgres did not start: " .. log)
end

-- Stops the server by its PID: SIGINT (a fast shutdown: clients are
-- disconnected) and up to 10 s for it to exit, then SIGKILL to its process
-- group; then removes its directory.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self.proc:signal("INT")
  if not self.proc:wait_exit(10) then
    local pre = {}
    for i, a in ipairs(self.as_postgres) do pre[i] = proc.quote(a) end
    os.execute(("%s %s/pg_ctl stop -D %s -m immediate >/dev/null 2>&1"):format(
      table.concat(pre, " "), self.bin, proc.quote(self.dir .. "/data")))
  end
  self.proc:stop()
  proc.rmdir(self.dir)
end

return M
