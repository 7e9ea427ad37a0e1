/* registry.c: see registry.h. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "registry.h"
#include "hash.h"

/* Maps a hash onto [0, n) without division (Lemire's multiply-shift). */
static inline uint32_t home_slot(const rl_registry *r, uint64_t hash) {
    return (uint32_t)(((unsigned __int128)hash * r->n_slots) >> 64);
}

static void *map_zeroed(size_t bytes) {
    /* Anonymous mappings are zero pages until touched: an empty registry costs no RSS. */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int rl_registry_init(rl_registry *r, uint32_t capacity) {
    memset(r, 0, sizeof *r);
    if (capacity == 0 || capacity > (1u << 30)) return -1;
    r->capacity = capacity;
    r->n_slots = capacity + capacity / 4 + 16;
    r->devs = map_zeroed((size_t)capacity * sizeof(rl_dev));
    r->slots = map_zeroed((size_t)r->n_slots * sizeof(uint32_t));
    if (!r->devs || !r->slots) {
        rl_registry_free(r);
        return -1;
    }
    rl_random_bytes((uint8_t *)&r->seed, sizeof r->seed);
    return 0;
}

void rl_registry_free(rl_registry *r) {
    if (r->devs) munmap(r->devs, (size_t)r->capacity * sizeof(rl_dev));
    if (r->slots) munmap(r->slots, (size_t)r->n_slots * sizeof(uint32_t));
    r->devs = NULL;
    r->slots = NULL;
}

size_t rl_registry_bytes(const rl_registry *r) {
    return (size_t)r->capacity * sizeof(rl_dev) + (size_t)r->n_slots * sizeof(uint32_t);
}

/* Keyed by a per-process seed: an outsider cannot pick IDs that collide. */
uint64_t rl_registry_hash(const rl_registry *r, const char *id, size_t len) {
    return rl_hash64(r->seed, id, len);
}

/* The slot holding `hash`, or the empty slot where it would go. */
static uint32_t probe(const rl_registry *r, uint64_t hash) {
    uint32_t i = home_slot(r, hash);
    for (;;) {
        uint32_t v = r->slots[i];
        if (v == 0 || r->devs[v - 1].id_hash == hash) return i;
        if (++i == r->n_slots) i = 0;
    }
}

rl_dev *rl_registry_find(const rl_registry *r, uint64_t hash) {
    uint32_t v = r->slots[probe(r, hash)];
    return v ? &r->devs[v - 1] : NULL;
}

int rl_registry_put(rl_registry *r, uint64_t hash, const uint8_t key[RL_KEY_LEN]) {
    uint32_t i = probe(r, hash);
    rl_dev *d;
    if (r->slots[i]) {
        d = &r->devs[r->slots[i] - 1];
        if (memcmp(d->key, key, RL_KEY_LEN) == 0) return 0;
    } else {
        if (r->count == r->capacity) return -1;
        r->slots[i] = ++r->count;
        d = &r->devs[r->count - 1];
    }
    memset(d, 0, sizeof *d);
    d->id_hash = hash;
    d->sock = RL_NO_SOCK;
    memcpy(d->key, key, RL_KEY_LEN);
    return 0;
}

int rl_registry_remove(rl_registry *r, uint64_t hash) {
    uint32_t i = probe(r, hash);
    uint32_t v = r->slots[i];
    if (!v) return -1;
    /* Backward-shift deletion: pull later members of the cluster into the gap so that
     * probing never needs tombstones. */
    uint32_t gap = i, j = i;
    for (;;) {
        if (++j == r->n_slots) j = 0;
        uint32_t w = r->slots[j];
        if (w == 0) break;
        uint32_t home = home_slot(r, r->devs[w - 1].id_hash);
        /* w may move into the gap unless its home lies cyclically in (gap, j]. */
        int home_after_gap = gap <= j ? (home > gap && home <= j) : (home > gap || home <= j);
        if (!home_after_gap) {
            r->slots[gap] = w;
            gap = j;
        }
    }
    r->slots[gap] = 0;
    /* Keep the entry array dense: the last entry moves into the hole. */
    uint32_t hole = v - 1, last = r->count - 1;
    if (hole != last) {
        r->slots[probe(r, r->devs[last].id_hash)] = hole + 1;
        r->devs[hole] = r->devs[last];
    }
    memset(&r->devs[last], 0, sizeof(rl_dev));
    r->count--;
    return 0;
}
