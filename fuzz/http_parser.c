/* libFuzzer harness for the llhttp glue (runtime/http.c), driven through
 * its Lua surface exactly as coserve/http.lua drives it: parser:head() on
 * a head through its blank line, then parser:body() on the bytes after it,
 * fed in pieces whose sizes come from the input, keeping the unused tail
 * for the next (pipelined) message. Every result is checked for shape and
 * for the invariants the server relies on; a violation abort()s. The same
 * input then goes through a response parser, with no_body false and true.
 * Built and run by fuzz/run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "coserve.h"

#define MAX_MESSAGES 8 /* pipelined messages followed per input and parser */
#define MAX_HEADERS_LIST 256 /* 2 * HTTP_MAX_HEADERS in runtime/http.c */

static lua_State *L;
static int request_ref, response_ref;
static unsigned long runs;

#define CHECK(cond, ...)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "http_parser fuzz: invariant failed: %s: ", #cond);              \
      fprintf(stderr, __VA_ARGS__);                                                      \
      fputc('\n', stderr);                                                               \
      abort();                                                                           \
    }                                                                                    \
  } while (0)

/* xorshift, seeded from the input: the piece sizes are a function of it. */
static uint64_t rng_state;
static uint64_t rng(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h ? h : 1;
}

/* Where the head ends: through the first "\r\n\r\n", else everything. */
static size_t head_length(const uint8_t *p, size_t n) {
  for (size_t i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0)
      return i + 4;
  return n;
}

static int pcall(int nargs, int nres, const char *what) {
  if (lua_pcall(L, nargs, nres, 0) != 0) {
    fprintf(stderr, "http_parser fuzz: %s raised: %s\n", what, lua_tostring(L, -1));
    abort();
  }
  return 0;
}

/* [-0, +1] pushes field k of the table at idx and checks its type. */
static void field(int idx, const char *k, int type) {
  lua_getfield(L, idx, k);
  CHECK(lua_type(L, -1) == type, "field '%s' is a %s", k, luaL_typename(L, -1));
}

/* Checks a message table from head(); returns its body kind. */
static const char *check_msg(int m, int request, int no_body) {
  field(m, "headers", LUA_TTABLE);
  int hl = lua_gettop(L);
  int n = (int)lua_objlen(L, hl);
  CHECK(n <= MAX_HEADERS_LIST, "%d header entries", n);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, hl, i);
    CHECK(lua_type(L, -1) == LUA_TSTRING, "header entry %d is a %s", i, luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (request) {
    field(m, "method", LUA_TSTRING);
    field(m, "url", LUA_TSTRING);
    lua_pop(L, 2);
  } else {
    field(m, "status", LUA_TNUMBER);
    lua_Number st = lua_tonumber(L, -1);
    CHECK(st >= 0 && st <= 999 && st == (lua_Number)(int)st, "status %g", (double)st);
    field(m, "reason", LUA_TSTRING);
    lua_pop(L, 2);
  }
  field(m, "version", LUA_TSTRING);
  field(m, "keep_alive", LUA_TBOOLEAN);
  lua_pop(L, 2);
  field(m, "body", LUA_TSTRING);
  const char *body = lua_tostring(L, -1);
  lua_pop(L, 1); /* still referenced by the message table */
  CHECK(!strcmp(body, "none") || !strcmp(body, "length") || !strcmp(body, "chunked") ||
            !strcmp(body, "eof"),
        "body kind '%s'", body);
  if (no_body)
    CHECK(!strcmp(body, "none"), "no_body but body kind '%s'", body);
  lua_getfield(L, m, "length");
  if (!lua_isnil(L, -1)) {
    CHECK(lua_type(L, -1) == LUA_TNUMBER, "length is a %s", luaL_typename(L, -1));
    lua_Number len = lua_tonumber(L, -1);
    CHECK(len >= 0, "length %g", (double)len);
    if (!strcmp(body, "length"))
      CHECK(len > 0, "body 'length' with length %g", (double)len);
  } else {
    CHECK(strcmp(body, "length") != 0, "body 'length' without a length");
  }
  lua_pop(L, 1);
  return body;
}

/* parser:body(bytes) -> data, used, complete | nil, reason. Returns -1
 * after an error, else used; sets *complete and adds to *got. */
static long feed_body(int parser, const char *p, size_t n, int *complete, double *got) {
  lua_getfield(L, parser, "body");
  lua_pushvalue(L, parser);
  lua_pushlstring(L, p, n);
  pcall(2, 3, "parser:body");
  if (lua_isnil(L, -3)) {
    CHECK(lua_type(L, -2) == LUA_TSTRING, "body() error reason is a %s", luaL_typename(L, -2));
    lua_pop(L, 3);
    return -1;
  }
  CHECK(lua_type(L, -3) == LUA_TSTRING, "body() data is a %s", luaL_typename(L, -3));
  CHECK(lua_type(L, -2) == LUA_TNUMBER, "body() used is a %s", luaL_typename(L, -2));
  CHECK(lua_type(L, -1) == LUA_TBOOLEAN, "body() complete is a %s", luaL_typename(L, -1));
  size_t dlen = lua_objlen(L, -3);
  lua_Number used = lua_tonumber(L, -2);
  *complete = lua_toboolean(L, -1);
  CHECK(used >= 0, "used %g", (double)used);
  CHECK(used == (lua_Number)(size_t)used, "used %g is not whole", (double)used);
  CHECK(used <= (lua_Number)n, "used %g of a %zu-byte piece", (double)used, n);
  /* Only the end of the message stops llhttp short of the piece's end. */
  CHECK(*complete || used == (lua_Number)n, "used %g of %zu but not complete", (double)used, n);
  /* Framing is removed, never added: data comes from the used bytes. */
  CHECK(dlen <= (size_t)used, "%zu data bytes from %g used", dlen, (double)used);
  *got += (double)dlen;
  lua_pop(L, 3);
  return (long)used;
}

