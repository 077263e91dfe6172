-- coserve.pg against pgbench (C libpq) on the same private server: a
-- SELECT of one row by primary key (pgbench's -S transaction), through
-- pg.pool at 16 and 64 concurrent coroutines, and pgbench -S -c 16/64 -j 1.
--
--   luajit bench/pg_bench.lua [seconds=5] [build=build] [rounds=2]
--
-- Both run on this machine beside the server, over its Unix socket, for the
-- same time; the best of `rounds` rounds is kept for each (the machine is
-- shared). pgbench runs in its simple, extended and prepared protocol modes
-- (coserve.pg prepares a statement with parameters once per connection, so
-- prepared is the like-for-like one). The coserve side's CPU is this
-- process's (os.clock), per query.
local secs = tonumber(arg[1]) or 5
local build = arg[2] or "build"
local rounds = tonumber(arg[3]) or 2
package.cpath = build .. "/lua/?.so;" .. package.cpath

local coserve = require "coserve"
local pg = require "coserve.pg"
local root = (debug.getinfo(1, "S").source:match("^@(.*)/bench/[^/]*$")) or "."
local pg_server = dofile(root .. "/spec/support/pg_server.lua")
local proc = dofile(root .. "/spec/support/process.lua")

local server = pg_server.start({ settings = { max_connections = 300 } })
local ok, err = pcall(function()
  local conn = { "-h", server.dir, "-p", tostring(server.port), "-U", "postgres", "postgres" }
  local function pgbench(...)
    local argv = { server.bin .. "/pgbench", ... }
    for _, a in ipairs(conn) do argv[#argv + 1] = a end
    return proc.run(argv, { timeout = secs + 60 })
  end
  local init = pgbench("-i", "-s", "1", "-q")
  assert(init.status == 0, "pgbench -i: " .. init.err)
  local accounts = 100000

  local function run_pgbench(clients, mode)
    local r = pgbench("-S", "-n", "-M", mode, "-c", tostring(clients), "-j", "1",
                      "-T", tostring(secs))
    assert(r.status == 0, "pgbench: " .. r.err .. r.out)
    return tonumber(r.out:match("tps = ([%d%.]+)"))
  end

  local function run_coserve(clients)
    return coserve.run(function()
      local pool = pg.pool{ conninfo = server.conninfo, size = clients }
      -- Connections open before the clock starts, as pgbench's do.
      local warm = coserve.waitgroup()
      for _ = 1, clients do
        warm:add(1)
        coserve.spawn(function() assert(pool:query("select 1 from pg_sleep(0.05)")) warm:done() end)
      end
      assert(warm:wait(30))
      local n, failed = 0, 0
      local wg = coserve.waitgroup()
      local c0, t0 = os.clock(), coserve.now()
      local deadline = t0 + secs
      for _ = 1, clients do
        wg:add(1)
        coserve.spawn(function()
          local random = math.random
          while coserve.now() < deadline do
            local rows = pool:query("SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                                    random(1, accounts))
            if rows and rows[1] then n = n + 1 else failed = failed + 1 end
          end
          wg:done()
        end)
      end
      assert(wg:wait(secs + 30))
      local wall, cpu = coserve.now() - t0, os.clock() - c0
      pool:close()
      assert(failed == 0, failed .. " queries failed")
      return n / wall, cpu / n * 1e6
    end)
  end

  local best = {}
  for round = 1, rounds do
    for _, clients in ipairs({ 16, 64 }) do
      local b = best[clients] or { coserve = 0, simple = 0, extended = 0, prepared = 0 }
      best[clients] = b
      local tps, us = run_coserve(clients)
      if tps > b.coserve then b.coserve, b.us = tps, us end
      b.simple = math.max(b.simple, run_pgbench(clients, "simple"))
      b.extended = math.max(b.extended, run_pgbench(clients, "extended"))
      b.prepared = math.max(b.prepared, run_pgbench(clients, "prepared"))
      io.stderr:write(("round %d, %d clients: coserve %.0f tps (%.1f us CPU/query), pgbench %.0f simple, %.0f extended, %.0f prepared\n")
        :format(round, clients, tps, us, b.simple, b.extended, b.prepared))
    end
  end
  print(("%-8s %12s %18s %15s %17s %17s %10s %10s"):format("clients", "coserve tps",
        "coserve CPU/query", "pgbench simple", "pgbench extended", "pgbench prepared", "vs simple",
        "vs prep."))
  for _, clients in ipairs({ 16, 64 }) do
    local b = best[clients]
    print(("%-8d %12.0f %15.1f us %15.0f %17.0f %17.0f %9.2fx %9.2fx"):format(clients, b.coserve,
          b.us, b.simple, b.extended, b.prepared, b.coserve / b.simple, b.coserve / b.prepared))
  end
end)
server:stop()
if not ok then error(err, 0) end
