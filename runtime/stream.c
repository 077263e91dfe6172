/* Connections: pattern reads, vectored writes, the one close path.
 *
 * Reading starts when a coroutine first waits for data and then stays on,
 * into the runtime's shared scratch area: a read that satisfies the parked
 * reader costs no allocation, and only leftover bytes are copied into the
 * connection's own buffer. Reading pauses when nobody reads and
 * CONN_HIGH_WATER bytes are buffered, so a peer cannot make us buffer more.
 *
 * Writing: uv_try_write hands what the kernel takes at once. The rest is
 * copied into the connection's send buffer and `send` returns, as long as
 * the copies being written stay within send_buffer bytes (SPEC §3); past
 * that, the caller parks while the rest is written from its own strings
 * (anchored in the registry), uncopied. So a peer that stops reading holds
 * at most send_buffer bytes of ours, plus the string of a parked send.
 * libuv writes requests in order and uv_try_write declines while any are
 * queued, so bytes leave in the order they were sent. A close writes what
 * is still buffered first, for at most the send timeout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define CONN_HIGH_WATER 65536
#define CONN_IOV_STACK 16

static int read_abort(cs_wait_t *w, lua_State *co, int err);
static int write_abort(cs_wait_t *w, lua_State *co, int err);
static int connect_abort(cs_wait_t *w, lua_State *co, int err);

/* A client connection keeps the loop alive only while a coroutine waits
 * on it. Otherwise nothing could ever touch it again once every task,
 * timer and server is gone, and the process must be free to exit (SPEC §8;
 * the connection is closed when collected or when the runtime is freed).
 * A server's connections need no such care: the server keeps the loop
 * alive while they live. Called after every change of the waiters. */
static void conn_update_ref(cs_conn_t *c) {
  if (c->server || c->closing)
    return;
  if ((c->reader || c->writer || c->connector) && !c->pooled)
    uv_ref(&c->u.handle);
  else
    uv_unref(&c->u.handle);
}

cs_conn_t *cs__conn_new(cs_runtime_t *rt, cs_conn_type_t type) {
  cs_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  if (type == CS_CONN_TCP)
    uv_tcp_init(&rt->loop, &c->u.tcp);
  else
    uv_pipe_init(&rt->loop, &c->u.pipe, 0);
  c->u.handle.data = c;
  c->type = type;
  c->rt = rt;
  c->id = rt->next_conn_id++;
  c->wref = c->box_ref = LUA_NOREF;
  c->refs = 1;
  c->rwait.abort = read_abort;
  c->wwait.abort = write_abort;
  c->cwait.abort = connect_abort;
  c->read_timeout = c->send_timeout = 60;
  c->max_frame = 2 * 1024 * 1024;
  c->send_buffer = CS_SEND_BUFFER;
  c->last_io = uv_now(&rt->loop);
  rt->nconns++;
  return c;
}

/* ---- closing ---- */

void cs__conn_release(cs_conn_t *c) {
  if (--c->refs > 0)
    return;
  cs_runtime_t *rt = c->rt;
  if (c->wref != LUA_NOREF)
    luaL_unref(rt->L, LUA_REGISTRYINDEX, c->wref);
  if (c->box_ref != LUA_NOREF)
    luaL_unref(rt->L, LUA_REGISTRYINDEX, c->box_ref);
  cs__buf_free(&c->rbuf);
  cs__tls_free(c);
  if (c->server)
    cs__server_conn_gone(c->server, c);
  rt->nconns--;
  free(c);
}

static void conn_close_cb(uv_handle_t *h) { cs__conn_release(h->data); }

static void conn_unpark(cs_task_t **slot, int err) {
  cs_task_t *t = *slot;
  if (t == NULL)
    return;
  *slot = NULL;
  cs__wake(t, cs__push_error(t->co, err));
}

