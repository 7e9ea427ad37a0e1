/*
 * metrics.c: GET /metrics in the Prometheus text format (version 0.0.4), rendered from the
 * core's relaxed counters at scrape time, in the order of counters.h's table; and
 * rl_core_stats, the few values the control layer reads. Nothing is formatted on the hot path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/resource.h>
#include "core_types.h"
#include "node.h"
#include "metrics.h"
#include "mesh.h"
#include "liveness.h"
#include "udp.h"
#include "http.h"
#include "flow.h"



static void family(struct evbuffer *b, const char *name, const char *type, const char *help) {
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct evbuffer *b, const char *name, const char *labels, uint64_t v) {
    evbuffer_add_printf(b, "%s%s %llu\n", name, labels, (unsigned long long)v);
}

/* process_* as the Prometheus client libraries export them, from /proc/self. */
static void render_process(struct evbuffer *b) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    /* Fields after the command name, which is in parentheses and may hold spaces. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                    &utime, &stime, &start, &vsize, &rss) == 5) {
        double tick = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
        double boot = 0;
        FILE *s = fopen("/proc/stat", "r");
        char line[256];
        while (s && fgets(line, sizeof line, s))
            if (sscanf(line, "btime %lf", &boot) == 1) break;
        if (s) fclose(s);
        family(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
        evbuffer_add_printf(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / tick);
        family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        evbuffer_add_printf(b, "process_resident_memory_bytes %.0f\n", (double)rss * page);
        family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        evbuffer_add_printf(b, "process_virtual_memory_bytes %llu\n", vsize);
        family(b, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
        evbuffer_add_printf(b, "process_start_time_seconds %.2f\n", boot + (double)start / tick);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') fds++;
    if (d) {
        closedir(d);
        family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        evbuffer_add_printf(b, "process_open_fds %d\n", fds - 1); /* less the directory's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        evbuffer_add_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

/* The smallest UDP receive buffer of any loop (set before the loops start). */
static uint64_t node_rcvbuf(const rl_core *core) {
    uint64_t least = 0;
    for (uint32_t l = 0; l < core->node->n; l++) {
        uint64_t v = rl_udp_rcvbuf(core->node->loops[l]);
        if (l == 0 || v < least) least = v;
    }
    return least;
}

/* ---- the families counters.h marks BY_HAND, each called at its place in the table ---- */

/* Over every loop's shard. Another loop's entries are read field by field with atomic loads
 * (no sequence): a gauge may count a device changing under it either way. */
static void render_registry(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    /* Liveness is a scan of the registry: done here, never per datagram. */
    uint32_t now_ds = rl_core_now_ds(core);
    uint64_t alive = 0, devices = 0, capacity = 0, bytes = 0;
    for (uint32_t l = 0; l < core->node->n; l++) {
        const rl_registry *reg = &core->node->loops[l]->reg;
        uint32_t n = rl_registry_count(reg);
        for (uint32_t i = 0; i < n; i++) {
            rl_dev d;
            rl_registry_copy_at(reg, i, &d);
            alive += rl_device_alive(core, &d, now_ds);
        }
        devices += n;
        bytes += rl_registry_bytes(reg);
    }
    capacity = core->cfg.capacity; /* the shards' sum, which has some slack, is never reached */
    family(b, "relay_devices", "gauge", "Provisioned devices in the registry.");
    sample(b, "relay_devices", "", devices);
    family(b, "relay_devices_alive", "gauge", "Devices whose last notify A is within the max access period.");
    sample(b, "relay_devices_alive", "", alive);
    family(b, "relay_registry_capacity", "gauge", "Devices the registry can hold.");
    sample(b, "relay_registry_capacity", "", capacity);
    family(b, "relay_registry_bytes", "gauge", "Memory reserved for the registry.");
    sample(b, "relay_registry_bytes", "", bytes);
    family(b, "relay_udp_receive_buffer_bytes", "gauge",
           "Smallest receive buffer the kernel granted a UDP socket (asked: 8 MiB; net.core.rmem_max caps it).");
    sample(b, "relay_udp_receive_buffer_bytes", "", node_rcvbuf(core));
}

