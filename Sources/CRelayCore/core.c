/* core.c: rl_core lifecycle, the loop thread, device and token commands, records and stats. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <event2/thread.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include "records.h"
#include "util.h"
#include "udp.h"
#include "session.h"
#include "front.h"
#include "metrics.h"
#include "callback.h"
#include "track.h"

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static void init_threads(void) {
    /* Must precede every event_base: other threads wake the loop with event_active. */
    evthread_use_pthreads();
    /* A peer that resets mid-write must give EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
}

static void rl_init_threads(void) {
    pthread_once(&threads_once, init_threads);
}

void rl_core_config_defaults(rl_core_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->period_s = 300;
    cfg->keepalive_s = 25;
    cfg->capacity = 1000000;
    cfg->max_sessions = 65536;
    cfg->wake_timeout_ms = 5000;
    cfg->idle_link_s = 60;
    cfg->max_header_bytes = 16384;
    cfg->header_timeout_ms = 10000;
    cfg->max_conns_per_source = 1024;
    cfg->conn_rate_per_source = 200;
    cfg->max_callbacks_per_source = 64;
    cfg->max_sessions_per_device = 64;
    cfg->wakes_per_device_minute = 600;
    cfg->idle_timeout_s = 300;
    cfg->domain = "localhost";
    cfg->threads = 1;
}

static void on_cmd(evutil_socket_t fd, short what, void *arg);
static void on_stop(evutil_socket_t fd, short what, void *arg);
static void on_drain(evutil_socket_t fd, short what, void *arg);
static void on_sweep(evutil_socket_t fd, short what, void *arg);
static void on_reap(evutil_socket_t fd, short what, void *arg);

rl_core *rl_core_new(const rl_core_config *cfg, char *err, size_t err_len) {
    rl_init_threads();
    if (cfg->period_s < 1 || cfg->keepalive_s < 1 || cfg->capacity < 1 || cfg->max_sessions < 1 ||
        cfg->wake_timeout_ms < 10 || cfg->max_header_bytes < 256) {
        rl_set_err(err, err_len, "invalid core configuration (period, keepalive, capacity, sessions, timeouts)");
        return NULL;
    }
    rl_core *core = calloc(1, sizeof *core);
    if (!core) {
        rl_set_err(err, err_len, "out of memory");
        return NULL;
    }
    core->cfg = *cfg;
    if (cfg->domain) {
        size_t n = strlen(cfg->domain);
        if (n >= sizeof core->domain) n = sizeof core->domain - 1;
        for (size_t i = 0; i < n; i++) {
            char c = cfg->domain[i];
            core->domain[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        core->domain_len = n;
    }
    core->cfg.domain = core->domain;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &core->t0);
    core->t0.tv_sec -= 1; /* so that "now" is never 0 */
    pthread_mutex_init(&core->cmd_mu, NULL);
    pthread_mutex_init(&core->rec_mu, NULL);
    rl_random_bytes((uint8_t *)&core->epoch, sizeof core->epoch);
    uint32_t buckets = 16;
    while (buckets < cfg->max_sessions && buckets < (1u << 24)) buckets <<= 1;
    core->sess_mask = buckets - 1;
    core->sess_buckets = calloc(buckets, sizeof(rl_session *));
    core->recs = calloc(RL_RECORD_RING, sizeof(rl_session_record));
    core->events = calloc(RL_EVENT_RING, sizeof(rl_core_event));
    core->base = event_base_new();
    if (!core->sess_buckets || !core->recs || !core->events || !core->base || rl_marks_init(&core->marks) != 0 || rl_mac_init(&core->mac) != 0 ||
        rl_registry_init(&core->reg, cfg->capacity) != 0 || rl_tally_init(&core->sources, 16, 1) != 0 ||
        rl_tally_init(&core->callback_sources, 12, 1) != 0 ||
        rl_tally_init(&core->devices, 16, 60) != 0) {
        rl_set_err(err, err_len, "cannot allocate the core (registry of %u devices)", cfg->capacity);
        rl_core_free(core);
        return NULL;
    }
    core->cmd_ev = event_new(core->base, -1, 0, on_cmd, core);
    core->stop_ev = event_new(core->base, -1, 0, on_stop, core);
    core->drain_ev = event_new(core->base, -1, 0, on_drain, core);
    core->sweep_ev = event_new(core->base, -1, EV_PERSIST, on_sweep, core);
    core->resume_ev = evtimer_new(core->base, rl_listen_resume, core);
    core->reap_ev = event_new(core->base, -1, 0, on_reap, core);
    core->anchor_moved = rl_session_anchor_moved;
    if (!core->cmd_ev || !core->stop_ev || !core->drain_ev || !core->sweep_ev || !core->resume_ev || !core->reap_ev) {
        rl_set_err(err, err_len, "cannot create the core's events");
        rl_core_free(core);
        return NULL;
    }
    /* Out of descriptors, libdispatch (Swift's runtime) can trap rather than fail, SQLite cannot
     * open the store, a TLS reload cannot read its files: the relay keeps 1/64 of its limit
     * (16 to 256) for them and refuses connections that would eat into it. */
    struct rlimit nofile;
    core->fd_ceiling = INT_MAX;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < INT_MAX) {
        int limit = (int)nofile.rlim_cur, reserve = limit / 64;
        reserve = reserve < 16 ? 16 : reserve > 256 ? 256 : reserve;
        core->fd_ceiling = limit - reserve;
    }
    struct timeval second = {1, 0};
    if (core->sweep_ev) event_add(core->sweep_ev, &second);
    atomic_store(&core->store_ok, 1);
    return core;
}

