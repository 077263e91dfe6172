/* Private structures and cs__ prototypes shared by the runtime and the Lua
 * binding. Nothing here is part of the public API. */
#ifndef COSERVE_INTERNAL_H
#define COSERVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "coserve.h"

/* Error codes of coserve's own, below libuv's range. */
#define CS_ECLOSED (-40002)   /* the connection was closed: "closed" */
#define CS_ETOOLARGE (-40003) /* a line or frame over max_frame: "too large" */
#define CS_EBUSY (-40004)     /* another coroutine waits on that direction: "busy" */
#define CS_ETLS (-40005)      /* TLS failed: the message is the connection's */

#define CS_SCRATCH_SIZE 65536
#define CS_SEND_BUFFER (1024 * 1024) /* send_buffer's default */

#define CS_TASK_MT "coserve.task"
#define CS_CONN_MT "coserve.conn"
#define CS_SERVER_MT "coserve.server"
#define CS_TRAMPOLINE_KEY "coserve.trampoline"

typedef struct cs_task_s cs_task_t;
typedef struct cs_wait_s cs_wait_t;
typedef struct cs_conn_s cs_conn_t;
typedef struct cs_server_s cs_server_t;
typedef struct cs_tls_s cs_tls_t;
typedef struct cs_tls_ctx_s cs_tls_ctx_t;
typedef struct cs_udp_s cs_udp_t;

/* ---- buffers and matchers (buf.c, match.c) ---- */

/* Bytes [off, off + len) of base are live. A buffer that borrows the
 * runtime's scratch area has cap == 0 and must be made owned (or emptied)
 * before control returns to the loop. */
typedef struct {
  char *base;
  size_t off;
  size_t len;
  size_t cap;
} cs_buf_t;

void cs__buf_free(cs_buf_t *b);
int cs__buf_reserve(cs_buf_t *b, size_t extra);
int cs__buf_own(cs_buf_t *b);
void cs__buf_consume(cs_buf_t *b, size_t n);
/* An empty buffer may have no memory: NULL + 0 is undefined in C. */
static inline char *cs__buf_data(const cs_buf_t *b) {
  return b->base ? b->base + b->off : (char *)"";
}

typedef enum {
  CS_READ_LINE,  /* "*l": up to "\n", without it and a trailing "\r" */
  CS_READ_ALL,   /* "*a": until the peer closes */
  CS_READ_BYTES, /* exactly n bytes */
  CS_READ_ANY,   /* whatever is there, up to n bytes */
  CS_READ_UNTIL, /* up to a delimiter */
  CS_READ_FRAME, /* one frame of the server's framing */
  CS_READ_HANDSHAKE /* no data: the end of the TLS handshake */
} cs_read_kind_t;

typedef enum { CS_FRAME_NONE, CS_FRAME_EOF, CS_FRAME_LENGTH } cs_frame_kind_t;

typedef struct {
  cs_frame_kind_t kind;
  char eof[32];        /* eof framing: the delimiter */
  size_t eof_len;
  int len_size;        /* length framing: header field width, 1, 2, 4 or 8 */
  int len_big_endian;
  size_t len_offset;   /* where the length field starts */
  size_t body_offset;  /* where the body starts: frame = body_offset + length */
} cs_framing_t;

