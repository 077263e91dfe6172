/* The master process of `coserve -w N`: it runs no Lua. It starts N worker
 * processes (this same program, re-executed with COSERVE_WORKER=<id> in
 * the environment), restarts one that dies with a growing delay, gives up
 * when a worker keeps failing at start-up, and on SIGTERM/SIGINT asks every
 * worker to drain and waits for them.
 *
 * Workers are separate executions, not forks of a process that already
 * has a loop and a Lua state: nothing is shared but the environment. They
 * listen with SO_REUSEPORT (the default of servers in a worker), so the
 * kernel spreads connections over them. */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define WORKER_QUICK_MS 1000    /* a worker that dies sooner failed at start-up */
#define WORKER_MAX_QUICK_FAILS 5
#define WORKER_BACKOFF_MAX_MS 5000
#define RELOAD_READY_MS 30000   /* new workers must be ready within this */

typedef struct master_s master_t;

typedef struct {
  master_t *m;
  int id;                 /* 1..n */
  int half;               /* 0 or 1: which generation slot it is */
  uv_process_t proc;
  uv_pipe_t notify;       /* the worker writes one byte on it when ready */
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
  uv_timer_t kill_timer;  /* SIGKILLs what is left after the grace period */
  char exe[4096];
  char **env;             /* environ plus COSERVE_WORKER=<id> */
  size_t env_len;
};

static void mlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The master's log lines, in the workers' format. */
static void mlog(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "coserve[master:%d] %s\n", (int)getpid(), line);
}

static int running_workers(master_t *m) {
  int n = 0;
  for (int i = 0; i < 2 * m->n; i++)
    n += m->workers[i].running;
  return n;
}

static void master_close_all(master_t *m) {
  uv_close((uv_handle_t *)&m->sigint, NULL);
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->sighup, NULL);
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
  if (m->stopping) {
    if (running_workers(m) == 0)
      master_close_all(m);
    return;
  }
  if (w->retiring)
    return; /* drained after a reload, or given up */
  if (m->reloading && w->half != m->live && !w->ready) {
    char why[96];
    snprintf(why, sizeof why, "a new worker exited with status %d before it was ready",
             signum ? 128 + signum : (int)status);
    reload_failed(m, why);
    return;
  }
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
  uv_stdio_container_t stdio[4];
  for (int i = 0; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  uv_pipe_init(&m->loop, &w->notify, 0);
  w->notify.data = w;
  w->notify_open = 1;
  w->ready = 0;
  w->retiring = 0;
  stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&w->notify;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = m->exe;
  o.args = m->opts->worker_argv;
  o.env = m->env;
  o.exit_cb = worker_exit_cb;
  o.stdio_count = 4;
  o.stdio = stdio;
  w->proc.data = w;
  int rc = uv_spawn(&m->loop, &w->proc, &o);
  m->env[m->env_len] = NULL;
  if (rc != 0) {
    mlog("error: cannot start worker %d: %s", w->id, uv_strerror(rc));
    worker_close_notify(w);
    return rc;
  }
  uv_read_start((uv_stream_t *)&w->notify, notify_alloc_cb, notify_read_cb);
  w->running = 1;
  w->started = uv_now(&m->loop);
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
  extern char **environ;
  size_t envc = 0;
  while (environ[envc])
    envc++;
  m.env = calloc(envc + 3, sizeof *m.env);
  m.workers = calloc(2 * (size_t)m.n, sizeof *m.workers);
  if (m.env == NULL || m.workers == NULL || uv_loop_init(&m.loop) != 0) {
    free(m.env);
    free(m.workers);
    fprintf(stderr, "coserve: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < envc; i++)
    if (strncmp(environ[i], "COSERVE_WORKER=", 15) != 0 &&
        strncmp(environ[i], "COSERVE_NOTIFY_FD=", 18) != 0)
      m.env[m.env_len++] = environ[i];

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
  uv_timer_init(&m.loop, &m.kill_timer);
  uv_timer_init(&m.loop, &m.reload_timer);
  m.sigint.data = m.sigterm.data = m.sighup.data = &m;
  m.kill_timer.data = m.reload_timer.data = &m;
  uv_signal_start(&m.sigint, master_signal_cb, SIGINT);
  uv_signal_start(&m.sigterm, master_signal_cb, SIGTERM);
  uv_signal_start(&m.sighup, master_sighup_cb, SIGHUP);
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
  if (opts->pid_file && pf)
    unlink(opts->pid_file);
  free(m.env);
  free(m.workers);
  return m.status;
}
