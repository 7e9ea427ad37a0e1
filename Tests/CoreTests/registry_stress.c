/*
 * registry_stress.c: the registry's lock-free reads under a writing owner (registry.c).
 *
 * One owner thread writes as a loop thread would: it flips the anchor of every "stable"
 * device between two complete values A and B, churns put/remove of "transient" devices
 * (hundreds, many of them with home slots at or just before a stable device's, so that
 * backward-shift deletion moves stable devices' slots and the last entry keeps moving into
 * the hole), re-keys transients, anchors them, and touches last_access and flags. Reader
 * threads (1, then 2, then 3) call rl_registry_read meanwhile and check every copy:
 *   - a stable device is always found (never a false "unknown device"), with exactly its key,
 *     and its anchor is exactly A or exactly B (address, port and socket together);
 *   - a filler device (present throughout) is always found, with its key and no anchor;
 *   - a transient device, when found, has its id_hash and a key it was given at some time
 *     (never a mix of two), and an anchor that is none, A or B; and when the owner's
 *     generation counter shows it was present for the whole read, it is found.
 * The owner also checks the index itself (every slot reachable from its home, every entry
 * named by one slot) every few rounds. Bounded by an iteration count and a wall-clock cap.
 *
 *   cc -g -O2 -std=gnu11 -pthread -ISources/CRelayCore/include -ISources/CRelayCore \
 *     Sources/CRelayCore/registry.c Sources/CRelayCore/crypto.c Sources/CRelayCore/wire.c \
 *     Sources/CRelayCore/util.c Tests/CoreTests/registry_stress.c -o /tmp/registry_stress -lcrypto
 * (registry.c needs only rl_random_bytes from crypto.c, but crypto.c's token code needs
 * wire.c's HMAC and util.c's hex and ID helpers at link time.)
 * and the same under -fsanitize=address,undefined and (clang-14) -fsanitize=thread.
 * Optional argument: total seconds (default 2), split over the three reader counts.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "registry.h"

#define CAPACITY 4096
#define N_STABLE 64
#define N_FILLER 2400
#define N_TRANS 800          /* half with home slots next to a stable device's */
#define MAX_READERS 3
#define OWNER_ROUNDS 2000000 /* the iteration cap; the clock usually ends a phase first */
#define READER_READS 500000000ull

static rl_registry reg;
static uint64_t stable_hash[N_STABLE], filler_hash[N_FILLER], trans_hash[N_TRANS];

/* The owner's bookkeeping that readers consult: a transient's generation (odd while it is
 * being removed or absent, even once put and present) and the highest key version given. */
static _Atomic uint32_t trans_gen[N_TRANS];
static _Atomic uint32_t trans_ver[N_TRANS];
static int trans_live[N_TRANS]; /* owner only */

static atomic_int stop;
static atomic_ullong inconsistent, total_reads;
static atomic_int reports;

