/* Access logs: lines appended to a buffer in memory and written with
 * libuv's file writes (uv_fs_write, on its thread pool), so that a slow
 * disk never stalls the loop.
 *
 * A writer owns two buffers: lines go into `buf` while `wbuf` is being
 * written. A write starts when 64 KiB have gathered, or 100 ms after the
 * first line of a batch (a one-shot timer, started only when the buffer
 * goes from empty to not empty, so an idle log costs nothing). One write
 * is in flight at a time, which keeps the lines in order; a short write
 * goes on from where it stopped. If the disk falls so far behind that
 * 4 MiB wait, lines are dropped and counted (nginx would block the
 * worker; a server that stops answering because its log is slow is worse).
 *
 * SIGUSR1 reopens the file (logrotate's way: it renames the file, then
 * signals): each writer with a path watches the signal itself. The lines
 * already buffered go to the old file, the next ones to the new.
 *
 * The lines are formatted here rather than in Lua: nginx's combined
 * format or one JSON object, escaped as nginx does (\xHH) and as JSON
 * requires. The time strings are formatted at most once a second.
 *
 * Lua surface (internal, used by coserve/http.lua), `require "coserve.alog"`:
 *   alog.open(path | "stderr") -> writer | nil, err
 *   writer:combined(parser, remote, method, url, version, status, bytes)
 *   writer:json(parser, remote, method, url, status, bytes, duration [, id])
 *       (the headers they log are read from the head the parser holds)
 *   writer:refused(json, remote, got, method, status, bytes)
 *       a request refused before it was parsed, from the bytes that came
 *   writer:write(line)      a line as given (a newline is added)
 *   writer:flush()          starts a write now; writer:close() writes what
 *   writer:reopen()         is left (synchronously) and closes
 *   writer:stats() -> {dropped =, pending =}
 *   alog.random_hex(nbytes), alog.page_size(), alog.time() (wall clock, s)
 *   alog.fields(parser | bytes) -> user_agent, referer, x_request_id
 *   alog.ffi() -> the C functions behind combined and json, and a clock,
 *       for LuaJIT's FFI (the request path calls them from compiled code)
 *
 * Memory: the writer is C-owned (the Lua box points to it), freed once its
 * two handles are closed and no write is in flight. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define ALOG_MT "coserve.alog"
#define ALOG_FLUSH_BYTES (64 * 1024)
#define ALOG_FLUSH_MS 100
#define ALOG_MAX_BYTES (4 * 1024 * 1024)

typedef struct {
  char *p;
  size_t len, cap;
} abuf_t;

typedef struct {
  cs_runtime_t *rt;
  char *path;            /* NULL: stderr, never reopened */
  uv_file fd;
  abuf_t buf;            /* lines gathering */
  abuf_t wbuf;           /* lines being written ... */
  size_t woff;           /* ... from here */
  uv_fs_t req;
  int writing;           /* req is in flight */
  int reopen;            /* SIGUSR1 came during a write */
  int closed;            /* close() or __gc: no more lines */
  int handles;           /* timer and signal not yet closed */
  uv_timer_t timer;
  uv_signal_t usr1;
  double dropped;        /* lines given up (buffer full, failed writes) */
  char rid[16];          /* request ids: 8 random bytes in hex ... */
  uint64_t rid_n;        /* ... and a counter */
  time_t tsec;           /* the second the time strings are for */
  char tlocal[32];       /* 02/Dec/2026:14:50:49 +0000 */
  size_t tlocal_len;
  char tiso[32];         /* 2026-12-02T14:50:49+00:00 */
  size_t tiso_len;
} alog_t;

typedef struct {
  alog_t *a;
} alogbox_t;

/* ---- the writer ---- */

