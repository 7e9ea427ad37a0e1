/* track.h: per-device extras for the admin API, loop thread only (track.c). */
#ifndef RL_TRACK_H
#define RL_TRACK_H

#include "core_types.h"

/* The side table: extras of at most RL_TRACK_MAX devices, FIFO eviction (track.c). */
#define RL_TRACK_SLOTS (2 * RL_TRACK_MAX) /* power of two: index at most half full */

typedef struct rl_track {
    uint64_t id_hash; /* 0: free */
    uint32_t address_changes;
    uint8_t n_addr, addr_next, n_wake, wake_next;
    struct {
        uint64_t at_unix;
        uint8_t addr[16];
        uint16_t port;
    } addrs[RL_TRACK_HIST];
    struct {
        uint64_t at_unix;
        uint32_t latency_us;
        uint32_t outcome;
    } wakes[RL_TRACK_HIST];
} rl_track;

struct rl_track_table {
    rl_track entries[RL_TRACK_MAX];
    uint16_t slots[RL_TRACK_SLOTS]; /* entry index + 1, 0 = empty */
    uint32_t next;                  /* next entry to hand out (FIFO eviction) */
    uint32_t count;
};

/* A notify moved `dev`'s anchor to addr/port (not its first anchor). */
void rl_track_moved(rl_core *core, const rl_dev *dev, const uint8_t addr[16], uint16_t port);
/* A wake ended: RL_WAKE_BOUND after `latency_us`, or RL_WAKE_TIMEOUT. */
void rl_track_wake(rl_core *core, uint64_t id_hash, uint32_t outcome, uint64_t latency_us);
/* The device was removed or re-keyed: its extras go. */
void rl_track_forget(rl_core *core, uint64_t id_hash);
void rl_track_free(rl_core *core);
/* The extras of `h`, or NULL. */
rl_track *rl_track_find(const rl_core *core, uint64_t h);

#endif
