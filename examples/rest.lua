-- A small JSON API kept in memory: a to-do list.
--   scripts/coserve examples/rest.lua [port]        (default 8081; 0 picks one)
--
--   GET    /todos          -> [{"id":1,"title":"..."}, ...]
--   POST   /todos          {"title":"..."} -> 201 {"id":N,"title":"..."}
--   GET    /todos/:id      -> {"id":N,...} | 404
--   PUT    /todos/:id      {"title":"...","done":true} -> {"id":N,...} | 404
--   DELETE /todos/:id      -> 204 | 404
local coserve = require "coserve"
local http = require "coserve.http"
local cjson = require "cjson.safe"

local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8081,
                         max_body = 64 * 1024 }
local todos, order, next_id = {}, {}, 1
local JSON = { ["content-type"] = "application/json" }

local function reply(res, status, value)
  res:send(status, JSON, value == nil and "" or cjson.encode(value))
end

-- The request's JSON object, or nil after answering 400 for it.
local function json_body(req, res)
  local body = req:body()
  local value = body and cjson.decode(body)
  if type(value) ~= "table" then
    reply(res, 400, { error = "a JSON object is expected" })
    return nil
  end
  return value
end

app:route("GET", "/todos", function(_, res)
  local list = {}
  for _, id in ipairs(order) do list[#list + 1] = todos[id] end
  res:send(200, JSON, #list == 0 and "[]" or cjson.encode(list))
end)

app:route("POST", "/todos", function(req, res)
  local input = json_body(req, res)
  if not input then return end
  if type(input.title) ~= "string" or input.title == "" then
    return reply(res, 422, { error = "title must be a non-empty string" })
  end
  local todo = { id = next_id, title = input.title, done = false }
  todos[todo.id], order[#order + 1], next_id = todo, todo.id, next_id + 1
  res:header("location", "/todos/" .. todo.id)
  reply(res, 201, todo)
end)

local function find(req, res)
  local todo = todos[tonumber(req.params.id)]
  if not todo then reply(res, 404, { error = "no such todo" }) end
  return todo
end

app:route("GET", "/todos/:id", function(req, res)
  local todo = find(req, res)
  if todo then reply(res, 200, todo) end
end)

app:route("PUT", "/todos/:id", function(req, res)
  local todo = find(req, res)
  if not todo then return end
  local input = json_body(req, res)
  if not input then return end
  if type(input.title) == "string" and input.title ~= "" then todo.title = input.title end
  if type(input.done) == "boolean" then todo.done = input.done end
  reply(res, 200, todo)
end)

app:route("DELETE", "/todos/:id", function(req, res)
  local todo = find(req, res)
  if not todo then return end
  todos[todo.id] = nil
  for i, id in ipairs(order) do
    if id == todo.id then table.remove(order, i) break end
  end
  res:send(204)
end)

local ok, err = true
coserve.spawn(function() ok, err = app:start() end)
assert(ok, err)
print(("rest on %s:%d"):format(app.host, app.port))
io.stdout:flush()