static int abuf_reserve(abuf_t *b, size_t more) {
  if (b->len + more <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 16 * 1024;
  while (cap < b->len + more)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (p == NULL)
    return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static void alog_free_maybe(alog_t *a) {
  if (!a->closed || a->handles > 0 || a->writing)
    return;
  free(a->buf.p);
  free(a->wbuf.p);
  free(a->path);
  free(a);
}

static void alog_handle_closed(uv_handle_t *h) {
  alog_t *a = h->data;
  a->handles--;
  alog_free_maybe(a);
}

static void alog_write_cb(uv_fs_t *req);

/* Writes wbuf from woff on, on the thread pool. */
static void alog_write_more(alog_t *a) {
  uv_buf_t b = uv_buf_init(a->wbuf.p + a->woff, (unsigned)(a->wbuf.len - a->woff));
  a->req.data = a;
  if (uv_fs_write(&a->rt->loop, &a->req, a->fd, &b, 1, -1, alog_write_cb) == 0) {
    a->writing = 1;
    return;
  }
  a->dropped++; /* could not even start: the batch is lost */
  a->wbuf.len = a->woff = 0;
}

/* Starts writing what has gathered, unless a write is in flight (its
 * callback comes back for the rest). */
static void alog_flush(alog_t *a) {
  if (a->writing || a->buf.len == 0)
    return;
  abuf_t t = a->wbuf;
  a->wbuf = a->buf;
  a->buf = t;
  a->buf.len = 0;
  a->woff = 0;
  if (!uv_is_closing((uv_handle_t *)&a->timer))
    uv_timer_stop(&a->timer);
  alog_write_more(a);
}

/* Writes what is left now, blocking: for close and exit only. */
static void alog_flush_sync(alog_t *a) {
  const abuf_t *parts[2] = {&a->wbuf, &a->buf};
  size_t from[2] = {a->woff, 0};
  for (int i = 0; i < 2; i++) {
    const abuf_t *b = parts[i];
    for (size_t off = from[i]; off < b->len;) {
      ssize_t n = write(a->fd, b->p + off, b->len - off);
      if (n <= 0)
        break;
      off += (size_t)n;
    }
  }
  a->wbuf.len = a->woff = a->buf.len = 0;
}

/* Opens path again (logrotate renamed it); on failure the old file stays. */
static void alog_reopen_now(alog_t *a) {
  a->reopen = 0;
  if (a->path == NULL)
    return;
  int fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    cs__log(a->rt, CS_LOG_ERROR, "access log %s: cannot reopen: %s", a->path,
            uv_strerror(uv_translate_sys_error(errno)));
    return;
  }
  close(a->fd);
  a->fd = fd;
}

static void alog_timer_cb(uv_timer_t *t) { alog_flush(t->data); }

static void alog_write_cb(uv_fs_t *req) {
  alog_t *a = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  a->writing = 0;
  if (n > 0 && a->woff + (size_t)n < a->wbuf.len) {
    a->woff += (size_t)n; /* a short write: the rest goes next */
    alog_write_more(a);
    return;
  }
  if (n < 0) {
    a->dropped++;
    cs__log(a->rt, CS_LOG_ERROR, "access log %s: write failed: %s",
            a->path ? a->path : "stderr", uv_strerror((int)n));
  }
  a->wbuf.len = a->woff = 0;
  if (a->closed) {
    alog_flush_sync(a);
    if (a->path)
      close(a->fd);
    alog_free_maybe(a);
    return;
  }
  if (a->reopen)
    alog_reopen_now(a);
  if (a->buf.len >= ALOG_FLUSH_BYTES)
    alog_flush(a);
  else if (a->buf.len > 0)
    uv_timer_start(&a->timer, alog_timer_cb, ALOG_FLUSH_MS, 0);
}

static void alog_usr1_cb(uv_signal_t *s, int signum) {
  alog_t *a = s->data;
  (void)signum;
  a->reopen = 1;
  alog_flush(a); /* what was logged before the signal: to the old file */
  if (!a->writing)
    alog_reopen_now(a);
}

/* Line bytes are reserved first; then appended without checks. */
static char *alog_begin(alog_t *a, size_t max) {
  if (a->buf.len + max > ALOG_MAX_BYTES || abuf_reserve(&a->buf, max) != 0) {
    a->dropped++;
    return NULL;
  }
  return a->buf.p + a->buf.len;
}

static void alog_end(alog_t *a, char *end) {
  int was_empty = a->buf.len == 0;
  a->buf.len = (size_t)(end - a->buf.p);
  if (a->buf.len >= ALOG_FLUSH_BYTES)
    alog_flush(a);
  else if (was_empty && !a->writing)
    uv_timer_start(&a->timer, alog_timer_cb, ALOG_FLUSH_MS, 0);
}

static void alog_times(alog_t *a) {
  time_t now = time(NULL);
  if (now == a->tsec)
    return;
  struct tm tm;
  localtime_r(&now, &tm);
  a->tlocal_len = strftime(a->tlocal, sizeof a->tlocal, "%d/%b/%Y:%H:%M:%S %z", &tm);
  char z[8];
  strftime(z, sizeof z, "%z", &tm); /* +0000 -> +00:00 */
  size_t n = strftime(a->tiso, sizeof a->tiso - 7, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(a->tiso + n, sizeof a->tiso - n, "%.3s:%.2s", z, z + 3);
  a->tiso_len = strlen(a->tiso);
  a->tsec = now;
}

/* ---- escaping: the caller reserved 6 bytes per input byte ---- */

static const char hex[] = "0123456789ABCDEF";

/* nginx's access-log escaping: ", \ and bytes outside 0x20-0x7e as \xHH.
 * Runs of bytes that need none are copied whole. */
static char *esc_nginx(char *o, const char *s, size_t len) {
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\')
      continue;
    memcpy(o, s + run, i - run);
    o += i - run;
    run = i + 1;
    *o++ = '\\';
    *o++ = 'x';
    *o++ = hex[c >> 4];
    *o++ = hex[c & 15];
  }
  memcpy(o, s + run, len - run);
  return o + (len - run);
}

/* The length of a valid UTF-8 sequence at s (at most n bytes), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
  if (len == 0 || len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
      (c == 0xf4 && s[1] > 0x8f))
    return 0; /* overlong, surrogate, past U+10FFFF */
  return len;
}

