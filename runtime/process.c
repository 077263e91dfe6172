/* The master process of `coserve -w N`: it runs no Lua. It starts N worker
 * processes (this same program, re-executed with COSERVE_WORKER=<id> in
 * the environment), restarts one that dies with a growing delay, gives up
 * when a worker keeps failing at start-up, and on SIGTERM/SIGINT asks every
 * worker to drain and waits for them.
 *
 * Workers are separate executions, not forks of a process that already
 * has a loop and a Lua state: nothing is shared but the environment and
 * the listening sockets. The master owns those: a worker's server asks it
 * over an inherited channel (COSERVE_MASTER_FD, a Unix socket) for the
 * socket of its address, and the master binds it, once per worker id, with
 * SO_REUSEPORT (the default of servers in a worker), so the kernel spreads
 * connections over the ids. The old and the new generation of one id share
 * one socket, and with it one accept queue: a retiring worker that closes
 * its copy loses no connection the kernel already queued.
 *
 * The channel's messages are lines; the master answers a request with 4
 * bytes (an int32: 0 with the descriptor attached, 1 "bind it yourself",
 * or a negative libuv error) and nothing to a release:
 *   L <reuse_port> <backlog> <port> <is_unix> <host or path>\n
 *   U <bound port> <is_unix> <host or path>\n
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define WORKER_QUICK_MS 1000    /* a worker that dies sooner failed at start-up */
#define WORKER_MAX_QUICK_FAILS 5
#define WORKER_BACKOFF_MAX_MS 5000
#define RELOAD_READY_MS 30000   /* new workers must be ready within this */
#define ORPHAN_MS 1000          /* a socket no worker holds any more is closed after this */
#define MASTER_REPLY_MS 3000    /* a worker waits this long for its master's answer */
#define CHAN_LINE 320           /* a channel message's longest line */

typedef struct master_s master_t;

/* A listening address that workers asked for, and the master's sockets
 * for it: one per worker id with reuse_port, else one for all (a Unix
 * path, reuse_port = false, or a socket inherited from systemd). */
typedef struct lsock_s {
  struct lsock_s *next;
  char host[256];         /* the literal address or the Unix path, as asked */
  int port;               /* as asked: 0 lets the first bind pick one ... */
  int bound_port;         /* ... which every other id's socket then binds */
  int is_unix;
  int reuse;
  int shared;             /* one socket for every id: `base` */
  int base;               /* shared: the socket; -1 once closed */
  int inherited;          /* base came from systemd: kept to the end */
  int *fd;                /* not shared: per id (n), -1 when not open */
  int *held;              /* per worker slot (2n): servers of it that use it */
} lsock_t;

typedef struct {
  master_t *m;
  int id;                 /* 1..n */
  int half;               /* 0 or 1: which generation slot it is */
  uv_process_t proc;
  uv_pipe_t notify;       /* the worker writes one byte on it when ready */
  uv_pipe_t chan;         /* the worker asks for listening sockets on it */
  int chan_open;
  size_t chan_len;
  char chan_buf[CHAN_LINE];
  uv_timer_t restart;
  int running;
  int ready;
  int retiring;           /* sent SIGTERM to drain: not to be restarted */
  int notify_open;
  uint64_t started;       /* loop time of the last start */
  int quick_fails;        /* consecutive deaths within WORKER_QUICK_MS */
  char buf[8];
} worker_t;

struct master_s {
  uv_loop_t loop;
  const cs_master_opts_t *opts;
  worker_t *workers;      /* 2n slots: two generations, for reloads */
  int n;
  int live;               /* the half that serves: 0 or 1 */
  int reloading;          /* a new generation is starting in the other half */
  uv_signal_t sighup;
  uv_timer_t reload_timer; /* gives up a reload whose workers never get ready */
  int stopping;           /* SIGTERM/SIGINT seen */
  int signals;
  int status;             /* the master's exit status */
  uv_signal_t sigint, sigterm;
  uv_signal_t sigusr1;    /* reopen the access logs: passed to the workers */
  uv_timer_t kill_timer;  /* SIGKILLs what is left after the grace period */
  char exe[4096];
  char **env;             /* environ plus COSERVE_WORKER=<id>, the fds and ... */
  char workers_env[32];   /* ... COSERVE_WORKERS=<n> */
  size_t env_len;
  lsock_t *lsocks;        /* the listening sockets the workers asked for */
  uv_timer_t orphan_timer; /* closes those no running worker holds */
  int listen_fds[16];     /* systemd socket activation: sockets not yet asked for */
  int nlisten_fds;
};

