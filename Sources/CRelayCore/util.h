/* util.h: the helper every module shares: error text. */
#ifndef RL_UTIL_H
#define RL_UTIL_H

#include <stddef.h>

/* Writes a message into `err` (always NUL-terminated) when one is given. */
void rl_set_err(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
