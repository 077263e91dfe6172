/* PostgreSQL through libpq's asynchronous API (SPEC §11): the C steps under
 * bindings/lua/coserve/pg.lua. Nothing here ever blocks the loop, and no
 * function continues after a wait: each one calls libpq once (connect poll,
 * send, flush, consume input, take a result) and returns what to wait for;
 * the loop around them is Lua's, and the waits are cs_poll's (wait) and a
 * PQcancel run on libuv's thread pool (cancel).
 *
 * A connection is a userdata box owning its PGconn and the PGresult being
 * converted, so that a Lua error in the middle (out of memory) leaks
 * neither: finish() and __gc free both, and every method of a finished
 * connection returns nil, "closed". */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "internal.h"

#define CS_PG_MT "coserve.pgconn"

/* The watcher of a connected PGconn's socket: made on its first wait and
 * kept until the socket goes. A cs_poll wait would make and close a
 * uv_poll_t each time, six system calls per query (libuv checks that a new
 * descriptor can be polled, makes it non-blocking, adds it to epoll and
 * deletes it). This one stays started between waits, unreferenced so that
 * an idle connection does not keep the loop alive; the next wait for the
 * same events only references it again: no system call. Readiness while
 * nobody waits (a notice, a NOTIFY, the end of a backend) stops it until
 * the next wait, as epoll would report it again at every turn. During the
 * connect libpq may change sockets, so those waits are cs_poll's. */
typedef struct {
  uv_poll_t handle;
  cs_runtime_t *rt;
  cs_task_t *task; /* parked in wait(), NULL otherwise */
  cs_wait_t wait;
  int fd;
  int events;      /* what the started handle watches; 0 when stopped */
} pgwatch_t;

typedef struct {
  PGconn *pg;
  PGresult *res; /* the result being converted; cleared by the next call */
  cs_runtime_t *rt;
  pgwatch_t *watch;
  int fatal;     /* a FATAL came while no query ran: the backend is ending */
} pgbox_t;

static pgbox_t *pg_box(lua_State *L) { return luaL_checkudata(L, 1, CS_PG_MT); }

#define PG_OPEN(L, b, pg)                                                                \
  pgbox_t *b = pg_box(L);                                                                \
  PGconn *pg = b->pg;                                                                    \
  if (pg == NULL)                                                                        \
  return cs__push_error(L, CS_ECLOSED)

static void watch_close_cb(uv_handle_t *h) { free(h->data); }

/* Closes the box's watcher. Called before PQfinish and as soon as libpq
 * has dropped its socket (the number may be reused by the next socket
 * anyone opens, and closing a watcher deletes its number from epoll):
 * always within the C call that saw the socket change. */
static void watch_close(pgbox_t *b) {
  pgwatch_t *w = b->watch;
  if (w == NULL)
    return;
  b->watch = NULL;
  if (w->task && !w->rt->tearing_down)
    cs__abort(w->task, CS_ECLOSED);
  w->task = NULL;
  /* cs_runtime_free closes every handle before lua_close runs the last
   * __gc: a watcher closed that way only has its memory left. */
  if (uv_is_closing((uv_handle_t *)&w->handle))
    free(w);
  else
    uv_close((uv_handle_t *)&w->handle, watch_close_cb);
}

/* After each libpq call that may lose the connection. */
static void watch_check(pgbox_t *b) {
  if (b->watch && (b->pg == NULL || PQsocket(b->pg) != b->watch->fd))
    watch_close(b);
}

static void pg_clear(pgbox_t *b) {
  if (b->res) {
    PQclear(b->res);
    b->res = NULL;
  }
}

/* [-0, +1] pushes s up to its first line break: libpq's messages carry a
 * newline and often a tab-indented hint after it. */
static void push_line(lua_State *L, const char *s) {
  size_t n = strcspn(s, "\n");
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\r'))
    n--;
  if (n == 0)
    lua_pushliteral(L, "unknown libpq error");
  else
    lua_pushlstring(L, s, n);
}

/* [-0, +2] nil and the connection's last error. */
static int push_conn_error(lua_State *L, PGconn *pg) {
  lua_pushnil(L);
  push_line(L, PQerrorMessage(pg));
  return 2;
}