/* A JSON string's content: valid UTF-8 passes, bytes that are not become
 * U+FFFD, so that a line always parses. */
char *cs__json_escape(char *o, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      size_t run = i + 1; /* a run of bytes that need nothing: copied whole */
      while (run < len && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x80 &&
             s[run] != '"' && s[run] != '\\')
        run++;
      memcpy(o, s + i, run - i);
      o += run - i;
      i = run - 1;
    } else if (c >= 0x80) {
      size_t n = utf8_len((const unsigned char *)s + i, len - i);
      if (n == 0) {
        memcpy(o, "\\ufffd", 6);
        o += 6;
      } else {
        memcpy(o, s + i, n);
        o += n;
        i += n - 1;
      }
    } else if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
    } else if (c == '\n' || c == '\t' || c == '\r') {
      *o++ = '\\';
      *o++ = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
    } else if (c < 0x20) {
      memcpy(o, "\\u00", 4);
      o[4] = hex[c >> 4];
      o[5] = hex[c & 15];
      o += 6;
    } else {
      *o++ = (char)c;
    }
  }
  return o;
}

static char *put(char *o, const char *s, size_t len) {
  memcpy(o, s, len);
  return o + len;
}
#define PUTS(o, lit) put(o, lit, sizeof(lit) - 1)

/* A non-negative integer in decimal (negative ones as 0); three digits,
 * as a status code has, directly. */
static char *put_uint(char *o, double v) {
  if (v >= 100 && v < 1000) {
    unsigned u = (unsigned)v;
    o[0] = (char)('0' + u / 100);
    o[1] = (char)('0' + u / 10 % 10);
    o[2] = (char)('0' + u % 10);
    return o + 3;
  }
  char tmp[24];
  int n = 0;
  unsigned long long u = v > 0 && v < 1e19 ? (unsigned long long)v : 0;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  while (n)
    *o++ = tmp[--n];
  return o;
}

/* A JSON string, or null when s is NULL. */
static char *json_str(char *o, const char *s, size_t len) {
  if (s == NULL)
    return PUTS(o, "null");
  *o++ = '"';
  o = cs__json_escape(o, s, len);
  *o++ = '"';
  return o;
}