static uint8_t addr_a[16], addr_b[16];
static const uint8_t addr_none[16];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t xs(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static uint32_t home_of(uint64_t hash) { /* registry.c's home_slot */
    return (uint32_t)(((unsigned __int128)hash * reg.n_slots) >> 64);
}

static void stable_key(int s, uint8_t key[RL_KEY_LEN]) {
    for (int i = 0; i < RL_KEY_LEN; i++) key[i] = (uint8_t)(0x5a ^ (s * 13 + i * 7));
}
static void filler_key(int f, uint8_t key[RL_KEY_LEN]) {
    for (int i = 0; i < RL_KEY_LEN; i++) key[i] = (uint8_t)(0xc3 ^ (f * 29 + i * 11));
}
/* A transient's key of version v: bytes 0-1 its index, 2-5 the version, the rest a pattern
 * of both, so a key mixed from two versions cannot pass. */
static void trans_key(int t, uint32_t v, uint8_t key[RL_KEY_LEN]) {
    key[0] = (uint8_t)t;
    key[1] = (uint8_t)(t >> 8);
    memcpy(key + 2, &v, 4);
    for (int i = 6; i < RL_KEY_LEN; i++) key[i] = (uint8_t)(t * 7 + v * 131 + i * 17);
}
static int trans_key_valid(int t, const uint8_t key[RL_KEY_LEN], uint32_t max_ver) {
    uint32_t v;
    memcpy(&v, key + 2, 4);
    if (v > max_ver) return 0;
    uint8_t want[RL_KEY_LEN];
    trans_key(t, v, want);
    return memcmp(want, key, RL_KEY_LEN) == 0;
}

static int anchor_is(const rl_dev *d, const uint8_t addr[16], uint16_t port, uint8_t sock) {
    return memcmp(d->addr, addr, 16) == 0 && d->port == port && d->sock == sock;
}
static int anchor_ab(const rl_dev *d) { return anchor_is(d, addr_a, 1000, 0) || anchor_is(d, addr_b, 2000, 1); }

static void report(const char *what, int i, const rl_dev *d) {
    atomic_fetch_add(&inconsistent, 1);
    if (atomic_fetch_add(&reports, 1) >= 20) return;
    fprintf(stderr, "INCONSISTENT %s #%d: id_hash %016llx key[0..3] %02x%02x%02x%02x port %u sock %u addr[12..15] %02x%02x%02x%02x\n",
            what, i, d ? (unsigned long long)d->id_hash : 0ull, d ? d->key[0] : 0, d ? d->key[1] : 0, d ? d->key[2] : 0,
            d ? d->key[3] : 0, d ? d->port : 0, d ? d->sock : 0, d ? d->addr[12] : 0, d ? d->addr[13] : 0,
            d ? d->addr[14] : 0, d ? d->addr[15] : 0);
}

/* ---- readers ---- */

static void *reader(void *arg) {
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)arg * 0x100000001b3ull;
    unsigned long long reads = 0;
    uint8_t key[RL_KEY_LEN];
    rl_dev d;
    while (!atomic_load_explicit(&stop, memory_order_relaxed) && reads < READER_READS) {
        for (int burst = 0; burst < 64; burst++) {
            uint64_t x = xs(&s);
            /* Stable: always there, its key, anchor A or B whole. */
            int i = (int)(x % N_STABLE);
            memset(&d, 0xee, sizeof d);
            if (!rl_registry_read(&reg, stable_hash[i], &d)) report("stable not found", i, NULL);
            else {
                stable_key(i, key);
                if (d.id_hash != stable_hash[i]) report("stable id_hash", i, &d);
                if (memcmp(d.key, key, RL_KEY_LEN) != 0) report("stable key", i, &d);
                if (!anchor_ab(&d)) report("stable anchor neither A nor B", i, &d);
            }
            /* Transient: if found, its own and one of its keys; found if present throughout. */
            int t = (int)((x >> 20) % N_TRANS);
            uint32_t g1 = atomic_load_explicit(&trans_gen[t], memory_order_acquire);
            memset(&d, 0xee, sizeof d);
            int found = rl_registry_read(&reg, trans_hash[t], &d);
            uint32_t v = atomic_load_explicit(&trans_ver[t], memory_order_acquire);
            uint32_t g2 = atomic_load_explicit(&trans_gen[t], memory_order_acquire);
            if (found) {
                if (d.id_hash != trans_hash[t]) report("transient id_hash", t, &d);
                if (!trans_key_valid(t, d.key, v)) report("transient key never given", t, &d);
                if (!anchor_ab(&d) && !anchor_is(&d, addr_none, 0, RL_NO_SOCK)) report("transient anchor", t, &d);
            } else if (g1 == g2 && !(g1 & 1)) {
                report("transient present throughout, not found", t, NULL);
            }
            /* Filler: present throughout, never anchored. */
            int f = (int)((x >> 40) % N_FILLER);
            if (!rl_registry_read(&reg, filler_hash[f], &d)) report("filler not found", f, NULL);
            else {
                filler_key(f, key);
                if (d.id_hash != filler_hash[f] || memcmp(d.key, key, RL_KEY_LEN) != 0 ||
                    !anchor_is(&d, addr_none, 0, RL_NO_SOCK))
                    report("filler", f, &d);
            }
            reads += 3;
        }
    }
    atomic_fetch_add(&total_reads, reads);
    return NULL;
}

