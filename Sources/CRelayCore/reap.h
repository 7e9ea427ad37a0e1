/*
 * reap.h: deferred teardown. An object that ends inside another object's callback is not
 * freed there: it is unlinked from every table, its events are disarmed, and it is queued
 * here; the core frees the queue after the current callback returns (an event activated
 * from a callback runs later in the same loop pass). So no caller has to ask "did I just
 * free myself?": an object a callback holds stays valid until that callback has returned
 * (redis' freeClientAsync, haproxy's flags and wakeups).
 */
#ifndef RL_REAP_H
#define RL_REAP_H

typedef struct rl_core rl_core;

typedef struct rl_reap {
    struct rl_reap *next;
    void (*destroy)(struct rl_reap *self);
} rl_reap;

/* Queues `node` (embedded in the object) to be destroyed after the current callback. */
void rl_reap_later(rl_core *core, rl_reap *node, void (*destroy)(rl_reap *self));
/* Destroys everything queued (the reap event, and the core's stop and free). */
void rl_reap_now(rl_core *core);

#endif