static void render_period(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    family(b, "relay_max_access_period_seconds", "gauge", "A device with no notify A for this long is offline.");
    sample(b, "relay_max_access_period_seconds", "", core->cfg.period_s);
}

static void render_drops(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    static const char *kinds[RL_DK_N] = {"period_request", "a", "b", "leave", "other"};
    static const char *reasons[RL_DR_N] = {"malformed", "unknown_device", "bad_auth", "replay", "stale_epoch",
                                           "old_version"};
    char labels[96];
    family(b, "relay_datagrams_dropped_total", "counter",
           "Datagrams dropped, by the kind they claimed and the reason (stale_epoch gets a RESYNC; a period "
           "request with an unknown device or a bad tag may get a REJECT; nothing else is answered).");
    for (int k = 0; k < RL_DK_N; k++)
        for (int r = 0; r < RL_DR_N; r++) {
            snprintf(labels, sizeof labels, "{kind=\"%s\",reason=\"%s\"}", kinds[k], reasons[r]);
            sample(b, "relay_datagrams_dropped_total", labels, CTR_GET(c->dgram_drop[k][r]));
        }
}

/* The rest of relay_wakes_total (its family opens with the wakes_* rows). offline: answered
 * from the registry, nothing sent; refused: stopped by a limit before anything was sent, or
 * ended when the device's certificate did not pass. */
static void render_wakes_not_sent(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    sample(b, "relay_wakes_total", "{outcome=\"offline\"}", CTR_GET(c->refused_offline));
    sample(b, "relay_wakes_total", "{outcome=\"refused\"}",
           CTR_GET(c->limited_device_wakes) + CTR_GET(c->limited_device_sessions) + CTR_GET(c->refused_capacity) +
               CTR_GET(c->device_certs_refused));
}

static void render_wake_histogram(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    char labels[96];
    family(b, "relay_wake_duration_seconds", "histogram", "From a wake's first connection request to the device's callback.");
    uint64_t cumulative = 0;
    for (int i = 0; i <= RL_WAKE_BUCKETS; i++) {
        cumulative += CTR_GET(c->wake_bucket[i]);
        if (i < RL_WAKE_BUCKETS) snprintf(labels, sizeof labels, "{le=\"%g\"}", rl_wake_bucket_us[i] / 1e6);
        else snprintf(labels, sizeof labels, "{le=\"+Inf\"}");
        sample(b, "relay_wake_duration_seconds_bucket", labels, cumulative);
    }
    evbuffer_add_printf(b, "relay_wake_duration_seconds_sum %.6f\n", (double)CTR_GET(c->wake_us_sum) / 1e6);
    sample(b, "relay_wake_duration_seconds_count", "", cumulative);
}

static void render_responses(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    char labels[96];
    family(b, "relay_terminal_responses_total", "counter",
           "Responses to terminals: the relay's own by status code, the devices' by status class.");
    for (int i = 0; i <= RL_ANSWER_CODES; i++) {
        if (i < RL_ANSWER_CODES) snprintf(labels, sizeof labels, "{origin=\"relay\",code=\"%u\"}", rl_answer_codes[i]);
        else snprintf(labels, sizeof labels, "{origin=\"relay\",code=\"other\"}");
        sample(b, "relay_terminal_responses_total", labels, CTR_GET(c->answers[i]));
    }
    for (int i = 1; i <= 5; i++) {
        snprintf(labels, sizeof labels, "{origin=\"device\",code=\"%dxx\"}", i);
        sample(b, "relay_terminal_responses_total", labels, CTR_GET(c->device_responses[i]));
    }
    sample(b, "relay_terminal_responses_total", "{origin=\"device\",code=\"other\"}", CTR_GET(c->device_responses[0]));
}

static void render_admin_unauthorized(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    family(b, "relay_admin_unauthorized_total", "counter", "Admin API requests refused for a missing or wrong key.");
    sample(b, "relay_admin_unauthorized_total", "", atomic_load_explicit(&core->admin_unauthorized, memory_order_relaxed));
}

