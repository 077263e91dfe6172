/* Pure matchers: given the bytes buffered so far, is a whole line, count,
 * delimited chunk or frame there? No IO and no allocation, so the C tests
 * can feed them one byte at a time. */
#include <string.h>

#include "internal.h"

static const char *match_mem(const char *hay, size_t n, const char *needle, size_t m) {
  if (m == 0 || n < m)
    return NULL;
  if (m == 1)
    return memchr(hay, needle[0], n);
  return memmem(hay, n, needle, m);
}

static int match_line(const cs_read_t *r, const char *data, size_t len, size_t *take,
                      size_t *skip) {
  const char *nl = memchr(data, '\n', len);
  if (nl == NULL)
    return len > r->max ? CS_ETOOLARGE : 0;
  size_t n = (size_t)(nl - data);
  if (n > r->max)
    return CS_ETOOLARGE;
  *skip = n + 1;
  if (n > 0 && data[n - 1] == '\r')
    n--;
  *take = n;
  return 1;
}

static int match_until(const cs_read_t *r, const char *data, size_t len, size_t *take,
                       size_t *skip) {
  const char *d = match_mem(data, len, r->delim, r->delim_len);
  if (d == NULL)
    return len > r->delim_len && len - r->delim_len > r->max ? CS_ETOOLARGE : 0;
  size_t n = (size_t)(d - data);
  if (n > r->max)
    return CS_ETOOLARGE;
  *skip = n + r->delim_len;
  *take = r->inclusive ? *skip : n;
  return 1;
}

static uint64_t frame_length(const cs_framing_t *f, const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < f->len_size; i++) {
    int k = f->len_big_endian ? i : f->len_size - 1 - i;
    v = (v << 8) | p[k];
  }
  return v;
}

static int match_frame(const cs_read_t *r, const char *data, size_t len, size_t *take,
                       size_t *skip) {
  const cs_framing_t *f = r->framing;
  if (f->kind == CS_FRAME_EOF) {
    const char *d = match_mem(data, len, f->eof, f->eof_len);
    if (d == NULL)
      return len >= r->max ? CS_ETOOLARGE : 0;
    size_t n = (size_t)(d - data) + f->eof_len;
    if (n > r->max)
      return CS_ETOOLARGE;
    *take = *skip = n;
    return 1;
  }
  /* Length framing, as Swoole's open_length_check: the header announces the
   * body's length, and a frame is the header plus the body. */
  size_t hdr = f->len_offset + (size_t)f->len_size;
  if (len < hdr)
    return 0;
  uint64_t body = frame_length(f, (const unsigned char *)data + f->len_offset);
  if (body > r->max || f->body_offset > r->max - body) /* no overflow near SIZE_MAX */
    return CS_ETOOLARGE;
  size_t n = f->body_offset + (size_t)body;
  if (len < n)
    return 0;
  *take = *skip = n;
  return 1;
}

int cs__match(const cs_read_t *r, const char *data, size_t len, int eof, size_t *take,
              size_t *skip) {
  if (len == 0)
    data = ""; /* an empty buffer has no memory; memchr wants some */
  switch (r->kind) {
  case CS_READ_LINE:
    return match_line(r, data, len, take, skip);
  case CS_READ_ALL:
    if (len > r->max)
      return CS_ETOOLARGE;
    if (!eof)
      return 0;
    *take = *skip = len;
    return 1;
  case CS_READ_BYTES:
    if (r->n > r->max)
      return CS_ETOOLARGE; /* known at once: no need to buffer toward it */
    if (len < r->n)
      return 0;
    *take = *skip = r->n;
    return 1;
  case CS_READ_ANY:
    if (len == 0)
      return 0;
    *take = *skip = len < r->n ? len : r->n;
    return 1;
  case CS_READ_UNTIL:
    return match_until(r, data, len, take, skip);
  case CS_READ_FRAME:
    return match_frame(r, data, len, take, skip);
  case CS_READ_HANDSHAKE:
    return 0; /* no data to match: the stream layer decides */
  }
  return 0;
}