/* ---- the request's head ---- */

typedef struct {
  const char *p;         /* NULL: the field is not there */
  size_t len;
} field_t;

enum { F_UA, F_REFERER, F_REQUEST_ID, NFIELDS };

/* User-Agent, Referer and X-Request-Id from a head as sent (its first
 * occurrence each), without building Lua strings for the other fields. */
static void head_fields(const char *head, size_t len, field_t out[NFIELDS]) {
  static const struct {
    const char *name;
    size_t len;
  } want[NFIELDS] = {{"user-agent", 10}, {"referer", 7}, {"x-request-id", 12}};
  for (int i = 0; i < NFIELDS; i++) {
    out[i].p = NULL;
    out[i].len = 0;
  }
  const char *end = head + len;
  const char *p = memchr(head, '\n', len); /* past the request line */
  while (p != NULL && p + 1 < end) {
    const char *line = p + 1;
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    if (eol == NULL)
      break;
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    size_t n = colon ? (size_t)(colon - line) : 0;
    for (int i = 0; colon && i < NFIELDS; i++) {
      if (n != want[i].len || out[i].p != NULL || strncasecmp(line, want[i].name, n) != 0)
        continue;
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      out[i].p = v;
      out[i].len = (size_t)(ve - v);
    }
    p = eol;
  }
}

/* ---- Lua ---- */

/* The writer at 1: its metatable is compared with the methods' upvalue 2
 * (no registry lookup on the request path). */
static alog_t *alog_check(lua_State *L) {
  alogbox_t *box = lua_touserdata(L, 1);
  int ok = box != NULL && lua_getmetatable(L, 1) && lua_rawequal(L, -1, lua_upvalueindex(2));
  if (box != NULL && ok)
    lua_pop(L, 1);
  if (!ok)
    box = luaL_checkudata(L, 1, ALOG_MT); /* raises the usual error */
  if (box->a == NULL)
    luaL_error(L, "access log closed");
  return box->a;
}

/* The start of a combined line, through the quote before "$request":
 *   $remote_addr - - [$time_local] "
 * The address comes from the kernel: it needs no escaping. */
static char *combined_head(alog_t *a, char *o, const char *remote, size_t lr) {
  o = put(o, remote, lr);
  o = PUTS(o, " - - [");
  o = put(o, a->tlocal, a->tlocal_len);
  return PUTS(o, "] \"");
}

/* The end of a combined line, after "$request":
 *   $status $body_bytes_sent "$http_referer" "$http_user_agent" */
static char *combined_tail(char *o, double status, double bytes, const field_t f[NFIELDS]) {
  o = PUTS(o, "\" ");
  o = put_uint(o, status);
  *o++ = ' ';
  o = put_uint(o, bytes);
  o = PUTS(o, " \"");
  o = f[F_REFERER].p && f[F_REFERER].len ? esc_nginx(o, f[F_REFERER].p, f[F_REFERER].len)
                                         : PUTS(o, "-");
  o = PUTS(o, "\" \"");
  o = f[F_UA].p && f[F_UA].len ? esc_nginx(o, f[F_UA].p, f[F_UA].len) : PUTS(o, "-");
  return PUTS(o, "\"\n");
}

/* One line in nginx's combined format:
 *   $remote_addr - - [$time_local] "$request" $status $body_bytes_sent
 *   "$http_referer" "$http_user_agent"
 * The headers come from the head the parser holds. 1, or 0 if dropped. */
static int alog_combined(alog_t *a, const void *parser, const char *remote, size_t lr,
                         const char *method, size_t lm, const char *url, size_t lu,
                         const char *version, size_t lv, double status, double bytes) {
  size_t lh;
  const char *head = cs__http_head(parser, &lh);
  field_t f[NFIELDS];
  head_fields(head, lh, f);
  alog_times(a);
  char *o = alog_begin(a, lr + lm + lv + 4 * (lu + f[F_UA].len + f[F_REFERER].len) + 128);
  if (o == NULL)
    return 0;
  /* The method and the version passed llhttp's checks: only the URL and
   * the headers may need escaping. */
  o = combined_head(a, o, remote, lr);
  o = put(o, method, lm);
  *o++ = ' ';
  o = esc_nginx(o, url, lu);
  o = PUTS(o, " HTTP/");
  o = put(o, version, lv);
  alog_end(a, combined_tail(o, status, bytes, f));
  return 1;
}