/* ---- the owner ---- */

/* The index as the owner sees it: every slot's entry is reachable from its home without an
 * empty slot on the way, and every entry in [0, count) is named by exactly one slot. */
static int check_index(void) {
    static uint8_t named[CAPACITY];
    memset(named, 0, sizeof named);
    uint32_t used = 0;
    for (uint32_t i = 0; i < reg.n_slots; i++) {
        uint32_t v = reg.slots[i];
        if (!v) continue;
        used++;
        if (v > reg.count || named[v - 1]++) return 0;
        for (uint32_t j = home_of(reg.devs[v - 1].id_hash); j != i; j = j + 1 == reg.n_slots ? 0 : j + 1)
            if (!reg.slots[j]) return 0;
    }
    return used == reg.count;
}

static unsigned long long owner_rounds, stable_moves, slot_moves, n_removes, n_puts, n_rekeys;

static void owner_put_trans(int t) {
    uint8_t key[RL_KEY_LEN];
    uint32_t v = atomic_load_explicit(&trans_ver[t], memory_order_relaxed) + 1;
    atomic_store_explicit(&trans_ver[t], v, memory_order_release); /* before any reader can see the key */
    trans_key(t, v, key);
    if (rl_registry_put(&reg, trans_hash[t], key) != 0) {
        fprintf(stderr, "put failed (full?)\n");
        atomic_fetch_add(&inconsistent, 1);
        return;
    }
    if (!trans_live[t]) {
        atomic_store_explicit(&trans_gen[t], atomic_load_explicit(&trans_gen[t], memory_order_relaxed) + 1,
                              memory_order_release); /* even: present from here on */
        trans_live[t] = 1;
        n_puts++;
    } else {
        n_rekeys++;
    }
}

static void owner_remove_trans(int t) {
    atomic_store_explicit(&trans_gen[t], atomic_load_explicit(&trans_gen[t], memory_order_relaxed) + 1,
                          memory_order_release); /* odd: going away */
    if (rl_registry_remove(&reg, trans_hash[t]) != 0) {
        fprintf(stderr, "remove of a live transient failed\n");
        atomic_fetch_add(&inconsistent, 1);
    }
    trans_live[t] = 0;
    n_removes++;
}

/* Counts the moves of stable entries in the dense array and in the index since last call. */
static void track_stable(rl_dev **where, uint32_t *slot_of) {
    for (int i = 0; i < N_STABLE; i++) {
        rl_dev *d = rl_registry_find(&reg, stable_hash[i]);
        if (d != where[i]) stable_moves++, where[i] = d;
        uint32_t j = home_of(stable_hash[i]);
        for (uint32_t step = 0; step < reg.n_slots; step++, j = j + 1 == reg.n_slots ? 0 : j + 1)
            if (reg.slots[j] && reg.devs[reg.slots[j] - 1].id_hash == stable_hash[i]) break;
        if (j != slot_of[i]) slot_moves += slot_of[i] != UINT32_MAX, slot_of[i] = j;
    }
}

