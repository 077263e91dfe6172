/* Tasks: coroutines that park on libuv and are resumed by the loop.
 *
 * There is exactly one lua_yield (cs__park) and one lua_resume
 * (task_resume). A waker never runs the woken task: cs__wake() only queues
 * it, and the check handle drains the queue once per loop iteration, so
 * resumes never nest on the C stack.
 *
 * A task is a full userdata (the Lua object users hold) whose memory embeds
 * its timer. It is anchored in the registry from spawn until its timer's
 * close callback, and its coroutine until it finishes; after that the
 * garbage collector owns it like any other value. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "internal.h"

/* ---- queues ---- */

static void q_push(cs_taskq_t *q, cs_task_t *t) {
  t->next = NULL;
  if (q->tail)
    q->tail->next = t;
  else
    q->head = t;
  q->tail = t;
}

static void q_push_front(cs_taskq_t *q, cs_task_t *t) {
  t->next = q->head;
  q->head = t;
  if (q->tail == NULL)
    q->tail = t;
}

static cs_task_t *q_pop(cs_taskq_t *q) {
  cs_task_t *t = q->head;
  if (t) {
    q->head = t->next;
    if (q->head == NULL)
      q->tail = NULL;
    t->next = NULL;
  }
  return t;
}

static void sched_idle_cb(uv_idle_t *h) { cs__sched_drain((cs_runtime_t *)h->data); }

static void sched_need_drain(cs_runtime_t *rt) {
  /* An active idle handle makes the next poll return at once. */
  if (!uv_is_active((uv_handle_t *)&rt->idle))
    uv_idle_start(&rt->idle, sched_idle_cb);
}

static void task_enqueue(cs_task_t *t, int front) {
  cs_runtime_t *rt = t->rt;
  t->queued = 1;
  if (front)
    q_push_front(&rt->ready, t);
  else
    q_push(&rt->ready, t);
  sched_need_drain(rt);
}

/* ---- creation ---- */

static int gwait_abort(cs_wait_t *w, lua_State *co, int err) {
  (void)w;
  return cs__push_error(co, err);
}

/* sleep() ends by its deadline: that is success. */
static int swait_abort(cs_wait_t *w, lua_State *co, int err) {
  (void)w;
  if (err == UV_ETIMEDOUT) {
    lua_pushboolean(co, 1);
    return 1;
  }
  return cs__push_error(co, err);
}

static int jwait_abort(cs_wait_t *w, lua_State *co, int err) {
  cs_task_t *t = (cs_task_t *)((char *)w - offsetof(cs_task_t, jwait));
  cs_task_t **pp = &t->joinee->joiners;
  while (*pp && *pp != t)
    pp = &(*pp)->jnext;
  if (*pp)
    *pp = t->jnext;
  t->joinee = NULL;
  lua_pushboolean(co, 0);
  lua_pushstring(co, cs_strerror(err));
  return 2;
}

/* Deadlines are lazy: a wake leaves the timer armed (only unreferenced),
 * and a park re-arms it only when its deadline is earlier than the armed
 * one. A connection that waits with the same read timeout over and over
 * thus costs no timer-heap work per wait; when the timer fires early, it
 * is re-armed for what is left. */
static void task_timer_cb(uv_timer_t *timer) {
  cs_task_t *t = (cs_task_t *)timer->data;
  if (t->wait == NULL || t->deadline == UINT64_MAX)
    return;
  uint64_t now = uv_now(timer->loop);
  if (t->deadline <= now) {
    cs__abort(t, UV_ETIMEDOUT);
    return;
  }
  t->armed = t->deadline;
  uv_timer_start(timer, task_timer_cb, t->deadline - now, 0);
}

static void exit_unlink(cs_task_t *t) {
  if (t->xprev)
    t->xprev->xnext = t->xnext;
  else
    t->rt->exit_waiters = t->xnext;
  if (t->xnext)
    t->xnext->xprev = t->xprev;
  t->xnext = t->xprev = NULL;
}

static int xwait_abort(cs_wait_t *w, lua_State *co, int err) {
  exit_unlink((cs_task_t *)((char *)w - offsetof(cs_task_t, xwait)));
  return cs__push_error(co, err);
}

int cs__wait_exiting(lua_State *L, cs_task_t *t, double timeout) {
  cs_runtime_t *rt = t->rt;
  if (rt->exiting) {
    lua_pushboolean(L, 1);
    return 1;
  }
  t->xprev = NULL;
  t->xnext = rt->exit_waiters;
  if (t->xnext)
    t->xnext->xprev = t;
  rt->exit_waiters = t;
  return cs__park(L, t, &t->xwait, timeout);
}

