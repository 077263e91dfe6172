/* Server objects and the client entry points: core.server(opts),
 * core.connect(addr, port, timeout), core.resolve(host, family). Option
 * defaults and name resolution for servers live in coserve.lua. */
#include <string.h>

#include "internal.h"

static cs_server_t *server_check(lua_State *L) { return luaL_checkudata(L, 1, CS_SERVER_MT); }

static double opt_number(lua_State *L, const char *name, double def, double min) {
  lua_getfield(L, 1, name);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "coserve.server: option '%s' must be a number", name);
    v = lua_tonumber(L, -1);
    if (v < min)
      luaL_error(L, "coserve.server: option '%s' must be at least %f", name, min);
  }
  lua_pop(L, 1);
  return v;
}

/* A byte count from a Lua number: math.huge (or anything past size_t)
 * means no limit; converting it to size_t directly would be undefined. */
static size_t to_size(double v) { return v >= 18446744073709549568.0 ? SIZE_MAX : (size_t)v; }

static const char *const length_types[] = {"u8", "u16be", "u16le", "u32be", "u32le",
                                           "u64be", "u64le", NULL};

/* framing = {eof = "\r\n"} | {length = {type =, offset =, body_offset =}} */
static void parse_framing(lua_State *L, cs_framing_t *f) {
  memset(f, 0, sizeof *f);
  lua_getfield(L, 1, "framing");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  luaL_checktype(L, -1, LUA_TTABLE);
  int fi = lua_gettop(L);
  lua_getfield(L, fi, "eof");
  if (!lua_isnil(L, -1)) {
    size_t len;
    const char *eof = lua_tolstring(L, -1, &len);
    if (eof == NULL || len == 0 || len > sizeof f->eof)
      luaL_error(L, "coserve.server: framing.eof must be a string of 1 to %d bytes",
                 (int)sizeof f->eof);
    f->kind = CS_FRAME_EOF;
    memcpy(f->eof, eof, len);
    f->eof_len = len;
  }
  lua_getfield(L, fi, "length");
  if (!lua_isnil(L, -1)) {
    if (f->kind != CS_FRAME_NONE || !lua_istable(L, -1))
      luaL_error(L, "coserve.server: framing takes one of eof = string or length = table");
    int li = lua_gettop(L);
    lua_getfield(L, li, "type");
    const char *type = lua_isnil(L, -1) ? "u32be" : lua_tostring(L, -1);
    int k = -1;
    for (int i = 0; type && length_types[i]; i++)
      if (strcmp(type, length_types[i]) == 0)
        k = i;
    if (k < 0)
      luaL_error(L, "coserve.server: framing.length.type must be u8, u16be, u16le, u32be, "
                    "u32le, u64be or u64le");
    f->kind = CS_FRAME_LENGTH;
    f->len_size = k == 0 ? 1 : k <= 2 ? 2 : k <= 4 ? 4 : 8;
    f->len_big_endian = k == 0 || k % 2 == 1;
    lua_getfield(L, li, "offset");
    lua_Integer off = lua_isnil(L, -1) ? 0 : lua_tointeger(L, -1);
    lua_getfield(L, li, "body_offset");
    lua_Integer body = lua_isnil(L, -1) ? off + f->len_size : lua_tointeger(L, -1);
    if (off < 0 || body < off + f->len_size)
      luaL_error(L, "coserve.server: framing.length needs 0 <= offset and "
                    "body_offset >= offset + the length field's size");
    f->len_offset = (size_t)off;
    f->body_offset = (size_t)body;
  }
  if (f->kind == CS_FRAME_NONE)
    luaL_error(L, "coserve.server: framing takes one of eof = string or length = table");
  lua_settop(L, fi - 1);
}

static const char *const server_options[] = {
    "host",         "port",         "backlog",   "reuse_port", "max_connections",
    "read_timeout", "send_timeout", "send_buffer", "idle_timeout", "framing",
    "max_frame",    NULL};

