/* A host written only against coserve.h can run Lua, get errors back as
 * messages, and run again on the same runtime. */
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "check.h"
#include "coserve.h"

static int l_twice(lua_State *L) {
  lua_pushinteger(L, luaL_checkinteger(L, 1) * 2);
  return 1;
}

/* A binding in the shape of a non-blocking C library's: one function that
 * tries (read), one that waits (cs_poll as the tail return); the loop
 * around them is Lua's. */
static int l_try_read(lua_State *L) {
  char buf[64];
  ssize_t n = read((int)luaL_checkinteger(L, 1), buf, sizeof buf);
  if (n < 0)
    return 0;
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int l_wait_readable(lua_State *L) {
  return cs_poll(L, (int)luaL_checkinteger(L, 1), CS_POLL_READABLE, luaL_optnumber(L, 2, -1));
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

  /* cs_poll: a C function parks its coroutine until a descriptor is
   * readable (spec/poll_spec.lua shows others run meanwhile); a timeout
   * returns nil, "timeout". */
  int fds[2];
  CHECK(pipe(fds) == 0);
  lua_register(L, "try_read", l_try_read);
  lua_register(L, "wait_readable", l_wait_readable);
  lua_pushinteger(L, fds[0]);
  lua_setglobal(L, "RFD");
  lua_pushinteger(L, fds[1]);
  lua_setglobal(L, "WFD");
  CHECK(cs_runtime_run_string(rt,
                              "local ok, err = wait_readable(RFD, 0.02)\n"
                              "assert(ok == nil and err == 'timeout', err)\n",
                              "=poll-timeout") == 0);
  CHECK(write(fds[1], "ping", 4) == 4);
  CHECK(cs_runtime_run_string(rt,
                              "local r = wait_readable(RFD, 5)\n"
                              "assert(r == 'r', tostring(r))\n"
                              "POLL_RESULT = try_read(RFD)\n",
                              "=poll") == 0);
  lua_getglobal(L, "POLL_RESULT");
  CHECK(strcmp(lua_tostring(L, -1), "ping") == 0);
  lua_pop(L, 1);
  close(fds[0]);
  close(fds[1]);

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
