/* The matchers find the same matches whether the bytes arrive at once or
 * one at a time, and report oversized lines and frames. */
#include <string.h>

#include "check.h"
#include "internal.h"

/* Feeds `input` one byte at a time, consuming matches as a connection
 * would; writes the matches joined by '|' into out. Returns the last
 * cs__match result. */
static int feed_bytewise(const cs_read_t *r, const char *input, size_t n, char *out) {
  cs_buf_t b = {0};
  int rc = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    cs__buf_reserve(&b, 1);
    b.base[b.off + b.len++] = input[i];
    size_t take, skip;
    while ((rc = cs__match(r, cs__buf_data(&b), b.len, 0, &take, &skip)) == 1) {
      strncat(out, cs__buf_data(&b), take);
      strcat(out, "|");
      cs__buf_consume(&b, skip);
    }
    if (rc < 0)
      break;
  }
  cs__buf_free(&b);
  return rc;
}

int main(void) {
  char out[256];
  cs_read_t line = {.kind = CS_READ_LINE, .max = 16};
  /* Lines drop "\n" and a trailing "\r", even when split between reads. */
  feed_bytewise(&line, "ab\r\ncd\n\n", 8, out);
  CHECK(strcmp(out, "ab|cd||") == 0);
  /* A line over max is too large as soon as it is longer than max. */
  CHECK(feed_bytewise(&line, "0123456789abcdefXYZ", 19, out) == CS_ETOOLARGE);

  cs_read_t until = {.kind = CS_READ_UNTIL, .delim = "--", .delim_len = 2, .max = 64};
  feed_bytewise(&until, "a--b-c--", 8, out);
  CHECK(strcmp(out, "a|b-c|") == 0);
  until.inclusive = 1;
  feed_bytewise(&until, "a--b-c--", 8, out);
  CHECK(strcmp(out, "a--|b-c--|") == 0);

  cs_read_t bytes = {.kind = CS_READ_BYTES, .n = 3, .max = SIZE_MAX};
  feed_bytewise(&bytes, "abcdefg", 7, out);
  CHECK(strcmp(out, "abc|def|") == 0);

  /* eof framing keeps the delimiter, as Swoole's open_eof_check. */
  cs_framing_t eof = {.kind = CS_FRAME_EOF, .eof = "\r\n", .eof_len = 2};
  cs_read_t frame = {.kind = CS_READ_FRAME, .framing = &eof, .max = 8};
  feed_bytewise(&frame, "ab\r\ncd\r\n", 8, out);
  CHECK(strcmp(out, "ab\r\n|cd\r\n|") == 0);
  CHECK(feed_bytewise(&frame, "abcdefghij", 10, out) == CS_ETOOLARGE);

  /* Length framing: u16be length at offset 1, body at 3; the frame is the
   * header plus the body. Two frames fed byte by byte. */
  cs_framing_t len = {.kind = CS_FRAME_LENGTH, .len_size = 2, .len_big_endian = 1,
                      .len_offset = 1, .body_offset = 3};
  cs_read_t lframe = {.kind = CS_READ_FRAME, .framing = &len, .max = 16};
  const char two[] = {'T', 0, 2, 'h', 'i', 'U', 0, 0};
  size_t take, skip;
  for (size_t n = 0; n < 5; n++)
    CHECK(cs__match(&lframe, two, n, 0, &take, &skip) == 0);
  CHECK(cs__match(&lframe, two, 3, 0, &take, &skip) == 0);
  CHECK(cs__match(&lframe, two, 5, 0, &take, &skip) == 1 && take == 5);
  CHECK(cs__match(&lframe, two + 5, 3, 0, &take, &skip) == 1 && take == 3);
  /* A header that announces more than max is refused before the body. */
  const char big[] = {'T', 0x7f, 0};
  CHECK(cs__match(&lframe, big, 3, 0, &take, &skip) == CS_ETOOLARGE);
  cs_framing_t le = {.kind = CS_FRAME_LENGTH, .len_size = 4, .len_big_endian = 0,
                     .body_offset = 4};
  cs_read_t leframe = {.kind = CS_READ_FRAME, .framing = &le, .max = 64};
  const char lef[] = {3, 0, 0, 0, 'x', 'y', 'z'};
  CHECK(cs__match(&leframe, lef, 7, 0, &take, &skip) == 1 && take == 7);

  /* Near SIZE_MAX (max_frame = 2^64 - 2048, the largest Lua number below
   * 2^64) the limits must not overflow: a u64 length that wraps around
   * with body_offset is too large, not a 16-byte frame (found by
   * fuzz/match_frame), and a long delimiter does not turn every chunk
   * into "too large". */
  size_t huge = (size_t)-1 - 2047;
  cs_framing_t wrap = {.kind = CS_FRAME_LENGTH, .len_size = 8, .len_big_endian = 1,
                       .body_offset = 4096};
  cs_read_t wframe = {.kind = CS_READ_FRAME, .framing = &wrap, .max = huge};
  /* body = 2^64 - 4080: body_offset + body wraps to 16. */
  const char wrapf[16] = {-1, -1, -1, -1, -1, -1, -16, 16, 'p', 'a', 'y', 'l', 'o', 'a', 'd', '!'};
  CHECK(cs__match(&wframe, wrapf, 16, 0, &take, &skip) == CS_ETOOLARGE);
  static char longdelim[3000], chunk[1000];
  memset(longdelim, '-', sizeof longdelim);
  memset(chunk, 'a', sizeof chunk);
  cs_read_t wuntil = {.kind = CS_READ_UNTIL, .delim = longdelim,
                      .delim_len = sizeof longdelim, .max = huge};
  CHECK(cs__match(&wuntil, chunk, sizeof chunk, 0, &take, &skip) == 0);

  /* "*a" matches only at EOF; any hands out at most n. */
  cs_read_t all = {.kind = CS_READ_ALL, .max = SIZE_MAX};
  CHECK(cs__match(&all, "abc", 3, 0, &take, &skip) == 0);
  CHECK(cs__match(&all, "abc", 3, 1, &take, &skip) == 1 && take == 3);
  cs_read_t any = {.kind = CS_READ_ANY, .n = 2};
  CHECK(cs__match(&any, "abc", 3, 0, &take, &skip) == 1 && take == 2);
  CHECK(cs__match(&any, "", 0, 0, &take, &skip) == 0);

  /* Buffers: consuming everything frees the memory. */
  cs_buf_t b = {0};
  CHECK(cs__buf_reserve(&b, 10000) == 0 && b.cap >= 10000);
  memcpy(b.base, "hello", 5);
  b.len = 5;
  cs__buf_consume(&b, 2);
  CHECK(b.len == 3 && memcmp(cs__buf_data(&b), "llo", 3) == 0);
  cs__buf_consume(&b, 3);
  CHECK(b.base == NULL && b.cap == 0);
  return DONE("test_buf_match");
}
