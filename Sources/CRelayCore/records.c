/*
 * records.c: what the loop thread hands the control layer: finished-session records and
 * operator events, each in a ring under rec_mu. The loop never waits on the control layer:
 * a full record ring overwrites its oldest, a full event ring counts what it lost.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "core_types.h"
#include "records.h"

void rl_core_push_record(rl_core *core, const rl_session_record *rec) {
    pthread_mutex_lock(&core->rec_mu);
    size_t slot = (core->rec_head + core->rec_count) % RL_RECORD_RING;
    core->recs[slot] = *rec;
    if (core->rec_count < RL_RECORD_RING) core->rec_count++;
    else core->rec_head = (core->rec_head + 1) % RL_RECORD_RING; /* full: the oldest is overwritten */
    pthread_mutex_unlock(&core->rec_mu);
}

void rl_core_push_event(rl_core *core, uint32_t kind, const char *device_id, size_t id_len, const char *fmt, ...) {
    rl_core_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    if (id_len > RL_ID_MAX) id_len = RL_ID_MAX;
    memcpy(ev.device_id, device_id, id_len);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.detail, sizeof ev.detail, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&core->rec_mu);
    if (core->ev_count < RL_EVENT_RING) {
        core->events[(core->ev_head + core->ev_count) % RL_EVENT_RING] = ev;
        core->ev_count++;
    } else {
        CTR_INC(core->ctr.events_lost); /* the log is behind: count, never block the loop */
    }
    pthread_mutex_unlock(&core->rec_mu);
}

static size_t drain_events(rl_core *core, rl_core_event *out, size_t max) {
    pthread_mutex_lock(&core->rec_mu);
    size_t n = 0;
    while (n < max && core->ev_count > 0) {
        out[n++] = core->events[core->ev_head];
        core->ev_head = (core->ev_head + 1) % RL_EVENT_RING;
        core->ev_count--;
    }
    pthread_mutex_unlock(&core->rec_mu);
    return n;
}

static size_t drain_records(rl_core *core, rl_session_record *out, size_t max) {
    pthread_mutex_lock(&core->rec_mu);
    size_t n = 0;
    while (n < max && core->rec_count > 0) {
        out[n++] = core->recs[core->rec_head];
        core->rec_head = (core->rec_head + 1) % RL_RECORD_RING;
        core->rec_count--;
    }
    pthread_mutex_unlock(&core->rec_mu);
    return n;
}

/* Every loop keeps its own rings; the control layer drains them all from the lead. */
size_t rl_core_drain_events(rl_core *core, rl_core_event *out, size_t max) {
    size_t n = 0;
    for (uint32_t l = 0; l < core->node->n && n < max; l++) n += drain_events(core->node->loops[l], out + n, max - n);
    return n;
}

size_t rl_core_drain_records(rl_core *core, rl_session_record *out, size_t max) {
    size_t n = 0;
    for (uint32_t l = 0; l < core->node->n && n < max; l++) n += drain_records(core->node->loops[l], out + n, max - n);
    return n;
}