/* A read request: what to match in the buffer. */
typedef struct {
  cs_read_kind_t kind;
  size_t n;             /* BYTES, ANY: the count */
  const char *delim;    /* UNTIL: a C literal, or a Lua string the caller's
                           frame keeps alive while it waits */
  size_t delim_len;
  int inclusive;        /* UNTIL: keep the delimiter */
  size_t max;           /* the largest acceptable match: a line, a delimited
                           read, a frame, n bytes, or all until EOF */
  const cs_framing_t *framing;
  unsigned peek : 1;    /* hand the match out but leave it buffered */
  unsigned keep_open : 1; /* "too large" leaves the connection open (HTTP 431)
                          * and comes with the bytes so far */
  unsigned idle : 1;    /* waits between requests: a server shutdown interrupts
                           it, and the first byte turns it into a wait of
                           busy_timeout seconds for the rest */
  double busy_timeout;
  /* When set, the match is handed to deliver instead of being pushed as a
   * string: it pushes the read's results onto co and returns their count
   * (at least 1). The data is only valid during the call. */
  int (*deliver)(lua_State *co, void *ud, const char *data, size_t len);
  /* When set, called with what is buffered while no match is complete: a
   * nonzero return says those bytes can never begin one (HTTP's junk), and
   * they are handed to deliver at once instead of waiting for more. */
  int (*check)(void *ud, const char *data, size_t len);
  void *ud;             /* deliver's and check's; kept alive by the caller
                           while parked */
} cs_read_t;

/* Finds a complete match in data[0, len). Returns 1 and sets *take (bytes
 * to hand out) and *skip (bytes to consume, >= *take) when there is one, 0
 * when more data is needed, CS_ETOOLARGE when the match can no longer fit. */
int cs__match(const cs_read_t *r, const char *data, size_t len, int eof,
              size_t *take, size_t *skip);

/* ---- the runtime (runtime.c) ---- */

typedef struct {
  cs_task_t *head;
  cs_task_t *tail;
} cs_taskq_t;

struct cs_runtime_s {
  uv_loop_t loop;
  lua_State *L;          /* the state that drives the loop right now */
  lua_State *main_L;     /* the state the runtime was opened in */
  int owns_L;            /* created by cs_runtime_new: closed by free */
  cs_task_t *current;    /* the running task, NULL between resumes */
  cs_taskq_t ready;      /* woken tasks, resumed in the next drain */
  cs_taskq_t yielded;    /* sleep(0) tasks: resumed after the next poll */
  cs_task_t *tasks;      /* every live task, for stats and deadlock cleanup */
  int ntasks;
  int nconns;
  int running;           /* inside cs__loop_run */
  int draining;          /* inside cs__sched_drain */
  int tearing_down;      /* cs_runtime_free: Lua objects must not touch C ones */
  int exiting;           /* a graceful shutdown has begun */
  cs_task_t *exit_waiters; /* tasks in wait_exiting(), woken when it begins */
  int aborting;          /* cs__runtime_abort ran in this run */
  int stopped;           /* cs_runtime_stop ran in this run */
  uv_check_t check;      /* drains the ready queue after each poll */
  uv_idle_t idle;        /* keeps poll from blocking while tasks are ready */
  cs_server_t *servers;  /* servers that are listening or draining */
  cs_conn_t *flushing;   /* closed connections whose send buffer drains */
  void *polls;           /* cs_poll's waits in progress (poll.c) */
  uv_timer_t flush_timer; /* closes those past their send_timeout */
  double next_conn_id;
  cs_log_level_t log_level;
  int worker_id;         /* 1..N under a master, 0 alone */
  int notify_fd;         /* a worker tells its master it is ready: -1 done */
  int master_fd;         /* a worker's channel to its master, which owns the
                            listening sockets (process.c): -1 none */
  int listen_fds[16];    /* systemd socket activation: sockets not yet used */
  int nlisten_fds;
  char *errmsg;
  char scratch[CS_SCRATCH_SIZE]; /* one read buffer shared by all connections */
  char head[16384];      /* an HTTP response head being rendered (http.c) */
  char date[64];         /* the HTTP Date header's value ... */
  int64_t date_time;     /* ... for this second (time()) */
  int scratch_busy;
  const void *conn_mt;   /* the metatables of conns and HTTP parsers, for */
  const void *http_mt;   /* cs__checkudata */
  char sentinel;         /* its address marks coserve's own yields */
};

cs_runtime_t *cs__runtime_get(lua_State *L); /* from upvalue 1 */
/* luaL_checkudata for the request path: the metatable's address is
 * compared with mt (one of rt's), without looking its name up. */
