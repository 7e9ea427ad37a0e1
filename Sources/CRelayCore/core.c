/* core.c: rl_core lifecycle, the loop thread, device and token commands, records and stats. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <event2/thread.h>
#include <netinet/tcp.h>
#include "internal.h"

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static void init_threads(void) {
    /* Must precede every event_base: other threads wake the loop with event_active. */
    evthread_use_pthreads();
    /* A peer that resets mid-write must give EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
}

void rl_init_threads(void) {
    pthread_once(&threads_once, init_threads);
}

uint64_t rl_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint32_t rl_core_now_s(const rl_core *core) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)(ts.tv_sec - core->t0.tv_sec);
}

uint32_t rl_core_now_ds(const rl_core *core) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* a few ms coarse: plenty for tenths */
    int64_t ns = (int64_t)(ts.tv_sec - core->t0.tv_sec) * 1000000000 + (ts.tv_nsec - core->t0.tv_nsec);
    return (uint32_t)(ns / 100000000);
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
}

static void on_cmd(evutil_socket_t fd, short what, void *arg);
static void on_stop(evutil_socket_t fd, short what, void *arg);
static void on_drain(evutil_socket_t fd, short what, void *arg);
static void on_sweep(evutil_socket_t fd, short what, void *arg);
static void on_resume(evutil_socket_t fd, short what, void *arg);
static void set_accepting(rl_core *core, int on);

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
    core->resume_ev = evtimer_new(core->base, on_resume, core);
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

int rl_core_listen(rl_core *core, int kind, const char *addr, char *err, size_t err_len) {
    if (core->started) {
        rl_set_err(err, err_len, "listeners must be added before start");
        return -1;
    }
    rl_listener *arr;
    int *count;
    evconnlistener_cb cb;
    switch (kind) {
    case RL_LISTEN_UDP:
        if (core->n_udp >= RL_MAX_LISTENERS) break;
        if (rl_udp_open(core, addr, err, err_len) != 0) return -1;
        return core->n_udp - 1;
    case RL_LISTEN_HTTP: arr = core->http; count = &core->n_http; cb = rl_front_accept; goto tcp;
    case RL_LISTEN_TCP: arr = core->tcp; count = &core->n_tcp; cb = rl_callback_accept; goto tcp;
    case RL_LISTEN_METRICS: arr = core->metrics; count = &core->n_metrics; cb = rl_metrics_accept; goto tcp;
    case RL_LISTEN_HTTPS: arr = core->https; count = &core->n_https; cb = rl_front_accept_tls; goto tcp;
    default:
        rl_set_err(err, err_len, "unknown listener kind %d", kind);
        return -1;
    }
    rl_set_err(err, err_len, "at most %d listeners of a kind", RL_MAX_LISTENERS);
    return -1;
tcp:
    if (*count >= RL_MAX_LISTENERS) {
        rl_set_err(err, err_len, "at most %d listeners of a kind", RL_MAX_LISTENERS);
        return -1;
    }
    if (rl_listen_tcp(core, &arr[*count], addr, cb, err, err_len) != 0) return -1;
    if (kind == RL_LISTEN_TCP) {
        /* A device speaks first (its hello): the kernel hands over a callback with the hello
         * already in, one loop wake-up instead of two. Past the wake timeout it hands it over
         * anyway, and the hello timer refuses it. */
        int secs = (int)(core->cfg.wake_timeout_ms / 1000) + 1;
        setsockopt(evconnlistener_get_fd(arr[*count].lev), IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
    }
    return (*count)++;
}

int rl_core_bound_port(const rl_core *core, int kind, int index) {
    switch (kind) {
    case RL_LISTEN_UDP: {
        if (index < 0 || index >= core->n_udp) return -1;
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(core->udp[index].fd, (struct sockaddr *)&ss, &len) != 0) return -1;
        uint8_t a[16];
        uint16_t port;
        rl_addr_to_v6((struct sockaddr *)&ss, a, &port);
        return port;
    }
    case RL_LISTEN_HTTP: return index >= 0 && index < core->n_http ? core->http[index].port : -1;
    case RL_LISTEN_TCP: return index >= 0 && index < core->n_tcp ? core->tcp[index].port : -1;
    case RL_LISTEN_METRICS: return index >= 0 && index < core->n_metrics ? core->metrics[index].port : -1;
    case RL_LISTEN_HTTPS: return index >= 0 && index < core->n_https ? core->https[index].port : -1;
    default: return -1;
    }
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
            rl_inspect_forget(core, h);
        }
    } else {
        rl_dev *old = rl_registry_find(&core->reg, h);
        int rekey = old && memcmp(old->key, c->key, RL_KEY_LEN) != 0;
        if (rl_registry_put(&core->reg, h, c->key) != 0) CTR_INC(core->ctr.registry_full);
        else if (rekey) {
            rl_session_end_device(core, h);
            rl_inspect_forget(core, h);
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

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    uint32_t now = rl_core_now_s(core);
    rl_tally_sweep(&core->sources, now);
    rl_tally_sweep(&core->devices, now);
    rl_tally_sweep(&core->callback_sources, now);
    rl_revoked_sweep(&core->revoked, (uint64_t)time(NULL));
}

/* Every TCP listener still open (a drain frees the terminal ones) on or off. */
static void set_accepting(rl_core *core, int on) {
    rl_listener *groups[] = {core->http, core->https, core->tcp, core->metrics};
    int counts[] = {core->n_http, core->n_https, core->n_tcp, core->n_metrics};
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < counts[g]; i++) {
            struct evconnlistener *lev = groups[g][i].lev;
            if (lev) on ? evconnlistener_enable(lev) : evconnlistener_disable(lev);
        }
}

