/*
 * core.c: the lifecycle hub. A relay is one or more loops (rl_core), each a libevent loop
 * thread with its own sockets, sessions, tallies, counters and registry shard; the first, the
 * lead, is the handle the control layer holds, and every public function fans out from it to
 * the loops it concerns (node.h: which loop owns a device, what loops tell each other).
 */
#define _GNU_SOURCE /* pthread_setname_np */
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
#include "node.h"
#include "liveness.h"
#include "netaddr.h"
#include "mesh.h"

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

static void anchor_moved(rl_core *core, rl_dev *dev, const char *id, size_t id_len);

/* One loop: everything but the sharing, which rl_core_new sets up. */
static rl_core *loop_new(const rl_core_config *cfg, rl_node *node, uint32_t index, uint32_t capacity, char *err,
                         size_t err_len) {
    rl_core *core = calloc(1, sizeof *core);
    if (!core) {
        rl_set_err(err, err_len, "out of memory");
        return NULL;
    }
    core->node = node;
    core->index = index;
    node->loops[index] = core;
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
        rl_registry_init(&core->reg, capacity) != 0 || rl_tally_init(&core->sources, 16, 1) != 0 ||
        rl_tally_init(&core->callback_sources, 12, 1) != 0 ||
        rl_tally_init(&core->devices, index == 0 ? 16 : 4, 60) != 0) {
        rl_set_err(err, err_len, "cannot allocate the core (registry of %u devices)", capacity);
        return core;
    }
    core->cmd_ev = event_new(core->base, -1, 0, on_cmd, core);
    core->stop_ev = event_new(core->base, -1, 0, on_stop, core);
    core->drain_ev = event_new(core->base, -1, 0, on_drain, core);
    core->sweep_ev = event_new(core->base, -1, EV_PERSIST, on_sweep, core);
    core->resume_ev = evtimer_new(core->base, rl_listen_resume, core);
    core->reap_ev = event_new(core->base, -1, 0, on_reap, core);
    core->anchor_moved = anchor_moved;
    if (!core->cmd_ev || !core->stop_ev || !core->drain_ev || !core->sweep_ev || !core->resume_ev || !core->reap_ev) {
        rl_set_err(err, err_len, "cannot create the core's events");
        return core;
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
    event_add(core->sweep_ev, &second);
    atomic_store(&core->store_ok, 1);
    atomic_store(&core->store_up, 1);
    err[0] = 0;
    return core;
}

/* A shard's share of the capacity: the mean plus 3 % and 64 (at a million devices over 16
 * loops a shard's count has a standard deviation of 0.4 % of the mean). */
static uint32_t shard_capacity(uint32_t capacity, uint32_t n) {
    if (n == 1) return capacity;
    uint64_t c = (uint64_t)capacity / n + capacity / (32 * n) + 64;
    return c > capacity ? capacity : (uint32_t)c;
}