void *cs__checkudata(lua_State *L, int idx, const void *mt, const char *tname);
/* The runtime bound to L's state, created on first use from plain Lua. */
cs_runtime_t *cs__runtime_for(lua_State *L);
/* [-(nargs+1), +1] Runs a main task; see runtime.c. Returns 0 when the
 * main task did not finish on its own (stopped, or deadlocked). */
int cs__runtime_main(cs_runtime_t *rt, lua_State *L, int nargs);
void cs__set_error(cs_runtime_t *rt, const char *msg);
/* Under a master: tells it this worker is ready (once). */
void cs__runtime_ready(cs_runtime_t *rt);
/* Closes every server now and cancels every task but the running one, so
 * that the loop unwinds: after the main task failed, or a test's deadline. */
void cs__runtime_abort(cs_runtime_t *rt);

/* ---- tasks, park and wake (sched.c) ---- */

/* What a parked task waits on. abort() undoes the operation's
 * registrations and pushes its failure results (nil, message[, partial])
 * onto co; it returns how many it pushed. It is called for a timeout
 * (UV_ETIMEDOUT), task:cancel() (UV_ECANCELED) and conn:close()
 * (CS_ECLOSED). */
struct cs_wait_s {
  int (*abort)(cs_wait_t *w, lua_State *co, int err);
};

/* Called when a task finishes, with its box on top of t->rt->L. */
typedef void (*cs_task_done_cb)(cs_task_t *t, int ok);

struct cs_task_s {
  cs_runtime_t *rt;
  lua_State *co;
  int co_ref;            /* anchors the coroutine until it finishes */
  int box_ref;           /* anchors this userdata until the timer is closed */
  uv_timer_t timer;      /* the deadline of the current park (lazy) */
  uint64_t deadline;     /* of the current park, loop ms; UINT64_MAX: none */
  uint64_t armed;        /* when the timer fires, if it is active */
  cs_wait_t *wait;       /* non-NULL while parked */
  cs_task_t *next;       /* ready queue */
  cs_task_t *all_prev, *all_next; /* rt->tasks */
  int nret;              /* values waiting on co's stack for the resume */
  unsigned queued : 1, done : 1, failed : 1, canceled : 1, main : 1;
  cs_wait_t gwait;       /* park()/sleep(): pushes nil, message */
  cs_wait_t jwait;       /* join(): pushes false, message */
  cs_wait_t swait;       /* sleep(): its deadline is success */
  cs_wait_t xwait;       /* wait_exiting(): on rt->exit_waiters meanwhile */
  cs_task_t *xnext, *xprev;
  cs_task_t *joinee;     /* join(): the task waited for */
  cs_task_t *jnext;      /* join(): next in joinee->joiners */
  cs_task_t *joiners;
  cs_conn_t *owner;      /* conn:spawn(): canceled when it closes */
  cs_task_t *onext, *oprev;
  cs_task_done_cb on_done;
  void *data;            /* on_done's */
};

/* [-(nargs+1), +1] Creates a task running the function below nargs
 * arguments of L, pushes its box, and queues it (at the head with front). */
cs_task_t *cs__task_new(cs_runtime_t *rt, lua_State *L, int nargs, int front);

/* The running task if L is its coroutine; raises "fname: not inside a
 * coserve coroutine" otherwise. */
cs_task_t *cs__task_current(lua_State *L, const char *fname);
/* The same for a C function without the runtime as its upvalue (a host's). */
cs_task_t *cs__task_of(cs_runtime_t *rt, lua_State *L, const char *fname);

/* Parks t (whose coroutine is L) on w for timeout seconds (< 0: forever).
 * Returns what a lua_CFunction returns: it yields, or (for a task already
 * canceled) returns w's abort results at once. */
int cs__park(lua_State *L, cs_task_t *t, cs_wait_t *w, double timeout);

