/* libFuzzer harness for the server side of coserve's TLS (runtime/tls.c,
 * the TLS paths of runtime/stream.c, the handshake wrapper in coserve.lua).
 * Each input is one run of a chunk in a runtime created once, as in
 * fuzz/http_server.c: a coserve.server with tls options (an ECDSA
 * certificate made once per process with coserve.testing.tls(), a second
 * one for SNI "other.test", ALPN http/1.1, client certificates optional;
 * the SSL_CTX is made once too, see init_chunk) on 127.0.0.1 port 0, whose handler reads lines and echoes them ("n<d>"
 * reads d bytes, "t" answers the TLS version, "q" closes at once); a
 * client socket connects, sends, ends, reads until the server closes;
 * then the server is shut down and nothing may be left behind.
 *
 * The input: byte 0 = flags, bytes 1-2 = where to cut the payload (in
 * 256ths of its length), the rest = payload. flags & 3 is the mode:
 *   0, 1  raw: the payload is the client's ciphertext, sent as is (the
 *         seeds in fuzz/corpus/tls_server are ClientHellos and whole client
 *         flights captured from openssl s_client by fuzz/tls_seeds.lua);
 *   2     hello: a real ClientHello, made here by an OpenSSL client over
 *         memory BIOs, then the payload (a fuzzed second flight);
 *   3     session: that client completes a real handshake through the
 *         socket, then the payload is a program of records to send (see
 *         run_ops): application data, raw garbage, corrupted, hand-made or
 *         truncated records, a key update (TLS 1.3) or renegotiation
 *         (TLS 1.2), close_notify, and yields that cut the stream.
 * (flags >> 2) & 3: the payload in 1, 2 or 3 writes (yields between);
 * (flags >> 4) & 3: 3 = close at once, else half-close and read;
 * flags & 0x40: the client offers TLS 1.2 at most (else 1.3);
 * flags & 0x80: it sends SNI other.test, ALPN, and a client certificate.
 * In session mode byte 1 sets the server's limits instead of a cut: & 1
 * send_buffer 2048, & 2 a slow client (small socket buffers, reads 10 ms
 * late), so that the server's TLS sends are queued and park; & 4 max_frame 512 (lines
 * and reads beyond it close the connection; the answers are then not
 * compared); & 8 an error left in OpenSSL's per-thread error queue
 * before each write, as another OpenSSL user in the process may leave
 * one; & 16 resumption: a first connection's session is offered, and
 * must be resumed.
 *
 * Checks (each abort()s, so that libFuzzer keeps the input): the server
 * never crashes; after the half-close it closes the connection within
 * 1 s; in session mode the handshake succeeds and, when the program sent
 * only well-formed application data (and key updates, close_notify), the
 * server's answers decrypt to exactly what a model of the handler says
 * and end with the server's close_notify; fuzzed handshakes never
 * complete, and each failure is counted in server:stats() (none when the
 * client sent nothing: a health check); no Lua error
 * or log line; and after each run no task, connection or handle is left.
 * Built and run by fuzz/run. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "coserve.h"
#include "expect_clean.h"
#include "internal.h" /* a conn's send queue and fd, for its own half-close */

static cs_runtime_t *rt;
static char cert_dir[512];
/* The server's context, also held here so that LeakSanitizer (which
 * cannot see into LuaJIT's heap) sees what hangs off it, such as the
 * sessions it caches, as reachable. */
static void *server_ctx;

/* The in-process client: an OpenSSL client over memory BIOs, whose
 * ciphertext the chunk carries over a plain coserve connection. */
static SSL_CTX *client_ctx;
static X509 *client_cert;
static EVP_PKEY *client_key;
static struct {
  SSL *ssl;
  BIO *rbio, *wbio;
  int tls12;
  int stale; /* see fuzz_stale_error */
} cl;
static SSL_SESSION *kept; /* fuzz_client_keep_session's, for one run */

/* After each of the client's steps: its errors are cleared; in stale mode
 * one is left for whoever calls OpenSSL next. */
static void client_errors_done(void) {
  ERR_clear_error();
  if (cl.stale)
    ERR_raise_data(ERR_LIB_SSL, SSL_R_NO_CIPHER_MATCH, "left by another OpenSSL user");
}

