/*
 * inspect_tests.c: the admin API's reads of the core (inspect.c): device views, the bounded
 * side table and its eviction, sessions, and requests answered by a running loop thread.
 * Built with AddressSanitizer and UBSan by `make test-c`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "core_types.h"
#include "records.h"
#include "util.h"
#include "netaddr.h"
#include "udp.h"
#include "liveness.h"
#include "session.h"
#include "splice.h"
#include "front.h"
#include "callback.h"
#include "track.h"
#include "metrics.h"
#include "http.h"

#include "check.h"

static const uint8_t key_a[RL_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static rl_core *new_core(uint32_t capacity) {
    rl_core_config cfg;
    char err[256];
    rl_core_config_defaults(&cfg);
    cfg.capacity = capacity;
    cfg.period_s = 60;
    rl_core *core = rl_core_new(&cfg, err, sizeof err);
    CHECK(core != NULL);
    return core;
}

static void anchor(rl_core *core, const char *id, uint32_t port) {
    rl_dev *d = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, id, strlen(id)));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "198.51.100.7", &sa.sin_addr);
    rl_addr_to_v6((struct sockaddr *)&sa, d->addr, &d->port);
    d->sock = 0;
    d->last_access = rl_core_now_ds(core) + 1;
}

/* Before start the requests run on the calling thread (nothing else touches the registry). */
static void test_views(void) {
    rl_core *core = new_core(8);
    CHECK(rl_core_device_put(core, "cam-1", key_a) == 0);
    CHECK(rl_core_device_put(core, "cam-2", key_a) == 0);
    anchor(core, "cam-1", 40000);
    rl_device_view v[3];
    memset(v, 0, sizeof v);
    strcpy(v[0].id, "cam-1");
    strcpy(v[1].id, "cam-2");
    strcpy(v[2].id, "nope");
    CHECK(rl_core_inspect_devices(core, v, 3, 1000) == 0);
    CHECK(v[0].known && v[0].online && v[0].last_notify_a_age_s == 0);
    CHECK(strcmp(v[0].address, "198.51.100.7:40000") == 0);
    CHECK(v[1].known && !v[1].online && v[1].last_notify_a_age_s == -1 && v[1].address[0] == 0);
    CHECK(v[0].offline_why == 0 && v[1].offline_why == RL_OFFLINE_NEVER);
    CHECK(!v[2].known);
    CHECK(rl_core_inspect_devices(core, v, RL_INSPECT_MAX + 1, 1000) == -1);

    /* A move and a wake land in the side table; the view and the history show them. */
    rl_dev *d = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, "cam-1", 5));
    uint8_t a[16];
    uint16_t port;
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(5000)};
    inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
    rl_addr_to_v6((struct sockaddr *)&s6, a, &port);
    rl_track_moved(core, d, a, port);
    rl_track_wake(core, d->id_hash, RL_WAKE_BOUND, 1234);
    CHECK(rl_core_inspect_devices(core, v, 1, 1000) == 0);
    CHECK(v[0].address_changes == 1 && v[0].last_wake_outcome == RL_WAKE_BOUND && v[0].last_wake_latency_us == 1234);
    CHECK(v[0].last_wake_unix > 0);
    rl_device_history h;
    CHECK(rl_core_inspect_history(core, "cam-1", &h, 1000) == 0);
    CHECK(h.tracked && h.n_addresses == 1 && strcmp(h.addresses[0].address, "[2001:db8::1]:5000") == 0);
    CHECK(h.n_wakes == 1 && h.wakes[0].latency_us == 1234);
    CHECK(rl_core_inspect_history(core, "cam-2", &h, 1000) == 0 && !h.tracked);
    CHECK(rl_core_inspect_history(core, "nope", &h, 1000) == -1);

    /* History keeps the newest RL_TRACK_HIST, newest first. */
    for (int i = 0; i < RL_TRACK_HIST + 2; i++) rl_track_wake(core, d->id_hash, RL_WAKE_TIMEOUT, (uint64_t)i);
    CHECK(rl_core_inspect_history(core, "cam-1", &h, 1000) == 0);
    CHECK(h.n_wakes == RL_TRACK_HIST && h.wakes[0].latency_us == RL_TRACK_HIST + 1 && h.wakes[0].outcome == RL_WAKE_TIMEOUT);

    /* Removing the device forgets its extras. */
    CHECK(rl_core_device_remove(core, "cam-1") == 0);
    CHECK(rl_core_device_put(core, "cam-1", key_a) == 0);
    CHECK(rl_core_inspect_history(core, "cam-1", &h, 1000) == 0 && !h.tracked);

    rl_fleet_summary sum;
    CHECK(rl_core_inspect_summary(core, &sum, 1000) == 0);
    CHECK(sum.devices == 2 && sum.online == 0 && sum.never_notified == 2 && sum.capacity == 8);
    rl_core_free(core);
}

