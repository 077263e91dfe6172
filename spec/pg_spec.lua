-- coserve.pg (SPEC §11) against a real PostgreSQL started for this file
-- (spec/support/pg_server.lua): connect, query with parameters, type
-- conversion, errors with their SQLSTATE, concurrency without blocking the
-- loop, the pool's bound, cancel on the server, lost connections,
-- LISTEN/NOTIFY, large results and large queries.
local coserve = require "coserve"
local testing = require "coserve.testing"
local pg = require "coserve.pg"
local pg_server = dofile("spec/support/pg_server.lua")
local ffi = require "ffi"

pcall(ffi.cdef, [[
  struct pollfd { int fd; short events; short revents; };
  int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]])

local run = testing.run

describe("coserve.pg", function()
  local server

  lazy_setup(function() server = pg_server.start() end)
  lazy_teardown(function() if server then server:stop() end end)

  -- An administrator's connection, for watching pg_stat_activity.
  local function admin() return assert(pg.connect(server.conninfo)) end

  -- Polls fn every 20 ms for at most limit seconds: its last result.
  local function eventually(limit, fn)
    local deadline = coserve.now() + limit
    while true do
      local v = fn()
      if v or coserve.now() >= deadline then return v end
      coserve.sleep(0.02)
    end
  end

  local function active(db, pattern)
    local rows = assert(db:query([[select count(*) as n from pg_stat_activity
      where state = 'active' and query like $1 and pid <> pg_backend_pid()]], pattern))
    return rows[1].n
  end

  describe("connect", function()
    it("connects over the Unix socket, and over TCP to a host name resolved first", function()
      run(function()
        local db = assert(pg.connect(server.conninfo))
        assert.equal(pg.null, db:query("select inet_server_addr() as a")[1].a) -- a Unix socket
        db:close()
        local tcp = assert(pg.connect(("host=localhost port=%d user=postgres dbname=postgres")
          :format(server.port)))
        assert.is_string(tcp:query("select inet_server_addr()::text as a")[1].a)
        assert.equal("ok", tcp:status())
        tcp:close()
        assert.equal("closed", tcp:status())
        assert.same({ nil, "closed" }, { tcp:query("select 1") })
        assert.is_true(tcp:close()) -- twice is fine
      end)
    end)

    it("returns nil, err for a refused connection and for an unknown database", function()
      local closed_port = dofile("spec/support/process.lua").free_port()
      run(function()
        local db, err = pg.connect(("host=127.0.0.1 port=%d user=postgres"):format(closed_port))
        assert.is_nil(db)
        assert.matches("refused", err)
        db, err = pg.connect((server.conninfo:gsub("dbname=postgres", "dbname=nope")))
        assert.is_nil(db)
        assert.matches('database "nope" does not exist', err, 1, true)
        assert.same({ nil, 'missing "=" after "junk" in connection info string' },
                    { pg.connect("junk") })
      end)
    end)

    it("times out against a server that never answers, while other coroutines run", function()
      run(function()
        local silent = testing.server(function(conn) conn:receive("*a") end)
        local ticks = 0
        local ticker = coserve.spawn(function()
          while ticks < 5 do coserve.sleep(0.02); ticks = ticks + 1 end
        end)
        local db, err = pg.connect(("host=127.0.0.1 port=%d user=postgres sslmode=disable")
          :format(silent.port), { timeout = 0.3 })
        assert.is_nil(db)
        assert.equal("connect timeout", err)
        assert.equal(5, ticks)
        assert(ticker:join(1))
        silent:shutdown()
      end)
    end)
  end)

  describe("query", function()
    it("converts numbers, booleans and NULL, and leaves numeric and the rest as strings", function()
      run(function()
        local db = admin()
        local rows, info = assert(db:query([[select 1::int2 as i2, 2::int4 as i4,
          9007199254740992::int8 as i8, 1.5::float4 as f4, 0.1::float8 as f8,
          'NaN'::float8 as nan, '-Infinity'::float8 as ninf, 12.50::numeric as num,
          true as t, false as f, null::int as n, 'text' as s, '{"a":1}'::json as j,
          '2024-02-29'::date as d, array[1,2] as arr, 42::oid as o]]))
        local r = rows[1]
        assert.equal(1, #rows)
        assert.same({ affected = 1, command = "SELECT" }, info)
        assert.equal(1, r.i2)
        assert.equal(2, r.i4)
        assert.equal(2 ^ 53, r.i8)
        assert.equal(1.5, r.f4)
        assert.equal(0.1, r.f8)
        assert.is_true(r.nan ~= r.nan)
        assert.equal(-math.huge, r.ninf)
        assert.equal("12.50", r.num)
        assert.is_true(r.t)
        assert.is_false(r.f)
        assert.equal(pg.null, r.n)
        assert.equal("text", r.s)
        assert.equal('{"a":1}', r.j)
        assert.equal("2024-02-29", r.d)
        assert.equal("{1,2}", r.arr)
        assert.equal(42, r.o)
        db:close()
      end)
    end)

    it("reports commands with their counts, and runs several statements without parameters", function()
      run(function()
        local db = admin()
        local rows, info = assert(db:query([[create temp table t (id int primary key, v text);
          insert into t select g, 'v' || g from generate_series(1, 5) g;
          update t set v = 'x' where id > 2]]))
        assert.same({}, rows)
        assert.same({ affected = 3, command = "UPDATE" }, info)
        assert.same({ affected = 1, command = "INSERT" }, select(2, db:query("insert into t values (9, 'z')")))
        assert.same({ affected = 6, command = "DELETE" }, select(2, db:query("delete from t")))
        assert.same({ affected = 0, command = "CREATE TABLE" },
                    select(2, db:query("create temp table u (a int)")))
        db:close()
      end)
    end)

    it("sends parameters apart from the SQL: quotes, NULL, unicode, booleans, exact numbers", function()
      run(function()
        local db = admin()
        assert(db:query("create temp table p (s text)"))
        local evil = "'); drop table p; --"
        assert(db:query("insert into p values ($1)", evil))
        assert.equal(evil, db:query("select s from p")[1].s)
        local r = assert(db:query([[select $1::text as q, $2::text as n1, $3::text as n2,
          $4::text as u, $5::bool as b, $6::int8 as big, $7::float8 as f, $8::text as bs,
          $9::int as i]], [[it's "quoted" \ back]], nil, pg.null, "héllo 世界 🎉", true,
          2 ^ 53, 0.1, "a\\b", 7))[1]
        assert.equal([[it's "quoted" \ back]], r.q)
        assert.equal(pg.null, r.n1)
        assert.equal(pg.null, r.n2)
        assert.equal("héllo 世界 🎉", r.u)
        assert.is_true(r.b)
        assert.equal(2 ^ 53, r.big)
        assert.equal(0.1, r.f)
        assert.equal("a\\b", r.bs)
        assert.equal(7, r.i)
        -- A trailing nil still counts as a parameter.
        assert.equal(pg.null, db:query("select $1::text as x", nil)[1].x)
        assert.has_error(function() db:query("select $1", {}) end,
          "bad argument #3 to 'query' (string, number, boolean or pg.null expected)")
        assert.has_error(function() db:query("select $1", "a\0b") end)
        -- The connection is still usable after those argument errors.
        assert.equal(1, db:query("select 1 as one")[1].one)
        db:close()
      end)
    end)

    it("fails with nil, message, sqlstate, and the connection goes on", function()
      run(function()
        local db = admin()
        assert.same({ nil, 'relation "nope" does not exist', "42P01" },
                    { db:query("select * from nope") })
        assert(db:query("create temp table k (id int primary key)"))
        assert(db:query("insert into k values ($1)", 1))
        local rows, err, state = db:query("insert into k values ($1)", 1)
        assert.is_nil(rows)
        assert.matches("duplicate key value violates unique constraint", err)
        assert.equal("23505", state)
        assert.equal("22012", select(3, db:query("select 1 / 0")))
        assert.equal("42601", select(3, db:query("selec 1")))
        assert.equal(1, db:query("select 1 as one")[1].one)
        db:close()
      end)
    end)

    it("refuses COPY and closes that connection", function()
      run(function()
        local db = admin()
        assert.same({ nil, "COPY is not supported" }, { db:query("copy (select 1) to stdout") })
        assert.same({ nil, "closed" }, { db:query("select 1") })
        db:close()
      end)
    end)

    it("returns 100,000 rows", function()
      run(function()
        local db = admin()
        local rows, info = assert(db:query([[select g as id, 'row ' || g as name
          from generate_series(1, 100000) g]]))
        assert.equal(100000, #rows)
        assert.equal(100000, info.affected)
        assert.same({ id = 100000, name = "row 100000" }, rows[100000])
        assert.same({ id = 1, name = "row 1" }, rows[1])
        db:close()
      end, { timeout = 20 })
    end)

    it("sends a 4 MB parameter, which needs writable waits", function()
      run(function()
        local db = admin()
        local big = ("0123456789abcdef"):rep(4 * 65536)
        local r = assert(db:query("select length($1) as n, md5($1) as h", big))[1]
        assert.equal(#big, r.n)
        assert.equal(32, #r.h)
        db:close()
      end, { timeout = 20 })
    end)

    it("runs one query per connection at a time: a second coroutine's query waits", function()
      run(function()
        local db = admin()
        local order = {}
        local t = coserve.spawn(function()
          assert(db:query("select pg_sleep(0.2)"))
          order[#order + 1] = "first"
        end)
        assert(db:query("select 1"))
        order[#order + 1] = "second"
        assert(t:join(2))
        assert.same({ "first", "second" }, order)
        db:close()
      end)
    end)

    it("ends a query running in another coroutine with 'closed' when the connection is closed", function()
      run(function()
        local db = admin()
        local t = coserve.spawn(function() return db:query("select pg_sleep(5)") end)
        coserve.sleep(0.1)
        db:close()
        assert.same({ true, nil, "closed" }, { t:join(2) })
        assert.same({ nil, "closed" }, { db:query("select 1") })
      end)
    end)
  end)

  describe("prepared statements (statement_cache)", function()
    local function statements(db)
      local rows = assert(db:query("select name, statement from pg_prepared_statements order by name"))
      local out = {}
      for i, r in ipairs(rows) do out[i] = r.name .. ": " .. r.statement end
      return out
    end

    it("prepares a query with parameters once per connection, then runs it prepared", function()
      run(function()
        local db = assert(pg.connect(server.conninfo))
        for i = 1, 3 do assert.equal(i + 1, db:query("select $1::int + 1 as n", i)[1].n) end
        assert.equal(7, db:query("select $1::int * $2::int as n", 7, 1)[1].n)
        assert.same({ "coserve_1: select $1::int + 1 as n", "coserve_2: select $1::int * $2::int as n" },
          statements(db))
        -- A failed prepare (a syntax error) is an error like any other, and not kept.
        local rows, err, state = db:query("selec $1", 1)
        assert.is_nil(rows)
        assert.matches("syntax error", err)
        assert.equal("42601", state)
        assert.equal(2, #statements(db))
        -- The same text with the wrong number of arguments: the server's error.
        assert.is_nil(db:query("select $1::int + 1 as n", 1, 2))
        assert.equal(5, db:query("select $1::int + 1 as n", 4)[1].n)
        db:close()
      end)
    end)

    it("prepares nothing with statement_cache = 0, and at most statement_cache statements", function()
      run(function()
        local db = assert(pg.connect(server.conninfo, { statement_cache = 0 }))
        assert.equal(2, db:query("select $1::int + 1 as n", 1)[1].n)
        assert.same({}, statements(db))
        db:close()
        db = assert(pg.connect(server.conninfo, { statement_cache = 2 }))
        for i = 1, 4 do assert.equal(i, db:query("select $1::int as n" .. i, i)[1]["n" .. i]) end
        assert.equal(2, #statements(db))
        db:close()
        assert.has_error(function() pg.connect(server.conninfo, { statement_cache = "all" }) end,
          "bad argument #2 to 'connect' (statement_cache: number >= 0 expected)")
      end)
    end)

    it("prepares again after DEALLOCATE ALL or a change of the result's type, outside a transaction", function()
      run(function()
        local db = assert(pg.connect(server.conninfo))
        assert(db:query("create temp table prep_t (a int)"))
        assert(db:query("insert into prep_t values (1)"))
        local q = "select * from prep_t where a = $1"
        assert.same({ { a = 1 } }, db:query(q, 1))
        assert(db:query("deallocate all")) -- what a pool in front may run (26000 next)
        assert.same({ { a = 1 } }, db:query(q, 1))
        assert(db:query("alter table prep_t add column b int")) -- 0A000 next
        assert.same({ { a = 1, b = pg.null } }, db:query(q, 1))
        assert.equal(1, #statements(db))
        -- Inside a transaction block the error aborted it: no retry, the
        -- error is the caller's, and the statement is prepared again later.
        assert(db:query("begin"))
        assert(db:query("alter table prep_t add column c int"))
        local rows, err, state = db:query(q, 1)
        assert.is_nil(rows)
        assert.matches("cached plan must not change result type", err)
        assert.equal("0A000", state)
        assert(db:query("rollback"))
        assert.same({ { a = 1, b = pg.null } }, db:query(q, 1))
        assert.equal(1, #statements(db)) -- the stale ones were deallocated
        db:close()
      end)
    end)
  end)

  describe("concurrency", function()
    it("runs 20 pg_sleep(1) at once through a pool of 20 while another coroutine keeps running", function()
      run(function()
        local pool = pg.pool{ conninfo = server.conninfo, size = 20 }
        local ticks, stop = 0, false
        local ticker = coserve.spawn(function()
          while not stop do coserve.sleep(0.05); ticks = ticks + 1 end
        end)
        local wg = coserve.waitgroup()
        local ok = 0
        local t0 = coserve.now()
        for _ = 1, 20 do
          wg:add(1)
          coserve.spawn(function()
            if pool:query("select pg_sleep(1)") then ok = ok + 1 end
            wg:done()
          end)
        end
        assert(wg:wait(15))
        local elapsed = coserve.now() - t0
        stop = true
        assert(ticker:join(1))
        assert.equal(20, ok)
        assert.equal(20, pool:stats().opened)
        -- A correctness check of concurrency, not a benchmark: one after
        -- another would take 20 s.
        assert.is_true(elapsed < 5, "20 sleeps took " .. elapsed .. " s")
        assert.is_true(ticks >= 10, "the ticker ticked " .. ticks .. " times")
        pool:close()
      end, { timeout = 20 })
    end)

    it("never opens a fifth connection for a pool of 4 under 100 coroutines", function()
      run(function()
        local pool = pg.pool{ conninfo = server.conninfo .. " application_name=pool4", size = 4 }
        local most, ok = 0, 0
        local wg = coserve.waitgroup()
        for _ = 1, 100 do
          wg:add(1)
          coserve.spawn(function()
            local rows = pool:query([[select count(*) as n, pg_sleep(0.01) as s
              from pg_stat_activity where application_name = 'pool4']])
            if rows then
              ok = ok + 1
              if rows[1].n > most then most = rows[1].n end
            end
            wg:done()
          end)
        end
        assert.equal(96, pool:stats().waiting)
        assert(wg:wait(20))
        assert.equal(100, ok)
        assert.equal(4, most) -- seen by the server
        local stats = pool:stats()
        assert.equal(4, stats.opened)
        assert.equal(4, stats.max_open)
        assert.equal(4, stats.idle)
        pool:close()
        assert.equal(0, pool:stats().open)
      end, { timeout = 25 })
    end)

    it("queues a coroutine for wait_timeout seconds when every connection is busy", function()
      run(function()
        local pool = pg.pool{ conninfo = server.conninfo, size = 1, wait_timeout = 0.1 }
        local t = coserve.spawn(function() return pool:query("select pg_sleep(0.5)") end)
        assert.same({ nil, "timeout" }, { pool:query("select 1") })
        assert(t:join(2))
        assert.equal(1, pool:query("select 1 as one")[1].one)
        pool:close()
      end)
    end)
  end)

  describe("cancel", function()
    it("cancels a canceled task's pg_sleep(30) on the server within 2 s; the connection is reused", function()
      run(function()
        local watch = admin()
        local db = admin()
        local t = coserve.spawn(function() return db:query("select pg_sleep(30) -- cancel me") end)
        assert.is_true(eventually(2, function() return active(watch, "%cancel me%") == 1 end))
        local t0 = coserve.now()
        t:cancel()
        assert.same({ true, nil, "canceled" }, { t:join(1) })
        assert.is_true(eventually(2, function() return active(watch, "%cancel me%") == 0 end))
        assert.is_true(coserve.now() - t0 < 2)
        local pid = db:pid()
        assert.equal(1, db:query("select 1 as one")[1].one) -- the same connection, usable
        assert.equal(pid, db:pid())
        db:close()
        watch:close()
      end)
    end)

    it("cancels through a pool, which keeps its connection", function()
      run(function()
        local watch = admin()
        local pool = pg.pool{ conninfo = server.conninfo, size = 1 }
        local t = coserve.spawn(function() return pool:query("select pg_sleep(30) -- pool cancel") end)
        assert.is_true(eventually(2, function() return active(watch, "%pool cancel%") == 1 end))
        t:cancel()
        assert.same({ true, nil, "canceled" }, { t:join(1) })
        assert.equal(1, pool:query("select 1 as one")[1].one)
        assert.equal(0, active(watch, "%pool cancel%"))
        assert.equal(1, pool:stats().opened)
        pool:close()
        watch:close()
      end)
    end)

    it("cancels a query past its query_timeout and returns 'timeout'", function()
      run(function()
        local watch = admin()
        local db = assert(pg.connect(server.conninfo, { query_timeout = 0.2 }))
        assert.same({ nil, "timeout" }, { db:query("select pg_sleep(30) -- too slow") })
        assert.equal(1, db:query("select 1 as one")[1].one)
        assert.equal(0, active(watch, "%too slow%"))
        db:close()
        watch:close()
      end)
    end)
  end)

  describe("lost connections", function()
    it("returns an error for a backend terminated mid-query, and the pool replaces it", function()
      run(function()
        local watch = admin()
        local pool = pg.pool{ conninfo = server.conninfo, size = 1 }
        local pid = pool:query("select pg_backend_pid() as pid")[1].pid
        local t = coserve.spawn(function() return pool:query("select pg_sleep(10) -- doomed") end)
        assert.is_true(eventually(2, function() return active(watch, "%doomed%") == 1 end))
        assert.is_true(watch:query("select pg_terminate_backend($1) as ok", pid)[1].ok)
        local ok, rows, err, state = t:join(2)
        assert.is_true(ok)
        assert.is_nil(rows)
        assert.matches("terminating connection", err)
        assert.equal("57P01", state)
        local r = assert(pool:query("select pg_backend_pid() as pid"))
        assert.not_equal(pid, r[1].pid)
        assert.equal(2, pool:stats().opened)
        assert.equal(1, pool:stats().open)
        pool:close()
        watch:close()
      end)
    end)

    it("replaces an idle connection whose backend ended, without failing the next query", function()
      run(function()
        local watch = admin()
        local pool = pg.pool{ conninfo = server.conninfo, size = 1 }
        local pid = pool:query("select pg_backend_pid() as pid")[1].pid
        assert.is_true(watch:query("select pg_terminate_backend($1) as ok", pid)[1].ok)
        -- The backend's FATAL message reaches the idle connection's socket
        -- a moment later (the pool's internals, looked at with poll(2) to be
        -- sure it did).
        local fd = pool.idle[1].db.conn:socket()
        assert.is_true(eventually(2, function()
          local p = ffi.new("struct pollfd[1]", { { fd = fd, events = 1 --[[POLLIN]] } })
          return ffi.C.poll(p, 1, 0) == 1
        end))
        local rows, err = pool:query("select 1 as one")
        assert.same({ { one = 1 } }, rows, err)
        assert.equal(2, pool:stats().opened)
        pool:close()
        watch:close()
      end)
    end)
  end)

  describe("pool", function()
    it("closes a connection idle past idle_timeout, and one given back inside a transaction", function()
      run(function()
        local pool = pg.pool{ conninfo = server.conninfo, size = 2, idle_timeout = 0.1 }
        assert(pool:query("select 1"))
        coserve.sleep(0.2)
        assert(pool:query("select 1"))
        assert.equal(2, pool:stats().opened)
        local db = assert(pool:acquire())
        assert(db:query("begin"))
        pool:release(db)
        assert.equal(0, pool:stats().open)
        assert.equal("closed", db:status())
        assert.has_error(function() pool:release(db) end)
        pool:close()
      end)
    end)
  end)

  describe("the loop", function()
    it("is not kept alive by an open idle connection: the CLI exits when the app is done", function()
      local proc = dofile("spec/support/process.lua")
      local dir = proc.tmpdir()
      local app = proc.write(dir .. "/app.lua", ([[
        local pg = require "coserve.pg"
        local db = assert(pg.connect(%q))
        local pool = pg.pool{ conninfo = %q, size = 2 }
        assert(db:query("select 1"))
        assert(pool:query("select 1"))
        print("done")
      ]]):format(server.conninfo, server.conninfo))
      local r = proc.run({ proc.BIN, app }, { timeout = 10 })
      proc.rmdir(dir)
      assert.same({ 0, "done\n" }, { r.status, r.out }, r.err)
    end)
  end)

  describe("LISTEN/NOTIFY", function()
    it("waits for a notification, times out without one, and keeps those sent during a query", function()
      run(function()
        local listener = admin()
        local sender = admin()
        assert(listener:query("listen jobs"))
        assert.same({ nil, "timeout" }, { listener:wait_notify(0.1) })
        coserve.after(0.05, function() assert(sender:query("select pg_notify('jobs', $1)", "hello")) end)
        local n = assert(listener:wait_notify(2))
        assert.same({ channel = "jobs", payload = "hello", pid = sender:pid() }, n)
        -- Sent while the listener ran a query: kept for the next wait.
        assert(sender:query("notify jobs, 'during'"))
        assert(listener:query("select pg_sleep(0.05)"))
        assert.equal("during", assert(listener:wait_notify(0)).payload)
        -- Sent while nobody waited on the listener: kept too.
        assert(sender:query("notify jobs, 'idle'"))
        coserve.sleep(0.1)
        assert.equal("idle", assert(listener:wait_notify(1)).payload)
        listener:close()
        sender:close()
      end)
    end)
  end)
end)
