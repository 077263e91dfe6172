/* The only code that prints. One line per message on stderr, prefixed so
 * that lines from several processes can be told apart. */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

static const char *level_names[] = {"error", "warn", "info", "debug"};

void cs__log(cs_runtime_t *rt, cs_log_level_t level, const char *fmt, ...) {
  if (rt != NULL && level > rt->log_level)
    return;
  char line[8192];
  int n = rt != NULL && rt->worker_id > 0
              ? snprintf(line, sizeof line, "coserve[w%d:%d] %s: ", rt->worker_id, (int)getpid(),
                         level_names[level])
              : snprintf(line, sizeof line, "coserve[%d] %s: ", (int)getpid(), level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  n += m < 0 ? 0 : (m > (int)(sizeof line) - n - 2 ? (int)(sizeof line) - n - 2 : m);
  line[n++] = '\n';
  fwrite(line, 1, (size_t)n, stderr);
}
