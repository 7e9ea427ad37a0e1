/* util.h: helpers every module shares: error text, process setup. */
#ifndef RL_UTIL_H
#define RL_UTIL_H

#include <stddef.h>

/* Writes a message into `err` (always NUL-terminated) when one is given. */
void rl_set_err(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void rl_init_threads(void); /* once per process, before any event_base */

#endif
