/* libFuzzer harness for the WebSocket frame parser. Framing is Lua
 * (bindings/lua/coserve/websocket.lua: read_frame and ws:receive); C
 * only unmasks and validates UTF-8 (runtime/wsutil.c). So, as
 * fuzz/http_server.c does, each input is one run of a chunk in a runtime
 * created once: a coserve.server on 127.0.0.1 (port 0) whose handler wraps
 * its connection in coserve.websocket and calls ws:receive() until it
 * returns nil; a client connects, sends the input after byte 0 (frames as
 * a client sends them), half-closes, and waits for the handler to end. The
 * input is sent twice, on two connections: whole, then cut at up to seven
 * points taken from a hash of the input.
 *
 * Byte 0 chooses max_message (1, 2, 16, 125, 126, 127, 1000 or 1 MiB),
 * so that every length encoding meets the limit.
 *
 * The handler records, for each connection, every ws:receive() result and
 * every byte the server sent (pongs, close frames). Both records must
 * equal what a reference model of RFC 6455's server side, written here in
 * C from the RFC and websocket.lua's documented rules (masked frames only,
 * control frames at most 125 bytes and not fragmented, text and close
 * reasons UTF-8, close codes a peer may send, max_message), says they
 * are. A difference, an unexpected Lua error or log message, or anything
 * left behind after the run abort()s.
 *
 * Before that, the C part (runtime/wsutil.c) is fuzzed directly on the
 * same bytes: core.utf8_valid must agree with the model's UTF-8 check,
 * core.ws_mask with a plain XOR under the key in bytes 1-4 (and undo
 * itself), and cs__sha1 runs on every length. Built and run by fuzz/run. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "coserve.h"
#include "expect_clean.h"

static cs_runtime_t *rt;
static int core_ref; /* require 'coserve.core' */

static const char chunk[] =
    "local coserve = require 'coserve'\n"
    "local websocket = require 'coserve.websocket'\n"
    "local input, max_message, cuts = FUZZ_INPUT, FUZZ_MAX_MESSAGE, FUZZ_CUTS\n"
    "local failure\n"
    "local function fail(msg) failure = failure or msg end\n"
    "coserve.log = function(level, msg) fail('logged: ' .. tostring(level) .. ': ' .. tostring(msg)) end\n"
    "local records, done = {}, {}\n"
    "local server = coserve.server{ host = '127.0.0.1', port = 0, read_timeout = 2,\n"
    "  send_timeout = 2 }\n"
    "server:onerror(function(err) fail('handler failed: ' .. tostring(err)) end)\n"
    "server:handle(function(conn)\n"
    "  local id = conn:receive(1)\n" /* which delivery this is: '1' or '2' */
    "  local rec, out = {}, {}\n"
    /* The connection as websocket.lua sees it, recording what it sends. */
    "  local proxy = {\n"
    "    receive = function(_, ...) return conn:receive(...) end,\n"
    "    close = function() return conn:close() end,\n"
    "    send = function(_, data)\n"
    "      out[#out + 1] = type(data) == 'table' and table.concat(data) or data\n"
    "      return conn:send(data)\n"
    "    end,\n"
    "  }\n"
    "  local ws = websocket.new(proxy, { max_message = max_message })\n"
    "  for _ = 1, #input + 2 do\n" /* each frame has 2 bytes at least */
    "    local data, kind, code, reason = ws:receive()\n"
    "    if data then\n"
    "      rec[#rec + 1] = ('M%s:%d:'):format(tostring(kind), #data) .. data .. '\\n'\n"
    "    else\n"
    "      rec[#rec + 1] = ('E%s:%s:%d:'):format(tostring(kind), tostring(code),\n"
    "        reason and #reason or -1) .. (reason or '') .. '\\n'\n"
    "      break\n"
    "    end\n"
    "  end\n"
    "  records[id] = table.concat(rec) .. 'O:' .. table.concat(out)\n"
    "  done[id] = true\n"
    "end)\n"
    "local srv = coserve.spawn(function() return server:start() end)\n"
    "if not server.port or server.port == 0 then\n"
    "  local _, _, err = srv:join(0)\n"
    "  error('the server did not start: ' .. tostring(err), 0)\n"
    "end\n"
    "local function deliver(id, pieces)\n"
    "  local c, err = coserve.connect('127.0.0.1', server.port, { timeout = 1 })\n"
    "  if not c then error('connect: ' .. tostring(err), 0) end\n"
    "  local prev, ok = 0, c:send(id)\n"
    "  for i = 1, #pieces do\n"
    "    if not ok then break end\n"
    "    local stop = pieces[i]\n"
    "    if stop > prev then\n"
    "      ok = c:send(input:sub(prev + 1, stop))\n"
    "      prev = stop\n"
    "    end\n"
    "    coserve.sleep(0)\n"
    "  end\n"
    "  fuzz_halfclose(c)\n"
    /* Read what the server sends, so that it never waits on us. */
    "  while c:receiveany(65536, 2) do end\n"
    "  c:close()\n"
    "  local deadline = coserve.now() + 2\n"
    "  while not done[id] do\n"
    "    if coserve.now() > deadline then fail('delivery ' .. id .. ': the handler did not end'); break end\n"
    "    coserve.sleep(0.001)\n"
    "  end\n"
    "end\n"
    "deliver('1', { #input })\n"
    "deliver('2', cuts)\n"
    "server:shutdown()\n"
    "local ok, started, serr = srv:join(2)\n"
    "if not ok then fail('the server did not stop: ' .. tostring(started))\n"
    "elseif not started then fail('server:start() failed: ' .. tostring(serr)) end\n"
    "if failure then error(failure, 0) end\n"
    "FUZZ_WHOLE, FUZZ_PIECES = records['1'], records['2']\n";

