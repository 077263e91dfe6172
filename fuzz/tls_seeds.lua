-- Makes the seed corpus of fuzz/tls_server (see the input format there):
--   build/coserve fuzz/tls_seeds.lua [DIR]      (DIR: fuzz/corpus/tls_server)
-- Real client flights: `openssl s_client` (TLS 1.2 and 1.3, several
-- groups, suites, SNI, ALPN, client certificates, resumption, early data,
-- renegotiation and key updates, small fragments) talks to a coserve TLS
-- server through a recording proxy here; what the client sent first (its
-- ClientHello) and all it sent are written as raw-mode seeds, what it sent
-- after the ClientHello as a hello-mode seed (TLS 1.2 and client
-- certificates: the other later flights are ciphertext). Then hand-written programs
-- for the session mode. Files are named by what they hold, so running it
-- again replaces them; regress_* seeds are left alone.
local coserve = require "coserve"
local testing = require "coserve.testing"

local dir = arg[1] or "fuzz/corpus/tls_server"
local certs = testing.tls()
local other_cert, other_key = certs.make("other.test", { san = "DNS:other.test" })

local function write(name, data)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end

local function capture_all()
  local tls_server = coserve.server{ host = "127.0.0.1", port = 0, tls = {
    cert = certs.cert, key = certs.key, ca = certs.ca, verify = "optional",
    alpn = { "http/1.1" }, sni = { ["other.test"] = { cert = other_cert, key = other_key } } } }
  tls_server:handle(function(conn)
    while true do
      local line = conn:receive()
      if not line then return end
      conn:send(line .. "\n")
    end
  end)
  coserve.spawn(function() return tls_server:start() end)

  -- The proxy records what the client sends: first its first flight (all
  -- before the server's first answer), then everything.
  local captured = coserve.channel(1)
  local proxy = coserve.server{ host = "127.0.0.1", port = 0 }
  proxy:handle(function(conn)
    local up = assert(coserve.connect("127.0.0.1", tls_server.port))
    local answered, first, all = false, {}, {}
    local back = conn:spawn(function()
      while true do
        local data = up:receiveany(65536, 10)
        if not data then return end
        answered = true
        if not conn:send(data) then return end
      end
    end)
    while true do
      local data = conn:receiveany(65536, 10)
      if not data then break end
      if not answered then first[#first + 1] = data end
      all[#all + 1] = data
      if not up:send(data) then break end
    end
    up:close()
    back:join(1)
    captured:push({ first = table.concat(first), all = table.concat(all) })
  end)
  coserve.spawn(function() return proxy:start() end)

  local sess = certs.dir .. "/sess"
  local early = certs.dir .. "/early"
  local f = assert(io.open(early, "w"))
  f:write("early\n")
  f:close()
  local cc = ("-cert %s -key %s"):format(certs.client_cert, certs.client_key)
  -- name, stdin, s_client options
  local clients = {
    { "tls13", "hello\n", "-tls1_3" },
    { "tls12", "hello\n", "-tls1_2" },
    { "tls13_sni_alpn", "hello\n", "-tls1_3 -servername other.test -alpn http/1.1" },
    { "tls12_sni_alpn", "hello\n", "-tls1_2 -servername other.test -alpn h2,http/1.1" },
    { "tls13_unknown_sni", "hello\n", "-tls1_3 -servername nowhere.test -alpn h2" },
    { "tls13_p384", "hello\n", "-tls1_3 -curves P-384" },
    { "tls13_p256", "hello\n", "-tls1_3 -curves P-256:X25519" },
    { "tls13_x448", "hello\n", "-tls1_3 -curves X448" },
    { "tls13_ffdhe", "hello\n", "-tls1_3 -curves ffdhe2048" },
    { "tls12_p521", "hello\n", "-tls1_2 -curves P-521" },
    { "tls13_chacha", "hello\n", "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256" },
    { "tls13_aes256", "hello\n", "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384" },
    { "tls12_chacha", "hello\n", "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305" },
    { "tls12_cbc", "hello\n", "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA" },
    { "tls12_cbc_sha384", "hello\n", "-tls1_2 -cipher ECDHE-ECDSA-AES256-SHA384" },
    { "tls12_cbc_noetm", "hello\n", "-tls1_2 -cipher ECDHE-ECDSA-AES256-SHA -no_etm" },
    { "tls12_rsa_only", "hello\n", "-tls1_2 -cipher AES128-GCM-SHA256" },
    { "tls13_client_cert", "hello\n", "-tls1_3 " .. cc },
    { "tls12_client_cert", "hello\n", "-tls1_2 " .. cc },
    { "tls12_client_cert_frag", "hello\n", "-tls1_2 -max_send_frag 512 " .. cc },
    { "tls13_client_cert_frag", "hello\n", "-tls1_3 -max_send_frag 512 " .. cc },
    { "tls13_sigalgs", "hello\n", "-tls1_3 -sigalgs ECDSA+SHA256:RSA-PSS+SHA256" },
    { "tls12_no_ticket", "hello\n", "-tls1_2 -no_ticket" },
    { "tls12_status", "hello\n", "-tls1_2 -status -servername localhost" },
    { "tls13_keyupdate", "hello\nk\nagain\n", "-tls1_3" },
    { "tls13_keyupdate_req", "hello\nK\nagain\n", "-tls1_3" },
    { "tls12_reneg", "hello\nR\nagain\n", "-tls1_2" },
    { "tls13_sess_new", "hello\n", "-tls1_3 -sess_out " .. sess },
    { "tls13_resume", "hello\n", "-tls1_3 -sess_in " .. sess },
    { "tls13_early_data", "", "-tls1_3 -sess_in " .. sess .. " -early_data " .. early },
    { "tls12_sess_new", "hello\n", "-tls1_2 -sess_out " .. sess .. "12" },
    { "tls12_resume", "hello\n", "-tls1_2 -sess_in " .. sess .. "12" },
    { "tls12_resume_no_ticket", "hello\n", "-tls1_2 -no_ticket -sess_in " .. sess .. "12" },
    { "tls_any", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "" },
  }
  local n = 0
  for _, cl in ipairs(clients) do
    local name, input, opts = cl[1], cl[2], cl[3]
    -- (the sleep lets the client read the server's answers and tickets)
    local cmd = ("(printf '%%s' '%s'; sleep 0.3) | timeout 5 openssl s_client -connect 127.0.0.1:%d %s" ..
      " >/dev/null 2>&1 &"):format(input:gsub("\r", "\\r"):gsub("\n", "\\n"), proxy.port, opts)
    os.execute(cmd)
    local got = captured:pop(8)
    if not got or #got.first == 0 then
      io.stderr:write("tls_seeds: nothing captured for ", name, "\n")
    else
      n = n + 1
      local tls12 = opts:find("-tls1_2", 1, true) and 0x40 or 0
      -- raw: the ClientHello in one write; the whole flight in three
      write("ch_" .. name, "\0\0\0" .. got.first)
      write("flight_" .. name, "\8\128\0" .. got.all)
      if #got.all > #got.first and (tls12 ~= 0 or name:find("cert", 1, true)) then
        -- hello mode: a live ClientHello, then this client's later flights
        -- (TLS 1.2's are plaintext up to Finished, and client certificates)
        write("hello_" .. name, string.char(2 + tls12, 0, 0) .. got.all:sub(#got.first + 1))
      end
    end
    coserve.sleep(0.05)
  end
  proxy:shutdown()
  tls_server:shutdown()
  return n
end

local n = capture_all() -- the CLI runs this file in a coroutine
os.execute("rm -rf '" .. certs.dir .. "'")

-- Session mode: op byte, length, data (see run_ops in fuzz/tls_server.c).
local function op(kind, data, hi)
  return string.char((hi or 0) * 8 + kind, #data) .. data
end
local S13, S12, EXTRAS = 3, 3 + 0x40, 0x80
local programs = {
  lines = { S13, op(0, "hello\nworld\r\n") },
  lines12 = { S12, op(0, "hello\nworld\n") },
  lines_extras = { S13 + EXTRAS, op(0, "t\nhello\n") },
  lines12_extras = { S12 + EXTRAS, op(0, "t\nhello\n") },
  nbytes = { S13, op(0, "n5\nabcdeline\n") },
  nbytes_split = { S13, op(0, "n12\nabc") .. op(6, "") .. op(0, "defghijkl\nx\n") },
  yields = { S13, op(0, "a\n") .. op(6, "") .. op(0, "b") .. op(6, "") .. op(0, "\nc\n") },
  version = { S12, op(0, "t\n") },
  quit = { S13, op(0, "one\nq\ntwo\n") },
  close_notify = { S13, op(0, "one\n") .. op(5, "") .. op(0, "lost\n") },
  close_notify_garbage = { S12, op(0, "one\n") .. op(5, "") .. op(1, "\23\3\3\0\5abcde") },
  keyupdate = { S13, op(0, "one\n") .. op(4, "two\n") .. op(0, "three\n") },
  keyupdate_req = { S13, op(0, "one\n") .. op(4, "two\n", 1) .. op(6, "") .. op(0, "3\n") },
  keyupdate_alone = { S13, op(4, "") .. op(4, "", 1) .. op(0, "x\n") },
  reneg12 = { S12, op(0, "one\n") .. op(4, "") .. op(0, "two\n") },
  garbage = { S13, op(0, "one\n") .. op(1, "\0\1\2\3\255garbage") },
  garbage12 = { S12, op(0, "one\n") .. op(1, ("\23\3\3\0\32"):rep(3)) },
  corrupt_tag = { S13, op(0, "\255one\n", 2) },
  corrupt_header = { S13, op(0, "\0one\n", 2) .. op(0, "two\n") },
  corrupt_len = { S12, op(0, "\3one\n", 2) },
  record_handshake = { S13, op(0, "a\n") .. op(3, "\22\1\0\0\4abcd") },
  record_hs_keyupdate = { S13, op(3, "\22\24\0\0\1\0") .. op(0, "a\n") },
  record_alert = { S13, op(3, "\21\1\0") .. op(0, "a\n") },
  record_fatal = { S12, op(3, "\21\2\40") },
  record_ccs = { S13, op(3, "\20\1") .. op(0, "a\n") },
  record_ccs12 = { S12, op(3, "\20\1") .. op(0, "a\n") },
  record_heartbeat = { S12, op(3, "\24\1\0\16abcd") },
  record_empty_appdata = { S13, op(3, "\23") .. op(0, "a\n") },
  record_unknown = { S13, op(3, "\99xyz") },
  truncated = { S13, op(0, "one\n") .. op(7, "two\n", 10) },
  truncated12 = { S12, op(0, "one\n") .. op(7, "two\n", 3) .. op(0, "three\n") },
  big = { S13, op(0, ("x"):rep(250)) .. op(0, ("y"):rep(250) .. "\n") },
  repeated = { S13, op(0, "0123456789abcdef\n", 31) },
  repeated12 = { S12, op(0, "n3\nabc", 20) .. op(6, "") .. op(0, ("z"):rep(200) .. "\n", 31) },
  repeated_long_line = { S13, op(0, ("w"):rep(255), 31) .. op(0, "\n") },
  close_at_once = { S13 + 0x30, op(0, "one\ntwo\n") },
}
local names = {}
for name in pairs(programs) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  local p = programs[name]
  write("session_" .. name, string.char(p[1], 0, 0) .. p[2])
end
-- Byte 1: the server's limits: a small send buffer, a slow reader, both;
-- a small max_frame.
local big = programs.repeated[2]
write("session_limits_small_send", string.char(S13, 1, 0) .. big)
write("session_limits_slow_reader", string.char(S12, 2, 0) .. programs.repeated12[2])
write("session_limits_both", string.char(S13, 3, 0) .. programs.repeated_long_line[2])
write("session_limits_small_frame", string.char(S13, 4, 0) .. programs.big[2] .. op(0, "n999\n"))
-- An error left in OpenSSL's queue (8); a resumed session (16).
write("session_stale_error", string.char(S13, 8, 0) .. programs.yields[2])
write("session_resume", string.char(S13, 16, 0) .. programs.keyupdate[2])
write("session_resume12", string.char(S12, 16, 0) .. programs.lines[2])
write("session_resume_extras", string.char(S13 + EXTRAS, 16, 0) .. op(0, "t\nhello\n"))
-- Hello mode with hand-made second flights, and plaintext on a TLS port.
write("hello_ccs_alert", "\2\0\0\20\3\3\0\1\1\21\3\3\0\2\2\40")
write("hello12_ccs_early", "\66\0\0\20\3\3\0\1\1\22\3\3\0\4\20\0\0\0")
write("hello_appdata", "\2\0\0\23\3\3\0\5hello")
write("raw_http", "\0\0\0GET / HTTP/1.1\r\nHost: x\r\n\r\n")
write("raw_sslv2", "\0\0\0\128\46\1\3\1\0\21\0\0\0\16\0\0\4\0\0\5\0\0\10\1\0\128\7\0\192"
  .. "\3\0\128abcdefghijklmnop")
print(("tls_seeds: %d client captures, %d session programs in %s"):format(n, #names, dir))