static void render_tracked_keys(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    family(b, "relay_limit_tracked_keys", "gauge",
           "Terminal addresses, devices and device callback addresses the abuse limits currently track.");
    uint64_t sources = 0, callbacks = 0;
    for (uint32_t l = 0; l < core->node->n; l++) {
        sources += atomic_load_explicit(&core->node->loops[l]->sources_tracked, memory_order_relaxed);
        callbacks += atomic_load_explicit(&core->node->loops[l]->callbacks_tracked, memory_order_relaxed);
    }
    uint64_t devices = rl_node_devices_lock(core)->count;
    rl_node_devices_unlock(core);
    sample(b, "relay_limit_tracked_keys", "{scope=\"source\"}", sources);
    sample(b, "relay_limit_tracked_keys", "{scope=\"device\"}", devices);
    sample(b, "relay_limit_tracked_keys", "{scope=\"callback_source\"}", callbacks);
}

/* Balance across loop threads: the few figures that show whether the kernel's steering
 * spreads devices and terminals evenly (the totals above are their sums). */
static void render_threads(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    char labels[32];
    family(b, "relay_threads", "gauge", "Loop threads (relay serve --threads).");
    sample(b, "relay_threads", "", core->node->n);
    family(b, "relay_store_up", "gauge", "1 while the last read of the device store succeeded, else 0.");
    sample(b, "relay_store_up", "", (uint64_t)atomic_load(&core->store_up));
    static const char *const names[3][2] = {
        {"relay_thread_datagrams_received_total", "UDP datagrams received, by loop thread."},
        {"relay_thread_wakes_started_total", "Wakes started, by the loop thread of the terminal."},
        {"relay_thread_terminal_connections", "Open terminal connections, by loop thread."},
    };
    for (int k = 0; k < 3; k++) {
        family(b, names[k][0], k == 2 ? "gauge" : "counter", names[k][1]);
        for (uint32_t l = 0; l < core->node->n; l++) {
            const struct rl_counters *lc = &core->node->loops[l]->ctr;
            snprintf(labels, sizeof labels, "{thread=\"%u\"}", l);
            sample(b, names[k][0], labels,
                   k == 0 ? CTR_GET(lc->dgram_rx) : k == 1 ? CTR_GET(lc->wakes_started) : CTR_GET(lc->terminals_open));
        }
    }
}

/* The cluster channel (mesh.h), summed over loops: only on a cluster node. Per peer: the
 * WAKEs sent to it and its answers by status; as holder: the WAKEs answered, by status. */
