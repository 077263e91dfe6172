/* The `coserve.core` module: the scheduler's Lua surface. Everything that
 * can be written over park/wake (channels, wait groups, timers) lives in
 * coserve.lua instead. */
#include <string.h>

#include "internal.h"

/* core.run(fn, ...) -> true, fn's results | false, fn's error.
 * coserve.run raises the error from Lua. */
static int lcore_run(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (rt->running) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "coserve.run: the loop is already running "
                       "(use coserve.spawn inside a coserve coroutine)");
    return 2;
  }
  int nargs = lua_gettop(L) - 1;
  /* Errors are returned, not raised: LuaJIT 2.1.0-beta3 (Debian 12) can
   * crash when a C function raises after it has resumed coroutines that
   * failed with a VM error while the JIT is on. coserve.lua raises. */
  if (!cs__runtime_main(rt, L, nargs)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "coserve.run: the main coroutine is waiting but nothing can wake it "
                       "(deadlock)");
    return 2;
  }
  return cs__task_push_results(L);
}

int cs__spawn(lua_State *L, cs_conn_t *owner) {
  cs_runtime_t *rt = cs__runtime_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  cs_task_t *self = rt->current;
  cs_task_t *t = cs__task_new(rt, L, lua_gettop(L) - 1, 1);
  if (owner) {
    t->owner = owner;
    t->onext = owner->tasks;
    if (owner->tasks)
      owner->tasks->oprev = t;
    owner->tasks = t;
  }
  if (self && self->co == L)
    return cs__yield(L, self, 1, t);
  return 1;
}

/* coserve.spawn(fn, ...) -> task. The new task runs at once, until its
 * first wait; then its spawner continues (it is queued right behind). */
static int lcore_spawn(lua_State *L) { return cs__spawn(L, NULL); }

/* coserve.sleep(s) -> true, or nil, "canceled". */
static int lcore_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  cs_task_t *t = cs__task_current(L, "coserve.sleep");
  if (s <= 0) {
    if (t->canceled)
      return cs__push_error(L, UV_ECANCELED);
    lua_pushboolean(L, 1);
    return cs__yield(L, t, 1, NULL);
  }
  return cs__park(L, t, &t->swait, s);
}

static int lcore_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

/* core.park([timeout]) -> the values given to wake(), or nil, err.
 * The primitive under channels, wait groups and semaphores. */
static int lcore_park(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, -1);
  cs_task_t *t = cs__task_current(L, "coserve.park");
  return cs__park(L, t, &t->gwait, timeout);
}

/* core.wake(task, ...) -> true if task was parked in park() and will now
 * return the given values; false if it was not (it timed out meanwhile). */
static int lcore_wake(lua_State *L) {
  cs_task_t *t = luaL_checkudata(L, 1, CS_TASK_MT);
  if (t->done || t->wait != &t->gwait) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int n = lua_gettop(L) - 1;
  lua_checkstack(t->co, n + 1);
  lua_xmove(L, t->co, n);
  cs__wake(t, n);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.current() -> the running task, or nil outside coserve coroutines. */
static int lcore_current(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  if (rt->current == NULL || rt->current->co != L)
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->current->box_ref);
  return 1;
}

/* coserve.worker_id() -> 1..N in a worker of `coserve -w N`, else 0. */
static int lcore_worker_id(lua_State *L) {
  lua_pushinteger(L, cs__runtime_get(L)->worker_id);
  return 1;
}

static int lcore_exiting(lua_State *L) {
  lua_pushboolean(L, cs__runtime_get(L)->exiting);
  return 1;
}

/* coserve.wait_exiting([timeout]) -> true once a graceful shutdown has
 * begun (at once if it has) | nil, "timeout" | nil, "canceled" */
static int lcore_wait_exiting(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, -1);
  return cs__wait_exiting(L, cs__task_current(L, "coserve.wait_exiting"), timeout);
}

typedef struct {
  int n;
  size_t len;
  char kinds[256]; /* "tcp active, timer unref", for a test's failure */
} handle_walk_t;

