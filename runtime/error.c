/* The only table of error strings. Connection-level failures read as
 * "closed" whatever the errno, as LuaSocket reports them: a handler cares
 * that the peer is gone, not how it went. */
#include "internal.h"

const char *cs_strerror(int err) {
  switch (err) {
  case UV_ETIMEDOUT:
    return "timeout";
  case UV_ECANCELED:
    return "canceled";
  case CS_ECLOSED:
  case UV_EOF:
  case UV_ECONNRESET:
  case UV_EPIPE:
  case UV_ECONNABORTED:
  case UV_ENOTCONN:
  case UV_EBADF:
    return "closed";
  case CS_ETOOLARGE:
    return "too large";
  case CS_EBUSY:
    return "busy";
  case CS_ERUNTIME:
    return "lua error";
  case UV_ECONNREFUSED:
    return "connection refused";
  case UV_EADDRINUSE:
    return "address already in use";
  case UV_EAI_NONAME:
    return "host not found";
  case UV_EINTR:
    return "interrupted";
  default:
    return uv_strerror(err);
  }
}

int cs__push_error(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushstring(L, cs_strerror(err));
  return 2;
}