/* Notices (NOTICE, WARNING from the server) would go to stderr through
 * libpq's default receiver: they go to coserve's debug log instead. libpq
 * also hands an error that comes while no query runs to this receiver:
 * that is a backend ending (pg_terminate_backend, a shutdown), remembered
 * for check(), as the end of file may come later. The box outlives its
 * PGconn, so it can be the receiver's argument. */
static void pg_notice(void *arg, const PGresult *res) {
  pgbox_t *b = arg;
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
    b->fatal = 1;
  cs__log(b->rt, CS_LOG_DEBUG, "pg: %s: %s", sev ? sev : "NOTICE", msg ? msg : "");
}

/* pg.parse(conninfo) -> { keyword = value, ... } | nil, err
 * The keywords a "key=value" string or a postgresql:// URI sets, so that
 * pg.lua can look at host and hostaddr before libpq does. */
static int lpg_parse(lua_State *L) {
  const char *info = luaL_checkstring(L, 1);
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(info, &err);
  if (opts == NULL) {
    lua_pushnil(L);
    push_line(L, err ? err : "out of memory");
    PQfreemem(err);
    return 2;
  }
  lua_newtable(L);
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (o->val) {
      lua_pushstring(L, o->val);
      lua_setfield(L, -2, o->keyword);
    }
  }
  PQconninfoFree(opts);
  return 1;
}

/* pg.connect_start({ keyword = value, ... }) -> conn | nil, err
 * PQconnectStartParams: returns at once; then conn:connect_poll() until
 * "ok". Host names must already be resolved (pg.lua sets hostaddr): libpq
 * would resolve them with a blocking getaddrinfo. */
static int lpg_connect_start(lua_State *L) {
  cs_runtime_t *rt = cs__runtime_get(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  enum { MAXKEYS = 64 };
  const char *keys[MAXKEYS + 1], *vals[MAXKEYS + 1];
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "connect_start: string keys and values expected");
    if (n == MAXKEYS)
      return luaL_error(L, "connect_start: too many connection parameters");
    /* The strings live in the table at index 1 for the whole call. */
    keys[n] = lua_tostring(L, -2);
    vals[n] = lua_tostring(L, -1);
    n++;
    lua_pop(L, 1);
  }
  keys[n] = vals[n] = NULL;
  /* The box exists before the PGconn: a failure in between leaves a valid,
   * finished object. */
  pgbox_t *b = lua_newuserdata(L, sizeof *b);
  memset(b, 0, sizeof *b);
  b->rt = rt;
  luaL_getmetatable(L, CS_PG_MT);
  lua_setmetatable(L, -2);
  PGconn *pg = PQconnectStartParams(keys, vals, 0);
  if (pg == NULL)
    return cs__push_error(L, UV_ENOMEM);
  if (PQstatus(pg) == CONNECTION_BAD) {
    push_conn_error(L, pg);
    PQfinish(pg);
    return 2;
  }
  PQsetNoticeReceiver(pg, pg_notice, b);
  b->pg = pg;
  return 1;
}

/* conn:connect_poll() -> "ok" | "r" | "w" | nil, err
 * One PQconnectPoll step: "r"/"w" is what to wait for on conn:socket()
 * before the next step (which may be another descriptor: libpq reconnects
 * for a second host or without SSL). Before the first step, wait for "w". */
static int lpg_connect_poll(lua_State *L) {
  PG_OPEN(L, b, pg);
  switch (PQconnectPoll(pg)) {
  case PGRES_POLLING_OK:
    if (PQsetnonblocking(pg, 1) != 0)
      return push_conn_error(L, pg);
    lua_pushliteral(L, "ok");
    return 1;
  case PGRES_POLLING_READING:
    lua_pushliteral(L, "r");
    return 1;
  case PGRES_POLLING_FAILED:
    return push_conn_error(L, pg);
  default: /* PGRES_POLLING_WRITING (and the unused ACTIVE) */
    lua_pushliteral(L, "w");
    return 1;
  }
}

/* conn:wait(events, timeout) -> "r" | "w" | "rw" | nil, err
 * Parks the calling coroutine until libpq's socket is ready: cs_poll as
 * the tail return. */
