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
local setmetatable, rawget, rawset, error, xpcall = setmetatable, rawget, rawset, error, xpcall
local lower, format, find, sub, match, concat = string.lower, string.format, string.find,
  string.sub, string.match, table.concat
local traceback = debug.traceback

-- The connection and parser methods the request path calls, as locals:
-- a method call on a connection goes through its __index function.
local conn_methods = core.conn_methods
local peek, consume, send = conn_methods._peek, conn_methods._consume, conn_methods.send
local new_parser = core.http_parser
local parser_methods = core.http_parser_methods
local read_head, read_body, head_fields = parser_methods.read, parser_methods.body,
  parser_methods.headers
local http_respond = core.http_respond
local getpeername = conn_methods.getpeername
local now = core.now
local alog = require "coserve.alog"

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

---------------------------------------------------------------- bodies

-- A message body being read (a request's, or a client's response's):
-- conn, parser, kind ("length", "chunked" or "eof"), received, max,
-- timeout, done, err ("too large", "bad", or the read's error), expect
-- (a 100 Continue is owed before the first read) and res (a server's
-- response, answered at once when the body turns out too large or bad).
local function body_state(conn, parser, kind, max, timeout, expect, res)
  return { conn = conn, parser = parser, kind = kind, received = 0, max = max,
           timeout = timeout, done = false, err = false, expect = expect, res = res or false }
end

local refuse_body -- (b, code): defined with the responses below

-- Reads the next piece of the body from the connection: the parser takes
-- only the bytes of this message, so a pipelined request stays buffered.
-- Returns the piece, nil at the end, or nil, err.
local function read_body_piece(b)
  if b.done then return nil end
  local conn = b.conn
  if b.expect then
    b.expect = false
    if not send(conn, "HTTP/1.1 100 Continue\r\n\r\n") then return nil, "closed" end
  end
  while true do
    local bytes, err = peek(conn, b.timeout)
    if not bytes then
      if err == "closed" and b.kind == "eof" then bytes = "" else
        -- The body stopped short: where the next request would start is
        -- unknown, so the connection cannot serve another one.
        b.done, b.err = true, err
        return nil, err
      end
    end
    local data, used, complete = read_body(b.parser, bytes)
    if not data then
      b.done, b.err = true, "bad"
      refuse_body(b, 400)
      return nil, used
    end
    consume(conn, used)
    b.received = b.received + #data
    if b.received > b.max then
      b.done, b.err = true, "too large"
      refuse_body(b, 413)
      return nil, "too large"
    end
    if complete then b.done = true end
    if #data > 0 or complete then return data end
  end
end

local function read_whole_body(b)
  local parts = {}
  while true do
    local piece, err = read_body_piece(b)
    if not piece then
      if err then return nil, err end
      return concat(parts)
    end
    parts[#parts + 1] = piece
  end
end

---------------------------------------------------------------- request

-- A request: method, path, url, version, params, conn, and _parser (false
-- once the request is over: the parser holds the next head then) and _in
-- (the body's state; false when there is no body).
local Request = {}

-- A request id as nginx's $request_id: 32 hex digits, here a random
-- prefix per server and a counter (unique, and cheaper than 16 random
-- bytes per request).
local function request_id(app)
  local n = app._rid_n + 1
  app._rid_n = n
  if n == 1 then app._rid_prefix = alog.random_hex(8) or format("%016x", now() * 1e9) end
  return app._rid_prefix .. format("%016x", n)
end

-- req.headers, req.query and req.id are built on first use: most handlers
-- read none, and building them is a good part of a request's cost.
local request_mt = {
  __index = function(req, k)
    local v = Request[k]
    if v ~= nil then return v end
    if k == "headers" then
      if not req._parser then error("req.headers read after the request was handled", 2) end
      v = make_headers(head_fields(req._parser))
    elseif k == "query" then
      local q = find(req.url, "?", 1, true)
      v = parse_query(q and sub(req.url, q + 1):match("^[^#]*"))
    elseif k == "id" then
      if not req._parser then error("req.id read after the request was handled", 2) end
      local _, _, given = alog.fields(req._parser)
      v = given or request_id(req._app)
    else
      return nil
    end
    rawset(req, k, v)
    return v
  end,
}

-- req:reader() -> an iterator over the body's pieces; nil at the end.
-- On an error it returns nil, err.
function Request:reader()
  local b = self._in
  return function()
    if b then return read_body_piece(b) end
  end
end

-- req:body() -> the whole body (at most max_body bytes) | nil, err
function Request:body()
  local b = self._in
  if not b then return "" end
  if not b.whole then
    local body, err = read_whole_body(b)
    if not body then return nil, err end
    b.whole = body
  end
  return b.whole
end

---------------------------------------------------------------- response

-- A response: _conn, _req, _app, _status, _keep_alive, _headers (false
-- until res:header), _chunked, and _sent: false, then "head" once the
-- head went out, "all" once the response is complete, "hijacked" when a
-- WebSocket took the connection over.
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

-- Sends the head (rendered in C: a pairs() loop here would keep LuaJIT
-- from compiling the request path) and, if given, the body with it.
-- length: the body's; -1 to stream it chunked; -2 when a content-length
-- header is set. last: nothing follows.
local function respond(res, length, more, body, last)
  local version = res._req.version
  local keep_alive = res._keep_alive and not res._app._draining
  if length == -1 and version == "1.0" then
    length, keep_alive = -2, false -- the close ends the body
  end
  res._keep_alive, res._chunked, res._sent = keep_alive, length == -1, last and "all" or "head"
  local code = res._status
  local n, err = http_respond(res._conn, code, STATUS[code] or "Unknown", res._headers, more,
    length, not keep_alive and 1 or version == "1.0" and 2 or 0, body)
  if not n then
    res._keep_alive = false
    return nil, err
  end
  return true
end

-- res:write(chunk): streams; the head goes with the first chunk, chunked
-- when no content-length header was set. Returns true | nil, err.
function Response:write(chunk)
  chunk = tostring(chunk)
  local sent = self._sent
  if sent == "all" or sent == "hijacked" then return nil, "response already sent" end
  local head = self._req.method == "HEAD"
  if not sent then
    local length = self._headers and self._headers["content-length"] and -2 or -1
    if head or #chunk == 0 then return respond(self, length) end
    self._bytes = #chunk
    if length == -1 and self._req.version ~= "1.0" then
      chunk = format("%x\r\n", #chunk) .. chunk .. "\r\n"
    end
    return respond(self, length, nil, chunk)
  end
  if head or #chunk == 0 then return true end
  self._bytes = self._bytes + #chunk
  local n, err
  if self._chunked then
    n, err = send(self._conn, { format("%x\r\n", #chunk), chunk, "\r\n" })
  else
    n, err = send(self._conn, chunk)
  end
  if not n then
    self._keep_alive = false
    return nil, err
  end
  return true
end

-- res:send([status,] [headers,] [body]): the whole response at once.
function Response:send(a, b, c)
  if self._sent then return nil, "response already sent" end
  if type(a) == "number" then
    self._status = a
    a, b = b, c
  end
  local body, more = a, nil
  if type(a) == "table" then
    more, body = a, b
  end
  if type(body) ~= "string" then body = body == nil and "" or tostring(body) end
  if self._req.method == "HEAD" then return respond(self, #body, more, nil, true) end
  self._bytes = #body
  return respond(self, #body, more, body, true)
end

-- Completes the response the handler left unfinished.
local function finish(res)
  local sent = res._sent
  if not sent then return respond(res, 0, nil, nil, true) end
  if sent == "head" then
    res._sent = "all"
    if res._chunked and res._req.method ~= "HEAD" and not send(res._conn, "0\r\n\r\n") then
      res._keep_alive = false
    end
  end
end

---------------------------------------------------------------- server

local App = {}
App.__index = App

local DEFAULTS = {
  max_header = 16 * 1024, max_body = 8 * 1024 * 1024,
  header_timeout = 10, keepalive_timeout = 75, read_timeout = 60,
}

local PLAIN = { ["content-type"] = "text/plain" }

-- Answers with a status and closes: for requests we could not parse.
-- Returns the body's size.
local function refuse(conn, code)
  local body = STATUS[code] .. "\n"
  http_respond(conn, code, STATUS[code], PLAIN, nil, #body, 1, body)
  return #body
end

local function plain(res, code)
  res:send(code, PLAIN, STATUS[code] .. "\n")
end

-- A request body over max_body (announced or grown) or malformed is the
-- server's to answer, whatever the handler then does with read's error:
-- the status goes out now, unless the handler has begun a response, and
-- the handler's own response then finds it sent ("response already sent").
function refuse_body(b, code)
  local res = b.res
  if res and not res._sent then
    res._keep_alive = false
    plain(res, code)
  end
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

-- Serves one request whose head was just read; returns whether the
-- connection can go on to the next one.
local function handle_request(app, req, res)
  local handler, params = find_route(app, req.method, req.path)
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
      if res._sent then
        return false -- the response is cut: the client sees the close
      end
      res._keep_alive = false
      res._headers = false
      plain(res, 500)
    end
  end
  -- A body the handler could not read is answered for it, unless it did.
  local b = req._in
  if b and b.err and not res._sent then
    res._keep_alive = false
    if b.err ~= "closed" then
      plain(res, b.err == "too large" and 413 or b.err == "bad" and 400 or 408)
    end
  end
  if res._sent == "hijacked" then return false end -- the connection is the handler's now
  finish(res)
  if not res._keep_alive or app._draining then return false end
  if not b then return true end
  -- Whatever of the body the handler did not read is read and dropped, so
  -- that the next request starts where it should.
  while not b.done do
    if not read_body_piece(b) and not b.done then return false end
  end
  return not b.err
end

---------------------------------------------------------------- access log and metrics

-- After each request, app._observe (false unless there is an access log
-- or metrics) counts it in app._metrics and writes its access-log line.
-- Neither builds req.headers: the three fields a line needs are picked
-- from the head's list, and the line is formatted in C (coserve.alog).

-- Prometheus's default buckets, in seconds.
local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local NBUCKETS = #BUCKETS

local table_new = require "table.new"

local function new_metrics()
  local buckets = {}
  for i = 1, NBUCKETS + 1 do buckets[i] = 0 end -- the last one: +Inf
  return { requests = {}, methods = {}, buckets = buckets, sum = 0, count = 0 }
end

-- Counts one request: by method, then by status in an array made when
-- the method is first seen, so that a request adds to existing slots.
-- d is its duration, for the histogram; nil for a refused request.
local function count(m, method, status, d)
  local by_status = m.requests[method]
  if not by_status then
    by_status = table_new(600, 0)
    for i = 0, 599 do by_status[i] = 0 end
    m.requests[method] = by_status
    m.methods[#m.methods + 1] = method
  end
  by_status[status] = (by_status[status] or 0) + 1
  if not d then return end
  local i = 1
  while i <= NBUCKETS and d > BUCKETS[i] do i = i + 1 end
  local b = m.buckets
  b[i] = b[i] + 1
  m.sum = m.sum + d
  m.count = m.count + 1
end

local LOG_COMBINED, LOG_JSON, LOG_FUNCTION = 1, 2, 3

-- The C functions that format and buffer a line (runtime/alog.c), called
-- through LuaJIT's FFI: from compiled code, a Lua C function would end the
-- trace, which costs more than the line. Arguments: the writer, the parser
-- (both userdata, passed as their addresses), strings with their lengths.
local ffi = require "ffi"
local COMBINED_T = ffi.typeof("int (*)(void *, void *, const char *, size_t, const char *, " ..
  "size_t, const char *, size_t, const char *, size_t, double, double)")
local JSON_T = ffi.typeof("int (*)(void *, void *, const char *, size_t, const char *, " ..
  "size_t, const char *, size_t, double, double, double, const char *, size_t)")
local ffi_combined, ffi_json, ffi_clock = alog.ffi()
-- Seconds on a monotonic clock, as core.now, callable from compiled code.
local clock = ffi.cast("double (*)(void)", ffi_clock)

-- Calls the access log's function; its error is logged, not raised.
local function call_log(fn, entry)
  local ok, err = pcall(fn, entry)
  if not ok then coserve.log("error", "http access_log function failed: " .. tostring(err)) end
end

-- The function form's entry: a table per request.
local function log_function(app, fn, req, res, remote, status, d)
  local ua, ref = app._log_fields(req._parser)
  local url, query = req.url, nil
  local q = find(url, "?", 1, true)
  if q then query = sub(url, q + 1) end
  call_log(fn, {
    time = app._log_time(), remote = remote, method = req.method, path = req.path,
    query = query, url = url, version = req.version, status = status, bytes = res._bytes,
    duration = d, user_agent = ua, referer = ref, request_id = req.id,
  })
end

-- Counts the request and logs it; t0 is false when neither needs the
-- duration (a combined log alone). Returns the connection's peer address,
-- which the caller keeps for the connection's next requests.
local function observe(app, req, res, t0, remote)
  local status = res._status
  local d = t0 and clock() - t0
  local m = app._metrics
  if m then count(m, req.method, status, d) end
  local log = app._log
  if not log then return remote end
  if not remote then remote = getpeername(req.conn) or "-" end
  local kind = app._log_kind
  local method, url = req.method, req.url
  if kind == LOG_COMBINED then
    local version = req.version
    app._log_combined(log, req._parser, remote, #remote, method, #method, url, #url, version,
      #version, status, res._bytes)
  elseif kind == LOG_JSON then
    local id = rawget(req, "id") -- the one the handler saw, if it asked
    app._log_json(log, req._parser, remote, #remote, method, #method, url, #url, status,
      res._bytes, d, id, id and #id or 0)
  else
    log_function(app, log, req, res, remote, status, d)
  end
  return remote
end

-- HTTP's methods, as llhttp would have parsed them (RFC 9110 and PATCH):
-- a refused request's method when its line begins with one. Anything
-- else counts as "", so that junk cannot make new metric series.
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
                  CONNECT = true, OPTIONS = true, TRACE = true, PATCH = true }

-- Counts and logs a request refused before it was parsed (400, 408, 431),
-- from got, the bytes that had come; bytes is the size of the answer's
-- body. Neither has a duration.
local function observe_refusal(app, conn, got, status, bytes)
  local method = match(got, "^(%u+) ")
  if not METHODS[method] then method = "" end
  if app._metrics then count(app._metrics, method, status, nil) end
  local log = app._log
  if not log then return end
  local remote = getpeername(conn) or "-"
  if app._log_kind ~= LOG_FUNCTION then
    log:refused(app._log_kind == LOG_JSON, remote, got, method, status, bytes)
    return
  end
  local ua, ref, id = app._log_fields(got)
  call_log(log, {
    time = app._log_time(), remote = remote, method = method ~= "" and method or nil,
    request = match(got, "^[^\r\n]*"), status = status, bytes = bytes, user_agent = ua,
    referer = ref, request_id = id or request_id(app), refused = true,
  })
end

-- Sets up app's access log from http.server's options.
local function open_access_log(app, target, fmt)
  fmt = fmt or "combined"
  if fmt ~= "combined" and fmt ~= "json" then
    error("bad access_log_format '" .. tostring(fmt) .. "' (\"combined\" or \"json\")", 3)
  end
  if type(target) == "function" then
    app._log, app._log_kind, app._log_time, app._log_fields =
      target, LOG_FUNCTION, alog.time, alog.fields
  elseif type(target) == "string" then
    -- Opened now, so that a path that cannot be opened fails here; closed
    -- when app:start() returns, opened again by the next start().
    local w, err = alog.open(target)
    if not w then error("cannot open access_log " .. target .. ": " .. tostring(err), 3) end
    app._log, app._log_kind, app._log_path = w, fmt == "json" and LOG_JSON or LOG_COMBINED, target
    app._log_combined, app._log_json = ffi.cast(COMBINED_T, ffi_combined),
      ffi.cast(JSON_T, ffi_json)
  else
    error("bad access_log (a path, \"stderr\" or a function expected)", 3)
  end
  app._observe = observe
  app._timed = app._timed or app._log_kind ~= LOG_COMBINED
end

local function label_pairs(worker, extra)
  if worker then
    return extra and ("{worker=\"" .. worker .. "\"," .. extra .. "}") or ("{worker=\"" .. worker .. "\"}")
  end
  return extra and ("{" .. extra .. "}") or ""
end

local function rss_bytes(page_size)
  local f = io.open("/proc/self/statm", "r")
  if not f then return nil end
  local s = f:read("*l")
  f:close()
  local pages = s and tonumber(s:match("^%d+%s+(%d+)"))
  return pages and pages * page_size
end

-- The Prometheus text exposition format (0.0.4) of app's figures.
local function render_metrics(app)
  local m = app._metrics
  local w = coserve.worker_id()
  w = w > 0 and tostring(w) or nil
  local out = {}
  local function add(s) out[#out + 1] = s end
  add("# HELP coserve_http_requests_total HTTP requests answered, by method and status.\n")
  add("# TYPE coserve_http_requests_total counter\n")
  local methods = {}
  for i, method in ipairs(m.methods) do methods[i] = method end
  table.sort(methods)
  for _, method in ipairs(methods) do
    local by_status = m.requests[method]
    local codes = {}
    for code, n in pairs(by_status) do
      if n > 0 then codes[#codes + 1] = code end
    end
    table.sort(codes)
    for _, code in ipairs(codes) do
      add(format("coserve_http_requests_total%s %d\n",
        label_pairs(w, format("method=\"%s\",status=\"%d\"", method, code)), by_status[code]))
    end
  end
  add("# HELP coserve_http_request_duration_seconds Time from a request's head to the end of its response.\n")
  add("# TYPE coserve_http_request_duration_seconds histogram\n")
  local cumulative = 0
  for i = 1, NBUCKETS + 1 do
    cumulative = cumulative + m.buckets[i]
    local le = i <= NBUCKETS and format("%g", BUCKETS[i]) or "+Inf"
    add(format("coserve_http_request_duration_seconds_bucket%s %d\n",
      label_pairs(w, "le=\"" .. le .. "\""), cumulative))
  end
  add(format("coserve_http_request_duration_seconds_sum%s %.9g\n", label_pairs(w), m.sum))
  add(format("coserve_http_request_duration_seconds_count%s %d\n", label_pairs(w), m.count))
  local stats = core.stats()
  local gauges = {
    { "coserve_connections_open", "Connections open on this server.",
      app._server:stats().connections },
    { "coserve_tasks", "Coroutines (tasks) alive in this process.", stats.tasks },
    { "coserve_lua_heap_bytes", "Bytes in use by the Lua heap.", collectgarbage("count") * 1024 },
    { "process_resident_memory_bytes", "Resident memory size in bytes.",
      rss_bytes(app._page_size) },
  }
  for _, g in ipairs(gauges) do
    if g[3] then
      add(format("# HELP %s %s\n# TYPE %s gauge\n%s%s %.0f\n", g[1], g[2], g[1], g[1],
        label_pairs(w), g[3]))
    end
  end
  return concat(out)
end

local METRICS_HEADERS = { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" }

-- http.metrics(app) -> handler(req, res) serving app's figures in the
-- Prometheus text format: app:route("GET", "/metrics", http.metrics(app)).
-- Counting starts with this call. Under -w N each worker counts its own
-- and labels them worker="k"; a scrape sees the worker it reached.
function M.metrics(app)
  if type(app) ~= "table" or not app._server then
    error("bad argument #1 to 'metrics' (http.server expected)", 2)
  end
  if not app._metrics then
    app._metrics = new_metrics()
    app._page_size = alog.page_size()
    app._observe, app._timed = observe, true
  end
  return function(_, res)
    res:send(200, METRICS_HEADERS, render_metrics(app))
  end
end

local function serve_connection(app, conn)
  local parser = new_parser("request")
  local first = true
  local remote -- the peer's address, once an access log asked for it
  while true do
    -- Between requests a connection is idle (a shutdown interrupts it);
    -- a head must be complete header_timeout after its first byte (the
    -- slowloris defence). A new connection is not idle: its client sent,
    -- or is sending, a request, which is served even if a drain begins
    -- (a reload's old worker may have accepted it an instant before), and
    -- its head has header_timeout from the accept.
    local max, timeout = app.max_header, app.header_timeout
    local method, url, version, keep_alive, body, length =
      read_head(parser, conn, max, timeout, false, not first and app.keepalive_timeout or nil)
    -- "interrupted": a drain began while this connection was idle and
    -- nothing of a next request had come (the server serves one that had:
    -- see server_interrupt_idle), so it closes without a byte.
    -- Else a refusal: what had come is the third value.
    if not method then
      local code = method == false and (url == "too many headers" and 431 or 400)
        or url == "too large" and 431
        or url == "timeout" and (first or version ~= "") and 408
      if code then
        local bytes = refuse(conn, code)
        if app._observe then observe_refusal(app, conn, version, code, bytes) end
      end
      return
    end
    local observe_ = app._observe
    local t0 = observe_ and app._timed and clock()
    local q = find(url, "?", 1, true)
    local req = setmetatable({
      method = method, path = q and sub(url, 1, q - 1) or url, url = url, version = version,
      params = NO_PARAMS, conn = conn, _parser = parser, _in = false, _app = app,
    }, request_mt)
    local res = setmetatable({
      _conn = conn, _req = req, _app = app, _status = 200,
      _keep_alive = keep_alive and not app._draining, _headers = false, _chunked = false,
      _sent = false, _bytes = 0,
    }, Response)
    local again
    if length and length > app.max_body then
      res._keep_alive = false
      plain(res, 413)
    else
      if body ~= "none" then
        req._in = body_state(conn, parser, body, app.max_body, app.read_timeout,
          version == "1.1" and lower(req.headers.expect or "") == "100-continue", res)
      end
      again = handle_request(app, req, res)
    end
    if observe_ then remote = observe_(app, req, res, t0, remote) end
    req._parser = false
    if not again then return end
    first = false
  end
end

-- http.server(opts): opts are coserve.server's plus max_header, max_body,
-- header_timeout, keepalive_timeout (seconds between requests), access_log
-- (a path, "stderr" or a function(entry)) and access_log_format
-- ("combined", nginx's, or "json").
function M.server(opts)
  local app = setmetatable({ _routes = {}, _exact = {}, _observe = false, _metrics = false,
    _log = false, _timed = false, _rid_n = 0 }, App)
  local tcp_opts = {}
  local access_log, access_log_format
  for k, v in pairs(opts or {}) do
    if k == "access_log" then access_log = v
    elseif k == "access_log_format" then access_log_format = v
    elseif DEFAULTS[k] ~= nil then app[k] = v else tcp_opts[k] = v end
  end
  if access_log ~= nil then open_access_log(app, access_log, access_log_format) end
  for k, v in pairs(DEFAULTS) do
    if app[k] == nil then app[k] = v end
  end
  -- The TCP server's read timeout is the HTTP layer's to choose per wait.
  tcp_opts.read_timeout = tcp_opts.read_timeout or app.read_timeout
  app._server = coserve.server(tcp_opts)
  app._server:handle(function(conn) serve_connection(app, conn) end)
  app._server:onshutdown(function() app._draining = true end)
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
    res._sent, res._status = "hijacked", 101
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
  local path = self._log_path
  if path and not self._log then
    local w, err = require("coserve.alog").open(path)
    if not w then return nil, "cannot open access_log " .. path .. ": " .. tostring(err) end
    self._log = w
  end
  local ok, err = self._server:start()
  -- The access log's last lines are written, and its file closed.
  if path and self._log then
    self._log:close()
    self._log = false
  end
  return ok, err
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

-- "http[s]://host:port/path?q" -> host, port, target, authority, https
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  scheme = scheme and lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then return nil end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  if target == "" then target = "/" end
  local host, port = authority:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil end
  local https = scheme == "https"
  return host, tonumber(port) or (https and 443 or 80), target, authority, https
end

-- http.request{method =, url =, headers =, body =, timeout =, max_body =,
-- tls =} -> res {status, reason, version, headers (names lowercased), body}
--  | nil, err. Connections are kept alive in coserve's pool; redirects are
-- returned, not followed. An https:// URL is verified against the system's
-- CAs and the URL's host; tls = coserve.connect's tls options (ca =,
-- verify = false, cert =, key =, ...) changes that.
function M.request(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'request' (table expected)", 2) end
  local host, port, target, authority, https = parse_url(opts.url or "")
  if not host then return nil, "bad url (http[s]://host[:port]/path expected)" end
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

  local tls
  if https then
    tls = { server_name = host }
    for k, v in pairs(opts.tls or {}) do tls[k] = v end
  end
  local conn, err = coserve.connect(host, port, { timeout = timeout, tls = tls })
  if not conn then return nil, err end
  conn:settimeouts(timeout, timeout, timeout)
  local ok
  ok, err = conn:send(parts)
  if not ok then conn:close() return nil, err end
  local parser = new_parser("response")
  local status, reason, version, keep_alive, kind =
    read_head(parser, conn, 64 * 1024, timeout, method == "HEAD")
  if not status then
    conn:close()
    if status == false then return nil, "bad response: " .. reason end
    return nil, reason
  end
  local data = ""
  if kind ~= "none" then
    data, err = read_whole_body(body_state(conn, parser, kind, opts.max_body or math.huge,
      timeout, false))
  end
  if not data then conn:close() return nil, err end
  local headers = make_headers(head_fields(parser))
  if keep_alive and kind ~= "eof" then conn:setkeepalive() else conn:close() end
  return { status = status, reason = reason, version = version,
           headers = headers, body = data }
end

return M