/* [-(nargs+1), +1] coserve.spawn and conn:spawn: the function at index 1
 * and its arguments become a task that runs before the caller continues. */
int cs__spawn(lua_State *L, cs_conn_t *owner);

/* Yields the running task t without parking it: it is queued again
 * straight after `after` (NULL: behind the next poll, for sleep(0)), and
 * the nkeep values on top of L are what the C function returns then. */
int cs__yield(lua_State *L, cs_task_t *t, int nkeep, cs_task_t *after);

/* Queues a parked task to resume with the nret values already pushed onto
 * t->co. The task runs in the next drain, never inside the caller. */
void cs__wake(cs_task_t *t, int nret);
/* coserve.wait_exiting([timeout]): parks t until a graceful shutdown
 * begins (true) or timeout seconds pass (nil, "timeout"). */
int cs__wait_exiting(lua_State *L, cs_task_t *t, double timeout);
/* Wakes the tasks in wait_exiting(): the shutdown has begun. */
void cs__wake_exiting(cs_runtime_t *rt);

/* Gives parked t a new deadline, timeout seconds from now (< 0: none). */
void cs__retime(cs_task_t *t, double timeout);

/* Aborts t's wait with err (its abort hook pushes the results) and wakes it. */
void cs__abort(cs_task_t *t, int err);

/* Cancels t: its current wait or next one returns nil, "canceled". */
void cs__task_cancel(cs_task_t *t);

/* [-1, +(n+1)] Replaces the finished task's box on top of L with true,
 * results... or false, error; returns n + 1. */
int cs__task_push_results(lua_State *L);


void cs__sched_init(cs_runtime_t *rt);
/* Creates the Lua side of the scheduler (the task trampoline) in L. */
int cs__sched_open(lua_State *L);
void cs__sched_drain(cs_runtime_t *rt);
/* Resumes ready tasks now, unless a task is running. An IO callback calls
 * it as its last act, once its own bookkeeping is done: the woken task
 * then runs while the socket is still hot in the caches, and still never
 * inside its waker nor nested in another resume. */
void cs__sched_flush(cs_runtime_t *rt);
/* Drives the loop until no handle or ready task is left, then cancels the
 * tasks that nothing can wake and lets them unwind. Returns 1 when the
 * main task was one of them (a deadlock). */
int cs__loop_run(cs_runtime_t *rt);

/* ---- connections (stream.c) ---- */

typedef enum { CS_CONN_TCP, CS_CONN_PIPE } cs_conn_type_t;

/* A TCP or Unix-socket stream, seen as whichever libuv type a call needs. */
typedef union {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} cs_stream_u;

struct cs_conn_s {
  cs_stream_u u;
  cs_runtime_t *rt;
  cs_server_t *server;   /* NULL for a client connection */
  cs_conn_t *snext, *sprev; /* server->conns */
  struct cs_connbox_s *box; /* the Lua object, NULL once it is collected */
  double id;
  cs_buf_t rbuf;
  /* reading */
  cs_task_t *reader;
  cs_wait_t rwait;
  cs_read_t rreq;
  /* writing */
  cs_task_t *writer;
  cs_wait_t wwait;
  uv_write_t wreq;
  int wref;              /* anchors the strings of the write in flight */
  size_t wtotal;
  size_t send_buffer;    /* the most bytes of copies held for a slow peer */
  size_t wqueued;        /* bytes of copies being written (see stream.c) */
  int werr;              /* sticky error of a write nobody waited for */
  uint64_t flush_deadline; /* flushing: loop ms when it gives up */
  cs_tls_t *tls;         /* TLS state (tls.c), NULL for plaintext */
  size_t tls_off;        /* a parked TLS send: bytes of it encrypted so far */
  cs_conn_t *fnext, *fprev; /* rt->flushing */
  /* connecting */
  uv_connect_t creq;
  cs_wait_t cwait;
  cs_task_t *connector;
  cs_task_t *handler;    /* the server's handler task */
  cs_task_t *tasks;      /* conn:spawn() */
  double read_timeout, send_timeout;
  uint64_t last_io;      /* loop time of the last read or write, ms */
  int err;               /* sticky read error (EOF is CS_ECLOSED) */
  size_t max_frame;
  const cs_framing_t *framing; /* the server's, for recv() */
  int refs;              /* the handle, and a server handler until it ends */
  int box_ref;           /* a server connection anchors its Lua object */
  unsigned type : 1, reading : 1, eof : 1, closing : 1, pooled : 1, flushing : 1;
};