static void watch_cb(uv_poll_t *h, int status, int events) {
  pgwatch_t *w = h->data;
  cs_task_t *t = w->task;
  if (t == NULL || status < 0) { /* libuv stops a handle after an error */
    uv_poll_stop(h);
    w->events = 0;
  }
  if (t == NULL)
    return;
  w->task = NULL;
  uv_unref((uv_handle_t *)h);
  /* An error (POLLERR) counts as ready: libpq's next call reports it. */
  int r = status < 0 || (events & UV_READABLE), wr = status < 0 || (events & UV_WRITABLE);
  lua_pushstring(t->co, r && wr ? "rw" : r ? "r" : "w");
  cs__wake(t, 1);
  cs__sched_flush(w->rt);
}

static int watch_abort(cs_wait_t *wait, lua_State *co, int err) {
  pgwatch_t *w = (pgwatch_t *)((char *)wait - offsetof(pgwatch_t, wait));
  w->task = NULL;
  uv_unref((uv_handle_t *)&w->handle);
  return cs__push_error(co, err);
}

static int lpg_wait(lua_State *L) {
  PG_OPEN(L, b, pg);
  const char *ev = luaL_checkstring(L, 2);
  double timeout = luaL_optnumber(L, 3, -1);
  int events = (strchr(ev, 'r') ? CS_POLL_READABLE : 0) | (strchr(ev, 'w') ? CS_POLL_WRITABLE : 0);
  int fd = PQsocket(pg);
  if (fd < 0)
    return push_conn_error(L, pg);
  if (timeout < 0)
    timeout = -1;
  if (PQstatus(pg) != CONNECTION_OK)
    return cs_poll(L, fd, events, timeout);
  cs_task_t *t = cs__task_current(L, "wait");
  watch_check(b);
  pgwatch_t *w = b->watch;
  if (w == NULL) {
    w = calloc(1, sizeof *w);
    if (w == NULL)
      return cs__push_error(L, UV_ENOMEM);
    int rc = uv_poll_init(&b->rt->loop, &w->handle, fd);
    if (rc < 0) {
      free(w);
      return cs__push_error(L, rc);
    }
    w->handle.data = w;
    w->rt = b->rt;
    w->fd = fd;
    w->wait.abort = watch_abort;
    b->watch = w;
  }
  if (w->task)
    return cs__push_error(L, CS_EBUSY);
  int want = (events & CS_POLL_READABLE ? UV_READABLE : 0) |
             (events & CS_POLL_WRITABLE ? UV_WRITABLE : 0);
  if (w->events != want || !uv_is_active((uv_handle_t *)&w->handle)) {
    int rc = uv_poll_start(&w->handle, want, watch_cb);
    if (rc < 0)
      return cs__push_error(L, rc);
    w->events = want;
  }
  uv_ref((uv_handle_t *)&w->handle);
  w->task = t;
  return cs__park(L, t, &w->wait, timeout);
}

/* Parameters are counted as db:query's arguments (self, sql, $1...),
 * which have the same positions as send's. */
static int bad_param(lua_State *L, int idx, const char *what) {
  return luaL_error(L, "bad argument #%d to 'query' (%s)", idx, what);
}

/* [-0, +1] The arguments from first on as libpq's text parameters: nil and
 * pg.null are SQL NULL, booleans "t"/"f", numbers written exactly. The
 * array is a Lua userdata (an argument error frees it); numbers' strings
 * replace them on the stack, anchored until the call returns. */
