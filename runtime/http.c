/* HTTP/1.x message parsing with llhttp.
 *
 * A parser object parses one message at a time. The connection reads the
 * head (everything up to the blank line, bounded by max_header) and hands
 * it over whole; llhttp parses it and pauses at the end of the headers.
 * Body bytes are then fed as they arrive: llhttp removes the chunked
 * framing and pauses at the end of the message, and reports how many bytes
 * it used, so that a pipelined next request stays in the connection's
 * buffer. llhttp's strict mode rejects request smuggling (Content-Length
 * with Transfer-Encoding, conflicting Content-Lengths).
 *
 * Lua surface (internal, used by coserve/http.lua):
 *   core.http_parser("request" | "response") -> parser
 *   parser:head(bytes [, no_body]) -> msg | nil, reason
 *   parser:body(bytes) -> data, used, complete | nil, reason */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>

#include "internal.h"

#define CS_HTTP_MT "coserve.http_parser"
#define HTTP_MAX_HEADERS 128

typedef struct {
  llhttp_t parser;
  lua_State *L;          /* during a call: where callbacks push */
  int headers;           /* stack index of the header list */
  int nheaders;          /* values pushed into it */
  int value_pending;     /* a field was seen, its value not yet */
  luaL_Buffer *body;     /* during body(): where on_body appends */
  int complete;          /* on_message_complete ran */
  int no_body;           /* the message has no body whatever it says */
  const char *url;       /* spans in the head being parsed */
  size_t url_len;
  const char *status;
  size_t status_len;
} http_t;

/* ---- llhttp callbacks ---- */

static int on_url(llhttp_t *p, const char *at, size_t len) {
  http_t *h = (http_t *)p;
  if (h->url == NULL)
    h->url = at;
  h->url_len += len;
  return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  http_t *h = (http_t *)p;
  if (h->status == NULL)
    h->status = at;
  h->status_len += len;
  return 0;
}

/* Field names and values are pushed in turn into the list; a span split
 * across calls (it cannot be, for a head parsed whole, but llhttp does not
 * promise it) is concatenated with the previous piece. */
static int push_span(http_t *h, const char *at, size_t len, int is_value) {
  lua_State *L = h->L;
  if (L == NULL)
    return 0; /* trailer fields after a chunked body: not kept */
  if (is_value == h->value_pending) {
    if (h->nheaders >= 2 * HTTP_MAX_HEADERS)
      return HPE_USER;
    lua_pushlstring(L, at, len);
    lua_rawseti(L, h->headers, ++h->nheaders);
    h->value_pending = !is_value;
  } else {
    lua_rawgeti(L, h->headers, h->nheaders);
    lua_pushlstring(L, at, len);
    lua_concat(L, 2);
    lua_rawseti(L, h->headers, h->nheaders);
  }
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  return push_span((http_t *)p, at, len, 0);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  return push_span((http_t *)p, at, len, 1);
}

