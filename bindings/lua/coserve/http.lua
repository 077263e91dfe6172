-- coserve.http: an HTTP/1.1 server on coserve's TCP server.
--
--   local http = require "coserve.http"
--   local app = http.server{ host = "127.0.0.1", port = 8080 }
--   app:route("GET", "/hello/:name", function(req, res)
--     res:send(200, { ["content-type"] = "text/plain" }, "hello " .. req.params.name)
--   end)
--   app:start()
--
-- Requests are parsed by llhttp (coserve.core.http_parser); each connection
-- serves its requests in order (keep-alive, pipelining), so responses
-- leave in the order requests came.
local coserve = require "coserve"
local core = require "coserve.core"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local setmetatable, error, xpcall, select = setmetatable, error, xpcall, select
local lower, format, concat = string.lower, string.format, table.concat
local traceback = debug.traceback

local M = {}

local STATUS = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [206] = "Partial Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [411] = "Length Required", [413] = "Content Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [417] = "Expectation Failed",
  [422] = "Unprocessable Content", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}
M.STATUS = STATUS

-- The Date header's value, formatted once a second (in C: os.time would
-- stop LuaJIT from compiling the request path).
local http_date = core.http_date

-- "HTTP/1.1 200 OK\r\n" for each known status, built once.
local STATUS_LINE = {}
for code, text in pairs(STATUS) do STATUS_LINE[code] = format("HTTP/1.1 %d %s\r\n", code, text) end

---------------------------------------------------------------- headers

-- Request headers: names lowercased; repeated fields joined with ", ", as
-- RFC 9110 allows (Set-Cookie is a response header). Lookup is
-- case-insensitive: req.headers["Content-Type"] works.
local Headers = {
  __index = function(t, k)
    if type(k) == "string" then return rawget(t, lower(k)) end
  end,
}

local function make_headers(list)
  local h = {}
  for i = 1, #list, 2 do
    local k, v = lower(list[i]), list[i + 1]
    local old = h[k]
    h[k] = old and (old .. ", " .. v) or v
  end
  return setmetatable(h, Headers)
end

---------------------------------------------------------------- query

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

-- "a=1&b=x%20y&a=2" -> { a = "2", b = "x y" }: the last of repeated keys.
local function parse_query(q)
  local t = {}
  if q then
    for pair in q:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      t[unescape(k)] = unescape(v)
    end
  end
  return t
end
M.parse_query = parse_query

---------------------------------------------------------------- router