static const char **push_params(lua_State *L, int first, int n) {
  if (n > 65535)
    bad_param(L, 65538, "too many parameters");
  const char **vals = lua_newuserdata(L, (size_t)(n > 0 ? n : 1) * sizeof *vals);
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    char num[64];
    size_t len;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
      vals[i] = NULL;
      break;
    case LUA_TLIGHTUSERDATA: /* pg.null, which is also cjson.null and ngx.null */
      if (lua_touserdata(L, idx) != NULL)
        bad_param(L, idx, "string, number, boolean or pg.null expected");
      vals[i] = NULL;
      break;
    case LUA_TBOOLEAN:
      vals[i] = lua_toboolean(L, idx) ? "t" : "f";
      break;
    case LUA_TNUMBER: {
      /* %.14g (Lua's tostring) would round: integers exactly, the rest with
       * the 17 digits that read back as the same double. */
      double d = lua_tonumber(L, idx);
      if (isnan(d))
        snprintf(num, sizeof num, "NaN");
      else if (isinf(d))
        snprintf(num, sizeof num, d > 0 ? "Infinity" : "-Infinity");
      else if (d == floor(d) && fabs(d) < 1e15)
        snprintf(num, sizeof num, "%.0f", d);
      else
        snprintf(num, sizeof num, "%.17g", d);
      lua_pushstring(L, num);
      lua_replace(L, idx);
      vals[i] = lua_tostring(L, idx);
      break;
    }
    case LUA_TSTRING:
      vals[i] = lua_tolstring(L, idx, &len);
      if (strlen(vals[i]) != len)
        bad_param(L, idx, "a zero byte cannot travel as text: hex-encode bytea");
      break;
    default:
      bad_param(L, idx, "string, number, boolean or pg.null expected");
    }
  }
  return vals;
}

