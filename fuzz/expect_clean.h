/* The check every server harness makes after a run. */
#ifndef FUZZ_EXPECT_CLEAN_H
#define FUZZ_EXPECT_CLEAN_H

#include <stdio.h>
#include <stdlib.h>

#include <lua.h>

/* The end of a server harness's Lua run: waits (1 s at most) for every task
 * but the run's own and every connection to end, then raises the failure
 * the run recorded with fail(), if any. Uses the run's locals coserve, core,
 * deadline, tries, failure and fail. */
#define FUZZ_LUA_SETTLE                                                                   \
  "deadline, tries = coserve.now() + 1, 0\n"                                              \
  "while true do\n"                                                                       \
  "  local s = core.stats()\n"                                                            \
  "  if s.tasks == 1 and s.connections == 0 then break end\n"                             \
  "  if coserve.now() > deadline then\n"                                                  \
  "    fail(('left behind: %d task(s), %d connection(s)'):format(s.tasks - 1, s.connections))\n" \
  "    break\n"                                                                           \
  "  end\n"                                                                               \
  "  tries = tries + 1\n"                                                                 \
  "  coserve.sleep(tries < 50 and 0 or 0.001)\n"                                          \
  "end\n"                                                                                 \
  "if failure then error(failure, 0) end\n"

/* Everything the run started has ended and been closed: no task,
 * connection or handle is left (coserve.stats()). A leftover is a finding:
 * it aborts, naming the harness. */
static inline void fuzz_expect_clean(lua_State *L, const char *harness) {
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "coserve");
  if (lua_pcall(L, 1, 1, 0) != 0)
    abort();
  lua_getfield(L, -1, "stats");
  if (lua_pcall(L, 0, 1, 0) != 0)
    abort();
  static const char *const keys[] = {"tasks", "connections", "handles"};
  for (int i = 0; i < 3; i++) {
    lua_getfield(L, -1, keys[i]);
    lua_Number n = lua_tonumber(L, -1);
    if (n != 0) {
      fprintf(stderr, "%s fuzz: after the run, %s = %g (expected 0)\n", harness, keys[i],
              (double)n);
      abort();
    }
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

#endif