static void conn_flush_end(cs_conn_t *c) {
  cs_runtime_t *rt = c->rt;
  c->flushing = 0;
  if (c->fprev)
    c->fprev->fnext = c->fnext;
  else
    rt->flushing = c->fnext;
  if (c->fnext)
    c->fnext->fprev = c->fprev;
  if (rt->flushing == NULL)
    uv_timer_stop(&rt->flush_timer);
  uv_close(&c->u.handle, conn_close_cb);
}

/* A closed connection's buffered bytes still go out: the handle closes
 * when the last of them is written, on a write error, or send_timeout
 * seconds from now, whichever comes first. Meanwhile it keeps the loop
 * alive, so a script that sent and returned still delivers. */
static void conn_flush_start(cs_conn_t *c) {
  cs_runtime_t *rt = c->rt;
  uint64_t now = uv_now(&rt->loop);
  c->flushing = 1;
  c->flush_deadline = c->send_timeout < 0 ? UINT64_MAX
                                           : now + (uint64_t)(c->send_timeout * 1000.0);
  c->fprev = NULL;
  c->fnext = rt->flushing;
  if (rt->flushing)
    rt->flushing->fprev = c;
  rt->flushing = c;
  if (!uv_is_active((uv_handle_t *)&rt->flush_timer))
    uv_timer_start(&rt->flush_timer, cs__conn_flush_timeout, 100, 100);
  if (c->reading) {
    uv_read_stop(&c->u.stream);
    c->reading = 0;
  }
  uv_ref(&c->u.handle);
}

void cs__conn_flush_timeout(uv_timer_t *timer) {
  cs_runtime_t *rt = timer->data;
  uint64_t now = uv_now(&rt->loop);
  cs_conn_t *next;
  for (cs_conn_t *c = rt->flushing; c; c = next) {
    next = c->fnext;
    if (now >= c->flush_deadline)
      conn_flush_end(c);
  }
}

static void conn_close(cs_conn_t *c, int err, int may_flush) {
  if (c->closing)
    return;
  c->closing = 1;
  /* Only whole sends are flushed: a parked one is cut, and so the stream.
   * A TLS peer is told the end is intended (close_notify). */
  if (may_flush && c->writer == NULL && c->werr == 0)
    cs__tls_shutdown(c);
  int flush = may_flush && c->wqueued > 0 && c->writer == NULL && c->werr == 0;
  if (c->reader) {
    /* A parked reader gets what arrived as partial data, as on a timeout. */
    cs_task_t *t = c->reader;
    c->reader = NULL;
    cs__wake(t, c->rwait.abort(&c->rwait, t->co, err));
  }
  conn_unpark(&c->writer, err);
  conn_unpark(&c->connector, err);
  while (c->tasks) {
    cs_task_t *t = c->tasks;
    c->tasks = t->onext;
    t->owner = NULL;
    t->onext = t->oprev = NULL;
    cs__task_cancel(t);
  }
  if (c->server)
    c->server->stats.connections--;
  if (c->box) {
    c->box->c = NULL;
    c->box = NULL;
  }
  if (flush)
    conn_flush_start(c);
  else
    uv_close(&c->u.handle, conn_close_cb);
}

void cs__conn_close(cs_conn_t *c, int err) { conn_close(c, err, 1); }

void cs__conn_abort(cs_conn_t *c, int err) {
  if (c->flushing)
    conn_flush_end(c);
  else
    conn_close(c, err, 0);
}

int cs__conn_push_error(lua_State *L, const cs_conn_t *c, int err) {
  if (err != CS_ETLS)
    return cs__push_error(L, err);
  lua_pushnil(L);
  lua_pushstring(L, cs__tls_errmsg(c));
  return 2;
}

/* ---- reading ---- */

/* [-0, +n] The shared try of the fast path and the read callback: pushes
 * the match onto co and returns 1, pushes nil, err[, partial] and returns
 * their count, or returns 0 when more data is needed. */