-- "/users/:id/files/:name" -> Lua pattern and the parameter names.
local function compile_route(path)
  local names = {}
  local pattern = "^" .. path:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    :gsub("/:([%w_]+)", function(name)
      names[#names + 1] = name
      return "/([^/]+)"
    end) .. "$"
  return pattern, names
end

---------------------------------------------------------------- request

local Request = {}

-- req.headers and req.query are built on first use: most handlers read
-- neither, and building them is a good part of a request's cost.
local request_mt = {
  __index = function(req, k)
    local v = Request[k]
    if v ~= nil then return v end
    if k == "headers" then
      v = make_headers(req._msg.headers)
    elseif k == "query" then
      v = parse_query(req._query)
    else
      return nil
    end
    rawset(req, k, v)
    return v
  end,
}

-- Reads the next piece of the body from the connection: the parser takes
-- only the bytes of this message, so a pipelined request stays buffered.
-- The message `m` (a request or a client's response) holds _conn, _parser,
-- _msg, _received, _done, _max and _timeout.
local function read_body_piece(req)
  if req._done then return nil end
  local conn = req._conn
  if req._expect_continue then
    req._expect_continue = false
    if not conn:send("HTTP/1.1 100 Continue\r\n\r\n") then return nil, "closed" end
  end
  while true do
    local bytes, err = conn:_peek(req._timeout)
    if not bytes then
      if err == "closed" and req._msg.body == "eof" then bytes = "" else
        -- The body stopped short: where the next request would start is
        -- unknown, so the connection cannot serve another one.
        req._done, req._broken = true, err
        return nil, err
      end
    end
    local data, used, complete = req._parser:body(bytes)
    if not data then
      req._done, req._bad = true, true
      return nil, used
    end
    conn:_consume(used)
    req._received = req._received + #data
    if req._received > req._max then
      req._done, req._too_large = true, true
      return nil, "too large"
    end
    if complete then req._done = true end
    if #data > 0 or complete then return data end
  end
end

-- req:reader() -> an iterator over the body's pieces; nil at the end.
-- On an error it returns nil, err.
function Request:reader()
  return function() return read_body_piece(self) end
end

local function read_whole_body(m)
  local parts = {}
  while true do
    local piece, err = read_body_piece(m)
    if not piece then
      if err then return nil, err end
      return concat(parts)
    end
    parts[#parts + 1] = piece
  end
end

-- req:body() -> the whole body (at most max_body bytes) | nil, err
function Request:body()
  if not self._body then
    local body, err = read_whole_body(self)
    if not body then return nil, err end
    self._body = body
  end
  return self._body
end

---------------------------------------------------------------- response

local Response = {}
Response.__index = Response

function Response:status(code)
  self._status = code
  return self
end

-- res:header(name, value): value nil removes; a table sends the field once
-- per element (Set-Cookie).
function Response:header(name, value)
  local h = self._headers
  if not h then
    h = {}
    self._headers = h
  end
  h[lower(name)] = value
  return self
end

local http_head = core.http_head

-- The response head, rendered in C (a pairs() loop here would keep LuaJIT
-- from compiling the request path). length: the body's, or nil to stream.
local function head_bytes(res, length, more_headers)
  local req = res._req
  local code = res._status
  local keep_alive = res._keep_alive and not req._app._draining
  local head, chunked
  head, chunked, res._keep_alive = http_head(
    STATUS_LINE[code] or format("HTTP/1.1 %d %s\r\n", code, STATUS[code] or "Unknown"),
    code, res._headers, more_headers, length or -1, req._msg.version == "1.0", keep_alive)
  res._chunked = chunked
  res._started = true
  return head
end

local function send_or_fail(res, data)
  local n, err = res._conn:send(data)
  if not n then
    res._failed = true
    return nil, err
  end
  return true
end

-- res:write(chunk): streams; the head goes with the first chunk, chunked
-- when no content-length header was set. Returns true | nil, err.
function Response:write(chunk)
  chunk = tostring(chunk)
  if self._finished then return nil, "response already sent" end
  local out = {}
  if not self._started then
    out[1] = head_bytes(self, self._headers and self._headers["content-length"] and true or nil)
  end
  if self._req._msg.method == "HEAD" or #chunk == 0 then
    if #out == 0 then return true end
  elseif self._chunked then
    out[#out + 1] = format("%x\r\n", #chunk)
    out[#out + 1] = chunk
    out[#out + 1] = "\r\n"
  else
    out[#out + 1] = chunk
  end
  return send_or_fail(self, out)
end

-- res:send([status,] [headers,] [body]): the whole response at once.
function Response:send(a, b, c)
  if self._finished or self._started then return nil, "response already sent" end
  if type(a) == "number" then
    self._status = a
    a, b = b, c
  end
  local body, more = a, nil
  if type(a) == "table" then
    more, body = a, b
  end
  body = body == nil and "" or tostring(body)
  self._finished = true
  local head = head_bytes(self, #body, more)
  if #body == 0 or self._req._msg.method == "HEAD" then return send_or_fail(self, head) end
  return send_or_fail(self, head .. body)
end

local function finish(res)
  if res._finished then return end
  res._finished = true
  if not res._started then
    return send_or_fail(res, head_bytes(res, 0))
  end
  if res._chunked and res._req._msg.method ~= "HEAD" then
    return send_or_fail(res, "0\r\n\r\n")
  end
end

---------------------------------------------------------------- server

local App = {}
App.__index = App

local DEFAULTS = {
  max_header = 16 * 1024, max_body = 8 * 1024 * 1024,
  header_timeout = 10, keepalive_timeout = 75, read_timeout = 60,
}

-- Answers with a status and closes: for requests we could not parse.
local function refuse(conn, code)
  local body = STATUS[code] .. "\n"
  conn:send(format("HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" ..
    "date: %s\r\nconnection: close\r\n\r\n%s", code, STATUS[code], #body, http_date(), body))
end

local function plain(res, code)
  res:send(code, { ["content-type"] = "text/plain" }, STATUS[code] .. "\n")
end

local NO_PARAMS = setmetatable({}, { __newindex = function() error("params are read-only") end })

local function find_route(app, method, path)
  -- Paths without :params are looked up directly and take precedence.
  local by_method = app._exact[path]
  if by_method then
    local handler = by_method[method] or by_method["*"] or (method == "HEAD" and by_method.GET)
    if handler then return handler, NO_PARAMS end
  end
  local allowed
  if by_method then
    allowed = {}
    for m in pairs(by_method) do
      allowed[#allowed + 1] = m
      if m == "GET" then allowed[#allowed + 1] = "HEAD" end
    end
  end
  for _, r in ipairs(app._routes) do
    local caps = { path:match(r.pattern) }
    if caps[1] ~= nil then
      if r.method == method or r.method == "*" or (method == "HEAD" and r.method == "GET") then
        local params = {}
        for k, name in ipairs(r.names) do params[name] = unescape(caps[k]) end
        return r.handler, params
      end
      allowed = allowed or {}
      allowed[#allowed + 1] = r.method
      if r.method == "GET" then allowed[#allowed + 1] = "HEAD" end
    end
  end
  return nil, allowed
end

local function handle_request(app, conn, parser, msg)
  local url = msg.url
  local q = url:find("?", 1, true)
  local path = q and url:sub(1, q - 1) or url
  local req = setmetatable({
    method = msg.method, path = path, url = url, version = msg.version, params = NO_PARAMS,
    conn = conn, _query = q and url:sub(q + 1):match("^[^#]*") or nil,
    _conn = conn, _app = app, _parser = parser, _msg = msg, _received = 0,
    _done = msg.body == "none", _max = app.max_body, _timeout = app.read_timeout,
  }, request_mt)
  local res = setmetatable({
    _conn = conn, _req = req, _status = 200,
    _keep_alive = msg.keep_alive and not app._draining,
  }, Response)
  req._expect_continue = msg.body ~= "none" and msg.version == "1.1"
    and lower(req.headers.expect or "") == "100-continue"

  if msg.length and msg.length > app.max_body then
    res._keep_alive = false
    plain(res, 413)
    return false
  end
  local handler, params = find_route(app, msg.method, path)
  if not handler then
    if params then
      res:header("allow", concat(params, ", "))
      plain(res, 405)
    else
      plain(res, 404)
    end
  else
    req.params = params
    local ok, err = xpcall(handler, traceback, req, res)
    if not ok then
      coserve.log("error", "http handler failed: " .. tostring(err))
      if res._started then
        return false -- the response is cut: the client sees the close
      end
      res._keep_alive = false
      res._headers = nil
      plain(res, 500)
    end
  end
  -- A body the handler could not read is answered for it, unless it did.
  if (req._too_large or req._bad or req._broken) and not res._started then
    res._keep_alive = false
    if req._broken ~= "closed" then
      plain(res, req._too_large and 413 or req._bad and 400 or 408)
    end
  end
  if res._hijacked then return false end -- the connection is the handler's now
  finish(res)
  if res._failed or not res._keep_alive or app._draining then return false end
  -- Whatever of the body the handler did not read is read and dropped, so
  -- that the next request starts where it should.
  while not req._done do
    if not read_body_piece(req) and not req._done then return false end
  end
  return not (req._bad or req._too_large or req._broken)
end

local function serve_connection(app, conn)
  local parser = core.http_parser("request")
  local first = true
  while true do
    -- Between requests a connection is idle: a shutdown closes it at once.
    app._idle[conn] = true
    local ok, err = conn:_peek(first and app.header_timeout or app.keepalive_timeout, 0)
    app._idle[conn] = nil
    if not ok and err == "interrupted" then
      -- A drain began while this connection was idle. A request its
      -- client had already sent is still answered (with connection:
      -- close): closing on it would turn into an error at the client.
      ok, err = conn:_peek(0.05, 0)
    end
    if not ok then
      if first and err == "timeout" then refuse(conn, 408) end
      return
    end
    -- The head must be complete header_timeout after its first byte
    -- arrived (the slowloris defence).
    local head
    head, err = conn:_receivehead(app.max_header, app.header_timeout)
    if not head then
      if err == "too large" then refuse(conn, 431)
      elseif err == "timeout" then refuse(conn, 408) end
      return
    end
    local msg
    msg, err = parser:head(head)
    if not msg then
      refuse(conn, err == "too many headers" and 431 or 400)
      return
    end
    if not handle_request(app, conn, parser, msg) then return end
    first = false
  end
end

-- http.server(opts): opts are coserve.server's plus max_header, max_body,
-- header_timeout, keepalive_timeout (seconds between requests).
function M.server(opts)
  local app = setmetatable({ _routes = {}, _exact = {},
                             _idle = setmetatable({}, { __mode = "k" }) }, App)
  local tcp_opts = {}
  for k, v in pairs(opts or {}) do
    if DEFAULTS[k] ~= nil then app[k] = v else tcp_opts[k] = v end
  end
  for k, v in pairs(DEFAULTS) do
    if app[k] == nil then app[k] = v end
  end
  -- The TCP server's read timeout is the HTTP layer's to choose per wait.
  tcp_opts.read_timeout = tcp_opts.read_timeout or app.read_timeout
  app._server = coserve.server(tcp_opts)
  app._server:handle(function(conn) serve_connection(app, conn) end)
  app._server:onshutdown(function()
    app._draining = true
    for conn in pairs(app._idle) do conn:_interrupt() end
  end)
  return app
end

-- app:route(method, path, handler(req, res)); method "*" matches any.
function App:route(method, path, handler)
  if type(handler) ~= "function" then error("bad argument #3 to 'route' (function expected)", 2) end
  method = method:upper()
  if not path:find("/:", 1, true) then
    local by_method = self._exact[path] or {}
    self._exact[path] = by_method
    by_method[method] = handler
    return self
  end
  local pattern, names = compile_route(path)
  self._routes[#self._routes + 1] =
    { method = method, pattern = pattern, names = names, handler = handler }
  return self
end

-- app:websocket(path, fn(ws [, req]) [, opts]): a WebSocket endpoint (RFC
-- 6455). opts.max_message (default 1 MiB). The connection closes when fn
-- returns.
function App:websocket(path, fn, opts)
  local websocket = require "coserve.websocket"
  return self:route("GET", path, function(req, res)
    local h = req.headers
    local key = h["sec-websocket-key"]
    if not (h.upgrade or ""):lower():find("websocket", 1, true)
       or not (h.connection or ""):lower():find("upgrade", 1, true)
       or not key or #key ~= 24 then
      return res:send(400, { ["content-type"] = "text/plain" }, "WebSocket handshake expected\n")
    end
    if h["sec-websocket-version"] ~= "13" then
      return res:send(426, { ["sec-websocket-version"] = "13" }, "")
    end
    res._hijacked = true
    local conn = req.conn
    local ok = conn:send("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n" ..
      "connection: Upgrade\r\nsec-websocket-accept: " .. websocket.accept_key(key) .. "\r\n\r\n")
    if not ok then return end
    local ws = websocket.new(conn, opts)
    fn(ws, req)
    ws:close()
  end)
end

-- app:start() -> true after shutdown | nil, err (as coserve.server's).
function App:start()
  self._draining = false
  return self._server:start()
end

function App:shutdown(grace) return self._server:shutdown(grace) end
function App:stats() return self._server:stats() end

-- app.port and app.host are the TCP server's (the bound port once started).
App.__index = function(app, k)
  local v = App[k]
  if v ~= nil then return v end
  if k == "port" or k == "host" then return app._server[k] end
end

---------------------------------------------------------------- client

-- "http://host:port/path?q" -> host, port, target
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if scheme ~= "http" then return nil end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  if target == "" then target = "/" end
  local host, port = authority:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil end
  return host, tonumber(port) or 80, target, authority
end

-- http.request{method =, url =, headers =, body =, timeout =, max_body =}
-- -> res {status, reason, version, headers (names lowercased), body}
--  | nil, err. Connections are kept alive in coserve's pool; redirects are
-- returned, not followed.
function M.request(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'request' (table expected)", 2) end
  local host, port, target, authority = parse_url(opts.url or "")
  if not host then return nil, "bad url (http://host[:port]/path expected)" end
  local method = (opts.method or "GET"):upper()
  local timeout = opts.timeout or 60
  local body = opts.body and tostring(opts.body) or nil
  local parts = { method, " ", target, " HTTP/1.1\r\n" }
  local has = {}
  for k, v in pairs(opts.headers or {}) do
    has[lower(k)] = true
    parts[#parts + 1] = k .. ": " .. tostring(v) .. "\r\n"
  end
  if not has.host then parts[#parts + 1] = "host: " .. authority .. "\r\n" end
  if body and not has["content-length"] then
    parts[#parts + 1] = "content-length: " .. #body .. "\r\n"
  end
  if not has["user-agent"] then parts[#parts + 1] = "user-agent: coserve\r\n" end
  parts[#parts + 1] = "\r\n"
  if body then parts[#parts + 1] = body end

  local conn, err = coserve.connect(host, port, { timeout = timeout })
  if not conn then return nil, err end
  conn:settimeouts(timeout, timeout, timeout)
  local ok
  ok, err = conn:send(parts)
  if not ok then conn:close() return nil, err end
  local head
  head, err = conn:_receivehead(64 * 1024, timeout)
  if not head then conn:close() return nil, err end
  local parser = core.http_parser("response")
  local msg
  msg, err = parser:head(head, method == "HEAD")
  if not msg then conn:close() return nil, "bad response: " .. tostring(err) end
  local m = { _conn = conn, _parser = parser, _msg = msg, _received = 0,
              _done = msg.body == "none", _max = opts.max_body or math.huge,
              _timeout = timeout }
  local data
  data, err = read_whole_body(m)
  if not data then conn:close() return nil, err end
  if msg.keep_alive and msg.body ~= "eof" then conn:setkeepalive() else conn:close() end
  local headers = {}
  for i = 1, #msg.headers, 2 do
    local k, v = lower(msg.headers[i]), msg.headers[i + 1]
    headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
  end
  return { status = msg.status, reason = msg.reason, version = msg.version,
           headers = headers, body = data }
end

return M
