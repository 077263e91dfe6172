-- Reads one HTTP/1.1 response from a coserve connection, as the specs'
-- raw clients need: status (a number), headers (names lowercased), body
-- (Content-Length or chunked) and the status line. head_only: a response
-- without a body (to HEAD, a 101).
--
--   local read_response = dofile("spec/support/http_response.lua")
return function(c, head_only)
  local status_line, err = c:receive("*l", 2)
  if not status_line then return nil, err end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d+)"))
  local headers = {}
  while true do
    local line = assert(c:receive("*l", 2))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  local body = ""
  if head_only then return status, headers, body, status_line end
  if headers["content-length"] then
    body = assert(c:receive(tonumber(headers["content-length"]), 2))
  elseif headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(c:receive("*l", 2)), 16)
      if size == 0 then assert(c:receive("*l", 2)) break end
      parts[#parts + 1] = assert(c:receive(size, 2))
      assert(c:receive("*l", 2))
    end
    body = table.concat(parts)
  end
  return status, headers, body, status_line
end
