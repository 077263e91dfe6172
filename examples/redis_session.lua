-- Swoole's Redis scenario on coserve: every connection's handler talks to
-- Redis with OpenResty's lua-resty-redis (Debian: lua-nginx-redis, the
-- module nginx.redis) through coserve.ngx, unmodified. Per connection, in
-- order, always: connect to Redis, a slow step, store a value for this
-- connection, then read the client's request and answer it from Redis.
-- Thousands of connections interleave on one thread; each one's steps
-- still happen one after the other, as written.
--   scripts/coserve examples/redis_session.lua [port [redis_port [redis_host]]]
--   (defaults 9502, 6379, 127.0.0.1; port 0 picks one)
--
-- The protocol, one line each way:
--   client: whoami      server: the value stored for this connection
--                       (the client's own address, "127.0.0.1:51234")
--   client: anything else   server: -ERR unknown command
local coserve = require "coserve"
local ngx = require("coserve.ngx").install()   -- the global the library reads
local redis = require "nginx.redis"

local port = tonumber(arg[1]) or 9502
local redis_port = tonumber(arg[2]) or 6379
local redis_host = arg[3] or "127.0.0.1"

local server = coserve.server{ host = "127.0.0.1", port = port }

server:handle(function(conn)
  local r = redis:new()
  r:set_timeout(2000)                           -- milliseconds, as in ngx_lua
  local ok, err = r:connect(redis_host, redis_port)
  if not ok then
    conn:send("-ERR redis: " .. err .. "\n")
    return
  end

  ngx.sleep(0.02)                               -- the slow step (an upstream call, say)

  local ip, peer_port = conn:getpeername()
  local key = "redis_session:" .. ip .. ":" .. peer_port
  ok, err = r:set(key, ip .. ":" .. peer_port, "EX", 60)
  if not ok then
    conn:send("-ERR redis: " .. err .. "\n")
    return r:close()
  end

  local line = conn:receive("*l")
  if line == "whoami" then
    local value
    value, err = r:get(key)
    if value == ngx.null then value, err = nil, "lost" end
    conn:send(value and value .. "\n" or "-ERR redis: " .. err .. "\n")
  elseif line then
    conn:send("-ERR unknown command\n")
  end
  r:del(key)
  r:set_keepalive(10000, 100)                   -- back to the pool for the next connection
end)

local started, err = true
coserve.spawn(function() started, err = server:start() end)
assert(started, err)
print(("redis_session on %s:%d (redis at %s:%d)"):format(server.host, server.port,
  redis_host, redis_port))
io.stdout:flush()