/* core.server(opts) -> server. Raises on a bad or unknown option. */
static int lserver_new(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int known = 0;
    for (int i = 0; k && server_options[i]; i++)
      known |= strcmp(k, server_options[i]) == 0;
    if (!known)
      return luaL_error(L, "coserve.server: unknown option '%s'",
                        k ? k : luaL_typename(L, -2));
  }
  cs_server_t *s = lua_newuserdata(L, sizeof(*s));
  memset(s, 0, sizeof *s);
  s->rt = rt;
  s->self_ref = LUA_NOREF;
  lua_getfield(L, 1, "host");
  const char *host = lua_isnil(L, -1) ? "127.0.0.1" : lua_tostring(L, -1);
  if (host == NULL || strlen(host) >= sizeof s->host)
    return luaL_error(L, "coserve.server: option 'host' must be a string");
  if (strncmp(host, "unix:", 5) == 0) {
    s->is_unix = 1;
    host += 5;
  }
  strcpy(s->host, host);
  lua_pop(L, 1);
  double port = opt_number(L, "port", -1, -1);
  if (!s->is_unix && (port < 0 || port > 65535 || port != (int)port))
    return luaL_error(L, "coserve.server: option 'port' must be a port number (0 picks one)");
  s->port = (int)port;
  s->backlog = (int)opt_number(L, "backlog", 511, 1);
  lua_getfield(L, 1, "reuse_port");
  /* Workers share their ports through SO_REUSEPORT unless told otherwise. */
  s->reuse_port = lua_isnil(L, -1) ? rt->worker_id > 0 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  s->max_connections = (int)opt_number(L, "max_connections", 10000, 0);
  s->read_timeout = opt_number(L, "read_timeout", 60, -1);
  s->send_timeout = opt_number(L, "send_timeout", 60, -1);
  s->idle_timeout = opt_number(L, "idle_timeout", 300, -1); /* <= 0: never */
  s->max_frame = to_size(opt_number(L, "max_frame", 2 * 1024 * 1024, 1));
  s->send_buffer = to_size(opt_number(L, "send_buffer", CS_SEND_BUFFER, 0));
  parse_framing(L, &s->framing);
  luaL_getmetatable(L, CS_SERVER_MT);
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, 2);
  lua_setfenv(L, -2);
  return 1;
}

static int server_set(lua_State *L, const char *field) {
  server_check(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_getfenv(L, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, field);
  lua_settop(L, 1);
  return 1;
}

/* server:handle(fn(conn)) -> server */
static int lserver_handle(lua_State *L) { return server_set(L, "handler"); }

/* server:onerror(fn(err, conn)) -> server */
static int lserver_onerror(lua_State *L) { return server_set(L, "onerror"); }

/* server:onshutdown(fn(grace)) -> server: fn runs when a shutdown begins
 * (server:shutdown or the process's), before connections drain. */
static int lserver_onshutdown(lua_State *L) { return server_set(L, "onshutdown"); }

/* server:start() -> true after shutdown | nil, err at once */
static int lserver_start(lua_State *L) { return cs__server_start(L, server_check(L)); }

/* server:shutdown([grace]) -> true */
static int lserver_shutdown(lua_State *L) {
  cs_server_t *s = server_check(L);
  cs__server_shutdown(s, luaL_optnumber(L, 2, 0));
  lua_pushboolean(L, 1);
  return 1;
}

/* server:stats() -> {connections, accepted, rejected, bytes_in, bytes_out,
 * tls_handshakes, tls_failures} */
static int lserver_stats(lua_State *L) {
  cs_server_t *s = server_check(L);
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, s->stats.connections);
  lua_setfield(L, -2, "connections");
  lua_pushnumber(L, s->stats.accepted);
  lua_setfield(L, -2, "accepted");
  lua_pushnumber(L, s->stats.rejected);
  lua_setfield(L, -2, "rejected");
  lua_pushnumber(L, s->stats.bytes_in);
  lua_setfield(L, -2, "bytes_in");
  lua_pushnumber(L, s->stats.bytes_out);
  lua_setfield(L, -2, "bytes_out");
  lua_pushnumber(L, s->stats.tls_handshakes);
  lua_setfield(L, -2, "tls_handshakes");
  lua_pushnumber(L, s->stats.tls_failures);
  lua_setfield(L, -2, "tls_failures");
  return 1;
}

