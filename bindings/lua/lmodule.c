/* Entry points: `require "coserve"` from plain LuaJIT finds coserve.so and
 * calls luaopen_coserve, which registers every built-in module in
 * package.preload and then loads the coserve module itself. An embedding
 * host gets the same preloads from cs_runtime_new(). */
#include <string.h>

#include "internal.h"

struct cs_lua_module {
  const char *name, *chunk, *code;
  size_t size;
};
extern const struct cs_lua_module cs__lua_modules[];

/* package.preload loader: upvalue 1 is the module's index. */
static int load_embedded(lua_State *L) {
  const struct cs_lua_module *m = &cs__lua_modules[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbuffer(L, m->code, m->size, m->chunk) != 0)
    return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

void cs__preload_lua(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_coserve_core);
  lua_setfield(L, -2, "coserve.core");
  lua_pushcfunction(L, luaopen_coserve_alog);
  lua_setfield(L, -2, "coserve.alog");
  for (int i = 0; cs__lua_modules[i].name; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, cs__lua_modules[i].name);
  }
  lua_pop(L, 2);
}

/* We are inside require(name) already: run the embedded chunk directly. */
static int require_module(lua_State *L, const char *name) {
  cs__preload_lua(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_getfield(L, -1, name);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  return 1;
}

int luaopen_coserve(lua_State *L) { return require_module(L, "coserve"); }
int luaopen_coserve_testing(lua_State *L) { return require_module(L, "coserve.testing"); }
int luaopen_coserve_http(lua_State *L) { return require_module(L, "coserve.http"); }
int luaopen_coserve_websocket(lua_State *L) { return require_module(L, "coserve.websocket"); }
int luaopen_coserve_ngx(lua_State *L) { return require_module(L, "coserve.ngx"); }