static void mlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The master's log lines, in the workers' format (log.c): fmt begins
 * with the level ("warn: ..."). */
static void mlog(const char *fmt, ...) {
  static const char *const levels[] = {"error: ", "warn: ", "info: ", "debug: "};
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  cs_log_level_t level = CS_LOG_INFO;
  const char *msg = line;
  for (int i = 0; i < 4; i++)
    if (strncmp(line, levels[i], strlen(levels[i])) == 0) {
      level = (cs_log_level_t)i;
      msg = line + strlen(levels[i]);
    }
  cs__log_line(-1, level, msg);
}

/* ---- the listening sockets (master side) ---- */

static int fd_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port) : 0;
}

/* A new socket bound to ls's address (on port) and listening, as a
 * worker's server_bind would make it. Returns 0 or a libuv error. */
static int lsock_bind(const lsock_t *ls, int port, int backlog, int *out) {
  struct sockaddr_storage ss;
  socklen_t len;
  memset(&ss, 0, sizeof ss);
  if (ls->is_unix) {
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    if (strlen(ls->host) >= sizeof un->sun_path)
      return UV_ENAMETOOLONG;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, ls->host);
    len = sizeof *un;
  } else if (uv_ip6_addr(ls->host, port, (struct sockaddr_in6 *)&ss) == 0) {
    len = sizeof(struct sockaddr_in6);
  } else if (uv_ip4_addr(ls->host, port, (struct sockaddr_in *)&ss) == 0) {
    len = sizeof(struct sockaddr_in);
  } else {
    return UV_EINVAL;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  int on = 1;
  if (!ls->is_unix) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on); /* as libuv's bind */
    if (ls->reuse)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  }
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  *out = fd;
  return 0;
}

static void lsock_close_fd(lsock_t *ls, int *fd) {
  if (*fd < 0)
    return;
  close(*fd);
  *fd = -1;
  if (ls->is_unix && !ls->inherited)
    unlink(ls->host);
}

/* Closes the sockets that no worker holds (all of them when `all`), and
 * forgets the addresses left with none open. */
static void lsock_sweep(master_t *m, int all) {
  lsock_t **pp = &m->lsocks, *ls;
  while ((ls = *pp) != NULL) {
    int open = 0;
    if (ls->shared) {
      int held = 0;
      for (int i = 0; i < 2 * m->n; i++)
        held += ls->held[i];
      if (all || (held == 0 && !ls->inherited))
        lsock_close_fd(ls, &ls->base);
      open = ls->base >= 0;
    } else {
      for (int i = 0; i < m->n; i++) {
        if (all || ls->held[i] + ls->held[m->n + i] == 0)
          lsock_close_fd(ls, &ls->fd[i]);
        open += ls->fd[i] >= 0;
      }
    }
    if (open) {
      pp = &ls->next;
      continue;
    }
    *pp = ls->next;
    free(ls->fd);
    free(ls->held);
    free(ls);
  }
}

static void orphan_timer_cb(uv_timer_t *t) {
  master_t *m = t->data;
  if (!m->stopping)
    lsock_sweep(m, 0);
}

/* Worker w holds nothing any more (it exited for good): the sockets only
 * it held are closed a moment later, unless its successor asks for them
 * first (a server the new code starts after its first wait). */
static void lsock_release_worker(worker_t *w) {
  master_t *m = w->m;
  int slot = (int)(w - m->workers);
  for (lsock_t *ls = m->lsocks; ls; ls = ls->next)
    ls->held[slot] = 0;
  if (m->lsocks && !m->stopping)
    uv_timer_start(&m->orphan_timer, orphan_timer_cb, ORPHAN_MS, 0);
}

