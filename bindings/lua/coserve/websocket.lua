-- coserve.websocket: RFC 6455 on a coserve connection, server side.
--
-- coserve.http's app:websocket(path, fn) does the handshake and calls
-- fn(ws) with an object of this module:
--
--   app:websocket("/echo", function(ws)
--     while true do
--       local data, kind = ws:receive()
--       if not data then break end          -- "closed", "timeout", ...
--       ws:send(data, kind)
--     end
--   end)
--
-- Pings are answered, fragmented messages reassembled, the close
-- handshake done; frames from the client must be masked (RFC 6455 §5.1),
-- text must be UTF-8 (else 1007) and a close code one a peer may send
-- (else 1002).
local core = require "coserve.core"

local utf8_valid = core.utf8_valid

local band, bor, rshift, lshift = bit.band, bit.bor, bit.rshift, bit.lshift
local char, byte, concat = string.char, string.byte, table.concat
local setmetatable = setmetatable

local M = {}

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = lshift(a, 16) + lshift(b or 0, 8) + (c or 0)
    local q = {}
    for k = 1, 4 do
      local idx = band(rshift(n, 6 * (4 - k)), 63) + 1
      q[k] = B64:sub(idx, idx)
    end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = concat(q)
  end
  return concat(out)
end
M.base64 = base64

-- The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key.
function M.accept_key(key) return base64(core.sha1(key .. GUID)) end

local OP = { [0] = "continuation", [1] = "text", [2] = "binary",
             [8] = "close", [9] = "ping", [10] = "pong" }
local CODE = { text = 1, binary = 2, close = 8, ping = 9, pong = 10 }

local WebSocket = {}
WebSocket.__index = WebSocket

function M.new(conn, opts)
  return setmetatable({ conn = conn, max_message = opts and opts.max_message or 1024 * 1024,
                        timeout = opts and opts.timeout, closed = false, close_sent = false },
                      WebSocket)
end

-- One frame from the server: never masked.
local function frame(opcode, payload)
  local n = #payload
  local head
  if n < 126 then
    head = char(bor(0x80, opcode), n)
  elseif n < 65536 then
    head = char(bor(0x80, opcode), 126, rshift(n, 8), band(n, 255))
  else
    local hi = math.floor(n / 4294967296)
    head = char(bor(0x80, opcode), 127,
      band(rshift(hi, 24), 255), band(rshift(hi, 16), 255), band(rshift(hi, 8), 255), band(hi, 255),
      band(rshift(n, 24), 255), band(rshift(n, 16), 255), band(rshift(n, 8), 255), band(n, 255))
  end
  return { head, payload }
end

local function send_frame(ws, opcode, payload)
  if ws.close_sent then return nil, "closed" end
  if opcode == 8 then ws.close_sent = true end
  local ok, err = ws.conn:send(frame(opcode, payload))
  if not ok then return nil, err end
  return true
end

-- Fails the connection (§7.1.7): a close frame with the code, then close.
local function fail(ws, code, err)
  send_frame(ws, 8, char(rshift(code, 8), band(code, 255)))
  ws.conn:close()
  ws.closed = true
  return nil, err
end

-- Close codes a peer may send (§7.4): 1005, 1006 and 1015 only report.
local function valid_close_code(code)
  return (code >= 1000 and code <= 1003) or (code >= 1007 and code <= 1011)
    or (code >= 3000 and code <= 4999)
end

-- A complete message: text must be UTF-8.
local function message(ws, payload, kind)
  if kind == "text" and not utf8_valid(payload) then
    return fail(ws, 1007, "invalid UTF-8")
  end
  return payload, kind
end

-- Reads one frame: fin, opcode, payload (unmasked) | nil, err.
local function read_frame(ws)
  local conn, timeout = ws.conn, ws.timeout
  local h, err = conn:receive(2, timeout)
  if not h then return nil, err end
  local b1, b2 = byte(h, 1, 2)
  local fin, opcode = band(b1, 0x80) ~= 0, band(b1, 0x0f)
  if band(b1, 0x70) ~= 0 or not OP[opcode] then return fail(ws, 1002, "protocol error") end
  if band(b2, 0x80) == 0 then return fail(ws, 1002, "protocol error") end -- unmasked
  local n = band(b2, 0x7f)
  if opcode >= 8 and (n > 125 or not fin) then return fail(ws, 1002, "protocol error") end
  if n == 126 then
    local e = conn:receive(2, timeout)
    if not e then return nil, "closed" end
    n = lshift(byte(e, 1), 8) + byte(e, 2)
  elseif n == 127 then
    local e = conn:receive(8, timeout)
    if not e then return nil, "closed" end
    n = 0
    for i = 1, 8 do n = n * 256 + byte(e, i) end -- exact below 2^53; max_message is far less
  end
  if n > ws.max_message then return fail(ws, 1009, "too large") end
  local key = conn:receive(4, timeout)
  if not key then return nil, "closed" end
  local payload = ""
  if n > 0 then
    payload, err = conn:receive(n, timeout)
    if not payload then return nil, err end
    payload = core.ws_mask(payload, key)
  end
  return fin, opcode, payload
end

-- ws:receive() -> message, "text" | "binary"
--              | nil, "closed", code, reason | nil, err
function WebSocket:receive()
  if self.closed then return nil, "closed" end
  local parts, kind, size = nil, nil, 0
  while true do
    local fin, opcode, payload = read_frame(self)
    if fin == nil then
      if opcode == "closed" then self.closed = true end
      return nil, opcode
    end
    if opcode == 9 then
      send_frame(self, 10, payload)
    elseif opcode == 10 then -- pongs need no answer
    elseif opcode == 8 then
      local code, reason = 1005, ""
      if #payload >= 2 then
        code = lshift(byte(payload, 1), 8) + byte(payload, 2)
        reason = payload:sub(3)
        if not valid_close_code(code) then return fail(self, 1002, "protocol error") end
        if not utf8_valid(reason) then return fail(self, 1007, "invalid UTF-8") end
      elseif #payload == 1 then
        return fail(self, 1002, "protocol error")
      end
      if not self.close_sent then send_frame(self, 8, payload:sub(1, 2)) end
      self.conn:close()
      self.closed = true
      return nil, "closed", code, reason
    elseif opcode == 0 then
      if not parts then return fail(self, 1002, "protocol error") end
      size = size + #payload
      if size > self.max_message then return fail(self, 1009, "too large") end
      parts[#parts + 1] = payload
      if fin then return message(self, concat(parts), kind) end
    else
      if parts then return fail(self, 1002, "protocol error") end
      kind = OP[opcode]
      if fin then return message(self, payload, kind) end
      parts, size = { payload }, #payload
    end
  end
end

-- ws:send(data [, "text" | "binary"]) -> true | nil, err
function WebSocket:send(data, kind)
  return send_frame(self, CODE[kind or "text"] or 1, data)
end

-- ws:ping([data]) -> true | nil, err
function WebSocket:ping(data) return send_frame(self, 9, data or "") end

-- ws:close([code [, reason]]): the close handshake, then the connection
-- closes. Waits briefly for the client's close frame.
function WebSocket:close(code, reason)
  if self.closed then return true end
  code = code or 1000
  send_frame(self, 8, char(rshift(code, 8), band(code, 255)) .. (reason or ""))
  self.timeout = 1
  while true do
    local fin, opcode = read_frame(self)
    if fin == nil or opcode == 8 then break end
  end
  self.conn:close()
  self.closed = true
  return true
end

return M
