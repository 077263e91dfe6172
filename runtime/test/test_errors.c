/* Every error code the Lua surface can return has its documented string. */
#include <string.h>

#include "check.h"
#include "internal.h"

int main(void) {
  CHECK(strcmp(cs_strerror(UV_ETIMEDOUT), "timeout") == 0);
  CHECK(strcmp(cs_strerror(UV_ECANCELED), "canceled") == 0);
  CHECK(strcmp(cs_strerror(CS_ECLOSED), "closed") == 0);
  CHECK(strcmp(cs_strerror(UV_EOF), "closed") == 0);
  CHECK(strcmp(cs_strerror(UV_ECONNRESET), "closed") == 0);
  CHECK(strcmp(cs_strerror(UV_EPIPE), "closed") == 0);
  CHECK(strcmp(cs_strerror(CS_ETOOLARGE), "too large") == 0);
  CHECK(strcmp(cs_strerror(CS_EBUSY), "busy") == 0);
  CHECK(strcmp(cs_strerror(UV_ECONNREFUSED), "connection refused") == 0);
  CHECK(strcmp(cs_strerror(UV_EADDRINUSE), "address already in use") == 0);
  CHECK(strcmp(cs_strerror(UV_EAI_NONAME), "host not found") == 0);
  CHECK(strcmp(cs_strerror(UV_EINTR), "interrupted") == 0);
  CHECK(strcmp(cs_strerror(UV_ENOMEM), uv_strerror(UV_ENOMEM)) == 0);
  return DONE("test_errors");
}
