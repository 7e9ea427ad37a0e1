/*
 * liveness.c: is a device alive, and if not, why [claims 4, 5, 18]. The verdict comes from
 * the registry alone (last NOTIFY_A, anchor, the RL_DEV_LEFT / RL_DEV_UNANSWERED flags) and
 * the device's mark for when it went offline, so answering costs no datagram.
 */
#include <stdio.h>
#include <string.h>
#include "core_types.h"
#include "liveness.h"
#include "node.h"

int rl_device_alive(const rl_core *core, const rl_dev *dev, uint32_t now_ds) {
    if (dev->last_access == 0 || dev->sock == RL_NO_SOCK || (rl_dev_flags(dev) & (RL_DEV_LEFT | RL_DEV_UNANSWERED))) return 0;
    return now_ds - (dev->last_access - 1) <= core->cfg.period_s * 10;
}

/* "4.2 s" from tenths. */
static void tenths(char *out, size_t n, uint32_t ds) {
    snprintf(out, n, "%u.%u s", ds / 10, ds % 10);
}

int rl_liveness_verdict(const rl_core *core, const rl_dev *dev, const char *id, char *msg, size_t n) {
    uint32_t now_ds = rl_core_now_ds(core);
    if (rl_device_alive(core, dev, now_ds)) return 0;
    char ago[32] = "";
    /* The mark is kept by the loop that owns the device, which may not be this one. */
    const rl_core *owner = rl_owner(core, id, strlen(id));
    uint32_t offline_ds = (rl_dev_flags(dev) & (RL_DEV_LEFT | RL_DEV_UNANSWERED))
                              ? rl_marks_offline_ds(&owner->marks, dev->id_hash) : 0;
    if (offline_ds) tenths(ago, sizeof ago, now_ds - (offline_ds - 1));
    if (dev->last_access == 0 || dev->sock == RL_NO_SOCK)
        snprintf(msg, n, "device %s is offline: it has not notified the relay since the relay started\n", id);
    else if (dev->flags & RL_DEV_LEFT)
        snprintf(msg, n, "device %s is offline: its agent said it was stopping%s%s%s\n", id, ago[0] ? " " : "", ago,
                 ago[0] ? " ago" : "");
    else if (dev->flags & RL_DEV_UNANSWERED)
        snprintf(msg, n, "device %s is offline: it did not answer its last wake%s%s%s; it counts as offline until it "
                 "notifies again\n", id, ago[0] ? " " : "", ago, ago[0] ? " ago" : "");
    else {
        tenths(ago, sizeof ago, now_ds - (dev->last_access - 1));
        snprintf(msg, n, "device %s is offline: last notify %s ago, max access period %u s\n", id, ago, core->cfg.period_s);
    }
    return 503;
}

void rl_device_went_offline(rl_core *core, rl_dev *dev, uint8_t why) {
    rl_dev_set_flags(dev, rl_dev_flags(dev) | why);
    rl_marks_set_offline(rl_marks_take(&core->marks, dev->id_hash), rl_core_now_ds(core) + 1);
}

void rl_device_heard(rl_core *core, rl_dev *dev) {
    if (!(dev->flags & (RL_DEV_LEFT | RL_DEV_UNANSWERED))) return;
    rl_dev_set_flags(dev, rl_dev_flags(dev) & (uint8_t)~(RL_DEV_LEFT | RL_DEV_UNANSWERED));
    rl_mark *m = rl_marks_find(&core->marks, dev->id_hash);
    if (m) rl_marks_set_offline(m, 0);
}
