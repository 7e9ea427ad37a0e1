/* reap.c: the queue of ended objects, freed after the callback that ended them (reap.h). */
#include "core_types.h"
#include "reap.h"

void rl_reap_later(rl_core *core, rl_reap *node, void (*destroy)(rl_reap *self)) {
    node->destroy = destroy;
    node->next = core->reap;
    core->reap = node;
    if (core->reap_ev) event_active(core->reap_ev, 0, 0);
}

void rl_reap_now(rl_core *core) {
    while (core->reap) {
        rl_reap *node = core->reap;
        core->reap = node->next;
        node->destroy(node);
    }
}