static void render_mesh(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    rl_cluster *cl = core->node->cluster;
    if (!cl) return;
    char labels[160];
    family(b, "relay_cluster_node", "gauge", "This node's number in the cluster (relay serve --node).");
    sample(b, "relay_cluster_node", "", cl->node_id);
    uint64_t sent[RL_MESH_MAX_PEERS] = {0}, answers[RL_MESH_MAX_PEERS][RL_MESH_STATUSES] = {{0}};
    uint64_t handled[RL_MESH_STATUSES] = {0}, dropped[RL_MD_N] = {0}, cr_to = 0, received = 0;
    for (uint32_t l = 0; l < core->node->n; l++) {
        const rl_mesh *m = core->node->loops[l]->mesh;
        if (!m) continue;
        for (uint32_t p = 0; p < cl->n_peers; p++) {
            sent[p] += CTR_GET(m->wakes_sent[p]);
            for (int s = 0; s < RL_MESH_STATUSES; s++) answers[p][s] += CTR_GET(m->answers[p][s]);
        }
        for (int s = 0; s < RL_MESH_STATUSES; s++) handled[s] += CTR_GET(m->handled[s]);
        for (int d = 0; d < RL_MD_N; d++) dropped[d] += CTR_GET(m->dropped[d]);
        cr_to += CTR_GET(m->connect_to_sent);
        received += CTR_GET(m->received);
    }
    family(b, "relay_mesh_wakes_sent_total", "counter", "WAKEs this node sent, by peer (retransmissions included).");
    for (uint32_t p = 0; p < cl->n_peers; p++) {
        snprintf(labels, sizeof labels, "{peer=\"%s\"}", cl->peer_name[p]);
        sample(b, "relay_mesh_wakes_sent_total", labels, sent[p]);
    }
    family(b, "relay_mesh_answers_total", "counter", "Answers to this node's WAKEs, by peer and status.");
    for (uint32_t p = 0; p < cl->n_peers; p++)
        for (int s = 0; s < RL_MESH_STATUSES; s++) {
            snprintf(labels, sizeof labels, "{peer=\"%s\",status=\"%s\"}", cl->peer_name[p], rl_mesh_status_names[s]);
            sample(b, "relay_mesh_answers_total", labels, answers[p][s]);
        }
    family(b, "relay_mesh_wakes_handled_total", "counter", "WAKEs from other nodes this node answered, by status.");
    for (int s = 0; s < RL_MESH_STATUSES; s++) {
        snprintf(labels, sizeof labels, "{status=\"%s\"}", rl_mesh_status_names[s]);
        sample(b, "relay_mesh_wakes_handled_total", labels, handled[s]);
    }
    family(b, "relay_mesh_connect_to_sent_total", "counter",
           "CONNECT_REQUEST_TO datagrams sent to devices for other nodes' terminals.");
    sample(b, "relay_mesh_connect_to_sent_total", "", cr_to);
    family(b, "relay_mesh_datagrams_received_total", "counter", "Mesh datagrams received, valid or not.");
    sample(b, "relay_mesh_datagrams_received_total", "", received);
    family(b, "relay_mesh_dropped_total", "counter", "Mesh datagrams dropped, by reason.");
    for (int d = 0; d < RL_MD_N; d++) {
        snprintf(labels, sizeof labels, "{reason=\"%s\"}", rl_mesh_drop_names[d]);
        sample(b, "relay_mesh_dropped_total", labels, dropped[d]);
    }
}

static void render_draining(rl_core *core, const struct rl_counters *c, struct evbuffer *b) {
    family(b, "relay_draining", "gauge", "1 while the relay stops gracefully (SIGTERM).");
    sample(b, "relay_draining", "", (uint64_t)atomic_load(&core->draining));
}

/* ---- the table ---- */

/* Nothing but counters.h's rows and the fields core_types.h declares by hand: a counter added
 * to struct rl_counters without a row in the table (and so without its metric) fails here. */
#define RL_ONE(...) +1
#define RL_NONE(render)
_Static_assert(sizeof(struct rl_counters) == sizeof(rl_counter) * (0 RL_METRICS(RL_ONE, RL_NONE) + RL_COUNTERS_BY_HAND),
               "every counter needs a COUNTER row in counters.h (or a BY_HAND family that renders it)");

/* A COUNTER row opens its family with HELP and TYPE, unless the row before had the same metric. */
static void counter_row(struct evbuffer *b, const char **open, const char *name, const char *type, const char *labels,
                        const char *help, uint64_t v) {
    if (!*open || strcmp(*open, name) != 0) family(b, name, type, help);
    *open = name;
    sample(b, name, labels, v);
}

/* Every loop's counters added up: struct rl_counters holds nothing but counters (asserted
 * above), so it is summed as an array. */
static void sum_counters(const rl_core *core, struct rl_counters *out) {
    rl_counter *o = (rl_counter *)out;
    const size_t n = sizeof *out / sizeof(rl_counter);
    for (size_t i = 0; i < n; i++) atomic_init(&o[i], 0);
    for (uint32_t l = 0; l < core->node->n; l++) {
        const rl_counter *c = (const rl_counter *)&core->node->loops[l]->ctr;
        for (size_t i = 0; i < n; i++) CTR_ADD(o[i], CTR_GET(c[i]));
    }
}

void rl_metrics_render(rl_core *core, struct evbuffer *b) {
    struct rl_counters sum;
    sum_counters(core, &sum);
    const struct rl_counters *c = &sum;
    const char *open = NULL; /* the family the last COUNTER row was in */
#define RL_RENDER_COUNTER(field, type, name, labels, help) counter_row(b, &open, name, #type, labels, help, CTR_GET(c->field));
#define RL_RENDER_BY_HAND(render) { render(core, c, b); open = NULL; }
    RL_METRICS(RL_RENDER_COUNTER, RL_RENDER_BY_HAND)
#undef RL_RENDER_COUNTER
#undef RL_RENDER_BY_HAND
    render_process(b);
}

