/*
 * inspect.c: what the admin API reads from the running core, and the side table of
 * per-device extras (track.c).
 *
 * Reading. The registry and the sessions belong to the loop thread. A control-layer thread
 * asks with rl_core_inspect_*: the request is queued to the loop thread (event_base_once,
 * which wakes the loop like event_active does), runs there between two event callbacks, copies
 * what was asked into the caller's buffer and signals a condition variable. Each request is
 * bounded by its caller's buffer (a page of at most RL_INSPECT_MAX devices, each one registry
 * lookup), never a walk of the whole registry, so the loop is held for microseconds. The
 * caller waits at most `timeout_ms`; a request the loop never ran (stopping) is then
 * abandoned, and whichever side finishes last frees it.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core_types.h"
#include "netaddr.h"
#include "track.h"
#include "liveness.h"
#include "session.h"
#include "node.h"

/* ---- requests queued to the loop thread ---- */

enum { REQ_DEVICES, REQ_HISTORY, REQ_SESSIONS, REQ_END_SESSION, REQ_SUMMARY };

typedef struct rl_inspect_req {
    rl_core *core;
    int kind;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, abandoned;
    int result;
    /* REQ_DEVICES */
    rl_device_view *views;
    size_t n;
    /* REQ_HISTORY */
    const char *id;
    rl_device_history *history;
    /* REQ_SESSIONS, REQ_END_SESSION */
    const char *filter; /* device ID or session ID hex */
    rl_session_view *sessions;
    size_t max;
    size_t *total_out;
    /* REQ_SUMMARY: the pass so far */
    rl_fleet_summary *summary;
    uint32_t pos, chunks;
    uint64_t acc_online, acc_never, acc_us;
} rl_inspect_req;

static void format_addr(const uint8_t addr[16], uint16_t port, char *out, size_t len) {
    char host[INET6_ADDRSTRLEN];
    if (rl_v6_family(addr) == AF_INET) {
        inet_ntop(AF_INET, addr + 12, host, sizeof host);
        snprintf(out, len, "%s:%u", host, port);
    } else {
        inet_ntop(AF_INET6, addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, port);
    }
}

static void fill_page(rl_inspect_req *r);

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The view of a device this loop owns (its sessions are counted by every loop: fill_page). */
static void fill_view(rl_core *core, rl_device_view *v, uint32_t now_ds) {
    size_t len = strnlen(v->id, RL_ID_MAX);
    if (rl_owner(core, v->id, len) != core) return;
    uint64_t h = rl_registry_hash(&core->reg, v->id, len);
    rl_dev *dev = rl_registry_find(&core->reg, h);
    v->known = dev != NULL;
    v->online = 0;
    v->last_notify_a_age_s = -1;
    v->address[0] = 0;
    v->address_changes = 0;
    v->last_wake_unix = 0;
    v->last_wake_outcome = 0;
    v->last_wake_latency_us = 0;
    v->offline_why = 0;
    if (!dev) return;
    /* The front's own verdict (liveness.c): a notify A within the period, an anchor, and no
     * LEAVE or unanswered wake since; last_access is in tenths of a second. The reason is a
     * code (the control layer words it), in rl_liveness_verdict's order: no text is formatted
     * on the loop thread. */
    if (dev->last_access) v->last_notify_a_age_s = (now_ds - (dev->last_access - 1)) / 10;
    v->online = (uint32_t)rl_device_alive(core, dev, now_ds);
    if (!v->online)
        v->offline_why = dev->last_access == 0 || dev->sock == RL_NO_SOCK ? RL_OFFLINE_NEVER
                         : dev->flags & RL_DEV_LEFT                         ? RL_OFFLINE_LEFT
                         : dev->flags & RL_DEV_UNANSWERED                   ? RL_OFFLINE_UNANSWERED
                                                                            : RL_OFFLINE_STALE;
    if (dev->sock != RL_NO_SOCK) format_addr(dev->addr, dev->port, v->address, sizeof v->address);
    rl_track *e = rl_track_find(core, h);
    if (e) {
        v->address_changes = e->address_changes;
        if (e->n_wake) {
            uint8_t k = (uint8_t)((e->wake_next + RL_TRACK_HIST - 1) % RL_TRACK_HIST);
            v->last_wake_unix = e->wakes[k].at_unix;
            v->last_wake_outcome = e->wakes[k].outcome;
            v->last_wake_latency_us = e->wakes[k].latency_us;
        }
    }
}

