/* util.c: error messages for the C API's callers; giving freed memory back. */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include "relay_core.h"
#include "util.h"

void rl_set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || !err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Gives freed heap memory back to the system (relay_core.h). */
void rl_release_free_memory(void) {
    malloc_trim(0);
}