static lsock_t *lsock_find(master_t *m, worker_t *w, const char *host, int port, int is_unix,
                           int reuse) {
  int slot = (int)(w - m->workers);
  for (lsock_t *ls = m->lsocks; ls; ls = ls->next) {
    if (ls->is_unix != is_unix || strcmp(ls->host, host) != 0)
      continue;
    if (is_unix)
      return ls;
    if (ls->port != port || (ls->reuse != reuse && !ls->inherited))
      continue;
    /* Port 0: each server of one worker gets a port of its own, and the
     * k-th such server on this host of every worker the k-th port. */
    if (port == 0 && ls->held[slot] > 0)
      continue;
    return ls;
  }
  return NULL;
}

static lsock_t *lsock_new(master_t *m, const char *host, int port, int is_unix, int reuse) {
  lsock_t *ls = calloc(1, sizeof *ls);
  if (ls == NULL || strlen(host) >= sizeof ls->host ||
      (ls->fd = malloc((size_t)m->n * sizeof *ls->fd)) == NULL ||
      (ls->held = calloc(2 * (size_t)m->n, sizeof *ls->held)) == NULL) {
    if (ls)
      free(ls->fd);
    free(ls);
    return NULL;
  }
  strcpy(ls->host, host);
  ls->port = ls->bound_port = port;
  ls->is_unix = is_unix;
  ls->reuse = reuse;
  ls->shared = is_unix || !reuse;
  ls->base = -1;
  for (int i = 0; i < m->n; i++)
    ls->fd[i] = -1;
  /* systemd's socket for this address, if there is one: every id shares it. */
  for (int i = 0; i < m->nlisten_fds; i++) {
    if (cs__activation_matches(m->listen_fds[i], host, port, is_unix)) {
      ls->base = m->listen_fds[i];
      ls->inherited = ls->shared = 1;
      m->listen_fds[i] = m->listen_fds[--m->nlisten_fds];
      break;
    }
  }
  lsock_t **pp = &m->lsocks; /* in the order asked, which port 0 relies on */
  while (*pp)
    pp = &(*pp)->next;
  *pp = ls;
  return ls;
}

/* Forgets an address none of whose sockets could be opened. */
static void lsock_forget_unused(master_t *m, lsock_t *ls) {
  if (ls->base >= 0)
    return;
  for (int i = 0; i < m->n; i++)
    if (ls->fd[i] >= 0)
      return;
  lsock_t **pp = &m->lsocks;
  while (*pp != ls)
    pp = &(*pp)->next;
  *pp = ls->next;
  free(ls->fd);
  free(ls->held);
  free(ls);
}

/* A worker asks for the socket of an address: 0 and *fd, 1 (bind it
 * yourself), or a libuv error (the bind's, reported as the worker's). */
static int master_listen(worker_t *w, const char *host, int port, int is_unix, int reuse,
                         int backlog, int *fd) {
  master_t *m = w->m;
  if (m->stopping)
    return 1;
  lsock_t *ls = lsock_find(m, w, host, port, is_unix, reuse);
  if (ls == NULL && (ls = lsock_new(m, host, port, is_unix, reuse)) == NULL)
    return UV_ENOMEM;
  int *f = ls->shared ? &ls->base : &ls->fd[w->id - 1];
  if (*f < 0) {
    int rc = lsock_bind(ls, ls->bound_port, backlog, f);
    if (rc != 0) {
      lsock_forget_unused(m, ls);
      return rc;
    }
    if (ls->bound_port == 0)
      ls->bound_port = fd_port(*f);
  }
  ls->held[w - m->workers]++;
  *fd = *f;
  return 0;
}

/* A worker's server that stopped listening (not for a shutdown) lets go. */
static void master_release(worker_t *w, const char *host, int port, int is_unix) {
  master_t *m = w->m;
  int slot = (int)(w - m->workers);
  for (lsock_t *ls = m->lsocks; ls; ls = ls->next) {
    if (ls->is_unix == is_unix && strcmp(ls->host, host) == 0 && ls->held[slot] > 0 &&
        (is_unix || ls->bound_port == port)) {
      if (--ls->held[slot] == 0 && !m->stopping)
        uv_timer_start(&m->orphan_timer, orphan_timer_cb, ORPHAN_MS, 0);
      return;
    }
  }
}

