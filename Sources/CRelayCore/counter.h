/* counter.h: counters with one writer (a loop thread) and readers anywhere. */
#ifndef RL_COUNTER_H
#define RL_COUNTER_H

#include <stdatomic.h>
#include <stdint.h>

/* Single-writer counters: the loop thread adds, scrapers read. A relaxed load plus a
 * relaxed store is a plain add on x86, with no locked instruction on the hot path. */
typedef _Atomic uint64_t rl_counter;
#define CTR_ADD(c, n) atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + (n), memory_order_relaxed)
#define CTR_INC(c) CTR_ADD(c, 1)
#define CTR_DEC(c) CTR_ADD(c, (uint64_t)-1)
#define CTR_GET(c) atomic_load_explicit(&(c), memory_order_relaxed)

#endif
