/* HTTP/1.x message parsing with llhttp.
 *
 * A parser object parses one message at a time. The connection reads the
 * head (everything up to the blank line, bounded by max_header) and the
 * parser takes it straight from the connection's buffer: the request line
 * comes back as values, and the head is copied into the parser so that
 * headers() can turn it into a table later, for the handlers that ask
 * (most do not). Body bytes are then fed as they arrive: llhttp removes the
 * chunked framing and pauses at the end of the message, and reports how
 * many bytes it used, so that a pipelined next request stays in the
 * connection's buffer. llhttp's strict mode rejects request smuggling
 * (Content-Length with Transfer-Encoding, conflicting Content-Lengths).
 *
 * Lua surface (internal, used by coserve/http.lua):
 *   core.http_parser("request" | "response") -> parser
 *   parser:read(conn, max, timeout [, no_body]) -> head values (below)
 *       | false, reason (not HTTP) | nil, err (the connection's)
 *   parser:head(bytes [, no_body]) -> msg table | nil, reason
 *   parser:headers() -> {name, value, ...} of the last head, as sent
 *   parser:body(bytes) -> data, used, complete | nil, reason
 *
 * The head values: method, url (a request) or status, reason (a
 * response); then version, keep_alive, body = "none" | "length" |
 * "chunked" | "eof", and length (nil without Content-Length). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>

#include "internal.h"

#define CS_HTTP_MT "coserve.http_parser"
#define HTTP_MAX_HEADERS 128

typedef struct {
  size_t off, len;
} span_t;

typedef struct {
  llhttp_t parser;       /* its data points back here */
  llhttp_t probe;        /* checks a head's bytes as they arrive */
  size_t probed;         /* how many of them it has seen */
  char *head;            /* a copy of the last head parsed, from alloc */
  lua_Alloc alloc;       /* the Lua state's allocator: Lua owns the copy */
  void *alloc_ud;
  size_t head_len, head_cap;
  span_t url, status;    /* in head */
  int nfields;           /* header fields in head */
  int name_open, value_open; /* a field's name or value has begun */
  int complete;          /* on_message_complete ran */
  int no_body;           /* the message has no body whatever it says */
  luaL_Buffer *body;     /* during body(): where on_body appends */
  lua_State *L;          /* during headers(): where fields are pushed */
  int list, nlist;       /* headers(): the list's stack index and length */
} http_t;

/* ---- llhttp callbacks ----
 * A head is parsed twice at most: once when it is read, counting its
 * fields, and again by headers(), which pushes them (h->L set). */

static void span_add(span_t *s, http_t *h, const char *at, size_t len) {
  if (s->len == 0)
    s->off = (size_t)(at - h->head);
  s->len += len;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  http_t *h = p->data;
  if (h->L == NULL)
    span_add(&h->url, h, at, len);
  return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  http_t *h = p->data;
  if (h->L == NULL)
    span_add(&h->status, h, at, len);
  return 0;
}

/* A field's name and value may each come in several spans (llhttp does
 * not promise one): the *_complete callbacks end them. An empty value has
 * no span at all. */
static int on_field_span(http_t *h, const char *at, size_t len, int is_value) {
  int more = is_value ? h->value_open : h->name_open;
  if (!more && !is_value && ++h->nfields > HTTP_MAX_HEADERS)
    return HPE_USER;
  if (is_value)
    h->value_open = 1;
  else
    h->name_open = 1;
  lua_State *L = h->L;
  if (L == NULL)
    return 0;
  if (!more) {
    lua_pushlstring(L, at, len);
    lua_rawseti(L, h->list, ++h->nlist);
  } else {
    lua_rawgeti(L, h->list, h->nlist);
    lua_pushlstring(L, at, len);
    lua_concat(L, 2);
    lua_rawseti(L, h->list, h->nlist);
  }
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  return on_field_span(p->data, at, len, 0);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  return on_field_span(p->data, at, len, 1);
}

