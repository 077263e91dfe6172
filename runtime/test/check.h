/* A minimal harness: CHECK records a failure with its line and goes on;
 * DONE prints "name: N passed, N failed" and sets the exit status. */
#ifndef CS_TEST_CHECK_H
#define CS_TEST_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (cond) {                                                                          \
      check_passed++;                                                                    \
    } else {                                                                             \
      check_failed++;                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
    }                                                                                    \
  } while (0)

#define DONE(name)                                                                       \
  (printf("%s: %d passed, %d failed\n", name, check_passed, check_failed),              \
   check_failed ? 1 : 0)

#endif
