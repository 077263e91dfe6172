/* coserve: the command-line runner, written against coserve.h only.
 *
 *   coserve [options] app.lua [args...]
 *
 * Like lua.c, it reports `progname: message`, leaves signal work to the
 * loop (uv_signal_t, so handlers run as ordinary callbacks), and keeps all
 * of its state in one struct on main's stack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <signal.h>

#include <lauxlib.h>
#include <luajit.h>

#include "coserve.h"

#define PROGNAME "coserve"

typedef struct {
  cs_runtime_t *rt;
  double grace;
  int signals;           /* how many SIGINT/SIGTERM so far */
  int cut_off;           /* the grace period ended with the app still running */
  int json;              /* --log-format json */
  uv_signal_t sigint;
  uv_signal_t sigterm;
  uv_signal_t sigusr1;   /* logrotate's signal: access logs reopen on it */
  uv_timer_t deadline;   /* ends the run once the grace period is over */
} cli_t;

static const char usage_text[] =
    "usage: " PROGNAME " [options] app.lua [args...]\n"
    "  -w, --workers N      N worker processes (default 1 = no master); \"auto\" = one per CPU\n"
    "      --pid-file PATH  with workers: write the master's PID to PATH\n"
    "      --grace S        seconds a graceful shutdown lets connections drain (default 10)\n"
    "  -c, --check          load and compile app.lua, report errors, exit\n"
    "  -e, --eval CODE      run CODE as the app (no file needed)\n"
    "      --log-level L    error|warn|info|debug (default info), logs to stderr\n"
    "      --log-format F   text|json (default text): json = one object per line\n"
    "  -v, --version        print versions of coserve, LuaJIT and libuv\n"
    "  -h, --help           print this help\n";

static int usage_error(const char *fmt, const char *what) {
  fprintf(stderr, PROGNAME ": ");
  fprintf(stderr, fmt, what);
  fprintf(stderr, "\n%s", usage_text);
  return 2;
}

static void cli_deadline_cb(uv_timer_t *timer) {
  cli_t *cli = timer->data;
  cli->cut_off = 1;
  cs_runtime_stop(cli->rt);
}

/* First signal: graceful shutdown, then stop the loop when the grace
 * period is over whatever is still running. Second SIGINT: exit now. */
static void cli_signal_cb(uv_signal_t *sig, int signum) {
  cli_t *cli = sig->data;
  if (++cli->signals > 1 && signum == SIGINT) {
    fprintf(stderr, PROGNAME ": interrupted\n");
    exit(130);
  }
  if (cli->signals > 1)
    return;
  cs_runtime_shutdown(cli->rt, cli->grace);
  uv_timer_start(&cli->deadline, cli_deadline_cb, (uint64_t)(cli->grace * 1000) + 100, 0);
}

/* SIGUSR1 is the access logs' (each reopens its file on it, watching it
 * itself); this watcher only keeps it from killing an app that has none,
 * as a master passes it on to every worker. */
static void cli_sigusr1_cb(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
}

static void cli_watch_signals(cli_t *cli) {
  uv_loop_t *loop = cs_runtime_loop(cli->rt);
  uv_signal_init(loop, &cli->sigint);
  uv_signal_init(loop, &cli->sigterm);
  uv_signal_init(loop, &cli->sigusr1);
  uv_timer_init(loop, &cli->deadline);
  cli->sigint.data = cli->sigterm.data = cli->sigusr1.data = cli->deadline.data = cli;
  uv_signal_start(&cli->sigint, cli_signal_cb, SIGINT);
  uv_signal_start(&cli->sigterm, cli_signal_cb, SIGTERM);
  uv_signal_start(&cli->sigusr1, cli_sigusr1_cb, SIGUSR1);
  /* None of them should keep the process alive on its own. */
  uv_unref((uv_handle_t *)&cli->sigint);
  uv_unref((uv_handle_t *)&cli->sigterm);
  uv_unref((uv_handle_t *)&cli->sigusr1);
  uv_unref((uv_handle_t *)&cli->deadline);
}

/* Reports `coserve: message`, or with --log-format json the runtime's JSON
 * line (through coserve.core.log, the one way to it from coserve.h). */
static void cli_report(cli_t *cli, const char *msg) {
  if (cli->json && cli->rt) {
    lua_State *L = cs_runtime_lua(cli->rt);
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "coserve.core");
    if (lua_pcall(L, 1, 1, 0) == 0) {
      lua_getfield(L, -1, "log");
      lua_pushliteral(L, "error");
      lua_pushstring(L, msg);
      if (lua_pcall(L, 2, 0, 0) == 0) {
        lua_settop(L, top);
        return;
      }
    }
    lua_settop(L, top);
  }
  fprintf(stderr, PROGNAME ": %s\n", msg);
}

/* The global `arg`, as lua.c builds it: arg[0] the script, arg[1..] its
 * arguments, negative indices the interpreter and its options. */
static void cli_set_arg(lua_State *L, int argc, char **argv, int script, int first) {
  lua_createtable(L, argc - first, script + 1);
  for (int i = 0; i <= script; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  for (int i = first; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first + 1);
  }
  lua_setglobal(L, "arg");
}

/* Runs the master of `-w N`: each worker gets this command line without
 * the options that concern only the master. */
