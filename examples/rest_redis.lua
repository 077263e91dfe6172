-- A small JSON API backed by Redis: coserve.http for HTTP, lua-cjson for
-- JSON, and OpenResty's lua-resty-redis (Debian: nginx.redis) through
-- coserve.ngx for Redis, with pooled connections.
--   scripts/coserve examples/rest_redis.lua [port [redis_port [redis_host]]]
--   (defaults 8082, 6379, 127.0.0.1; port 0 picks one)
--
--   GET    /items            -> {"items":{"name":value,...}}
--   PUT    /items/:name      {"value":...} -> {"name":...,"value":...}
--   GET    /items/:name      -> {"name":...,"value":...} | 404
--   DELETE /items/:name      -> 204 | 404
--   POST   /counters/:name   -> {"name":...,"value":N}   (INCR)
-- A Redis that cannot be reached or fails gives 502 {"error":...}.
local coserve = require "coserve"
local http = require "coserve.http"
local cjson = require "cjson.safe"
local ngx = require("coserve.ngx").install()
local redis = require "nginx.redis"

local redis_port = tonumber(arg[2]) or 6379
local redis_host = arg[3] or "127.0.0.1"
local ITEMS = "rest_redis:items"               -- a hash: name -> JSON value
local COUNTERS = "rest_redis:counter:"

local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8082,
                         max_body = 64 * 1024 }
local JSON = { ["content-type"] = "application/json" }

local function reply(res, status, value)
  res:send(status, JSON, value == nil and "" or cjson.encode(value))
end

-- Runs fn(red) on a pooled Redis connection; on a Redis error answers 502.
local function with_redis(res, fn)
  local red = redis:new()
  red:set_timeout(2000)
  local ok, err = red:connect(redis_host, redis_port)
  if not ok then return reply(res, 502, { error = "redis: " .. err }) end
  local result
  result, err = fn(red)
  if err then
    red:close()
    return reply(res, 502, { error = "redis: " .. err })
  end
  red:set_keepalive(10000, 50)
  return result
end

app:route("GET", "/items", function(_, res)
  with_redis(res, function(red)
    local flat, err = red:hgetall(ITEMS)
    if not flat then return nil, err end
    local items = {}
    for i = 1, #flat, 2 do items[flat[i]] = cjson.decode(flat[i + 1]) end
    res:send(200, JSON, next(items) == nil and '{"items":{}}' or cjson.encode({ items = items }))
    return true
  end)
end)

app:route("PUT", "/items/:name", function(req, res)
  local input = cjson.decode(req:body() or "")
  if type(input) ~= "table" or input.value == nil then
    return reply(res, 400, { error = 'a JSON object with "value" is expected' })
  end
  with_redis(res, function(red)
    local ok, err = red:hset(ITEMS, req.params.name, cjson.encode(input.value))
    if not ok then return nil, err end
    reply(res, 200, { name = req.params.name, value = input.value })
    return true
  end)
end)

app:route("GET", "/items/:name", function(req, res)
  with_redis(res, function(red)
    local v, err = red:hget(ITEMS, req.params.name)
    if not v then return nil, err end
    if v == ngx.null then
      reply(res, 404, { error = "no such item" })
    else
      reply(res, 200, { name = req.params.name, value = cjson.decode(v) })
    end
    return true
  end)
end)

app:route("DELETE", "/items/:name", function(req, res)
  with_redis(res, function(red)
    local n, err = red:hdel(ITEMS, req.params.name)
    if not n then return nil, err end
    if n == 0 then reply(res, 404, { error = "no such item" }) else reply(res, 204) end
    return true
  end)
end)

app:route("POST", "/counters/:name", function(req, res)
  with_redis(res, function(red)
    local n, err = red:incr(COUNTERS .. req.params.name)
    if not n then return nil, err end
    reply(res, 200, { name = req.params.name, value = n })
    return true
  end)
end)

local ok, err = true
coserve.spawn(function() ok, err = app:start() end)
assert(ok, err)
print(("rest_redis on %s:%d (redis at %s:%d)"):format(app.host or "127.0.0.1", app.port,
  redis_host, redis_port))
io.stdout:flush()