static void run_devices(rl_inspect_req *r) {
    rl_core *core = r->core;
    uint64_t t0 = rl_mono_us();
    fill_page(r);
    uint64_t took = rl_mono_us() - t0;
    if (r->n == 0) return; /* a barrier, not a page */
    core->inspect_n++;
    core->inspect_us_total += took;
    if (took > core->inspect_us_max) core->inspect_us_max = took;
}

static void fill_page(rl_inspect_req *r) {
    rl_core *core = r->core;
    uint32_t now_ds = rl_core_now_ds(core);
    for (size_t i = 0; i < r->n; i++) fill_view(core, &r->views[i], now_ds);
    if (core->n_sessions == 0 || r->n == 0) return;
    /* Sessions per device: one pass over the session table, each session's device found by
     * binary search among the page's hashes (hash, index pairs sorted by hash). */
    uint64_t *pairs = malloc(r->n * 2 * sizeof *pairs);
    if (!pairs) return;
    for (size_t i = 0; i < r->n; i++) {
        pairs[2 * i] = rl_registry_hash(&core->reg, r->views[i].id, strnlen(r->views[i].id, RL_ID_MAX));
        pairs[2 * i + 1] = i;
    }
    qsort(pairs, r->n, 2 * sizeof *pairs, cmp_u64);
    for (uint32_t b = 0; b <= core->sess_mask; b++)
        for (rl_session *s = core->sess_buckets[b]; s; s = s->next_in_bucket) {
            size_t lo = 0, hi = r->n;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (pairs[2 * mid] < s->id_hash) lo = mid + 1;
                else hi = mid;
            }
            for (size_t k = lo; k < r->n && pairs[2 * k] == s->id_hash; k++) r->views[pairs[2 * k + 1]].sessions++;
        }
    free(pairs);
}

static void run_history(rl_inspect_req *r) {
    rl_core *core = r->core;
    rl_device_history *o = r->history;
    memset(o, 0, sizeof *o);
    uint64_t h = rl_registry_hash(&core->reg, r->id, strnlen(r->id, RL_ID_MAX));
    if (!rl_registry_find(&core->reg, h)) {
        r->result = -1;
        return;
    }
    rl_track *e = rl_track_find(core, h);
    if (!e) return;
    o->tracked = 1;
    o->address_changes = e->address_changes;
    /* Newest first. */
    for (uint32_t i = 0; i < e->n_addr; i++) {
        uint8_t k = (uint8_t)((e->addr_next + RL_TRACK_HIST - 1 - i) % RL_TRACK_HIST);
        o->addresses[i].at_unix = e->addrs[k].at_unix;
        format_addr(e->addrs[k].addr, e->addrs[k].port, o->addresses[i].address, sizeof o->addresses[i].address);
    }
    o->n_addresses = e->n_addr;
    for (uint32_t i = 0; i < e->n_wake; i++) {
        uint8_t k = (uint8_t)((e->wake_next + RL_TRACK_HIST - 1 - i) % RL_TRACK_HIST);
        o->wakes[i].at_unix = e->wakes[k].at_unix;
        o->wakes[i].latency_us = e->wakes[k].latency_us;
        o->wakes[i].outcome = e->wakes[k].outcome;
    }
    o->n_wakes = e->n_wake;
}

static void session_view(const rl_session *s, rl_session_view *v, uint64_t now_us) {
    memset(v, 0, sizeof *v);
    memcpy(v->session_id, s->sid_hex, sizeof v->session_id);
    memcpy(v->device_id, s->device_id, sizeof v->device_id);
    v->state = s->state == SESS_WAKING ? RL_SESSION_WAKING : s->state == SESS_BOUND ? RL_SESSION_BOUND : RL_SESSION_IDLE;
    v->age_ms = (now_us - s->wake_started_us) / 1000;
    if (s->term) {
        snprintf(v->terminal, sizeof v->terminal, "%s", s->term->peer);
        v->bytes_to_device = s->term->bytes_to_device;
        v->bytes_to_terminal = s->term->bytes_to_terminal;
    }
}

static void run_sessions(rl_inspect_req *r) {
    rl_core *core = r->core;
    uint64_t now_us = rl_mono_us();
    uint64_t want = 0;
    if (r->filter) want = rl_registry_hash(&core->reg, r->filter, strnlen(r->filter, RL_ID_MAX));
    size_t n = 0, total = 0;
    for (uint32_t b = 0; b <= core->sess_mask; b++)
        for (rl_session *s = core->sess_buckets[b]; s; s = s->next_in_bucket) {
            if (r->filter && s->id_hash != want) continue;
            if (n < r->max) session_view(s, &r->sessions[n++], now_us);
            total++;
        }
    if (r->total_out) *r->total_out = total;
    r->result = (int)n;
}

