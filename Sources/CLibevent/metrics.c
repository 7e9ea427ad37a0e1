/*
 * metrics.c: GET /metrics in the Prometheus text format (version 0.0.4), rendered from the
 * core's relaxed counters at scrape time. Nothing is formatted on the hot path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "flow.h"

static void family(struct evbuffer *b, const char *name, const char *type, const char *help) {
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render(rl_core *core, struct evbuffer *b) {
    struct rl_counters *c = &core->ctr;
    /* Liveness is a scan of the registry: done here, never per datagram. */
    uint32_t now = rl_core_now_s(core), alive = 0;
    for (uint32_t i = 0; i < core->reg.count; i++) {
        uint32_t la = core->reg.devs[i].last_access;
        if (la && now - (la - 1) <= core->cfg.period_s) alive++;
    }
    atomic_store_explicit(&c->devices_alive, alive, memory_order_relaxed);

    family(b, "relay_devices", "gauge", "Provisioned devices in the registry.");
    evbuffer_add_printf(b, "relay_devices %u\n", core->reg.count);
    family(b, "relay_devices_alive", "gauge", "Devices whose last notify A is within the max access period.");
    evbuffer_add_printf(b, "relay_devices_alive %u\n", alive);
    family(b, "relay_registry_capacity", "gauge", "Devices the registry can hold.");
    evbuffer_add_printf(b, "relay_registry_capacity %u\n", core->reg.capacity);
    family(b, "relay_registry_bytes", "gauge", "Memory reserved for the registry.");
    evbuffer_add_printf(b, "relay_registry_bytes %zu\n", rl_registry_bytes(&core->reg));
    family(b, "relay_registry_full_total", "counter", "Devices not added because the registry was full.");
    evbuffer_add_printf(b, "relay_registry_full_total %llu\n", (unsigned long long)CTR_GET(c->registry_full));
    family(b, "relay_datagrams_received_total", "counter", "UDP datagrams received from devices.");
    evbuffer_add_printf(b, "relay_datagrams_received_total %llu\n", (unsigned long long)CTR_GET(c->dgram_rx));
    family(b, "relay_notify_total", "counter", "Notifies accepted, by kind.");
    evbuffer_add_printf(b, "relay_notify_total{kind=\"a\"} %llu\nrelay_notify_total{kind=\"b\"} %llu\n",
                        (unsigned long long)CTR_GET(c->notify_a_ok), (unsigned long long)CTR_GET(c->notify_b_ok));
    family(b, "relay_datagrams_dropped_total", "counter", "Datagrams dropped, by reason.");
    evbuffer_add_printf(b,
                        "relay_datagrams_dropped_total{reason=\"malformed\"} %llu\n"
                        "relay_datagrams_dropped_total{reason=\"unknown_device\"} %llu\n"
                        "relay_datagrams_dropped_total{reason=\"bad_auth\"} %llu\n"
                        "relay_datagrams_dropped_total{reason=\"replay\"} %llu\n"
                        "relay_datagrams_dropped_total{reason=\"stale_epoch\"} %llu\n",
                        (unsigned long long)CTR_GET(c->dgram_malformed), (unsigned long long)CTR_GET(c->dgram_unknown_device),
                        (unsigned long long)CTR_GET(c->dgram_bad_auth), (unsigned long long)CTR_GET(c->dgram_replay),
                        (unsigned long long)CTR_GET(c->dgram_stale_epoch));
    family(b, "relay_period_requests_total", "counter", "Period requests answered.");
    evbuffer_add_printf(b, "relay_period_requests_total %llu\n", (unsigned long long)CTR_GET(c->period_requests));
    family(b, "relay_address_changes_total", "counter", "Device anchors that moved to a new address, port or socket.");
    evbuffer_add_printf(b, "relay_address_changes_total %llu\n", (unsigned long long)CTR_GET(c->address_changes));
    family(b, "relay_connection_requests_sent_total", "counter", "Connection requests sent, retransmissions included.");
    evbuffer_add_printf(b, "relay_connection_requests_sent_total %llu\n", (unsigned long long)CTR_GET(c->conn_requests_sent));
    family(b, "relay_wakes_total", "counter", "Device wakes, by outcome.");
    evbuffer_add_printf(b,
                        "relay_wakes_total{outcome=\"started\"} %llu\n"
                        "relay_wakes_total{outcome=\"bound\"} %llu\n"
                        "relay_wakes_total{outcome=\"timeout\"} %llu\n",
                        (unsigned long long)CTR_GET(c->wakes_started), (unsigned long long)CTR_GET(c->wakes_bound),
                        (unsigned long long)CTR_GET(c->wakes_timeout));
    family(b, "relay_requests_refused_total", "counter", "Terminal requests the relay answered itself, by reason.");
    evbuffer_add_printf(b,
                        "relay_requests_refused_total{reason=\"offline\"} %llu\n"
                        "relay_requests_refused_total{reason=\"unknown\"} %llu\n"
                        "relay_requests_refused_total{reason=\"unauthorized\"} %llu\n"
                        "relay_requests_refused_total{reason=\"forbidden\"} %llu\n"
                        "relay_requests_refused_total{reason=\"bad_request\"} %llu\n"
                        "relay_requests_refused_total{reason=\"capacity\"} %llu\n",
                        (unsigned long long)CTR_GET(c->refused_offline), (unsigned long long)CTR_GET(c->refused_unknown),
                        (unsigned long long)CTR_GET(c->refused_unauthorized),
                        (unsigned long long)CTR_GET(c->refused_forbidden),
                        (unsigned long long)CTR_GET(c->refused_bad_request),
                        (unsigned long long)CTR_GET(c->refused_capacity));
    family(b, "relay_callbacks_rejected_total", "counter", "Device callbacks refused (bad hello, session or proof).");
    evbuffer_add_printf(b, "relay_callbacks_rejected_total %llu\n", (unsigned long long)CTR_GET(c->callbacks_rejected));
    family(b, "relay_sessions_active", "gauge", "Sessions waking, bound or idle.");
    evbuffer_add_printf(b, "relay_sessions_active %llu\n", (unsigned long long)CTR_GET(c->sessions_active));
    family(b, "relay_sessions_reused_total", "counter", "Terminal connections served on an idle link, without a wake.");
    evbuffer_add_printf(b, "relay_sessions_reused_total %llu\n", (unsigned long long)CTR_GET(c->sessions_reused));
    family(b, "relay_relayed_bytes_total", "counter", "Bytes relayed, by direction.");
    evbuffer_add_printf(b,
                        "relay_relayed_bytes_total{direction=\"to_device\"} %llu\n"
                        "relay_relayed_bytes_total{direction=\"to_terminal\"} %llu\n",
                        (unsigned long long)CTR_GET(c->bytes_to_device), (unsigned long long)CTR_GET(c->bytes_to_terminal));
}

static void scrape_cb(rl_stream *st, int event, void *arg) {
    rl_core *core = arg;
    if (event == RL_STREAM_READ_READY) {
        size_t head_len = rl_flow_find_head(st->in);
        if (!head_len) {
            if (evbuffer_get_length(st->in) > 8192) rl_stream_free(st);
            return;
        }
        rl_stream_read(st, 0);
        const char *p = (const char *)evbuffer_pullup(st->in, 13);
        if (p && memcmp(p, "GET /metrics ", 13) == 0) {
            struct evbuffer *body = evbuffer_new();
            render(core, body);
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
        if (evbuffer_get_length(st->out) == 0) rl_stream_free(st);
    } else {
        rl_stream_free(st);
    }
}

void rl_metrics_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg) {
    rl_core *core = arg;
    evutil_make_socket_nonblocking(fd);
    rl_stream *st = rl_stream_new(core->base, fd, 0, scrape_cb, core);
    if (!st) {
        close(fd);
        return;
    }
    rl_stream_read(st, 1);
}