/* Only what the control layer reads (drain, device count, admin API, the UDP buffer warning);
 * everything else is read at /metrics. */
void rl_core_stats(const rl_core *core, rl_stats *o) {
    memset(o, 0, sizeof *o);
    for (uint32_t l = 0; l < core->node->n; l++) {
        const rl_core *loop = core->node->loops[l];
        o->devices += CTR_GET(loop->ctr.devices);
        o->sessions_active += CTR_GET(loop->ctr.sessions_active);
        o->terminals_open += CTR_GET(loop->ctr.terminals_open);
    }
    o->capacity = core->cfg.capacity;
    o->udp_rcvbuf = node_rcvbuf(core);
}

/* A scrape connection: one request, one answer, then closed. It lives at most the header
 * timeout (a scraper that sends nothing, or never reads, does not keep a descriptor), and at
 * most RL_MAX_SCRAPES are open at once. */
#define RL_MAX_SCRAPES 32
typedef struct rl_scrape {
    struct rl_scrape *prev, *next;
    rl_core *core;
    rl_stream *st;
    struct event *timer;
} rl_scrape;

static void scrape_free(rl_scrape *sc) {
    if (sc->prev) sc->prev->next = sc->next;
    else sc->core->scrapes = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    sc->core->n_scrapes--;
    event_free(sc->timer);
    rl_stream_free(sc->st);
    free(sc);
}

static void on_scrape_timeout(evutil_socket_t fd, short what, void *arg) {
    scrape_free(arg);
}

static void scrape_cb(rl_stream *st, int event, void *arg) {
    rl_scrape *sc = arg;
    if (event == RL_STREAM_READ_READY) {
        size_t head_len = rl_flow_find_head(st->in);
        if (!head_len) {
            if (evbuffer_get_length(st->in) > 8192) scrape_free(sc);
            return;
        }
        rl_stream_read(st, 0);
        const char *p = (const char *)evbuffer_pullup(st->in, 13);
        if (p && memcmp(p, "GET /metrics ", 13) == 0) {
            struct evbuffer *body = evbuffer_new();
            rl_metrics_render(sc->core, body);
            evbuffer_add_printf(st->out,
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                                evbuffer_get_length(body));
            evbuffer_add_buffer(st->out, body);
            evbuffer_free(body);
        } else {
            rl_http_respond(st->out, 404, NULL, "only GET /metrics here\n");
        }
        rl_stream_shutdown_after_flush(st);
    } else if (event == RL_STREAM_DRAINED) {
        if (evbuffer_get_length(st->out) == 0) scrape_free(sc);
    } else {
        scrape_free(sc);
    }
}

void rl_metrics_close_all(rl_core *core) {
    while (core->scrapes) scrape_free(core->scrapes);
}

void rl_metrics_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg) {
    rl_core *core = arg;
    if (rl_core_fd_refused(core, fd)) return;
    rl_scrape *sc = core->n_scrapes < RL_MAX_SCRAPES ? calloc(1, sizeof *sc) : NULL;
    if (!sc) {
        close(fd);
        return;
    }
    sc->core = core;
    sc->st = rl_stream_new(core->base, fd, 0, scrape_cb, sc);
    sc->timer = evtimer_new(core->base, on_scrape_timeout, sc);
    if (!sc->st || !sc->timer) {
        if (sc->st) rl_stream_free(sc->st);
        else close(fd);
        if (sc->timer) event_free(sc->timer);
        free(sc);
        return;
    }
    core->n_scrapes++;
    sc->next = core->scrapes;
    if (core->scrapes) core->scrapes->prev = sc;
    core->scrapes = sc;
    struct timeval tv = {core->cfg.header_timeout_ms / 1000, (core->cfg.header_timeout_ms % 1000) * 1000};
    evtimer_add(sc->timer, &tv);
    rl_stream_read(sc->st, 1);
}
