-- Calls an HTTPS endpoint and prints the status and the body.
--   scripts/coserve examples/https_client.lua URL [--ca CA.pem] [--insecure]
-- The server's certificate is verified against the system's CAs (Debian's
-- ca-certificates) and the URL's host name; --ca PATH verifies against
-- that CA instead (a test CA, say); --insecure checks nothing (a
-- self-signed certificate: for tests only). Exit 1 if the request fails.
local coserve = require "coserve"
local http = require "coserve.http"

local url, tls = nil, {}
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--insecure" then
    tls.verify = false
  elseif a == "--ca" and arg[i + 1] then
    tls.ca = arg[i + 1]
    i = i + 1
  elseif not url and a:sub(1, 1) ~= "-" then
    url = a
  else
    url = nil
    break
  end
  i = i + 1
end
if not url then
  io.stderr:write("usage: https_client.lua URL [--ca CA.pem] [--insecure]\n")
  os.exit(2)
end

local res, err = http.request{ url = url, tls = tls, timeout = 10 }
coserve.close_idle() -- the pooled connection: close_notify, then it is gone
if not res then
  io.stderr:write("https_client: ", err, "\n")
  os.exit(1)
end
print(("status %d %s"):format(res.status, res.reason or ""))
io.write(res.body)
io.stdout:flush()
