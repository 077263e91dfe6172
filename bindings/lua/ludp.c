/* UDP sockets from Lua (the engine is runtime/udp.c). core.udp() returns a
 * small box pointing at the C-owned socket; close() and __gc close it, and
 * every method of a closed socket returns nil, "closed". Addresses here are
 * literals: coserve.lua resolves names before calling in. */
#include <string.h>

#include "internal.h"

#define CS_UDP_MT "coserve.udp"

typedef struct {
  cs_udp_t *u;
} udpbox_t;

static udpbox_t *udp_box(lua_State *L) { return luaL_checkudata(L, 1, CS_UDP_MT); }

#define UDP_OPEN(L, u)                                                                   \
  cs_udp_t *u = udp_box(L)->u;                                                           \
  if (u == NULL)                                                                         \
  return cs__push_error(L, CS_ECLOSED)

/* An IP literal and a port at idx, idx + 1, as a sockaddr. */
static void check_addr(lua_State *L, int idx, struct sockaddr_storage *ss, const char *fname) {
  const char *ip = luaL_checkstring(L, idx);
  lua_Integer port = luaL_checkinteger(L, idx + 1);
  if (port < 0 || port > 65535)
    luaL_error(L, "bad argument #%d to '%s' (port out of range)", idx, fname);
  if (uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)ss) != 0 &&
      uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)ss) != 0)
    luaL_error(L, "bad argument #%d to '%s' (IP address expected)", idx - 1, fname);
}

static int push_ok(lua_State *L, int rc) {
  if (rc < 0)
    return cs__push_error(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* udp:bind(ip, port) -> true | nil, err (port 0 picks one) */
static int ludp_bind(lua_State *L) {
  UDP_OPEN(L, u);
  struct sockaddr_storage ss;
  check_addr(L, 2, &ss, "bind");
  return push_ok(L, uv_udp_bind(&u->handle, (struct sockaddr *)&ss, 0));
}

/* udp:setpeername(ip, port) -> true | nil, err: send/receive talk to it */
static int ludp_setpeername(lua_State *L) {
  UDP_OPEN(L, u);
  struct sockaddr_storage ss;
  check_addr(L, 2, &ss, "setpeername");
  if (u->connected)
    uv_udp_connect(&u->handle, NULL);
  int rc = uv_udp_connect(&u->handle, (struct sockaddr *)&ss);
  u->connected = rc == 0;
  return push_ok(L, rc);
}

static void check_data(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "bad argument #%d to '%s' (string expected)", idx - 1, fname);
}

/* udp:send(data) -> true | nil, err, to the peer of setpeername */
static int ludp_send(lua_State *L) {
  UDP_OPEN(L, u);
  check_data(L, 2, "send");
  if (!u->connected)
    return luaL_error(L, "send: no peer (call setpeername first, or use sendto)");
  return cs__udp_send(L, u, 2, NULL, "send");
}

/* udp:sendto(data, ip, port) -> true | nil, err */
static int ludp_sendto(lua_State *L) {
  UDP_OPEN(L, u);
  check_data(L, 2, "sendto");
  struct sockaddr_storage ss;
  check_addr(L, 3, &ss, "sendto");
  if (u->connected)
    return luaL_error(L, "sendto: the socket has a peer (use send)");
  return cs__udp_send(L, u, 2, (struct sockaddr *)&ss, "sendto");
}

/* udp:receive([size]) -> data | nil, err: the next datagram of at most size
 * bytes (default and most 65536); a larger one is nil, "truncated". */
static int ludp_receive(lua_State *L) {
  UDP_OPEN(L, u);
  lua_Integer size = luaL_optinteger(L, 2, CS_SCRATCH_SIZE);
  luaL_argcheck(L, size > 0, 2, "size must be positive");
  if (size > CS_SCRATCH_SIZE)
    size = CS_SCRATCH_SIZE;
  return cs__udp_recv(L, u, (size_t)size, 0, u->timeout, "receive");
}

/* udp:recvfrom([timeout]) -> data, ip, port | nil, err */
static int ludp_recvfrom(lua_State *L) {
  UDP_OPEN(L, u);
  double timeout = u->timeout;
  if (!lua_isnoneornil(L, 2)) {
    timeout = luaL_checknumber(L, 2);
    if (timeout < 0)
      timeout = -1;
  }
  return cs__udp_recv(L, u, CS_SCRATCH_SIZE, 1, timeout, "recvfrom");
}

/* udp:settimeout(seconds): for receive, recvfrom and a queued send;
 * negative: none. */
static int ludp_settimeout(lua_State *L) {
  UDP_OPEN(L, u);
  double t = luaL_checknumber(L, 2);
  u->timeout = t < 0 ? -1 : t;
  lua_pushboolean(L, 1);
  return 1;
}

static int ludp_getsockname(lua_State *L) {
  UDP_OPEN(L, u);
  return cs__udp_getsockname(L, u);
}

static int ludp_close(lua_State *L) {
  udpbox_t *box = udp_box(L);
  if (box->u) {
    cs__udp_close(box->u);
    box->u = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int ludp_gc(lua_State *L) {
  udpbox_t *box = lua_touserdata(L, 1);
  if (box->u && !cs__runtime_get(L)->tearing_down)
    cs__udp_close(box->u);
  box->u = NULL;
  return 0;
}

static int ludp_tostring(lua_State *L) {
  lua_pushfstring(L, "coserve.udp%s", udp_box(L)->u ? "" : " (closed)");
  return 1;
}

/* core.udp() -> socket */
static int lcore_udp(lua_State *L) {
  cs_udp_t *u = cs__udp_new(cs__runtime_get(L));
  if (u == NULL)
    return cs__push_error(L, UV_ENOMEM);
  udpbox_t *box = lua_newuserdata(L, sizeof *box);
  box->u = u;
  luaL_getmetatable(L, CS_UDP_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void cs__open_udp(lua_State *L, cs_runtime_t *rt) {
  static const luaL_Reg methods[] = {
      {"bind", ludp_bind},         {"setpeername", ludp_setpeername},
      {"send", ludp_send},         {"sendto", ludp_sendto},
      {"receive", ludp_receive},   {"recvfrom", ludp_recvfrom},
      {"settimeout", ludp_settimeout}, {"getsockname", ludp_getsockname},
      {"close", ludp_close},       {NULL, NULL}};
  luaL_newmetatable(L, CS_UDP_MT);
  lua_createtable(L, 0, 10);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "udp_methods"); /* for coserve.lua to wrap */
  lua_setfield(L, -2, "__index");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, ludp_gc, 1);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, ludp_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lcore_udp, 1);
  lua_setfield(L, -2, "udp");
}