/* The start of a JSON line: {"time":"...","remote":"..." (the address
 * comes from the kernel: it needs no escaping). */
static char *json_head(alog_t *a, char *o, const char *remote, size_t lr) {
  o = PUTS(o, "{\"time\":\"");
  o = put(o, a->tiso, a->tiso_len);
  o = PUTS(o, "\",\"remote\":\"");
  o = put(o, remote, lr);
  *o++ = '"';
  return o;
}

/* The end of a JSON line, from "status" on; a negative duration (not
 * measured) is null. request_id is the head's X-Request-Id, else the
 * writer's random prefix and a counter (32 hex digits). */
static char *json_tail(alog_t *a, char *o, double status, double bytes, double duration,
                       const field_t f[NFIELDS]) {
  o = PUTS(o, ",\"status\":");
  o = put_uint(o, status);
  o = PUTS(o, ",\"bytes\":");
  o = put_uint(o, bytes);
  o = PUTS(o, ",\"duration\":");
  if (duration < 0) {
    o = PUTS(o, "null");
  } else {
    /* Seconds with microseconds, as nginx's $request_time has milliseconds. */
    unsigned long long us = duration < 1e12 ? (unsigned long long)(duration * 1e6 + 0.5) : 0;
    o = put_uint(o, (double)(us / 1000000));
    *o++ = '.';
    unsigned long frac = (unsigned long)(us % 1000000);
    for (int i = 5; i >= 0; i--, frac /= 10)
      o[i] = (char)('0' + frac % 10);
    o += 6;
  }
  o = PUTS(o, ",\"user_agent\":");
  o = json_str(o, f[F_UA].p, f[F_UA].len);
  o = PUTS(o, ",\"referer\":");
  o = json_str(o, f[F_REFERER].p, f[F_REFERER].len);
  o = PUTS(o, ",\"request_id\":");
  if (f[F_REQUEST_ID].p) {
    o = json_str(o, f[F_REQUEST_ID].p, f[F_REQUEST_ID].len);
  } else {
    uint64_t n = ++a->rid_n;
    *o++ = '"';
    o = put(o, a->rid, sizeof a->rid);
    for (int i = 15; i >= 0; i--)
      *o++ = "0123456789abcdef"[(n >> (4 * i)) & 15];
    *o++ = '"';
  }
  return PUTS(o, "}\n");
}

/* One JSON object (time, remote, method, path, query, then json_tail).
 * rid: the request id the handler was given (req.id), or NULL. */
static int alog_json(alog_t *a, const void *parser, const char *remote, size_t lr,
                     const char *method, size_t lm, const char *url, size_t lu, double status,
                     double bytes, double duration, const char *rid, size_t lrid) {
  size_t lh;
  const char *head = cs__http_head(parser, &lh);
  field_t f[NFIELDS];
  head_fields(head, lh, f);
  if (rid != NULL) {
    f[F_REQUEST_ID].p = rid;
    f[F_REQUEST_ID].len = lrid;
  }
  const char *q = memchr(url, '?', lu);
  size_t lp = q ? (size_t)(q - url) : lu;
  alog_times(a);
  char *o = alog_begin(a, 6 * (lr + lm + lu + f[F_UA].len + f[F_REFERER].len +
                               f[F_REQUEST_ID].len) + 256);
  if (o == NULL)
    return 0;
  /* The method passed llhttp's checks: it needs no escaping. */
  o = json_head(a, o, remote, lr);
  o = PUTS(o, ",\"method\":\"");
  o = put(o, method, lm);
  *o++ = '"';
  o = PUTS(o, ",\"path\":");
  o = json_str(o, url, lp);
  if (q) {
    o = PUTS(o, ",\"query\":");
    o = json_str(o, q + 1, lu - lp - 1);
  }
  alog_end(a, json_tail(a, o, status, bytes, duration > 0 ? duration : 0, f));
  return 1;
}

