/* The check every server harness makes after a run. */
#ifndef FUZZ_EXPECT_CLEAN_H
#define FUZZ_EXPECT_CLEAN_H

#include <stdio.h>
#include <stdlib.h>

#include <lua.h>

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
