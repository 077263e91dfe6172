/*
 * uv_http -- reference HTTP/1.1 "Hello, World!" responder in plain C on libuv.
 *
 * usage: uv_http PORT      (listens on 127.0.0.1:PORT)
 *
 * The C peer of `scripts/bench http`: what a hand-written libuv server does
 * for the TechEmpower-style plaintext test. It is minimal but correct for
 * what it serves, and built the way a fast libuv server is built:
 *
 *  - One shared 64 KiB read buffer for the whole loop (libuv calls alloc_cb
 *    and read_cb back to back). Requests are framed in place by finding the
 *    "\r\n\r\n" that ends each head; only an incomplete head left at the end
 *    of a read is copied into a buffer of the connection's own.
 *  - Pipelining: every complete request in a read is answered, in order, and
 *    all the answers to one read go out in a single write.
 *  - uv_try_write() first; only a remainder the socket did not take is copied
 *    into a heap uv_write_t. Reading stops above HIGH_WATER bytes of queued
 *    output (a client that pipelines but does not read).
 *  - The response is prebuilt; its Date header is rewritten in place when the
 *    wall-clock second changes (checked once per read callback).
 *
 * Protocol handling: GET and HEAD answer 200 "Hello, World!" (HEAD without
 * the body), skipping a Content-Length body if one is sent; any other method
 * is answered 405 and the connection closed. Keep-alive is the default for
 * HTTP/1.1 and "Connection: close" closes after the answer; an HTTP/1.0
 * request is always answered and closed (its keep-alive is optional).
 * A malformed request line, a head over MAX_HEAD bytes, a bad Content-Length
 * or a Transfer-Encoding body (not supported here) get 400/431/501 and the
 * connection is closed after the answer.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -O2 uv_http.c -luv -o uv_http
 */
/* uv.h uses POSIX types (pthread_rwlock_t, ...) that strict -std=c11 hides;
 * gmtime_r is POSIX too. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define READ_BUF_SIZE 65536
#define OUT_BUF_SIZE (256 * 1024) /* answers to one read, flushed when full */
#define MAX_HEAD 8192             /* request line + headers */
#define HIGH_WATER (1024 * 1024)  /* stop reading above this much queued output */
#define LISTEN_BACKLOG 4096

typedef struct {
    uv_tcp_t tcp;      /* first member: (conn_t *)stream is valid */
    char *pend;        /* an incomplete head carried over between reads */
    size_t plen, pcap;
    size_t skip;       /* body bytes of the current request still to discard */
    int reading;       /* 1 while uv_read_start is in effect */
    int closing;       /* answer written, close after flushing: read no more */
} conn_t;

typedef struct {
    uv_write_t req;
    char data[]; /* a copy of what uv_try_write did not take */
} write_req_t;

static uv_loop_t *loop;
static char read_buf[READ_BUF_SIZE];
static int read_buf_busy;
static char out_buf[OUT_BUF_SIZE];
static size_t out_len;

/* "Date: " is followed by exactly 29 characters: "Sun, 06 Nov 1994 08:49:37 GMT". */
#define DATE_LEN 29
static char resp_ok[] = "HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/plain\r\n"
                        "Content-Length: 13\r\n"
                        "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                        "\r\n"
                        "Hello, World!";
#define RESP_OK_LEN (sizeof resp_ok - 1)
#define RESP_OK_HEAD_LEN (RESP_OK_LEN - 13)
static char *resp_ok_date; /* points into resp_ok */
static time_t date_sec = -1;
static char date_now[DATE_LEN + 1];

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void update_date(void) {
    time_t now = time(NULL);
    if (now == date_sec)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    static const char wd[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mo[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, "%s, %02d %s %04d %02d:%02d:%02d GMT", wd[tm.tm_wday],
                     tm.tm_mday, mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
    if (n != DATE_LEN) /* a year outside 1000..9999: keep the last good value */
        return;
    memcpy(date_now, tmp, DATE_LEN);
    memcpy(resp_ok_date, tmp, DATE_LEN);
    date_sec = now;
}

static void on_close(uv_handle_t *handle) {
    conn_t *c = (conn_t *)handle;
    free(c->pend);
    free(c);
}

static void close_conn(conn_t *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)handle;
    (void)suggested;
    if (read_buf_busy) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    read_buf_busy = 1;
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    (void)status;
    close_conn((conn_t *)req->handle);
    free(req);
}

/* Flush queued writes, then close (used after an answer that ends the connection). */
static void shutdown_conn(conn_t *c) {
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req && uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) == 0)
        return;
    free(req);
    close_conn(c);
}