/* A request refused before it was parsed (400, 408, 431), from got, the
 * bytes that had come: "$request" is their first line as it came (empty
 * if none), and the headers are those they hold. In JSON, "request" takes
 * the place of path and query, method is the caller's (the line's first
 * word when it is an HTTP method, else empty), and duration is null. */
static int alog_refused(alog_t *a, int json, const char *remote, size_t lr, const char *got,
                        size_t lg, const char *method, size_t lm, double status, double bytes) {
  field_t f[NFIELDS];
  head_fields(got, lg, f);
  const char *eol = memchr(got, '\n', lg);
  size_t ll = eol ? (size_t)(eol - got) : lg;
  if (ll > 0 && got[ll - 1] == '\r')
    ll--;
  alog_times(a);
  char *o = alog_begin(a, 6 * (lr + lm + ll + f[F_UA].len + f[F_REFERER].len +
                               f[F_REQUEST_ID].len) + 256);
  if (o == NULL)
    return 0;
  if (json) {
    o = json_head(a, o, remote, lr);
    o = PUTS(o, ",\"method\":");
    o = json_str(o, method, lm);
    o = PUTS(o, ",\"request\":");
    o = json_str(o, got, ll);
    o = json_tail(a, o, status, bytes, -1, f);
  } else {
    o = combined_head(a, o, remote, lr);
    o = esc_nginx(o, got, ll);
    o = combined_tail(o, status, bytes, f);
  }
  alog_end(a, o);
  return 1;
}

/* The same for LuaJIT's FFI, which calls them from compiled code without
 * the trace exit a Lua C function costs: box is the writer's userdata, parser
 * the HTTP parser's. A closed writer drops the line. */
static int alog_ffi_combined(alogbox_t *box, const void *parser, const char *remote, size_t lr,
                             const char *method, size_t lm, const char *url, size_t lu,
                             const char *version, size_t lv, double status, double bytes) {
  return box->a ? alog_combined(box->a, parser, remote, lr, method, lm, url, lu, version, lv,
                                status, bytes)
                : 0;
}

static int alog_ffi_json(alogbox_t *box, const void *parser, const char *remote, size_t lr,
                         const char *method, size_t lm, const char *url, size_t lu,
                         double status, double bytes, double duration, const char *rid,
                         size_t lrid) {
  return box->a ? alog_json(box->a, parser, remote, lr, method, lm, url, lu, status, bytes,
                            duration, rid, lrid)
                : 0;
}

static const void *check_parser(lua_State *L, int idx) {
  return cs__checkudata(L, idx, cs__runtime_get(L)->http_mt, "coserve.http_parser");
}

/* writer:combined(parser, remote, method, url, version, status, bytes)
 * -> true | false (dropped) */
static int lalog_combined(lua_State *L) {
  alog_t *a = alog_check(L);
  size_t lr, lm, lu, lv;
  const void *parser = check_parser(L, 2);
  const char *remote = luaL_checklstring(L, 3, &lr);
  const char *method = luaL_checklstring(L, 4, &lm);
  const char *url = luaL_checklstring(L, 5, &lu);
  const char *version = luaL_checklstring(L, 6, &lv);
  lua_pushboolean(L, alog_combined(a, parser, remote, lr, method, lm, url, lu, version, lv,
                                   luaL_checknumber(L, 7), luaL_checknumber(L, 8)));
  return 1;
}

/* writer:json(parser, remote, method, url, status, bytes, duration [, id])
 * -> true | false (dropped) */