rl_core *rl_core_new(const rl_core_config *cfg, char *err, size_t err_len) {
    rl_init_threads();
    if (cfg->period_s < 1 || cfg->keepalive_s < 1 || cfg->capacity < 1 || cfg->max_sessions < 1 ||
        cfg->wake_timeout_ms < 10 || cfg->max_header_bytes < 256) {
        rl_set_err(err, err_len, "invalid core configuration (period, keepalive, capacity, sessions, timeouts)");
        return NULL;
    }
    uint32_t n = cfg->threads ? cfg->threads : 1;
    if (n > RL_MAX_THREADS) {
        rl_set_err(err, err_len, "at most %d loop threads (asked %u)", RL_MAX_THREADS, n);
        return NULL;
    }
    rl_node *node = calloc(1, sizeof *node);
    if (!node) {
        rl_set_err(err, err_len, "out of memory");
        return NULL;
    }
    node->n = n;
    pthread_mutex_init(&node->devices_mu, NULL);
    rl_random_bytes((uint8_t *)&node->shard_seed, sizeof node->shard_seed);
    char e[256] = "";
    for (uint32_t i = 0; i < n; i++) {
        rl_core *loop = loop_new(cfg, node, i, shard_capacity(cfg->capacity, n), e, sizeof e);
        if (!loop || e[0]) {
            rl_set_err(err, err_len, "%s", e);
            if (node->loops[0]) rl_core_free(node->loops[0]);
            else free(node);
            return NULL;
        }
        rl_core *lead = node->loops[0];
        /* One clock, one epoch and one registry hash for every loop: a loop reads another's
         * entries (times, keyed hashes), and a device hears the same epoch from each. */
        loop->t0 = lead->t0;
        loop->epoch = lead->epoch;
        loop->reg.seed = lead->reg.seed;
    }
    return node->loops[0];
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

/* One loop's listener of `kind` on `addr`; its index within the kind, or -1. */
static int listen_one(rl_core *core, int kind, const char *addr, int opts, char *err, size_t err_len) {
    if (kind != RL_LISTEN_UDP) return rl_listen_add(core, kind, addr, opts, accept_for(kind), err, err_len);
    if (core->n_udp >= RL_MAX_LISTENERS) {
        rl_set_err(err, err_len, "at most %d listeners of a kind", RL_MAX_LISTENERS);
        return -1;
    }
    if (rl_udp_open(core, addr, opts, err, err_len) != 0) return -1;
    return core->n_udp - 1;
}

/* "HOST:PORT" or "[V6]:PORT" with another port. */
static void with_port(const char *addr, int port, char *out, size_t n) {
    const char *colon = strrchr(addr, ':');
    int host = colon ? (int)(colon - addr) : (int)strlen(addr);
    snprintf(out, n, "%.*s:%d", host, addr, port);
}

static int listener_fd(const rl_core *core, int kind, int index) {
    return kind == RL_LISTEN_UDP ? core->udp[index].fd : evconnlistener_get_fd(core->listeners[kind][index].lev);
}

/* The device callback listeners of every loop on consecutive ports from `addr`'s (a range
 * to open in a firewall). Port 0: the kernel picks the first; a range that collides with a
 * port in use is given back and another tried. */
static int listen_callback_range(rl_node *node, const char *addr, uint16_t asked, int opts, char *err,
                                 size_t err_len) {
    for (int attempt = 0; attempt < (asked ? 1 : 16); attempt++) {
        int index = listen_one(node->loops[0], RL_LISTEN_TCP, addr, opts, err, err_len);
        if (index < 0) return -1;
        uint32_t first = (uint32_t)rl_core_bound_port(node->loops[0], RL_LISTEN_TCP, index), i = 1;
        if (first + node->n - 1 > 65535) {
            rl_set_err(err, err_len, "callback ports %u..%u (one per loop thread) do not fit", first, first + node->n - 1);
        } else {
            for (; i < node->n; i++) {
                char a[320];
                with_port(addr, (int)(first + i), a, sizeof a);
                if (listen_one(node->loops[i], RL_LISTEN_TCP, a, opts, err, err_len) < 0) break;
            }
            if (i == node->n) return index;
        }
        while (i-- > 0) rl_listen_drop_last(node->loops[i], RL_LISTEN_TCP);
    }
    return -1;
}

/* SO_REUSEPORT lets any socket of the same user join a group already bound to the port: a
 * second relay left running would silently share the first one's traffic. Binding the
 * address once without it first makes that "address in use", as it is for one loop. */
static int check_port_free(const struct sockaddr_storage *ss, socklen_t len, int kind, const char *addr, char *err,
                           size_t err_len) {
    int udp = kind == RL_LISTEN_UDP;
    int fd = socket(ss->ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0; /* the real bind reports it */
    int one = 1, rc = 0;
    if (!udp) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 && errno == EADDRINUSE) {
        rl_set_err(err, err_len, "cannot %s %s: %s", udp ? "bind UDP" : "listen on", addr, strerror(EADDRINUSE));
        rc = -1;
    }
    close(fd);
    return rc;
}

/* With several loops every loop gets its own listener of each address: the UDP and terminal
 * ones in one SO_REUSEPORT group per address, steered by shard.h's programs; the device
 * callback ones on consecutive ports, since a connection request names its loop's port.
 * /metrics is served by the lead alone. */
int rl_core_listen(rl_core *core, int kind, const char *addr, char *err, size_t err_len) {
    return rl_core_listen_opts(core, kind, addr, 0, err, err_len);
}

int rl_core_listen_opts(rl_core *core, int kind, const char *addr, unsigned opts, char *err, size_t err_len) {
    if (core->started) {
        rl_set_err(err, err_len, "listeners must be added before start");
        return -1;
    }
    if (opts & ~(unsigned)RL_LISTEN_FREEBIND) {
        rl_set_err(err, err_len, "unknown listener options 0x%x", opts);
        return -1;
    }
    rl_node *node = core->node;
    int o = (int)opts;
    if (node->n == 1 || kind == RL_LISTEN_METRICS) return listen_one(core, kind, addr, o, err, err_len);
    struct sockaddr_storage ss;
    socklen_t len;
    if (rl_parse_addr(addr, &ss, &len, err, err_len) != 0) return -1;
    uint8_t a6[16];
    uint16_t asked;
    rl_addr_to_v6((struct sockaddr *)&ss, a6, &asked);
    if (kind == RL_LISTEN_TCP) return listen_callback_range(node, addr, asked, o, err, err_len);
    if (asked && check_port_free(&ss, len, kind, addr, err, err_len) != 0) return -1;
    int index = -1, port = 0;
    for (uint32_t i = 0; i < node->n; i++) {
        char a[320];
        if (i == 0) snprintf(a, sizeof a, "%s", addr);
        else with_port(addr, port, a, sizeof a);
        int k = listen_one(node->loops[i], kind, a, o | RL_SOCK_REUSEPORT, err, err_len);
        if (k < 0) return -1;
        if (i == 0) {
            index = k;
            port = rl_core_bound_port(core, kind, k);
        }
    }
    int fd = listener_fd(core, kind, index);
    int rc = kind == RL_LISTEN_UDP ? rl_shard_attach_udp(fd, node->shard_seed, node->n)
                                   : rl_shard_attach_terminal(fd, ss.ss_family, node->n);
    if (rc != 0) {
        rl_set_err(err, err_len, "cannot steer %s across %u loop threads (SO_ATTACH_REUSEPORT_CBPF): %s", addr, node->n,
                   strerror(errno));
        return -1;
    }
    return index;
}

int rl_core_bound_port(const rl_core *core, int kind, int index) {
    return kind == RL_LISTEN_UDP ? rl_udp_port(core, index) : rl_listen_port(core, kind, index);
}

/* ---- what loops tell each other (node.h) ---- */

static int queue_cmd(rl_core *core, const rl_cmd *c);

rl_core *rl_owner(const rl_core *core, const char *id, size_t len) {
    const rl_node *node = core->node;
    return node->n == 1 ? node->loops[0] : node->loops[rl_shard_of(node->shard_seed, id, len, node->n)];
}

const rl_dev *rl_device_lookup(const rl_core *core, const char *id, size_t len, uint64_t h, rl_dev *copy) {
    const rl_core *owner = rl_owner(core, id, len);
    if (owner == core) return rl_registry_find(&core->reg, h);
    return rl_registry_read(&owner->reg, h, copy) ? copy : NULL;
}

static void tell(rl_core *to, enum rl_cmd_kind kind, const char *id, uint64_t h, uint32_t arg, uint64_t arg64) {
    rl_cmd c = {.kind = kind, .id_hash = h, .arg = arg, .arg64 = arg64};
    snprintf(c.id, sizeof c.id, "%s", id);
    /* Fails only out of memory: the owner then misses a hint (a wake re-sends on its timer). */
    (void)queue_cmd(to, &c);
}

static void set_waking(rl_core *owner, uint64_t h) {
    rl_dev *dev = rl_registry_find(&owner->reg, h);
    if (dev) rl_dev_set_flags(dev, rl_dev_flags(dev) | RL_DEV_WAKING);
}

void rl_node_wake_started(rl_core *core, const char *id, uint64_t h) {
    rl_core *owner = rl_owner(core, id, strlen(id));
    if (owner == core) set_waking(core, h);
    else tell(owner, RL_CMD_WAKING, id, h, 0, 0);
}

static void set_unanswered(rl_core *owner, const char *id, uint64_t h, uint32_t waited_ms) {
    rl_dev *dev = rl_registry_find(&owner->reg, h);
    if (!dev || (rl_dev_flags(dev) & RL_DEV_UNANSWERED)) return;
    rl_device_went_offline(owner, dev, RL_DEV_UNANSWERED);
    rl_core_push_event(owner, RL_EVENT_WAKE_UNANSWERED, id, strlen(id),
                       "no callback within %u ms: offline until it notifies again", waited_ms);
}

void rl_node_wake_unanswered(rl_core *core, const char *id, uint64_t h) {
    rl_core *owner = rl_owner(core, id, strlen(id));
    if (owner == core) set_unanswered(core, id, h, core->cfg.wake_timeout_ms);
    else tell(owner, RL_CMD_UNANSWERED, id, h, core->cfg.wake_timeout_ms, 0);
}

void rl_node_track_wake(rl_core *core, const char *id, uint64_t h, uint32_t outcome, uint64_t latency_us) {
    rl_core *owner = rl_owner(core, id, strlen(id));
    if (owner == core) rl_track_wake(core, h, outcome, latency_us);
    else tell(owner, RL_CMD_TRACK_WAKE, id, h, outcome, latency_us);
}

rl_tally *rl_node_devices_lock(rl_core *core) {
    if (core->node->n > 1) pthread_mutex_lock(&core->node->devices_mu);
    return &core->node->loops[0]->devices;
}

void rl_node_devices_unlock(rl_core *core) {
    if (core->node->n > 1) pthread_mutex_unlock(&core->node->devices_mu);
}

/* A notify moved the anchor of a device being woken (udp.c, on its owner): every loop with a
 * wake of it re-sends now, and says so again (the flag is cleared first, so that it stays set
 * only while some loop still wakes the device). */
static void anchor_moved(rl_core *core, rl_dev *dev, const char *id, size_t id_len) {
    char name[RL_ID_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)id_len, id);
    rl_dev_set_flags(dev, rl_dev_flags(dev) & (uint8_t)~RL_DEV_WAKING);
    for (uint32_t i = 0; i < core->node->n; i++) {
        rl_core *loop = core->node->loops[i];
        if (loop != core) tell(loop, RL_CMD_ANCHOR_MOVED, name, dev->id_hash, 0, 0);
        else if (rl_session_anchor_moved(core, dev->id_hash)) set_waking(core, dev->id_hash);
    }
}