static void *owner(void *arg) {
    double end = *(double *)arg;
    uint64_t s = 0xdeadbeefcafef00dull;
    rl_dev *where[N_STABLE];
    uint32_t slot_of[N_STABLE];
    for (int i = 0; i < N_STABLE; i++) {
        where[i] = rl_registry_find(&reg, stable_hash[i]);
        slot_of[i] = UINT32_MAX;
    }
    track_stable(where, slot_of);
    /* First every live transient goes, in random order: the stable devices were put last,
     * so each removal below them moves one of them (the last entry) into the hole, and the
     * removals of the colliding ones shift the stable devices' slots back toward home. */
    for (int left = 0; left < N_TRANS; left++) {
        int t = (int)(xs(&s) % N_TRANS);
        for (int k = 0; k < N_TRANS && !trans_live[t]; k++) t = (t + 1) % N_TRANS;
        if (!trans_live[t]) break;
        owner_remove_trans(t);
        track_stable(where, slot_of);
    }
    for (unsigned long long round = 0; round < OWNER_ROUNDS && now_s() < end; round++) {
        /* Every stable anchor to the other value, whole. */
        for (int i = 0; i < N_STABLE; i++) {
            rl_dev *d = rl_registry_find(&reg, stable_hash[i]);
            if (!d) {
                fprintf(stderr, "owner: stable %d lost\n", i);
                atomic_fetch_add(&inconsistent, 1);
                continue;
            }
            if ((round + (unsigned)i) & 1) rl_registry_set_anchor(&reg, d, addr_a, 1000, 0);
            else rl_registry_set_anchor(&reg, d, addr_b, 2000, 1);
        }
        /* Churn: removes, puts, re-keys and anchors of transients. */
        for (int k = 0; k < 48; k++) {
            uint64_t x = xs(&s);
            int t = (int)(x % N_TRANS);
            unsigned op = (unsigned)(x >> 32) % 8;
            if (!trans_live[t]) owner_put_trans(t);
            else if (op < 4) owner_remove_trans(t);
            else if (op < 6) owner_put_trans(t); /* re-key: resets its anchor */
            else {
                rl_dev *d = rl_registry_find(&reg, trans_hash[t]);
                if (d) rl_registry_set_anchor(&reg, d, op == 6 ? addr_a : addr_b, op == 6 ? 1000 : 2000, op == 6 ? 0 : 1);
            }
        }
        /* The fields that change alone. */
        rl_dev *d = rl_registry_find(&reg, stable_hash[round % N_STABLE]);
        if (d) {
            rl_dev_set_last_access(d, (uint32_t)round + 1);
            rl_dev_set_flags(d, (uint8_t)(round & RL_DEV_WAKING));
        }
        track_stable(where, slot_of);
        if (round % 32 == 0 && !check_index()) {
            fprintf(stderr, "owner: index inconsistent at round %llu\n", round);
            atomic_fetch_add(&inconsistent, 1);
            break;
        }
        owner_rounds++;
    }
    if (!check_index()) {
        fprintf(stderr, "owner: index inconsistent at the end\n");
        atomic_fetch_add(&inconsistent, 1);
    }
    for (int t = 0; t < N_TRANS; t++) {
        if ((rl_registry_find(&reg, trans_hash[t]) != NULL) != trans_live[t]) {
            fprintf(stderr, "owner: transient %d presence wrong\n", t);
            atomic_fetch_add(&inconsistent, 1);
        }
    }
    atomic_store(&stop, 1);
    return NULL;
}

/* ---- setup ---- */