static int on_header_field_complete(llhttp_t *p) {
  http_t *h = p->data;
  h->name_open = 0;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  http_t *h = p->data;
  if (!h->value_open && h->L) {
    lua_pushliteral(h->L, "");
    lua_rawseti(h->L, h->list, ++h->nlist);
  }
  h->value_open = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  http_t *h = p->data;
  /* Pausing leaves the body to body(); "no body" (a response to HEAD, say)
   * makes llhttp finish the message right here. */
  return h->no_body && h->L == NULL ? 1 : HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  http_t *h = p->data;
  if (h->body == NULL)
    return HPE_USER;
  luaL_addlstring(h->body, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  http_t *h = p->data;
  h->complete = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t http_settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void parser_init(llhttp_t *p, uint8_t type, http_t *h) {
  llhttp_init(p, type, &http_settings);
  p->data = h;
}

/* The probe only validates: it keeps no spans and pauses at the end of the
 * head, where the real parse takes over. */
static int probe_headers_complete(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED;
}

static const llhttp_settings_t probe_settings = {.on_headers_complete = probe_headers_complete};

/* A head's bytes are checked as they arrive, not only once the blank line
 * has come: bytes that cannot begin a message (a TLS ClientHello on a
 * plaintext port, binary junk) are refused at once instead of waiting for
 * header_timeout, as nginx does. llhttp is a streaming parser, so each
 * call feeds only the bytes the probe has not seen. */
static int check_head(void *ud, const char *data, size_t len) {
  http_t *h = ud;
  if (len <= h->probed)
    return 0;
  llhttp_errno_t err = llhttp_execute(&h->probe, data + h->probed, len - h->probed);
  h->probed = len;
  return err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE;
}

/* ---- parsing a head ---- */

/* Copies a whole head (through its blank line) into h and parses it.
 * Returns NULL, or why it is not a head: llhttp's reason, or one of ours. */
static const char *parse_head(http_t *h, const char *data, size_t len, int no_body) {
  if (len > h->head_cap) {
    size_t cap = h->head_cap ? h->head_cap : 256;
    while (cap < len)
      cap *= 2;
    char *p = h->alloc(h->alloc_ud, h->head, h->head_cap, cap);
    if (p == NULL)
      return "out of memory";
    h->head = p;
    h->head_cap = cap;
  }
  if (len > 0)
    memcpy(h->head, data, len);
  h->head_len = len;
  parser_init(&h->parser, llhttp_get_type(&h->parser), h);
  h->url.len = h->status.len = 0;
  h->nfields = 0;
  h->name_open = h->value_open = 0;
  h->complete = 0;
  h->no_body = no_body;
  const char *head = h->head ? h->head : "";
  llhttp_errno_t err = llhttp_execute(&h->parser, head, len);
  if (err == HPE_PAUSED) {
    /* Paused at the end of the headers: they must end exactly here. */
    const char *pos = llhttp_get_error_pos(&h->parser);
    llhttp_resume(&h->parser);
    return pos == head + len ? NULL : "data after the head";
  }
  if (err == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&h->parser);
    return NULL;
  }
  if (err == HPE_OK)
    return h->complete || no_body ? NULL : "incomplete head";
  if (err == HPE_USER && h->nfields > HTTP_MAX_HEADERS)
    return "too many headers";
  const char *reason = llhttp_get_error_reason(&h->parser);
  return reason ? reason : llhttp_errno_name(err);
}

static const char *body_kind(http_t *h) {
  llhttp_t *p = &h->parser;
  /* After a CONNECT head come a tunnel's bytes, not a body nor another
   * request: llhttp stops there, and so must the connection's HTTP. */
  if (h->no_body || h->complete || (p->type == HTTP_REQUEST && p->method == HTTP_CONNECT))
    return "none";
  if (p->flags & F_CHUNKED)
    return "chunked";
  if (p->flags & F_CONTENT_LENGTH)
    return p->content_length > 0 ? "length" : "none";
  return llhttp_message_needs_eof(p) ? "eof" : "none";
}

/* [-0, +6] The values of the head just parsed (see the top). */
static int push_head(lua_State *L, http_t *h) {
  llhttp_t *p = &h->parser;
  if (p->type == HTTP_REQUEST) {
    lua_pushstring(L, llhttp_method_name((llhttp_method_t)p->method));
    lua_pushlstring(L, h->head + h->url.off, h->url.len);
  } else {
    lua_pushinteger(L, p->status_code);
    lua_pushlstring(L, h->head + h->status.off, h->status.len);
  }
  if (p->http_major == 1 && p->http_minor == 1)
    lua_pushliteral(L, "1.1");
  else if (p->http_major == 1 && p->http_minor == 0)
    lua_pushliteral(L, "1.0");
  else
    lua_pushfstring(L, "%d.%d", p->http_major, p->http_minor);
  int connect = p->type == HTTP_REQUEST && p->method == HTTP_CONNECT;
  lua_pushboolean(L, !connect && llhttp_should_keep_alive(p));
  lua_pushstring(L, body_kind(h));
  if (p->flags & F_CONTENT_LENGTH)
    lua_pushnumber(L, (double)p->content_length);
  else
    lua_pushnil(L);
  return 6;
}

/* ---- Lua ---- */

static http_t *http_check(lua_State *L) {
  return cs__checkudata(L, 1, cs__runtime_get(L)->http_mt, CS_HTTP_MT);
}

/* The last head a parser (its userdata's address) parsed, as it was
 * sent: for the access log (alog.c), which picks the few fields it needs
 * from it, called through LuaJIT's FFI on the request path. */
const char *cs__http_head(const void *parser, size_t *len) {
  const http_t *h = parser;
  *len = h->head_len;
  return h->head ? h->head : "";
}

static cs_conn_t *conn_check(lua_State *L, int idx) {
  cs_connbox_t *box = cs__checkudata(L, idx, cs__runtime_get(L)->conn_mt, CS_CONN_MT);
  return box->c;
}

/* core.http_parser(kind) -> parser */
static int lhttp_new(lua_State *L) {
  static const char *const kinds[] = {"request", "response", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  http_t *h = lua_newuserdata(L, sizeof(*h));
  memset(h, 0, sizeof *h);
  h->alloc = lua_getallocf(L, &h->alloc_ud);
  parser_init(&h->parser, kind == 0 ? HTTP_REQUEST : HTTP_RESPONSE, h);
  luaL_getmetatable(L, CS_HTTP_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int lhttp_gc(lua_State *L) {
  http_t *h = lua_touserdata(L, 1);
  if (h->head)
    h->alloc(h->alloc_ud, h->head, h->head_cap, 0);
  h->head = NULL;
  h->head_cap = h->head_len = 0;
  return 0;
}

/* The end of a read: the head is in the connection's buffer. */
static int deliver_head(lua_State *co, void *ud, const char *data, size_t len) {
  http_t *h = ud;
  const char *why = parse_head(h, data, len, h->no_body);
  if (why) {
    lua_pushboolean(co, 0);
    lua_pushstring(co, why);
    lua_pushlstring(co, data, len);
    return 3;
  }
  return push_head(co, h);
}

/* parser:read(conn, max, timeout [, no_body [, idle_timeout]]): reads a
 * head of at most max bytes off conn, waiting up to timeout seconds (nil:
 * the connection's read timeout; < 0: forever), and parses it. With
 * idle_timeout and nothing buffered, the connection is idle (between
 * requests): the wait for its first byte takes up to idle_timeout and ends
 * with nil, "interrupted" when the server begins to shut down; the head
 * then has timeout seconds from its first byte. A head that is not one is
 * false, reason, its bytes; a timeout's or "too large"'s third result is
 * the bytes that had come ("" while idle). "too large" leaves the
 * connection open, so that the server can answer 431. */
static int lhttp_read(lua_State *L) {
  http_t *h = http_check(L);
  cs_conn_t *c = conn_check(L, 2);
  cs_read_t r = {.kind = CS_READ_UNTIL, .delim = "\r\n\r\n", .delim_len = 4, .inclusive = 1,
                 .keep_open = 1, .deliver = deliver_head, .check = check_head, .ud = h};
  r.max = (size_t)luaL_checkinteger(L, 3);
  if (c == NULL)
    return cs__push_error(L, CS_ECLOSED);
  double timeout = luaL_optnumber(L, 4, c->read_timeout);
  if (timeout < 0)
    timeout = -1;
  h->no_body = lua_toboolean(L, 5);
  llhttp_init(&h->probe, llhttp_get_type(&h->parser), &probe_settings);
  h->probed = 0;
  if (!lua_isnoneornil(L, 6)) {
    r.idle = 1;
    r.busy_timeout = timeout;
    timeout = luaL_checknumber(L, 6);
  }
  return cs__conn_read(L, c, &r, timeout < 0 ? -1 : timeout, "read");
}

/* parser:head(bytes [, no_body]) -> msg | nil, reason
 * As read(), from a string holding a whole head, and as one table: msg =
 * {method, url | status, reason, version, keep_alive, body, length,
 * headers = parser:headers()}. */
static int lhttp_head(lua_State *L) {
  static const char *const keys[2][6] = {
      {"method", "url", "version", "keep_alive", "body", "length"},
      {"status", "reason", "version", "keep_alive", "body", "length"}};
  http_t *h = http_check(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *why = parse_head(h, data, len, lua_toboolean(L, 3));
  if (why) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_settop(L, 1);
  lua_createtable(L, 0, 8);
  int n = push_head(L, h);
  const char *const *k = keys[h->parser.type == HTTP_REQUEST ? 0 : 1];
  for (int i = n - 1; i >= 0; i--)
    lua_setfield(L, 2, k[i]);
  lua_getfield(L, 1, "headers");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  lua_setfield(L, 2, "headers");
  return 1;
}

/* parser:headers() -> {name, value, ...}: the fields of the last head, as
 * sent, in order (repeated names repeat). */
static int lhttp_headers(lua_State *L) {
  http_t *h = http_check(L);
  lua_createtable(L, 2 * h->nfields, 0);
  if (h->nfields == 0)
    return 1;
  llhttp_t p;
  parser_init(&p, llhttp_get_type(&h->parser), h);
  h->L = L;
  h->list = lua_gettop(L);
  h->nlist = 0;
  h->nfields = 0;
  h->name_open = h->value_open = 0;
  /* The head parsed before: this pass stops at its end. */
  llhttp_execute(&p, h->head, h->head_len);
  h->L = NULL;
  return 1;
}

/* parser:body(bytes) -> data, used, complete | nil, reason
 * Feeds bytes of the body; data is the body content they held (chunk
 * framing removed), used how many of them belonged to this message. An
 * empty bytes string means the peer closed: it ends an "eof" body. */
static int lhttp_body(lua_State *L) {
  http_t *h = http_check(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  h->body = &b;
  h->complete = 0;
  llhttp_errno_t err;
  if (len == 0) {
    /* The peer closed. A body that ends at close may not have begun yet:
     * an empty execute first moves llhttp past the paused end of the head. */
    err = llhttp_execute(&h->parser, data, 0);
    if (err == HPE_OK)
      err = llhttp_finish(&h->parser);
  } else {
    err = llhttp_execute(&h->parser, data, len);
  }
  h->body = NULL;
  size_t used = len;
  if (err == HPE_PAUSED) {
    if (len > 0) /* after llhttp_finish() the position is not in data */
      used = (size_t)(llhttp_get_error_pos(&h->parser) - data);
    llhttp_resume(&h->parser);
  } else if (err != HPE_OK) {
    luaL_pushresult(&b);
    lua_pushnil(L);
    const char *reason = llhttp_get_error_reason(&h->parser);
    lua_pushstring(L, reason ? reason : llhttp_errno_name(err));
    return 2;
  }
  luaL_pushresult(&b);
  lua_pushnumber(L, (double)used);
  lua_pushboolean(L, h->complete);
  return 3;
}

/* The Date header's value for now, formatted at most once a second. */
static const char *http_date(cs_runtime_t *rt, size_t *len) {
  static const char days[] = "SunMonTueWedThuFriSat";
  static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  time_t now = time(NULL);
  if (now != rt->date_time || rt->date[0] == '\0') {
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(rt->date, sizeof rt->date, "%.3s, %02d %.3s %d %02d:%02d:%02d GMT",
             days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon, tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    rt->date_time = now;
  }
  *len = strlen(rt->date);
  return rt->date;
}

/* core.http_date() -> the Date header's value for now. */
static int lhttp_date(lua_State *L) {
  size_t len;
  const char *d = http_date(cs__runtime_get(L), &len);
  lua_pushlstring(L, d, len);
  return 1;
}

/* A response head being built in the runtime's head buffer; bounded, and
 * an overflow is an error. */
typedef struct {
  char *data;
  size_t cap;
  size_t len;
  int overflow;
} head_t;

static void head_add(head_t *h, const char *s, size_t n) {
  if (h->len + n > h->cap) {
    h->overflow = 1;
    return;
  }
  memcpy(h->data + h->len, s, n);
  h->len += n;
}

/* Appends the lines of the header table at idx: names lowercased, a table
 * value giving one line per element. Notes date and content-length. */
static void head_add_table(lua_State *L, int idx, head_t *h, int *has_date, int *has_len) {
  for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      continue;
    size_t klen;
    const char *k = lua_tolstring(L, -2, &klen);
    char name[256];
    if (klen >= sizeof name)
      klen = sizeof name - 1;
    for (size_t i = 0; i < klen; i++)
      name[i] = (char)(k[i] >= 'A' && k[i] <= 'Z' ? k[i] + 32 : k[i]);
    if (klen == 4 && memcmp(name, "date", 4) == 0)
      *has_date = 1;
    else if (klen == 14 && memcmp(name, "content-length", 14) == 0)
      *has_len = 1;
    int list = lua_istable(L, -1);
    int n = list ? (int)lua_objlen(L, -1) : 1;
    for (int i = 1; i <= n; i++) {
      if (list)
        lua_rawgeti(L, -1, i);
      else
        lua_pushvalue(L, -1);
      size_t vlen;
      const char *v = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
                          ? lua_tolstring(L, -1, &vlen) : NULL;
      if (v == NULL) {
        v = lua_toboolean(L, -1) ? "true" : "false";
        vlen = strlen(v);
      }
      head_add(h, name, klen);
      head_add(h, ": ", 2);
      head_add(h, v, vlen);
      head_add(h, "\r\n", 2);
      lua_pop(L, 1);
    }
  }
}

/* Appends n in decimal. */
static void head_add_uint(head_t *h, uint64_t n) {
  char digits[24];
  size_t i = sizeof digits;
  do {
    digits[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  head_add(h, digits + i, sizeof digits - i);
}

/* core.http_respond(conn, status, reason, headers, more, length, connection
 *                   [, body]) -> bytes | nil, err
 * Sends a response head, and the body if given, in one write. The head:
 * the status line, both header tables (either may be nil), date unless
 * given, then by length: >= 0 content-length (unless given, or for 1xx,
 * 204 and 304), -1 transfer-encoding: chunked, -2 neither; and connection
 * 1: close, 2: keep-alive (HTTP/1.0), 0: no such line. The head is built
 * in the runtime's buffer, and a small body joins it there; like
 * conn:send, this parks until the kernel has every byte. */
static int lhttp_respond(lua_State *L) {
  cs_conn_t *c = conn_check(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  size_t rlen;
  const char *reason = luaL_checklstring(L, 3, &rlen);
  double length = luaL_checknumber(L, 6);
  int connection = (int)luaL_checkinteger(L, 7);
  size_t blen = 0;
  const char *body = lua_isnoneornil(L, 8) ? NULL : luaL_checklstring(L, 8, &blen);
  if (c == NULL)
    return cs__push_error(L, CS_ECLOSED);
  cs_runtime_t *rt = cs__runtime_get(L);
  head_t hb = {rt->head, sizeof rt->head, 0, 0};
  head_t *h = &hb;
  if (status < 100 || status > 999)
    return luaL_argerror(L, 2, "status out of range (100-999)");
  char line[16] = "HTTP/1.1 ";
  line[9] = (char)('0' + status / 100);
  line[10] = (char)('0' + status / 10 % 10);
  line[11] = (char)('0' + status % 10);
  line[12] = ' ';
  head_add(h, line, 13);
  head_add(h, reason, rlen);
  head_add(h, "\r\n", 2);
  int has_date = 0, has_len = 0;
  for (int i = 4; i <= 5; i++)
    if (lua_istable(L, i))
      head_add_table(L, i, h, &has_date, &has_len);
  if (!has_date) {
    size_t dlen;
    const char *d = http_date(rt, &dlen);
    head_add(h, "date: ", 6);
    head_add(h, d, dlen);
    head_add(h, "\r\n", 2);
  }
  if (length >= 0) {
    if (!has_len && status >= 200 && status != 204 && status != 304) {
      head_add(h, "content-length: ", 16);
      head_add_uint(h, (uint64_t)length);
      head_add(h, "\r\n", 2);
    }
  } else if (length == -1) {
    head_add(h, "transfer-encoding: chunked\r\n", 28);
  }
  if (connection == 1)
    head_add(h, "connection: close\r\n", 19);
  else if (connection == 2)
    head_add(h, "connection: keep-alive\r\n", 24);
  head_add(h, "\r\n", 2);
  if (h->overflow)
    return luaL_error(L, "response head over %d bytes", (int)h->cap);
  if (body == NULL || blen == 0)
    return cs__conn_write_bytes(L, c, h->data, h->len, "respond");
  if (blen <= h->cap - h->len) {
    head_add(h, body, blen);
    return cs__conn_write_bytes(L, c, h->data, h->len, "respond");
  }
  /* A large body is written from its own string, after the head. */
  lua_createtable(L, 2, 0);
  lua_pushlstring(L, h->data, h->len);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 8);
  lua_rawseti(L, -2, 2);
  return cs__conn_write(L, c, lua_gettop(L), "respond");
}

static const luaL_Reg http_methods[] = {{"read", lhttp_read},
                                        {"head", lhttp_head},
                                        {"headers", lhttp_headers},
                                        {"body", lhttp_body},
                                        {NULL, NULL}};

void cs__open_http(lua_State *L, cs_runtime_t *rt) {
  luaL_newmetatable(L, CS_HTTP_MT);
  rt->http_mt = lua_topointer(L, -1);
  lua_createtable(L, 0, 4);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, http_methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "http_parser_methods"); /* for coserve/http.lua */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lhttp_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, lhttp_new);
  lua_setfield(L, -2, "http_parser");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lhttp_date, 1);
  lua_setfield(L, -2, "http_date");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lhttp_respond, 1);
  lua_setfield(L, -2, "http_respond");
}
