/* The embedding API's error paths (issue 9, coverage): a file that cannot
 * be loaded, a run started from inside a run, a shutdown asked twice, and
 * the messages for coserve's own error codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "check.h"
#include "coserve.h"

/* nested(): calls cs_runtime_run while the runtime is running. */
static int l_nested(lua_State *L) {
  cs_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(1));
  lua_State *main_L = cs_runtime_lua(rt);
  int top = lua_gettop(main_L);
  luaL_loadstring(main_L, "NESTED_RAN = true");
  lua_pushinteger(main_L, 1);
  int rc = cs_runtime_run(rt, 1);
  /* The function and its argument are gone from the stack either way. */
  lua_pushboolean(L, lua_gettop(main_L) == top);
  lua_pushinteger(L, rc);
  lua_pushstring(L, cs_runtime_error(rt));
  return 3;
}

/* shutdown_twice(): the second call closes everything at once. */
static int l_shutdown_twice(lua_State *L) {
  cs_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(1));
  cs_runtime_shutdown(rt, 30);
  cs_runtime_shutdown(rt, 30);
  return 0;
}

static void set_closure(lua_State *L, cs_runtime_t *rt, const char *name, lua_CFunction fn) {
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, fn, 1);
  lua_setglobal(L, name);
}

static int global_is_true(lua_State *L, const char *name) {
  lua_getglobal(L, name);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

int main(void) {
  CHECK(strcmp(cs_strerror(CS_ERUNTIME), "lua error") == 0);
  cs_runtime_free(NULL); /* as free(NULL) */

  cs_runtime_t *rt = cs_runtime_new();
  CHECK(rt != NULL);
  lua_State *L = cs_runtime_lua(rt);

  /* A file that does not exist: a load error, nothing runs. */
  CHECK(cs_runtime_run_file(rt, "/nonexistent/app.lua") == CS_ERUNTIME);
  CHECK(strstr(cs_runtime_error(rt), "cannot open /nonexistent/app.lua") != NULL);
  CHECK(lua_gettop(L) == 0);

  /* A file that does: it runs, with the coserve module at hand. */
  char path[] = "/tmp/coserve-test-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd >= 0) {
    const char *code = "local coserve = require 'coserve'\n"
                       "coserve.sleep(0.001)\n"
                       "FILE_RAN = true\n";
    CHECK(write(fd, code, strlen(code)) == (ssize_t)strlen(code));
    close(fd);
    CHECK(cs_runtime_run_file(rt, path) == 0);
    CHECK(global_is_true(L, "FILE_RAN"));
    unlink(path);
  }

  /* A run from inside a run is refused, and its function popped. */
  set_closure(L, rt, "nested", l_nested);
  CHECK(cs_runtime_run_string(rt,
                              "local clean, rc, err = nested()\n"
                              "assert(clean, 'stack not restored')\n"
                              "NESTED_RC, NESTED_ERR = rc, err\n",
                              "=nested") == 0);
  lua_getglobal(L, "NESTED_RC");
  CHECK(lua_tointeger(L, -1) == CS_ERUNTIME);
  lua_getglobal(L, "NESTED_ERR");
  CHECK(lua_isstring(L, -1) && strstr(lua_tostring(L, -1), "already running") != NULL);
  lua_pop(L, 2);
  CHECK(!global_is_true(L, "NESTED_RAN"));

  /* A shutdown asked twice does not wait for the grace period: the
   * connection held open is closed at once, and the run ends. */
  set_closure(L, rt, "shutdown_twice", l_shutdown_twice);
  CHECK(cs_runtime_run_string(
            rt,
            "local coserve = require 'coserve'\n"
            "local s = coserve.server{ host = '127.0.0.1', port = 0 }\n"
            "s:handle(function(conn) conn:receive() end)\n"
            "local t = coserve.spawn(function() return s:start() end)\n"
            "local c = assert(coserve.connect('127.0.0.1', s.port))\n"
            "c:send('x')\n"
            "coserve.sleep(0.01)\n"
            "local t0 = coserve.now()\n"
            "shutdown_twice()\n"
            "assert(t:join(5))\n"
            "assert(coserve.now() - t0 < 5, 'waited for the grace period')\n"
            "assert(coserve.exiting())\n"
            "local line, err = c:receive()\n"
            "assert(line == nil and err == 'closed', tostring(err))\n"
            "c:close()\n"
            "SHUTDOWN_DONE = true\n",
            "=shutdown") == 0);
  if (!global_is_true(L, "SHUTDOWN_DONE"))
    fprintf(stderr, "%s\n", cs_runtime_error(rt));
  CHECK(global_is_true(L, "SHUTDOWN_DONE"));

  /* Errors in the request path's type checks name the expected type. */
  CHECK(cs_runtime_run_string(rt,
                              "local core = require 'coserve.core'\n"
                              "local ok, err = pcall(function() "
                              "local r = core.conn_methods.send({}, 'x') return r end)\n"
                              "assert(not ok)\n"
                              "assert(err:find('coserve.conn expected, got table', 1, true), err)\n",
                              "=checkudata") == 0);

  cs_runtime_free(rt);
  return DONE("test_runtime_api");
}
