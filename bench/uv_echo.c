/*
 * uv_echo -- reference TCP echo server in plain C on libuv.
 *
 * usage: uv_echo PORT      (listens on 127.0.0.1:PORT)
 *
 * This is the "C libuv" peer that scripts/bench compares coserve against, so
 * it is meant to be a good, idiomatic libuv server rather than a strawman:
 *
 *  - One shared 64 KiB read buffer for the whole loop.  libuv calls alloc_cb
 *    and read_cb back to back for each read(2), and read_cb consumes the data
 *    before returning, so a single buffer is safe and keeps the per-connection
 *    footprint to the uv_tcp_t itself (this matters for the idle-memory test).
 *  - uv_try_write() first: on loopback the socket send buffer almost always
 *    takes the whole echo, so the common path does no allocation and no
 *    write request at all.  Only an unwritten remainder is copied into a
 *    heap-allocated uv_write_t.  uv_try_write() refuses (UV_EAGAIN) while
 *    earlier writes are still queued, so byte order is preserved.
 *  - Backpressure: if a slow reader lets more than HIGH_WATER bytes queue up,
 *    reading from that connection stops until the queue drains.
 *  - On EOF the connection is shut down (flushing queued writes) and then
 *    closed; on errors it is closed directly.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -O2 uv_echo.c -luv -o uv_echo
 */
/* uv.h uses POSIX types (pthread_rwlock_t, ...) that strict -std=c11 hides. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define READ_BUF_SIZE 65536
#define HIGH_WATER (1024 * 1024) /* stop reading above this much queued output */
#define LISTEN_BACKLOG 4096      /* the idle test connects thousands at once */

typedef struct {
    uv_tcp_t tcp; /* first member: (conn_t *)stream is valid */
    int reading;  /* 1 while uv_read_start is in effect */
} conn_t;

/* A queued write owns a copy of the bytes that uv_try_write could not send. */
typedef struct {
    uv_write_t req;
    char data[]; /* flexible array: one allocation per pending write */
} write_req_t;

static uv_loop_t *loop;
static char read_buf[READ_BUF_SIZE];
static int read_buf_busy; /* sanity guard for the shared-buffer invariant */

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_close(uv_handle_t *handle) { free(handle); }

static void close_conn(conn_t *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)handle;
    (void)suggested;
    if (read_buf_busy) { /* cannot happen with libuv's read loop; be safe */
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

static void on_write(uv_write_t *req, int status) {
    conn_t *c = (conn_t *)req->handle;
    free(req); /* write_req_t starts with req, so this frees the whole block */
    if (status < 0) {
        close_conn(c);
        return;
    }
    /* Resume reading once the backlog has drained below the mark. */
    if (!c->reading && c->tcp.write_queue_size < HIGH_WATER / 2 &&
        !uv_is_closing((uv_handle_t *)&c->tcp)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
        else
            close_conn(c);
    }
}

/* Echo len bytes: try a direct write, queue whatever is left. */
static int echo(conn_t *c, const char *p, size_t len) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned int)len);
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
    memcpy(w->data, p + n, rest);
    b = uv_buf_init(w->data, (unsigned int)rest);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(w);
        return rc;
    }
    if (c->tcp.write_queue_size > HIGH_WATER) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    return 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    conn_t *c = (conn_t *)stream;
    if (buf->base == read_buf)
        read_buf_busy = 0; /* the data is consumed (or copied) below */

    if (nread > 0) {
        if (echo(c, buf->base, (size_t)nread) < 0)
            close_conn(c);
        return;
    }
    if (nread == 0) /* EAGAIN: nothing to do */
        return;

    if (nread == UV_EOF) {
        /* Half-close from the peer: flush what is queued, then close. */
        uv_read_stop(stream);
        c->reading = 0;
        uv_shutdown_t *req = malloc(sizeof *req);
        if (req && uv_shutdown(req, stream, on_shutdown) == 0)
            return;
        free(req);
    }
    close_conn(c);
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) {
        fprintf(stderr, "uv_echo: accept: %s\n", uv_strerror(status));
        return;
    }
    conn_t *c = malloc(sizeof *c);
    if (!c)
        return;
    c->reading = 0;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        close_conn(c);
        return;
    }
    /* Echo replies are small and latency-bound; do not let Nagle batch them. */
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
        fprintf(stderr, "uv_echo: bad port '%s'\n", argv[1]);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN); /* libuv uses MSG_NOSIGNAL too; belt and braces */
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
        fprintf(stderr, "uv_echo: listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
        return 1;
    }

    /* SIGTERM/SIGINT end the loop so the process exits cleanly with 0. */
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);

    fprintf(stderr, "uv_echo: listening on 127.0.0.1:%ld\n", port);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
