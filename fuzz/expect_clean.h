/* What the server harnesses share: the check after a run, the end of their
 * Lua runs, SIGPIPE as a finding, and a half-close under a connection. */
#ifndef FUZZ_EXPECT_CLEAN_H
#define FUZZ_EXPECT_CLEAN_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "coserve.h"
#include "internal.h" /* for the fd under a conn, to half-close it */

/* A SIGPIPE handler for harness NAME (a string literal): coserve must not
 * let a write to a closed socket kill the process, so one is a finding. */
#define FUZZ_ON_SIGPIPE(name)                                                                      \
  static void on_sigpipe(int sig) {                                                                \
    (void)sig;                                                                                     \
    static const char msg[] = name " fuzz: SIGPIPE: coserve wrote to a socket its "                \
                                   "peer had closed, and left SIGPIPE to kill the process\n";      \
    if (write(2, msg, sizeof msg - 1) < 0) {                                                       \
    }                                                                                              \
    abort();                                                                                       \
  }

/* fuzz_halfclose(conn): shutdown(SHUT_WR) on the connection's socket,
 * which coserve's API does not offer: the server sees the end of the
 * request stream but can still answer. */
static inline int fuzz_l_halfclose(lua_State *L) {
  cs_connbox_t *box = luaL_checkudata(L, 1, CS_CONN_MT);
  uv_os_fd_t fd;
  if (box->c == NULL || uv_fileno(&box->c->u.handle, &fd) != 0)
    return 0;
  shutdown(fd, SHUT_WR);
  return 0;
}

/* The end of a server harness's Lua run: waits (1 s at most) for every task
 * but the run's own and every connection to end, then raises the failure
 * the run recorded with fail(), if any. Uses the run's locals coserve, core,
 * deadline, tries, failure and fail. */
#define FUZZ_LUA_SETTLE                                                                            \
  "deadline, tries = coserve.now() + 1, 0\n"                                                       \
  "while true do\n"                                                                                \
  "  local s = core.stats()\n"                                                                     \
  "  if s.tasks == 1 and s.connections == 0 then break end\n"                                      \
  "  if coserve.now() > deadline then\n"                                                           \
  "    fail(('left behind: %d task(s), %d connection(s)'):format(s.tasks - 1, s.connections))\n"   \
  "    break\n"                                                                                    \
  "  end\n"                                                                                        \
  "  tries = tries + 1\n"                                                                          \
  "  coserve.sleep(tries < 50 and 0 or 0.001)\n"                                                   \
  "end\n"                                                                                          \
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
