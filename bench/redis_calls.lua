-- The Redis work of one request in scripts/bench redis (bench/redis.sh), the
-- same code in both servers: nginx + ngx_lua (content_by_lua) and coserve +
-- coserve.ngx (bench/redis_coserve.lua). OpenResty's lua-resty-redis as
-- Debian ships it (nginx.redis), a pooled connection, two round trips: SET
-- then GET of one key. Returns the value read ("Hello, World!"), or nil, err.
local redis = require "nginx.redis"

local VALUE = "Hello, World!"

return function(port)
  local red = redis:new()
  red:set_timeout(2000)
  local ok, err = red:connect("127.0.0.1", port)
  if not ok then return nil, "connect: " .. err end
  ok, err = red:set("coserve:bench", VALUE)
  if not ok then
    red:close()
    return nil, "set: " .. err
  end
  local value
  value, err = red:get("coserve:bench")
  if not value then
    red:close()
    return nil, "get: " .. err
  end
  red:set_keepalive(10000, 100)
  return value
end
