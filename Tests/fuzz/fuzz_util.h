/*
 * fuzz_util.h: helpers shared by the libFuzzer targets in this directory (header-only:
 * each target is one translation unit linked against the C core sources).
 *
 * The targets drive the C core in-process, on the fuzzer's thread: an rl_core is made but
 * never started (no loop thread), its event_base is run with EVLOOP_NONBLOCK, and outside
 * peers are socketpairs handed to the same accept callbacks the listeners use.
 */
#ifndef RL_FUZZ_UTIL_H
#define RL_FUZZ_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
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

#define FZ_CHECK(cond)                                                                   \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz invariant failed %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

static const uint8_t fz_key_a[RL_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t fz_key_b[RL_KEY_LEN] = {16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};

/* A core with devices "cam-1" (key a) and "b" (key b), one UDP socket on loopback and a
 * TCP callback listener (so the callback port is known). */
static rl_core *fz_core_new(void) {
    rl_core_config cfg;
    char err[256];
    rl_core_config_defaults(&cfg);
    cfg.capacity = 16;
    cfg.max_sessions = 64;
    cfg.max_header_bytes = 4096;
    memset(cfg.token_key, 7, sizeof cfg.token_key);
    rl_core *core = rl_core_new(&cfg, err, sizeof err);
    FZ_CHECK(core);
    FZ_CHECK(rl_core_listen(core, RL_LISTEN_UDP, "127.0.0.1:0", err, sizeof err) == 0);
    FZ_CHECK(rl_core_listen(core, RL_LISTEN_TCP, "127.0.0.1:0", err, sizeof err) == 0);
    FZ_CHECK(rl_core_device_put(core, "cam-1", fz_key_a) == 0);
    FZ_CHECK(rl_core_device_put(core, "b", fz_key_b) == 0);
    return core;
}

static rl_dev *fz_dev(rl_core *core, const char *id) {
    return rl_registry_find(&core->reg, rl_registry_hash(&core->reg, id, strlen(id)));
}

/* A UDP socket on loopback that nobody reads: the anchor connection requests go to. */
static int fz_sink(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    FZ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    FZ_CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Makes `id` alive with its anchor at 127.0.0.1:port on UDP socket 0. */
static void fz_anchor(rl_core *core, const char *id, uint16_t port) {
    rl_dev *d = fz_dev(core, id);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    rl_addr_to_v6((struct sockaddr *)&sa, d->addr, &d->port);
    d->sock = 0;
    d->counter = 0;
    d->last_access = rl_core_now_s(core) + 1;
}

/* Runs the loop until nothing is ready (bounded). */
static void fz_spin(rl_core *core) {
    for (int i = 0; i < 16; i++) event_base_loop(core->base, EVLOOP_NONBLOCK);
}

/* Reads whatever the relay wrote to our end; returns bytes read, -1 at EOF/error. */
static long fz_drain(int fd, uint8_t *keep, size_t keep_cap, size_t *kept) {
    uint8_t buf[65536];
    long total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            if (keep && *kept < keep_cap) {
                size_t c = (size_t)n < keep_cap - *kept ? (size_t)n : keep_cap - *kept;
                memcpy(keep + *kept, buf, c);
                *kept += c;
            }
            total += n;
            continue;
        }
        if (n == 0) return total ? total : -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return total;
        return total ? total : -1;
    }
}

/* Writes all of `p` (the socket buffer is large enough for a fuzz input). */
static void fz_send(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0) return; /* the relay closed its end: fine */
        b += w;
        n -= (size_t)w;
    }
}

/* A connected AF_UNIX stream pair, relay end first. Generous buffers so writes never block. */
static void fz_pair(int *relay_end, int *our_end) {
    int sv[2];
    /* Non-blocking, as accept4 hands sockets to the core. */
    FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    *relay_end = sv[0];
    *our_end = sv[1];
}

static const struct sockaddr_in fz_peer = {.sin_family = AF_INET, .sin_port = 0x3930, .sin_addr.s_addr = 0x0100007f};

/* Replaces every occurrence of `tag` in [p, p+n) by `rep`; returns a malloc'd buffer. */
static uint8_t *fz_subst(const uint8_t *p, size_t n, const char *tag, const void *rep, size_t rep_len, size_t *out_n) {
    size_t tl = strlen(tag), cap = n + 1, count = 0;
    for (size_t i = 0; i + tl <= n; i++)
        if (memcmp(p + i, tag, tl) == 0) count++, i += tl - 1;
    if (rep_len > tl) cap += count * (rep_len - tl);
    uint8_t *o = malloc(cap);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (i + tl <= n && memcmp(p + i, tag, tl) == 0) {
            memcpy(o + k, rep, rep_len);
            k += rep_len;
            i += tl;
        } else {
            o[k++] = p[i++];
        }
    }
    *out_n = k;
    return o;
}

#endif