void cs__wake_exiting(cs_runtime_t *rt) {
  cs_task_t *t;
  while ((t = rt->exit_waiters) != NULL) {
    exit_unlink(t);
    lua_pushboolean(t->co, 1);
    cs__wake(t, 1);
  }
}

cs_task_t *cs__task_new(cs_runtime_t *rt, lua_State *L, int nargs, int front) {
  int fidx = lua_gettop(L) - nargs;
  cs_task_t *t = lua_newuserdata(L, sizeof(*t));
  memset(t, 0, sizeof(*t));
  luaL_getmetatable(L, CS_TASK_MT);
  lua_setmetatable(L, -2);
  t->rt = rt;
  t->gwait.abort = gwait_abort;
  t->jwait.abort = jwait_abort;
  t->swait.abort = swait_abort;
  t->xwait.abort = xwait_abort;
  t->co_ref = t->box_ref = LUA_NOREF;

  t->co = lua_newthread(L);
  t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  t->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  /* Move the trampoline, the function and its arguments onto the new
   * coroutine; the box stays, ending up where the function was. */
  lua_insert(L, fidx);
  lua_getfield(L, LUA_REGISTRYINDEX, CS_TRAMPOLINE_KEY);
  lua_insert(L, fidx + 1);
  lua_xmove(L, t->co, nargs + 2);
  t->nret = nargs + 1;

  uv_timer_init(&rt->loop, &t->timer);
  uv_unref((uv_handle_t *)&t->timer);
  t->timer.data = t;
  t->all_next = rt->tasks;
  if (rt->tasks)
    rt->tasks->all_prev = t;
  rt->tasks = t;
  rt->ntasks++;
  task_enqueue(t, front);
  return t;
}

cs_task_t *cs__task_current(lua_State *L, const char *fname) {
  return cs__task_of(cs__runtime_get(L), L, fname);
}

cs_task_t *cs__task_of(cs_runtime_t *rt, lua_State *L, const char *fname) {
  cs_task_t *t = rt->current;
  if (t == NULL || t->co != L)
    luaL_error(L, "%s: not inside a coserve coroutine", fname);
  /* Checked before the caller registers anything: lua_yield would raise
   * only after the wait was set up, leaving it behind. */
  if (!lua_isyieldable(L))
    luaL_error(L, "%s: cannot wait inside a C call that cannot yield "
                  "(dofile, require, a metamethod...); use loadfile(f)() instead of dofile",
               fname);
  return t;
}

/* ---- park and wake ---- */

/* A deadline is never early. The loop's clock is read once a turn, so a
 * task that runs after other tasks' work would count from a time already
 * past; and it counts whole milliseconds, so the one in progress is not
 * counted at all. Hence the fresh reading, and one millisecond more. */
void cs__retime(cs_task_t *t, double timeout) {
  if (timeout >= 0) {
    double ms = timeout > 0 ? ceil(timeout * 1000.0) + 1 : 0; /* 0: the next turn */
    uint64_t delay = ms > 9e15 ? (uint64_t)9e15 : (uint64_t)ms;
    uv_update_time(&t->rt->loop);
    t->deadline = uv_now(&t->rt->loop) + delay;
    if (!uv_is_active((uv_handle_t *)&t->timer) || t->deadline < t->armed) {
      t->armed = t->deadline;
      uv_timer_start(&t->timer, task_timer_cb, delay, 0);
    }
    uv_ref((uv_handle_t *)&t->timer);
  } else {
    t->deadline = UINT64_MAX;
  }
}

int cs__park(lua_State *L, cs_task_t *t, cs_wait_t *w, double timeout) {
  if (t->canceled)
    return w->abort(w, L, UV_ECANCELED);
  if (t->main)
    cs__runtime_ready(t->rt);
  t->wait = w;
  cs__retime(t, timeout);
  lua_pushlightuserdata(L, &t->rt->sentinel);
  return lua_yield(L, 1);
}

int cs__yield(lua_State *L, cs_task_t *t, int nkeep, cs_task_t *after) {
  cs_runtime_t *rt = t->rt;
  t->nret = nkeep;
  t->queued = 1;
  if (after) {
    t->next = after->next;
    after->next = t;
    if (rt->ready.tail == after)
      rt->ready.tail = t;
  } else {
    q_push(&rt->yielded, t);
  }
  sched_need_drain(rt);
  lua_pushlightuserdata(L, &rt->sentinel);
  return lua_yield(L, nkeep + 1);
}