/* The certificates, and the server's context: made once, since making an
 * SSL_CTX costs more than the rest of a run. Each run's server:start()
 * asks core.tls_context for one, as always; the wrapper answers with this
 * one for these options. */
static const char init_chunk[] =
    "local testing = require 'coserve.testing'\n"
    "local core = require 'coserve.core'\n"
    "local certs = testing.tls()\n"
    "certs.other_cert, certs.other_key = certs.make('other.test', { san = 'DNS:other.test' })\n"
    "FUZZ_CERTS = certs\n"
    "FUZZ_TLS = { cert = certs.cert, key = certs.key, ca = certs.ca, verify = 'optional',\n"
    "  alpn = { 'http/1.1' }, handshake_timeout = 5,\n"
    "  sni = { ['other.test'] = { cert = certs.other_cert, key = certs.other_key } } }\n"
    "local ctx = assert(core.tls_context(FUZZ_TLS, true))\n"
    "FUZZ_SERVER_CTX = ctx\n"
    "local make = core.tls_context\n"
    "core.tls_context = function(opts, is_server)\n"
    "  if is_server and opts == FUZZ_TLS then return ctx end\n"
    "  return make(opts, is_server)\n"
    "end\n";

static const char chunk[] =
    "local coserve = require 'coserve'\n"
    "local core = require 'coserve.core'\n"
    "local payload, mode, npieces, ending = FUZZ_PAYLOAD, FUZZ_MODE, FUZZ_NPIECES, FUZZ_END\n"
    "local tls12, extras, cuts = FUZZ_TLS12, FUZZ_EXTRAS, { FUZZ_CUT1, FUZZ_CUT2 }\n"
    "local certs = FUZZ_CERTS\n"
    "local opts = mode == 'session' and FUZZ_OPTS or 0\n"
    "local small_send, slow_reader, small_frame = opts % 2 == 1, opts % 4 >= 2, opts % 8 >= 4\n"
    "local stale_error, resume = opts % 16 >= 8, opts % 32 >= 16\n"
    "local failure\n"
    "local function fail(msg) failure = failure or msg end\n"
    "coserve.log = function(level, msg) fail('logged: ' .. tostring(level) .. ': ' .. tostring(msg)) end\n"
    "local server = coserve.server{ host = '127.0.0.1', port = 0, read_timeout = 2,\n"
    "  send_timeout = 2, send_buffer = small_send and 2048 or nil,\n"
    "  max_frame = small_frame and 512 or nil, tls = FUZZ_TLS }\n"
    "server:onerror(function(err) fail('handler failed: ' .. tostring(err)) end)\n"
    "server:handle(function(conn)\n"
    "  if slow_reader then fuzz_sockbuf(conn, 'snd', 16384) end\n"
    "  while true do\n"
    "    local line = conn:receive('*l')\n"
    "    if not line then return end\n"
    "    local n = line:match('^n([1-9]%d?%d?%d?)$')\n"
    "    if n then\n"
    "      local data = conn:receive(tonumber(n))\n"
    "      if not data then return end\n"
    "      if not conn:send({ '<', data, '>\\n' }) then return end\n"
    "    elseif line == 'q' then\n"
    "      return\n"
    "    elseif line == 't' then\n"
    "      local info = conn:tls()\n"
    "      if not conn:send((info and info.version or '?') .. '\\n') then return end\n"
    "    elseif not conn:send(line .. '\\n') then\n"
    "      return\n"
    "    end\n"
    "  end\n"
    "end)\n"
    /* What the handler answers to a stream of plaintext; and whether it
     * stops before the end ("q"), when the peer may get a reset. */
    "local function model(s, version)\n"
    "  local out, pos = {}, 1\n"
    "  while true do\n"
    "    local e = s:find('\\n', pos, true)\n"
    "    if not e then return table.concat(out), false end\n"
    "    local line = s:sub(pos, e - 1):gsub('\\r$', '')\n"
    "    pos = e + 1\n"
    "    local n = line:match('^n([1-9]%d?%d?%d?)$')\n"
    "    if n then\n"
    "      n = tonumber(n)\n"
    "      if pos + n - 1 > #s then return table.concat(out), false end\n"
    "      out[#out + 1] = '<' .. s:sub(pos, pos + n - 1) .. '>\\n'\n"
    "      pos = pos + n\n"
    "    elseif line == 'q' then\n"
    "      return table.concat(out), true\n"
    "    elseif line == 't' then\n"
    "      out[#out + 1] = version .. '\\n'\n"
    "    else\n"
    "      out[#out + 1] = line .. '\\n'\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local srv = coserve.spawn(function() return server:start() end)\n"
    "if not server.port or server.port == 0 then\n"
    "  local _, _, err = srv:join(0)\n"
    "  error('the server did not start: ' .. tostring(err), 0)\n"
    "end\n"
    "local c, err = coserve.connect('127.0.0.1', server.port, { timeout = 1 })\n"
    "if not c then error('connect: ' .. tostring(err), 0) end\n"
    "local function cut(s)\n"
    "  local pieces, prev = {}, 0\n"
    "  for i = 1, npieces do\n"
    "    local stop = i == npieces and #s or math.max(prev, math.floor(cuts[i] * #s / 256))\n"
    "    pieces[#pieces + 1] = s:sub(prev + 1, stop)\n"
    "    prev = stop\n"
    "  end\n"
    "  return pieces\n"
    "end\n"
    "local pieces, sent, clean, handshaken = {}, nil, false, false\n"
    "if mode == 'raw' then\n"
    "  pieces = cut(payload)\n"
    "elseif mode == 'hello' then\n"
    "  fuzz_client_new(tls12, extras)\n"
    "  pieces = cut(payload)\n"
    "  table.insert(pieces, 1, (fuzz_client_step('')))\n"
    "else\n"
    "  local function handshake(conn)\n"
    "    local out, _, state = fuzz_client_step('')\n"
    "    for _ = 1, 20 do\n"
    "      if #out > 0 and not conn:send(out) then fail('handshake: the server went away'); return end\n"
    "      if state == 'done' then return true end\n"
    "      if state ~= 'more' then fail('handshake: the client says ' .. state); return end\n"
    "      local data, rerr = conn:receiveany(65536, 1)\n"
    "      if not data then fail('handshake: ' .. tostring(rerr)); return end\n"
    "      out, _, state = fuzz_client_step(data)\n"
    "    end\n"
    "  end\n"
    /* Resumption: a first connection's session (TLS 1.3: from the tickets
     * the server sends after the handshake) is offered on the second. */
    "  if resume then\n"
    "    local c0 = coserve.connect('127.0.0.1', server.port, { timeout = 1 })\n"
    "    fuzz_client_new(tls12, extras)\n"
    "    if c0 and handshake(c0) then\n"
    "      if not tls12 then\n"
    "        local data = c0:receiveany(65536, 1)\n"
    "        if data then fuzz_client_step(data) end\n"
    "      end\n"
    "      fuzz_client_keep_session()\n"
    "    end\n"
    "    if c0 then c0:close() end\n"
    "  end\n"
    "  fuzz_client_new(tls12, extras, resume)\n"
    "  handshaken = handshake(c)\n"
    "  if handshaken and resume and not select(2, fuzz_client_version()) then\n"
    "    fail('the session was not resumed')\n"
    "  end\n"
    "  if handshaken then\n"
    "    pieces, sent, clean = fuzz_client_ops(payload)\n"
    "    clean = clean and not small_frame\n"
    "    if slow_reader then fuzz_sockbuf(c, 'rcv', 32768) end\n"
    "  else\n"
    "    fail('handshake did not finish')\n"
    "  end\n"
    "end\n"
    /* A reader runs beside the sender, so that neither side waits for
     * the other; after the client's end the server has 1 s to close. */
    "local got, closed, state, ended_at, read_done = {}, false, 'more', nil, false\n"
    "local reader\n"
    "if ending ~= 'close' then\n"
    "  reader = coserve.spawn(function()\n"
    "    if slow_reader then coserve.sleep(0.01) end\n"
    "    while true do\n"
    "      local data, rerr = c:receiveany(65536, 0.25)\n"
    "      if data then\n"
    "        if handshaken then\n"
    "          local _, plain\n"
    "          _, plain, state = fuzz_client_step(data)\n"
    "          got[#got + 1] = plain\n"
    "          if state == 'closed' then closed = true end\n"
    "        end\n"
    "      elseif rerr ~= 'timeout' then\n"
    "        break\n"
    "      elseif ended_at and coserve.now() - ended_at > 1 then\n"
    "        fail('the server kept the connection open 1 s after the client\\'s end')\n"
    "        break\n"
    "      end\n"
    "    end\n"
    "    read_done = true\n"
    "  end)\n"
    "end\n"
    "if stale_error and handshaken then fuzz_stale_error() end\n"
    "local nsent = 0\n"
    "for i = 1, #pieces do\n"
    "  if #pieces[i] > 0 and not c:send(pieces[i]) then break end\n"
    "  nsent = nsent + #pieces[i]\n"
    "  if i < #pieces then coserve.sleep(0) end\n"
    "end\n"
    "local function short(s) return #s > 200 and s:sub(1, 200) .. '...' or s end\n"
    "if ending == 'close' then\n"
    "  c:close()\n"
    "else\n"
    /* Half-closed once the kernel has every byte sent. */
    "  local deadline = coserve.now() + 2\n"
    "  while not fuzz_halfclose(c) and not read_done do\n"
    "    if coserve.now() > deadline then fail('the client could not send for 2 s'); break end\n"
    "    coserve.sleep(0.001)\n"
    "  end\n"
    "  ended_at = coserve.now()\n"
    "  local ok, jerr = reader:join(3)\n"
    "  if not ok then fail('the reader did not end: ' .. tostring(jerr)) end\n"
    "  c:close()\n"
    "  if clean then\n"
    "    local want, quits = model(sent, fuzz_client_version())\n"
    "    local have = table.concat(got)\n"
    "    if quits then\n"
    "      if have ~= want:sub(1, #have) then\n"
    "        fail(('answers %q are no prefix of %q'):format(short(have), short(want)))\n"
    "      end\n"
    "    else\n"
    "      if have ~= want then\n"
    "        fail(('answers (%d bytes) %q, expected (%d) %q'):format(#have, short(have), #want,\n"
    "          short(want)))\n"
    "      end\n"
    "      if not closed then fail('no close_notify from the server (client: ' .. state .. ')') end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "fuzz_client_free()\n"
    /* The server must let go of the connection by itself. */
    "local deadline, tries = coserve.now() + 1, 0\n"
    "while server:stats().connections > 0 do\n"
    "  if coserve.now() > deadline then\n"
    "    fail('the server kept a connection for 1 s after the client closed')\n"
    "    break\n"
    "  end\n"
    "  tries = tries + 1\n"
    "  coserve.sleep(tries < 50 and 0 or 0.001)\n"
    "end\n"
    "server:shutdown()\n"
    "local ok, started, serr = srv:join(1)\n"
    "if not ok then fail('the server did not stop: ' .. tostring(started))\n"
    "elseif not started then fail('server:start() failed: ' .. tostring(serr)) end\n"
    "local st = server:stats()\n"
    "if mode == 'session' and handshaken and (st.tls_handshakes ~= (resume and 2 or 1) or\n"
    "    st.tls_failures ~= 0) then\n"
    "  fail(('stats: %d handshakes, %d failures'):format(st.tls_handshakes, st.tls_failures))\n"
    /* A client that sent nothing is no failed handshake (a health check). */
    "elseif mode ~= 'session' and (st.tls_handshakes ~= 0 or\n"
    "    st.tls_failures ~= (nsent > 0 and 1 or 0)) then\n"
    "  fail(('stats: %d handshakes, %d failures on fuzzed bytes'):format(st.tls_handshakes,\n"
    "    st.tls_failures))\n"
    "end\n"
    FUZZ_LUA_SETTLE;