static int lalog_json(lua_State *L) {
  alog_t *a = alog_check(L);
  size_t lr, lm, lu;
  const void *parser = check_parser(L, 2);
  const char *remote = luaL_checklstring(L, 3, &lr);
  const char *method = luaL_checklstring(L, 4, &lm);
  const char *url = luaL_checklstring(L, 5, &lu);
  size_t lrid = 0;
  const char *rid = luaL_optlstring(L, 9, NULL, &lrid);
  lua_pushboolean(L, alog_json(a, parser, remote, lr, method, lm, url, lu, luaL_checknumber(L, 6),
                               luaL_checknumber(L, 7), luaL_checknumber(L, 8), rid, lrid));
  return 1;
}

/* writer:refused(json, remote, got, method, status, bytes) -> true | false
 * (dropped): a request refused before it was parsed, from the bytes that
 * had come (see alog_refused). */
static int lalog_refused(lua_State *L) {
  alog_t *a = alog_check(L);
  size_t lr, lg, lm;
  int json = lua_toboolean(L, 2);
  const char *remote = luaL_checklstring(L, 3, &lr);
  const char *got = luaL_checklstring(L, 4, &lg);
  const char *method = luaL_checklstring(L, 5, &lm);
  lua_pushboolean(L, alog_refused(a, json, remote, lr, got, lg, method, lm,
                                  luaL_checknumber(L, 6), luaL_checknumber(L, 7)));
  return 1;
}

/* A monotonic clock in seconds (uv_hrtime), for request durations. */
static double alog_ffi_clock(void) { return (double)uv_hrtime() / 1e9; }

/* alog.ffi() -> combined, json, clock: the C functions above, as pointers
 * for ffi.cast (their C types are in coserve/http.lua). */
static int lalog_ffi(lua_State *L) {
  lua_pushlightuserdata(L, (void *)(uintptr_t)alog_ffi_combined);
  lua_pushlightuserdata(L, (void *)(uintptr_t)alog_ffi_json);
  lua_pushlightuserdata(L, (void *)(uintptr_t)alog_ffi_clock);
  return 3;
}

/* alog.fields(parser | bytes) -> user_agent, referer, x_request_id (nil
 * when a field is not there), from the head the parser holds, or from the
 * bytes of one (whole or not). */
static int lalog_fields(lua_State *L) {
  size_t lh;
  const char *head = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &lh)
                                                   : cs__http_head(check_parser(L, 1), &lh);
  field_t f[NFIELDS];
  head_fields(head, lh, f);
  for (int i = 0; i < NFIELDS; i++) {
    if (f[i].p)
      lua_pushlstring(L, f[i].p, f[i].len);
    else
      lua_pushnil(L);
  }
  return NFIELDS;
}

/* writer:write(line): the line as it is, and a newline. */
static int lalog_write(lua_State *L) {
  alog_t *a = alog_check(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  char *o = alog_begin(a, len + 1);
  if (o == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  o = put(o, s, len);
  *o++ = '\n';
  alog_end(a, o);
  lua_pushboolean(L, 1);
  return 1;
}

static int lalog_flush(lua_State *L) {
  alog_flush(alog_check(L));
  lua_pushboolean(L, 1);
  return 1;
}

static int lalog_reopen(lua_State *L) {
  alog_usr1_cb(&alog_check(L)->usr1, SIGUSR1);
  lua_pushboolean(L, 1);
  return 1;
}

static int lalog_stats(lua_State *L) {
  alog_t *a = alog_check(L);
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, a->dropped);
  lua_setfield(L, -2, "dropped");
  lua_pushnumber(L, (double)(a->buf.len + a->wbuf.len - a->woff));
  lua_setfield(L, -2, "pending");
  return 1;
}

/* A handle the runtime's teardown closed already (uv_walk, then a loop
 * run that completed the close) is only counted. */
static void alog_close_handle(alog_t *a, uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, alog_handle_closed);
  else
    a->handles--;
}

/* Ends a writer: what is buffered is written now (blocking: this happens
 * at close or exit), unless a write is in flight, whose callback does it
 * (the loop runs again before the runtime goes, so it comes). */
static void alog_close(alog_t *a) {
  a->closed = 1;
  alog_close_handle(a, (uv_handle_t *)&a->timer);
  alog_close_handle(a, (uv_handle_t *)&a->usr1);
  if (!a->writing) {
    alog_flush_sync(a);
    if (a->path)
      close(a->fd);
  }
  alog_free_maybe(a);
}

