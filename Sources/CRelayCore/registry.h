/*
 * registry.h: the device registry [claim 4]. One 56-byte entry per provisioned device in a
 * dense array, found through an open-addressing index of 32-bit slots (linear probing,
 * backward-shift deletion). Sized once from configuration; never grows, never locks.
 *
 * One writer, many readers. With several loop threads each owns one registry (a shard: the
 * devices whose ID hashes to it, shard.h); only its loop writes it, and any loop may read it
 * without a lock through rl_registry_read, a seqlock: the shard's sequence is odd while the
 * owner moves entries (put, remove) or changes an anchor, and a reader that saw it odd or
 * changed retries. Fields another thread reads are stored with relaxed atomic stores, read
 * with relaxed atomic loads, ordered by the fences around the sequence (Boehm, "Can seqlocks
 * get along with programming language memory models?", 2012). Nothing is ever freed or
 * moved while running (the arrays are mapped once), so a reader sees at worst stale data,
 * which the sequence rejects. last_access and flags change alone and need no sequence.
 *
 * Memory per device at full capacity: 56 bytes of entry + 5 bytes of index (1.25 slots).
 */
#ifndef RL_REGISTRY_H
#define RL_REGISTRY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "relay_core.h"

#define RL_NO_SOCK 0xff
/* A wake of this device may be in flight: an anchor change re-sends its CONNECT_REQUEST at
 * once (session.c clears it when it finds none). */
#define RL_DEV_WAKING 0x01
#define RL_DEV_LEFT 0x02       /* its agent sent LEAVE: offline until it notifies again */
#define RL_DEV_UNANSWERED 0x04 /* its last wake got no callback: offline until it notifies again */
#define RL_DEV_REDIRECTS 0x08  /* its agent takes CONNECT_REQUEST_TO (its last PERIOD_REQUEST said so) */

typedef struct rl_dev {
    uint64_t id_hash;     /* keyed hash of the device ID */
    uint64_t counter;     /* last accepted notify counter (replay protection; owner only) */
    union {
        uint8_t key[RL_KEY_LEN];
        uint64_t key_w[2];  /* the same bytes as words, for atomic copies */
    };
    union {
        uint8_t addr[16];   /* anchor: NAT public address, IPv4 as ::ffff:a.b.c.d */
        uint64_t addr_w[2];
    };
    uint16_t port;        /* anchor port, host order */
    uint8_t sock;         /* relay UDP address (its index) the anchor notify arrived on, RL_NO_SOCK if none */
    uint8_t flags;        /* RL_DEV_* */
    uint32_t last_access; /* core tenths of a second + 1 of the last NOTIFY_A; 0 = never */
} rl_dev;

_Static_assert(sizeof(rl_dev) == 56, "registry entry layout");

typedef struct rl_registry {
    rl_dev *devs;         /* dense, [0, count) */
    uint32_t *slots;      /* entry index + 1, 0 = empty */
    uint32_t capacity, count, n_slots;
    uint64_t seed;
    _Atomic uint32_t seq; /* odd while the owner moves entries or an anchor */
} rl_registry;

#define RL_RELAXED __ATOMIC_RELAXED
/* The owner's writes of the fields that change alone; any thread's reads of them. */
static inline void rl_dev_set_last_access(rl_dev *d, uint32_t v) { __atomic_store_n(&d->last_access, v, RL_RELAXED); }
static inline uint8_t rl_dev_flags(const rl_dev *d) { return __atomic_load_n(&d->flags, RL_RELAXED); }
static inline void rl_dev_set_flags(rl_dev *d, uint8_t f) { __atomic_store_n(&d->flags, f, RL_RELAXED); }

int rl_registry_init(rl_registry *r, uint32_t capacity);
void rl_registry_free(rl_registry *r);
uint64_t rl_registry_hash(const rl_registry *r, const char *id, size_t len);
/* The entry for `hash`, or NULL. Pointers stay valid until the next put/remove. */
rl_dev *rl_registry_find(const rl_registry *r, uint64_t hash);
/* Inserts or replaces the key. A changed key resets anchor, liveness and counter.
 * 0, or -1 when the registry is full. */
int rl_registry_put(rl_registry *r, uint64_t hash, const uint8_t key[RL_KEY_LEN]);
/* 0, or -1 when absent. */
int rl_registry_remove(rl_registry *r, uint64_t hash);
/* Moves the anchor of `d` (the owner's write, under the sequence). */
void rl_registry_set_anchor(rl_registry *r, rl_dev *d, const uint8_t addr[16], uint16_t port, uint8_t sock);
/* From any thread: a consistent copy of the entry for `hash` (its counter excepted) in `out`,
 * 1; or 0 when absent. Never blocks the owner; retries while it writes. */
int rl_registry_read(const rl_registry *r, uint64_t hash, rl_dev *out);
/* From any thread: entry `i` (< rl_registry_count) field by field, no sequence (gauges). */
void rl_registry_copy_at(const rl_registry *r, uint32_t i, rl_dev *out);
/* From any thread: the number of entries (for gauges). */
static inline uint32_t rl_registry_count(const rl_registry *r) { return __atomic_load_n(&r->count, RL_RELAXED); }
size_t rl_registry_bytes(const rl_registry *r);

#endif
