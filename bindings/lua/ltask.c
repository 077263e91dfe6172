/* Task objects: join and cancel. */
#include "internal.h"

/* task:join([timeout]) -> true, results... | false, err */
static int ltask_join(lua_State *L) {
  cs_task_t *t = luaL_checkudata(L, 1, CS_TASK_MT);
  double timeout = luaL_optnumber(L, 2, -1);
  if (t->done) {
    lua_settop(L, 1);
    return cs__task_push_results(L);
  }
  cs_task_t *self = cs__task_current(L, "join");
  if (self == t)
    return luaL_error(L, "join: a task cannot join itself");
  self->joinee = t;
  self->jnext = t->joiners;
  t->joiners = self;
  return cs__park(L, self, &self->jwait, timeout);
}

/* task:cancel(): its current or next wait returns nil, "canceled", and so
 * does every wait after that, so that it unwinds. */
static int ltask_cancel(lua_State *L) {
  cs__task_cancel(luaL_checkudata(L, 1, CS_TASK_MT));
  return 0;
}

/* task:done() -> whether it has finished. */
static int ltask_done(lua_State *L) {
  cs_task_t *t = luaL_checkudata(L, 1, CS_TASK_MT);
  lua_pushboolean(L, t->done);
  return 1;
}

static int ltask_tostring(lua_State *L) {
  cs_task_t *t = luaL_checkudata(L, 1, CS_TASK_MT);
  lua_pushfstring(L, "coserve.task (%s): %p",
                  t->done ? "done" : t->wait ? "parked" : "ready", (void *)t);
  return 1;
}

static const luaL_Reg task_methods[] = {
    {"join", ltask_join}, {"cancel", ltask_cancel}, {"done", ltask_done}, {NULL, NULL}};

void cs__open_task(lua_State *L, cs_runtime_t *rt) {
  luaL_newmetatable(L, CS_TASK_MT);
  lua_createtable(L, 0, 4);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, task_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ltask_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
