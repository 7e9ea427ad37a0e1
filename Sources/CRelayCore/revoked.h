/*
 * revoked.h: the set of revoked terminal tokens, checked after a token verifies.
 *
 * Keys are the tokens' 8-byte random IDs (the tid field), each kept with its token's own
 * expiry: past it the token is refused as expired anyway, so the entry is dropped. Open
 * addressing with linear probing at most half full; a sweep rebuilds the table without the
 * expired entries, and only once the earliest expiry has passed. The IDs are random and
 * only looked up after a token's MAC verified, so they need no seeded hash.
 * Loop thread only.
 */
#ifndef RL_REVOKED_H
#define RL_REVOKED_H

#include <stdint.h>

typedef struct rl_revoked_slot {
    uint64_t tid;
    uint64_t expires; /* Unix seconds; 0 marks an empty slot */
} rl_revoked_slot;

typedef struct rl_revoked {
    rl_revoked_slot *slots; /* NULL until the first revocation */
    uint32_t mask;          /* slot count - 1 */
    uint32_t count;
    uint64_t earliest;      /* smallest expiry held: nothing to sweep before it passes */
} rl_revoked;

void rl_revoked_free(rl_revoked *r);
/* Adds `tid` until `expires_unix` (a later expiry wins for an ID already there). A token
 * already expired at `now_unix` is not kept. 0, or -1 when out of memory. */
int rl_revoked_add(rl_revoked *r, const uint8_t tid[8], uint64_t expires_unix, uint64_t now_unix);
/* 1 when `tid` is revoked. */
int rl_revoked_has(const rl_revoked *r, const uint8_t tid[8]);
/* Drops the entries whose token expired before `now_unix`. */
void rl_revoked_sweep(rl_revoked *r, uint64_t now_unix);

#endif