static void run_end_session(rl_inspect_req *r) {
    rl_core *core = r->core;
    uint8_t sid[RL_SESSION_ID_LEN];
    if (strlen(r->filter) != 2 * RL_SESSION_ID_LEN || rl_unhex(r->filter, 2 * RL_SESSION_ID_LEN, sid, sizeof sid) != 0) {
        r->result = -1;
        return;
    }
    rl_session *s = rl_session_find(core, sid);
    if (!s) {
        r->result = -1;
        return;
    }
    rl_session_end(s); /* its terminal is closed (outcome aborted), its link too */
    r->result = 0;
}

/* Counting online devices reads every entry (as a /metrics scrape does): 56 bytes each,
 * sequentially. The pass is cut into chunks of RL_SUMMARY_CHUNK entries, each its own loop
 * callback (about 150 us), so that a million devices never hold the loop for milliseconds;
 * the counts are then consistent to within the changes made while the pass ran. Returns 1
 * while entries are left. */
#define RL_SUMMARY_CHUNK 65536u
static int run_summary(rl_inspect_req *r) {
    rl_core *core = r->core;
    uint64_t t0 = rl_mono_us();
    uint32_t now_ds = rl_core_now_ds(core);
    uint32_t end = core->reg.count;
    if (end - r->pos > RL_SUMMARY_CHUNK && r->pos < end) end = r->pos + RL_SUMMARY_CHUNK;
    for (uint32_t i = r->pos; i < end; i++) {
        const rl_dev *d = &core->reg.devs[i];
        if (!d->last_access) r->acc_never++;
        else if (rl_device_alive(core, d, now_ds)) r->acc_online++;
    }
    r->pos = end;
    r->acc_us += rl_mono_us() - t0;
    r->chunks++;
    if (r->pos < core->reg.count) return 1;
    rl_fleet_summary *o = r->summary;
    memset(o, 0, sizeof *o);
    o->devices = core->reg.count;
    o->online = r->acc_online;
    o->never_notified = r->acc_never;
    o->capacity = core->index == 0 ? core->cfg.capacity : 0; /* for all shards (core.c) */
    o->sessions = core->n_sessions;
    o->period_s = core->cfg.period_s;
    o->tracked = core->track ? core->track->count : 0;
    o->page_requests = core->inspect_n;
    o->page_loop_us_total = core->inspect_us_total;
    o->page_loop_us_max = core->inspect_us_max;
    o->summary_loop_us = r->acc_us;
    o->summary_chunks = r->chunks;
    return 0;
}

/* 1 when the request has more to do in a later loop callback. */
static int run_req(rl_inspect_req *r) {
    switch (r->kind) {
    case REQ_DEVICES: run_devices(r); break;
    case REQ_HISTORY: run_history(r); break;
    case REQ_SESSIONS: run_sessions(r); break;
    case REQ_END_SESSION: run_end_session(r); break;
    case REQ_SUMMARY: return run_summary(r);
    }
    return 0;
}

static void free_req(rl_inspect_req *r) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* The request runs holding its mutex: a caller that timed out can only give up before the
 * run starts (then nothing is written) or after it finished, never while its buffers are
 * being written. */
static void on_req(evutil_socket_t fd, short what, void *arg) {
    rl_inspect_req *r = arg;
    pthread_mutex_lock(&r->mu);
    int abandoned = r->abandoned;
    if (!abandoned && run_req(r)) {
        /* more to do: after the events that are waiting now */
        struct timeval zero = {0, 0};
        if (event_base_once(r->core->base, -1, EV_TIMEOUT, on_req, r, &zero) == 0) {
            pthread_mutex_unlock(&r->mu);
            return;
        }
        r->result = -1;
    }
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (abandoned) free_req(r);
}

/* Runs `r` on the loop thread and waits for it; the result, or -2 on timeout or stop. The
 * caller's buffers are written only while the caller still waits. */
static int submit(rl_inspect_req *r, uint32_t timeout_ms) {
    rl_core *core = r->core;
    if (!core->started) { /* no loop thread yet: nothing else touches the registry */
        while (run_req(r)) {
        }
        int res = r->result;
        free_req(r);
        return res;
    }
    struct timeval now_tv = {0, 0};
    /* rl_core_stop ran (on this thread or before this one started asking): nobody would answer. */
    if (core->stopped || event_base_once(core->base, -1, EV_TIMEOUT, on_req, r, &now_tv) != 0) {
        free_req(r);
        return -2;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) != 0) break;
    if (!r->done) { /* the loop frees it if it ever runs it (it then writes nothing) */
        r->abandoned = 1;
        pthread_mutex_unlock(&r->mu);
        return -2;
    }
    pthread_mutex_unlock(&r->mu);
    int res = r->result;
    free_req(r);
    return res;
}