/* ---- growing byte strings ---- */

typedef struct {
  char *p;
  size_t n, cap;
} str_t;

static void put(str_t *s, const void *data, size_t n) {
  if (n == 0)
    return;
  if (s->n + n > s->cap) {
    while (s->n + n > s->cap)
      s->cap = s->cap ? 2 * s->cap : 1024;
    s->p = realloc(s->p, s->cap);
    if (s->p == NULL)
      abort();
  }
  memcpy(s->p + s->n, data, n);
  s->n += n;
}

/* Moves what the client has written out of its BIO into s. */
static void drain(str_t *s) {
  char *data;
  long len = BIO_get_mem_data(cl.wbio, &data);
  if (len > 0)
    put(s, data, (size_t)len);
  (void)BIO_reset(cl.wbio);
}

/* ---- the client, from Lua ---- */

static void client_free(void) {
  SSL_free(cl.ssl); /* and its BIOs */
  memset(&cl, 0, sizeof cl);
  ERR_clear_error();
}

/* fuzz_client_keep_session(): the session the next client offers. */
static int l_client_keep_session(lua_State *L) {
  (void)L;
  SSL_SESSION_free(kept);
  kept = cl.ssl ? SSL_get1_session(cl.ssl) : NULL;
  /* As if close_notify had gone: SSL_free would mark it not resumable. */
  if (cl.ssl)
    SSL_set_shutdown(cl.ssl, SSL_SENT_SHUTDOWN);
  return 0;
}

