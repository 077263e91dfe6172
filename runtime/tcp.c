/* Servers: listen, accept, one handler task per connection, graceful
 * shutdown.
 *
 * A server is a Lua userdata that embeds its three handles (the listener
 * and two timers). It is anchored in the registry from start() until the
 * last of them is closed, and start() returns only then, so a server can
 * be started again once start() has returned. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

static void server_handle_close_cb(uv_handle_t *h);
static void server_push_field(cs_server_t *s, lua_State *L, const char *name);

/* ---- finishing ---- */

static void server_finish(cs_server_t *s) {
  cs_runtime_t *rt = s->rt;
  s->state = CS_SRV_IDLE;
  cs_server_t **pp = &rt->servers;
  while (*pp && *pp != s)
    pp = &(*pp)->next;
  if (*pp)
    *pp = s->next;
  s->next = NULL;
  cs_task_t *t = s->starter;
  if (t) {
    s->starter = NULL;
    lua_pushboolean(t->co, 1);
    cs__wake(t, 1);
  }
  int ref = s->self_ref;
  s->self_ref = LUA_NOREF;
  luaL_unref(rt->L, LUA_REGISTRYINDEX, ref);
}

static void server_handle_close_cb(uv_handle_t *h) {
  cs_server_t *s = h->data;
  if (--s->open_handles == 0)
    server_finish(s);
}

/* Once the listener is closed and every connection is gone, the timers go
 * too; the last close callback ends the shutdown. */
static void server_maybe_done(cs_server_t *s) {
  if (s->state != CS_SRV_DRAINING || s->listening || s->conns)
    return;
  s->state = CS_SRV_CLOSING;
  uv_close((uv_handle_t *)&s->sweep, server_handle_close_cb);
  uv_close((uv_handle_t *)&s->grace, server_handle_close_cb);
}

void cs__server_conn_gone(cs_server_t *s, cs_conn_t *c) {
  if (c->sprev)
    c->sprev->snext = c->snext;
  else
    s->conns = c->snext;
  if (c->snext)
    c->snext->sprev = c->sprev;
  server_maybe_done(s);
}

/* Closes every connection now, canceling its handler as well: a handler
 * waiting on something else than its connection must unwind too. */
static void server_close_all(cs_server_t *s) {
  for (cs_conn_t *c = s->conns; c; c = c->snext) {
    /* Close first, so that a wait on the connection reads "closed"; the
     * grace is over, so a send buffer is not flushed either. */
    cs__conn_abort(c, CS_ECLOSED);
    if (c->handler)
      cs__task_cancel(c->handler);
  }
}

static void server_grace_cb(uv_timer_t *timer) { server_close_all(timer->data); }

static void server_listener_close_cb(uv_handle_t *h) {
  cs_server_t *s = h->data;
  s->listening = 0;
  server_handle_close_cb(h);
  if (s->state == CS_SRV_DRAINING)
    server_maybe_done(s);
}

/* Tells the Lua side that draining begins: onshutdown(grace) runs now,
 * synchronously, so that a protocol can close its idle connections. */
