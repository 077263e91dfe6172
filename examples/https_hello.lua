-- The smallest HTTPS app: GET /hello/NAME over TLS.
--   scripts/coserve examples/https_hello.lua [port [cert.pem key.pem]]
-- port: default 8443 (0 picks one). Without cert and key it makes a
-- throw-away CA and a certificate for localhost with coserve.testing.tls()
-- and prints the CA's path, for a client to verify with:
--   curl --cacert CA https://localhost:PORT/hello/you
-- The throw-away files are removed when the server stops (SIGTERM, SIGINT).
local coserve = require "coserve"
local http = require "coserve.http"

local cert, key, certs = arg[2], arg[3], nil
if not cert then
  certs = require("coserve.testing").tls()
  cert, key = certs.cert, certs.key
end

local app = http.server{ host = "127.0.0.1", port = tonumber(arg[1]) or 8443,
                         tls = { cert = cert, key = key, alpn = { "http/1.1" } } }

app:route("GET", "/hello/:name", function(req, res)
  res:send(200, { ["content-type"] = "text/plain" },
    "hello " .. req.params.name .. " over " .. req.conn:tls().version .. "\n")
end)

local ok, err = true
coserve.spawn(function()
  ok, err = app:start()
  if certs then os.execute("rm -rf '" .. certs.dir .. "'") end
end)
assert(ok, err)
print(("https on %s:%d"):format(app.host, app.port))
if certs then print("ca " .. certs.ca) end
io.stdout:flush()