/* fuzz_client_new(tls12, extras [, resume]) */
static int l_client_new(lua_State *L) {
  client_free();
  cl.tls12 = lua_toboolean(L, 1);
  cl.ssl = SSL_new(client_ctx);
  cl.rbio = BIO_new(BIO_s_mem());
  cl.wbio = BIO_new(BIO_s_mem());
  if (cl.ssl == NULL || cl.rbio == NULL || cl.wbio == NULL)
    abort();
  BIO_set_mem_eof_return(cl.rbio, -1);
  SSL_set_bio(cl.ssl, cl.rbio, cl.wbio);
  SSL_set_connect_state(cl.ssl);
  if (cl.tls12)
    SSL_set_max_proto_version(cl.ssl, TLS1_2_VERSION);
  if (lua_toboolean(L, 2)) {
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    SSL_set_tlsext_host_name(cl.ssl, "other.test");
    SSL_set_alpn_protos(cl.ssl, alpn, sizeof alpn - 1);
    if (SSL_use_certificate(cl.ssl, client_cert) != 1 ||
        SSL_use_PrivateKey(cl.ssl, client_key) != 1)
      abort();
  }
  if (lua_toboolean(L, 3) && kept)
    SSL_set_session(cl.ssl, kept);
  ERR_clear_error();
  return 0;
}

