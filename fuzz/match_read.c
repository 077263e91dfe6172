/* libFuzzer harness for the read matchers behind conn:receive("*l"),
 * receive(n), receive("*a"), receiveany(max) and receiveuntil(delim
 * [, {inclusive = true}]): cs__match with CS_READ_LINE, CS_READ_BYTES,
 * CS_READ_ALL, CS_READ_ANY and CS_READ_UNTIL (runtime/match.c). The first
 * input bytes make a program of one to four reads that a handler makes in
 * turn on one connection:
 *
 *   byte 0  bits 0-1: reads - 1; bit 2: receiveuntil is inclusive;
 *           bit 3: the stream ends with EOF; bits 4-6: delimiter length - 1
 *           (7: 2100 bytes, as long a delimiter as max + its length can
 *           overflow with)
 *   byte 1  max_frame (fz_max), which bounds lines, receiveuntil's
 *           chunks, receive(n)'s n and receive("*a")
 *   then    one byte per read: kind = b % 5 (line, until, bytes, any, all),
 *           n = 1 + b / 5 for bytes and any
 *   then    the delimiter's bytes; the rest is the stream.
 *
 * The stream is matched against a reference written from docs/api.md, and
 * delivered whole, byte by byte (short streams) and cut at random points:
 * the matches and the final state must not depend on how the bytes were
 * cut (receiveany's must not either, when the program has none: its
 * matches are whatever has arrived, so with it only the whole delivery is
 * compared and each of its matches is checked on its own). The program is
 * also run with receiveuntil's inclusive flag flipped: the same bytes are
 * consumed, and only the delimiter's presence differs. A difference
 * abort()s. Built and run by fuzz/run. */
#define FZ_NAME "match_read"
#include "match_common.h"

/* Reference: one read of data[0, len). */
static int ref_match(const cs_read_t *r, const uint8_t *data, size_t len, int eof,
                     size_t *take, size_t *skip) {
  switch (r->kind) {
  case CS_READ_LINE:
    /* Through "\n", handed out without it and a "\r" before it; too large
     * when more than max bytes come before the "\n". */
    for (size_t i = 0; i < len; i++) {
      if (data[i] == '\n') {
        if (i > r->max)
          return CS_ETOOLARGE;
        *skip = i + 1;
        *take = i > 0 && data[i - 1] == '\r' ? i - 1 : i;
        return 1;
      }
    }
    return len > r->max ? CS_ETOOLARGE : 0;
  case CS_READ_UNTIL:
    for (size_t i = 0; i + r->delim_len <= len; i++) {
      if (memcmp(data + i, r->delim, r->delim_len) == 0) {
        if (i > r->max)
          return CS_ETOOLARGE;
        *skip = i + r->delim_len;
        *take = r->inclusive ? *skip : i;
        return 1;
      }
    }
    /* No delimiter: the chunk is longer than max once more than max +
     * the delimiter's length bytes are buffered. */
    return len > r->delim_len && len - r->delim_len > r->max ? CS_ETOOLARGE : 0;
  case CS_READ_BYTES:
    /* More than max is refused at once, not after buffering toward it. */
    if (r->n > r->max)
      return CS_ETOOLARGE;
    if (len < r->n)
      return 0;
    *take = *skip = r->n;
    return 1;
  case CS_READ_ANY:
    if (len == 0)
      return 0;
    *take = *skip = len < r->n ? len : r->n;
    return 1;
  case CS_READ_ALL:
    /* Everything until EOF, refused once more than max is buffered. */
    if (len > r->max)
      return CS_ETOOLARGE;
    if (!eof)
      return 0;
    *take = *skip = len;
    return 1;
  case CS_READ_FRAME:
    break;
  }
  abort();
}

static int ref_drain(const fz_program_t *p, const uint8_t *s, size_t len, int eof, int *op,
                     size_t *pos, fz_log_t *log) {
  for (;;) {
    size_t take = 0, skip = 0;
    int rc = ref_match(&p->ops[*op], s + *pos, len - *pos, eof, &take, &skip);
    if (rc < 0) {
      fz_log_add(log, (fz_result_t){rc, *op, *pos, 0, 0});
      return 1;
    }
    if (rc == 0)
      return 0;
    fz_log_add(log, (fz_result_t){1, *op, *pos, take, skip});
    if (skip == 0)
      return 1;
    *pos += skip;
    *op = (*op + 1) % p->nops;
  }
}