static int conn_try_read(lua_State *co, cs_conn_t *c) {
  cs_buf_t *b = &c->rbuf;
  size_t take = 0, skip = 0;
  if (c->rreq.kind == CS_READ_HANDSHAKE) {
    if (cs__tls_done(c)) {
      lua_pushboolean(co, 1);
      return 1;
    }
    if (c->eof || c->err) {
      /* The peer closed or reset mid-handshake: a failed handshake too
       * (OpenSSL's own refusals, CS_ETLS, were counted as they happened),
       * unless it never sent a byte: a load balancer's TCP health check
       * connects and closes, and is no handshake. */
      if (c->server && c->err != CS_ETLS && cs__tls_heard(c))
        c->server->stats.tls_failures++;
      return cs__conn_push_error(co, c, c->err ? c->err : CS_ECLOSED);
    }
    return 0;
  }
  int r = cs__match(&c->rreq, cs__buf_data(b), b->len, c->eof, &take, &skip);
  if (r == 0 && c->rreq.check && b->len > 0 && c->rreq.check(c->rreq.ud, cs__buf_data(b), b->len))
    r = 1, take = skip = b->len;
  if (r == 1) {
    int n = 1;
    if (c->rreq.deliver)
      n = c->rreq.deliver(co, c->rreq.ud, cs__buf_data(b), take);
    else
      lua_pushlstring(co, cs__buf_data(b), take);
    if (!c->rreq.peek)
      cs__buf_consume(b, skip);
    return n;
  }
  if (r < 0) {
    /* Too large: the stream cannot be resynchronised, so it is dropped,
     * unless the caller answers it first (HTTP's 431). */
    c->reader = NULL;
    conn_update_ref(c);
    if (!c->rreq.keep_open) {
      cs__conn_abort(c, CS_ECLOSED);
      return cs__push_error(co, r);
    }
    cs__push_error(co, r);
    lua_pushlstring(co, cs__buf_data(b), b->len); /* what the answer may log */
    return 3;
  }
  if (c->eof || c->err) {
    cs__conn_push_error(co, c, c->err ? c->err : CS_ECLOSED);
    lua_pushlstring(co, cs__buf_data(b), b->len);
    cs__buf_consume(b, b->len);
    return 3;
  }
  return 0;
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  cs_conn_t *c = h->data;
  cs_runtime_t *rt = c->rt;
  (void)suggested;
  /* TLS's ciphertext always lands in the scratch area: it is fed to
   * OpenSSL at once. (The area is only ever busy between an alloc and its
   * read callback; without it libuv reports ENOBUFS, a read error.) */
  if ((c->rbuf.len == 0 || c->tls) && !rt->scratch_busy) {
    rt->scratch_busy = 1;
    buf->base = rt->scratch;
    buf->len = CS_SCRATCH_SIZE;
    return;
  }
  if (c->tls || cs__buf_reserve(&c->rbuf, 16384) != 0) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  buf->base = c->rbuf.base + c->rbuf.off + c->rbuf.len;
  buf->len = c->rbuf.cap - c->rbuf.off - c->rbuf.len;
}

