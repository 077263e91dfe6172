/* The runtime: one loop, one Lua state, and the embedding API.
 *
 * A runtime comes to life in one of two ways. A C host calls
 * cs_runtime_new(), which creates the Lua state too and makes
 * `require "coserve"` find the built-in module. Plain LuaJIT (busted, a
 * script) does `require "coserve"`, and the module creates a runtime bound
 * to that state, torn down when the state is closed. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "internal.h"

#define RUNTIME_KEY "coserve.runtime"

static cs_runtime_t *runtime_create(lua_State *L) {
  /* A write to a connection the peer has closed must fail with EPIPE, not
   * kill the process; a host's own SIGPIPE handler is left alone. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  cs_runtime_t *rt = calloc(1, sizeof(*rt));
  if (rt == NULL)
    return NULL;
  if (uv_loop_init(&rt->loop) != 0) {
    free(rt);
    return NULL;
  }
  rt->loop.data = rt;
  rt->L = rt->main_L = L;
  rt->log_level = CS_LOG_INFO;
  rt->next_conn_id = 1;
  rt->notify_fd = -1;
  cs__sched_init(rt);
  uv_timer_init(&rt->loop, &rt->flush_timer);
  uv_unref((uv_handle_t *)&rt->flush_timer);
  rt->flush_timer.data = rt;
  cs__activation_init(rt);
  return rt;
}

static void runtime_close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes whatever is left and frees the runtime. Handles embedded in Lua
 * userdata are only safe to close while the Lua state is still open, so
 * this runs before lua_close() for an owned state. */
static void runtime_destroy(cs_runtime_t *rt) {
  uv_walk(&rt->loop, runtime_close_walk, NULL);
  uv_run(&rt->loop, UV_RUN_DEFAULT);
  uv_loop_close(&rt->loop);
  free(rt->errmsg);
  free(rt);
}

cs_runtime_t *cs__runtime_get(lua_State *L) {
  return (cs_runtime_t *)lua_touserdata(L, lua_upvalueindex(1));
}

void *cs__checkudata(lua_State *L, int idx, const void *mt, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (p && lua_getmetatable(L, idx)) {
    int same = lua_topointer(L, -1) == mt;
    lua_pop(L, 1);
    if (same)
      return p;
  }
  return luaL_checkudata(L, idx, tname); /* raises the usual error */
}

/* The runtime that `require "coserve"` binds to L: the host's if there is
 * one, else a new one owned by a userdata whose __gc frees it. */
static int runtime_gc(lua_State *L) {
  cs_runtime_t **box = lua_touserdata(L, 1);
  if (*box) {
    runtime_destroy(*box);
    *box = NULL;
  }
  return 0;
}

cs_runtime_t *cs__runtime_for(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
  cs_runtime_t *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (rt)
    return rt;
  rt = runtime_create(L);
  if (rt == NULL) {
    luaL_error(L, "coserve: cannot create the runtime (out of memory)");
    return NULL;
  }
  cs_runtime_t **box = lua_newuserdata(L, sizeof(*box));
  *box = rt;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, runtime_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, rt);
  lua_setfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
  return rt;
}

void cs__set_error(cs_runtime_t *rt, const char *msg) {
  char *copy = strdup(msg ? msg : "");
  if (copy == NULL)
    return;
  free(rt->errmsg);
  rt->errmsg = copy;
}

/* ---- running a main coroutine ---- */

/* [-(nargs+1), +1] Runs the function below nargs arguments as the main
 * task and drives the loop. Leaves the main task's box on the stack and
 * returns 1 when it finished (its results are in the box), 0 when the loop
 * ended without it (stopped, or a deadlock). */
int cs__runtime_main(cs_runtime_t *rt, lua_State *L, int nargs) {
  lua_State *saved = rt->L;
  rt->L = L;
  rt->aborting = 0;
  rt->exiting = 0; /* a shutdown ends with the run it happened in */
  cs_task_t *t = cs__task_new(rt, L, nargs, 0);
  t->main = 1;
  int deadlock = cs__loop_run(rt);
  rt->L = saved;
  return t->done && !deadlock;
}