/* fuzz_client_step(ciphertext) -> ciphertext to send, plaintext read,
 * state ("more", "done" once the handshake is, "closed" on the server's
 * close_notify, else "failed: reason"). */
static int l_client_step(lua_State *L) {
  size_t len;
  const char *in = luaL_checklstring(L, 1, &len);
  if (cl.ssl == NULL)
    return luaL_error(L, "fuzz_client_step: no client");
  ERR_clear_error();
  if (len > 0 && BIO_write(cl.rbio, in, (int)len) != (int)len)
    abort();
  str_t plain = {0};
  const char *state = "more";
  char why[200];
  int ret = 1;
  if (!SSL_is_init_finished(cl.ssl))
    ret = SSL_do_handshake(cl.ssl);
  if (ret == 1) {
    char buf[16384];
    int n;
    while ((n = SSL_read(cl.ssl, buf, sizeof buf)) > 0)
      put(&plain, buf, (size_t)n);
    ret = n;
    state = "done";
  }
  if (ret <= 0) {
    int e = SSL_get_error(cl.ssl, ret);
    if (e == SSL_ERROR_ZERO_RETURN) {
      state = "closed";
    } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      unsigned long err = ERR_peek_last_error();
      snprintf(why, sizeof why, "failed: %d %s", e,
               err ? ERR_reason_error_string(err) : "(no reason)");
      state = why;
    }
  }
  str_t out = {0};
  drain(&out);
  lua_pushlstring(L, out.p ? out.p : "", out.n);
  lua_pushlstring(L, plain.p ? plain.p : "", plain.n);
  lua_pushstring(L, state);
  free(out.p);
  free(plain.p);
  client_errors_done();
  return 3;
}