static void on_write(uv_write_t *req, int status) {
    conn_t *c = (conn_t *)req->handle;
    free(req);
    if (status < 0) {
        close_conn(c);
        return;
    }
    if (!c->reading && !c->closing && c->tcp.write_queue_size < HIGH_WATER / 2 &&
        !uv_is_closing((uv_handle_t *)&c->tcp)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
        else
            close_conn(c);
    }
}

/* Send out_buf: a direct write first, the remainder queued. */
static int flush_out(conn_t *c) {
    size_t len = out_len;
    out_len = 0;
    if (len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(out_buf, (unsigned int)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    else if (n < 0)
        return n;
    if ((size_t)n == len)
        return 0;
    size_t rest = len - (size_t)n;
    write_req_t *w = malloc(sizeof *w + rest);
    if (!w)
        return UV_ENOMEM;
    memcpy(w->data, out_buf + n, rest);
    b = uv_buf_init(w->data, (unsigned int)rest);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(w);
        return rc;
    }
    if (c->reading && c->tcp.write_queue_size > HIGH_WATER) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    return 0;
}

static int emit(conn_t *c, const char *p, size_t len) {
    if (out_len + len > sizeof out_buf) {
        int rc = flush_out(c);
        if (rc < 0)
            return rc;
    }
    memcpy(out_buf + out_len, p, len);
    out_len += len;
    return 0;
}

/* An error answer that closes the connection. */
static int emit_error(conn_t *c, const char *status) {
    char tmp[256];
    int n = snprintf(tmp, sizeof tmp,
                     "HTTP/1.1 %s\r\nContent-Length: 0\r\nDate: %s\r\nConnection: close\r\n\r\n",
                     status, date_now);
    c->closing = 1;
    return emit(c, tmp, (size_t)n);
}

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch; }

/* Does line (of len bytes) start with the lower-case header name (incl. ':')? */
static int header_is(const char *line, size_t len, const char *name) {
    size_t n = strlen(name);
    if (len < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)line[i]) != name[i])
            return 0;
    return 1;
}

/* Does the value contain the lower-case token (comma lists are fine for this)? */
static int value_has(const char *v, size_t len, const char *tok) {
    size_t n = strlen(tok);
    for (size_t i = 0; i + n <= len; i++) {
        size_t j = 0;
        while (j < n && lower((unsigned char)v[i + j]) == tok[j])
            j++;
        if (j == n)
            return 1;
    }
    return 0;
}

/* Answer one complete head p[0..len) (len includes the final "\r\n\r\n"). */
static int handle_request(conn_t *c, const char *p, size_t len) {
    const char *end = p + len - 2; /* the empty line */
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    if (!eol || eol[1] != '\n')
        return emit_error(c, "400 Bad Request");
    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1 || sp1 == p || eol - p < 14 || memcmp(eol - 8, "HTTP/1.", 7) != 0 ||
        (eol[-1] != '0' && eol[-1] != '1') || eol[-9] != ' ' || sp1 + 1 >= eol - 9)
        return emit_error(c, "400 Bad Request");
    size_t mlen = (size_t)(sp1 - p);
    int is_get = mlen == 3 && memcmp(p, "GET", 3) == 0;
    int is_head = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
    int keep_alive = eol[-1] != '0'; /* HTTP/1.0: close after the answer */

    size_t body = 0;
    for (const char *line = eol + 2; line < end;) {
        const char *le = memchr(line, '\r', (size_t)(end - line));
        if (!le || le[1] != '\n')
            return emit_error(c, "400 Bad Request");
        size_t ll = (size_t)(le - line);
        const char *colon = memchr(line, ':', ll);
        if (!colon || colon == line)
            return emit_error(c, "400 Bad Request");
        switch (lower((unsigned char)line[0])) {
        case 'c':
            if (header_is(line, ll, "connection:")) {
                const char *v = colon + 1;
                size_t vl = (size_t)(le - v);
                if (value_has(v, vl, "close"))
                    keep_alive = 0;
            } else if (header_is(line, ll, "content-length:")) {
                const char *v = colon + 1;
                while (v < le && (*v == ' ' || *v == '\t'))
                    v++;
                size_t n = 0;
                int digits = 0;
                for (; v < le && *v >= '0' && *v <= '9'; v++, digits++) {
                    if (n > ((size_t)-1 - 9) / 10)
                        return emit_error(c, "400 Bad Request");
                    n = n * 10 + (size_t)(*v - '0');
                }
                while (v < le && (*v == ' ' || *v == '\t'))
                    v++;
                if (!digits || v != le)
                    return emit_error(c, "400 Bad Request");
                body = n;
            }
            break;
        case 't':
            if (header_is(line, ll, "transfer-encoding:"))
                return emit_error(c, "501 Not Implemented");
            break;
        }
        line = le + 2;
    }

    c->skip = body;
    int rc;
    if (is_get)
        rc = emit(c, resp_ok, RESP_OK_LEN);
    else if (is_head)
        rc = emit(c, resp_ok, RESP_OK_HEAD_LEN);
    else {
        static const char allow[] = "405 Method Not Allowed\r\nAllow: GET, HEAD";
        rc = emit_error(c, allow); /* closes: simpler than keeping the body framing */
        c->skip = 0;
    }
    if (rc == 0 && !keep_alive)
        c->closing = 1;
    return rc;
}