int cs_runtime_run(cs_runtime_t *rt, int nargs) {
  lua_State *L = rt->main_L;
  if (rt->running) {
    lua_pop(L, nargs + 1);
    cs__set_error(rt, "coserve: the runtime is already running");
    return CS_ERUNTIME;
  }
  int top = lua_gettop(L) - nargs - 1;
  int rc = 0;
  rt->stopped = 0;
  if (!cs__runtime_main(rt, L, nargs)) {
    if (rt->stopped) {
      cs__set_error(rt, "stopped");
      rc = UV_ECANCELED;
    } else {
      cs__set_error(rt, "the main coroutine was left waiting with nothing to wake it (deadlock)");
      rc = CS_ERUNTIME;
    }
  } else {
    cs__task_push_results(L);
    if (!lua_toboolean(L, top + 1)) {
      cs__set_error(rt, lua_tostring(L, top + 2));
      rc = CS_ERUNTIME;
    }
  }
  lua_settop(L, top);
  return rc;
}

static int runtime_load_error(cs_runtime_t *rt) {
  cs__set_error(rt, lua_tostring(rt->main_L, -1));
  lua_pop(rt->main_L, 1);
  return CS_ERUNTIME;
}

int cs_runtime_run_file(cs_runtime_t *rt, const char *path) {
  if (luaL_loadfile(rt->main_L, path) != 0)
    return runtime_load_error(rt);
  return cs_runtime_run(rt, 0);
}

int cs_runtime_run_string(cs_runtime_t *rt, const char *code, const char *chunkname) {
  if (luaL_loadbuffer(rt->main_L, code, strlen(code), chunkname) != 0)
    return runtime_load_error(rt);
  return cs_runtime_run(rt, 0);
}

/* ---- the embedding API ---- */

cs_runtime_t *cs_runtime_new(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return NULL;
  luaL_openlibs(L);
  cs_runtime_t *rt = runtime_create(L);
  if (rt == NULL) {
    lua_close(L);
    return NULL;
  }
  rt->owns_L = 1;
  lua_pushlightuserdata(L, rt);
  lua_setfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
  cs__preload_lua(L);
  /* The main task is created before the app requires anything, so the
   * core's metatables must exist already. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "coserve.core");
  if (lua_pcall(L, 1, 0, 0) != 0) {
    lua_pop(L, 1);
    cs_runtime_free(rt);
    return NULL;
  }
  return rt;
}

lua_State *cs_runtime_lua(cs_runtime_t *rt) { return rt->main_L; }

uv_loop_t *cs_runtime_loop(cs_runtime_t *rt) { return &rt->loop; }

const char *cs_runtime_error(cs_runtime_t *rt) { return rt->errmsg ? rt->errmsg : ""; }

void cs_runtime_set_log_level(cs_runtime_t *rt, cs_log_level_t level) { rt->log_level = level; }

void cs_runtime_set_worker(cs_runtime_t *rt, int id) {
  rt->worker_id = id;
  const char *fd = getenv("COSERVE_NOTIFY_FD");
  rt->notify_fd = fd ? atoi(fd) : -1;
}

/* A worker is ready once its app has set itself up: the first time the
 * main task waits (its servers listen by then) or ends. One byte tells the
 * master, which waits for it before retiring the old workers on a reload. */
void cs__runtime_ready(cs_runtime_t *rt) {
  if (rt->notify_fd < 0)
    return;
  ssize_t n = write(rt->notify_fd, "R", 1);
  (void)n;
  close(rt->notify_fd);
  rt->notify_fd = -1;
}

void cs_runtime_shutdown(cs_runtime_t *rt, double grace) {
  if (rt->exiting)
    grace = 0;
  rt->exiting = 1;
  for (cs_server_t *s = rt->servers, *n; s; s = n) {
    n = s->next;
    cs__server_shutdown(s, grace);
  }
  cs__wake_exiting(rt);
}

void cs__runtime_abort(cs_runtime_t *rt) {
  rt->aborting = 1;
  for (cs_server_t *s = rt->servers, *n; s; s = n) {
    n = s->next;
    cs__server_shutdown(s, 0);
  }
  for (cs_task_t *t = rt->tasks; t; t = t->all_next)
    if (t != rt->current)
      cs__task_cancel(t);
}

void cs_runtime_stop(cs_runtime_t *rt) {
  rt->stopped = 1;
  uv_stop(&rt->loop);
}

void cs_runtime_free(cs_runtime_t *rt) {
  if (rt == NULL)
    return;
  if (rt->owns_L) {
    lua_State *L = rt->main_L;
    rt->tearing_down = 1;
    /* Collect what Lua can before the loop goes, then close the handles
     * that are still open while their memory is still valid. */
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
    uv_walk(&rt->loop, runtime_close_walk, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    lua_close(L);
  }
  runtime_destroy(rt);
}
