/* A host program that embeds coserve through coserve.h alone: it registers
 * a C function and serves a Lua handler that calls it.
 *
 *   embed_host [port]     (port 0 picks one; the bound port is printed)
 *
 * Each line a client sends comes back upper-cased by the C function; the
 * line "quit" stops the server and the program. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "coserve.h"

/* shout(s) -> s in upper case: the C side of the app. */
static int l_shout(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len; i++)
    luaL_addchar(&b, (char)toupper((unsigned char)s[i]));
  luaL_pushresult(&b);
  return 1;
}

static const char app[] =
    "local coserve = require 'coserve'\n"
    "local server = coserve.server{ host = '127.0.0.1', port = PORT }\n"
    "server:handle(function(conn)\n"
    "  for line in function() return conn:receive() end do\n"
    "    if line == 'quit' then server:shutdown() break end\n"
    "    conn:send(shout(line) .. '\\n')\n"
    "  end\n"
    "end)\n"
    "coserve.spawn(function() assert(server:start()) end)\n"
    "print('listening on ' .. server.port)\n"
    "io.stdout:flush()\n";

int main(int argc, char **argv) {
  cs_runtime_t *rt = cs_runtime_new();
  if (rt == NULL)
    return 1;
  lua_State *L = cs_runtime_lua(rt);
  lua_register(L, "shout", l_shout);
  lua_pushinteger(L, argc > 1 ? atoi(argv[1]) : 0);
  lua_setglobal(L, "PORT");
  int rc = cs_runtime_run_string(rt, app, "=host");
  if (rc < 0)
    fprintf(stderr, "embed_host: %s\n", cs_runtime_error(rt));
  cs_runtime_free(rt);
  return rc < 0 ? 1 : 0;
}
