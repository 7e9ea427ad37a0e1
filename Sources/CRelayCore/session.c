/*
 * session.c: wakes and device links [claims 1, 3, 9, 17].
 *
 * A session is born when a terminal asks for a live device: it gets a random session ID
 * and nonce, and the connection request is (re)sent on a backoff until the device calls
 * back or the wake timeout passes. Once bound, the session carries one terminal's traffic
 * over its own device link; when that terminal leaves at a message boundary the link
 * stays idle for a while, and a terminal naming the session ID is served on it again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core_types.h"
#include "session.h"
#include "records.h"
#include "udp.h"
#include "splice.h"
#include "liveness.h"
#include "track.h"
#include "flow.h"
#include "node.h"
#include "mesh.h"

/* Wake-to-callback latency buckets (relay_wake_seconds in /metrics). */
const uint32_t rl_wake_bucket_us[RL_WAKE_BUCKETS] = {250,    500,    1000,   2500,    5000,    10000,  25000,
                                                      50000,  100000, 250000, 500000, 1000000, 2500000};

static void on_wake_timer(evutil_socket_t fd, short what, void *arg);
static void on_idle_timer(evutil_socket_t fd, short what, void *arg);

static uint32_t bucket_of(const rl_core *core, const uint8_t sid[RL_SESSION_ID_LEN]) {
    uint32_t v;
    memcpy(&v, sid, sizeof v); /* session IDs are uniformly random */
    return v & core->sess_mask;
}

rl_session *rl_session_find(rl_core *core, const uint8_t sid[RL_SESSION_ID_LEN]) {
    for (rl_session *s = core->sess_buckets[bucket_of(core, sid)]; s; s = s->next_in_bucket)
        if (memcmp(s->sid, sid, RL_SESSION_ID_LEN) == 0) return s;
    return NULL;
}

static void unlink_session(rl_session *s) {
    rl_session **pp = &s->core->sess_buckets[bucket_of(s->core, s->sid)];
    while (*pp && *pp != s) pp = &(*pp)->next_in_bucket;
    if (*pp) *pp = s->next_in_bucket;
}

static void arm(rl_session *s, uint32_t ms) {
    struct timeval tv = rl_timeval_ms(ms);
    evtimer_add(s->timer, &tv);
}

/* Sends (or, through the cluster, asks for) the connection request. */
static void send_request(rl_core *core, rl_session *s) {
    if (!s->remote && rl_udp_send_connect(core, s) == RL_SEND_NOT_HELD && rl_clustered(core)) {
        /* keepalived moved the address this device notifies to another node: ask the cluster. */
        s->remote = 1;
        CTR_INC(core->ctr.wakes_cross_node);
    }
    if (s->remote) rl_mesh_send_wake(core, s);
}

rl_session *rl_session_wake(rl_core *core, rl_term *term, const char *device_id, uint64_t id_hash, int remote) {
    if (core->n_sessions >= core->cfg.max_sessions) return NULL;
    rl_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->core = core;
    s->timer = evtimer_new(core->base, on_wake_timer, s);
    uint8_t fresh[sizeof s->sid + sizeof s->nonce]; /* one RAND_bytes call for both */
    int random_ok = rl_random_bytes(fresh, sizeof fresh) == 0;
    memcpy(s->sid, fresh, sizeof s->sid);
    memcpy(s->nonce, fresh + sizeof s->sid, sizeof s->nonce);
    if (!s->timer || !random_ok) {
        if (s->timer) event_free(s->timer);
        free(s);
        return NULL;
    }
    rl_hex(s->sid, sizeof s->sid, s->sid_hex);
    snprintf(s->device_id, sizeof s->device_id, "%s", device_id);
    s->id_hash = id_hash;
    s->state = SESS_WAKING;
    rl_pair(term, s);
    uint32_t b = bucket_of(core, s->sid);
    s->next_in_bucket = core->sess_buckets[b];
    core->sess_buckets[b] = s;
    core->n_sessions++;
    CTR_INC(core->ctr.sessions_active);
    CTR_INC(core->ctr.wakes_started);
    s->wake_started_us = rl_mono_us();
    s->remote = remote;
    if (remote) CTR_INC(core->ctr.wakes_cross_node);
    else rl_node_wake_started(core, s->device_id, id_hash);
    send_request(core, s);
    arm(s, RL_RESEND_FIRST_MS);
    return s;
}

int rl_session_anchor_moved(rl_core *core, uint64_t id_hash) {
    int waking = 0;
    for (uint32_t b = 0; b <= core->sess_mask; b++)
        for (rl_session *s = core->sess_buckets[b]; s; s = s->next_in_bucket)
            if (s->state == SESS_WAKING && !s->remote && s->id_hash == id_hash) {
                rl_udp_send_connect(core, s); /* to the new anchor, now */
                waking = 1;
            }
    return waking;
}

/* Retransmits on a doubling backoff capped at RL_RESEND_MAX_MS (0, 0.1, 0.3, 0.7, 1.5, 2.5 s
 * ...) until the wake timeout: a lost datagram late in the wake costs at most a second. */