static void ref_log(const fz_program_t *p, const uint8_t *s, size_t len, int eof,
                    fz_log_t *log) {
  int op = 0;
  size_t pos = 0;
  if (ref_drain(p, s, len, 0, &op, &pos, log))
    return;
  if (eof && ref_drain(p, s, len, 1, &op, &pos, log))
    return;
  fz_log_add(log, (fz_result_t){0, op, pos, 0, 0});
}

static void compare(const fz_log_t *want, const fz_log_t *got, const char *how, int eof) {
  if (!fz_log_equal(want, got)) {
    fz_log_print("reference", want);
    fz_log_print(how, got);
    FZ_CHECK(0, "the stream delivered %s (eof %d) differs from the reference", how, eof);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  fz_program_t p = {.nops = 1 + (data[0] & 3)};
  int inclusive = (data[0] >> 2) & 1, eof = (data[0] >> 3) & 1;
  size_t dl = (data[0] >> 4) & 7;
  dl = dl < 7 ? dl + 1 : 2100; /* long enough to overflow max + dl near SIZE_MAX */
  size_t max = fz_max(data[1]);
  size_t at = 2 + (size_t)p.nops;
  if (size < at + dl)
    return 0;
  const char *delim = (const char *)data + at;
  int has_any = 0;
  static const cs_read_kind_t kinds[5] = {CS_READ_LINE, CS_READ_UNTIL, CS_READ_BYTES,
                                          CS_READ_ANY, CS_READ_ALL};
  for (int i = 0; i < p.nops; i++) {
    uint8_t b = data[2 + i];
    p.ops[i] = (cs_read_t){.kind = kinds[b % 5], .n = 1 + (size_t)(b / 5), .max = max,
                           .delim = delim, .delim_len = dl, .inclusive = inclusive};
    has_any |= p.ops[i].kind == CS_READ_ANY;
  }
  at += dl;
  const uint8_t *s = data + at;
  size_t len = size - at;

  fz_log_t want = {0}, got = {0};
  ref_log(&p, s, len, eof, &want);
  size_t *cuts = malloc((len + 1) * sizeof *cuts);
  if (cuts == NULL)
    abort();
  fz_rng_state = fz_fnv1a(data, size);
  for (int round = 0; round < 4; round++) {
    size_t ncuts;
    const char *how;
    if (round == 0) {
      cuts[0] = len;
      ncuts = 1;
      how = "whole";
    } else if (round == 1) {
      if (len > 1024)
        continue;
      ncuts = fz_cuts_bytewise(len, cuts);
      how = "byte by byte";
    } else {
      ncuts = fz_cuts_random(len, cuts, 1u << 20);
      how = "in random pieces";
    }
    got.n = 0;
    fz_feed(&p, s, len, cuts, ncuts, eof, &got);
    if (round == 0 || !has_any) {
      compare(&want, &got, how, eof);
      continue;
    }
    /* With receiveany in the program: each of its matches is what was
     * buffered, at most n, and never nothing. */
    for (size_t i = 0; i < got.n; i++) {
      const fz_result_t *m = &got.v[i];
      const cs_read_t *r = &p.ops[m->op];
      if (m->rc == 1 && r->kind == CS_READ_ANY)
        FZ_CHECK(m->take == m->skip && m->take >= 1 && m->take <= r->n,
                 "receiveany(%zu) took %zu, consumed %zu", r->n, m->take, m->skip);
    }
  }

  /* The inclusive flag changes what receiveuntil hands out, nothing else. */
  fz_program_t q = p;
  for (int i = 0; i < q.nops; i++)
    q.ops[i].inclusive = !inclusive;
  cuts[0] = len;
  got.n = 0;
  fz_feed(&q, s, len, cuts, 1, eof, &got);
  FZ_CHECK(got.n == want.n, "inclusive %d: %zu results, %zu otherwise", !inclusive, got.n,
           want.n);
  for (size_t i = 0; i < got.n; i++) {
    const fz_result_t *x = &want.v[i], *y = &got.v[i];
    FZ_CHECK(x->rc == y->rc && x->op == y->op && x->pos == y->pos && x->skip == y->skip,
             "result %zu differs with inclusive %d", i, !inclusive);
    if (y->rc == 1 && q.ops[y->op].kind == CS_READ_UNTIL)
      FZ_CHECK(y->take == (inclusive ? y->skip - dl : y->skip),
               "receiveuntil took %zu of %zu with inclusive %d", y->take, y->skip, !inclusive);
  }
  free(cuts);
  free(want.v);
  free(got.v);
  return 0;
}
