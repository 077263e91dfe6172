/*
 * pingpong -- single-threaded epoll load generator for TCP echo servers.
 *
 * usage: pingpong -h HOST -p PORT [-c CONNS] [-d SECONDS] [-s SIZE]
 *                 [-w WARMUP_SECONDS] [-C CPU] [-P PID] [-T CONNECT_TIMEOUT]
 *
 * Opens CONNS connections.  Each one plays ping-pong: send SIZE bytes, wait
 * until all SIZE bytes have come back (and match), send again.  So there are
 * exactly CONNS messages in flight and the server is never pipelined; what is
 * measured is how fast it turns requests around under that concurrency.
 *
 * Timeline: connect all -> warm-up (not counted: lets caches, the JIT and
 * TCP state settle) -> measured window of SECONDS -> print one line and exit.
 * The program always stops on its own: the connect phase is bounded by
 * CONNECT_TIMEOUT and the rest by WARMUP + SECONDS.
 *
 * Output (one machine-readable line on stdout):
 *   rt=... rps=... p50_us=... p90_us=... p99_us=... p999_us=... max_us=...
 *   errors=... conns=... secs=... cli_cpu=... [cpu_busy=...] [srv_cpu=...]
 *
 * -C CPU samples the "cpuCPU" line of /proc/stat at the start and the end of
 * the measured window and reports the busy fraction of that core
 * (busy = total - idle - iowait), i.e. everything the core did: the server in
 * user space, its system calls, and the softirq network work that landed on
 * it.  -P PID reports the CPU time of process PID (utime + stime, all
 * threads) over the same window, as a fraction of one core.  cli_cpu is this
 * program's own CPU use over the window: near 1.0 means the load generator,
 * not the server, may be the bottleneck.  Doing this here
 * rather than in the driver script makes the sample window exactly the
 * measured window.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -O2 pingpong.c -o pingpong
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

enum state { CONNECTING, SENDING, RECEIVING, DEAD };

typedef struct {
    int fd;
    enum state st;
    size_t done;       /* bytes sent (SENDING) or received (RECEIVING) */
    uint64_t t_start;  /* ns, when the current ping's first byte went out */
    char *rbuf;        /* SIZE bytes, receives the echo */
} conn_t;

static size_t msg_size = 64;
static char *msg; /* the ping payload, shared by all connections */
static int epfd;

/* round_trips and hist are reset when the measured window starts; errors
 * (failed connects, resets, bad echoes) are counted over the whole run. */
static uint64_t round_trips;
static uint64_t errors;
static hist_t hist;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* ---- /proc sampling -------------------------------------------------- */

typedef struct {
    unsigned long long busy, total;
    int ok;
} cpu_sample_t;

/* One "cpuN" line of /proc/stat.  Fields: user nice system idle iowait irq
 * softirq steal [guest guest_nice] -- guest time is already inside user, so
 * only the first eight are summed. */
static cpu_sample_t sample_cpu(int cpu) {
    cpu_sample_t s = {0, 0, 0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return s;
    char want[32], line[512];
    snprintf(want, sizeof want, "cpu%d ", cpu);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, want, strlen(want)) != 0)
            continue;
        unsigned long long v[8] = {0};
        if (sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu %llu",
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) >= 5) {
            for (int i = 0; i < 8; i++)
                s.total += v[i];
            s.busy = s.total - v[3] - v[4];
            s.ok = 1;
        }
        break;
    }
    fclose(f);
    return s;
}

/* CPU time used by this process so far, in seconds. */
static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of a process in clock ticks (all threads), or -1. */
static long long sample_proc(long pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may contain spaces and parens: fields resume after the last ')'.
     * After it come field 3 (state) ... field 14 utime, 15 stime. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut, st;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* ---- connections ----------------------------------------------------- */

static void kill_conn(conn_t *c) {
    if (c->st == DEAD)
        return;
    errors++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->st = DEAD;
}

static void set_events(conn_t *c, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0)
        kill_conn(c);
}

/* Push the rest of the ping out.  Returns 0 if complete, 1 if the socket
 * buffer is full (wait for EPOLLOUT), -1 on error. */
