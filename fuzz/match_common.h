/* Shared by the matcher harnesses (fuzz/match_frame.c, fuzz/match_read.c):
 * feeding a byte stream to cs__match the way runtime/stream.c does, in
 * pieces, and recording what it hands out, so that a harness can compare
 * the same stream delivered whole, byte by byte and cut at random points
 * against a reference written independently of runtime/match.c.
 *
 * The feeding copies stream.c's buffer discipline: a piece that arrives
 * on an empty buffer lands in a borrowed area (here an allocation of
 * exactly the piece's size, so AddressSanitizer sees any read past the
 * bytes that arrived), is matched in place, and what is left is made
 * owned with cs__buf_own; a piece that arrives on a non-empty buffer is
 * appended after cs__buf_reserve. Each match is consumed with
 * cs__buf_consume, as a reader does. */
#ifndef CS_FUZZ_MATCH_COMMON_H
#define CS_FUZZ_MATCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FZ_CHECK(cond, ...)                                                              \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s fuzz: invariant failed: %s: ", FZ_NAME, #cond);              \
      fprintf(stderr, __VA_ARGS__);                                                      \
      fputc('\n', stderr);                                                               \
      abort();                                                                           \
    }                                                                                    \
  } while (0)

/* One result of a read: a match (rc 1) at stream offset pos, or the final
 * state (rc 0: waiting for more, rc < 0: an error that ends the stream). */
typedef struct {
  int rc;
  int op;      /* which read of the program asked */
  size_t pos;  /* stream offset of the match */
  size_t take;
  size_t skip;
} fz_result_t;

typedef struct {
  fz_result_t *v;
  size_t n, cap;
} fz_log_t;

static void fz_log_add(fz_log_t *l, fz_result_t r) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 64;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
    if (l->v == NULL)
      abort();
  }
  l->v[l->n++] = r;
}

static void fz_log_print(const char *what, const fz_log_t *l) {
  fprintf(stderr, "%s (%zu results):\n", what, l->n);
  for (size_t i = 0; i < l->n && i < 40; i++)
    fprintf(stderr, "  op %d rc %d pos %zu take %zu skip %zu\n", l->v[i].op, l->v[i].rc,
            l->v[i].pos, l->v[i].take, l->v[i].skip);
}

static int fz_log_equal(const fz_log_t *a, const fz_log_t *b) {
  if (a->n != b->n)
    return 0;
  for (size_t i = 0; i < a->n; i++) {
    const fz_result_t *x = &a->v[i], *y = &b->v[i];
    if (x->rc != y->rc || x->op != y->op || x->pos != y->pos ||
        (x->rc == 1 && (x->take != y->take || x->skip != y->skip)))
      return 0;
  }
  return 1;
}

/* The reads a harness makes, in turn (a connection's handler alternating
 * receive("*l"), receive(n), a receiveuntil reader, ...). */
#define FZ_MAX_OPS 4
typedef struct {
  cs_read_t ops[FZ_MAX_OPS];
  int nops;
} fz_program_t;

/* max_frame from one input byte: small limits (where the edges are),
 * a few KiB, and the largest a Lua number sets (2^64 - 2048, the largest
 * double below 2^64, as coserve.server{max_frame = ...} converts it). */
static size_t fz_max(uint8_t b) {
  if (b < 160)
    return (size_t)b + 1;
  if (b < 250)
    return (size_t)(b - 159) * 64;
  if (b < 254)
    return (size_t)1 << (40 + b - 250);
  return b == 254 ? (size_t)1 << 63 : (size_t)-1 - 2047;
}

/* xorshift, seeded from the input: cut points are a function of it. */
static uint64_t fz_rng_state;
static uint64_t fz_rng(void) {
  uint64_t x = fz_rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return fz_rng_state = x;
}

static uint64_t fz_fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h ? h : 1;
}

/* Runs the program over the buffered bytes until a read needs more (or
 * fails). *op is the read in turn, *pos the stream offset of the buffer's
 * first byte. Returns 0 to go on, 1 when the stream is over for this
 * reader (an error, or a match that consumed nothing: "*a" at EOF). */