static int setup(void) {
    if (rl_registry_init(&reg, CAPACITY) != 0) return -1;
    memset(trans_live, 0, sizeof trans_live);
    for (int t = 0; t < N_TRANS; t++) atomic_store(&trans_ver[t], 0);
    char id[64];
    uint8_t key[RL_KEY_LEN];
    memcpy(addr_a, (uint8_t[16]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}, 16);
    memcpy(addr_b, (uint8_t[16]){0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 16);
    /* Fillers first (the load that makes clusters long), then transients, then the stable devices. */
    for (int f = 0; f < N_FILLER; f++) {
        int l = snprintf(id, sizeof id, "filler-%d", f);
        filler_hash[f] = rl_registry_hash(&reg, id, (size_t)l);
        filler_key(f, key);
        if (rl_registry_put(&reg, filler_hash[f], key) != 0) return -1;
    }
    static uint8_t near_stable[CAPACITY + CAPACITY / 4 + 16];
    for (int i = 0; i < N_STABLE; i++) {
        int l = snprintf(id, sizeof id, "stable-%d", i);
        stable_hash[i] = rl_registry_hash(&reg, id, (size_t)l);
        /* Homes at or a few slots before a stable device's: their removal shifts it. */
        uint32_t h = home_of(stable_hash[i]);
        for (int back = 0; back <= 3; back++) near_stable[(h + reg.n_slots - (uint32_t)back) % reg.n_slots] = 1;
    }
    /* Transients: half chosen from many generated IDs for homes next to a stable one. */
    int colliding = 0, other = 0;
    for (int c = 0; c < 10000000 && colliding + other < N_TRANS; c++) {
        int l = snprintf(id, sizeof id, "transient-%d", c);
        uint64_t h = rl_registry_hash(&reg, id, (size_t)l);
        int near = near_stable[home_of(h)];
        if (near && colliding < N_TRANS / 2) trans_hash[colliding++ + other] = h;
        else if (!near && other < N_TRANS / 2) trans_hash[colliding + other++] = h;
    }
    if (colliding + other < N_TRANS) return -1;
    for (int t = 0; t < N_TRANS; t++) {
        atomic_store(&trans_gen[t], 1); /* absent */
        if (t % 2 == 0) owner_put_trans(t);
    }
    /* The stable devices last, so that the first removals move them into holes too. */
    for (int i = 0; i < N_STABLE; i++) {
        stable_key(i, key);
        if (rl_registry_put(&reg, stable_hash[i], key) != 0) return -1;
        rl_dev *d = rl_registry_find(&reg, stable_hash[i]);
        rl_registry_set_anchor(&reg, d, addr_a, 1000, 0);
    }
    return check_index() ? 0 : -1;
}

int main(int argc, char **argv) {
    double total_s = argc > 1 ? atof(argv[1]) : 2.0;
    if (total_s <= 0 || total_s > 600) total_s = 2.0;
    int epochs = 0;
    /* Phases of 1, 2 and 3 readers; each phase is epochs of 0.1 s on a registry built anew
     * (a stable entry only ever moves toward its home slot, so moves need fresh layouts). */
    for (int readers = 1; readers <= MAX_READERS; readers++) {
        unsigned long long before = atomic_load(&total_reads), r0 = owner_rounds;
        double phase_end = now_s() + total_s / MAX_READERS;
        int phase_epochs = 0;
        while (phase_epochs < 1000 && (phase_epochs == 0 || now_s() < phase_end)) {
            if (setup() != 0) {
                fprintf(stderr, "setup failed\n");
                return 1;
            }
            if (epochs == 0)
                printf("  registry: %u entries of %u, %u slots\n", rl_registry_count(&reg), CAPACITY, reg.n_slots);
            atomic_store(&stop, 0);
            double end = now_s() + 0.1;
            if (end > phase_end) end = phase_end;
            pthread_t o, rd[MAX_READERS];
            pthread_create(&o, NULL, owner, &end);
            for (int i = 0; i < readers; i++) pthread_create(&rd[i], NULL, reader, (void *)(uintptr_t)(i + 1 + 8 * epochs));
            pthread_join(o, NULL);
            for (int i = 0; i < readers; i++) pthread_join(rd[i], NULL);
            rl_registry_free(&reg);
            phase_epochs++, epochs++;
        }
        printf("  %d reader%s: %llu reads, %llu owner rounds, %d registries\n", readers, readers > 1 ? "s" : "",
               atomic_load(&total_reads) - before, owner_rounds - r0, phase_epochs);
    }
    printf("  owner: %llu puts, %llu removes, %llu re-keys, %llu stable entry moves, %llu stable slot moves\n", n_puts,
           n_removes, n_rekeys, stable_moves, slot_moves);
    unsigned long long bad = atomic_load(&inconsistent), reads = atomic_load(&total_reads);
    printf("registry stress: %llu reads, %llu inconsistent\n", reads, bad);
    return bad || reads == 0 ? 1 : 0;
}