/* Find "\r\n\r\n" in p[0..n): offset just past it, or 0. */
static size_t head_end(const char *p, size_t n) {
    const char *q = p, *e = p + n;
    while (e - q >= 4) {
        q = memchr(q, '\r', (size_t)(e - q - 3));
        if (!q)
            return 0;
        if (q[1] == '\n' && q[2] == '\r' && q[3] == '\n')
            return (size_t)(q + 4 - p);
        q++;
    }
    return 0;
}

/* Answer every complete request in p[0..n); returns the bytes consumed
 * (the rest is an incomplete head), or a negative libuv error. */
static ssize_t process(conn_t *c, const char *p, size_t n) {
    size_t off = 0;
    while (off < n && !c->closing) {
        if (c->skip) {
            size_t k = n - off < c->skip ? n - off : c->skip;
            c->skip -= k;
            off += k;
            continue;
        }
        size_t h = head_end(p + off, n - off);
        if (h == 0) {
            if (n - off > MAX_HEAD) {
                int rc = emit_error(c, "431 Request Header Fields Too Large");
                if (rc < 0)
                    return rc;
                off = n;
            }
            break;
        }
        if (h > MAX_HEAD) {
            int rc = emit_error(c, "431 Request Header Fields Too Large");
            if (rc < 0)
                return rc;
            off = n;
            break;
        }
        int rc = handle_request(c, p + off, h);
        if (rc < 0)
            return rc;
        off += h;
    }
    if (c->closing)
        off = n; /* whatever follows is not read */
    return (ssize_t)off;
}

/* Make room for n bytes in the connection's own buffer (contents kept). */
static int reserve(conn_t *c, size_t n) {
    if (n <= c->pcap)
        return 0;
    size_t cap = c->pcap ? c->pcap : 1024;
    while (cap < n)
        cap *= 2;
    char *np = realloc(c->pend, cap);
    if (!np)
        return UV_ENOMEM;
    c->pend = np;
    c->pcap = cap;
    return 0;
}

/* Keep the incomplete head p[0..n) (p may point into c->pend itself). */
static int keep_pending(conn_t *c, const char *p, size_t n) {
    if (p != c->pend && reserve(c, n) < 0)
        return UV_ENOMEM;
    memmove(c->pend, p, n);
    c->plen = n;
    return 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    conn_t *c = (conn_t *)stream;
    if (buf->base == read_buf)
        read_buf_busy = 0; /* consumed or copied below */

    if (nread > 0) {
        if (c->closing)
            return;
        update_date();
        const char *p = buf->base;
        size_t n = (size_t)nread;
        if (c->plen) { /* complete the carried-over head first */
            if (reserve(c, c->plen + n) < 0) {
                close_conn(c);
                return;
            }
            memcpy(c->pend + c->plen, p, n);
            p = c->pend;
            n += c->plen;
            c->plen = 0;
        }
        ssize_t used = process(c, p, n);
        if (used < 0 || flush_out(c) < 0) {
            out_len = 0;
            close_conn(c);
            return;
        }
        if (c->closing) {
            shutdown_conn(c);
            return;
        }
        if ((size_t)used < n && keep_pending(c, p + used, n - (size_t)used) < 0) {
            close_conn(c);
            return;
        }
        if (c->plen == 0 && c->pcap > 2 * MAX_HEAD) { /* do not hold a big buffer */
            free(c->pend);
            c->pend = NULL;
            c->pcap = 0;
        }
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_EOF && !c->closing) {
        shutdown_conn(c);
        return;
    }
    close_conn(c);
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) {
        fprintf(stderr, "uv_http: accept: %s\n", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        close_conn(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
    else
        close_conn(c);
}

static void on_signal(uv_signal_t *sig, int signum) {
    (void)signum;
    uv_stop(sig->loop);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) {
        fprintf(stderr, "uv_http: bad port '%s'\n", argv[1]);
        return 2;
    }

    resp_ok_date = strstr(resp_ok, "Date: ") + 6;
    update_date();

    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();

    uv_tcp_t server;
    struct sockaddr_in addr;
    int rc = uv_ip4_addr("127.0.0.1", (int)port, &addr);
    if (rc == 0)
        rc = uv_tcp_init(loop, &server);
    if (rc == 0)
        rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        fprintf(stderr, "uv_http: listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
        return 1;
    }

    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);

    fprintf(stderr, "uv_http: listening on 127.0.0.1:%ld\n", port);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