/* ---- the reference model */

typedef struct {
  char *p;
  size_t n, cap;
} str_t;

static void put(str_t *s, const void *data, size_t n) {
  if (s->n + n > s->cap) {
    while (s->n + n > s->cap)
      s->cap = s->cap ? 2 * s->cap : 256;
    s->p = realloc(s->p, s->cap);
    if (s->p == NULL)
      abort();
  }
  memcpy(s->p + s->n, data, n);
  s->n += n;
}

static void putf(str_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void putf(str_t *s, const char *fmt, ...) {
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  put(s, buf, (size_t)n);
}

/* UTF-8 by the well-formed byte sequences of Unicode's table 3-7. */
static int utf8_ok(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    uint8_t lo = 0x80, hi = 0xBF;
    size_t more;
    if (c <= 0x7F) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      more = 2;
      if (c == 0xE0)
        lo = 0xA0;
      if (c == 0xED)
        hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      more = 3;
      if (c == 0xF0)
        lo = 0x90;
      if (c == 0xF4)
        hi = 0x8F;
    } else {
      return 0;
    }
    if (n - i - 1 < more)
      return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t k = 2; k <= more; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF)
        return 0;
    i += more + 1;
  }
  return 1;
}

typedef struct {
  const uint8_t *in;
  size_t len, pos;
  uint64_t max;
  int close_sent;
  str_t rec, out;
} model_t;

static void send_frame(model_t *m, int opcode, const uint8_t *payload, size_t n) {
  if (m->close_sent)
    return;
  if (opcode == 8)
    m->close_sent = 1;
  uint8_t head[2] = {(uint8_t)(0x80 | opcode), (uint8_t)n}; /* control frames: n <= 125 */
  put(&m->out, head, 2);
  put(&m->out, payload, n);
}

/* The end of ws:receive(): nil, err (closed, code, reason: close given). */
static void end(model_t *m, const char *err, int code, const uint8_t *reason, size_t rlen,
                int has_reason) {
  if (code)
    putf(&m->rec, "E%s:%d:%d:", err, code, has_reason ? (int)rlen : -1);
  else
    putf(&m->rec, "E%s:nil:-1:", err);
  if (has_reason)
    put(&m->rec, reason, rlen);
  put(&m->rec, "\n", 1);
}

/* Failing the connection (RFC 6455 7.1.7): a close frame with the code. */
static void fail(model_t *m, int code, const char *err) {
  uint8_t c[2] = {(uint8_t)(code >> 8), (uint8_t)code};
  send_frame(m, 8, c, 2);
  end(m, err, 0, NULL, 0, 0);
}

static int take(model_t *m, size_t n, const uint8_t **p) {
  if (m->len - m->pos < n)
    return 0;
  *p = m->in + m->pos;
  m->pos += n;
  return 1;
}

/* One frame: 1 with fin, opcode, payload (unmasked into buf), 0 when it
 * ended the connection (recorded). */