/* The side table never holds more than RL_TRACK_MAX devices: the oldest goes first, and every
 * remaining one is still found (backward-shift deletion keeps the probe chains whole). */
static void test_side_table_bounded(void) {
    rl_core *core = new_core(4);
    rl_dev fake;
    memset(&fake, 0, sizeof fake);
    uint8_t a[16] = {0};
    uint32_t n = RL_TRACK_MAX + 1000;
    for (uint32_t i = 1; i <= n; i++) {
        fake.id_hash = 0x9e3779b97f4a7c15ull * i;
        rl_track_moved(core, &fake, a, (uint16_t)i);
    }
    CHECK(core->track && core->track->count == RL_TRACK_MAX);
    int found_old = 0, found_new = 0;
    for (uint32_t i = 1; i <= n; i++) {
        uint64_t h = 0x9e3779b97f4a7c15ull * i;
        int hit = 0;
        for (uint32_t k = 0; k < RL_TRACK_MAX; k++) hit |= core->track->entries[k].id_hash == h;
        if (i <= 1000) found_old += hit;
        else found_new += hit;
    }
    CHECK(found_old == 0 && found_new == (int)RL_TRACK_MAX);
    /* The index finds every one of them: recording a wake for each inserts nothing. */
    uint32_t next = core->track->next;
    for (uint32_t i = 1001; i <= n; i++) rl_track_wake(core, 0x9e3779b97f4a7c15ull * i, RL_WAKE_BOUND, 1);
    CHECK(core->track->next == next && core->track->count == RL_TRACK_MAX);
    for (uint32_t i = 1001; i <= n; i += 7) rl_track_forget(core, 0x9e3779b97f4a7c15ull * i);
    next = core->track->next;
    for (uint32_t i = 1002; i <= n; i += 7) rl_track_wake(core, 0x9e3779b97f4a7c15ull * i, RL_WAKE_BOUND, 1);
    CHECK(core->track->next == next); /* still found after deletions around them */
    rl_core_free(core);
}

/* A running loop thread answers; sessions are listed and one is ended. */
static void test_running_core(void) {
    rl_core *core = new_core(16);
    char err[256];
    CHECK(rl_core_listen(core, RL_LISTEN_UDP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_listen(core, RL_LISTEN_TCP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_listen(core, RL_LISTEN_HTTP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_device_put(core, "cam-1", key_a) == 0);
    anchor(core, "cam-1", 9);
    CHECK(rl_core_start(core, err, sizeof err) == 0);
    CHECK(rl_core_device_put(core, "cam-2", key_a) == 0);
    rl_device_view v[2];
    memset(v, 0, sizeof v);
    strcpy(v[0].id, "cam-1");
    strcpy(v[1].id, "cam-2");
    for (int i = 0; i < 1000; i++) CHECK(rl_core_inspect_devices(core, v, 2, 2000) == 0);
    CHECK(v[0].known && v[0].online && v[1].known && !v[1].online); /* the put before it applied */
    rl_session_view sv[4];
    size_t total = 99;
    CHECK(rl_core_inspect_sessions(core, NULL, sv, 4, &total, 2000) == 0 && total == 0);
    CHECK(rl_core_end_session(core, "00112233445566778899aabbccddeeff", 2000) == -1);
    CHECK(rl_core_end_session(core, "zz", 2000) == -1);
    rl_fleet_summary sum;
    CHECK(rl_core_inspect_summary(core, &sum, 2000) == 0 && sum.devices == 2 && sum.online == 1);
    rl_core_stop(core);
    /* After the stop nobody answers: the caller gets -2 after its timeout, nothing hangs. */
    CHECK(rl_core_inspect_summary(core, &sum, 50) == -2);
    rl_core_free(core);
}

/* The summary's pass over a large registry runs in chunks, one loop callback each. */
static void test_summary_in_chunks(void) {
    uint32_t n = 140000;
    rl_core *core = new_core(n);
    char err[256], id[32];
    for (uint32_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "d-%u", i);
        rl_core_device_put(core, id, key_a);
    }
    anchor(core, "d-7", 1000);
    anchor(core, "d-139999", 1001);
    rl_fleet_summary sum;
    CHECK(rl_core_inspect_summary(core, &sum, 2000) == 0);
    CHECK(sum.devices == n && sum.online == 2 && sum.never_notified == n - 2 && sum.summary_chunks == 3);
    CHECK(rl_core_listen(core, RL_LISTEN_UDP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_listen(core, RL_LISTEN_TCP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_listen(core, RL_LISTEN_HTTP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_start(core, err, sizeof err) == 0);
    memset(&sum, 0, sizeof sum);
    CHECK(rl_core_inspect_summary(core, &sum, 5000) == 0);
    CHECK(sum.devices == n && sum.online == 2 && sum.summary_chunks == 3);
    rl_core_free(core);
}

int main(void) {
    test_views();
    test_summary_in_chunks();
    test_side_table_bounded();
    test_running_core();
    printf("inspect: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
