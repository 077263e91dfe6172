/* Connection objects, server side and client side alike. The Lua object
 * is a small box pointing at the C-owned connection; the close path sets
 * the pointer to NULL, after which every IO method returns nil, "closed". */
#include <string.h>

#include "internal.h"

static cs_connbox_t *conn_box(lua_State *L) {
  return cs__checkudata(L, 1, cs__runtime_get(L)->conn_mt, CS_CONN_MT);
}

/* nil: the default; negative: forever. */
static double opt_timeout(lua_State *L, int idx, double def) {
  if (lua_isnoneornil(L, idx))
    return def;
  double t = luaL_checknumber(L, idx);
  return t < 0 ? -1 : t;
}

#define CONN_OPEN(L, c)                                                                  \
  cs_conn_t *c = conn_box(L)->c;                                                         \
  if (c == NULL)                                                                         \
  return cs__push_error(L, CS_ECLOSED)

/* conn:receive([pattern [, timeout]]) -> data | nil, err, partial */
static int lconn_receive(lua_State *L) {
  CONN_OPEN(L, c);
  cs_read_t r = {.kind = CS_READ_LINE, .max = c->max_frame};
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, 2);
    luaL_argcheck(L, n >= 0, 2, "byte count must not be negative");
    r.kind = CS_READ_BYTES;
    r.n = (size_t)n;
  } else if (!lua_isnoneornil(L, 2)) {
    const char *p = luaL_checkstring(L, 2);
    if (p[0] == '*')
      p++;
    if (p[0] == 'a')
      r.kind = CS_READ_ALL;
    else if (p[0] != 'l')
      return luaL_argerror(L, 2, "invalid pattern (\"*l\", \"*a\" or a number expected)");
  }
  return cs__conn_read(L, c, &r, opt_timeout(L, 3, c->read_timeout), "receive");
}

/* conn:receiveany(max [, timeout]) -> data | nil, err */
static int lconn_receiveany(lua_State *L) {
  CONN_OPEN(L, c);
  lua_Integer max = luaL_checkinteger(L, 2);
  luaL_argcheck(L, max > 0, 2, "must be positive");
  cs_read_t r = {.kind = CS_READ_ANY, .n = (size_t)max};
  return cs__conn_read(L, c, &r, opt_timeout(L, 3, c->read_timeout), "receiveany");
}

/* conn:recv([timeout]) -> the next frame, or what receiveany(65536) gives */
static int lconn_recv(lua_State *L) {
  CONN_OPEN(L, c);
  cs_read_t r = {.kind = CS_READ_ANY, .n = 65536};
  if (c->framing) {
    r.kind = CS_READ_FRAME;
    r.framing = c->framing;
    r.max = c->max_frame;
  }
  return cs__conn_read(L, c, &r, opt_timeout(L, 2, c->read_timeout), "recv");
}

/* The reader receiveuntil returns: reader([timeout]). */
static int lconn_until_reader(lua_State *L) {
  cs_connbox_t *box = lua_touserdata(L, lua_upvalueindex(2));
  cs_conn_t *c = box->c;
  if (c == NULL)
    return cs__push_error(L, CS_ECLOSED);
  cs_read_t r = {.kind = CS_READ_UNTIL, .max = c->max_frame};
  r.delim = lua_tolstring(L, lua_upvalueindex(3), &r.delim_len);
  r.inclusive = lua_toboolean(L, lua_upvalueindex(4));
  return cs__conn_read(L, c, &r, opt_timeout(L, 1, c->read_timeout), "receiveuntil");
}

/* conn:receiveuntil(delim [, {inclusive = bool}]) -> reader */
static int lconn_receiveuntil(lua_State *L) {
  conn_box(L);
  size_t len;
  luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len > 0, 2, "delimiter must not be empty");
  int inclusive = 0;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "inclusive");
    inclusive = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushboolean(L, inclusive);
  lua_pushcclosure(L, lconn_until_reader, 4);
  return 1;
}

/* conn:_peek([timeout [, max]]) -> up to max (default: all) buffered
 * bytes, waiting for at least one, left in the buffer | nil, err. With
 * _consume(n), a parser takes only the bytes that belong to it; max 0
 * only waits for data, returning "" without copying anything. */
static int lconn_peek(lua_State *L) {
  CONN_OPEN(L, c);
  lua_Integer max = luaL_optinteger(L, 3, -1);
  cs_read_t r = {.kind = CS_READ_ANY, .n = max < 0 ? (size_t)-1 : (size_t)max, .peek = 1};
  return cs__conn_read(L, c, &r, opt_timeout(L, 2, c->read_timeout), "peek");
}

/* conn:_consume(n): drops n buffered bytes (at most what is buffered). */
static int lconn_consume(lua_State *L) {
  CONN_OPEN(L, c);
  lua_Integer n = luaL_checkinteger(L, 2);
  if (n > 0)
    cs__buf_consume(&c->rbuf, (size_t)n < c->rbuf.len ? (size_t)n : c->rbuf.len);
  return 0;
}