/* Runs one parser over the input as the server would: heads through their
 * blank line, bodies in pieces, pipelined messages one after the other. */
static void run_parser(int ref, int request, int no_body, const uint8_t *data, size_t size) {
  int base = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  int parser = lua_gettop(L);
  size_t pos = 0;
  for (int msgs = 0; msgs < MAX_MESSAGES && pos < size; msgs++) {
    size_t hlen = head_length(data + pos, size - pos);
    lua_getfield(L, parser, "head");
    lua_pushvalue(L, parser);
    lua_pushlstring(L, (const char *)data + pos, hlen);
    lua_pushboolean(L, no_body);
    pcall(3, 2, "parser:head");
    pos += hlen;
    if (lua_isnil(L, -2)) {
      CHECK(lua_type(L, -1) == LUA_TSTRING, "head() error reason is a %s",
            luaL_typename(L, -1));
      break;
    }
    CHECK(lua_type(L, -2) == LUA_TTABLE, "head() returned a %s", luaL_typename(L, -2));
    lua_pop(L, 1);
    int m = lua_gettop(L);
    const char *kind = check_msg(m, request, no_body);
    if (!strcmp(kind, "none")) {
      lua_settop(L, parser);
      continue;
    }
    lua_getfield(L, m, "length");
    double length = lua_isnil(L, -1) ? -1 : lua_tonumber(L, -1);
    lua_pop(L, 1);
    int is_eof = !strcmp(kind, "eof"), is_length = !strcmp(kind, "length");
    int framed = !is_eof; /* the body's end is in its bytes, not the close */
    /* Piece sizes: whole, byte by byte, or small random ones. */
    unsigned mode = (unsigned)(rng() % 4);
    int complete = 0, failed = 0;
    double got = 0;
    size_t body_start = pos;
    while (pos < size && !complete) {
      size_t left = size - pos, n;
      if (mode == 0)
        n = left;
      else if (mode == 1)
        n = 1;
      else
        n = 1 + (size_t)(rng() % (mode == 2 ? 8 : 64));
      if (n > left)
        n = left;
      long used = feed_body(parser, (const char *)data + pos, n, &complete, &got);
      if (used < 0) {
        failed = 1;
        break;
      }
      pos += (size_t)used;
    }
    if (!complete && !failed && (is_eof || rng() % 2 == 0)) {
      /* The peer closed: "" ends an eof body; an unfinished length or
       * chunked body is an error (or, for llhttp, maybe not: no check). */
      long used = feed_body(parser, "", 0, &complete, &got);
      if (used >= 0)
        CHECK(used == 0, "used %ld of an empty piece", used);
      if (is_eof)
        CHECK(used == 0 && complete, "an eof body did not end at the close");
    }
    /* A length or chunked body cannot end before its first byte. */
    if (framed && complete)
      CHECK(pos > body_start, "a %s body complete with no byte used", kind);
    if (is_length) {
      CHECK(got <= length, "%g body bytes for content-length %g", got, length);
      if (complete)
        CHECK(got == length, "complete with %g body bytes for content-length %g", got, length);
    }
    lua_settop(L, parser);
    if (!complete)
      break;
  }
  lua_settop(L, base);
}

/* The runtime luaopen_coserve_core created is owned by the Lua state,
 * which LeakSanitizer cannot look into: closing it at exit frees both. */
static void close_state(void) {
  if (L)
    lua_close(L);
  L = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  if (L == NULL)
    abort();
  luaL_openlibs(L);
  atexit(close_state);
  lua_pushcfunction(L, luaopen_coserve_core);
  pcall(0, 1, "luaopen_coserve_core");
  /* The core table stays on the stack (slot 1) for the whole run. */
  const char *kinds[] = {"request", "response"};
  int *refs[] = {&request_ref, &response_ref};
  for (int i = 0; i < 2; i++) {
    lua_getfield(L, 1, "http_parser");
    lua_pushstring(L, kinds[i]);
    pcall(1, 1, "core.http_parser");
    CHECK(lua_type(L, -1) == LUA_TUSERDATA, "http_parser returned a %s", luaL_typename(L, -1));
    *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int top = lua_gettop(L);
  rng_state = fnv1a(data, size);
  run_parser(request_ref, 1, 0, data, size);
  run_parser(response_ref, 0, 0, data, size);
  run_parser(response_ref, 0, 1, data, size);
  CHECK(lua_gettop(L) == top, "stack %d, was %d", lua_gettop(L), top);
  lua_settop(L, top);
  if (++runs % 64 == 0)
    lua_gc(L, LUA_GCSTEP, 64);
  return 0;
}