/* What the three senders return: true, or nil, err. */
static int sent(lua_State *L, pgbox_t *b, PGconn *pg, int ok) {
  watch_check(b);
  if (!ok)
    return push_conn_error(L, pg);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:send(sql, ...) -> true | nil, err
 * With parameters, PQsendQueryParams: $1... travel apart from the SQL, in
 * text format (push_params), their types inferred by the server. Without,
 * PQsendQuery (the simple protocol), which allows several statements.
 * Then conn:flush() until it returns true. */
static int lpg_send(lua_State *L) {
  PG_OPEN(L, b, pg);
  const char *sql = luaL_checkstring(L, 2);
  int n = lua_gettop(L) - 2;
  pg_clear(b);
  if (n == 0)
    return sent(L, b, pg, PQsendQuery(pg, sql));
  const char **vals = push_params(L, 3, n);
  return sent(L, b, pg, PQsendQueryParams(pg, sql, n, NULL, vals, NULL, NULL, 0));
}

/* conn:prepare(name, sql) -> true | nil, err: PQsendPrepare, the types
 * of $1... inferred by the server as send's are. */
static int lpg_prepare(lua_State *L) {
  PG_OPEN(L, b, pg);
  const char *name = luaL_checkstring(L, 2);
  const char *sql = luaL_checkstring(L, 3);
  pg_clear(b);
  return sent(L, b, pg, PQsendPrepare(pg, name, sql, 0, NULL));
}

/* conn:send_prepared(name, ...) -> true | nil, err: PQsendQueryPrepared,
 * the parameters as send's. */
static int lpg_send_prepared(lua_State *L) {
  PG_OPEN(L, b, pg);
  const char *name = luaL_checkstring(L, 2);
  int n = lua_gettop(L) - 2;
  pg_clear(b);
  const char **vals = push_params(L, 3, n);
  return sent(L, b, pg, PQsendQueryPrepared(pg, name, n, vals, NULL, NULL, 0));
}

/* conn:flush() -> true (all sent) | false (wait for "rw", consume, again) |
 * nil, err. A large query does not fit the socket buffer at once. */
static int lpg_flush(lua_State *L) {
  PG_OPEN(L, b, pg);
  int rc = PQflush(pg);
  watch_check(b);
  if (rc < 0)
    return push_conn_error(L, pg);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* conn:consume() -> busy | nil, err
 * Reads what the socket has (PQconsumeInput); busy is PQisBusy: true
 * while the next result is incomplete (wait for "r", then again). */
static int lpg_consume(lua_State *L) {
  PG_OPEN(L, b, pg);
  int ok = PQconsumeInput(pg);
  watch_check(b);
  if (!ok)
    return push_conn_error(L, pg);
  lua_pushboolean(L, PQisBusy(pg));
  return 1;
}

/* conn:busy() -> PQisBusy: true while the next result is incomplete */
static int lpg_busy(lua_State *L) {
  PG_OPEN(L, b, pg);
  int busy = PQisBusy(pg);
  watch_check(b);
  lua_pushboolean(L, busy);
  return 1;
}

/* conn:check() -> true if an idle connection still looks usable
 * Reads what the server sent while it was idle (a notification, or the
 * FATAL message and end of file of a backend that was terminated), without
 * waiting: poll() with no timeout, then PQconsumeInput, a few times, as one
 * read may end just before the end of file. */
static int lpg_check(lua_State *L) {
  PG_OPEN(L, b, pg);
  struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
  for (int i = 0; i < 4 && PQstatus(pg) == CONNECTION_OK; i++) {
    p.revents = 0;
    if (poll(&p, 1, 0) != 1 || !PQconsumeInput(pg))
      break;
    PQisBusy(pg); /* parses what was read: a FATAL reaches pg_notice */
  }
  watch_check(b);
  lua_pushboolean(L, PQstatus(pg) == CONNECTION_OK && !b->fatal);
  return 1;
}

typedef enum { COL_TEXT, COL_NUMBER, COL_BOOL } colkind_t;

static colkind_t col_kind(Oid type) {
  switch (type) {
  case 20:  /* int8: exact below 2^53, a double beyond */
  case 21:  /* int2 */
  case 23:  /* int4 */
  case 26:  /* oid */
  case 700: /* float4 */
  case 701: /* float8 */
    return COL_NUMBER;
  case 16: /* bool */
    return COL_BOOL;
  default: /* numeric (1700) included: a string, as a double would round it */
    return COL_TEXT;
  }
}

/* [-0, +1] { affected = n, command = "INSERT" } from a result's status. */
static void push_info(lua_State *L, PGresult *res) {
  lua_createtable(L, 0, 2);
  const char *tuples = PQcmdTuples(res);
  lua_pushnumber(L, *tuples ? strtod(tuples, NULL) : 0);
  lua_setfield(L, -2, "affected");
  /* "INSERT 0 1", "SELECT 3", "CREATE TABLE": the words without the counts. */
  const char *st = PQcmdStatus(res);
  size_t n = strlen(st);
  while (n > 0 && (st[n - 1] == ' ' || (st[n - 1] >= '0' && st[n - 1] <= '9')))
    n--;
  lua_pushlstring(L, st, n);
  lua_setfield(L, -2, "command");
}

/* [-0, +1] the rows: an array of tables keyed by column name. */
static void push_rows(lua_State *L, PGresult *res) {
  int nrows = PQntuples(res), ncols = PQnfields(res);
  lua_createtable(L, nrows, 0);
  int rows = lua_gettop(L);
  luaL_checkstack(L, ncols + 8, "too many columns");
  unsigned char *kinds = lua_newuserdata(L, (size_t)ncols + 1);
  int names = lua_gettop(L) + 1;
  for (int c = 0; c < ncols; c++) {
    kinds[c] = (unsigned char)col_kind(PQftype(res, c));
    lua_pushstring(L, PQfname(res, c));
  }
  for (int r = 0; r < nrows; r++) {
    lua_createtable(L, 0, ncols);
    for (int c = 0; c < ncols; c++) {
      lua_pushvalue(L, names + c);
      if (PQgetisnull(res, r, c)) {
        lua_pushlightuserdata(L, NULL); /* pg.null */
      } else {
        const char *v = PQgetvalue(res, r, c);
        switch (kinds[c]) {
        case COL_NUMBER:
          lua_pushnumber(L, strtod(v, NULL)); /* NaN and Infinity too */
          break;
        case COL_BOOL:
          lua_pushboolean(L, v[0] == 't');
          break;
        default:
          lua_pushlstring(L, v, (size_t)PQgetlength(res, r, c));
        }
      }
      lua_rawset(L, -3);
    }
    lua_rawseti(L, rows, r + 1);
  }
  lua_settop(L, rows);
}

/* conn:result() -> rows, info | nil, err, sqlstate | false (no more)
 * The next PGresult (call it once consume() says not busy), converted.
 * A command's rows are an empty table. COPY is refused with nil, err, nil,
 * true (broken): the connection is shut down, as nothing would bring it
 * back out of the copy state, and the caller must close it. */
static int lpg_result(lua_State *L) {
  PG_OPEN(L, b, pg);
  pg_clear(b);
  PGresult *res = b->res = PQgetResult(pg);
  watch_check(b);
  if (res == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  switch (PQresultStatus(res)) {
  case PGRES_TUPLES_OK:
  case PGRES_SINGLE_TUPLE:
    push_rows(L, res);
    push_info(L, res);
    break;
  case PGRES_COMMAND_OK:
  case PGRES_EMPTY_QUERY:
    lua_newtable(L);
    push_info(L, res);
    break;
  case PGRES_COPY_IN:
  case PGRES_COPY_OUT:
  case PGRES_COPY_BOTH:
    pg_clear(b);
    watch_close(b);
    shutdown(PQsocket(pg), SHUT_RDWR);
    lua_pushnil(L);
    lua_pushliteral(L, "COPY is not supported");
    lua_pushnil(L);
    lua_pushboolean(L, 1); /* stop reading: PQgetResult would say COPY forever */
    return 4;
  default: {
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    lua_pushnil(L);
    push_line(L, msg ? msg : *PQresultErrorMessage(res) ? PQresultErrorMessage(res)
                                                         : PQerrorMessage(pg));
    if (state)
      lua_pushstring(L, state);
    else
      lua_pushnil(L);
    pg_clear(b);
    return 3;
  }
  }
  pg_clear(b);
  return 2;
}

/* conn:notify() -> { channel =, payload =, pid = } | nil
 * The next notification libpq has read (consume() reads them). */
static int lpg_notify(lua_State *L) {
  PG_OPEN(L, b, pg);
  PGnotify *n = PQnotifies(pg);
  if (n == NULL)
    return 0;
  lua_createtable(L, 0, 3);
  lua_pushstring(L, n->relname);
  lua_setfield(L, -2, "channel");
  lua_pushstring(L, n->extra ? n->extra : "");
  lua_setfield(L, -2, "payload");
  lua_pushinteger(L, n->be_pid);
  lua_setfield(L, -2, "pid");
  PQfreemem(n);
  return 1;
}

/* ---- cancel: PQcancel on libuv's thread pool ---- */

/* PQcancel opens a new connection to the server and waits for it to close:
 * a blocking call, so it runs on a pool thread (libpq allows PQcancel from
 * any thread). The request owns its PGcancel and frees both in after_work;
 * a waiter that timed out or was canceled only lets go of its task. */
typedef struct {
  uv_work_t req;
  PGcancel *cancel;
  cs_runtime_t *rt;
  cs_task_t *task; /* NULL once the wait has ended early */
  cs_wait_t wait;
  int ok;
  char err[256];
} pgcancel_t;

static void cancel_work(uv_work_t *req) {
  pgcancel_t *w = req->data;
  w->ok = PQcancel(w->cancel, w->err, sizeof w->err);
}

static void cancel_after(uv_work_t *req, int status) {
  pgcancel_t *w = req->data;
  cs_task_t *t = w->task;
  PQfreeCancel(w->cancel);
  if (t) {
    lua_State *co = t->co;
    if (status < 0) {
      cs__wake(t, cs__push_error(co, status));
    } else if (w->ok) {
      lua_pushboolean(co, 1);
      cs__wake(t, 1);
    } else {
      lua_pushnil(co);
      push_line(co, w->err);
      cs__wake(t, 2);
    }
  }
  cs_runtime_t *rt = w->rt;
  free(w);
  if (t)
    cs__sched_flush(rt);
}

static int cancel_abort(cs_wait_t *wait, lua_State *co, int err) {
  pgcancel_t *w = (pgcancel_t *)((char *)wait - offsetof(pgcancel_t, wait));
  w->task = NULL;
  return cs__push_error(co, err);
}

/* conn:cancel([timeout]) -> true | nil, err
 * Asks the server to cancel the query in progress, and parks until it has
 * taken the request (the query's own result still comes, as an error
 * 57014, through consume/result). */
static int lpg_cancel(lua_State *L) {
  PG_OPEN(L, b, pg);
  double timeout = luaL_optnumber(L, 2, -1);
  cs_task_t *t = cs__task_current(L, "cancel");
  pgcancel_t *w = calloc(1, sizeof *w);
  if (w == NULL)
    return cs__push_error(L, UV_ENOMEM);
  w->cancel = PQgetCancel(pg);
  if (w->cancel == NULL) {
    free(w);
    return cs__push_error(L, CS_ECLOSED);
  }
  w->rt = b->rt;
  w->req.data = w;
  int rc = uv_queue_work(&b->rt->loop, &w->req, cancel_work, cancel_after);
  if (rc < 0) {
    PQfreeCancel(w->cancel);
    free(w);
    return cs__push_error(L, rc);
  }
  w->task = t;
  w->wait.abort = cancel_abort;
  return cs__park(L, t, &w->wait, timeout < 0 ? -1 : timeout);
}

/* ---- state ---- */

/* conn:status() -> "ok" | "bad" | "closed", and the transaction state:
 * "idle", "active", "intrans", "inerror" or "unknown". */
static int lpg_status(lua_State *L) {
  pgbox_t *b = pg_box(L);
  if (b->pg == NULL) {
    lua_pushliteral(L, "closed");
    lua_pushliteral(L, "unknown");
    return 2;
  }
  lua_pushstring(L, PQstatus(b->pg) == CONNECTION_OK ? "ok" : "bad");
  switch (PQtransactionStatus(b->pg)) {
  case PQTRANS_IDLE:
    lua_pushliteral(L, "idle");
    break;
  case PQTRANS_ACTIVE:
    lua_pushliteral(L, "active");
    break;
  case PQTRANS_INTRANS:
    lua_pushliteral(L, "intrans");
    break;
  case PQTRANS_INERROR:
    lua_pushliteral(L, "inerror");
    break;
  default:
    lua_pushliteral(L, "unknown");
  }
  return 2;
}

/* conn:pid() -> the server process's PID (pg_backend_pid()) */
static int lpg_pid(lua_State *L) {
  PG_OPEN(L, b, pg);
  lua_pushinteger(L, PQbackendPID(pg));
  return 1;
}

/* conn:socket() -> the descriptor libpq uses now, or -1 */
static int lpg_socket(lua_State *L) {
  PG_OPEN(L, b, pg);
  lua_pushinteger(L, PQsocket(pg));
  return 1;
}

/* conn:shutdown(): shuts the socket down without closing it, so that a
 * coroutine waiting on it wakes up (and its next step fails) while its
 * poll still watches a valid descriptor; finish() closes it later. */
static int lpg_shutdown(lua_State *L) {
  PG_OPEN(L, b, pg);
  int fd = PQsocket(pg);
  if (fd >= 0)
    shutdown(fd, SHUT_RDWR);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:finish(): PQfinish; safe twice. Never while a coroutine waits on
 * the socket (pg.lua shuts it down and lets that coroutine finish). */
static int lpg_finish(lua_State *L) {
  pgbox_t *b = pg_box(L);
  pg_clear(b);
  watch_close(b);
  if (b->pg) {
    PQfinish(b->pg);
    b->pg = NULL;
  }
  return 0;
}

static int lpg_tostring(lua_State *L) {
  pgbox_t *b = pg_box(L);
  lua_pushfstring(L, "coserve.pgconn (%s)", b->pg ? "open" : "closed");
  return 1;
}

void cs__open_pg(lua_State *L, cs_runtime_t *rt) {
  static const luaL_Reg methods[] = {
      {"connect_poll", lpg_connect_poll}, {"wait", lpg_wait},     {"send", lpg_send},
      {"prepare", lpg_prepare},           {"send_prepared", lpg_send_prepared},
      {"flush", lpg_flush},               {"consume", lpg_consume}, {"result", lpg_result},
      {"busy", lpg_busy},                 {"check", lpg_check},
      {"notify", lpg_notify},             {"cancel", lpg_cancel}, {"status", lpg_status},
      {"pid", lpg_pid},                   {"socket", lpg_socket}, {"shutdown", lpg_shutdown},
      {"finish", lpg_finish},             {NULL, NULL}};
  luaL_newmetatable(L, CS_PG_MT);
  lua_createtable(L, 0, 13);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lpg_finish);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lpg_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, lpg_connect_start, 1);
  lua_setfield(L, -2, "connect_start");
  lua_pushcfunction(L, lpg_parse);
  lua_setfield(L, -2, "parse");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushfstring(L, "%d", PQlibVersion());
  lua_setfield(L, -2, "libpq_version");
  lua_setfield(L, -2, "pg");
}