/* ---- the channel: a worker's requests ---- */

static void chan_reply(worker_t *w, int32_t status, int fd) {
  uv_os_fd_t cfd;
  if (uv_fileno((uv_handle_t *)&w->chan, &cfd) != 0)
    return;
  struct iovec iov = {.iov_base = &status, .iov_len = sizeof status};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do
    n = sendmsg(cfd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  /* A worker that cannot read its answer times out and binds itself. */
  if (n != (ssize_t)sizeof status)
    mlog("warn: worker %d: cannot answer it: %s", w->id, n < 0 ? strerror(errno) : "short write");
}

static void chan_message(worker_t *w, const char *line) {
  int reuse, backlog, port, is_unix, off = 0;
  if (sscanf(line, "L %d %d %d %d %n", &reuse, &backlog, &port, &is_unix, &off) == 4 && off > 0) {
    int fd = -1;
    int rc = master_listen(w, line + off, port, is_unix, reuse, backlog, &fd);
    chan_reply(w, rc, fd);
  } else if (sscanf(line, "U %d %d %n", &port, &is_unix, &off) == 2 && off > 0) {
    master_release(w, line + off, port, is_unix);
  } else {
    mlog("warn: worker %d: a message the master does not know", w->id);
  }
}

static void worker_close_chan(worker_t *w) {
  if (w->chan_open) {
    w->chan_open = 0;
    uv_close((uv_handle_t *)&w->chan, NULL);
  }
}

static void chan_alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  worker_t *w = h->data;
  (void)size;
  buf->base = w->chan_buf + w->chan_len;
  buf->len = sizeof w->chan_buf - w->chan_len;
}

static void chan_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  worker_t *w = s->data;
  (void)buf;
  if (nread < 0) {
    worker_close_chan(w);
    return;
  }
  w->chan_len += (size_t)nread;
  char *nl;
  while ((nl = memchr(w->chan_buf, '\n', w->chan_len)) != NULL) {
    *nl = '\0';
    chan_message(w, w->chan_buf);
    size_t used = (size_t)(nl + 1 - w->chan_buf);
    memmove(w->chan_buf, nl + 1, w->chan_len - used);
    w->chan_len -= used;
  }
  if (w->chan_len == sizeof w->chan_buf) {
    mlog("warn: worker %d: a message too long: its channel is closed", w->id);
    worker_close_chan(w);
  }
}

static int running_workers(master_t *m) {
  int n = 0;
  for (int i = 0; i < 2 * m->n; i++)
    n += m->workers[i].running;
  return n;
}

static void master_close_all(master_t *m) {
  uv_close((uv_handle_t *)&m->orphan_timer, NULL);
  uv_close((uv_handle_t *)&m->sigint, NULL);
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->sighup, NULL);
  uv_close((uv_handle_t *)&m->sigusr1, NULL);
  uv_close((uv_handle_t *)&m->kill_timer, NULL);
  uv_close((uv_handle_t *)&m->reload_timer, NULL);
  for (int i = 0; i < 2 * m->n; i++)
    uv_close((uv_handle_t *)&m->workers[i].restart, NULL);
}

static void master_signal_workers(master_t *m, int signum) {
  for (int i = 0; i < 2 * m->n; i++)
    if (m->workers[i].running)
      uv_process_kill(&m->workers[i].proc, signum);
}

/* Sends SIGTERM to the running workers of one half, which then drain. */
static void master_retire_half(master_t *m, int half) {
  for (int i = 0; i < m->n; i++) {
    worker_t *w = &m->workers[half * m->n + i];
    uv_timer_stop(&w->restart);
    if (w->running) {
      w->retiring = 1;
      uv_process_kill(&w->proc, SIGTERM);
    }
  }
}

static void kill_timer_cb(uv_timer_t *t) {
  master_t *m = t->data;
  mlog("warn: %d worker(s) still running after the grace period: killed", running_workers(m));
  master_signal_workers(m, SIGKILL);
}