typedef struct cs_connbox_s {
  cs_conn_t *c;
  double id;
} cs_connbox_t;

cs_conn_t *cs__conn_new(cs_runtime_t *rt, cs_conn_type_t type);
/* [-0, +1] pushes the connection's Lua object, creating it once. */
void cs__conn_push(lua_State *L, cs_conn_t *c);
/* The one close path: wakes parked readers/writers with err, cancels the
 * connection's tasks, closes the handle; memory goes in the close callback.
 * Bytes still in the send buffer are written first, for at most the
 * connection's send timeout; cs__conn_abort closes without waiting for
 * them (and cuts short a flush under way). */
void cs__conn_close(cs_conn_t *c, int err);
void cs__conn_abort(cs_conn_t *c, int err);
/* Gives up flushes past their deadline (the runtime's flush timer). */
void cs__conn_flush_timeout(uv_timer_t *timer);

/* Writes bytes as they are, past TLS, not bounded by the send buffer:
 * what the kernel does not take is copied. For TLS's ciphertext. */
int cs__conn_write_raw(cs_conn_t *c, const char *data, size_t len);
/* [-0, +2|3] pushes nil and the message of a connection's error (its TLS
 * message for CS_ETLS); returns 2. */
int cs__conn_push_error(lua_State *L, const cs_conn_t *c, int err);

/* Reads and writes as lua_CFunction bodies: L is the caller's coroutine,
 * the results are pushed (or the task parks). */
int cs__conn_read(lua_State *L, cs_conn_t *c, const cs_read_t *r, double timeout,
                  const char *fname);
int cs__conn_write(lua_State *L, cs_conn_t *c, int idx, const char *fname);
/* As cs__conn_write, for bytes only valid during the call (a buffer of the
 * runtime's): what the kernel does not take at once is copied. */
int cs__conn_write_bytes(lua_State *L, cs_conn_t *c, const char *data, size_t len,
                         const char *fname);
int cs__conn_pool(cs_conn_t *c, int on);
int cs__conn_connect(lua_State *L, cs_conn_t *c, const struct sockaddr *addr,
                     const char *path, double timeout);

/* [-0, +1|2] coserve.resolve's body: parks, then returns a list of
 * address strings or nil, err. family: AF_UNSPEC, AF_INET or AF_INET6. */
int cs__resolve(lua_State *L, const char *host, int family);
/* An IPv4 or IPv6 address as text into ip (64 bytes are enough); returns
 * its port, or -1 (and "") for another family. */
int cs__addr_name(const struct sockaddr *sa, char *ip, size_t size);

/* ---- servers (tcp.c) ---- */

typedef enum { CS_SRV_IDLE, CS_SRV_LISTENING, CS_SRV_DRAINING, CS_SRV_CLOSING } cs_srv_state_t;

typedef struct {
  double connections;
  double accepted;
  double rejected;
  double bytes_in;
  double bytes_out;
  double tls_handshakes;
  double tls_failures;  /* handshakes that failed or timed out */
} cs_server_stats_t;