/* A device removed or re-keyed: its sessions end on every loop. */
static void end_device_everywhere(rl_core *owner, const char *id, uint64_t h) {
    rl_track_forget(owner, h);
    for (uint32_t i = 0; i < owner->node->n; i++) {
        rl_core *loop = owner->node->loops[i];
        if (loop == owner) rl_session_end_device(owner, h);
        else tell(loop, RL_CMD_END_DEVICE, id, h, 0, 0);
    }
}

/* ---- device changes and token revocations ---- */

/* The configured capacity bounds the devices of every shard together (a shard's own arrays
 * have some slack: shard_capacity); a put is rare, so the sum may be an atomic add. */
static void apply_device(rl_core *core, const rl_cmd *c) {
    uint64_t h = rl_registry_hash(&core->reg, c->id, strlen(c->id));
    _Atomic uint32_t *total = &core->node->devices;
    if (c->kind == RL_CMD_REMOVE) {
        if (rl_registry_remove(&core->reg, h) == 0) {
            atomic_fetch_sub(total, 1);
            end_device_everywhere(core, c->id, h);
        }
    } else {
        rl_dev *old = rl_registry_find(&core->reg, h);
        int rekey = old && memcmp(old->key, c->key, RL_KEY_LEN) != 0;
        /* A new device takes its place in the sum first: two loops adding at once cannot both
         * take the last one. */
        int room = old || atomic_fetch_add(total, 1) < core->cfg.capacity;
        if (!room || rl_registry_put(&core->reg, h, c->key) != 0) {
            if (!old) atomic_fetch_sub(total, 1);
            CTR_INC(core->ctr.registry_full);
        } else if (rekey) {
            end_device_everywhere(core, c->id, h);
        }
    }
    /* Published for rl_core_stats: reading reg.count from another thread was a data race
     * (found by `make test-tsan`, Tests/fuzz/tsan_core.c). */
    atomic_store_explicit(&core->ctr.devices, core->reg.count, memory_order_relaxed);
}