/* Asks every worker to drain (as the CLI does on SIGTERM) and bounds it. */
static void master_stop(master_t *m, int status) {
  if (m->stopping)
    return;
  m->stopping = 1;
  m->status = status;
  uv_timer_stop(&m->reload_timer);
  /* New connections are refused from now on, as with a single process. */
  uv_timer_stop(&m->orphan_timer);
  lsock_sweep(m, 1);
  for (int i = 0; i < 2 * m->n; i++)
    uv_timer_stop(&m->workers[i].restart);
  master_signal_workers(m, SIGTERM);
  uv_timer_start(&m->kill_timer, kill_timer_cb, (uint64_t)(m->opts->grace * 1000) + 2000, 0);
  if (running_workers(m) == 0)
    master_close_all(m);
}

static int worker_start(worker_t *w);

static void worker_restart_cb(uv_timer_t *t) {
  worker_t *w = t->data;
  if (!w->m->stopping && worker_start(w) != 0)
    master_stop(w->m, 1);
}

static void reload_failed(master_t *m, const char *why) {
  mlog("error: reload failed (%s): the old workers keep serving", why);
  m->reloading = 0;
  uv_timer_stop(&m->reload_timer);
  master_retire_half(m, !m->live);
}

static void reload_timer_cb(uv_timer_t *t) {
  reload_failed(t->data, "new workers not ready in time");
}

/* Once every new worker is ready, the old ones stop accepting and drain. */
static void reload_check(master_t *m) {
  if (!m->reloading)
    return;
  int half = !m->live;
  for (int i = 0; i < m->n; i++)
    if (!m->workers[half * m->n + i].ready)
      return;
  m->reloading = 0;
  uv_timer_stop(&m->reload_timer);
  master_retire_half(m, m->live);
  m->live = half;
  mlog("info: reload: %d new worker(s) ready; the old ones drain", m->n);
}

static void worker_close_notify(worker_t *w) {
  if (w->notify_open) {
    w->notify_open = 0;
    uv_close((uv_handle_t *)&w->notify, NULL);
  }
}

static void notify_alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  worker_t *w = h->data;
  (void)size;
  buf->base = w->buf;
  buf->len = sizeof w->buf;
}

static void notify_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  worker_t *w = s->data;
  (void)buf;
  if (nread > 0 && !w->ready) {
    w->ready = 1;
    reload_check(w->m);
  } else if (nread < 0) {
    worker_close_notify(w);
  }
}

static void worker_exit_cb(uv_process_t *p, int64_t status, int signum) {
  worker_t *w = p->data;
  master_t *m = w->m;
  w->running = 0;
  uv_close((uv_handle_t *)p, NULL);
  worker_close_notify(w);
  worker_close_chan(w);
  if (m->stopping || w->retiring) {
    if (signum)
      mlog("info: worker %d (pid %d) exited by signal %d", w->id, (int)p->pid, signum);
    else
      mlog("info: worker %d (pid %d) exited with status %d", w->id, (int)p->pid, (int)status);
  }
  if (m->stopping) {
    if (running_workers(m) == 0)
      master_close_all(m);
    return;
  }
  if (w->retiring) {
    lsock_release_worker(w); /* drained after a reload, or given up */
    return;
  }
  if (m->reloading && w->half != m->live && !w->ready) {
    char why[96];
    snprintf(why, sizeof why, "a new worker exited with status %d before it was ready",
             signum ? 128 + signum : (int)status);
    lsock_release_worker(w);
    reload_failed(m, why);
    return;
  }
  /* A worker to be restarted keeps its sockets: what the kernel queued on
   * them waits for its successor. */
  uint64_t lived = uv_now(&m->loop) - w->started;
  w->quick_fails = lived < WORKER_QUICK_MS ? w->quick_fails + 1 : 0;
  if (signum)
    mlog("warn: worker %d died by signal %d", w->id, signum);
  else
    mlog("warn: worker %d exited with status %d", w->id, (int)status);
  if (w->quick_fails >= WORKER_MAX_QUICK_FAILS) {
    mlog("error: worker %d failed at start-up %d times in a row: giving up", w->id,
         w->quick_fails);
    master_stop(m, 1);
    return;
  }
  uint64_t delay = 100;
  for (int i = 1; i < w->quick_fails && delay < WORKER_BACKOFF_MAX_MS; i++)
    delay *= 2;
  if (delay > WORKER_BACKOFF_MAX_MS)
    delay = WORKER_BACKOFF_MAX_MS;
  uv_timer_start(&w->restart, worker_restart_cb, delay, 0);
}

