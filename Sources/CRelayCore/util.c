/* util.c: error messages for the C API's callers, and the process-wide setup libevent needs. */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <event2/thread.h>
#include "relay_core.h"
#include "util.h"

void rl_set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || !err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static void init_threads(void) {
    /* Must precede every event_base: other threads wake the loop with event_active. */
    evthread_use_pthreads();
    /* A peer that resets mid-write must give EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
}

void rl_init_threads(void) {
    pthread_once(&threads_once, init_threads);
}

/* Gives freed heap memory back to the system (relay_core.h). */
void rl_release_free_memory(void) {
    malloc_trim(0);
}