/* Descriptors may be free again: accept anew (and pause again at once if not). */
static void on_resume(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    core->accept_paused = 0;
    set_accepting(core, 1);
}

/* Descriptors are process-wide: when one accept runs out of them, every listener would, so
 * all of them pause together. */
static void pause_accepting(rl_core *core) {
    if (core->accept_paused) return;
    core->accept_paused = 1;
    set_accepting(core, 0);
    CTR_INC(core->ctr.accept_paused);
    struct timeval wait = {0, 250000};
    evtimer_add(core->resume_ev, &wait);
}

void rl_listener_error(struct evconnlistener *lev, void *arg) {
    int err = EVUTIL_SOCKET_ERROR();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) pause_accepting(arg);
}

int rl_core_fd_refused(rl_core *core, int fd) {
    if (fd < core->fd_ceiling) return 0;
    close(fd);
    pause_accepting(core);
    return 1;
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
    if (core->n_http + core->n_https == 0 || core->n_udp == 0 || core->n_tcp == 0) {
        rl_set_err(err, err_len, "the relay needs at least one HTTP or HTTPS, one UDP and one TCP listener");
        return -1;
    }
    if (core->n_https > 0 && !core->tls) {
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
    for (int i = 0; i < core->n_http; i++) {
        evconnlistener_free(core->http[i].lev);
        core->http[i].lev = NULL;
    }
    for (int i = 0; i < core->n_https; i++) {
        evconnlistener_free(core->https[i].lev);
        core->https[i].lev = NULL;
    }
    rl_term_close_idle(core);
    rl_session_free_idle(core);
}

void rl_core_drain(rl_core *core) {
    if (!core || !core->started || core->stopped || atomic_exchange(&core->draining, 1)) return;
    event_active(core->drain_ev, 0, 0);
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    set_accepting(core, 0);
    rl_term_close_all(core);
    rl_session_free_all(core);
    rl_metrics_close_all(core);
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
        rl_session_free_all(core);
        rl_metrics_close_all(core);
    }
    for (int i = 0; i < core->n_http; i++)
        if (core->http[i].lev) evconnlistener_free(core->http[i].lev);
    for (int i = 0; i < core->n_https; i++)
        if (core->https[i].lev) evconnlistener_free(core->https[i].lev);
    rl_tls_free(core->tls);
    rl_tls_free(core->pending_tls);
    for (int i = 0; i < core->n_tcp; i++) evconnlistener_free(core->tcp[i].lev);
    for (int i = 0; i < core->n_metrics; i++) evconnlistener_free(core->metrics[i].lev);
    rl_udp_close_all(core);
    if (core->cmd_ev) event_free(core->cmd_ev);
    if (core->stop_ev) event_free(core->stop_ev);
    if (core->drain_ev) event_free(core->drain_ev);
    if (core->sweep_ev) event_free(core->sweep_ev);
    if (core->resume_ev) event_free(core->resume_ev);
    if (core->base) event_base_free(core->base);
    rl_registry_free(&core->reg);
    rl_tally_free(&core->sources);
    rl_marks_free(&core->marks);
    free(core->events);
    rl_tally_free(&core->callback_sources);
    rl_tally_free(&core->devices);
    rl_revoked_free(&core->revoked);
    rl_inspect_free(core);
    rl_mac_free(&core->mac);
    free(core->sess_buckets);
    free(core->recs);
    free(core->cmds);
    pthread_mutex_destroy(&core->cmd_mu);
    pthread_mutex_destroy(&core->rec_mu);
    free(core);
}

/* ---- records and stats ---- */

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

size_t rl_core_drain_events(rl_core *core, rl_core_event *out, size_t max) {
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

size_t rl_core_drain_records(rl_core *core, rl_session_record *out, size_t max) {
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