static void on_wake_timer(evutil_socket_t fd, short what, void *arg) {
    rl_session *s = arg;
    rl_core *core = s->core;
    uint64_t elapsed_ms = (rl_mono_us() - s->wake_started_us) / 1000;
    if (elapsed_ms >= core->cfg.wake_timeout_ms) {
        CTR_INC(core->ctr.wakes_timeout);
        /* Offline until it notifies again: the next terminal gets 503 at once, not this wait.
         * A wake through the cluster leaves that to the holder, whose device it is. */
        if (s->remote) rl_mesh_wake_timed_out(core, s);
        else rl_node_wake_unanswered(core, s->device_id, s->id_hash);
        rl_node_track_wake(core, s->device_id, s->id_hash, RL_WAKE_TIMEOUT, elapsed_ms * 1000);
        rl_term *t = s->term;
        char body[224];
        if (s->remote && !s->mesh_answered)
            snprintf(body, sizeof body, "no other node of the cluster answered the wake of device %s within %u ms (is "
                     "the mesh cut off?)\n", s->device_id, core->cfg.wake_timeout_ms);
        else
            snprintf(body, sizeof body, "device %s did not call back within %u ms\n", s->device_id,
                     core->cfg.wake_timeout_ms);
        if (t) t->ops->fail(t, 504, body);
        rl_session_end(s);
        return;
    }
    send_request(core, s);
    s->retransmits++;
    uint32_t next = RL_RESEND_FIRST_MS << (s->retransmits < 4 ? s->retransmits : 4);
    if (next > RL_RESEND_MAX_MS) next = RL_RESEND_MAX_MS;
    uint32_t left = core->cfg.wake_timeout_ms - (uint32_t)elapsed_ms;
    arm(s, next < left ? next : left);
}

void rl_session_bind(rl_session *s, rl_stream *link) {
    rl_core *core = s->core;
    evtimer_del(s->timer);
    event_free(s->timer);
    s->timer = evtimer_new(core->base, on_idle_timer, s);
    s->link = link;
    s->state = SESS_BOUND;
    rl_stream_mute(link); /* the exchange takes its events (rl_xchg_begin) */
    uint64_t waited = rl_mono_us() - s->wake_started_us;
    int b = 0;
    while (b < RL_WAKE_BUCKETS && waited > rl_wake_bucket_us[b]) b++;
    CTR_INC(core->ctr.wake_bucket[b]);
    CTR_ADD(core->ctr.wake_us_sum, waited);
    CTR_INC(core->ctr.wakes_bound);
    rl_node_track_wake(core, s->device_id, s->id_hash, RL_WAKE_BOUND, waited);
    if (s->term) s->term->ops->bound(s->term);
    else rl_session_end(s);
}

void rl_session_fail(rl_session *s, int status, const char *body) {
    if (s->term) s->term->ops->fail(s->term, status, body);
    rl_session_end(s);
}

void rl_session_attach(rl_session *s, rl_term *t) {
    evtimer_del(s->timer);
    s->state = SESS_BOUND;
    rl_pair(t, s);
    s->resp_started = 0;
    s->last_status = 0;
}

int rl_session_at_boundary(const rl_session *s) {
    return s->pipe.count == 0 && !s->resp.raw && !s->resp.in_body &&
           (!s->term || (!s->term->req.raw && !s->term->req.in_body));
}

void rl_session_detach(rl_session *s) {
    rl_core *core = s->core;
    if (s->term) rl_unpair(s->term);
    int clean = s->link && !s->link->eof && rl_session_at_boundary(s) && evbuffer_get_length(s->link->in) == 0;
    if (!clean || core->cfg.idle_link_s == 0 || atomic_load_explicit(&core->draining, memory_order_relaxed)) {
        rl_session_end(s);
        return;
    }
    s->state = SESS_IDLE;
    rl_stream_read(s->link, 1); /* an idle device that speaks or closes ends the session */
    arm(s, core->cfg.idle_link_s * 1000);
}

static void on_idle_timer(evutil_socket_t fd, short what, void *arg) {
    rl_session *s = arg;
    if (s->state == SESS_IDLE) rl_session_end(s);
}

void rl_pair(rl_term *t, rl_session *s) {
    t->sess = s;
    s->term = t;
}

void rl_unpair(rl_term *t) {
    if (t->sess) t->sess->term = NULL;
    t->sess = NULL;
}

static void session_destroy(rl_reap *node) {
    rl_session *s = (rl_session *)node;
    if (s->timer) event_free(s->timer);
    rl_stream_free(s->link);
    free(s);
}

/* Ends the session now (no lookup finds it, nothing of it runs again, its slot counts as
 * free) and frees it after the current callback. */
void rl_session_end(rl_session *s) {
    if (s->dying) return;
    rl_core *core = s->core;
    s->dying = 1;
    rl_splice_free(s->splice); /* its events watch the terminal's and the link's sockets */
    s->splice = NULL;
    if (s->term) {
        rl_term *t = s->term;
        rl_unpair(t);
        t->ops->close(t, RL_OUTCOME_ABORTED);
    }
    unlink_session(s);
    if (s->tally) {
        rl_node_devices_lock(core);
        s->tally->open--;
        rl_node_devices_unlock(core);
    }
    if (s->timer) evtimer_del(s->timer);
    rl_stream_mute(s->link);
    core->n_sessions--;
    CTR_DEC(core->ctr.sessions_active);
    rl_reap_later(core, &s->reap, session_destroy);
}

void rl_session_end_device(rl_core *core, uint64_t id_hash) {
    for (uint32_t b = 0; b <= core->sess_mask; b++) {
        rl_session *s = core->sess_buckets[b];
        while (s) {
            rl_session *next = s->next_in_bucket;
            if (s->id_hash == id_hash) rl_session_end(s);
            s = next;
        }
    }
}

void rl_session_end_idle(rl_core *core) {
    for (uint32_t b = 0; b <= core->sess_mask; b++) {
        rl_session *s = core->sess_buckets[b];
        while (s) {
            rl_session *next = s->next_in_bucket;
            if (s->state == SESS_IDLE) rl_session_end(s);
            s = next;
        }
    }
}

void rl_session_end_all(rl_core *core) {
    for (uint32_t b = 0; b <= core->sess_mask; b++)
        while (core->sess_buckets[b]) rl_session_end(core->sess_buckets[b]);
}