/* Who takes each kind's connections. */
static evconnlistener_cb accept_for(int kind) {
    switch (kind) {
    case RL_LISTEN_HTTP: return rl_front_accept;
    case RL_LISTEN_HTTPS: return rl_front_accept_tls;
    case RL_LISTEN_TCP: return rl_callback_accept;
    case RL_LISTEN_METRICS: return rl_metrics_accept;
    default: return NULL;
    }
}

int rl_core_listen(rl_core *core, int kind, const char *addr, char *err, size_t err_len) {
    if (core->started) {
        rl_set_err(err, err_len, "listeners must be added before start");
        return -1;
    }
    if (kind != RL_LISTEN_UDP) return rl_listen_add(core, kind, addr, accept_for(kind), err, err_len);
    if (core->n_udp >= RL_MAX_LISTENERS) {
        rl_set_err(err, err_len, "at most %d listeners of a kind", RL_MAX_LISTENERS);
        return -1;
    }
    if (rl_udp_open(core, addr, err, err_len) != 0) return -1;
    return core->n_udp - 1;
}

int rl_core_bound_port(const rl_core *core, int kind, int index) {
    return kind == RL_LISTEN_UDP ? rl_udp_port(core, index) : rl_listen_port(core, kind, index);
}

/* ---- device changes and token revocations ---- */

static void apply_cmd(rl_core *core, const rl_cmd *c) {
    if (c->kind == RL_CMD_REVOKE) {
        /* Fails only when the table cannot grow (out of memory), which nothing here could remedy. */
        (void)rl_revoked_add(&core->revoked, c->tid, c->expires, (uint64_t)time(NULL));
        return;
    }
    uint64_t h = rl_registry_hash(&core->reg, c->id, strlen(c->id));
    if (c->kind == RL_CMD_REMOVE) {
        if (rl_registry_remove(&core->reg, h) == 0) {
            rl_session_end_device(core, h);
            rl_track_forget(core, h);
        }
    } else {
        rl_dev *old = rl_registry_find(&core->reg, h);
        int rekey = old && memcmp(old->key, c->key, RL_KEY_LEN) != 0;
        if (rl_registry_put(&core->reg, h, c->key) != 0) CTR_INC(core->ctr.registry_full);
        else if (rekey) {
            rl_session_end_device(core, h);
            rl_track_forget(core, h);
        }
    }
    /* Published for rl_core_stats: reading reg.count from another thread was a data race
     * (found by `make test-tsan`, Tests/fuzz/tsan_core.c). */
    atomic_store_explicit(&core->ctr.devices, core->reg.count, memory_order_relaxed);
}

static int queue_cmd(rl_core *core, const rl_cmd *c) {
    if (!core->started) { /* no loop thread yet: apply directly */
        apply_cmd(core, c);
        return 0;
    }
    pthread_mutex_lock(&core->cmd_mu);
    if (core->n_cmds == core->cap_cmds) {
        size_t cap = core->cap_cmds ? core->cap_cmds * 2 : 64;
        rl_cmd *n = realloc(core->cmds, cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&core->cmd_mu);
            return -1;
        }
        core->cmds = n;
        core->cap_cmds = cap;
    }
    core->cmds[core->n_cmds++] = *c;
    pthread_mutex_unlock(&core->cmd_mu);
    event_active(core->cmd_ev, 0, 0);
    return 0;
}