static int send_some(conn_t *c) {
    while (c->done < msg_size) {
        ssize_t n = send(c->fd, msg + c->done, msg_size - c->done, MSG_NOSIGNAL);
        if (n > 0) {
            c->done += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Start a new ping; switch epoll interest only when the state requires it
 * (in steady state a 64-byte send always completes, so no epoll_ctl). */
static void start_ping(conn_t *c, int was_waiting_out) {
    c->done = 0;
    c->t_start = now_ns();
    c->st = SENDING;
    int r = send_some(c);
    if (r < 0) {
        kill_conn(c);
    } else if (r == 0) {
        c->st = RECEIVING;
        c->done = 0;
        if (was_waiting_out)
            set_events(c, EPOLLIN);
    } else if (!was_waiting_out) {
        set_events(c, EPOLLOUT);
    }
}

static void on_readable(conn_t *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->done, msg_size - c->done, 0);
        if (n > 0) {
            c->done += (size_t)n;
            if (c->done < msg_size)
                continue;
            if (memcmp(c->rbuf, msg, msg_size) != 0) {
                kill_conn(c); /* the server echoed something else */
                return;
            }
            uint64_t rtt_us = (now_ns() - c->t_start) / 1000u;
            round_trips++;
            hist_record(&hist, rtt_us);
            start_ping(c, 0);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        kill_conn(c); /* EOF or error */
        return;
    }
}

static void on_event(conn_t *c, uint32_t ev) {
    if (c->st == DEAD)
        return;
    if (c->st == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0 ||
            (ev & (EPOLLERR | EPOLLHUP))) {
            kill_conn(c);
            return;
        }
        start_ping(c, 1);
        return;
    }
    if (ev & (EPOLLERR | EPOLLHUP)) {
        kill_conn(c);
        return;
    }
    if (c->st == SENDING && (ev & EPOLLOUT)) {
        int r = send_some(c);
        if (r < 0) {
            kill_conn(c);
        } else if (r == 0) {
            c->st = RECEIVING;
            c->done = 0;
            set_events(c, EPOLLIN);
        }
    } else if (c->st == RECEIVING && (ev & EPOLLIN)) {
        on_readable(c);
    }
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s -h HOST -p PORT [-c CONNS] [-d SECONDS] [-s SIZE]\n"
            "          [-w WARMUP_SECONDS] [-C CPU] [-P PID] [-T CONNECT_TIMEOUT]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, nconns = 100, cpu = -1;
    long pid = -1;
    double seconds = 5.0, warmup = 0.5, connect_timeout = 5.0;

    int opt;
    while ((opt = getopt(argc, argv, "h:p:c:d:s:w:C:P:T:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 's': msg_size = (size_t)atol(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'C': cpu = atoi(optarg); break;
        case 'P': pid = atol(optarg); break;
        case 'T': connect_timeout = atof(optarg); break;
        default: usage(argv[0]);
        }
    }
    if (port <= 0 || port > 65535 || nconns <= 0 || seconds <= 0 || warmup < 0 ||
        msg_size == 0 || msg_size > 65536 || connect_timeout <= 0)
        usage(argv[0]);

    /* SIZE is capped at 64 KiB because a connection only reads once its whole
     * ping is sent: the echo must fit in the client's receive buffer, or a
     * server with backpressure and this client would wait on each other. */
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "pingpong: HOST must be an IPv4 address, got '%s'\n", host);
        return 2;
    }

    /* Payload with a recognisable, position-dependent pattern so a server
     * that reorders or truncates bytes fails the memcmp. */
    msg = malloc(msg_size);
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    char *rbufs = malloc(msg_size * (size_t)nconns);
    if (!msg || !conns || !rbufs)
        die("malloc");
    for (size_t i = 0; i < msg_size; i++)
        msg[i] = (char)('a' + i % 26);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->rbuf = rbufs + (size_t)i * msg_size;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) { /* e.g. EMFILE: count it, carry on with fewer */
            c->st = DEAD;
            errors++;
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->st = CONNECTING;
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            close(c->fd);
            c->st = DEAD;
            errors++;
            continue;
        }
        struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e) < 0) {
            close(c->fd);
            c->st = DEAD;
            errors++;
        }
    }

    enum { PH_CONNECT, PH_WARMUP, PH_MEASURE } phase = PH_CONNECT;
    const uint64_t t0 = now_ns();
    uint64_t connect_deadline = t0 + (uint64_t)(connect_timeout * 1e9);
    uint64_t warmup_end = 0, measure_start = 0, measure_end = 0;
    cpu_sample_t cpu_a = {0, 0, 0};
    long long proc_a = -1;
    double self_a = 0;
    int established = 0;

    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();

        if (phase == PH_CONNECT) {
            int pending = 0;
            for (int i = 0; i < nconns; i++)
                pending += conns[i].st == CONNECTING;
            if (pending > 0 && now >= connect_deadline) {
                for (int i = 0; i < nconns; i++)
                    if (conns[i].st == CONNECTING)
                        kill_conn(&conns[i]);
                pending = 0;
            }
            if (pending == 0) {
                for (int i = 0; i < nconns; i++)
                    established += conns[i].st != DEAD;
                if (established == 0) {
                    fprintf(stderr, "pingpong: no connection to %s:%d could be made\n", host, port);
                    printf("rt=0 rps=0.0 p50_us=0 p90_us=0 p99_us=0 p999_us=0 max_us=0 "
                           "errors=%llu conns=0 secs=0.000\n",
                           (unsigned long long)errors);
                    return 1;
                }
                phase = PH_WARMUP;
                warmup_end = now + (uint64_t)(warmup * 1e9);
            }
        }
        if (phase == PH_WARMUP && now >= warmup_end) {
            /* Start of the measured window: forget everything so far. */
            phase = PH_MEASURE;
            round_trips = 0; /* errors are not reset: a failed connect counts */
            hist_reset(&hist);
            if (cpu >= 0)
                cpu_a = sample_cpu(cpu);
            if (pid > 0)
                proc_a = sample_proc(pid);
            self_a = self_cpu();
            measure_start = now_ns();
            measure_end = measure_start + (uint64_t)(seconds * 1e9);
        }
        if (phase == PH_MEASURE && now >= measure_end)
            break;

        uint64_t next = phase == PH_CONNECT ? connect_deadline
                      : phase == PH_WARMUP  ? warmup_end
                                            : measure_end;
        int timeout_ms = next > now ? (int)((next - now + 999999) / 1000000) : 0;
        if (timeout_ms > 100)
            timeout_ms = 100; /* re-check the phase regularly */
        int n = epoll_wait(epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
    }

    /* End of the measured window: take the samples before anything else. */
    uint64_t t_end = now_ns();
    cpu_sample_t cpu_b = cpu >= 0 ? sample_cpu(cpu) : cpu_a;
    long long proc_b = pid > 0 ? sample_proc(pid) : -1;
    double self_b = self_cpu();
    double secs = (double)(t_end - measure_start) / 1e9;

    int alive = 0;
    for (int i = 0; i < nconns; i++)
        alive += conns[i].st != DEAD;

    printf("rt=%llu rps=%.1f p50_us=%llu p90_us=%llu p99_us=%llu p999_us=%llu max_us=%llu "
           "errors=%llu conns=%d secs=%.3f cli_cpu=%.4f",
           (unsigned long long)round_trips, (double)round_trips / secs,
           (unsigned long long)hist_percentile(&hist, 0.50),
           (unsigned long long)hist_percentile(&hist, 0.90),
           (unsigned long long)hist_percentile(&hist, 0.99),
           (unsigned long long)hist_percentile(&hist, 0.999),
           (unsigned long long)hist_percentile(&hist, 1.0), (unsigned long long)errors, alive,
           secs, (self_b - self_a) / secs);
    if (cpu >= 0 && cpu_a.ok && cpu_b.ok && cpu_b.total > cpu_a.total)
        printf(" cpu_busy=%.4f", (double)(cpu_b.busy - cpu_a.busy) / (double)(cpu_b.total - cpu_a.total));
    if (pid > 0 && proc_a >= 0 && proc_b >= 0)
        printf(" srv_cpu=%.4f", (double)(proc_b - proc_a) / (double)sysconf(_SC_CLK_TCK) / secs);
    printf("\n");
    fflush(stdout);

    for (int i = 0; i < nconns; i++)
        if (conns[i].st != DEAD)
            close(conns[i].fd);
    return 0;
}