/* Ciphertext in: decrypted into c->rbuf, or a sticky error. */
static void conn_tls_in(cs_conn_t *c, ssize_t nread, const uv_buf_t *buf) {
  c->rt->scratch_busy = 0;
  if (nread <= 0 || c->err)
    return;
  int rc = cs__tls_feed(c, buf->base, (size_t)nread);
  if (rc < 0)
    c->err = rc;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  cs_conn_t *c = s->data;
  cs_runtime_t *rt = c->rt;
  size_t had = c->rbuf.len;
  if (c->tls) {
    conn_tls_in(c, nread, buf);
  } else if (buf->base == rt->scratch) {
    rt->scratch_busy = 0;
    if (nread > 0) {
      c->rbuf.base = rt->scratch;
      c->rbuf.off = 0;
      c->rbuf.len = (size_t)nread;
      c->rbuf.cap = 0;
    }
  } else if (nread > 0) {
    c->rbuf.len += (size_t)nread;
  }
  if (nread == 0)
    return;
  if (c->pooled) {
    /* An idle pooled connection has nothing to say: bytes or an EOF mean
     * the peer is done with it. (Over TLS, what decrypts to nothing, a
     * TLS 1.3 session ticket, say, is no such word.) */
    if (c->tls && nread > 0 && c->rbuf.len == had && !c->eof && !c->err) {
      cs__buf_own(&c->rbuf);
      return;
    }
    if (c->rbuf.cap == 0)
      c->rbuf.base = NULL, c->rbuf.len = c->rbuf.off = 0;
    cs__conn_close(c, CS_ECLOSED);
    return;
  }
  if (nread > 0) {
    c->last_io = uv_now(&rt->loop);
    if (c->server)
      c->server->stats.bytes_in += (double)nread;
  } else {
    if (nread == UV_EOF)
      c->eof = 1; /* over TLS without close_notify too: "closed" */
    else
      c->err = (int)nread;
  }
  if ((c->eof || c->err) && c->reading) {
    uv_read_stop(s);
    c->reading = 0;
  }
  cs_task_t *t = c->reader;
  if (t) {
    int n = conn_try_read(t->co, c);
    if (n > 0) {
      c->reader = NULL;
      conn_update_ref(c);
      cs__wake(t, n);
    } else if (c->rreq.idle && c->rbuf.len > 0) {
      /* A request has begun: the rest must come in busy_timeout. */
      c->rreq.idle = 0;
      cs__retime(t, c->rreq.busy_timeout);
    }
  }
  if (c->closing) {
    if (c->rbuf.cap == 0)
      c->rbuf.base = NULL, c->rbuf.len = c->rbuf.off = 0;
    return;
  }
  if (cs__buf_own(&c->rbuf) != 0) {
    cs__conn_abort(c, UV_ENOMEM);
    return;
  }
  if (c->reader == NULL && c->reading && c->rbuf.len >= CONN_HIGH_WATER) {
    uv_read_stop(s);
    c->reading = 0;
  }
  cs__sched_flush(rt);
}

static int read_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_conn_t *c = (cs_conn_t *)((char *)w - offsetof(cs_conn_t, rwait));
  c->reader = NULL;
  conn_update_ref(c);
  if (c->rreq.kind == CS_READ_HANDSHAKE) {
    if (c->server)
      c->server->stats.tls_failures++;
    lua_pushnil(co);
    lua_pushstring(co, err == UV_ETIMEDOUT ? "tls: handshake timeout" : cs_strerror(err));
    return 2;
  }
  cs__push_error(co, err);
  /* As LuaSocket: what arrived is handed over as partial data, except for
   * frames, which must stay whole, and peeks, which leave it buffered. */
  if (c->rreq.kind == CS_READ_FRAME || c->rreq.peek) {
    lua_pushliteral(co, "");
  } else {
    lua_pushlstring(co, cs__buf_data(&c->rbuf), c->rbuf.len);
    cs__buf_consume(&c->rbuf, c->rbuf.len);
  }
  return 3;
}

int cs__conn_read(lua_State *L, cs_conn_t *c, const cs_read_t *r, double timeout,
                  const char *fname) {
  cs_task_t *t = cs__task_current(L, fname);
  if (c->reader)
    return cs__push_error(L, CS_EBUSY);
  c->rreq = *r;
  int n = conn_try_read(L, c);
  if (n > 0)
    return n;
  if (r->idle && c->rbuf.len > 0) {
    c->rreq.idle = 0; /* not idle: part of a request is here */
    timeout = r->busy_timeout;
  }
  if (!c->reading) {
    int rc = uv_read_start(&c->u.stream, conn_alloc_cb, conn_read_cb);
    if (rc < 0)
      return cs__push_error(L, rc);
    c->reading = 1;
  }
  c->reader = t;
  conn_update_ref(c);
  return cs__park(L, t, &c->rwait, timeout);
}

