/*
 * tally.h: per-source and per-device tallies for the abuse limits.
 *
 * A tally counts, per key (a terminal's address, or a device's ID hash), what is open now
 * (connections, sessions) and how many events (new connections, wakes) fell in the current
 * fixed window. Entries live in a chained hash with a seeded hash (an attacker choosing
 * addresses cannot pile them on one chain) and are swept once a second when nothing is open
 * and their window is over, so memory follows the keys active in the last window.
 * Loop thread only.
 */
#ifndef RL_TALLY_H
#define RL_TALLY_H

#include <stdint.h>

typedef struct rl_tally_entry {
    struct rl_tally_entry *next;
    uint8_t key[16];
    uint32_t open;          /* connections or sessions now */
    uint32_t window_start;  /* core seconds */
    uint32_t window_events; /* events counted since window_start */
} rl_tally_entry;

typedef struct rl_tally {
    rl_tally_entry **buckets;
    uint32_t mask;
    uint32_t count;     /* entries */
    uint32_t window_s;  /* window length in seconds */
    uint64_t seed;
} rl_tally;

int rl_tally_init(rl_tally *t, uint32_t buckets_log2, uint32_t window_s);
void rl_tally_free(rl_tally *t);
/* The entry for `key`, created when absent (NULL only when out of memory); its window
 * restarts when the current one is over. */
rl_tally_entry *rl_tally_get(rl_tally *t, const uint8_t key[16], uint32_t now_s);
/* Frees entries with nothing open whose window is over. */
void rl_tally_sweep(rl_tally *t, uint32_t now_s);

#endif