/* Timers read their settings when armed, so new values apply to what starts next. */
static void apply_timers(rl_core *core, const rl_core_config *n) {
    core->cfg.period_s = n->period_s;
    core->cfg.keepalive_s = n->keepalive_s;
    core->cfg.wake_timeout_ms = n->wake_timeout_ms;
    core->cfg.idle_link_s = n->idle_link_s;
    core->cfg.max_header_bytes = n->max_header_bytes;
    core->cfg.header_timeout_ms = n->header_timeout_ms;
    core->cfg.max_conns_per_source = n->max_conns_per_source;
    core->cfg.conn_rate_per_source = n->conn_rate_per_source;
    core->cfg.max_callbacks_per_source = n->max_callbacks_per_source;
    core->cfg.max_sessions_per_device = n->max_sessions_per_device;
    core->cfg.wakes_per_device_minute = n->wakes_per_device_minute;
    core->cfg.idle_timeout_s = n->idle_timeout_s;
}

static void on_reap(evutil_socket_t fd, short what, void *arg) {
    rl_reap_now(arg);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    uint32_t now = rl_core_now_s(core);
    rl_tally_sweep(&core->sources, now);
    rl_tally_sweep(&core->devices, now);
    rl_tally_sweep(&core->callback_sources, now);
    rl_revoked_sweep(&core->revoked, (uint64_t)time(NULL));
}

static void on_cmd(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    pthread_mutex_lock(&core->cmd_mu);
    rl_cmd *cmds = core->cmds;
    size_t n = core->n_cmds;
    core->cmds = NULL;
    core->n_cmds = core->cap_cmds = 0;
    rl_core_config timers = core->pending_cfg;
    int has_timers = core->has_pending_cfg;
    core->has_pending_cfg = 0;
    rl_tls *tls = core->pending_tls;
    core->pending_tls = NULL;
    pthread_mutex_unlock(&core->cmd_mu);
    if (tls) {
        /* Connections hold their own references to the contexts they were made with. */
        rl_tls_free(core->tls);
        core->tls = tls;
    }
    for (size_t i = 0; i < n; i++) apply_cmd(core, &cmds[i]);
    free(cmds);
    if (has_timers) apply_timers(core, &timers);
}

void rl_core_reconfigure(rl_core *core, const rl_core_config *cfg) {
    if (!core->started) {
        apply_timers(core, cfg);
        return;
    }
    pthread_mutex_lock(&core->cmd_mu);
    core->pending_cfg = *cfg;
    core->has_pending_cfg = 1;
    pthread_mutex_unlock(&core->cmd_mu);
    event_active(core->cmd_ev, 0, 0);
}

int rl_core_device_put(rl_core *core, const char *id, const uint8_t key[RL_KEY_LEN]) {
    rl_cmd c = {0};
    size_t n = strlen(id);
    if (!rl_device_id_valid(id, n)) return -1;
    c.kind = RL_CMD_PUT;
    memcpy(c.id, id, n);
    memcpy(c.key, key, RL_KEY_LEN);
    if (!core->started && core->reg.count == core->reg.capacity && !rl_registry_find(&core->reg, rl_registry_hash(&core->reg, id, n))) {
        CTR_INC(core->ctr.registry_full);
        return -1;
    }
    return queue_cmd(core, &c);
}

int rl_core_device_remove(rl_core *core, const char *id) {
    rl_cmd c = {0};
    size_t n = strlen(id);
    if (!rl_device_id_valid(id, n)) return -1;
    memcpy(c.id, id, n);
    c.kind = RL_CMD_REMOVE;
    return queue_cmd(core, &c);
}

int rl_core_token_revoke(rl_core *core, const uint8_t tid[8], uint64_t expires_unix) {
    rl_cmd c = {0};
    c.kind = RL_CMD_REVOKE;
    memcpy(c.tid, tid, sizeof c.tid);
    c.expires = expires_unix;
    return queue_cmd(core, &c);
}

/* ---- loop thread ---- */

