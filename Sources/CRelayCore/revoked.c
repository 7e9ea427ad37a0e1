/* revoked.c: the revoked-token set (see revoked.h). */
#include <stdlib.h>
#include <string.h>
#include "revoked.h"
#include "hash.h"

#define MIN_SLOTS 16u

static uint64_t key_of(const uint8_t tid[8]) {
    uint64_t k;
    memcpy(&k, tid, sizeof k);
    return k;
}

/* The IDs are uniformly random already; the mix only spreads any bit pattern. */
static uint32_t home(uint64_t k, uint32_t mask) {
    return (uint32_t)rl_hash_mix(k) & mask;
}

/* Inserts into a table known to have room. */
static void place(rl_revoked_slot *slots, uint32_t mask, uint64_t k, uint64_t expires) {
    uint32_t i = home(k, mask);
    while (slots[i].expires && slots[i].tid != k) i = (i + 1) & mask;
    if (!slots[i].expires || slots[i].expires < expires) slots[i].expires = expires;
    slots[i].tid = k;
}

/* Moves the live entries into a table of `n_slots` (a power of two, above twice the count). */
static int rebuild(rl_revoked *r, uint32_t n_slots, uint64_t now_unix) {
    rl_revoked_slot *fresh = calloc(n_slots, sizeof *fresh);
    if (!fresh) return -1;
    uint32_t count = 0;
    uint64_t earliest = UINT64_MAX;
    for (uint32_t i = 0; r->slots && i <= r->mask; i++) {
        rl_revoked_slot s = r->slots[i];
        if (!s.expires || s.expires < now_unix) continue;
        place(fresh, n_slots - 1, s.tid, s.expires);
        count++;
        if (s.expires < earliest) earliest = s.expires;
    }
    free(r->slots);
    r->slots = fresh;
    r->mask = n_slots - 1;
    r->count = count;
    r->earliest = count ? earliest : 0;
    return 0;
}

void rl_revoked_free(rl_revoked *r) {
    free(r->slots);
    memset(r, 0, sizeof *r);
}

int rl_revoked_add(rl_revoked *r, const uint8_t tid[8], uint64_t expires_unix, uint64_t now_unix) {
    if (expires_unix < now_unix || expires_unix == 0) return 0;
    if (!r->slots || 2 * ((uint64_t)r->count + 1) > (uint64_t)r->mask + 1) {
        uint32_t n = r->slots ? (r->mask + 1) * 2 : MIN_SLOTS;
        if (r->slots && r->mask + 1 >= (1u << 31)) return -1;
        if (rebuild(r, n, now_unix) != 0) return -1;
    }
    uint64_t k = key_of(tid);
    uint32_t i = home(k, r->mask);
    while (r->slots[i].expires && r->slots[i].tid != k) i = (i + 1) & r->mask;
    if (!r->slots[i].expires) {
        r->count++;
        r->slots[i].tid = k;
    }
    if (r->slots[i].expires < expires_unix) r->slots[i].expires = expires_unix;
    if (!r->earliest || expires_unix < r->earliest) r->earliest = expires_unix;
    return 0;
}

int rl_revoked_has(const rl_revoked *r, const uint8_t tid[8]) {
    if (!r->count) return 0;
    uint64_t k = key_of(tid);
    uint32_t i = home(k, r->mask);
    while (r->slots[i].expires) {
        if (r->slots[i].tid == k) return 1;
        i = (i + 1) & r->mask;
    }
    return 0;
}

void rl_revoked_sweep(rl_revoked *r, uint64_t now_unix) {
    if (!r->count || r->earliest >= now_unix) return;
    uint32_t live = 0;
    for (uint32_t i = 0; i <= r->mask; i++) live += r->slots[i].expires >= now_unix;
    /* Shrinks back as revocations expire, never below the starting size. */
    uint32_t n = r->mask + 1;
    while (n > MIN_SLOTS && 8 * (uint64_t)live < n) n /= 2;
    rebuild(r, n, now_unix); /* out of memory: the expired entries stay until the next sweep */
}
