/*
 * clock.h: the core's clocks. Registry and tally times are coarse monotonic seconds (or
 * tenths) since the core started, so that they fit 32 bits and "now" is never 0; latencies
 * are fine monotonic microseconds.
 */
#ifndef RL_CLOCK_H
#define RL_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static inline uint64_t rl_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Seconds since `t0` (a CLOCK_MONOTONIC_COARSE reading). */
static inline uint32_t rl_clock_s(const struct timespec *t0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)(ts.tv_sec - t0->tv_sec);
}

/* Tenths of a second since `t0`: a few ms coarse, plenty for tenths. */
static inline uint32_t rl_clock_ds(const struct timespec *t0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t ns = (int64_t)(ts.tv_sec - t0->tv_sec) * 1000000000 + (ts.tv_nsec - t0->tv_nsec);
    return (uint32_t)(ns / 100000000);
}

static inline struct timeval rl_timeval_ms(uint32_t ms) {
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
}

#define rl_core_now_s(core) rl_clock_s(&(core)->t0)
#define rl_core_now_ds(core) rl_clock_ds(&(core)->t0)

#endif