/* fuzz_client_version() -> "TLSv1.3", whether the session was resumed */
static int l_client_version(lua_State *L) {
  lua_pushstring(L, cl.ssl ? SSL_get_version(cl.ssl) : "?");
  lua_pushboolean(L, cl.ssl && SSL_session_reused(cl.ssl));
  return 2;
}

static int l_client_free(lua_State *L) {
  (void)L;
  client_free();
  return 0;
}

/* fuzz_client_ops(program) -> pieces, plaintext sent, clean. The program
 * is a list of ops: byte b, length byte l, then l bytes d (fewer at the
 * end of the input). b % 8 is:
 *   0  application data: SSL_write(d), repeated when b >= 192 (up to
 *      4097 times, 64 KiB in all)
 *   1  d as is, raw bytes on the wire
 *   2  SSL_write(d) with one byte of the record (at d[0] % its size) flipped
 *   3  a hand-made record: type d[0], version 3.3, the rest of d as body
 *   4  TLS 1.3: a KeyUpdate (update_requested if b & 8), then SSL_write(d);
 *      TLS 1.2: a renegotiation attempt
 *   5  close_notify (later SSL_writes fail, and send nothing)
 *   6  a yield: what is pending is sent, the server runs, then the rest
 *   7  SSL_write(d) of which only (b >> 3) % size bytes are sent
 * clean: only 0, 4 (TLS 1.3), 5 and 6 were used, so the server's answers
 * must be exactly the model's for the plaintext sent. */
static int l_client_ops(lua_State *L) {
  size_t len;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &len);
  if (cl.ssl == NULL || !SSL_is_init_finished(cl.ssl))
    return luaL_error(L, "fuzz_client_ops: no session");
  ERR_clear_error();
  str_t cur = {0}, sent = {0}, rec = {0}, rep = {0};
  int clean = 1, shut = 0, npieces = 0;
  lua_newtable(L);
  size_t i = 0;
  while (i < len) {
    unsigned b = p[i++];
    size_t l = i < len ? p[i++] : 0;
    if (l > len - i)
      l = len - i;
    const unsigned char *d = p + i;
    i += l;
    int wrote = 0;
    switch (b % 8) {
    case 0:
    case 2:
    case 7: {
      if (b % 8 != 0)
        clean = 0;
      drain(&cur);
      /* Application data is repeated when b >= 192: 1 + 64 r^2 times
       * (r = (b >> 3) - 23, 1 to 8), up to 64 KiB sent in all: records of
       * 16 KiB, reads larger than the scratch area, the server's sends
       * under load. */
      size_t r = b >= 192 ? (size_t)(b >> 3) - 23 : 0;
      size_t reps = b % 8 == 0 ? 1 + 64 * r * r : 1;
      while (reps > 1 && sent.n + reps * l > 64 * 1024)
        reps /= 2;
      rep.n = 0;
      for (size_t k = 0; k < reps; k++)
        put(&rep, d, l);
      if (!shut && rep.n > 0 && SSL_write(cl.ssl, rep.p, (int)rep.n) == (int)rep.n) {
        wrote = 1;
        if (b % 8 == 0)
          put(&sent, rep.p, rep.n);
      }
      rec.n = 0;
      drain(&rec);
      if (wrote && b % 8 == 2 && rec.n > 0)
        rec.p[d[0] % rec.n] ^= (char)(0x01 | (b & 0xf0));
      if (wrote && b % 8 == 7)
        rec.n = (b >> 3) % (rec.n ? rec.n : 1);
      put(&cur, rec.p, rec.n);
      break;
    }
    case 1:
      clean = 0;
      drain(&cur);
      put(&cur, d, l);
      break;
    case 3: {
      clean = 0;
      drain(&cur);
      unsigned char hdr[5] = {l > 0 ? d[0] : 23, 3, 3, 0, 0};
      size_t body = l > 0 ? l - 1 : 0;
      hdr[3] = (unsigned char)(body >> 8);
      hdr[4] = (unsigned char)body;
      put(&cur, hdr, sizeof hdr);
      put(&cur, d + (l > 0), body);
      break;
    }
    case 4:
      if (shut)
        break;
      if (cl.tls12) {
        clean = 0;
        SSL_renegotiate(cl.ssl);
        SSL_do_handshake(cl.ssl);
      } else {
        SSL_key_update(cl.ssl, b & 8 ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED);
        if (l > 0 && SSL_write(cl.ssl, d, (int)l) == (int)l)
          put(&sent, d, l);
        else
          SSL_do_handshake(cl.ssl); /* sends the KeyUpdate alone */
      }
      drain(&cur);
      break;
    case 5:
      if (!shut) {
        SSL_shutdown(cl.ssl);
        shut = 1;
      }
      drain(&cur);
      break;
    case 6:
      drain(&cur);
      lua_pushlstring(L, cur.p ? cur.p : "", cur.n);
      lua_rawseti(L, -2, ++npieces);
      cur.n = 0;
      break;
    }
    ERR_clear_error();
  }
  drain(&cur);
  lua_pushlstring(L, cur.p ? cur.p : "", cur.n);
  lua_rawseti(L, -2, ++npieces);
  lua_pushlstring(L, sent.p ? sent.p : "", sent.n);
  lua_pushboolean(L, clean);
  free(cur.p);
  free(sent.p);
  free(rec.p);
  free(rep.p);
  client_errors_done();
  return 3;
}