struct cs_server_s {
  cs_stream_u u;
  uv_timer_t sweep;      /* closes connections idle for idle_timeout */
  uv_timer_t grace;      /* ends the shutdown grace period */
  cs_runtime_t *rt;
  cs_server_t *next;     /* rt->servers */
  cs_srv_state_t state;
  int self_ref;          /* anchors the userdata while handles are open;
                            its environment holds handler and onerror */
  int open_handles;
  cs_task_t *starter;    /* the task parked in start() */
  cs_wait_t swait;
  cs_conn_t *conns;
  cs_server_stats_t stats;
  cs_framing_t framing;
  char host[256];
  int port;              /* requested, then bound */
  int is_unix;
  int backlog;
  int reuse_port;
  int max_connections;
  double read_timeout, send_timeout, idle_timeout;
  size_t max_frame;
  size_t send_buffer;
  cs_tls_ctx_t *tls;     /* TLS: owned by a userdata in its environment */
  double handshake_timeout;
  unsigned listening : 1;
};

/* Reads LISTEN_PID/LISTEN_FDS (systemd socket activation) into rt. */
void cs__activation_init(cs_runtime_t *rt);
/* An inherited listening socket bound to host:port (or the unix path),
 * taken out of the list; -1 if there is none. */
int cs__activation_take(cs_runtime_t *rt, const char *host, int port, int is_unix);
/* Whether fd is a listening socket bound where such a server would bind. */
int cs__activation_matches(int fd, const char *host, int port, int is_unix);

/* A worker's side of its master's channel (process.c). init reads
 * COSERVE_MASTER_FD into rt->master_fd. socket asks the master for the
 * listening socket of an address: 0 with *fd >= 0 (use it), 0 with *fd = -1
 * (bind it yourself: no master, or it did not answer in time), or the
 * master's libuv error for the bind. release tells it that a server stopped
 * listening while the worker goes on (not sent during a shutdown). */
void cs__master_channel_init(cs_runtime_t *rt);
int cs__master_socket(cs_runtime_t *rt, const char *host, int port, int is_unix, int reuse_port,
                      int backlog, int *fd);
void cs__master_release(cs_runtime_t *rt, const char *host, int port, int is_unix);

/* Binds and listens on s->host/port (a literal address, or unix:path when
 * is_unix), then parks the calling task until the server has shut down. */
int cs__server_start(lua_State *L, cs_server_t *s);
void cs__server_shutdown(cs_server_t *s, double grace);
void cs__server_conn_gone(cs_server_t *s, cs_conn_t *c);
/* Drops one reference to c (see refs); the last one frees it. */
void cs__conn_release(cs_conn_t *c);

/* ---- datagrams (udp.c) ---- */

struct cs_udp_s {
  uv_udp_t handle;
  cs_runtime_t *rt;
  cs_task_t *reader;     /* parked in receive/recvfrom */
  cs_wait_t rwait;
  size_t want;           /* the reader's largest acceptable datagram */
  int want_from;         /* recvfrom: push the sender's ip and port too */
  cs_task_t *sender;     /* parked while the kernel was full */
  cs_wait_t swait;
  uv_udp_send_t sreq;
  int sref;              /* anchors the datagram being queued */
  double timeout;        /* receive's and a queued send's, seconds */
  unsigned connected : 1, closing : 1;
};

cs_udp_t *cs__udp_new(cs_runtime_t *rt);
/* Idempotent; wakes parked callers with "closed"; memory goes in the close
 * callback. */
void cs__udp_close(cs_udp_t *u);
/* As lua_CFunction bodies: push the results or park. */
int cs__udp_recv(lua_State *L, cs_udp_t *u, size_t want, int want_from, double timeout,
                 const char *fname);
int cs__udp_send(lua_State *L, cs_udp_t *u, int idx, const struct sockaddr *addr,
                 const char *fname);
int cs__udp_getsockname(lua_State *L, cs_udp_t *u);

/* ---- TLS (tls.c) ---- */

typedef enum { CS_TLS_VERIFY_NONE, CS_TLS_VERIFY_OPTIONAL, CS_TLS_VERIFY_REQUIRED } cs_tls_verify_t;

/* What a context is made of; strings are the caller's, read during
 * cs__tls_ctx_new only. */