static int frame(model_t *m, int *fin, int *opcode, uint8_t *buf, size_t *n) {
  const uint8_t *h;
  if (!take(m, 2, &h)) {
    end(m, "closed", 0, NULL, 0, 0);
    return 0;
  }
  *fin = h[0] >> 7;
  *opcode = h[0] & 15;
  int known = *opcode <= 2 || (*opcode >= 8 && *opcode <= 10);
  if ((h[0] & 0x70) || !known || !(h[1] & 0x80)) { /* reserved bits, opcode, unmasked */
    fail(m, 1002, "protocol error");
    return 0;
  }
  uint64_t len = h[1] & 0x7f;
  if (*opcode >= 8 && (len > 125 || !*fin)) {
    fail(m, 1002, "protocol error");
    return 0;
  }
  if (len >= 126) {
    size_t w = len == 126 ? 2 : 8;
    const uint8_t *e;
    if (!take(m, w, &e)) {
      end(m, "closed", 0, NULL, 0, 0);
      return 0;
    }
    len = 0;
    for (size_t i = 0; i < w; i++)
      len = len << 8 | e[i];
  }
  if (len > m->max) {
    fail(m, 1009, "too large");
    return 0;
  }
  const uint8_t *key, *p;
  if (!take(m, 4, &key) || !take(m, (size_t)len, &p)) {
    end(m, "closed", 0, NULL, 0, 0);
    return 0;
  }
  for (size_t i = 0; i < len; i++)
    buf[i] = p[i] ^ key[i % 4];
  *n = (size_t)len;
  return 1;
}

static int close_code_ok(int c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
}

/* ws:receive() in a loop until it returns nil. */
static void model_run(model_t *m) {
  uint8_t *buf = malloc(m->len + 1), *msg = malloc(m->len + 1);
  if (buf == NULL || msg == NULL)
    abort();
  for (;;) {
    int fragmented = 0, kind = 0;
    size_t size = 0;
    for (;;) {
      int fin, op;
      size_t n;
      if (!frame(m, &fin, &op, buf, &n))
        goto out;
      if (op == 9) {
        send_frame(m, 10, buf, n);
      } else if (op == 10) {
      } else if (op == 8) {
        int code = 1005;
        if (n == 1) {
          fail(m, 1002, "protocol error");
          goto out;
        }
        if (n >= 2) {
          code = buf[0] << 8 | buf[1];
          if (!close_code_ok(code)) {
            fail(m, 1002, "protocol error");
            goto out;
          }
          if (!utf8_ok(buf + 2, n - 2)) {
            fail(m, 1007, "invalid UTF-8");
            goto out;
          }
        }
        send_frame(m, 8, buf, n < 2 ? n : 2);
        end(m, "closed", code, buf + 2, n >= 2 ? n - 2 : 0, 1);
        goto out;
      } else if (op == 0) {
        if (!fragmented) {
          fail(m, 1002, "protocol error");
          goto out;
        }
        if (size + n > m->max) {
          fail(m, 1009, "too large");
          goto out;
        }
        memcpy(msg + size, buf, n);
        size += n;
        if (fin)
          break;
      } else {
        if (fragmented) {
          fail(m, 1002, "protocol error");
          goto out;
        }
        kind = op;
        memcpy(msg, buf, n);
        size = n;
        if (fin)
          break;
        fragmented = 1;
      }
    }
    if (kind == 1 && !utf8_ok(msg, size)) {
      fail(m, 1007, "invalid UTF-8");
      goto out;
    }
    putf(&m->rec, "M%s:%zu:", kind == 1 ? "text" : "binary", size);
    put(&m->rec, msg, size);
    put(&m->rec, "\n", 1);
  }
out:
  put(&m->rec, "O:", 2);
  put(&m->rec, m->out.p ? m->out.p : "", m->out.n);
  free(buf);
  free(msg);
}

/* ---- the harness */

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  rt = cs_runtime_new();
  if (rt == NULL)
    abort();
  signal(SIGPIPE, SIG_IGN);
  cs_runtime_set_log_level(rt, CS_LOG_WARN);
  lua_State *L = cs_runtime_lua(rt);
  lua_register(L, "fuzz_halfclose", fuzz_l_halfclose); /* expect_clean.h */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "coserve.core");
  if (lua_pcall(L, 1, 1, 0) != 0)
    abort();
  core_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static void show(const char *what, const char *p, size_t n) {
  fprintf(stderr, "%s (%zu bytes): \"", what, n);
  for (size_t i = 0; i < n && i < 600; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 32 && c < 127 && c != '\\' && c != '"')
      fputc(c, stderr);
    else if (c == '\n')
      fputs("\\n", stderr);
    else
      fprintf(stderr, "\\x%02x", c);
  }
  fputs(n > 600 ? "...\"\n" : "\"\n", stderr);
}

/* [-0, +1] core[name](s, key or none) */
static void call_core(lua_State *L, const char *name, const uint8_t *s, size_t n,
                      const uint8_t *key) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, core_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  lua_pushlstring(L, (const char *)s, n);
  if (key)
    lua_pushlstring(L, (const char *)key, 4);
  if (lua_pcall(L, key ? 2 : 1, 1, 0) != 0) {
    fprintf(stderr, "websocket fuzz: core.%s raised: %s\n", name, lua_tostring(L, -1));
    abort();
  }
}