static void apply_cmd(rl_core *core, const rl_cmd *c) {
    switch (c->kind) {
    case RL_CMD_REVOKE:
        /* Fails only when the table cannot grow (out of memory), which nothing here could remedy. */
        (void)rl_revoked_add(&core->revoked, c->tid, c->expires, (uint64_t)time(NULL));
        break;
    case RL_CMD_PUT:
    case RL_CMD_REMOVE: apply_device(core, c); break;
    case RL_CMD_END_DEVICE: rl_session_end_device(core, c->id_hash); break;
    case RL_CMD_WAKING: set_waking(core, c->id_hash); break;
    case RL_CMD_UNANSWERED: set_unanswered(core, c->id, c->id_hash, c->arg); break;
    case RL_CMD_ANCHOR_MOVED:
        if (rl_session_anchor_moved(core, c->id_hash)) rl_node_wake_started(core, c->id, c->id_hash);
        break;
    case RL_CMD_TRACK_WAKE: rl_track_wake(core, c->id_hash, c->arg, c->arg64); break;
    }
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
    rl_tally_sweep(&core->callback_sources, now);
    atomic_store_explicit(&core->sources_tracked, core->sources.count, memory_order_relaxed);
    atomic_store_explicit(&core->callbacks_tracked, core->callback_sources.count, memory_order_relaxed);
    if (core->index == 0) {
        rl_tally_sweep(rl_node_devices_lock(core), now);
        rl_node_devices_unlock(core);
    }
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

static void reconfigure_loop(rl_core *core, const rl_core_config *cfg) {
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

void rl_core_reconfigure(rl_core *core, const rl_core_config *cfg) {
    EACH_LOOP(core, loop) reconfigure_loop(loop, cfg);
}

int rl_core_device_put(rl_core *core, const char *id, const uint8_t key[RL_KEY_LEN]) {
    rl_cmd c = {0};
    size_t n = strlen(id);
    if (!rl_device_id_valid(id, n)) return -1;
    c.kind = RL_CMD_PUT;
    memcpy(c.id, id, n);
    memcpy(c.key, key, RL_KEY_LEN);
    rl_core *owner = rl_owner(core, id, n);
    if (!owner->started &&
        (owner->reg.count == owner->reg.capacity || atomic_load(&core->node->devices) >= core->cfg.capacity) &&
        !rl_registry_find(&owner->reg, rl_registry_hash(&owner->reg, id, n))) {
        CTR_INC(owner->ctr.registry_full);
        return -1;
    }
    return queue_cmd(owner, &c);
}

int rl_core_device_remove(rl_core *core, const char *id) {
    rl_cmd c = {0};
    size_t n = strlen(id);
    if (!rl_device_id_valid(id, n)) return -1;
    memcpy(c.id, id, n);
    c.kind = RL_CMD_REMOVE;
    return queue_cmd(rl_owner(core, id, n), &c);
}

/* Every loop: a revoked token may be presented to any of them. */
int rl_core_token_revoke(rl_core *core, const uint8_t tid[8], uint64_t expires_unix) {
    rl_cmd c = {0};
    c.kind = RL_CMD_REVOKE;
    memcpy(c.tid, tid, sizeof c.tid);
    c.expires = expires_unix;
    int rc = 0;
    EACH_LOOP(core, loop) rc |= queue_cmd(loop, &c);
    return rc;
}

/* ---- loop threads ---- */

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
    EACH_LOOP(core, loop) {
        loop->started = 1;
        if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0) {
            loop->started = 0;
            rl_set_err(err, err_len, "cannot start loop thread %u: %s", loop->index, strerror(errno));
            rl_core_stop(core);
            return -1;
        }
        char name[16];
        snprintf(name, sizeof name, "rl-loop-%u", loop->index); /* as top -H shows it */
        pthread_setname_np(loop->thread, name);
    }
    return 0;
}