void cs__wake(cs_task_t *t, int nret) {
  assert(!t->queued && !t->done);
  /* The timer stays armed but must not keep the loop alive. */
  uv_unref((uv_handle_t *)&t->timer);
  t->wait = NULL;
  t->nret = nret;
  task_enqueue(t, 0);
}

void cs__abort(cs_task_t *t, int err) {
  cs_wait_t *w = t->wait;
  t->wait = NULL;
  cs__wake(t, w->abort(w, t->co, err));
}

void cs__task_cancel(cs_task_t *t) {
  if (t->done)
    return;
  t->canceled = 1;
  if (t->wait)
    cs__abort(t, UV_ECANCELED);
}

/* ---- finishing ---- */

static void task_close_cb(uv_handle_t *h) {
  cs_task_t *t = (cs_task_t *)h->data;
  luaL_unref(t->rt->L, LUA_REGISTRYINDEX, t->box_ref);
}

/* [-1, +0] Stores the finished coroutine's results (or its error message,
 * which carries a traceback) in the environment table of the box on top
 * of L: { ok = bool, n = count, ... }. */
static void task_store_results(lua_State *L, lua_State *co, int ok) {
  int n = ok ? lua_gettop(co) : 1;
  lua_createtable(L, n, 2);
  luaL_checkstack(L, n + 4, "too many results");
  lua_xmove(co, L, n);
  for (int i = n; i >= 1; i--)
    lua_rawseti(L, -(i + 1), i);
  lua_pushboolean(L, ok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  lua_setfenv(L, -2);
  lua_pop(L, 1);
}

int cs__task_push_results(lua_State *L) {
  int box = lua_gettop(L);
  lua_getfenv(L, box);
  lua_getfield(L, box + 1, "ok");
  int ok = lua_toboolean(L, -1);
  lua_getfield(L, box + 1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  luaL_checkstack(L, n + 2, "too many results");
  lua_pushboolean(L, ok);
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, box + 1, i);
  lua_remove(L, box);
  lua_remove(L, box);
  return n + 1;
}

static void task_finish(cs_task_t *t, int ok) {
  cs_runtime_t *rt = t->rt;
  t->done = 1;
  t->failed = !ok;
  rt->ntasks--;
  if (t->all_prev)
    t->all_prev->all_next = t->all_next;
  else
    rt->tasks = t->all_next;
  if (t->all_next)
    t->all_next->all_prev = t->all_prev;

  /* The box must not be collected while it is still needed here: it is
   * anchored by box_ref until the timer's close callback. */
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->box_ref);
  lua_pushvalue(L, -1);
  task_store_results(L, t->co, ok);
  int joined = t->joiners != NULL;
  while (t->joiners) {
    cs_task_t *j = t->joiners;
    t->joiners = j->jnext;
    j->joinee = NULL;
    lua_pushvalue(L, -1);
    lua_xmove(L, j->co, 1);
    cs__wake(j, cs__task_push_results(j->co));
  }
  if (t->owner) {
    cs_conn_t *c = t->owner;
    if (t->oprev)
      t->oprev->onext = t->onext;
    else
      c->tasks = t->onext;
    if (t->onext)
      t->onext->oprev = t->oprev;
    t->owner = NULL;
  }
  /* A task cannot die parked, but if it did, its wait must not outlive it. */
  if (t->wait) {
    cs_wait_t *w = t->wait;
    t->wait = NULL;
    w->abort(w, t->co, UV_ECANCELED);
  }
  if (t->main && ok)
    cs__runtime_ready(rt);
  /* The app's main function failed: nothing is left to serve it, so
   * everything unwinds and the error is reported at once. */
  if (t->main && !ok)
    cs__runtime_abort(rt);
  if (t->on_done)
    t->on_done(t, ok);
  else if (!ok && !joined && !t->main && !(rt->aborting && t->canceled)) {
    /* (Tasks canceled to unwind an abort fail as a matter of course: their
     * errors would only bury the one that caused it.) */
    lua_pushvalue(L, -1);
    cs__task_push_results(L);
    cs__log(rt, CS_LOG_ERROR, "task failed: %s", lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  luaL_unref(rt->L, LUA_REGISTRYINDEX, t->co_ref);
  t->co_ref = LUA_NOREF;
  t->co = NULL;
  uv_close((uv_handle_t *)&t->timer, task_close_cb);
}

/* The one lua_resume. */
static void task_resume(cs_task_t *t) {
  cs_runtime_t *rt = t->rt;
  lua_State *co = t->co;
  int nret = t->nret;
  t->nret = 0;
  rt->current = t;
  int status = lua_resume(co, nret);
  rt->current = NULL;
  if (status == LUA_YIELD) {
    /* Values below the sentinel were kept by cs__yield for the resume. */
    if (lua_gettop(co) >= 1 && lua_touserdata(co, -1) == &rt->sentinel) {
      lua_pop(co, 1);
      return;
    }
    /* A bare coroutine.yield from inside a task: the scheduler cannot know
     * what would resume it, so the task fails. */
    lua_settop(co, 0);
    lua_pushliteral(co, "coroutine.yield called in a coserve coroutine "
                        "(use coserve's waits: sleep, channels, IO)");
    task_finish(t, 0);
    return;
  }
  if (status != 0) {
    /* Only an error outside the trampoline's xpcall (out of memory while
     * starting) gets here. */
    const char *msg = lua_tostring(co, -1);
    lua_settop(co, 0);
    lua_pushstring(co, msg ? msg : "task failed");
    task_finish(t, 0);
    return;
  }
  /* The trampoline returned xpcall's results: ok, results... */
  int ok = lua_toboolean(co, 1);
  lua_remove(co, 1);
  task_finish(t, ok);
}

/* Every task runs its function under xpcall inside its own coroutine, so
 * that an error is caught (and its traceback taken) where it happens, and
 * lua_resume never has to unwind a failed coroutine. */
static const char trampoline_src[] =
    "local xpcall, traceback, type, tostring = xpcall, debug.traceback, type, tostring\n"
    "local function handler(e)\n"
    "  if type(e) ~= 'string' then\n"
    "    local mt = getmetatable(e)\n"
    "    e = mt and mt.__tostring and tostring(e) or\n"
    "        '(error object is a ' .. type(e) .. ' value)'\n"
    "  end\n"
    "  local tb = traceback(e, 2)\n"
    "  return (tb:gsub('\\n%s*%[builtin#%d+%]: at 0x%x+$', ''))\n"
    "end\n"
    "return function(f, ...) return xpcall(f, handler, ...) end\n";

int cs__sched_open(lua_State *L) {
  if (luaL_loadbuffer(L, trampoline_src, sizeof trampoline_src - 1, "=coserve.task") != 0)
    return lua_error(L);
  lua_call(L, 0, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, CS_TRAMPOLINE_KEY);
  return 0;
}

/* ---- the drain ---- */

void cs__sched_drain(cs_runtime_t *rt) {
  cs_task_t *t;
  if (rt->draining)
    return;
  rt->draining = 1;
  while ((t = q_pop(&rt->ready)) != NULL) {
    t->queued = 0;
    task_resume(t);
  }
  rt->draining = 0;
  /* sleep(0) callers go behind the IO that the next poll brings. */
  if (rt->yielded.head) {
    rt->ready = rt->yielded;
    rt->yielded.head = rt->yielded.tail = NULL;
  } else {
    uv_idle_stop(&rt->idle);
  }
}

void cs__sched_flush(cs_runtime_t *rt) {
  if (rt->ready.head && rt->current == NULL)
    cs__sched_drain(rt);
}

static void sched_check_cb(uv_check_t *h) { cs__sched_drain((cs_runtime_t *)h->data); }

void cs__sched_init(cs_runtime_t *rt) {
  uv_check_init(&rt->loop, &rt->check);
  rt->check.data = rt;
  uv_check_start(&rt->check, sched_check_cb);
  uv_unref((uv_handle_t *)&rt->check);
  uv_idle_init(&rt->loop, &rt->idle);
  rt->idle.data = rt;
}

/* Once the loop has nothing left, tasks still parked can never be woken
 * (a channel nobody will push to, say). Cancel them so they unwind, a few
 * rounds at most, rather than leaving them anchored forever. Returns 1 if
 * the main task was among them: a deadlock. */
int cs__loop_run(cs_runtime_t *rt) {
  int deadlock = 0;
  rt->running = 1;
  for (int round = 0; round < 4; round++) {
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    if (uv_loop_alive(&rt->loop) && !rt->ready.head)
      break; /* cs_runtime_stop() */
    int any = 0;
    for (cs_task_t *t = rt->tasks; t; t = t->all_next) {
      if (t->wait) {
        deadlock |= t->main;
        any = 1;
      }
    }
    if (!any)
      break;
    for (cs_task_t *t = rt->tasks, *n; t; t = n) {
      n = t->all_next;
      if (t->wait)
        cs__task_cancel(t);
    }
  }
  rt->running = 0;
  return deadlock;
}
