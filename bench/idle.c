/*
 * idle -- measure a TCP echo server's resident memory per idle connection.
 *
 * usage: idle -h HOST -p PORT -P SERVER_PID [-n CONNS] [-s SIZE]
 *             [-t HOLD_SECONDS] [-T TIMEOUT_SECONDS] [-i INFLIGHT]
 *
 * 1. One throw-away connection does a round trip and closes, so one-time
 *    costs of the first connection (lazy initialisation, JIT traces, ...) are
 *    not charged to the idle connections.
 * 2. VmRSS of SERVER_PID is read from /proc/PID/status ("before").
 * 3. CONNS connections are opened -- at most INFLIGHT handshakes/echoes
 *    pending at a time, so the listen backlog never overflows and no SYN has
 *    to be retransmitted.  Each sends SIZE bytes and waits for the echo, so
 *    on the server every connection has been accepted, has run its handler
 *    once, and is parked in a receive.
 * 4. After a short settle, VmRSS is read again ("after"); the connections are
 *    held for HOLD_SECONDS (any data or close from the server during the hold
 *    counts as an error), VmRSS is read a last time ("end"), and all
 *    connections are closed.
 *
 * Output (one line on stdout):
 *   conns=... errors=... rss_before_kib=... rss_after_kib=... rss_end_kib=...
 *   kib_per_conn=...
 * where kib_per_conn = (after - before) / conns.  Kernel socket buffers are
 * not part of a process's RSS, so this is the server's own user-space cost.
 *
 * Both this process and the server need CONNS + a few file descriptors:
 * raise `ulimit -n` for each of them.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -O2 idle.c -o idle
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { UNUSED, CONNECTING, RECEIVING, IDLE, DEAD };

typedef struct {
    int fd;
    enum state st;
    size_t got; /* echo bytes received so far */
} conn_t;

static size_t msg_size = 16;
static char msg[4096];
static int epfd;
static unsigned long errors;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* VmRSS of a process in KiB, or -1 if it is gone. */
static long rss_kib(long pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void kill_conn(conn_t *c) {
    if (c->st == DEAD)
        return;
    errors++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->st = DEAD;
}

static int open_conn(conn_t *c, const struct sockaddr_in *addr) {
    c->got = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->st = DEAD;
        errors++;
        return -1;
    }
    c->st = CONNECTING;
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->st = DEAD;
        errors++;
        return -1;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e) < 0) {
        close(c->fd);
        c->st = DEAD;
        errors++;
        return -1;
    }
    return 0;
}

/* Returns 1 when the connection has left the "pending" set (idle or dead). */
static int on_event(conn_t *c, uint32_t ev) {
    if (c->st == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if ((ev & (EPOLLERR | EPOLLHUP)) ||
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            kill_conn(c);
            return 1;
        }
        /* A small message always fits in a fresh socket's send buffer. */
        if (send(c->fd, msg, msg_size, MSG_NOSIGNAL) != (ssize_t)msg_size) {
            kill_conn(c);
            return 1;
        }
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) {
            kill_conn(c);
            return 1;
        }
        c->st = RECEIVING;
        return 0;
    }
    if (c->st == RECEIVING) {
        char buf[4096];
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0 || c->got + (size_t)n > msg_size ||
            memcmp(buf, msg + c->got, (size_t)n) != 0) {
            kill_conn(c);
            return 1;
        }
        c->got += (size_t)n;
        if (c->got < msg_size)
            return 0;
        c->st = IDLE; /* stays registered for EPOLLIN: the server must stay quiet */
        return 1;
    }
    if (c->st == IDLE) { /* data or EOF from an idle connection */
        kill_conn(c);
        return 0;
    }
    return 0;
}

