/* liveness.h: whether a device counts as alive, and why not (liveness.c). */
#ifndef RL_LIVENESS_H
#define RL_LIVENESS_H

#include "core_types.h"

/* 1 when `dev` counts as alive at `now_ds`: a NOTIFY_A within the max access period, an
 * anchor, and neither a LEAVE nor an unanswered wake since. */
int rl_device_alive(const rl_core *core, const rl_dev *dev, uint32_t now_ds);
/* 0 when alive; else 503 with the reason (and how long ago) in `msg`. */
int rl_liveness_verdict(const rl_core *core, const rl_dev *dev, const char *id, char *msg, size_t n);
/* The device left (RL_DEV_LEFT) or did not answer a wake (RL_DEV_UNANSWERED): offline until
 * it notifies again, with the time kept in its mark. */
void rl_device_went_offline(rl_core *core, rl_dev *dev, uint8_t why);
/* A verified notify: whatever took it offline is over. */
void rl_device_heard(rl_core *core, rl_dev *dev);

#endif