void rl_core_set_ready(rl_core *core, int ready) {
    EACH_LOOP(core, loop) atomic_store(&loop->ready, ready);
}

static int set_tls_loop(rl_core *core, rl_tls *tls, char *err, size_t err_len) {
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

/* Each loop gets contexts of its own (its connections hold references to them). */
int rl_core_set_tls(rl_core *core, const char *const *certs, const char *const *keys, size_t n,
                    const char *device_ca, char *err, size_t err_len) {
    rl_tls *tls[RL_MAX_THREADS] = {0};
    EACH_LOOP(core, loop) {
        tls[loop->index] = rl_tls_new(certs, keys, n, device_ca, err, err_len);
        if (!tls[loop->index]) {
            for (uint32_t i = 0; i < loop->index; i++) rl_tls_free(tls[i]);
            return -1;
        }
    }
    EACH_LOOP(core, loop) if (set_tls_loop(loop, tls[loop->index], err, err_len) != 0) return -1;
    return 0;
}

void rl_core_set_store_up(rl_core *core, int up) {
    atomic_store(&core->store_up, up); /* the lead's, which /metrics reads */
}

void rl_core_set_store_ok(rl_core *core, int ok) {
    EACH_LOOP(core, loop) atomic_store(&loop->store_ok, ok);
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
    if (!core || !core->started || core->stopped) return;
    EACH_LOOP(core, loop)
        if (!atomic_exchange(&loop->draining, 1)) event_active(loop->drain_ev, 0, 0);
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

/* Every loop is told first, then joined: they stop side by side. */
void rl_core_stop(rl_core *core) {
    if (!core) return;
    EACH_LOOP(core, loop) {
        if (!loop->started || loop->stopped) continue;
        loop->stopped = 1;
        atomic_store(&loop->ready, 0);
        event_active(loop->stop_ev, 0, 0);
    }
    EACH_LOOP(core, loop) {
        if (loop->started && loop->stopped && !loop->joined) {
            pthread_join(loop->thread, NULL);
            loop->joined = 1;
        }
    }
}

static void loop_free(rl_core *core) {
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
    rl_mesh_free(core);
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

void rl_core_free(rl_core *core) {
    if (!core) return;
    rl_core_stop(core);
    rl_node *node = core->node;
    /* Sessions of one loop may hold the lead's device tally: the lead goes last. */
    for (uint32_t i = node->n; i-- > 0;)
        if (node->loops[i]) loop_free(node->loops[i]);
    pthread_mutex_destroy(&node->devices_mu);
    free(node->cluster);
    free(node);
}