static rl_inspect_req *new_req(rl_core *core, int kind) {
    rl_inspect_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->core = core;
    r->kind = kind;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return r;
}

/* ---- the public requests: each goes to the loops that hold what it asks for (node.h) ---- */

/* Each loop fills the views of the devices it owns and counts its own sessions of all. */
int rl_core_inspect_devices(rl_core *core, rl_device_view *views, size_t n, uint32_t timeout_ms) {
    if (n > RL_INSPECT_MAX) return -1;
    for (size_t i = 0; i < n; i++) views[i].sessions = 0;
    EACH_LOOP(core, loop) {
        rl_inspect_req *r = new_req(loop, REQ_DEVICES);
        if (!r) return -1;
        r->views = views;
        r->n = n;
        int rc = submit(r, timeout_ms);
        if (rc != 0) return rc;
    }
    return 0;
}

int rl_core_inspect_history(rl_core *core, const char *id, rl_device_history *out, uint32_t timeout_ms) {
    rl_inspect_req *r = new_req(rl_owner(core, id, strnlen(id, RL_ID_MAX)), REQ_HISTORY);
    if (!r) return -1;
    r->id = id;
    r->history = out;
    return submit(r, timeout_ms);
}

/* Sessions live on the loop of their terminal: every loop's, one after the other. */
int rl_core_inspect_sessions(rl_core *core, const char *device_id, rl_session_view *out, size_t max, size_t *total,
                             uint32_t timeout_ms) {
    size_t copied = 0, all = 0;
    EACH_LOOP(core, loop) {
        rl_inspect_req *r = new_req(loop, REQ_SESSIONS);
        if (!r) return -1;
        size_t loop_total = 0;
        r->filter = device_id;
        r->sessions = out + copied;
        r->max = max - copied;
        r->total_out = &loop_total;
        int rc = submit(r, timeout_ms);
        if (rc < 0) return rc;
        copied += (size_t)rc;
        all += loop_total;
    }
    if (total) *total = all;
    return (int)copied;
}

int rl_core_end_session(rl_core *core, const char *session_id, uint32_t timeout_ms) {
    EACH_LOOP(core, loop) {
        rl_inspect_req *r = new_req(loop, REQ_END_SESSION);
        if (!r) return -1;
        r->filter = session_id;
        int rc = submit(r, timeout_ms);
        if (rc != -1) return rc; /* ended (0), or no answer (-2) */
    }
    return -1;
}

static void add_summary(rl_fleet_summary *to, const rl_fleet_summary *s) {
    to->devices += s->devices;
    to->online += s->online;
    to->never_notified += s->never_notified;
    to->capacity += s->capacity;
    to->sessions += s->sessions;
    to->tracked += s->tracked;
    to->period_s = s->period_s;
    to->page_requests += s->page_requests;
    to->page_loop_us_total += s->page_loop_us_total;
    if (s->page_loop_us_max > to->page_loop_us_max) to->page_loop_us_max = s->page_loop_us_max;
    to->summary_loop_us += s->summary_loop_us;
    to->summary_chunks += s->summary_chunks;
}

int rl_core_inspect_summary(rl_core *core, rl_fleet_summary *out, uint32_t timeout_ms) {
    rl_fleet_summary sum = {0};
    EACH_LOOP(core, loop) {
        rl_fleet_summary one;
        rl_inspect_req *r = new_req(loop, REQ_SUMMARY);
        if (!r) return -1;
        r->summary = &one;
        int rc = submit(r, timeout_ms);
        if (rc != 0) return rc;
        add_summary(&sum, &one);
    }
    *out = sum;
    return 0;
}

/* ---- admin keys ---- */

#include <openssl/crypto.h>
#include <openssl/sha.h>

void rl_admin_key_hash(const char *key, size_t len, uint8_t out[32]) {
    SHA256((const unsigned char *)key, len, out);
}

int rl_const_time_equal(const uint8_t *a, const uint8_t *b, size_t len) {
    return CRYPTO_memcmp(a, b, len) == 0;
}

void rl_core_admin_refused(rl_core *core) {
    atomic_fetch_add_explicit(&core->admin_unauthorized, 1, memory_order_relaxed);
}