static int worker_start(worker_t *w) {
  master_t *m = w->m;
  char id[32];
  snprintf(id, sizeof id, "COSERVE_WORKER=%d", w->id);
  m->env[m->env_len] = id; /* the slots reserved for them; copied by uv_spawn */
  m->env[m->env_len + 1] = "COSERVE_NOTIFY_FD=3";
  m->env[m->env_len + 2] = "COSERVE_MASTER_FD=4";
  m->env[m->env_len + 3] = m->workers_env;
  uv_stdio_container_t stdio[5];
  for (int i = 0; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  uv_pipe_init(&m->loop, &w->notify, 0);
  w->notify.data = w;
  w->notify_open = 1;
  w->ready = 0;
  w->retiring = 0;
  /* A restarted worker asks again for what its predecessor held. */
  for (lsock_t *ls = m->lsocks; ls; ls = ls->next)
    ls->held[w - m->workers] = 0;
  stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&w->notify;
  uv_pipe_init(&m->loop, &w->chan, 0);
  w->chan.data = w;
  w->chan_open = 1;
  w->chan_len = 0;
  stdio[4].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[4].data.stream = (uv_stream_t *)&w->chan;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = m->exe;
  o.args = m->opts->worker_argv;
  o.env = m->env;
  o.exit_cb = worker_exit_cb;
  o.stdio_count = 5;
  o.stdio = stdio;
  w->proc.data = w;
  int rc = uv_spawn(&m->loop, &w->proc, &o);
  m->env[m->env_len] = NULL;
  if (rc != 0) {
    mlog("error: cannot start worker %d: %s", w->id, uv_strerror(rc));
    worker_close_notify(w);
    worker_close_chan(w);
    return rc;
  }
  uv_read_start((uv_stream_t *)&w->notify, notify_alloc_cb, notify_read_cb);
  uv_read_start((uv_stream_t *)&w->chan, chan_alloc_cb, chan_read_cb);
  w->running = 1;
  w->started = uv_now(&m->loop);
  mlog("info: worker %d started (pid %d)", w->id, (int)w->proc.pid);
  return 0;
}

static void master_signal_cb(uv_signal_t *s, int signum) {
  master_t *m = s->data;
  if (++m->signals > 1 && signum == SIGINT) {
    master_signal_workers(m, SIGKILL);
    fprintf(stderr, "coserve: interrupted\n");
    exit(130);
  }
  master_stop(m, 0);
}

/* SIGUSR1 (logrotate's): every worker reopens its access logs. A worker
 * not yet ready is skipped: it may not watch the signal yet, and the logs
 * it opens are the new files anyway. */
static void master_sigusr1_cb(uv_signal_t *s, int signum) {
  master_t *m = s->data;
  for (int i = 0; i < 2 * m->n; i++)
    if (m->workers[i].running && m->workers[i].ready)
      uv_process_kill(&m->workers[i].proc, signum);
}

/* SIGHUP: a new generation of workers loads the app again in the other
 * half; the old one is retired once all of them are ready. */
static void master_sighup_cb(uv_signal_t *s, int signum) {
  master_t *m = s->data;
  (void)signum;
  if (m->stopping || m->reloading) {
    mlog("warn: reload ignored: %s", m->stopping ? "shutting down" : "a reload is under way");
    return;
  }
  int half = !m->live;
  for (int i = 0; i < m->n; i++)
    if (m->workers[half * m->n + i].running) {
      mlog("warn: reload ignored: the previous generation is still draining");
      return;
    }
  mlog("info: reload: starting %d new worker(s)", m->n);
  m->reloading = 1;
  uv_timer_start(&m->reload_timer, reload_timer_cb, RELOAD_READY_MS, 0);
  for (int i = 0; i < m->n; i++) {
    worker_t *w = &m->workers[half * m->n + i];
    w->quick_fails = 0;
    if (worker_start(w) != 0) {
      reload_failed(m, "a new worker could not be started");
      return;
    }
  }
}

int cs_master_run(const cs_master_opts_t *opts) {
  master_t m;
  memset(&m, 0, sizeof m);
  m.opts = opts;
  m.n = opts->workers;
  ssize_t len = readlink("/proc/self/exe", m.exe, sizeof m.exe - 1);
  if (len <= 0) {
    fprintf(stderr, "coserve: cannot find its own executable: %s\n", strerror(errno));
    return 1;
  }
  /* systemd socket activation: the master hands these to its workers. */
  const char *lpid = getenv("LISTEN_PID"), *lfds = getenv("LISTEN_FDS");
  if (lpid && lfds && atol(lpid) == (long)getpid()) {
    int n = atoi(lfds);
    for (int i = 0; i < n && m.nlisten_fds < (int)(sizeof m.listen_fds / sizeof(int)); i++) {
      fcntl(3 + i, F_SETFD, FD_CLOEXEC); /* SD_LISTEN_FDS_START: workers get them by asking */
      m.listen_fds[m.nlisten_fds++] = 3 + i;
    }
  }
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  extern char **environ;
  size_t envc = 0;
  while (environ[envc])
    envc++;
  m.env = calloc(envc + 5, sizeof *m.env);
  m.workers = calloc(2 * (size_t)m.n, sizeof *m.workers);
  if (m.env == NULL || m.workers == NULL || uv_loop_init(&m.loop) != 0) {
    free(m.env);
    free(m.workers);
    fprintf(stderr, "coserve: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < envc; i++)
    if (strncmp(environ[i], "COSERVE_WORKER=", 15) != 0 &&
        strncmp(environ[i], "COSERVE_NOTIFY_FD=", 18) != 0 &&
        strncmp(environ[i], "COSERVE_MASTER_FD=", 18) != 0 &&
        strncmp(environ[i], "COSERVE_WORKERS=", 16) != 0)
      m.env[m.env_len++] = environ[i];
  snprintf(m.workers_env, sizeof m.workers_env, "COSERVE_WORKERS=%d", m.n);

  FILE *pf = NULL;
  if (opts->pid_file && (pf = fopen(opts->pid_file, "w")) != NULL) {
    fprintf(pf, "%d\n", (int)getpid());
    fclose(pf);
  } else if (opts->pid_file) {
    fprintf(stderr, "coserve: cannot write %s: %s\n", opts->pid_file, strerror(errno));
  }

  uv_signal_init(&m.loop, &m.sigint);
  uv_signal_init(&m.loop, &m.sigterm);
  uv_signal_init(&m.loop, &m.sighup);
  uv_signal_init(&m.loop, &m.sigusr1);
  uv_timer_init(&m.loop, &m.kill_timer);
  uv_timer_init(&m.loop, &m.reload_timer);
  uv_timer_init(&m.loop, &m.orphan_timer);
  m.sigint.data = m.sigterm.data = m.sighup.data = m.sigusr1.data = &m;
  m.kill_timer.data = m.reload_timer.data = m.orphan_timer.data = &m;
  uv_signal_start(&m.sigint, master_signal_cb, SIGINT);
  uv_signal_start(&m.sigterm, master_signal_cb, SIGTERM);
  uv_signal_start(&m.sighup, master_sighup_cb, SIGHUP);
  uv_signal_start(&m.sigusr1, master_sigusr1_cb, SIGUSR1);
  for (int i = 0; i < 2 * m.n; i++) {
    worker_t *w = &m.workers[i];
    w->m = &m;
    w->id = i % m.n + 1;
    w->half = i / m.n;
    uv_timer_init(&m.loop, &w->restart);
    w->restart.data = w;
  }
  int failed = 0;
  for (int i = 0; i < m.n && !failed; i++)
    failed = worker_start(&m.workers[i]) != 0;
  if (failed)
    master_stop(&m, 1);
  uv_run(&m.loop, UV_RUN_DEFAULT);
  uv_loop_close(&m.loop);
  lsock_sweep(&m, 1);
  for (int i = 0; i < m.nlisten_fds; i++)
    close(m.listen_fds[i]);
  if (opts->pid_file && pf)
    unlink(opts->pid_file);
  free(m.env);
  free(m.workers);
  return m.status;
}

/* ---- the channel: a worker's side ---- */

void cs__master_channel_init(cs_runtime_t *rt) {
  rt->master_fd = -1;
  const char *fd = getenv("COSERVE_MASTER_FD");
  if (fd == NULL)
    return;
  if (getenv("COSERVE_WORKER") != NULL && fcntl(atoi(fd), F_SETFD, FD_CLOEXEC) == 0)
    rt->master_fd = atoi(fd);
  unsetenv("COSERVE_MASTER_FD");
}

/* From now on this worker's servers bind their own sockets, as alone. */
static void master_channel_lost(cs_runtime_t *rt, const char *why) {
  cs__log(rt, CS_LOG_WARN, "no listening socket from the master (%s): servers bind their own",
          why);
  close(rt->master_fd);
  rt->master_fd = -1;
}

static int chan_send(int fd, const char *line, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, line, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    line += n;
    len -= (size_t)n;
  }
  return 0;
}

int cs__master_socket(cs_runtime_t *rt, const char *host, int port, int is_unix, int reuse_port,
                      int backlog, int *fd) {
  *fd = -1;
  if (rt->master_fd < 0 || strchr(host, '\n') != NULL)
    return 0;
  char line[CHAN_LINE];
  int len = snprintf(line, sizeof line, "L %d %d %d %d %s\n", reuse_port ? 1 : 0, backlog, port,
                     is_unix ? 1 : 0, host);
  if (len <= 0 || len >= (int)sizeof line)
    return 0;
  if (chan_send(rt->master_fd, line, (size_t)len) != 0) {
    master_channel_lost(rt, strerror(errno));
    return 0;
  }
  /* A short blocking exchange: the master answers from its loop at once,
   * but one that does not must not hang the worker. */
  int32_t status = 0;
  size_t got = 0;
  uint64_t deadline = uv_hrtime() / 1000000 + MASTER_REPLY_MS;
  while (got < sizeof status) {
    uint64_t now = uv_hrtime() / 1000000;
    struct pollfd pfd = {.fd = rt->master_fd, .events = POLLIN};
    int r = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
    if (r < 0 && errno == EINTR)
      continue;
    const char *why = r == 0 ? "no answer within 3 s" : NULL;
    ssize_t n = -1;
    if (r > 0) {
      union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
      } ctl;
      struct iovec iov = {.iov_base = (char *)&status + got, .iov_len = sizeof status - got};
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = ctl.buf;
      msg.msg_controllen = sizeof ctl.buf;
      do
        n = recvmsg(rt->master_fd, &msg, MSG_CMSG_CLOEXEC);
      while (n < 0 && errno == EINTR);
      for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int))) {
          int got_fd;
          memcpy(&got_fd, CMSG_DATA(c), sizeof got_fd);
          if (*fd >= 0)
            close(*fd);
          *fd = got_fd;
        }
      }
      if (n == 0)
        why = "the master closed its channel";
      else if (n < 0)
        why = strerror(errno);
    }
    if (why != NULL) {
      master_channel_lost(rt, why);
      if (*fd >= 0)
        close(*fd);
      *fd = -1;
      return 0;
    }
    got += (size_t)n;
  }
  if (status == 0 && *fd >= 0)
    return 0;
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
  return status < 0 ? status : 0;
}

void cs__master_release(cs_runtime_t *rt, const char *host, int port, int is_unix) {
  if (rt->master_fd < 0 || rt->exiting || strchr(host, '\n') != NULL)
    return;
  char line[CHAN_LINE];
  int len = snprintf(line, sizeof line, "U %d %d %s\n", port, is_unix ? 1 : 0, host);
  if (len > 0 && len < (int)sizeof line && chan_send(rt->master_fd, line, (size_t)len) != 0)
    master_channel_lost(rt, strerror(errno));
}