static void count_handle(uv_handle_t *h, void *arg) {
  /* The runtime's own check, idle and flush timer are not the user's. */
  cs_runtime_t *rt = h->loop->data;
  handle_walk_t *w = arg;
  if (h == (uv_handle_t *)&rt->check || h == (uv_handle_t *)&rt->idle ||
      h == (uv_handle_t *)&rt->flush_timer || uv_is_closing(h))
    return;
  w->n++;
  if (w->len + 40 < sizeof w->kinds)
    w->len += (size_t)snprintf(w->kinds + w->len, sizeof w->kinds - w->len, "%s%s%s%s",
                               w->len ? ", " : "", uv_handle_type_name(h->type),
                               uv_is_active(h) ? " active" : "", uv_has_ref(h) ? "" : " unref");
}

/* core.stats() -> {tasks =, connections =, handles =, handle_kinds =}:
 * what is alive; handle_kinds names the handles' libuv types ("tcp
 * active, timer unref"). */
static int lcore_stats(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  handle_walk_t w;
  w.n = 0;
  w.len = 0;
  w.kinds[0] = '\0';
  uv_walk(&rt->loop, count_handle, &w);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, rt->ntasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, rt->nconns);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, w.n);
  lua_setfield(L, -2, "handles");
  lua_pushlstring(L, w.kinds, w.len);
  lua_setfield(L, -2, "handle_kinds");
  return 1;
}

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

/* core.log(level, message) */
static int lcore_log(lua_State *L) {
  int level = luaL_checkoption(L, 1, NULL, level_names);
  const char *msg = luaL_checkstring(L, 2);
  cs__log(cs__runtime_get(L), (cs_log_level_t)level, "%s", msg);
  return 0;
}

/* core.log_level([level]) -> the current level; sets it when given. */
static int lcore_log_level(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  if (!lua_isnoneornil(L, 1))
    rt->log_level = (cs_log_level_t)luaL_checkoption(L, 1, NULL, level_names);
  lua_pushstring(L, level_names[rt->log_level]);
  return 1;
}

/* core.shutdown([grace]): what SIGTERM does, for tests and apps. */
static int lcore_shutdown(lua_State *L) {
  cs_runtime_shutdown(cs__runtime_get(L), luaL_optnumber(L, 1, 0));
  return 0;
}

/* core.abort_all(): cancels every task but the caller and closes every
 * server now. coserve.testing uses it when a case runs past its deadline. */
static int lcore_abort_all(lua_State *L) {
  cs__runtime_abort(cs__runtime_get(L));
  return 0;
}

/* core.poll(fd, "r"|"w"|"rw" [, timeout]) -> "r"|"w"|"rw" | nil, err */
static int lcore_poll(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  const char *ev = luaL_checkstring(L, 2);
  int events = 0;
  for (const char *p = ev; *p; p++)
    events |= *p == 'r' ? CS_POLL_READABLE : *p == 'w' ? CS_POLL_WRITABLE : 0x100;
  if (events == 0 || (events & 0x100))
    return luaL_argerror(L, 2, "\"r\", \"w\" or \"rw\" expected");
  double timeout = luaL_optnumber(L, 3, -1);
  return cs_poll(L, (int)fd, events, timeout < 0 ? -1 : timeout);
}

static const luaL_Reg core_funcs[] = {
    {"abort_all", lcore_abort_all}, {"worker_id", lcore_worker_id},
    {"run", lcore_run},         {"spawn", lcore_spawn},     {"sleep", lcore_sleep},
    {"now", lcore_now},         {"park", lcore_park},       {"wake", lcore_wake},
    {"current", lcore_current}, {"exiting", lcore_exiting}, {"wait_exiting", lcore_wait_exiting}, {"stats", lcore_stats},
    {"log", lcore_log},         {"log_level", lcore_log_level}, {"shutdown", lcore_shutdown},
    {"poll", lcore_poll},       {NULL, NULL}};

int luaopen_coserve_core(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_for(L);
  cs__sched_open(L);
  cs__open_task(L, rt);
  cs__open_conn(L, rt);
  cs__open_server(L, rt);
  lua_createtable(L, 0, 24);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, core_funcs, 1);
  cs__open_net(L, rt); /* connect, resolve, server: into the table on top */
  cs__open_http(L, rt);
  cs__open_wsutil(L);
  cs__open_tls(L, rt);
  cs__open_udp(L, rt);
  cs__open_pg(L, rt); /* libpq's steps, for coserve.pg */
  cs__open_crypto(L); /* digest, hmac, base64, crc32: for coserve.ngx */
  lua_pushliteral(L, CS_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushfstring(L, "%s", uv_version_string());
  lua_setfield(L, -2, "libuv_version");
  return 1;
}
