-- A JSON API over PostgreSQL through a connection pool (coserve.pg):
-- a price list. Each request runs in its own coroutine and borrows a
-- connection only for the length of one query; a request whose client goes
-- away mid-query has its query canceled on the server.
--
--   scripts/coserve examples/pg_api.lua [port [conninfo]]
--     port      default 8082; 0 picks one
--     conninfo  libpq's "key=value ..." or a postgresql:// URI; default
--               $PG_CONNINFO, else "host=/var/run/postgresql dbname=postgres"
--
--   GET    /items          -> [{"id":1,"name":"...","price":"12.50"}, ...]
--   POST   /items          {"name":"...","price":12.5} -> 201 {...} | 409 (name taken) | 422
--   GET    /items/:id      -> {...} | 404
--   DELETE /items/:id      -> 204 | 404
--   GET    /stats          -> the pool's counters
--
-- Prices are numeric(10,2): coserve.pg hands numeric over as a string, so
-- they reach JSON exactly ("12.50"), never rounded through a double.
local coserve = require "coserve"
local http = require "coserve.http"
local pg = require "coserve.pg"
local cjson = require "cjson.safe"

local port = tonumber(arg[1]) or 8082
local conninfo = arg[2] or os.getenv("PG_CONNINFO") or "host=/var/run/postgresql dbname=postgres"

local pool = pg.pool{ conninfo = conninfo, size = 8, idle_timeout = 30, wait_timeout = 5 }

local ok, err, state = pool:query([[
  create table if not exists items (
    id serial primary key,
    name text not null unique,
    price numeric(10, 2) not null check (price >= 0))]])
if not ok and state ~= "23505" then -- two starting at once may race on the type
  error("pg_api: cannot create the table: " .. tostring(err))
end

local app = http.server{ host = "127.0.0.1", port = port, max_body = 16 * 1024 }
local JSON = { ["content-type"] = "application/json" }

-- pg.null is the same value as cjson.null: SQL NULL becomes JSON null.
local function reply(res, status, value)
  res:send(status, JSON, value == nil and "" or cjson.encode(value))
end

-- A failed query: 503 with the database's message (a real service would
-- log it and say less).
local function db_error(res, err, sqlstate)
  reply(res, 503, { error = err, sqlstate = sqlstate })
end

app:route("GET", "/items", function(_, res)
  local rows, err, state = pool:query("select id, name, price from items order by id limit 100")
  if not rows then return db_error(res, err, state) end
  res:send(200, JSON, #rows == 0 and "[]" or cjson.encode(rows))
end)

app:route("POST", "/items", function(req, res)
  local input = cjson.decode(req:body() or "")
  if type(input) ~= "table" or type(input.name) ~= "string" or input.name == ""
     or type(input.price) ~= "number" or input.price < 0 then
    return reply(res, 422, { error = "name (a non-empty string) and price (>= 0) expected" })
  end
  -- $1 and $2 travel apart from the SQL: no quoting, no injection.
  local rows, err, state = pool:query(
    "insert into items (name, price) values ($1, $2) returning id, name, price",
    input.name, input.price)
  if not rows then
    if state == "23505" then return reply(res, 409, { error = "name taken" }) end
    return db_error(res, err, state)
  end
  res:header("location", "/items/" .. rows[1].id)
  reply(res, 201, rows[1])
end)

app:route("GET", "/items/:id", function(req, res)
  local id = tonumber(req.params.id)
  if not id then return reply(res, 404, { error = "no such item" }) end
  local rows, err, state = pool:query("select id, name, price from items where id = $1", id)
  if not rows then return db_error(res, err, state) end
  if not rows[1] then return reply(res, 404, { error = "no such item" }) end
  reply(res, 200, rows[1])
end)

app:route("DELETE", "/items/:id", function(req, res)
  local id = tonumber(req.params.id)
  if not id then return reply(res, 404, { error = "no such item" }) end
  local rows, info_or_err, state = pool:query("delete from items where id = $1", id)
  if not rows then return db_error(res, info_or_err, state) end
  if info_or_err.affected == 0 then return reply(res, 404, { error = "no such item" }) end
  res:send(204)
end)

app:route("GET", "/stats", function(_, res) reply(res, 200, pool:stats()) end)

local started, serr = true
coserve.spawn(function()
  started, serr = app:start()
  pool:close() -- after a graceful shutdown: the idle connections go too
end)
assert(started, serr)
print(("pg_api on %s:%d"):format(app.host, app.port))
io.stdout:flush()