static int fz_drain(const fz_program_t *p, cs_buf_t *b, const uint8_t *stream, int eof,
                    int *op, size_t *pos, fz_log_t *log) {
  for (;;) {
    const cs_read_t *r = &p->ops[*op];
    size_t take = (size_t)-1, skip = (size_t)-1;
    int rc = cs__match(r, cs__buf_data(b), b->len, eof, &take, &skip);
    FZ_CHECK(rc == 1 || rc == 0 || rc == CS_ETOOLARGE, "cs__match returned %d", rc);
    if (rc != 1) {
      if (rc < 0) {
        fz_log_add(log, (fz_result_t){rc, *op, *pos, 0, 0});
        return 1;
      }
      return 0;
    }
    FZ_CHECK(take <= skip && skip <= b->len, "take %zu skip %zu buffered %zu", take, skip,
             b->len);
    /* The buffer holds the stream's bytes at pos, in order. */
    FZ_CHECK(memcmp(cs__buf_data(b), stream + *pos, b->len) == 0,
             "the buffer lost the stream's bytes at %zu", *pos);
    fz_log_add(log, (fz_result_t){1, *op, *pos, take, skip});
    if (skip == 0)
      return 1;
    cs__buf_consume(b, skip);
    *pos += skip;
    *op = (*op + 1) % p->nops;
  }
}

/* Feeds stream[0, len) in pieces ending at cuts[0] < cuts[1] < ... < len
 * (ncuts of them, the last one len), then, when eof is set, reports the
 * end of the stream. Appends every result, then the final state, to log. */
static void fz_feed(const fz_program_t *p, const uint8_t *stream, size_t len,
                    const size_t *cuts, size_t ncuts, int eof, fz_log_t *log) {
  cs_buf_t b = {0};
  int op = 0, over = 0;
  size_t pos = 0, prev = 0;
  /* A read tries the buffer before waiting, empty as it is. */
  over = fz_drain(p, &b, stream, 0, &op, &pos, log);
  for (size_t i = 0; i < ncuts && !over; i++) {
    size_t piece = cuts[i] - prev;
    char *scratch = NULL;
    if (b.len == 0) {
      /* A read into the borrowed area: exactly the bytes that came. */
      cs__buf_free(&b);
      scratch = malloc(piece ? piece : 1);
      if (scratch == NULL)
        abort();
      memcpy(scratch, stream + prev, piece);
      b.base = scratch;
      b.off = 0;
      b.len = piece;
      b.cap = 0;
    } else {
      FZ_CHECK(cs__buf_reserve(&b, piece) == 0, "cs__buf_reserve(%zu) failed", piece);
      FZ_CHECK(b.cap >= b.off + b.len + piece, "reserve left too little room");
      memcpy(b.base + b.off + b.len, stream + prev, piece);
      b.len += piece;
    }
    prev = cuts[i];
    over = fz_drain(p, &b, stream, 0, &op, &pos, log);
    if (b.cap == 0) {
      /* What is left of a borrowed read is copied before the area goes. */
      if (b.len > 0)
        FZ_CHECK(cs__buf_own(&b) == 0, "cs__buf_own failed");
      else
        b.base = NULL, b.off = 0;
    }
    free(scratch);
  }
  if (!over && eof)
    over = fz_drain(p, &b, stream, 1, &op, &pos, log);
  if (!over)
    fz_log_add(log, (fz_result_t){0, op, pos, 0, 0});
  if (!over)
    FZ_CHECK(pos + b.len == len, "%zu consumed + %zu buffered != %zu fed", pos, b.len, len);
  cs__buf_free(&b);
}

/* Cut points: every byte (short streams), or random cuts. */
static size_t fz_cuts_bytewise(size_t len, size_t *cuts) {
  for (size_t i = 0; i < len; i++)
    cuts[i] = i + 1;
  return len;
}

static size_t fz_cuts_random(size_t len, size_t *cuts, unsigned max_pieces) {
  size_t n = 0, at = 0;
  while (at < len && n + 1 < max_pieces) {
    uint64_t x = fz_rng();
    /* Mostly short pieces, sometimes long ones. */
    size_t step = 1 + (size_t)(x % ((x >> 32) & 1 ? 4 : 64));
    at = at + step < len ? at + step : len;
    cuts[n++] = at;
  }
  if (n == 0 || cuts[n - 1] != len)
    cuts[n++] = len;
  return n;
}

#endif