static void server_notify_shutdown(cs_server_t *s, double grace) {
  lua_State *L = s->rt->L;
  server_push_field(s, L, "onshutdown");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnumber(L, grace);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    cs__log(s->rt, CS_LOG_ERROR, "server onshutdown handler failed: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* Whether bytes the peer sent wait in the kernel, not yet read. */
static int conn_has_input(cs_conn_t *c) {
  uv_os_fd_t fd;
  int n = 0;
  return uv_fileno(&c->u.handle, &fd) == 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* The drain's rule for connections idle between requests: one whose next
 * request has begun to arrive (bytes in the kernel's receive queue when
 * the drain begins) has that request read and served, with the time a
 * request's head gets; every other one is woken with nil, "interrupted"
 * and closed by its protocol before it has written a byte. A request that
 * arrives later meets a closed connection, never half a response. */
static void server_interrupt_idle(cs_server_t *s) {
  for (cs_conn_t *c = s->conns; c; c = c->snext) {
    if (!c->reader || !c->rreq.idle)
      continue;
    if (conn_has_input(c)) {
      c->rreq.idle = 0;
      cs__retime(c->reader, c->rreq.busy_timeout);
    } else {
      cs__abort(c->reader, UV_EINTR);
    }
  }
}

void cs__server_shutdown(cs_server_t *s, double grace) {
  if (s->state == CS_SRV_LISTENING) {
    s->state = CS_SRV_DRAINING;
    server_notify_shutdown(s, grace);
    server_interrupt_idle(s);
    cs__master_release(s->rt, s->host, s->port, s->is_unix);
    uv_close(&s->u.handle, server_listener_close_cb);
    if (grace > 0) {
      double ms = grace * 1000.0;
      uv_timer_start(&s->grace, server_grace_cb, (uint64_t)ms, 0);
    }
  } else if (s->state != CS_SRV_DRAINING) {
    return;
  }
  if (grace <= 0)
    server_close_all(s);
  server_maybe_done(s);
}

/* ---- connections ---- */

static void server_sweep_cb(uv_timer_t *timer) {
  cs_server_t *s = timer->data;
  uint64_t now = uv_now(&s->rt->loop);
  uint64_t idle = (uint64_t)(s->idle_timeout * 1000.0);
  for (cs_conn_t *c = s->conns; c; c = c->snext) {
    if (!c->closing && now - c->last_io >= idle) {
      cs__log(s->rt, CS_LOG_DEBUG, "connection %.0f idle for %.0f s: closed", c->id,
              s->idle_timeout);
      cs__conn_close(c, CS_ECLOSED);
    }
  }
}

/* [-0, +1] Pushes a field of the server's environment (handler, onerror). */
static void server_push_field(cs_server_t *s, lua_State *L, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
  lua_getfenv(L, -1);
  lua_getfield(L, -1, name);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* The end of a connection's handler task (or of its onerror task): the
 * connection closes, and the handler's reference to it goes. */
static void server_conn_finish(cs_conn_t *c) {
  c->handler = NULL;
  cs__conn_close(c, CS_ECLOSED);
  cs__conn_release(c);
}

static void server_onerror_done(cs_task_t *t, int ok) {
  cs_conn_t *c = t->data;
  if (!ok) {
    lua_State *L = t->rt->L;
    lua_pushvalue(L, -1);
    cs__task_push_results(L); /* false, message */
    cs__log(t->rt, CS_LOG_ERROR, "server onerror handler failed: %s", lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  server_conn_finish(c);
}

/* A handler that returns closes its connection. One that fails has its
 * error (with the traceback) logged, or handed to the server's onerror:
 * that runs as a task of its own, first in the queue, and the connection
 * closes when it ends, so onerror may still do IO on it (tell the peer
 * what went wrong, say). */
static void server_handler_done(cs_task_t *t, int ok) {
  cs_conn_t *c = t->data;
  cs_server_t *s = c->server;
  cs_runtime_t *rt = s->rt;
  c->handler = NULL;
  if (!ok) {
    lua_State *L = rt->L;
    lua_pushvalue(L, -1);
    cs__task_push_results(L); /* false, message */
    server_push_field(s, L, "onerror");
    if (lua_isnil(L, -1)) {
      cs__log(rt, CS_LOG_ERROR, "connection handler failed: %s", lua_tostring(L, -2));
      lua_pop(L, 3);
    } else {
      lua_insert(L, -2);
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->box_ref);
      cs_task_t *e = cs__task_new(rt, L, 2, 1);
      e->on_done = server_onerror_done;
      e->data = c;
      c->handler = e; /* a shutdown's grace covers it as it did the handler */
      lua_pop(L, 2);
      return;
    }
  }
  server_conn_finish(c);
}

static void server_connection_cb(uv_stream_t *ls, int status) {
  cs_server_t *s = ls->data;
  cs_runtime_t *rt = s->rt;
  if (status < 0) {
    /* EMFILE/ENFILE: libuv has already shed the pending connections with
     * its reserve descriptor, so the listener does not spin; accepting
     * resumes by itself once descriptors are free again. */
    cs__log(rt, CS_LOG_WARN, "accept failed: %s", uv_strerror(status));
    return;
  }
  cs_conn_t *c = cs__conn_new(rt, s->is_unix ? CS_CONN_PIPE : CS_CONN_TCP);
  if (c == NULL) {
    cs__log(rt, CS_LOG_ERROR, "accept: out of memory");
    return;
  }
  if (uv_accept(ls, &c->u.stream) != 0) {
    cs__conn_close(c, CS_ECLOSED);
    return;
  }
  s->stats.accepted++;
  if (s->stats.connections >= s->max_connections) {
    s->stats.rejected++;
    cs__conn_close(c, CS_ECLOSED);
    return;
  }
  c->server = s;
  c->snext = s->conns;
  if (s->conns)
    s->conns->sprev = c;
  s->conns = c;
  s->stats.connections++;
  c->read_timeout = s->read_timeout;
  c->send_timeout = s->send_timeout;
  c->max_frame = s->max_frame;
  c->send_buffer = s->send_buffer;
  c->framing = s->framing.kind == CS_FRAME_NONE ? NULL : &s->framing;
  if (!s->is_unix)
    uv_tcp_nodelay(&c->u.tcp, 1);

  lua_State *L = rt->L;
  server_push_field(s, L, "handler");
  cs__conn_push(L, c);
  lua_pushvalue(L, -1);
  c->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  cs_task_t *t = cs__task_new(rt, L, 1, 0);
  lua_pop(L, 1);
  t->on_done = server_handler_done;
  t->data = c;
  c->handler = t;
  c->refs++;
}

/* ---- starting ---- */

static int swait_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_server_t *s = (cs_server_t *)((char *)w - offsetof(cs_server_t, swait));
  s->starter = NULL;
  cs__server_shutdown(s, 0);
  return cs__push_error(co, err);
}

/* ---- systemd socket activation ---- */

void cs__activation_init(cs_runtime_t *rt) {
  cs__master_channel_init(rt);
  const char *pid = getenv("LISTEN_PID");
  const char *fds = getenv("LISTEN_FDS");
  if (pid == NULL || fds == NULL || atol(pid) != (long)getpid())
    return;
  int n = atoi(fds);
  for (int i = 0; i < n && rt->nlisten_fds < (int)(sizeof rt->listen_fds / sizeof(int)); i++)
    rt->listen_fds[rt->nlisten_fds++] = 3 + i; /* SD_LISTEN_FDS_START */
  /* As sd_listen_fds(unset_environment = 1): children do not inherit them. */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
}

int cs__activation_matches(int fd, const char *host, int port, int is_unix) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (is_unix) {
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    return ss.ss_family == AF_UNIX && strcmp(un->sun_path, host) == 0;
  }
  char ip[64];
  int p = cs__addr_name((struct sockaddr *)&ss, ip, sizeof ip);
  if (p < 0)
    return 0;
  /* The literal as given must name the same address: compare parsed forms. */
  struct sockaddr_storage want;
  char norm[64] = "";
  if (uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&want) == 0)
    uv_ip6_name((struct sockaddr_in6 *)&want, norm, sizeof norm);
  else if (uv_ip4_addr(host, 0, (struct sockaddr_in *)&want) == 0)
    uv_ip4_name((struct sockaddr_in *)&want, norm, sizeof norm);
  return p == port && strcmp(ip, norm) == 0;
}

int cs__activation_take(cs_runtime_t *rt, const char *host, int port, int is_unix) {
  for (int i = 0; i < rt->nlisten_fds; i++) {
    int fd = rt->listen_fds[i];
    if (cs__activation_matches(fd, host, port, is_unix)) {
      rt->listen_fds[i] = rt->listen_fds[--rt->nlisten_fds];
      return fd;
    }
  }
  return -1;
}

static int server_bind(cs_server_t *s) {
  uv_loop_t *loop = &s->rt->loop;
  int fd = cs__activation_take(s->rt, s->host, s->port, s->is_unix);
  if (fd < 0) {
    /* A worker's master owns the listening sockets: ask it for this one. */
    int rc = cs__master_socket(s->rt, s->host, s->port, s->is_unix, s->reuse_port, s->backlog,
                               &fd);
    if (rc != 0) {
      if (s->is_unix) /* so that the one close path applies */
        uv_pipe_init(loop, &s->u.pipe, 0);
      else
        uv_tcp_init(loop, &s->u.tcp);
      return rc;
    }
  }
  if (fd >= 0) {
    /* systemd or the master already bound and listens: use its socket. */
    if (s->is_unix) {
      uv_pipe_init(loop, &s->u.pipe, 0);
      return uv_pipe_open(&s->u.pipe, fd);
    }
    uv_tcp_init(loop, &s->u.tcp);
    return uv_tcp_open(&s->u.tcp, fd);
  }
  if (s->is_unix) {
    uv_pipe_init(loop, &s->u.pipe, 0);
    return uv_pipe_bind(&s->u.pipe, s->host);
  }
  struct sockaddr_storage ss;
  int rc = uv_ip6_addr(s->host, s->port, (struct sockaddr_in6 *)&ss);
  if (rc != 0)
    rc = uv_ip4_addr(s->host, s->port, (struct sockaddr_in *)&ss);
  if (rc != 0) {
    uv_tcp_init(loop, &s->u.tcp);
    return UV_EINVAL;
  }
  rc = uv_tcp_init_ex(loop, &s->u.tcp, ss.ss_family);
  if (rc != 0) {
    uv_tcp_init(loop, &s->u.tcp); /* so that the one close path applies */
    return rc;
  }
  if (s->reuse_port) {
    /* libuv 1.44 has no flag for it: set it on the socket before bind. */
    uv_os_fd_t fd;
    int on = 1;
    if (uv_fileno(&s->u.handle, &fd) == 0)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  }
  rc = uv_tcp_bind(&s->u.tcp, (struct sockaddr *)&ss, 0);
  if (rc != 0)
    return rc;
  return 0;
}

int cs__server_start(lua_State *L, cs_server_t *s) {
  cs_runtime_t *rt = s->rt;
  cs_task_t *t = cs__task_current(L, "start");
  if (s->state != CS_SRV_IDLE)
    return luaL_error(L, "start: the server is already running");
  lua_getfenv(L, 1);
  lua_getfield(L, -1, "handler");
  if (lua_isnil(L, -1))
    return luaL_error(L, "start: no handler (call server:handle(fn) first)");
  lua_pop(L, 2);

  lua_pushvalue(L, 1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->u.handle.data = s;
  s->open_handles = 1;
  s->listening = 1;
  int rc = server_bind(s);
  if (rc == 0)
    rc = uv_listen(&s->u.stream, s->backlog, server_connection_cb);
  if (rc != 0) {
    /* Report at once; the anchor goes when the listener's close ends. */
    s->state = CS_SRV_CLOSING;
    uv_close(&s->u.handle, server_listener_close_cb);
    return cs__push_error(L, rc);
  }
  if (!s->is_unix) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&s->u.tcp, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  }
  uv_timer_init(&rt->loop, &s->sweep);
  uv_timer_init(&rt->loop, &s->grace);
  s->sweep.data = s->grace.data = s;
  s->open_handles += 2;
  if (s->idle_timeout > 0) {
    double every = s->idle_timeout / 4 < 1 ? s->idle_timeout / 4 : 1;
    uint64_t ms = every < 0.01 ? 10 : (uint64_t)(every * 1000);
    uv_timer_start(&s->sweep, server_sweep_cb, ms, ms);
  }
  uv_unref((uv_handle_t *)&s->sweep);
  memset(&s->stats, 0, sizeof s->stats);
  s->state = CS_SRV_LISTENING;
  s->next = rt->servers;
  rt->servers = s;
  s->starter = t;
  s->swait.abort = swait_abort;
  if (rt->exiting) /* started during a shutdown: stop at once */
    cs__server_shutdown(s, 0);
  return cs__park(L, t, &s->swait, -1);
}
