/*
 * tsan_core.c: the C core's threading contract under ThreadSanitizer (`make test-tsan`).
 *
 * A started core (its own loop thread) is hit from other threads the way the Swift control
 * layer and the outside world hit it: device puts and removes, token revocations, stats and
 * record drains, while notifies arrive over UDP and terminals are refused over HTTP (each
 * refusal pushes a record).
 * Any data race makes TSan halt with a report; the program prints its figures otherwise.
 *
 * `tsan_core SECONDS THREADS`: with several loop threads the same traffic crosses them. The
 * notifies of each device alternate between two source sockets (its anchor moves), terminals
 * with valid tokens wake devices other loops own (the registry read across shards, the
 * connection request from the terminal's loop), and the wakes time out (the owner is told),
 * while devices are put and removed on their owners and revocations reach every loop.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
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

static rl_core *core;
static atomic_int stop;
static atomic_ulong answered; /* terminal requests the front answered during the flood */
static uint8_t keys[32][RL_KEY_LEN];
static char tokens[4][RL_TOKEN_MAX + 64]; /* valid tokens for dev-0 .. dev-3 */

static void id_of(int i, char *out) { snprintf(out, 16, "dev-%d", i); }

static void *putter(void *arg) {
    (void)arg;
    unsigned long n = 0;
    while (!atomic_load(&stop)) {
        char id[16];
        int i = (int)(n % 32);
        id_of(i, id);
        if (n % 7 == 3) rl_core_device_remove(core, id);
        else rl_core_device_put(core, id, keys[i]);
        if (n % 5 == 0) {
            uint8_t tid[8];
            memcpy(tid, &n, sizeof tid);
            rl_core_token_revoke(core, tid, (uint64_t)time(NULL) + 1 + n % 3); /* some expire during the run */
        }
        n++;
        if (n % 8 == 0) usleep(2000); /* each remove scans every session bucket */
    }
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    unsigned long drained = 0, scrapes = 0;
    rl_session_record recs[64];
    while (!atomic_load(&stop)) {
        rl_stats st;
        rl_core_stats(core, &st);
        drained += rl_core_drain_records(core, recs, 64);
        /* the admin API's reads: requests answered by the loop thread (inspect.c) */
        rl_device_view views[4];
        memset(views, 0, sizeof views);
        for (int v = 0; v < 4; v++) snprintf(views[v].id, sizeof views[v].id, "dev-%d", v * 7);
        rl_core_inspect_devices(core, views, 4, 2000);
        rl_session_view sv[8];
        size_t total = 0;
        rl_core_inspect_sessions(core, NULL, sv, 8, &total, 2000);
        rl_fleet_summary sum;
        if (scrapes % 16 == 0) rl_core_inspect_summary(core, &sum, 2000);
        scrapes++;
        usleep(200);
    }
    printf("reader: %lu scrapes, %lu records drained\n", scrapes, drained);
    return NULL;
}

static void *notifier(void *arg) {
    (void)arg;
    int fds[2] = {socket(AF_INET, SOCK_DGRAM, 0), socket(AF_INET, SOCK_DGRAM, 0)};
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    to.sin_port = htons((uint16_t)rl_core_bound_port(core, RL_LISTEN_UDP, 0));
    rl_mac m;
    rl_mac_init(&m);
    uint64_t counter = 1;
    unsigned long sent = 0;
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 32; i++) {
            char id[16];
            uint8_t body[RL_BODY_NOTIFY], buf[RL_DGRAM_MAX];
            id_of(i, id);
            rl_put32(body, core->epoch); /* written once before the loop thread started */
            rl_put64(body + 4, counter++);
            size_t n = rl_dgram_build(&m, buf, sizeof buf, RL_T_NOTIFY_A, id, strlen(id), body, sizeof body, keys[i]);
            sendto(fds[(counter / 64) % 2], buf, n, 0, (struct sockaddr *)&to, sizeof to); /* anchors move */
            sent++;
        }
        usleep(500);
    }
    rl_mac_free(&m);
    close(fds[0]);
    close(fds[1]);
    printf("notifier: %lu notifies\n", sent);
    return NULL;
}

