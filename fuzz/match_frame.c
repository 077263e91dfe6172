/* libFuzzer harness for the framing matcher: cs__match with CS_READ_FRAME
 * (runtime/match.c), the matcher behind conn:recv() on a server with
 * `framing`. The first input bytes choose the framing, so that every kind,
 * width, byte order, offset and limit is explored:
 *
 *   byte 0  bit 0: 0 eof framing, 1 length framing
 *           eof:    bits 1-5: delimiter length - 1 (1 to 32 bytes, taken
 *                   from the bytes after byte 2)
 *           length: bits 1-2: field width 1, 2, 4, 8; bit 3: big endian
 *   byte 1  length: bits 0-3 the field's offset, bits 4-7 how far past the
 *           field the body starts (15: 2112 bytes, so that a huge announced
 *           length plus the body offset can overflow)
 *   byte 2  max_frame (fz_max: small ones, a few KiB, and the largest a
 *           Lua number gives)
 *
 * The rest is the stream. It is matched as a reader would, frame after
 * frame, against a reference written from the documentation (docs/api.md,
 * "Framing"), and delivered whole, byte by byte (short streams) and cut at
 * two sets of random points, with and without an EOF at the end: every
 * delivery must give the same frames and the same final state as the
 * reference. A difference abort()s. Built and run by fuzz/run. */
#define FZ_NAME "match_frame"
#include "match_common.h"

/* Reference: the first frame of data[0, len). */
static int ref_frame(const cs_framing_t *f, size_t max, const uint8_t *data, size_t len,
                     size_t *take) {
  if (f->kind == CS_FRAME_EOF) {
    /* Everything through the first delimiter; too large once more than
     * max bytes are known to come before its end. */
    for (size_t i = 0; i + f->eof_len <= len; i++) {
      if (memcmp(data + i, f->eof, f->eof_len) == 0) {
        if (i + f->eof_len > max)
          return CS_ETOOLARGE;
        *take = i + f->eof_len;
        return 1;
      }
    }
    /* No delimiter in len bytes: the frame is at least len + 1 long. */
    return len >= max ? CS_ETOOLARGE : 0;
  }
  if (len < f->len_offset + (size_t)f->len_size)
    return 0;
  uint64_t body = 0;
  for (int i = 0; i < f->len_size; i++) {
    uint64_t byte = data[f->len_offset + (size_t)i];
    int shift = f->len_big_endian ? 8 * (f->len_size - 1 - i) : 8 * i;
    body |= byte << shift;
  }
  /* frame = body_offset + body bytes, refused as soon as the header is in. */
  if (body > max || f->body_offset > max - body)
    return CS_ETOOLARGE;
  size_t n = f->body_offset + (size_t)body;
  if (len < n)
    return 0;
  *take = n;
  return 1;
}

static void ref_log(const cs_framing_t *f, size_t max, const uint8_t *s, size_t len,
                    fz_log_t *log) {
  size_t pos = 0;
  for (;;) {
    size_t take = 0;
    int rc = ref_frame(f, max, s + pos, len - pos, &take);
    if (rc != 1) {
      fz_log_add(log, (fz_result_t){rc, 0, pos, 0, 0});
      return;
    }
    fz_log_add(log, (fz_result_t){1, 0, pos, take, take});
    pos += take;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  cs_framing_t f;
  memset(&f, 0, sizeof f);
  size_t at = 3;
  if ((data[0] & 1) == 0) {
    f.kind = CS_FRAME_EOF;
    f.eof_len = 1 + ((data[0] >> 1) & 31);
    if (size < at + f.eof_len)
      return 0;
    memcpy(f.eof, data + at, f.eof_len);
    at += f.eof_len;
  } else {
    f.kind = CS_FRAME_LENGTH;
    f.len_size = 1 << ((data[0] >> 1) & 3);
    f.len_big_endian = (data[0] >> 3) & 1;
    f.len_offset = data[1] & 15;
    size_t gap = data[1] >> 4;
    f.body_offset = f.len_offset + (size_t)f.len_size + (gap == 15 ? 2112 : gap);
  }
  fz_program_t p = {.nops = 1};
  p.ops[0] = (cs_read_t){.kind = CS_READ_FRAME, .framing = &f, .max = fz_max(data[2])};
  const uint8_t *s = data + at;
  size_t len = size - at;

  fz_log_t want = {0}, got = {0};
  ref_log(&f, p.ops[0].max, s, len, &want);
  size_t *cuts = malloc((len + 1) * sizeof *cuts);
  if (cuts == NULL)
    abort();
  fz_rng_state = fz_fnv1a(data, size);
  for (int round = 0; round < 6; round++) {
    size_t ncuts;
    const char *how;
    if (round < 2) {
      cuts[0] = len;
      ncuts = 1;
      how = "whole";
    } else if (round < 4) {
      if (len > 1024)
        continue;
      ncuts = fz_cuts_bytewise(len, cuts);
      how = "byte by byte";
    } else {
      ncuts = fz_cuts_random(len, cuts, 1u << 20);
      how = "in random pieces";
    }
    got.n = 0;
    fz_feed(&p, s, len, cuts, ncuts, round & 1, &got);
    if (!fz_log_equal(&want, &got)) {
      fz_log_print("reference", &want);
      fz_log_print(how, &got);
      FZ_CHECK(0, "the stream delivered %s (eof %d) differs from the reference", how,
               round & 1);
    }
  }
  free(cuts);
  free(want.v);
  free(got.v);
  return 0;
}