/* fuzz_stale_error(): from now until the client is freed, an error is
 * left in this thread's OpenSSL error queue after each of the client's
 * steps, as another user of OpenSSL in the process may leave one (a Lua
 * module, a failed call whose error nobody cleared). The server's TLS
 * must not take it for its own connection's failure. (The client clears
 * the queue before its own calls.) */
static int l_stale_error(lua_State *L) {
  (void)L;
  cl.stale = 1;
  client_errors_done();
  return 0;
}

/* fuzz_halfclose(conn) -> done: shutdown(SHUT_WR) on the connection's
 * socket, once coserve has handed the kernel every byte sent (false
 * before: call again). */
static int l_halfclose(lua_State *L) {
  cs_connbox_t *box = luaL_checkudata(L, 1, CS_CONN_MT);
  uv_os_fd_t fd;
  if (box->c != NULL && box->c->wqueued > 0) {
    lua_pushboolean(L, 0); /* not yet: coserve still holds bytes to send */
    return 1;
  }
  if (box->c != NULL && uv_fileno(&box->c->u.handle, &fd) == 0)
    shutdown(fd, SHUT_WR);
  lua_pushboolean(L, 1);
  return 1;
}

/* fuzz_sockbuf(conn, "rcv" | "snd", bytes): small socket buffers (the
 * client's receive buffer, the server's send buffer), so that the
 * server's TLS sends meet a full socket: queued, parked, resumed. */
static int l_sockbuf(lua_State *L) {
  cs_connbox_t *box = luaL_checkudata(L, 1, CS_CONN_MT);
  int opt = strcmp(luaL_checkstring(L, 2), "rcv") == 0 ? SO_RCVBUF : SO_SNDBUF;
  int n = (int)luaL_checkinteger(L, 3);
  uv_os_fd_t fd;
  if (box->c != NULL && uv_fileno(&box->c->u.handle, &fd) == 0)
    setsockopt(fd, SOL_SOCKET, opt, &n, sizeof n);
  return 0;
}

/* ---- setup ---- */

FUZZ_ON_SIGPIPE("tls_server")