typedef struct {
  int is_server;
  const char *cert, *key, *ca; /* PEM files; key defaults to cert */
  cs_tls_verify_t verify;      /* the peer's certificate */
  const char *protocols[2];    /* "TLSv1.2", "TLSv1.3": the range allowed */
  int nprotocols;
  const char *ciphers;         /* OpenSSL's list or TLS 1.3 suites */
  const char *alpn[8];
  int nalpn;
  struct {
    const char *name, *cert, *key;
  } sni[16];
  int nsni;
} cs_tls_config_t;

/* NULL with the reason in err ("tls: cannot use certificate PATH: ..."). */
cs_tls_ctx_t *cs__tls_ctx_new(const cs_tls_config_t *cfg, char *err, size_t size);
void cs__tls_ctx_free(cs_tls_ctx_t *t);
/* Gives c a TLS session of context t: a client's checks name (SNI and,
 * with verify, the certificate's host name or IP address). */
int cs__tls_attach(cs_conn_t *c, cs_tls_ctx_t *t, const char *name, int verify);
void cs__tls_free(cs_conn_t *c);
/* Begins or continues the handshake with what has arrived: 0 or CS_ETLS. */
int cs__tls_start(cs_conn_t *c);
int cs__tls_done(const cs_conn_t *c);
/* Whether any ciphertext has come from the peer. */
int cs__tls_heard(const cs_conn_t *c);
/* Ciphertext in: handshake, then plaintext into c->rbuf. 0 or an error;
 * a peer's close_notify sets c->eof. */
int cs__tls_feed(cs_conn_t *c, const char *data, size_t len);
/* Plaintext out: encrypted and written with cs__conn_write_raw. */
int cs__tls_write(cs_conn_t *c, const char *data, size_t len);
/* Queues close_notify once the handshake is done. */
void cs__tls_shutdown(cs_conn_t *c);
const char *cs__tls_errmsg(const cs_conn_t *c);
void cs__tls_push_info(lua_State *L, const cs_conn_t *c);

/* ---- errors and logging (error.c, log.c) ---- */

/* [-0, +2] pushes nil and err's message; returns 2. */
int cs__push_error(lua_State *L, int err);
void cs__log(cs_runtime_t *rt, cs_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One line for worker_id (> 0 a worker, 0 a process alone, -1 the master),
 * as text or JSON (cs__log_json(): COSERVE_LOG_FORMAT=json). */
void cs__log_line(int worker_id, cs_log_level_t level, const char *msg);
int cs__log_json(void);
/* s as a JSON string's content at o (6 * len bytes of room); returns the
 * end. Bytes that are not UTF-8 become U+FFFD (alog.c). */
char *cs__json_escape(char *o, const char *s, size_t len);

/* ---- Lua binding (bindings/lua) ---- */

void cs__open_task(lua_State *L, cs_runtime_t *rt);
void cs__open_conn(lua_State *L, cs_runtime_t *rt);
void cs__open_server(lua_State *L, cs_runtime_t *rt);
void cs__open_net(lua_State *L, cs_runtime_t *rt);
void cs__open_http(lua_State *L, cs_runtime_t *rt); /* into the table on top */
void cs__open_wsutil(lua_State *L); /* into the table on top */
void cs__open_tls(lua_State *L, cs_runtime_t *rt); /* into the table on top */
void cs__open_udp(lua_State *L, cs_runtime_t *rt); /* into the table on top */
void cs__open_pg(lua_State *L, cs_runtime_t *rt);  /* into the table on top (lpg.c) */
void cs__open_crypto(lua_State *L);                  /* into the table on top */
void cs__sha1(const void *data, size_t len, unsigned char out[20]);
void cs__preload_lua(lua_State *L);
int luaopen_coserve_alog(lua_State *L); /* access-log writers (alog.c) */
/* The last head an HTTP parser (its userdata) parsed, as sent (http.c). */
const char *cs__http_head(const void *parser, size_t *len);

#endif /* COSERVE_INTERNAL_H */
