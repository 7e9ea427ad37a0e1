/*
 * track.c: the side table of per-device extras the admin API shows (address changes,
 * address history, last wakes).
 *
 * rl_dev stays 56 bytes. Extras are kept only for devices that moved or were
 * woken recently: at most RL_TRACK_MAX entries (allocated on first use, about 800 KiB), found
 * through an open-addressing index on the registry's keyed ID hash. When full, the entry
 * created longest ago is evicted (FIFO), so a device's address_changes count what happened
 * since it entered the table (the relay-wide relay_address_changes_total counts everything).
 * Loop thread only.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core_types.h"
#include "track.h"

static uint32_t slot_of(uint64_t h) {
    return (uint32_t)(h ^ (h >> 29)) & (RL_TRACK_SLOTS - 1);
}

static int find_slot(const struct rl_track_table *t, uint64_t h) {
    for (uint32_t i = slot_of(h), n = 0; n < RL_TRACK_SLOTS; i = (i + 1) & (RL_TRACK_SLOTS - 1), n++) {
        uint16_t s = t->slots[i];
        if (!s) return -1;
        if (t->entries[s - 1].id_hash == h) return (int)i;
    }
    return -1;
}

/* Backward-shift deletion keeps linear probing free of tombstones. */
static void delete_slot(struct rl_track_table *t, uint32_t i) {
    uint32_t mask = RL_TRACK_SLOTS - 1, j = i;
    t->slots[i] = 0;
    for (;;) {
        j = (j + 1) & mask;
        uint16_t s = t->slots[j];
        if (!s) return;
        uint32_t home = slot_of(t->entries[s - 1].id_hash);
        /* Move s back into the hole when its home is not in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->slots[i] = s;
            t->slots[j] = 0;
            i = j;
        }
    }
}

rl_track *rl_track_find(const rl_core *core, uint64_t h) {
    if (!core->track) return NULL;
    int i = find_slot(core->track, h);
    return i < 0 ? NULL : &core->track->entries[core->track->slots[i] - 1];
}

static rl_track *track_get(rl_core *core, uint64_t h) {
    rl_track *e = rl_track_find(core, h);
    if (e) return e;
    if (!core->track) {
        core->track = calloc(1, sizeof *core->track);
        if (!core->track) return NULL;
    }
    struct rl_track_table *t = core->track;
    uint32_t idx = t->next;
    t->next = (t->next + 1) % RL_TRACK_MAX;
    e = &t->entries[idx];
    if (e->id_hash) { /* full: the oldest entry goes */
        int s = find_slot(t, e->id_hash);
        if (s >= 0) delete_slot(t, (uint32_t)s);
        t->count--;
    }
    memset(e, 0, sizeof *e);
    e->id_hash = h;
    uint32_t i = slot_of(h);
    while (t->slots[i]) i = (i + 1) & (RL_TRACK_SLOTS - 1);
    t->slots[i] = (uint16_t)(idx + 1);
    t->count++;
    return e;
}

void rl_track_moved(rl_core *core, const rl_dev *dev, const uint8_t addr[16], uint16_t port) {
    rl_track *e = track_get(core, dev->id_hash);
    if (!e) return;
    e->address_changes++;
    uint8_t k = e->addr_next;
    e->addrs[k].at_unix = (uint64_t)time(NULL);
    memcpy(e->addrs[k].addr, addr, 16);
    e->addrs[k].port = port;
    e->addr_next = (uint8_t)((k + 1) % RL_TRACK_HIST);
    if (e->n_addr < RL_TRACK_HIST) e->n_addr++;
}

void rl_track_wake(rl_core *core, uint64_t id_hash, uint32_t outcome, uint64_t latency_us) {
    rl_track *e = track_get(core, id_hash);
    if (!e) return;
    uint8_t k = e->wake_next;
    e->wakes[k].at_unix = (uint64_t)time(NULL);
    e->wakes[k].latency_us = latency_us > UINT32_MAX ? UINT32_MAX : (uint32_t)latency_us;
    e->wakes[k].outcome = outcome;
    e->wake_next = (uint8_t)((k + 1) % RL_TRACK_HIST);
    if (e->n_wake < RL_TRACK_HIST) e->n_wake++;
}

void rl_track_forget(rl_core *core, uint64_t id_hash) {
    if (!core->track) return;
    int s = find_slot(core->track, id_hash);
    if (s < 0) return;
    rl_track *e = &core->track->entries[core->track->slots[s] - 1];
    delete_slot(core->track, (uint32_t)s);
    memset(e, 0, sizeof *e);
    core->track->count--;
}

void rl_track_free(rl_core *core) {
    free(core->track);
    core->track = NULL;
}

