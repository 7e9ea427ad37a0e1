/* registry.c: see registry.h. */
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
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

/* ---- the owner's stores, seen by readers on other threads ---- */

static void write_begin(rl_registry *r) {
    atomic_store_explicit(&r->seq, atomic_load_explicit(&r->seq, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static void write_end(rl_registry *r) {
    atomic_store_explicit(&r->seq, atomic_load_explicit(&r->seq, memory_order_relaxed) + 1, memory_order_release);
}

static void set_slot(rl_registry *r, uint32_t i, uint32_t v) {
    __atomic_store_n(&r->slots[i], v, RL_RELAXED);
}

/* *d = *s, field by field, each store atomic. */
static void store_dev(rl_dev *d, const rl_dev *s) {
    __atomic_store_n(&d->id_hash, s->id_hash, RL_RELAXED);
    d->counter = s->counter;
    for (int w = 0; w < 2; w++) {
        __atomic_store_n(&d->key_w[w], s->key_w[w], RL_RELAXED);
        __atomic_store_n(&d->addr_w[w], s->addr_w[w], RL_RELAXED);
    }
    __atomic_store_n(&d->port, s->port, RL_RELAXED);
    __atomic_store_n(&d->sock, s->sock, RL_RELAXED);
    __atomic_store_n(&d->flags, s->flags, RL_RELAXED);
    __atomic_store_n(&d->last_access, s->last_access, RL_RELAXED);
}

void rl_registry_set_anchor(rl_registry *r, rl_dev *d, const uint8_t addr[16], uint16_t port, uint8_t sock) {
    uint64_t w[2];
    memcpy(w, addr, sizeof w);
    write_begin(r);
    __atomic_store_n(&d->addr_w[0], w[0], RL_RELAXED);
    __atomic_store_n(&d->addr_w[1], w[1], RL_RELAXED);
    __atomic_store_n(&d->port, port, RL_RELAXED);
    __atomic_store_n(&d->sock, sock, RL_RELAXED);
    write_end(r);
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
    rl_dev *d, fresh = {.id_hash = hash, .sock = RL_NO_SOCK};
    memcpy(fresh.key, key, RL_KEY_LEN);
    if (r->slots[i]) {
        d = &r->devs[r->slots[i] - 1];
        if (memcmp(d->key, key, RL_KEY_LEN) == 0) return 0;
        write_begin(r);
    } else {
        if (r->count == r->capacity) return -1;
        write_begin(r);
        d = &r->devs[r->count];
        store_dev(d, &fresh); /* the entry first, then the slot that finds it */
        __atomic_store_n(&r->count, r->count + 1, RL_RELAXED);
        set_slot(r, i, r->count);
        write_end(r);
        return 0;
    }
    store_dev(d, &fresh);
    write_end(r);
    return 0;
}

int rl_registry_remove(rl_registry *r, uint64_t hash) {
    uint32_t i = probe(r, hash);
    uint32_t v = r->slots[i];
    if (!v) return -1;
    /* Backward-shift deletion: pull later members of the cluster into the gap so that
     * probing never needs tombstones. */
    static const rl_dev empty;
    write_begin(r);
    uint32_t gap = i, j = i;
    for (;;) {
        if (++j == r->n_slots) j = 0;
        uint32_t w = r->slots[j];
        if (w == 0) break;
        uint32_t home = home_slot(r, r->devs[w - 1].id_hash);
        /* w may move into the gap unless its home lies cyclically in (gap, j]. */
        int home_after_gap = gap <= j ? (home > gap && home <= j) : (home > gap || home <= j);
        if (!home_after_gap) {
            set_slot(r, gap, w);
            gap = j;
        }
    }
    set_slot(r, gap, 0);
    /* Keep the entry array dense: the last entry moves into the hole. */
    uint32_t hole = v - 1, last = r->count - 1;
    if (hole != last) {
        store_dev(&r->devs[hole], &r->devs[last]);
        set_slot(r, probe(r, r->devs[last].id_hash), hole + 1);
    }
    store_dev(&r->devs[last], &empty);
    __atomic_store_n(&r->count, r->count - 1, RL_RELAXED);
    write_end(r);
    return 0;
}

/* ---- readers on any thread ---- */

static void load_dev(const rl_dev *s, rl_dev *d) {
    d->id_hash = __atomic_load_n(&s->id_hash, RL_RELAXED);
    d->counter = 0; /* the owner's alone */
    for (int w = 0; w < 2; w++) {
        d->key_w[w] = __atomic_load_n(&s->key_w[w], RL_RELAXED);
        d->addr_w[w] = __atomic_load_n(&s->addr_w[w], RL_RELAXED);
    }
    d->port = __atomic_load_n(&s->port, RL_RELAXED);
    d->sock = __atomic_load_n(&s->sock, RL_RELAXED);
    d->flags = __atomic_load_n(&s->flags, RL_RELAXED);
    d->last_access = __atomic_load_n(&s->last_access, RL_RELAXED);
}

void rl_registry_copy_at(const rl_registry *r, uint32_t i, rl_dev *out) {
    load_dev(&r->devs[i < r->capacity ? i : 0], out);
}

/* One probe of a registry that may be changing under it: bounded by the index size (a torn
 * view could lack the empty slot a probe stops at), its result checked by the caller. */
static int read_once(const rl_registry *r, uint64_t hash, rl_dev *out) {
    uint32_t i = home_slot(r, hash);
    for (uint32_t step = 0; step < r->n_slots; step++) {
        uint32_t v = __atomic_load_n(&r->slots[i], RL_RELAXED);
        if (v == 0 || v > r->capacity) return 0;
        if (__atomic_load_n(&r->devs[v - 1].id_hash, RL_RELAXED) == hash) {
            load_dev(&r->devs[v - 1], out);
            return out->id_hash == hash;
        }
        if (++i == r->n_slots) i = 0;
    }
    return 0;
}

int rl_registry_read(const rl_registry *r, uint64_t hash, rl_dev *out) {
    for (;;) {
        uint32_t s1 = atomic_load_explicit(&r->seq, memory_order_acquire);
        if (s1 & 1) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        int found = read_once(r, hash, out);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&r->seq, memory_order_relaxed) == s1) return found;
    }
}