/* Whether the peer has sent bytes or its EOF that the loop has not read
 * yet: a connection pooled and taken back in one loop turn would otherwise
 * hand them to its next user as the answer to a request it never made.
 * (Over TLS what waits may be a session ticket, so TLS is not asked.) */
static int conn_peer_spoke(cs_conn_t *c) {
  uv_os_fd_t fd;
  char b;
  if (uv_fileno(&c->u.handle, &fd) != 0)
    return 1;
  ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Pooling: an idle client connection waits in a pool without keeping the
 * loop alive, still reading so that a peer's close is noticed. Returns 0,
 * or an error when it cannot be pooled (or, leaving, is no longer usable). */
int cs__conn_pool(cs_conn_t *c, int on) {
  if (on) {
    if (c->closing || c->reader || c->writer || c->wqueued || c->rbuf.len > 0 || c->eof ||
        c->err)
      return CS_ECLOSED;
    if (!c->reading) {
      int rc = uv_read_start(&c->u.stream, conn_alloc_cb, conn_read_cb);
      if (rc < 0)
        return rc;
      c->reading = 1;
    }
    c->pooled = 1;
    uv_unref(&c->u.handle);
    return 0;
  }
  if (!c->pooled)
    return 0;
  c->pooled = 0;
  conn_update_ref(c);
  if (c->closing || (c->tls == NULL && conn_peer_spoke(c)))
    return CS_ECLOSED;
  return 0;
}

/* ---- writing ---- */

static void conn_write_cb(uv_write_t *req, int status) {
  cs_conn_t *c = req->data;
  cs_runtime_t *rt = c->rt;
  luaL_unref(rt->L, LUA_REGISTRYINDEX, c->wref);
  c->wref = LUA_NOREF;
  cs_task_t *t = c->writer;
  if (t == NULL)
    return;
  c->writer = NULL;
  conn_update_ref(c);
  if (status == 0) {
    c->last_io = uv_now(&rt->loop);
    lua_pushnumber(t->co, (double)c->wtotal);
    cs__wake(t, 1);
  } else {
    cs__wake(t, cs__push_error(t->co, status));
  }
}

/* A write cannot be taken back halfway: a send that times out or is
 * canceled leaves the stream with an unknown prefix sent, so the
 * connection is closed, as OpenResty does. */
static int write_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_conn_t *c = (cs_conn_t *)((char *)w - offsetof(cs_conn_t, wwait));
  c->writer = NULL;
  cs__conn_abort(c, CS_ECLOSED);
  return cs__push_error(co, err);
}

/* Only real strings: a number converted here would be a string nothing
 * anchors while the write is parked. (Argument errors count from after
 * self, as Lua's own messages for methods do.) */
static int iov_add(lua_State *L, int idx, uv_buf_t *iov, size_t *total) {
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    return 0;
  const char *s = lua_tolstring(L, idx, &len);
  iov->base = (char *)s;
  iov->len = len;
  *total += len;
  return 1;
}

/* Hands iov to the kernel without waiting. Returns how many of its total
 * bytes it took (all of them: the write is done), or an error. */
static int conn_try_write(cs_conn_t *c, const uv_buf_t *iov, int cnt, size_t total) {
  int n = uv_try_write(&c->u.stream, iov, (unsigned)cnt);
  if (n == UV_EAGAIN || n == UV_ENOSYS)
    n = 0;
  if (n < 0)
    return n;
  if (c->server)
    c->server->stats.bytes_out += (double)total;
  if ((size_t)n == total)
    c->last_io = uv_now(&c->rt->loop);
  return n;
}

/* A copy of sent bytes the kernel did not take, being written. */
typedef struct {
  uv_write_t req;
  cs_conn_t *c;
  size_t len;
  char data[];
} conn_chunk_t;

static void conn_tls_resume(cs_conn_t *c);

