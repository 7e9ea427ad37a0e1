/*
 * node.h: the loops of one relay and what they tell each other about a device (core.c, the
 * hub, implements these).
 *
 * Each loop owns the registry shard of the devices shard.h assigns it, and is the only one to
 * write their entries. A loop serving a terminal reads another loop's entry without a lock
 * (rl_device_lookup) and sends the connection request itself, from its own socket of the
 * anchor's address, with its own callback port in it: the wake, the callback and the
 * session stay on the terminal's loop. What the terminal's loop learns about a device it does
 * not own (a wake started, went unanswered, ended) goes to the owner as a command.
 * With one loop every call below is a direct one.
 */
#ifndef RL_NODE_H
#define RL_NODE_H

#include "core_types.h"

/* `loop` runs over every loop of the relay `lead` belongs to. */
#define EACH_LOOP(lead, loop) \
    for (uint32_t each_ = 0; each_ < (lead)->node->n; each_++) \
        for (rl_core *loop = (lead)->node->loops[each_]; loop; loop = NULL)

/* The loop owning device `id`. */
rl_core *rl_owner(const rl_core *core, const char *id, size_t len);
/* Device `id` (hash `h`): this loop's own entry, or a consistent copy of the owner's in
 * `copy`; NULL when it is not provisioned. Only the owner may write through the result. */
const rl_dev *rl_device_lookup(const rl_core *core, const char *id, size_t len, uint64_t h, rl_dev *copy);
/* To the owner: a wake of the device started (its anchor moving then re-sends at once) ... */
void rl_node_wake_started(rl_core *core, const char *id, uint64_t h);
/* ... got no callback within the wake timeout (offline until it notifies again) ... */
void rl_node_wake_unanswered(rl_core *core, const char *id, uint64_t h);
/* ... and how it ended, for the admin API's history (RL_WAKE_*). */
void rl_node_track_wake(rl_core *core, const char *id, uint64_t h, uint32_t outcome, uint64_t latency_us);
/* The per-device tally every loop shares, locked while used. */
rl_tally *rl_node_devices_lock(rl_core *core);
void rl_node_devices_unlock(rl_core *core);

#endif