/* server:_sethost(literal): coserve.lua resolves a host name before start. */
static int lserver_sethost(lua_State *L) {
  cs_server_t *s = server_check(L);
  size_t len;
  const char *host = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len < sizeof s->host && s->state == CS_SRV_IDLE, 2, "cannot set the host now");
  memcpy(s->host, host, len + 1);
  return 0;
}

/* server.port, server.host: the bound port once started; the address. */
static int lserver_index(lua_State *L) {
  cs_server_t *s = server_check(L);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  if (!lua_isnil(L, -1))
    return 1;
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "port") == 0 && !s->is_unix) {
    lua_pushinteger(L, s->port);
    return 1;
  }
  if (k && strcmp(k, "host") == 0) {
    lua_pushfstring(L, "%s%s", s->is_unix ? "unix:" : "", s->host);
    return 1;
  }
  if (k && strcmp(k, "is_unix") == 0) {
    lua_pushboolean(L, s->is_unix);
    return 1;
  }
  return 0;
}

/* core.connect(ip_or_unix_path, port, timeout [, max_frame [, send_buffer]])
 * -> conn | nil, err */
static int lcore_connect(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  const char *host = luaL_checkstring(L, 1);
  double timeout = luaL_optnumber(L, 3, 60);
  lua_Number max_frame = luaL_optnumber(L, 4, 0);
  luaL_argcheck(L, max_frame >= 0, 4, "max_frame must not be negative");
  lua_Number send_buffer = luaL_optnumber(L, 5, CS_SEND_BUFFER);
  luaL_argcheck(L, send_buffer >= 0, 5, "send_buffer must not be negative");
  cs__task_current(L, "coserve.connect");
  struct sockaddr_storage ss;
  const char *path = NULL;
  if (strncmp(host, "unix:", 5) == 0) {
    path = host + 5;
  } else {
    int port = (int)luaL_checkinteger(L, 2);
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0 &&
        uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0)
      return luaL_argerror(L, 1, "IP address or unix:path expected");
  }
  cs_conn_t *c = cs__conn_new(rt, path ? CS_CONN_PIPE : CS_CONN_TCP);
  if (c == NULL)
    return cs__push_error(L, UV_ENOMEM);
  if (max_frame > 0)
    c->max_frame = to_size(max_frame);
  c->send_buffer = to_size(send_buffer);
  /* The object exists from the start so that a failed connect is closed
   * through the same path as any other connection. */
  cs__conn_push(L, c);
  return cs__conn_connect(L, c, (struct sockaddr *)&ss, path, timeout);
}

/* core.resolve(host [, family]) -> {addr, ...} | nil, err */
static int lcore_resolve(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  const char *fam = luaL_optstring(L, 2, NULL);
  int family = AF_UNSPEC;
  if (fam && strcmp(fam, "inet") == 0)
    family = AF_INET;
  else if (fam && strcmp(fam, "inet6") == 0)
    family = AF_INET6;
  else if (fam)
    return luaL_argerror(L, 2, "\"inet\" or \"inet6\" expected");
  return cs__resolve(L, host, family);
}

static const luaL_Reg server_methods[] = {
    {"handle", lserver_handle},     {"onerror", lserver_onerror}, {"start", lserver_start},
    {"onshutdown", lserver_onshutdown},
    {"shutdown", lserver_shutdown}, {"stats", lserver_stats},     {"_sethost", lserver_sethost},
    {NULL, NULL}};

void cs__open_server(lua_State *L, cs_runtime_t *rt) {
  luaL_newmetatable(L, CS_SERVER_MT);
  lua_createtable(L, 0, 8);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, server_methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods"); /* for coserve.lua to wrap */
  lua_pushcclosure(L, lserver_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

static const luaL_Reg net_funcs[] = {
    {"server", lserver_new}, {"connect", lcore_connect}, {"resolve", lcore_resolve}, {NULL, NULL}};

void cs__open_net(lua_State *L, cs_runtime_t *rt) {
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, net_funcs, 1);
  luaL_getmetatable(L, CS_SERVER_MT);
  lua_getfield(L, -1, "methods");
  lua_setfield(L, -3, "server_methods");
  lua_pop(L, 1);
  luaL_getmetatable(L, CS_CONN_MT);
  lua_getfield(L, -1, "methods");
  lua_setfield(L, -3, "conn_methods");
  lua_pop(L, 1);
}