/* wsutil.c's C functions on the input itself. */
static void check_wsutil(lua_State *L, const uint8_t *s, size_t n) {
  int top = lua_gettop(L);
  call_core(L, "utf8_valid", s, n, NULL);
  if (lua_toboolean(L, -1) != utf8_ok(s, n)) {
    show("core.utf8_valid disagrees with Unicode's table 3-7 on", (const char *)s, n);
    abort();
  }
  if (n >= 4) {
    const uint8_t *key = s, *data = s + 4;
    size_t len = n - 4;
    call_core(L, "ws_mask", data, len, key);
    size_t got_len;
    const uint8_t *got = (const uint8_t *)lua_tolstring(L, -1, &got_len);
    if (got_len != len)
      abort();
    for (size_t i = 0; i < len; i++)
      if (got[i] != (data[i] ^ key[i % 4])) {
        fprintf(stderr, "websocket fuzz: core.ws_mask: byte %zu of %zu is wrong\n", i, len);
        abort();
      }
    call_core(L, "ws_mask", got, len, key);
    size_t back_len;
    const char *back = lua_tolstring(L, -1, &back_len);
    if (back_len != len || memcmp(back, data, len) != 0) {
      fprintf(stderr, "websocket fuzz: core.ws_mask twice is not the identity\n");
      abort();
    }
  }
  unsigned char d1[20], d2[20];
  cs__sha1(s, n, d1);
  call_core(L, "sha1", s, n, NULL);
  size_t dl;
  const char *d = lua_tolstring(L, -1, &dl);
  cs__sha1(s, n, d2);
  if (dl != 20 || memcmp(d, d1, 20) != 0 || memcmp(d1, d2, 20) != 0)
    abort();
  lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  static const uint64_t maxes[8] = {1, 2, 16, 125, 126, 127, 1000, 1048576};
  model_t m = {.in = data + 1, .len = size - 1, .max = maxes[data[0] & 7]};
  model_run(&m);

  lua_State *L = cs_runtime_lua(rt);
  check_wsutil(L, m.in, m.len);
  int top = lua_gettop(L);
  lua_pushlstring(L, (const char *)m.in, m.len);
  lua_setglobal(L, "FUZZ_INPUT");
  lua_pushnumber(L, (lua_Number)m.max);
  lua_setglobal(L, "FUZZ_MAX_MESSAGE");
  uint64_t h = fnv1a(data, size);
  size_t ncuts = 1 + (size_t)(h % 7), cuts[8];
  for (size_t i = 0; i < ncuts; i++) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    cuts[i] = (size_t)((h >> 33) % (m.len + 1));
  }
  for (size_t i = 1; i < ncuts; i++) /* insertion sort: cut points in order */
    for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
      size_t t = cuts[j];
      cuts[j] = cuts[j - 1];
      cuts[j - 1] = t;
    }
  cuts[ncuts++] = m.len;
  lua_createtable(L, (int)ncuts, 0);
  for (size_t i = 0; i < ncuts; i++) {
    lua_pushinteger(L, (lua_Integer)cuts[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  lua_setglobal(L, "FUZZ_CUTS");

  if (cs_runtime_run_string(rt, chunk, "=websocket_fuzz") != 0) {
    fprintf(stderr, "websocket fuzz: the run failed: %s\n", cs_runtime_error(rt));
    abort();
  }
  static const char *const names[2] = {"FUZZ_WHOLE", "FUZZ_PIECES"};
  for (int i = 0; i < 2; i++) {
    lua_getglobal(L, names[i]);
    size_t n;
    const char *got = lua_tolstring(L, -1, &n);
    if (got == NULL || n != m.rec.n || memcmp(got, m.rec.p, n) != 0) {
      fprintf(stderr, "websocket fuzz: max_message %llu, delivered %s:\n",
              (unsigned long long)m.max, i == 0 ? "whole" : "in pieces");
      show("the model says", m.rec.p, m.rec.n);
      show("websocket.lua says", got ? got : "(nothing)", got ? n : 9);
      abort();
    }
    lua_pop(L, 1);
  }

  fuzz_expect_clean(L, "websocket");
  lua_settop(L, top);
  static const char *const globals[] = {"FUZZ_INPUT", "FUZZ_CUTS", "FUZZ_WHOLE", "FUZZ_PIECES"};
  for (int i = 0; i < 4; i++) {
    lua_pushnil(L);
    lua_setglobal(L, globals[i]);
  }
  free(m.rec.p);
  free(m.out.p);
  return 0;
}
