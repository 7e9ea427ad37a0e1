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
        memset(k, 0, sizeof *k);
        k->id_hash = id_hash;
    }
    return k;
}
