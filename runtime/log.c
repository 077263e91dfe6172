/* The only code that prints. One line per message on stderr, prefixed so
 * that lines from several processes can be told apart:
 *
 *   coserve[PID] LEVEL: message            a process alone
 *   coserve[wID:PID] LEVEL: message        worker ID of `coserve -w N`
 *   coserve[master:PID] LEVEL: message     its master (process.c)
 *
 * or, with COSERVE_LOG_FORMAT=json in the environment (what the CLI's
 * --log-format json sets, so that workers inherit it), one JSON object:
 *
 *   {"time":"2026-12-02T14:50:49.123Z","level":"error","pid":PID,
 *    "worker":ID,"msg":"...","traceback":"..."}
 *
 * "worker" is there for a worker only, "role":"master" for the master, and
 * "traceback" when the message carries a Lua traceback ("stack traceback:"
 * and what follows), which is then left out of "msg". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static const char *level_names[] = {"error", "warn", "info", "debug"};

int cs__log_json(void) {
  const char *f = getenv("COSERVE_LOG_FORMAT");
  return f != NULL && strcmp(f, "json") == 0;
}

static void log_json(int worker_id, cs_log_level_t level, const char *msg, size_t len) {
  static const char marker[] = "\nstack traceback:\n";
  const char *tb = strstr(msg, marker);
  size_t mlen = tb ? (size_t)(tb - msg) : len;
  char *line = malloc(6 * len + 256);
  if (line == NULL)
    return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char *o = line;
  o += strftime(o, 64, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
  o += sprintf(o, ".%03dZ\",\"level\":\"%s\",\"pid\":%d", (int)(ts.tv_nsec / 1000000),
               level_names[level], (int)getpid());
  if (worker_id > 0)
    o += sprintf(o, ",\"worker\":%d", worker_id);
  else if (worker_id < 0)
    o += sprintf(o, ",\"role\":\"master\"");
  o += sprintf(o, ",\"msg\":\"");
  o = cs__json_escape(o, msg, mlen);
  if (tb) {
    size_t skip = sizeof marker - 1;
    o += sprintf(o, "\",\"traceback\":\"");
    o = cs__json_escape(o, tb + skip, len - mlen - skip);
  }
  o += sprintf(o, "\"}\n");
  fwrite(line, 1, (size_t)(o - line), stderr);
  free(line);
}

void cs__log_line(int worker_id, cs_log_level_t level, const char *msg) {
  size_t len = strlen(msg);
  if (cs__log_json()) {
    log_json(worker_id, level, msg, len);
    return;
  }
  char line[8192];
  int n = worker_id > 0
              ? snprintf(line, sizeof line, "coserve[w%d:%d] %s: ", worker_id, (int)getpid(),
                         level_names[level])
          : worker_id < 0
              ? snprintf(line, sizeof line, "coserve[master:%d] %s: ", (int)getpid(),
                         level_names[level])
              : snprintf(line, sizeof line, "coserve[%d] %s: ", (int)getpid(), level_names[level]);
  size_t room = sizeof line - (size_t)n - 1;
  if (len > room)
    len = room;
  memcpy(line + n, msg, len);
  n += (int)len;
  line[n++] = '\n';
  fwrite(line, 1, (size_t)n, stderr);
}

void cs__log(cs_runtime_t *rt, cs_log_level_t level, const char *fmt, ...) {
  if (rt != NULL && level > rt->log_level)
    return;
  char msg[8192];
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (m < 0)
    msg[0] = '\0';
  cs__log_line(rt != NULL ? rt->worker_id : 0, level, msg);
}