static void *loop_main(void *arg) {
    rl_core *core = arg;
    event_base_loop(core->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int rl_core_start(rl_core *core, char *err, size_t err_len) {
    if (core->started) return 0;
    if (rl_listen_count(core, RL_LISTEN_HTTP) + rl_listen_count(core, RL_LISTEN_HTTPS) == 0 || core->n_udp == 0 ||
        rl_listen_count(core, RL_LISTEN_TCP) == 0) {
        rl_set_err(err, err_len, "the relay needs at least one HTTP or HTTPS, one UDP and one TCP listener");
        return -1;
    }
    if (rl_listen_count(core, RL_LISTEN_HTTPS) > 0 && !core->tls) {
        rl_set_err(err, err_len, "HTTPS listeners need a certificate and key");
        return -1;
    }
    core->started = 1;
    if (pthread_create(&core->thread, NULL, loop_main, core) != 0) {
        core->started = 0;
        rl_set_err(err, err_len, "cannot start the loop thread: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void rl_core_set_ready(rl_core *core, int ready) {
    atomic_store(&core->ready, ready);
}

int rl_core_set_tls(rl_core *core, const char *const *certs, const char *const *keys, size_t n,
                    const char *device_ca, char *err, size_t err_len) {
    rl_tls *tls = rl_tls_new(certs, keys, n, device_ca, err, err_len);
    if (!tls) return -1;
    if (!core->started) {
        rl_tls_free(core->tls);
        core->tls = tls;
        return 0;
    }
    if (!core->tls) {
        rl_tls_free(tls);
        rl_set_err(err, err_len, "TLS must be configured before start to be reloaded");
        return -1;
    }
    pthread_mutex_lock(&core->cmd_mu);
    rl_tls_free(core->pending_tls); /* two reloads in a row: the later wins */
    core->pending_tls = tls;
    pthread_mutex_unlock(&core->cmd_mu);
    event_active(core->cmd_ev, 0, 0);
    return 0;
}

void rl_core_set_store_ok(rl_core *core, int ok) {
    atomic_store(&core->store_ok, ok);
}

static void on_drain(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    /* Closed, not just disabled: a new terminal is refused at once (and a load balancer
     * moves on) instead of waiting in the backlog of a relay that will never accept it. */
    rl_listen_close_terminal(core);
    rl_term_close_idle(core);
    rl_session_end_idle(core);
}

void rl_core_drain(rl_core *core) {
    if (!core || !core->started || core->stopped || atomic_exchange(&core->draining, 1)) return;
    event_active(core->drain_ev, 0, 0);
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    rl_listen_stop_all(core);
    rl_term_close_all(core);
    rl_session_end_all(core);
    rl_metrics_close_all(core);
    rl_reap_now(core);
    event_base_loopbreak(core->base);
}

void rl_core_stop(rl_core *core) {
    if (!core || !core->started || core->stopped) return;
    core->stopped = 1;
    atomic_store(&core->ready, 0);
    event_active(core->stop_ev, 0, 0);
    pthread_join(core->thread, NULL);
}

void rl_core_free(rl_core *core) {
    if (!core) return;
    rl_core_stop(core);
    if (!core->started) {
        rl_term_close_all(core);
        rl_session_end_all(core);
        rl_metrics_close_all(core);
    }
    rl_reap_now(core);
    rl_listen_free_all(core);
    rl_tls_free(core->tls);
    rl_tls_free(core->pending_tls);
    rl_udp_close_all(core);
    if (core->cmd_ev) event_free(core->cmd_ev);
    if (core->stop_ev) event_free(core->stop_ev);
    if (core->drain_ev) event_free(core->drain_ev);
    if (core->sweep_ev) event_free(core->sweep_ev);
    if (core->resume_ev) event_free(core->resume_ev);
    if (core->reap_ev) event_free(core->reap_ev);
    if (core->base) event_base_free(core->base);
    rl_registry_free(&core->reg);
    rl_tally_free(&core->sources);
    rl_marks_free(&core->marks);
    free(core->events);
    rl_tally_free(&core->callback_sources);
    rl_tally_free(&core->devices);
    rl_revoked_free(&core->revoked);
    rl_track_free(core);
    rl_mac_free(&core->mac);
    free(core->sess_buckets);
    free(core->recs);
    free(core->cmds);
    pthread_mutex_destroy(&core->cmd_mu);
    pthread_mutex_destroy(&core->rec_mu);
    free(core);
}