static int cli_master(int argc, char **argv, int workers, double grace, const char *pid_file) {
  char **wargv = calloc((size_t)argc + 1, sizeof *wargv);
  if (wargv == NULL)
    return 1;
  int n = 0;
  for (int i = 0; i < argc; i++) {
    const char *o = argv[i];
    int with_value = strcmp(o, "-w") == 0 || strcmp(o, "--workers") == 0 ||
                     strcmp(o, "--pid-file") == 0;
    if (with_value && i + 1 < argc) {
      i++;
      continue;
    }
    wargv[n++] = argv[i];
  }
  wargv[n] = NULL;
  cs_master_opts_t opts = {
      .workers = workers, .grace = grace, .pid_file = pid_file, .worker_argv = wargv};
  int status = cs_master_run(&opts);
  free(wargv);
  return status;
}

static int parse_level(const char *s, cs_log_level_t *out) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) {
      *out = (cs_log_level_t)i;
      return 0;
    }
  return -1;
}

int main(int argc, char **argv) {
  cli_t cli;
  memset(&cli, 0, sizeof cli);
  cli.grace = 10;
  const char *log_format = getenv("COSERVE_LOG_FORMAT");
  cli.json = log_format != NULL && strcmp(log_format, "json") == 0;
  const char *eval = NULL;
  const char *pid_file = NULL;
  int workers = 1;
  int check = 0;
  cs_log_level_t level = CS_LOG_INFO;
  int i = 1;
  for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
    const char *o = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(o, "--") == 0) {
      i++;
      break;
    } else if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
      fputs(usage_text, stdout);
      return 0;
    } else if (strcmp(o, "-v") == 0 || strcmp(o, "--version") == 0) {
      printf(PROGNAME " %s (%s, libuv %s)\n", CS_VERSION, LUAJIT_VERSION, uv_version_string());
      return 0;
    } else if (strcmp(o, "-c") == 0 || strcmp(o, "--check") == 0) {
      check = 1;
    } else if (strcmp(o, "-e") == 0 || strcmp(o, "--eval") == 0) {
      if (v == NULL)
        return usage_error("option '%s' needs an argument", o);
      eval = v;
      i++;
    } else if (strcmp(o, "--log-level") == 0) {
      if (v == NULL || parse_level(v, &level) != 0)
        return usage_error("invalid --log-level '%s' (error, warn, info or debug)", v ? v : "");
      i++;
    } else if (strcmp(o, "--log-format") == 0) {
      if (v == NULL || (strcmp(v, "text") != 0 && strcmp(v, "json") != 0))
        return usage_error("invalid --log-format '%s' (text or json)", v ? v : "");
      /* The runtime, the master and the workers all read it from here. */
      setenv("COSERVE_LOG_FORMAT", v, 1);
      cli.json = strcmp(v, "json") == 0;
      i++;
    } else if (strcmp(o, "--grace") == 0) {
      char *end;
      cli.grace = v ? strtod(v, &end) : -1;
      if (v == NULL || *end != '\0' || !(cli.grace >= 0 && cli.grace <= 86400))
        return usage_error("invalid --grace '%s' (seconds expected)", v ? v : "");
      i++;
    } else if (strcmp(o, "-w") == 0 || strcmp(o, "--workers") == 0) {
      char *end = NULL;
      workers = v && strcmp(v, "auto") == 0 ? (int)uv_available_parallelism()
                                            : (v ? (int)strtol(v, &end, 10) : 0);
      if (v == NULL || (end && *end != '\0') || workers < 1 || workers > 1024)
        return usage_error("invalid --workers '%s' (a number from 1 or \"auto\")", v ? v : "");
      i++;
    } else if (strcmp(o, "--pid-file") == 0) {
      if (v == NULL)
        return usage_error("option '%s' needs an argument", o);
      pid_file = v;
      i++;
    } else {
      return usage_error("unknown option '%s'", o);
    }
  }
  /* With --eval there is no script: what follows are its arguments. */
  const char *script = i < argc && eval == NULL ? argv[i] : NULL;
  if (script == NULL && eval == NULL)
    return usage_error("%s", "no app.lua given");

  const char *worker_env = getenv("COSERVE_WORKER");
  int worker_id = worker_env ? atoi(worker_env) : 0;
  if (workers > 1 && worker_id == 0 && !check)
    return cli_master(argc, argv, workers, cli.grace, pid_file);
  if (worker_id > 0) {
    /* A worker goes when its master does, whatever way the master went. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
  }

  cli.rt = cs_runtime_new();
  if (cli.rt == NULL) {
    fprintf(stderr, PROGNAME ": out of memory\n");
    return 1;
  }
  cs_runtime_set_log_level(cli.rt, level);
  if (worker_id > 0)
    cs_runtime_set_worker(cli.rt, worker_id);
  lua_State *L = cs_runtime_lua(cli.rt);
  /* As lua.c: with no script, arg[0] is the program's name. */
  cli_set_arg(L, argc, argv, script ? i : 0, script ? i + 1 : i);

  int rc;
  if (eval)
    rc = luaL_loadbuffer(L, eval, strlen(eval), "=(command line)");
  else
    rc = luaL_loadfile(L, script);
  if (rc != 0) {
    cli_report(&cli, lua_tostring(L, -1));
    cs_runtime_free(cli.rt);
    return 1;
  }
  if (check) {
    cs_runtime_free(cli.rt);
    return 0;
  }
  /* The script's arguments are also its `...`, as with luajit. */
  int nargs = 0;
  for (int k = script ? i + 1 : i; k < argc; k++, nargs++)
    lua_pushstring(L, argv[k]);
  cli_watch_signals(&cli);
  rc = cs_runtime_run(cli.rt, nargs);
  /* An app cut off at the end of the grace period did what a signal asked:
   * that is a clean exit. Any other failure is reported, signal or not. */
  int status = 0;
  if (rc < 0 && !cli.cut_off) {
    cli_report(&cli, cs_runtime_error(cli.rt));
    status = 1;
  }
  cs_runtime_free(cli.rt);
  return status;
}
