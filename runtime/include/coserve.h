/* coserve — coroutine-style server runtime for LuaJIT on libuv.
 *
 * The embedding API. A runtime owns one uv_loop_t and one lua_State; every
 * accepted connection's Lua handler runs in its own coroutine on that loop.
 *
 *   cs_runtime_t *rt = cs_runtime_new();
 *   lua_register(cs_runtime_lua(rt), "answer", l_answer);
 *   if (cs_runtime_run_file(rt, "app.lua") < 0)
 *     fprintf(stderr, "%s\n", cs_runtime_error(rt));
 *   cs_runtime_free(rt);
 *
 * Functions that can fail return 0 or a negative libuv-style error code and
 * leave a message in cs_runtime_error(); nothing here prints.
 */
#ifndef COSERVE_H
#define COSERVE_H

#include <lua.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CS_VERSION "0.1.0"

/* Error codes beyond libuv's (which are negative errno values). */
#define CS_ERUNTIME (-40001) /* a Lua error; the message is in cs_runtime_error() */

typedef struct cs_runtime_s cs_runtime_t;

typedef enum {
  CS_LOG_ERROR = 0,
  CS_LOG_WARN = 1,
  CS_LOG_INFO = 2,
  CS_LOG_DEBUG = 3
} cs_log_level_t;

/* Creates a runtime with its own loop and a fresh lua_State with the standard
 * libraries open and `require "coserve"` available. NULL when out of memory. */
cs_runtime_t *cs_runtime_new(void);

lua_State *cs_runtime_lua(cs_runtime_t *rt);
uv_loop_t *cs_runtime_loop(cs_runtime_t *rt);

/* [-(nargs+1), +0] Runs the function below `nargs` arguments on the Lua
 * stack as the runtime's main coroutine, and drives the loop until it and
 * everything it started have finished (or cs_runtime_stop()). */
int cs_runtime_run(cs_runtime_t *rt, int nargs);

/* Load a chunk and cs_runtime_run() it with no arguments. A load error
 * returns CS_ERUNTIME without running anything. */
int cs_runtime_run_file(cs_runtime_t *rt, const char *path);
int cs_runtime_run_string(cs_runtime_t *rt, const char *code, const char *chunkname);

/* The message of the last failed call, or "" . Owned by the runtime. */
const char *cs_runtime_error(cs_runtime_t *rt);

/* Begins a graceful shutdown: servers stop accepting, live connections get
 * `grace` seconds to finish, coserve.exiting() turns true. Safe from a signal
 * watcher callback; calling it twice closes everything at once. */
void cs_runtime_shutdown(cs_runtime_t *rt, double grace);

/* Stops the loop at the next iteration: the run function returns
 * UV_ECANCELED ("stopped") promptly. Tasks still parked stay parked and
 * go on at the next run on this runtime. */
void cs_runtime_stop(cs_runtime_t *rt);

void cs_runtime_free(cs_runtime_t *rt);

void cs_runtime_set_log_level(cs_runtime_t *rt, cs_log_level_t level);

/* Worker processes (the CLI's -w N). A master runs no Lua: it starts
 * `workers` copies of this program with COSERVE_WORKER=<1..N> in their
 * environment and worker_argv as their arguments, restarts one that dies
 * (with backoff; a worker that fails at start-up 5 times in a row makes the
 * master give up), and on SIGTERM/SIGINT sends SIGTERM to every worker and
 * waits up to grace + 2 s. Returns the master's exit status. */
typedef struct {
  int workers;
  double grace;
  const char *pid_file;  /* written with the master's PID, removed at exit */
  char **worker_argv;    /* NULL-terminated */
} cs_master_opts_t;

int cs_master_run(const cs_master_opts_t *opts);

/* Marks a runtime as worker `id` (1..N) of a master: coserve.worker_id()
 * returns it, servers default to reuse_port, log lines carry it. */
void cs_runtime_set_worker(cs_runtime_t *rt, int id);

/* Waiting for a foreign descriptor, for C functions called from a coroutine
 * (a binding of a C library with a non-blocking API: libpq, libmariadb,
 * hiredis, libcurl multi):
 *
 *   static int l_wait_readable(lua_State *L) {
 *     return cs_poll(L, fd_of(L, 1), CS_POLL_READABLE, luaL_optnumber(L, 2, -1));
 *   }
 *
 * As the tail `return` of a lua_CFunction: it parks the calling coroutine
 * until fd is ready for `events` (CS_POLL_READABLE | CS_POLL_WRITABLE) or
 * `timeout` seconds pass (< 0: no limit), and the function then returns, to
 * its Lua caller, "r", "w" or "rw" (what is ready), or nil, "timeout" /
 * "canceled" / "busy" (another coroutine polls fd already) / libuv's
 * message. The C function does not continue after the wait: the loop around
 * it (call the library, wait, call again) is written in Lua, or as
 * several C functions. Raises if not called from a coserve coroutine.
 * coserve.poll(fd, "r"|"w"|"rw" [, timeout]) is the same from Lua. */
#define CS_POLL_READABLE 1
#define CS_POLL_WRITABLE 2
int cs_poll(lua_State *L, int fd, int events, double timeout);

/* Messages for coserve's error codes and libuv's ("timeout", "closed", ...). */
const char *cs_strerror(int err);

/* The Lua module entry point; a host normally never calls it. */
int luaopen_coserve_core(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif /* COSERVE_H */