/* conn:_pool(on) -> true | nil, err: into or out of a keep-alive pool
 * (coserve.lua keeps the pools; see conn:setkeepalive). */
static int lconn_pool(lua_State *L) {
  CONN_OPEN(L, c);
  int rc = cs__conn_pool(c, lua_toboolean(L, 2));
  if (rc < 0)
    return cs__push_error(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:send(data) -> bytes | nil, err */
static int lconn_send(lua_State *L) {
  CONN_OPEN(L, c);
  return cs__conn_write(L, c, 2, "send");
}

/* conn:close() -> true; safe to call twice. */
static int lconn_close(lua_State *L) {
  cs_connbox_t *box = conn_box(L);
  if (box->c)
    cs__conn_close(box->c, CS_ECLOSED);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:settimeouts(connect, send, read): nil keeps a value. The connect
 * timeout is accepted for OpenResty's signature; a connection that exists
 * is connected already (coserve.connect takes opts.timeout). */
static int lconn_settimeouts(lua_State *L) {
  CONN_OPEN(L, c);
  c->send_timeout = opt_timeout(L, 3, c->send_timeout);
  c->read_timeout = opt_timeout(L, 4, c->read_timeout);
  lua_pushboolean(L, 1);
  return 1;
}

static int push_name(lua_State *L, cs_conn_t *c, int peer) {
  if (c->type == CS_CONN_PIPE) {
    char path[1024];
    size_t len = sizeof path;
    int rc = peer ? uv_pipe_getpeername(&c->u.pipe, path, &len)
                  : uv_pipe_getsockname(&c->u.pipe, path, &len);
    if (rc != 0)
      return cs__push_error(L, rc);
    lua_pushfstring(L, "unix:%s", path);
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int rc = peer ? uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&ss, &len)
                : uv_tcp_getsockname(&c->u.tcp, (struct sockaddr *)&ss, &len);
  if (rc != 0)
    return cs__push_error(L, rc);
  char ip[64];
  int port = cs__addr_name((struct sockaddr *)&ss, ip, sizeof ip);
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

/* conn:getpeername() / conn:getsockname() -> ip, port */
static int lconn_getpeername(lua_State *L) {
  CONN_OPEN(L, c);
  return push_name(L, c, 1);
}

static int lconn_getsockname(lua_State *L) {
  CONN_OPEN(L, c);
  return push_name(L, c, 0);
}

/* conn:spawn(fn, ...) -> task, canceled when the connection closes. */
static int lconn_spawn(lua_State *L) {
  CONN_OPEN(L, c);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_remove(L, 1);
  return cs__spawn(L, c);
}

static int lconn_index(lua_State *L) {
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));
  if (!lua_isnil(L, -1))
    return 1;
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "id") == 0) {
    lua_pushnumber(L, conn_box(L)->id);
    return 1;
  }
  return 0;
}

static int lconn_gc(lua_State *L) {
  cs_connbox_t *box = lua_touserdata(L, 1);
  if (box->c && !cs__runtime_get(L)->tearing_down) {
    cs_conn_t *c = box->c;
    box->c = NULL;
    c->box = NULL;
    cs__conn_close(c, CS_ECLOSED);
  }
  return 0;
}

static int lconn_tostring(lua_State *L) {
  cs_connbox_t *box = conn_box(L);
  lua_pushfstring(L, "coserve.conn #%d%s", (int)box->id, box->c ? "" : " (closed)");
  return 1;
}

void cs__conn_push(lua_State *L, cs_conn_t *c) {
  cs_connbox_t *box = lua_newuserdata(L, sizeof(*box));
  box->c = c;
  box->id = c->id;
  c->box = box;
  luaL_getmetatable(L, CS_CONN_MT);
  lua_setmetatable(L, -2);
}

static const luaL_Reg conn_methods[] = {
    {"receive", lconn_receive},
    {"receiveany", lconn_receiveany},
    {"receiveuntil", lconn_receiveuntil},
    {"recv", lconn_recv},
    {"send", lconn_send},
    {"close", lconn_close},
    {"settimeouts", lconn_settimeouts},
    {"getpeername", lconn_getpeername},
    {"getsockname", lconn_getsockname},
    {"spawn", lconn_spawn},
    {"_peek", lconn_peek},
    {"_consume", lconn_consume},
    {"_pool", lconn_pool},
    {NULL, NULL}};

void cs__open_conn(lua_State *L, cs_runtime_t *rt) {
  luaL_newmetatable(L, CS_CONN_MT);
  rt->conn_mt = lua_topointer(L, -1);
  lua_pushlightuserdata(L, rt);
  lua_createtable(L, 0, 16);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, conn_methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "methods"); /* for coserve.lua to add to */
  lua_pushcclosure(L, lconn_index, 2);
  lua_setfield(L, -2, "__index");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lconn_gc, 1);
  lua_setfield(L, -2, "__gc");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lconn_tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
