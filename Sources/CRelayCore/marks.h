/*
 * marks.h: what the relay remembers about a device beyond its registry entry, for the few
 * devices it matters for at a time: when it went offline (its agent said it was leaving, or
 * it did not answer a wake) and where its anchor was before the last move (two agents with
 * one ID make the anchor alternate). The registry entry stays 56 bytes; these live in a
 * direct-mapped cache of RL_MARK_SLOTS entries (24 bytes each) indexed by the device's ID
 * hash (already a keyed hash), so a collision only forgets the older device's mark: its
 * answer then says less, and a flap may go unnoticed. Written by the device's owning loop
 * only; the offline time is also read by other loops (rl_marks_offline_ds), so it and the
 * slot's ID are stored atomically.
 */
#ifndef RL_MARKS_H
#define RL_MARKS_H

#include <stdint.h>

#define RL_MARK_SLOTS (1u << 16)

typedef struct rl_mark {
    uint64_t id_hash;        /* 0: empty */
    uint32_t offline_ds;     /* core deciseconds + 1 when it went offline (left / unanswered) */
    uint32_t prev_anchor;    /* hash of the anchor before the last move */
    uint32_t moved_ds;       /* core deciseconds of the last anchor move */
    uint32_t flap_logged_s;  /* core seconds of the last flap event logged */
} rl_mark;

typedef struct rl_marks {
    rl_mark *slots;
} rl_marks;

int rl_marks_init(rl_marks *m);
void rl_marks_free(rl_marks *m);
/* The device's mark, or NULL. */
rl_mark *rl_marks_find(const rl_marks *m, uint64_t id_hash);
/* The device's mark, taking its slot over from any other device. */
rl_mark *rl_marks_take(rl_marks *m, uint64_t id_hash);
void rl_marks_set_offline(rl_mark *k, uint32_t offline_ds);
/* From any thread: when the device went offline (rl_mark.offline_ds), or 0 when unknown. */
uint32_t rl_marks_offline_ds(const rl_marks *m, uint64_t id_hash);

#endif