/* One blocking round trip on a fresh connection, then close. */
static int warm_up(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int ok = connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0 &&
             send(fd, msg, msg_size, MSG_NOSIGNAL) == (ssize_t)msg_size;
    size_t got = 0;
    char buf[4096];
    while (ok && got < msg_size) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            ok = 0;
        else
            got += (size_t)n;
    }
    close(fd);
    return ok ? 0 : -1;
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s -h HOST -p PORT -P SERVER_PID [-n CONNS] [-s SIZE]\n"
            "          [-t HOLD_SECONDS] [-T TIMEOUT_SECONDS] [-i INFLIGHT]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, nconns = 10000, inflight = 256;
    long pid = -1;
    double hold = 2.0, timeout = 30.0;

    int opt;
    while ((opt = getopt(argc, argv, "h:p:P:n:s:t:T:i:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'P': pid = atol(optarg); break;
        case 'n': nconns = atoi(optarg); break;
        case 's': msg_size = (size_t)atol(optarg); break;
        case 't': hold = atof(optarg); break;
        case 'T': timeout = atof(optarg); break;
        case 'i': inflight = atoi(optarg); break;
        default: usage(argv[0]);
        }
    }
    if (port <= 0 || port > 65535 || pid <= 0 || nconns <= 0 || msg_size == 0 ||
        msg_size > sizeof msg || hold < 0 || timeout <= 0 || inflight <= 0)
        usage(argv[0]);

    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "idle: HOST must be an IPv4 address, got '%s'\n", host);
        return 2;
    }
    for (size_t i = 0; i < msg_size; i++)
        msg[i] = (char)('A' + i % 26);

    if (warm_up(&addr) < 0) {
        fprintf(stderr, "idle: warm-up round trip to %s:%d failed\n", host, port);
        return 1;
    }
    sleep_s(0.2);
    long before = rss_kib(pid);
    if (before < 0) {
        fprintf(stderr, "idle: cannot read VmRSS of pid %ld\n", pid);
        return 1;
    }

    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) {
        perror("calloc");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("epoll_create1");
        return 1;
    }

    /* Phase 1: bring every connection to IDLE, INFLIGHT at a time. */
    double deadline = now_s() + timeout;
    int next = 0, pending = 0, settled = 0;
    struct epoll_event evs[256];
    while (settled < nconns && now_s() < deadline) {
        while (pending < inflight && next < nconns) {
            if (open_conn(&conns[next++], &addr) == 0)
                pending++;
            else
                settled++;
        }
        int n = epoll_wait(epfd, evs, (int)(sizeof evs / sizeof evs[0]), 100);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            int was_pending = c->st == CONNECTING || c->st == RECEIVING;
            if (on_event(c, evs[i].events) && was_pending) {
                pending--;
                settled++;
            }
        }
    }
    for (int i = 0; i < nconns; i++) { /* timed out or never started */
        if (conns[i].st == UNUSED) {
            conns[i].st = DEAD;
            errors++;
        } else if (conns[i].st != IDLE) {
            kill_conn(&conns[i]);
        }
    }
    int idle = 0;
    for (int i = 0; i < nconns; i++)
        idle += conns[i].st == IDLE;

    /* Phase 2: settle, measure, hold (watching for unexpected events). */
    sleep_s(0.5);
    long after = rss_kib(pid);
    double hold_end = now_s() + hold;
    while (now_s() < hold_end) {
        int n = epoll_wait(epfd, evs, (int)(sizeof evs / sizeof evs[0]), 100);
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
    }
    long end = rss_kib(pid);
    int still = 0;
    for (int i = 0; i < nconns; i++)
        still += conns[i].st == IDLE;

    printf("conns=%d errors=%lu rss_before_kib=%ld rss_after_kib=%ld rss_end_kib=%ld "
           "kib_per_conn=%.2f held=%d\n",
           idle, errors, before, after, end,
           idle > 0 && after >= 0 ? (double)(after - before) / idle : 0.0, still);
    fflush(stdout);

    for (int i = 0; i < nconns; i++)
        if (conns[i].st == IDLE)
            close(conns[i].fd);
    return idle > 0 ? 0 : 1;
}
