/* Waits on foreign descriptors (SPEC §11): the one thing a C library with a
 * non-blocking API needs from the loop, "wake me when this descriptor is
 * readable or writable". Each wait has a uv_poll_t of its own, created
 * when the coroutine parks and closed when it wakes: a library may close
 * or reuse the descriptor between two waits, and a watcher left on it
 * would then watch the wrong file. Two waits on one descriptor at once
 * would share one epoll registration, which libuv does not allow: the
 * second gets "busy". */
#include <stdlib.h>

#include "internal.h"

typedef struct pollw_s {
  uv_poll_t handle;
  cs_runtime_t *rt;
  cs_task_t *task;
  cs_wait_t wait;
  int fd;
  struct pollw_s *next; /* rt->polls */
} pollw_t;

static void poll_close_cb(uv_handle_t *h) { free(h->data); }

/* Ends a wait: out of rt->polls, its handle closed. */
static void poll_end(pollw_t *p) {
  pollw_t **pp = (pollw_t **)&p->rt->polls;
  while (*pp != p)
    pp = &(*pp)->next;
  *pp = p->next;
  p->task = NULL;
  uv_close((uv_handle_t *)&p->handle, poll_close_cb);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  pollw_t *p = h->data;
  cs_task_t *t = p->task;
  poll_end(p);
  if (status < 0) {
    cs__wake(t, cs__push_error(t->co, status));
  } else {
    int r = events & UV_READABLE, w = events & UV_WRITABLE;
    lua_pushstring(t->co, r && w ? "rw" : r ? "r" : "w");
    cs__wake(t, 1);
  }
  cs__sched_flush(t->rt);
}

static int poll_abort(cs_wait_t *w, lua_State *co, int err) {
  pollw_t *p = (pollw_t *)((char *)w - offsetof(pollw_t, wait));
  poll_end(p);
  return cs__push_error(co, err);
}

int cs_poll(lua_State *L, int fd, int events, double timeout) {
  /* A host's C function has no runtime upvalue: the registry has it. */
  cs_runtime_t *rt = cs__runtime_for(L);
  cs_task_t *t = cs__task_of(rt, L, "poll");
  int uv_events = (events & CS_POLL_READABLE ? UV_READABLE : 0) |
                  (events & CS_POLL_WRITABLE ? UV_WRITABLE : 0);
  if (uv_events == 0 || fd < 0)
    return luaL_error(L, "poll: a descriptor and events (readable, writable) expected");
  for (pollw_t *q = rt->polls; q; q = q->next)
    if (q->fd == fd)
      return cs__push_error(L, CS_EBUSY);
  pollw_t *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cs__push_error(L, UV_ENOMEM);
  int rc = uv_poll_init(&rt->loop, &p->handle, fd);
  if (rc < 0) {
    free(p);
    return cs__push_error(L, rc);
  }
  p->handle.data = p;
  p->rt = rt;
  p->fd = fd;
  p->task = t;
  p->wait.abort = poll_abort;
  p->next = rt->polls;
  rt->polls = p;
  rc = uv_poll_start(&p->handle, uv_events, poll_cb);
  if (rc < 0) {
    poll_end(p);
    return cs__push_error(L, rc);
  }
  return cs__park(L, t, &p->wait, timeout);
}