static void chunk_write_cb(uv_write_t *req, int status) {
  conn_chunk_t *k = req->data;
  cs_conn_t *c = k->c;
  c->wqueued -= k->len;
  free(k);
  if (status == 0)
    c->last_io = uv_now(&c->rt->loop);
  else if (c->werr == 0)
    c->werr = status; /* the next send reports it */
  if (c->flushing && (c->wqueued == 0 || status < 0))
    conn_flush_end(c);
  else if (c->tls && c->writer && !c->closing && (c->werr || c->wqueued <= c->send_buffer))
    conn_tls_resume(c);
}

/* Copies iov's bytes past the first `done` and writes them. */
static int conn_queue(cs_conn_t *c, const uv_buf_t *iov, int cnt, size_t done, size_t total) {
  size_t len = total - done;
  conn_chunk_t *k = malloc(sizeof *k + len);
  if (k == NULL)
    return UV_ENOMEM;
  char *p = k->data;
  for (int i = 0; i < cnt; i++) {
    if (done >= iov[i].len) {
      done -= iov[i].len;
      continue;
    }
    memcpy(p, iov[i].base + done, iov[i].len - done);
    p += iov[i].len - done;
    done = 0;
  }
  k->req.data = k;
  k->c = c;
  k->len = len;
  uv_buf_t b = uv_buf_init(k->data, (unsigned)len);
  int rc = uv_write(&k->req, &c->u.stream, &b, 1, chunk_write_cb);
  if (rc < 0) {
    free(k);
    return rc;
  }
  c->wqueued += len;
  return 1;
}

/* conn_queue, when the bytes fit in the send buffer: 1 if they did, 0
 * when they do not fit (the caller parks instead), or an error. */
static int conn_buffer_rest(cs_conn_t *c, const uv_buf_t *iov, int cnt, size_t done,
                            size_t total) {
  if (total - done > c->send_buffer - c->wqueued)
    return 0;
  return conn_queue(c, iov, cnt, done, total);
}

int cs__conn_write_raw(cs_conn_t *c, const char *data, size_t len) {
  uv_buf_t iov = uv_buf_init((char *)data, (unsigned)len);
  int n = conn_try_write(c, &iov, 1, len);
  if (n < 0 || (size_t)n == len)
    return n < 0 ? n : 0;
  n = conn_queue(c, &iov, 1, (size_t)n, len);
  return n < 0 ? n : 0;
}

/* ---- writing over TLS ----
 * Plaintext is encrypted 64 KiB at a time and the ciphertext written out
 * (copied where the kernel does not take it: OpenSSL's buffer is reused).
 * Encryption stops while more than send_buffer bytes wait to be written,
 * and the sender parks until they drain; then it goes on from where it
 * stopped (c->tls_off into the string anchored at c->wref). */
#define CONN_TLS_SLICE 65536

/* Encrypts data[*off, len) while the send buffer has room. 0 or an error. */
static int conn_tls_push(cs_conn_t *c, const char *data, size_t len, size_t *off) {
  while (*off < len && c->wqueued <= c->send_buffer) {
    size_t n = len - *off < CONN_TLS_SLICE ? len - *off : CONN_TLS_SLICE;
    int rc = cs__tls_write(c, data + *off, n);
    if (rc < 0)
      return rc;
    *off += n;
  }
  return 0;
}

static void conn_tls_resume(cs_conn_t *c) {
  cs_runtime_t *rt = c->rt;
  cs_task_t *t = c->writer;
  int rc = c->werr;
  if (rc == 0 && c->wref != LUA_NOREF) {
    size_t len;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, c->wref);
    const char *data = lua_tolstring(rt->L, -1, &len);
    rc = conn_tls_push(c, data, len, &c->tls_off);
    lua_pop(rt->L, 1);
    if (rc == 0 && c->tls_off < len)
      return;
  }
  if (rc == 0 && c->wqueued > c->send_buffer)
    return;
  if (c->wref != LUA_NOREF) {
    luaL_unref(rt->L, LUA_REGISTRYINDEX, c->wref);
    c->wref = LUA_NOREF;
  }
  c->writer = NULL;
  conn_update_ref(c);
  if (rc < 0) {
    cs__wake(t, cs__conn_push_error(t->co, c, rc));
  } else {
    lua_pushnumber(t->co, (double)c->wtotal);
    cs__wake(t, 1);
  }
}

