/* Non-blocking name resolution on libuv's thread pool. A lookup cannot be
 * withdrawn once started, so its request outlives a timed-out or canceled
 * caller and is freed by its own callback. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
  uv_getaddrinfo_t req;
  cs_wait_t wait;
  cs_task_t *task; /* NULL once the caller has given up */
} dns_req_t;

static int dns_abort(cs_wait_t *w, lua_State *co, int err) {
  dns_req_t *d = (dns_req_t *)((char *)w - offsetof(dns_req_t, wait));
  d->task = NULL;
  return cs__push_error(co, err);
}

int cs__addr_name(const struct sockaddr *sa, char *ip, size_t size) {
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(a, ip, size);
    return ntohs(a->sin6_port);
  }
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    uv_ip4_name(a, ip, size);
    return ntohs(a->sin_port);
  }
  if (size > 0)
    ip[0] = '\0';
  return -1;
}

/* [-0, +1] pushes the addresses of res, each once, in resolver order. */
static void push_addresses(lua_State *L, const struct addrinfo *res) {
  lua_newtable(L);
  int n = 0;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    char ip[64];
    if (cs__addr_name(ai->ai_addr, ip, sizeof ip) < 0)
      continue;
    int seen = 0;
    for (int i = 1; i <= n && !seen; i++) {
      lua_rawgeti(L, -1, i);
      seen = strcmp(lua_tostring(L, -1), ip) == 0;
      lua_pop(L, 1);
    }
    if (!seen) {
      lua_pushstring(L, ip);
      lua_rawseti(L, -2, ++n);
    }
  }
}

static void dns_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dns_req_t *d = req->data;
  cs_task_t *t = d->task;
  if (t) {
    if (status == 0) {
      push_addresses(t->co, res);
      cs__wake(t, 1);
    } else {
      cs__wake(t, cs__push_error(t->co, status));
    }
  }
  uv_freeaddrinfo(res);
  free(d);
}

int cs__resolve(lua_State *L, const char *host, int family) {
  cs_task_t *t = cs__task_current(L, "coserve.resolve");
  dns_req_t *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return cs__push_error(L, UV_ENOMEM);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  d->req.data = d;
  d->wait.abort = dns_abort;
  d->task = t;
  int rc = uv_getaddrinfo(&t->rt->loop, &d->req, dns_cb, host, NULL, &hints);
  if (rc != 0) {
    free(d);
    return cs__push_error(L, rc);
  }
  return cs__park(L, t, &d->wait, -1);
}
