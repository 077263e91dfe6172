/* Datagrams (SPEC §4): coserve.udp() sockets, for servers (bind, recvfrom,
 * sendto) and clients (setpeername, send, receive).
 *
 * Receiving runs only while a coroutine waits: until then the kernel keeps
 * the datagrams (its socket buffer is the queue, and its drops are UDP's
 * backpressure), so a socket nobody reads holds nothing of ours and does
 * not keep the loop alive. A datagram lands in the runtime's scratch area
 * and is pushed straight from there. One that did not fit — in the 64 KiB
 * area, or in the size a receive asked for — is reported as "truncated",
 * never handed out cut short.
 *
 * Sends go to the kernel at once (uv_udp_try_send); only when its buffer
 * is full is the datagram queued with libuv from the caller's string,
 * which the parked caller keeps alive. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int udp_recv_abort(cs_wait_t *w, lua_State *co, int err);
static int udp_send_abort(cs_wait_t *w, lua_State *co, int err);

cs_udp_t *cs__udp_new(cs_runtime_t *rt) {
  cs_udp_t *u = calloc(1, sizeof *u);
  if (u == NULL)
    return NULL;
  uv_udp_init(&rt->loop, &u->handle);
  u->handle.data = u;
  u->rt = rt;
  u->timeout = 60;
  u->rwait.abort = udp_recv_abort;
  u->swait.abort = udp_send_abort;
  u->sref = LUA_NOREF;
  return u;
}

static void udp_close_cb(uv_handle_t *h) {
  cs_udp_t *u = h->data;
  if (u->sref != LUA_NOREF)
    luaL_unref(u->rt->L, LUA_REGISTRYINDEX, u->sref);
  free(u);
}

static void udp_unpark(cs_task_t **slot, int err) {
  cs_task_t *t = *slot;
  if (t == NULL)
    return;
  *slot = NULL;
  cs__wake(t, cs__push_error(t->co, err));
}

void cs__udp_close(cs_udp_t *u) {
  if (u->closing)
    return;
  u->closing = 1;
  udp_unpark(&u->reader, CS_ECLOSED);
  udp_unpark(&u->sender, CS_ECLOSED);
  uv_close((uv_handle_t *)&u->handle, udp_close_cb);
}

/* ---- receiving ---- */

static void udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  cs_udp_t *u = h->data;
  (void)suggested;
  buf->base = u->rt->scratch;
  buf->len = CS_SCRATCH_SIZE;
}

/* [-0, +1|3] pushes an address's ip (and port, with the port). */
static int push_addr(lua_State *L, const struct sockaddr *sa, int with_port) {
  char ip[64];
  int port = cs__addr_name(sa, ip, sizeof ip);
  lua_pushstring(L, ip);
  if (port < 0)
    port = 0;
  if (!with_port)
    return 1;
  lua_pushinteger(L, port);
  return 2;
}

static void udp_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  cs_udp_t *u = h->data;
  (void)buf;
  cs_task_t *t = u->reader;
  if (t == NULL || (nread == 0 && addr == NULL))
    return; /* nothing more to read for now */
  u->reader = NULL;
  uv_udp_recv_stop(h);
  int n;
  if (nread < 0) {
    n = cs__push_error(t->co, (int)nread);
  } else if ((flags & UV_UDP_PARTIAL) || (size_t)nread > u->want) {
    lua_pushnil(t->co);
    lua_pushliteral(t->co, "truncated");
    n = 2;
  } else {
    lua_pushlstring(t->co, u->rt->scratch, (size_t)nread);
    n = 1;
    if (u->want_from)
      n += push_addr(t->co, addr, 1);
  }
  cs__wake(t, n);
  cs__sched_flush(u->rt);
}

static int udp_recv_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_udp_t *u = (cs_udp_t *)((char *)w - offsetof(cs_udp_t, rwait));
  u->reader = NULL;
  uv_udp_recv_stop(&u->handle);
  return cs__push_error(co, err);
}

int cs__udp_recv(lua_State *L, cs_udp_t *u, size_t want, int want_from, double timeout,
                 const char *fname) {
  cs_task_t *t = cs__task_current(L, fname);
  if (u->reader)
    return cs__push_error(L, CS_EBUSY);
  int rc = uv_udp_recv_start(&u->handle, udp_alloc_cb, udp_recv_cb);
  if (rc < 0)
    return cs__push_error(L, rc);
  u->want = want;
  u->want_from = want_from;
  u->reader = t;
  return cs__park(L, t, &u->rwait, timeout);
}

/* ---- sending ---- */

static void udp_send_cb(uv_udp_send_t *req, int status) {
  cs_udp_t *u = req->data;
  if (u->sref != LUA_NOREF) {
    luaL_unref(u->rt->L, LUA_REGISTRYINDEX, u->sref);
    u->sref = LUA_NOREF;
  }
  cs_task_t *t = u->sender;
  if (t == NULL)
    return;
  u->sender = NULL;
  if (status < 0) {
    cs__wake(t, cs__push_error(t->co, status));
  } else {
    lua_pushboolean(t->co, 1);
    cs__wake(t, 1);
  }
}

/* The datagram went to libuv already: it is sent or fails on its own, and
 * the caller only stops waiting for it. */
static int udp_send_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_udp_t *u = (cs_udp_t *)((char *)w - offsetof(cs_udp_t, swait));
  u->sender = NULL;
  return cs__push_error(co, err);
}

int cs__udp_send(lua_State *L, cs_udp_t *u, int idx, const struct sockaddr *addr,
                 const char *fname) {
  cs_task_t *t = cs__task_current(L, fname);
  if (u->sender || u->sref != LUA_NOREF)
    return cs__push_error(L, CS_EBUSY);
  size_t len;
  const char *data = lua_tolstring(L, idx, &len);
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int rc = uv_udp_try_send(&u->handle, &b, 1, addr);
  if (rc >= 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc != UV_EAGAIN)
    return cs__push_error(L, rc);
  lua_pushvalue(L, idx);
  u->sref = luaL_ref(L, LUA_REGISTRYINDEX);
  u->sreq.data = u;
  rc = uv_udp_send(&u->sreq, &u->handle, &b, 1, addr, udp_send_cb);
  if (rc < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, u->sref);
    u->sref = LUA_NOREF;
    return cs__push_error(L, rc);
  }
  u->sender = t;
  return cs__park(L, t, &u->swait, u->timeout);
}

/* [-0, +1|2] the socket's own address: ip, port | nil, err */
int cs__udp_getsockname(lua_State *L, cs_udp_t *u) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int rc = uv_udp_getsockname(&u->handle, (struct sockaddr *)&ss, &len);
  if (rc < 0)
    return cs__push_error(L, rc);
  return push_addr(L, (struct sockaddr *)&ss, 1);
}