/* The throw-away certificates go when the process does. */
static void remove_certs(void) {
  DIR *d = opendir(cert_dir);
  if (d == NULL)
    return;
  struct dirent *e;
  char path[1024];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    snprintf(path, sizeof path, "%s/%s", cert_dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(cert_dir);
}

static const char *cert_field(lua_State *L, const char *name) {
  lua_getglobal(L, "FUZZ_CERTS");
  lua_getfield(L, -1, name);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 2); /* FUZZ_CERTS keeps the string */
  if (s == NULL)
    abort();
  return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  rt = cs_runtime_new();
  if (rt == NULL)
    abort();
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, on_sigpipe);
  cs_runtime_set_log_level(rt, CS_LOG_WARN);
  lua_State *L = cs_runtime_lua(rt);
  if (cs_runtime_run_string(rt, init_chunk, "=tls_server_fuzz_init") != 0) {
    fprintf(stderr, "tls_server fuzz: making certificates failed: %s\n", cs_runtime_error(rt));
    abort();
  }
  snprintf(cert_dir, sizeof cert_dir, "%s", cert_field(L, "dir"));
  atexit(remove_certs);
  lua_getglobal(L, "FUZZ_SERVER_CTX");
  server_ctx = *(void **)lua_touserdata(L, -1); /* ltls.c's box: its cs_tls_ctx_t * */
  lua_pop(L, 1);

  client_ctx = SSL_CTX_new(TLS_client_method());
  if (client_ctx == NULL)
    abort();
  SSL_CTX_set_min_proto_version(client_ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
  FILE *f = fopen(cert_field(L, "client_cert"), "r");
  if (f == NULL || (client_cert = PEM_read_X509(f, NULL, NULL, NULL)) == NULL)
    abort();
  fclose(f);
  f = fopen(cert_field(L, "client_key"), "r");
  if (f == NULL || (client_key = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL)
    abort();
  fclose(f);
  ERR_clear_error();

  static const luaL_Reg funcs[] = {{"fuzz_halfclose", l_halfclose},
                                   {"fuzz_client_new", l_client_new},
                                   {"fuzz_client_step", l_client_step},
                                   {"fuzz_client_ops", l_client_ops},
                                   {"fuzz_client_version", l_client_version},
                                   {"fuzz_client_free", l_client_free},
                                   {"fuzz_sockbuf", l_sockbuf},
                                   {"fuzz_stale_error", l_stale_error},
                                   {"fuzz_client_keep_session", l_client_keep_session},
                                   {NULL, NULL}};
  for (const luaL_Reg *r = funcs; r->name; r++)
    lua_register(L, r->name, r->func);
  return 0;
}

static void set_int(lua_State *L, const char *name, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setglobal(L, name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = cs_runtime_lua(rt);
  int top = lua_gettop(L);
  uint8_t hdr[3] = {0, 0, 0};
  memcpy(hdr, data, size < 3 ? size : 3);
  static const char *const modes[4] = {"raw", "raw", "hello", "session"};
  lua_pushlstring(L, size > 3 ? (const char *)data + 3 : "", size > 3 ? size - 3 : 0);
  lua_setglobal(L, "FUZZ_PAYLOAD");
  lua_pushstring(L, modes[hdr[0] & 3]);
  lua_setglobal(L, "FUZZ_MODE");
  int np = (hdr[0] >> 2) & 3;
  set_int(L, "FUZZ_NPIECES", np == 0 ? 1 : np == 1 ? 2 : 3);
  lua_pushstring(L, ((hdr[0] >> 4) & 3) == 3 ? "close" : "half");
  lua_setglobal(L, "FUZZ_END");
  lua_pushboolean(L, hdr[0] & 0x40);
  lua_setglobal(L, "FUZZ_TLS12");
  lua_pushboolean(L, hdr[0] & 0x80);
  lua_setglobal(L, "FUZZ_EXTRAS");
  set_int(L, "FUZZ_OPTS", hdr[1]);
  set_int(L, "FUZZ_CUT1", hdr[1] < hdr[2] ? hdr[1] : hdr[2]);
  set_int(L, "FUZZ_CUT2", hdr[1] < hdr[2] ? hdr[2] : hdr[1]);

  if (cs_runtime_run_string(rt, chunk, "=tls_server_fuzz") != 0) {
    fprintf(stderr, "tls_server fuzz: the run failed: %s\n", cs_runtime_error(rt));
    abort();
  }
  client_free();
  SSL_SESSION_free(kept);
  kept = NULL;

  fuzz_expect_clean(L, "tls_server");
  lua_settop(L, top);
  lua_pushnil(L);
  lua_setglobal(L, "FUZZ_PAYLOAD");
  /* C memory that only Lua objects point to is freed now, not taken for
   * a leak (LeakSanitizer cannot see into LuaJIT's heap). */
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
