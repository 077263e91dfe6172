/* A host written only against coserve.h can run Lua, get errors back as
 * messages, and run again on the same runtime. */
#include <string.h>

#include <lauxlib.h>

#include "check.h"
#include "coserve.h"

static int l_twice(lua_State *L) {
  lua_pushinteger(L, luaL_checkinteger(L, 1) * 2);
  return 1;
}

static int l_stop(lua_State *L) {
  cs_runtime_stop(lua_touserdata(L, lua_upvalueindex(1)));
  return 0;
}

int main(void) {
  cs_runtime_t *rt = cs_runtime_new();
  CHECK(rt != NULL);
  lua_State *L = cs_runtime_lua(rt);
  CHECK(L != NULL && cs_runtime_loop(rt) != NULL);
  lua_register(L, "twice", l_twice);

  /* A C function, a sleep and a spawned task inside one run. */
  CHECK(cs_runtime_run_string(rt,
                              "local coserve = require 'coserve'\n"
                              "local t = coserve.spawn(function() coserve.sleep(0.01) "
                              "return twice(21) end)\n"
                              "local ok, v = t:join()\n"
                              "assert(ok and v == 42)\n"
                              "RESULT = v\n",
                              "=test") == 0);
  lua_getglobal(L, "RESULT");
  CHECK(lua_tointeger(L, -1) == 42);
  lua_pop(L, 1);

  /* A runtime error comes back as a message with a traceback. */
  CHECK(cs_runtime_run_string(rt, "error('boom')", "=bad") == CS_ERUNTIME);
  CHECK(strstr(cs_runtime_error(rt), "bad:1: boom") != NULL);
  CHECK(strstr(cs_runtime_error(rt), "stack traceback") != NULL);

  /* A syntax error is reported without running anything. */
  CHECK(cs_runtime_run_string(rt, "this is not lua", "=syntax") == CS_ERUNTIME);
  CHECK(strstr(cs_runtime_error(rt), "syntax") != NULL);

  /* cs_runtime_run with arguments on the stack. */
  luaL_loadstring(L, "local a, b = ... ; RESULT = a + b");
  lua_pushinteger(L, 2);
  lua_pushinteger(L, 3);
  CHECK(cs_runtime_run(rt, 2) == 0);
  lua_getglobal(L, "RESULT");
  CHECK(lua_tointeger(L, -1) == 5);
  lua_pop(L, 1);
  CHECK(lua_gettop(L) == 0);

  /* cs_runtime_stop() makes the run return UV_ECANCELED, "stopped" (it
   * used to report a deadlock); what was parked goes on at the next run. */
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, l_stop, 1);
  lua_setglobal(L, "stop_now");
  CHECK(cs_runtime_run_string(rt,
                              "local coserve = require 'coserve'\n"
                              "coserve.spawn(function() coserve.sleep(0.02) LATE = true end)\n"
                              "stop_now()\n"
                              "coserve.sleep(0.01)\n",
                              "=stop") == UV_ECANCELED);
  CHECK(strcmp(cs_runtime_error(rt), "stopped") == 0);
  CHECK(cs_runtime_run_string(rt, "require('coserve').sleep(0.05)", "=after") == 0);
  lua_getglobal(L, "LATE");
  CHECK(lua_toboolean(L, -1));
  lua_pop(L, 1);

  cs_runtime_free(rt);
  return DONE("test_embed");
}