static void *terminal(void *arg) {
    (void)arg;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    to.sin_port = htons((uint16_t)rl_core_bound_port(core, RL_LISTEN_HTTP, 0));
    unsigned long n = 0;
    const char *fixed[] = {"GET /d/dev-1/ HTTP/1.1\r\n\r\n", "GET /d/nope/ HTTP/1.1\r\n\r\n", "GET /healthz HTTP/1.1\r\n\r\n",
                           "GET /d/dev-2/ HTTP/1.1\r\nAuthorization: Bearer dev-2.1.0000000000000000.AAAAAAAAAAAAAAAAAAAAAA\r\n\r\n"};
    char woken[4][RL_TOKEN_MAX + 128];
    for (int i = 0; i < 4; i++)
        snprintf(woken[i], sizeof woken[i], "GET /d/dev-%d/ HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", i, tokens[i]);
    const char *reqs[8] = {fixed[0], woken[0], fixed[1], woken[1], fixed[2], woken[2], fixed[3], woken[3]};
    while (!atomic_load(&stop)) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct timeval tmo = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof tmo);
        if (connect(fd, (struct sockaddr *)&to, sizeof to) == 0) {
            const char *r = reqs[n % 8];
            if (write(fd, r, strlen(r)) > 0) {
                char buf[1024];
                ssize_t got, total = 0;
                while ((got = read(fd, buf, sizeof buf)) > 0) total += got;
                if (got < 0) fprintf(stderr, "terminal: request %lu: no EOF after %zd bytes\n", n, total);
                if (total > 0) atomic_fetch_add(&answered, 1);
            }
        }
        close(fd);
        n++;
    }
    printf("terminal: %lu requests\n", n);
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    rl_core_config cfg;
    char err[256];
    rl_core_config_defaults(&cfg);
    cfg.threads = argc > 2 ? (uint32_t)atoi(argv[2]) : 1;
    cfg.capacity = 24 * cfg.threads; /* fewer than the 32 IDs: puts also hit a full registry */
    cfg.wake_timeout_ms = 150;     /* wakes end within the run, unanswered */
    memset(cfg.token_key, 7, sizeof cfg.token_key);
    for (int i = 0; i < 32; i++) memset(keys[i], i + 1, RL_KEY_LEN);
    for (int i = 0; i < 4; i++) {
        char id[16];
        uint8_t tid[8] = {0xee, (uint8_t)i};
        id_of(i, id);
        rl_token_mint(cfg.token_key, id, keys[i], (uint64_t)time(NULL) + 3600, tid, tokens[i], sizeof tokens[i]);
    }
    core = rl_core_new(&cfg, err, sizeof err);
    if (!core || rl_core_listen(core, RL_LISTEN_HTTP, "127.0.0.1:0", err, sizeof err) < 0 ||
        rl_core_listen(core, RL_LISTEN_UDP, "127.0.0.1:0", err, sizeof err) < 0 ||
        rl_core_listen(core, RL_LISTEN_TCP, "127.0.0.1:0", err, sizeof err) < 0 ||
        rl_core_listen(core, RL_LISTEN_METRICS, "127.0.0.1:0", err, sizeof err) < 0 || rl_core_start(core, err, sizeof err)) {
        fprintf(stderr, "tsan_core: %s\n", err);
        return 1;
    }
    rl_core_set_ready(core, 1);
    pthread_t th[4];
    void *(*fns[4])(void *) = {putter, reader, notifier, terminal};
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, fns[i], NULL);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (long)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    rl_stats st;
    rl_core_stats(core, &st);
    unsigned long long ok = 0, full = 0, refused = 0, wakes = 0, moved = 0;
    for (uint32_t l = 0; l < core->node->n; l++) {
        const struct rl_counters *c = &core->node->loops[l]->ctr;
        ok += CTR_GET(c->notify_a_ok);
        full += CTR_GET(c->registry_full);
        refused += CTR_GET(c->refused_unknown) + CTR_GET(c->refused_unauthorized) + CTR_GET(c->refused_offline);
        wakes += CTR_GET(c->wakes_started);
        moved += CTR_GET(c->address_changes);
    }
    printf("core: %u loop threads, devices %llu, notifies ok %llu, registry full %llu, refused %llu, wakes %llu, "
           "anchor moves %llu\n", core->node->n, (unsigned long long)st.devices, ok, full, refused, wakes, moved);
    rl_core_stop(core);
    rl_core_free(core);
    printf("tsan_core: no data race reported; %lu terminal requests answered during the datagram flood\n",
           (unsigned long)atomic_load(&answered));
    /* Liveness, not timing: a flood of datagrams must not stop the loop from serving the
     * HTTP front at all (the edge-triggered UDP read re-activated itself forever). */
    if (wakes == 0 || moved == 0) {
        fprintf(stderr, "tsan_core: the run woke no device or moved no anchor: the threads were not exercised\n");
        return 1;
    }
    if (atomic_load(&answered) < 5) {
        fprintf(stderr, "tsan_core: the HTTP front starved while datagrams arrived\n");
        return 1;
    }
    return 0;
}