/* [-1, +0|1|2] send over TLS of the string on top of L. */
static int conn_tls_send(lua_State *L, cs_conn_t *c, cs_task_t *t) {
  size_t len, off = 0;
  const char *data = lua_tolstring(L, -1, &len);
  if (!cs__tls_done(c)) {
    lua_pushnil(L);
    lua_pushliteral(L, "tls: the handshake is not done");
    return 2;
  }
  int rc = conn_tls_push(c, data, len, &off);
  if (rc < 0)
    return cs__conn_push_error(L, c, rc);
  if (off == len && c->wqueued <= c->send_buffer) {
    lua_pushnumber(L, (double)len);
    return 1;
  }
  c->tls_off = off;
  c->wtotal = len;
  c->wref = off < len ? luaL_ref(L, LUA_REGISTRYINDEX) : LUA_NOREF;
  c->writer = t;
  conn_update_ref(c);
  return cs__park(L, t, &c->wwait, c->send_timeout);
}

/* [-1, +0|1|2] Writes the rest of iov, past the first `done` bytes, and
 * parks t until it is written; the value on top of L, which holds those
 * bytes, is anchored meanwhile. */
static int conn_write_rest(lua_State *L, cs_conn_t *c, cs_task_t *t, uv_buf_t *iov, int cnt,
                           size_t done, size_t total) {
  int k = 0;
  while (done >= iov[k].len) {
    done -= iov[k].len;
    k++;
  }
  iov[k].base += done;
  iov[k].len -= done;
  c->wref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->wreq.data = c;
  int rc = uv_write(&c->wreq, &c->u.stream, iov + k, (unsigned)(cnt - k), conn_write_cb);
  if (rc < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->wref);
    c->wref = LUA_NOREF;
    return cs__push_error(L, rc);
  }
  c->writer = t;
  c->wtotal = total;
  conn_update_ref(c);
  return cs__park(L, t, &c->wwait, c->send_timeout);
}

int cs__conn_write(lua_State *L, cs_conn_t *c, int idx, const char *fname) {
  cs_task_t *t = cs__task_current(L, fname);
  if (c->writer)
    return cs__push_error(L, CS_EBUSY);
  if (c->werr)
    return cs__conn_push_error(L, c, c->werr);
  uv_buf_t stack_iov[CONN_IOV_STACK];
  uv_buf_t *iov = stack_iov;
  size_t total = 0;
  int cnt = 1;
  if (lua_type(L, idx) == LUA_TTABLE) {
    cnt = (int)lua_objlen(L, idx);
    if (cnt > CONN_IOV_STACK)
      iov = lua_newuserdata(L, sizeof(uv_buf_t) * (size_t)cnt);
    for (int i = 0; i < cnt; i++) {
      lua_rawgeti(L, idx, i + 1);
      if (!iov_add(L, -1, &iov[i], &total))
        return luaL_error(L, "bad argument #1 to '%s' (item %d is not a string)", fname, i + 1);
      lua_pop(L, 1); /* the table still holds it */
    }
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_tostring(L, idx); /* converted in its own stack slot, which stays */
    iov_add(L, idx, iov, &total);
  } else if (!iov_add(L, idx, iov, &total)) {
    return luaL_error(L, "bad argument #1 to '%s' (string or array of strings expected)", fname);
  }
  if (total == 0) {
    lua_pushnumber(L, 0);
    return 1;
  }
  if (c->tls) {
    /* One string to encrypt from, whatever the caller passed. */
    if (lua_type(L, idx) == LUA_TTABLE) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (int i = 0; i < cnt; i++)
        luaL_addlstring(&b, iov[i].base, iov[i].len);
      luaL_pushresult(&b);
    } else {
      lua_pushvalue(L, idx);
    }
    return conn_tls_send(L, c, t);
  }
  int n = conn_try_write(c, iov, cnt, total);
  if (n < 0)
    return cs__push_error(L, n);
  if ((size_t)n < total)
    n = conn_buffer_rest(c, iov, cnt, (size_t)n, total) == 1 ? (int)total : n;
  if ((size_t)n == total) {
    lua_pushnumber(L, (double)total);
    return 1;
  }
  /* The kernel and the send buffer are full: the caller parks. A table is
   * copied: the caller may change it meanwhile. */
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_createtable(L, cnt, 0);
    for (int i = 1; i <= cnt; i++) {
      lua_rawgeti(L, idx, i);
      lua_rawseti(L, -2, i);
    }
  } else {
    lua_pushvalue(L, idx);
  }
  return conn_write_rest(L, c, t, iov, cnt, (size_t)n, total);
}

