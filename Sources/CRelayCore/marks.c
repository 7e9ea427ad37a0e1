/* marks.c: see marks.h. */
#include <stdlib.h>
#include <string.h>
#include "marks.h"

int rl_marks_init(rl_marks *m) {
    m->slots = calloc(RL_MARK_SLOTS, sizeof *m->slots);
    return m->slots ? 0 : -1;
}

void rl_marks_free(rl_marks *m) {
    free(m->slots);
    m->slots = NULL;
}

static rl_mark *slot_of(const rl_marks *m, uint64_t id_hash) {
    return &m->slots[(uint32_t)(id_hash >> 32) & (RL_MARK_SLOTS - 1)];
}

rl_mark *rl_marks_find(const rl_marks *m, uint64_t id_hash) {
    rl_mark *k = slot_of(m, id_hash);
    return k->id_hash == id_hash ? k : NULL;
}

rl_mark *rl_marks_take(rl_marks *m, uint64_t id_hash) {
    rl_mark *k = slot_of(m, id_hash);
    if (k->id_hash != id_hash) {
        __atomic_store_n(&k->id_hash, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&k->offline_ds, 0, __ATOMIC_RELAXED);
        k->prev_anchor = k->moved_ds = k->flap_logged_s = 0;
        __atomic_store_n(&k->id_hash, id_hash, __ATOMIC_RELAXED);
    }
    return k;
}

void rl_marks_set_offline(rl_mark *k, uint32_t offline_ds) {
    __atomic_store_n(&k->offline_ds, offline_ds, __ATOMIC_RELAXED);
}

uint32_t rl_marks_offline_ds(const rl_marks *m, uint64_t id_hash) {
    const rl_mark *k = slot_of(m, id_hash);
    if (__atomic_load_n(&k->id_hash, __ATOMIC_RELAXED) != id_hash) return 0;
    uint32_t v = __atomic_load_n(&k->offline_ds, __ATOMIC_RELAXED);
    /* Taken over by another device meanwhile: say nothing rather than its time. */
    return __atomic_load_n(&k->id_hash, __ATOMIC_RELAXED) == id_hash ? v : 0;
}