static int on_headers_complete(llhttp_t *p) {
  http_t *h = (http_t *)p;
  /* Pausing leaves the body to body(); "no body" (a response to HEAD, say)
   * makes llhttp finish the message right here. */
  return h->no_body ? 1 : HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  http_t *h = (http_t *)p;
  if (h->body == NULL)
    return HPE_USER;
  luaL_addlstring(h->body, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  http_t *h = (http_t *)p;
  h->complete = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t http_settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- Lua ---- */

static http_t *http_check(lua_State *L) { return luaL_checkudata(L, 1, CS_HTTP_MT); }

static int http_fail(lua_State *L, http_t *h, llhttp_errno_t err) {
  lua_pushnil(L);
  if (err == HPE_USER && h->nheaders >= 2 * HTTP_MAX_HEADERS)
    lua_pushliteral(L, "too many headers");
  else
    lua_pushstring(L, llhttp_get_error_reason(&h->parser) ? llhttp_get_error_reason(&h->parser)
                                                          : llhttp_errno_name(err));
  return 2;
}

/* core.http_parser(kind) -> parser */
static int lhttp_new(lua_State *L) {
  static const char *const kinds[] = {"request", "response", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  http_t *h = lua_newuserdata(L, sizeof(*h));
  memset(h, 0, sizeof *h);
  llhttp_init(&h->parser, kind == 0 ? HTTP_REQUEST : HTTP_RESPONSE, &http_settings);
  luaL_getmetatable(L, CS_HTTP_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static void set_field_string(lua_State *L, const char *k, const char *v, size_t len) {
  lua_pushlstring(L, v, len);
  lua_setfield(L, -2, k);
}

/* parser:head(bytes [, no_body]) -> msg | nil, reason
 * bytes is a whole head, through its blank line. msg = {method, url,
 * status, reason, version, headers = {name, value, ...} (as sent),
 * keep_alive, upgrade, body = "none" | "length" | "chunked" | "eof",
 * length}. */
static int lhttp_head(lua_State *L) {
  http_t *h = http_check(L);
  size_t len;
  const char *head = luaL_checklstring(L, 2, &len);
  int no_body = lua_toboolean(L, 3);
  uint8_t type = llhttp_get_type(&h->parser);
  llhttp_init(&h->parser, type, &http_settings);
  h->L = L;
  h->nheaders = 0;
  h->value_pending = 0;
  h->complete = 0;
  h->no_body = no_body;
  h->body = NULL;
  h->url = h->status = NULL;
  h->url_len = h->status_len = 0;
  lua_settop(L, 3);
  lua_createtable(L, 16, 0);
  h->headers = lua_gettop(L);
  llhttp_errno_t err = llhttp_execute(&h->parser, head, len);
  h->L = NULL;
  if (err == HPE_PAUSED) {
    /* Paused at the end of the headers: they must end exactly here. */
    const char *pos = llhttp_get_error_pos(&h->parser);
    llhttp_resume(&h->parser);
    if (pos != head + len)
      return lua_pushnil(L), lua_pushliteral(L, "data after the head"), 2;
  } else if (err == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&h->parser);
  } else if (err != HPE_OK || !(h->complete || no_body)) {
    if (err == HPE_OK)
      return lua_pushnil(L), lua_pushliteral(L, "incomplete head"), 2;
    return http_fail(L, h, err);
  }
  llhttp_t *p = &h->parser;
  lua_createtable(L, 0, 12);
  lua_pushvalue(L, h->headers);
  lua_setfield(L, -2, "headers");
  if (type == HTTP_REQUEST) {
    lua_pushstring(L, llhttp_method_name((llhttp_method_t)p->method));
    lua_setfield(L, -2, "method");
    set_field_string(L, "url", h->url ? h->url : "", h->url_len);
  } else {
    lua_pushinteger(L, p->status_code);
    lua_setfield(L, -2, "status");
    set_field_string(L, "reason", h->status ? h->status : "", h->status_len);
  }
  lua_pushfstring(L, "%d.%d", p->http_major, p->http_minor);
  lua_setfield(L, -2, "version");
  /* After a CONNECT head come a tunnel's bytes, not a body nor another
   * request: llhttp stops there, and so must the connection's HTTP. */
  int connect = type == HTTP_REQUEST && p->method == HTTP_CONNECT;
  lua_pushboolean(L, !connect && llhttp_should_keep_alive(p));
  lua_setfield(L, -2, "keep_alive");
  lua_pushboolean(L, p->upgrade);
  lua_setfield(L, -2, "upgrade");
  const char *body = "none";
  if (no_body || h->complete || connect)
    body = "none";
  else if (p->flags & F_CHUNKED)
    body = "chunked";
  else if (p->flags & F_CONTENT_LENGTH)
    body = p->content_length > 0 ? "length" : "none";
  else if (llhttp_message_needs_eof(p))
    body = "eof";
  lua_pushstring(L, body);
  lua_setfield(L, -2, "body");
  if (p->flags & F_CONTENT_LENGTH) {
    lua_pushnumber(L, (double)p->content_length);
    lua_setfield(L, -2, "length");
  }
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
    return http_fail(L, h, err);
  }
  luaL_pushresult(&b);
  lua_pushnumber(L, (double)used);
  lua_pushboolean(L, h->complete);
  return 3;
}

/* core.http_date() -> the Date header's value for now, formatted at most
 * once a second. (os.time() in Lua would abort LuaJIT's traces.) */
static int lhttp_date(lua_State *L) {
  static const char days[] = "SunMonTueWedThuFriSat";
  static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  time_t now = time(NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, "coserve.http_date");
  lua_rawgeti(L, -1, 1);
  if ((time_t)lua_tonumber(L, -1) == now) {
    lua_rawgeti(L, -2, 2);
    return 1;
  }
  lua_pop(L, 1);
  struct tm tm;
  gmtime_r(&now, &tm);
  char buf[64];
  snprintf(buf, sizeof buf, "%.3s, %02d %.3s %d %02d:%02d:%02d GMT", days + 3 * tm.tm_wday,
           tm.tm_mday, months + 3 * tm.tm_mon, tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
           tm.tm_sec);
  lua_pushnumber(L, (double)now);
  lua_rawseti(L, -2, 1);
  lua_pushstring(L, buf);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 2);
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

/* core.http_head(status_line, status, headers, more_headers, length,
 *                version10, keep_alive) -> head, chunked, keep_alive
 * The response head: the status line, both header tables (either may be
 * nil), date and content-length unless given, transfer-encoding: chunked
 * for an HTTP/1.1 response of unknown length (length < 0), and the
 * connection header. An HTTP/1.0 response of unknown length cannot be kept
 * alive: keep_alive is then ignored. */
static int lhttp_head_bytes(lua_State *L) {
  size_t slen;
  const char *status_line = luaL_checklstring(L, 1, &slen);
  int status = (int)luaL_checkinteger(L, 2);
  double length = luaL_checknumber(L, 5);
  int v10 = lua_toboolean(L, 6);
  int keep_alive = lua_toboolean(L, 7);
  cs_runtime_t *rt = cs__runtime_get(L);
  head_t hb = {rt->head, sizeof rt->head, 0, 0};
  head_t *h = &hb;
  head_add(h, status_line, slen);
  char line[128];
  int n;
  int has_date = 0, has_len = 0;
  for (int i = 3; i <= 4; i++)
    if (lua_istable(L, i))
      head_add_table(L, i, h, &has_date, &has_len);
  if (!has_date) {
    lhttp_date(L);
    size_t dlen;
    const char *d = lua_tolstring(L, -1, &dlen);
    head_add(h, "date: ", 6);
    head_add(h, d, dlen);
    head_add(h, "\r\n", 2);
    lua_pop(L, 1);
  }
  int chunked = 0;
  if (length >= 0) {
    if (status != 204 && status != 304 && !has_len) {
      n = snprintf(line, sizeof line, "content-length: %.0f\r\n", length);
      head_add(h, line, (size_t)n);
    }
  } else if (!v10) {
    head_add(h, "transfer-encoding: chunked\r\n", 28);
    chunked = 1;
  } else {
    keep_alive = 0;
  }
  if (!keep_alive)
    head_add(h, "connection: close\r\n", 19);
  else if (v10)
    head_add(h, "connection: keep-alive\r\n", 24);
  head_add(h, "\r\n", 2);
  if (h->overflow)
    return luaL_error(L, "response head over %d bytes", (int)h->cap);
  lua_pushlstring(L, h->data, h->len);
  lua_pushboolean(L, chunked);
  lua_pushboolean(L, keep_alive);
  return 3;
}

static const luaL_Reg http_methods[] = {{"head", lhttp_head}, {"body", lhttp_body}, {NULL, NULL}};

void cs__open_http(lua_State *L, cs_runtime_t *rt) {
  luaL_newmetatable(L, CS_HTTP_MT);
  lua_createtable(L, 0, 2);
  luaL_setfuncs(L, http_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, lhttp_new);
  lua_setfield(L, -2, "http_parser");
  lua_createtable(L, 2, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, "coserve.http_date");
  lua_pushcfunction(L, lhttp_date);
  lua_setfield(L, -2, "http_date");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lhttp_head_bytes, 1);
  lua_setfield(L, -2, "http_head");
}
