/*
 * registry.h: the device registry [claim 4]. One 56-byte entry per provisioned device in a
 * dense array, found through an open-addressing index of 32-bit slots (linear probing,
 * backward-shift deletion). Sized once from configuration; never grows, never locks:
 * only the loop thread writes it.
 *
 * Memory per device at full capacity: 56 bytes of entry + 5 bytes of index (1.25 slots).
 */
#ifndef RL_REGISTRY_H
#define RL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include "relay_core.h"

#define RL_NO_SOCK 0xff
/* A wake of this device may be in flight: an anchor change re-sends its CONNECT_REQUEST at
 * once (session.c clears it when it finds none). */
#define RL_DEV_WAKING 0x01
#define RL_DEV_LEFT 0x02       /* its agent sent LEAVE: offline until it notifies again */
#define RL_DEV_UNANSWERED 0x04 /* its last wake got no callback: offline until it notifies again */

typedef struct rl_dev {
    uint64_t id_hash;     /* keyed hash of the device ID */
    uint64_t counter;     /* last accepted notify counter (replay protection) */
    uint8_t key[RL_KEY_LEN];
    uint8_t addr[16];     /* anchor: NAT public address, IPv4 as ::ffff:a.b.c.d */
    uint16_t port;        /* anchor port, host order */
    uint8_t sock;         /* relay UDP socket the anchor notify arrived on, RL_NO_SOCK if none */
    uint8_t flags;        /* RL_DEV_* */
    uint32_t last_access; /* core tenths of a second + 1 of the last NOTIFY_A; 0 = never */
} rl_dev;

_Static_assert(sizeof(rl_dev) == 56, "registry entry layout");

typedef struct rl_registry {
    rl_dev *devs;         /* dense, [0, count) */
    uint32_t *slots;      /* entry index + 1, 0 = empty */
    uint32_t capacity, count, n_slots;
    uint64_t seed;
} rl_registry;

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
size_t rl_registry_bytes(const rl_registry *r);

#endif
