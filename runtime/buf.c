/* Growable byte buffer. Reads land in the runtime's shared scratch area
 * first; a connection only owns memory while it holds unconsumed bytes, so
 * an idle connection costs no buffer at all. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void cs__buf_free(cs_buf_t *b) {
  if (b->cap > 0)
    free(b->base);
  b->base = NULL;
  b->off = b->len = b->cap = 0;
}

/* Makes room for `extra` more bytes after the live ones, moving them to
 * the front or growing geometrically. A borrowed buffer becomes owned. */
int cs__buf_reserve(cs_buf_t *b, size_t extra) {
  if (b->cap > 0 && b->off + b->len + extra <= b->cap)
    return 0;
  if (b->cap > 0 && b->len + extra <= b->cap) {
    memmove(b->base, b->base + b->off, b->len);
    b->off = 0;
    return 0;
  }
  size_t cap = b->cap > 0 ? b->cap : 4096;
  while (cap < b->len + extra)
    cap *= 2;
  char *p = malloc(cap);
  if (p == NULL)
    return UV_ENOMEM;
  if (b->len > 0)
    memcpy(p, b->base + b->off, b->len);
  if (b->cap > 0)
    free(b->base);
  b->base = p;
  b->off = 0;
  b->cap = cap;
  return 0;
}

/* Copies a borrowed buffer's live bytes into memory of its own. */
int cs__buf_own(cs_buf_t *b) {
  if (b->cap > 0)
    return 0;
  if (b->len == 0) {
    b->base = NULL;
    b->off = 0;
    return 0;
  }
  return cs__buf_reserve(b, 0);
}

/* Drops n bytes from the front; an owned buffer that empties is freed. */
void cs__buf_consume(cs_buf_t *b, size_t n) {
  b->off += n;
  b->len -= n;
  if (b->len == 0) {
    cs__buf_free(b);
  }
}