static int lalog_close(lua_State *L) {
  alogbox_t *box = luaL_checkudata(L, 1, ALOG_MT);
  if (box->a) {
    alog_close(box->a);
    box->a = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* alog.open(path | "stderr") -> writer | nil, err */
static int lalog_open(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  const char *path = luaL_checkstring(L, 1);
  int is_stderr = strcmp(path, "stderr") == 0;
  alogbox_t *box = lua_newuserdata(L, sizeof *box);
  box->a = NULL;
  luaL_getmetatable(L, ALOG_MT);
  lua_setmetatable(L, -2);
  int fd = is_stderr ? STDERR_FILENO : open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return cs__push_error(L, uv_translate_sys_error(errno));
  alog_t *a = calloc(1, sizeof *a);
  char *copy = is_stderr ? NULL : strdup(path);
  if (a == NULL || (!is_stderr && copy == NULL)) {
    free(a);
    if (!is_stderr)
      close(fd);
    return cs__push_error(L, UV_ENOMEM);
  }
  unsigned char raw[8] = {0};
  uv_random(NULL, NULL, raw, sizeof raw, 0, NULL);
  for (int i = 0; i < 8; i++) {
    a->rid[2 * i] = "0123456789abcdef"[raw[i] >> 4];
    a->rid[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
  }
  a->rt = rt;
  a->path = copy;
  a->fd = fd;
  a->tsec = (time_t)-1;
  uv_timer_init(&rt->loop, &a->timer);
  uv_signal_init(&rt->loop, &a->usr1);
  a->timer.data = a->usr1.data = a;
  a->handles = 2;
  if (!is_stderr)
    uv_signal_start(&a->usr1, alog_usr1_cb, SIGUSR1);
  /* Neither keeps the process alive: what is left is written at close. */
  uv_unref((uv_handle_t *)&a->timer);
  uv_unref((uv_handle_t *)&a->usr1);
  box->a = a;
  return 1;
}

/* alog.random_hex(nbytes) -> 2 * nbytes hex digits from the kernel. */
static int lalog_random_hex(lua_State *L) {
  unsigned char raw[64];
  char out[128];
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n > 0 && n <= 64, 1, "1 to 64 bytes");
  int rc = uv_random(NULL, NULL, raw, (size_t)n, 0, NULL);
  if (rc != 0)
    return cs__push_error(L, rc);
  for (lua_Integer i = 0; i < n; i++) {
    out[2 * i] = "0123456789abcdef"[raw[i] >> 4];
    out[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
  }
  lua_pushlstring(L, out, (size_t)(2 * n));
  return 1;
}

/* alog.time() -> the wall-clock time, in seconds (microseconds). */
static int lalog_time(lua_State *L) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return cs__push_error(L, UV_EINVAL);
  lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec / 1e6);
  return 1;
}

static int lalog_page_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)sysconf(_SC_PAGESIZE));
  return 1;
}

int luaopen_coserve_alog(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_for(L);
  static const luaL_Reg methods[] = {
      {"combined", lalog_combined}, {"json", lalog_json},   {"refused", lalog_refused},
      {"write", lalog_write},
      {"flush", lalog_flush},       {"reopen", lalog_reopen}, {"stats", lalog_stats},
      {"close", lalog_close},       {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"open", lalog_open},
                                   {"random_hex", lalog_random_hex},
                                   {"page_size", lalog_page_size},
                                   {"time", lalog_time},
                                   {"fields", lalog_fields},
                                   {"ffi", lalog_ffi},
                                   {NULL, NULL}};
  luaL_newmetatable(L, ALOG_MT);
  lua_createtable(L, 0, 8);
  lua_pushlightuserdata(L, rt);
  lua_pushvalue(L, -3); /* the metatable, for alog_check */
  luaL_setfuncs(L, methods, 2);
  lua_setfield(L, -2, "__index");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lalog_close, 1);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
  return 1;
}