int cs__conn_write_bytes(lua_State *L, cs_conn_t *c, const char *data, size_t len,
                         const char *fname) {
  cs_task_t *t = cs__task_current(L, fname);
  if (c->writer)
    return cs__push_error(L, CS_EBUSY);
  if (c->werr)
    return cs__conn_push_error(L, c, c->werr);
  if (c->tls) {
    lua_pushlstring(L, data, len);
    return conn_tls_send(L, c, t);
  }
  uv_buf_t iov = uv_buf_init((char *)data, (unsigned)len);
  int n = conn_try_write(c, &iov, 1, len);
  if (n < 0)
    return cs__push_error(L, n);
  if ((size_t)n < len)
    n = conn_buffer_rest(c, &iov, 1, (size_t)n, len) == 1 ? (int)len : n;
  if ((size_t)n == len) {
    lua_pushnumber(L, (double)len);
    return 1;
  }
  /* The kernel is full: the rest moves into a string of its own. */
  lua_pushlstring(L, data + n, len - (size_t)n);
  iov = uv_buf_init((char *)lua_tostring(L, -1), (unsigned)(len - (size_t)n));
  return conn_write_rest(L, c, t, &iov, 1, 0, len);
}

/* ---- connecting ---- */

static void conn_connect_cb(uv_connect_t *req, int status) {
  cs_conn_t *c = req->data;
  cs_task_t *t = c->connector;
  if (t == NULL)
    return; /* aborted: already closed */
  c->connector = NULL;
  conn_update_ref(c);
  if (status == 0) {
    cs_runtime_t *rt = c->rt;
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, c->box_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, c->box_ref);
    c->box_ref = LUA_NOREF;
    cs__wake(t, 1);
  } else {
    cs__conn_close(c, status);
    cs__wake(t, cs__push_error(t->co, status));
  }
}

static int connect_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_conn_t *c = (cs_conn_t *)((char *)w - offsetof(cs_conn_t, cwait));
  c->connector = NULL;
  cs__conn_close(c, err);
  return cs__push_error(co, err);
}

/* [-1, +1|2] Takes the connection's object from the top of L and parks
 * until connected: returns it, or nil, err (the connection is then closed).
 * The object is anchored meanwhile. */
int cs__conn_connect(lua_State *L, cs_conn_t *c, const struct sockaddr *addr,
                     const char *path, double timeout) {
  cs_task_t *t = cs__task_current(L, "coserve.connect");
  c->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->creq.data = c;
  if (path) {
    uv_pipe_connect(&c->creq, &c->u.pipe, path, conn_connect_cb);
  } else {
    int rc = uv_tcp_connect(&c->creq, &c->u.tcp, addr, conn_connect_cb);
    if (rc < 0) {
      cs__conn_close(c, rc);
      return cs__push_error(L, rc);
    }
    uv_tcp_nodelay(&c->u.tcp, 1);
  }
  c->connector = t;
  conn_update_ref(c);
  return cs__park(L, t, &c->cwait, timeout);
}
