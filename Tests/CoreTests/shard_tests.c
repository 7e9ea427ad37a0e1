/*
 * shard_tests.c: which loop owns a device, in C and in the kernel (shard.c). rl_shard_of's
 * properties (deterministic, seeded, balanced), then real SO_REUSEPORT groups on loopback:
 * datagrams carrying device IDs must reach the member rl_shard_of names, none lost, none
 * misrouted; malformed datagrams reach member 0 or nobody; TCP connections from 127.0.0.2..20
 * (and [::1] where there is IPv6) reach the listener rl_shard_of_source names. Unprivileged:
 * SO_ATTACH_REUSEPORT_CBPF needs no capability. Every loop is bounded in count and time, and
 * every socket is closed. Built with AddressSanitizer and UBSan:
 *
 *   cc -g -O1 -std=gnu11 -fsanitize=address,undefined -ISources/CRelayCore/include \
 *     -ISources/CRelayCore Sources/CRelayCore/shard.c Tests/CoreTests/shard_tests.c -o /tmp/shard_tests
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "relay_core.h"
#include "wire.h"
#include "shard.h"
#include "check.h"

#define MAX_MEMBERS 16
#define CLIENTS 8
#define N_IDS 500
#define FILLER 28

/* ---- helpers ---- */

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rnd(void) { /* xorshift64*: fixed seed, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* A valid device ID of `len` characters: [a-z0-9-], not starting or ending with '-'. */
static void random_id(char *out, size_t len) {
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    static const char all[] = "abcdefghijklmnopqrstuvwxyz0123456789-";
    for (size_t i = 0; i < len; i++) {
        int edge = i == 0 || i == len - 1;
        out[i] = edge ? alnum[rnd() % 36] : all[rnd() % 37];
    }
    out[len] = 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- (a) rl_shard_of and rl_shard_of_source as functions ---- */

static void test_shard_of_properties(void) {
    char id[RL_ID_MAX + 1];
    /* Deterministic and in range. */
    int det_ok = 1, range_ok = 1;
    for (int k = 0; k < 2000; k++) {
        size_t len = 1 + rnd() % RL_ID_MAX;
        random_id(id, len);
        uint32_t seed = rnd(), n = 1 + rnd() % 64;
        uint32_t a = rl_shard_of(seed, id, len, n), b = rl_shard_of(seed, id, len, n);
        if (a != b) det_ok = 0;
        if (a >= n) range_ok = 0;
    }
    CHECK(det_ok);
    CHECK(range_ok);
    /* One loop (or none) owns everything. */
    int one_ok = 1;
    for (int k = 0; k < 1000; k++) {
        size_t len = 1 + rnd() % RL_ID_MAX;
        random_id(id, len);
        if (rl_shard_of(rnd(), id, len, 1) != 0 || rl_shard_of(rnd(), id, len, 0) != 0) one_ok = 0;
    }
    CHECK(one_ok);
    /* Known values: the function must not drift (the BPF program is checked against it below). */
    CHECK(rl_shard_of(0, "a", 1, 1) == 0);
    CHECK(rl_shard_of(0, "cam-1", 5, 16) == rl_shard_of(0, "cam-1", 5, 16));
    CHECK(rl_shard_of(0, "cam-1", 5, 2) != rl_shard_of(0, "cam-2", 5, 2) ||
          rl_shard_of(0, "cam-1", 5, 16) != rl_shard_of(0, "cam-2", 5, 16));
    /* A different seed changes the mapping: for n=16 about 15/16 of IDs move, for n=2 half. */
    for (uint32_t n = 2; n <= 16; n *= 8) {
        int moved = 0, total = 4000;
        uint32_t s1 = 0x12345678u, s2 = 0x9abcdef0u;
        for (int k = 0; k < total; k++) {
            size_t len = 1 + rnd() % RL_ID_MAX;
            random_id(id, len);
            moved += rl_shard_of(s1, id, len, n) != rl_shard_of(s2, id, len, n);
        }
        double expect = 1.0 - 1.0 / n;
        double frac = (double)moved / total;
        CHECK(frac > expect - 0.05 && frac < expect + 0.05);
    }
    /* Seeds differing in one bit change the mapping too. */
    {
        int moved = 0;
        for (int k = 0; k < 1000; k++) {
            size_t len = 1 + rnd() % RL_ID_MAX;
            random_id(id, len);
            moved += rl_shard_of(0x1000, id, len, 16) != rl_shard_of(0x1001, id, len, 16);
        }
        CHECK(moved > 850);
    }
    /* Balance over 100,000 random valid IDs. */
    static const uint32_t ns[] = {2, 3, 4, 16};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        uint32_t n = ns[t], counts[MAX_MEMBERS] = {0};
        uint32_t seed = rnd();
        const int total = 100000;
        for (int k = 0; k < total; k++) {
            size_t len = 1 + rnd() % RL_ID_MAX;
            random_id(id, len);
            counts[rl_shard_of(seed, id, len, n)]++;
        }
        uint32_t max = 0, min = UINT32_MAX;
        for (uint32_t i = 0; i < n; i++) {
            if (counts[i] > max) max = counts[i];
            if (counts[i] < min) min = counts[i];
        }
        double mean = (double)total / n;
        printf("  balance n=%u: max/mean %.4f, min/mean %.4f\n", n, max / mean, min / mean);
        CHECK(max / mean <= 1.05);
        CHECK(min / mean >= 0.95);
    }
    /* Balance of sequential IDs (cam-0 .. cam-99999), the way fleets are often named. */
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        uint32_t n = ns[t], counts[MAX_MEMBERS] = {0};
        const int total = 100000;
        for (int k = 0; k < total; k++) {
            int len = snprintf(id, sizeof id, "cam-%d", k);
            counts[rl_shard_of(0x5eed, id, (size_t)len, n)]++;
        }
        uint32_t max = 0;
        for (uint32_t i = 0; i < n; i++)
            if (counts[i] > max) max = counts[i];
        CHECK(max / ((double)total / n) <= 1.05);
    }
    /* rl_shard_of_source: deterministic, in range, n=1 -> 0, and it spreads 127.0.0.x. */
    {
        int ok = 1;
        uint32_t seen = 0;
        for (uint32_t x = 0; x < 256; x++) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000000u | x)};
            uint32_t s = rl_shard_of_source((struct sockaddr *)&a, 4);
            a.sin_port = htons(1234); /* the port never matters */
            if (s >= 4 || s != rl_shard_of_source((struct sockaddr *)&a, 4)) ok = 0;
            if (rl_shard_of_source((struct sockaddr *)&a, 1) != 0) ok = 0;
            seen |= 1u << s;
        }
        CHECK(ok);
        CHECK(seen == 0xf);
        struct sockaddr_in6 b = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        CHECK(rl_shard_of_source((struct sockaddr *)&b, 2) < 2);
        CHECK(rl_shard_of_source((struct sockaddr *)&b, 1) == 0);
    }
}

/* ---- (b) UDP groups steered by device ID ---- */

static int udp_socket(int family) {
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1, buf = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    return fd;
}

/* n sockets in one group on 127.0.0.1 (or [::1]); the port in *port. 0, or -1 (all closed). */
static int make_udp_group(int family, int *fds, uint32_t n, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    }
    for (uint32_t i = 0; i < n; i++) fds[i] = -1;
    for (uint32_t i = 0; i < n; i++) {
        fds[i] = udp_socket(family);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&ss, sl) != 0) goto fail;
        if (i == 0) {
            socklen_t l = sizeof ss;
            if (getsockname(fds[0], (struct sockaddr *)&ss, &l) != 0) goto fail;
        }
    }
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
fail:
    perror("udp group");
    for (uint32_t i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
    return -1;
}

static void close_all(int *fds, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
}

/* A datagram: magic, version, type, ID length, ID, then FILLER bytes starting with `seq`. */
static size_t build_dgram(uint8_t *out, uint8_t type, const char *id, size_t len, uint32_t seq) {
    size_t k = 0;
    out[k++] = RL_MAGIC;
    out[k++] = RL_VERSION;
    out[k++] = type;
    out[k++] = (uint8_t)len;
    memcpy(out + k, id, len);
    k += len;
    memcpy(out + k, &seq, sizeof seq);
    for (size_t i = sizeof seq; i < FILLER; i++) out[k + i] = (uint8_t)(0xa0 + i);
    return k + FILLER;
}

typedef struct {
    char id[RL_ID_MAX + 1];
    size_t len;
    uint32_t want;     /* member rl_shard_of names */
    int got;           /* member it arrived at, -1 if none yet */
    int times;         /* how many times it arrived */
} sent_dgram;

/* Receives everything pending on the group until `expect` datagrams came in or `timeout`
 * seconds passed. Each is handed to `on` with the member index. Returns the count. */
typedef void (*recv_fn)(void *ctx, uint32_t member, const uint8_t *buf, ssize_t len);
static int drain(int *fds, uint32_t n, int expect, double timeout, recv_fn on, void *ctx) {
    struct pollfd pf[MAX_MEMBERS];
    uint8_t buf[2048];
    int got = 0;
    double end = now_s() + timeout;
    for (int rounds = 0; rounds < 100000 && (expect < 0 || got < expect); rounds++) {
        double left = end - now_s();
        if (left <= 0) break;
        for (uint32_t i = 0; i < n; i++) pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        int ms = (int)(left * 1000) + 1;
        if (ms > 50) ms = 50;
        int r = poll(pf, n, ms);
        if (r < 0 && errno != EINTR) break;
        for (uint32_t i = 0; i < n; i++) {
            if (!(pf[i].revents & POLLIN)) continue;
            for (int b = 0; b < 1024; b++) {
                ssize_t l = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
                if (l < 0) break;
                got++;
                on(ctx, i, buf, l);
            }
        }
    }
    return got;
}

typedef struct {
    sent_dgram *d;
    int n_sent;
    int unknown; /* arrivals that match no datagram sent */
} valid_ctx;

static void on_valid(void *p, uint32_t member, const uint8_t *buf, ssize_t len) {
    valid_ctx *c = p;
    uint32_t seq;
    if (len < 4 || buf[0] != RL_MAGIC || len != 4 + buf[3] + FILLER) {
        c->unknown++;
        return;
    }
    memcpy(&seq, buf + 4 + buf[3], sizeof seq);
    if (seq >= (uint32_t)c->n_sent || c->d[seq].len != buf[3] || memcmp(c->d[seq].id, buf + 4, buf[3]) != 0) {
        c->unknown++;
        return;
    }
    c->d[seq].got = (int)member;
    c->d[seq].times++;
}

typedef struct {
    uint32_t per_member[MAX_MEMBERS];
} count_ctx;

static void on_count(void *p, uint32_t member, const uint8_t *buf, ssize_t len) {
    (void)buf;
    (void)len;
    ((count_ctx *)p)->per_member[member]++;
}

/* Sends `n_sent` well-formed datagrams from the clients in batches and checks each landed on
 * its member. Returns the number misrouted + lost + duplicated (0 when all is well). */
static int send_and_check(int *fds, uint32_t n, int *clients, const struct sockaddr *to, socklen_t tolen,
                          sent_dgram *d, int n_sent, uint32_t *per_member) {
    valid_ctx c = {d, n_sent, 0};
    const int batch = 50;
    uint8_t buf[4 + RL_ID_MAX + FILLER];
    for (int start = 0; start < n_sent; start += batch) {
        int end = start + batch < n_sent ? start + batch : n_sent;
        for (int k = start; k < end; k++) {
            size_t l = build_dgram(buf, (uint8_t)(1 + k % 10), d[k].id, d[k].len, (uint32_t)k);
            /* a full socket buffer on loopback is EAGAIN: retry a bounded number of times */
            for (int tries = 0; tries < 100; tries++) {
                if (sendto(clients[k % CLIENTS], buf, l, 0, to, tolen) == (ssize_t)l) break;
                usleep(1000);
            }
        }
        drain(fds, n, end - start, 2.0, on_valid, &c);
    }
    /* Anything late (or duplicated) shows up here. */
    drain(fds, n, -1, 0.05, on_valid, &c);
    int bad = 0, misrouted = 0, lost = 0, dup = 0;
    for (int k = 0; k < n_sent; k++) {
        if (d[k].times == 0) lost++;
        else if (d[k].times > 1) dup++;
        else if ((uint32_t)d[k].got != d[k].want) misrouted++;
        else per_member[d[k].got]++;
    }
    bad = misrouted + lost + dup + c.unknown;
    if (bad) fprintf(stderr, "  n=%u: %d misrouted, %d lost, %d duplicated, %d unknown\n", n, misrouted, lost, dup, c.unknown);
    return bad;
}

static int open_clients(int family, int *clients) {
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (clients[i] < 0) {
            close_all(clients, (uint32_t)i);
            return -1;
        }
    }
    return 0;
}

/* Malformed datagrams: shorter than 4 bytes, or with an ID length past the end. Each must
 * reach member 0 or be dropped; afterwards the group still routes well-formed ones. */
static void malformed_case(int *fds, uint32_t n, int *clients, const struct sockaddr *to, socklen_t tolen, uint32_t seed) {
    uint8_t buf[256];
    int sent = 0;
    for (size_t l = 0; l < 4; l++) { /* 0..3 bytes */
        memset(buf, 0, sizeof buf);
        buf[0] = RL_MAGIC;
        if (l > 1) buf[1] = RL_VERSION;
        if (l > 2) buf[2] = RL_T_NOTIFY_A;
        for (int c = 0; c < CLIENTS; c++) sent += sendto(clients[c], buf, l, 0, to, tolen) == (ssize_t)l;
    }
    /* ID length 1..63 claimed, fewer bytes present (including none). */
    for (uint32_t claimed = 1; claimed <= RL_ID_MAX; claimed++) {
        for (uint32_t have = 0; have < claimed; have += 1 + claimed / 4) {
            buf[0] = RL_MAGIC;
            buf[1] = RL_VERSION;
            buf[2] = RL_T_NOTIFY_A;
            buf[3] = (uint8_t)claimed;
            random_id((char *)buf + 4, have ? have : 1);
            sent += sendto(clients[claimed % CLIENTS], buf, 4 + have, 0, to, tolen) == (ssize_t)(4 + have);
        }
    }
    /* ID length 64..255 claimed, the datagram ends before byte 4+63 (so before the last ID
     * byte the program would read). */
    for (uint32_t claimed = 64; claimed <= 255; claimed += 7) {
        uint32_t have = rnd() % RL_ID_MAX; /* 0..62 bytes after the header */
        buf[3] = (uint8_t)claimed;
        random_id((char *)buf + 4, have ? have : 1);
        sent += sendto(clients[claimed % CLIENTS], buf, 4 + have, 0, to, tolen) == (ssize_t)(4 + have);
    }
    count_ctx c = {{0}};
    int got = drain(fds, n, sent, 1.0, on_count, &c);
    drain(fds, n, -1, 0.05, on_count, &c);
    uint32_t elsewhere = 0;
    for (uint32_t i = 1; i < n; i++) elsewhere += c.per_member[i];
    printf("  malformed n=%u: %d sent, %d at member 0, %u elsewhere\n", n, sent, c.per_member[0], elsewhere);
    (void)got;
    CHECK(elsewhere == 0);

    /* An ID length of 0 is no ID: member 0, which drops it as malformed. */
    {
        buf[0] = RL_MAGIC;
        buf[1] = RL_VERSION;
        buf[2] = RL_T_NOTIFY_A;
        buf[3] = 0;
        memset(buf + 4, 'x', FILLER);
        count_ctx z = {{0}};
        int s = sendto(clients[0], buf, 4 + FILLER, 0, to, tolen) == 4 + FILLER;
        drain(fds, n, s, 1.0, on_count, &z);
        CHECK(z.per_member[0] == (uint32_t)s);
    }

    /* The group still routes well-formed datagrams afterwards. */
    sent_dgram d[64];
    uint32_t per[MAX_MEMBERS] = {0};
    for (int k = 0; k < 64; k++) {
        d[k].len = 1 + (size_t)k % RL_ID_MAX;
        random_id(d[k].id, d[k].len);
        d[k].want = rl_shard_of(seed, d[k].id, d[k].len, n);
        d[k].got = -1;
        d[k].times = 0;
    }
    CHECK(send_and_check(fds, n, clients, to, tolen, d, 64, per) == 0);
}

/* An ID length over 63 in a datagram long enough for 63 ID bytes: the program reads 63 bytes
 * (as rl_shard_of clamps), its loads succeed, and the datagram goes to the member of the
 * first 63 bytes, not to member 0. The receiving loop drops it as malformed (an ID length
 * over 63 is invalid), so no loop acts on it; shard.h's "too short to carry an ID ... member
 * 0" holds only for datagrams shorter than 4 + min(n, 63). Checked as it behaves. */
static void overlong_length_case(int *fds, uint32_t n, int *clients, const struct sockaddr *to, socklen_t tolen, uint32_t seed) {
    uint8_t buf[4 + 255];
    char id[RL_ID_MAX + 1];
    int sent = 0, at_zero = 0, at_hashed = 0, other = 0, not_zero = 0;
    for (int k = 0; k < 32; k++) {
        uint32_t claimed = 64 + (uint32_t)rnd() % 192;
        random_id(id, RL_ID_MAX);
        buf[0] = RL_MAGIC;
        buf[1] = RL_VERSION;
        buf[2] = RL_T_NOTIFY_A;
        buf[3] = (uint8_t)claimed;
        memcpy(buf + 4, id, RL_ID_MAX);
        size_t l = 4 + RL_ID_MAX + (size_t)(rnd() % (claimed - RL_ID_MAX)); /* still short of 4+claimed */
        for (size_t i = 4 + RL_ID_MAX; i < l; i++) buf[i] = 'f';
        if (sendto(clients[k % CLIENTS], buf, l, 0, to, tolen) != (ssize_t)l) continue;
        sent++;
        count_ctx c = {{0}};
        drain(fds, n, 1, 1.0, on_count, &c);
        uint32_t want = rl_shard_of(seed, id, claimed, n); /* == rl_shard_of(seed, id, 63, n) */
        for (uint32_t i = 0; i < n; i++) {
            if (!c.per_member[i]) continue;
            not_zero += i != 0;
            if (i == want) at_hashed++;
            else if (i == 0) at_zero++;
            else other++;
        }
    }
    printf("  overlong ID length n=%u: %d sent, %d at the member of its first 63 bytes, %d at member 0 only, %d elsewhere\n",
           n, sent, at_hashed, at_zero, other);
    CHECK(other == 0);
    /* An ID length over 63 is no ID: member 0, which drops it as malformed. */
    if (not_zero) fprintf(stderr, "  n=%u: %d datagrams with an ID length over 63 reached a member other than 0\n", n, not_zero);
    CHECK(not_zero == 0);
    CHECK(rl_shard_of(seed, "abc", 3, n) == rl_shard_of(seed, "abc", 3, n));
}

static void udp_group_case(int family, uint32_t n) {
    int fds[MAX_MEMBERS], clients[CLIENTS];
    uint16_t port;
    if (make_udp_group(family, fds, n, &port) != 0) {
        CHECK(!"udp group");
        return;
    }
    if (open_clients(family, clients) != 0) {
        CHECK(!"udp clients");
        close_all(fds, n);
        return;
    }
    uint32_t seed = rnd();
    int rc = rl_shard_attach_udp(fds[0], seed, n);
    if (rc != 0) perror("rl_shard_attach_udp");
    CHECK(rc == 0);

    struct sockaddr_storage to;
    socklen_t tolen;
    memset(&to, 0, sizeof to);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&to;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons(port);
        tolen = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&to;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(port);
        tolen = sizeof *a;
    }

    int n_ids = family == AF_INET ? N_IDS : 100;
    sent_dgram *d = calloc((size_t)n_ids, sizeof *d);
    for (int k = 0; k < n_ids; k++) {
        d[k].len = 1 + (size_t)k % RL_ID_MAX; /* every length 1..63, ~8 times each */
        random_id(d[k].id, d[k].len);
        d[k].want = rl_shard_of(seed, d[k].id, d[k].len, n);
        d[k].got = -1;
    }
    uint32_t per[MAX_MEMBERS] = {0};
    double t0 = now_s();
    int bad = send_and_check(fds, n, clients, (struct sockaddr *)&to, tolen, d, n_ids, per);
    CHECK(bad == 0);
    int every = 1;
    printf("  udp %s n=%u: %d datagrams, %d bad, per member:", family == AF_INET ? "127.0.0.1" : "[::1]", n, n_ids, bad);
    for (uint32_t i = 0; i < n; i++) {
        printf(" %u", per[i]);
        if (!per[i]) every = 0;
    }
    printf(" (%.2f s)\n", now_s() - t0);
    CHECK(every);
    free(d);

    if (family == AF_INET) {
        malformed_case(fds, n, clients, (struct sockaddr *)&to, tolen, seed);
        overlong_length_case(fds, n, clients, (struct sockaddr *)&to, tolen, seed);
    }
    close_all(clients, CLIENTS);
    close_all(fds, n);
}

/* Without a program the kernel spreads by the 4-tuple hash; attaching to a group of one and
 * with n = 0 (a modulo by zero the verifier refuses) behave as documented. */
static void udp_attach_edges(void) {
    int fds[1];
    uint16_t port;
    if (make_udp_group(AF_INET, fds, 1, &port) != 0) {
        CHECK(!"udp group of one");
        return;
    }
    CHECK(rl_shard_attach_udp(fds[0], 1, 1) == 0);
    errno = 0;
    CHECK(rl_shard_attach_udp(fds[0], 1, 0) == -1); /* BPF_MOD by a constant 0 is rejected */
    CHECK(rl_shard_attach_terminal(fds[0], AF_INET, 0) == -1);
    close(fds[0]);
}

/* ---- (c) TCP listeners steered by source address ---- */

static int make_tcp_group(int family, int *fds, uint32_t n, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    }
    for (uint32_t i = 0; i < n; i++) fds[i] = -1;
    for (uint32_t i = 0; i < n; i++) {
        int one = 1;
        fds[i] = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) goto fail;
        setsockopt(fds[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        setsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (family == AF_INET6) setsockopt(fds[i], IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fds[i], (struct sockaddr *)&ss, sl) != 0) goto fail;
        if (i == 0) {
            socklen_t l = sizeof ss;
            if (getsockname(fds[0], (struct sockaddr *)&ss, &l) != 0) goto fail;
        }
    }
    /* The group's order is the order of listen(). */
    for (uint32_t i = 0; i < n; i++)
        if (listen(fds[i], 128) != 0) goto fail;
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
fail:
    perror("tcp group");
    close_all(fds, n);
    return -1;
}

/* Accepts up to `expect` connections within `timeout` s; for each, its listener and peer. */
static int accept_all(int *fds, uint32_t n, int expect, double timeout, int *listener_of, struct sockaddr_storage *peer_of) {
    struct pollfd pf[MAX_MEMBERS];
    int got = 0;
    double end = now_s() + timeout;
    for (int rounds = 0; rounds < 10000 && got < expect && now_s() < end; rounds++) {
        for (uint32_t i = 0; i < n; i++) pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        if (poll(pf, n, 50) <= 0) continue;
        for (uint32_t i = 0; i < n && got < expect; i++) {
            if (!(pf[i].revents & POLLIN)) continue;
            for (int b = 0; b < 256 && got < expect; b++) {
                socklen_t l = sizeof peer_of[got];
                int c = accept4(fds[i], (struct sockaddr *)&peer_of[got], &l, SOCK_CLOEXEC);
                if (c < 0) break;
                close(c);
                listener_of[got++] = (int)i;
            }
        }
    }
    return got;
}

static int connect_from(int family, const void *src_addr, uint16_t port) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_storage src, dst;
    socklen_t sl;
    memset(&src, 0, sizeof src);
    memset(&dst, 0, sizeof dst);
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&src, *d = (struct sockaddr_in *)&dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, src_addr, 4);
        d->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        d->sin_port = htons(port);
        sl = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&src, *d = (struct sockaddr_in6 *)&dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, src_addr, 16);
        d->sin6_addr = in6addr_loopback;
        d->sin6_port = htons(port);
        sl = sizeof *s;
    }
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds a blocking connect */
    if (bind(fd, (struct sockaddr *)&src, sl) != 0 || connect(fd, (struct sockaddr *)&dst, sl) != 0) {
        perror("connect_from");
        close(fd);
        return -1;
    }
    return fd;
}

#define TCP_SOURCES 19 /* 127.0.0.2 .. 127.0.0.20 */
#define TCP_PER_SOURCE 3

static void tcp_group_case(uint32_t n) {
    int fds[MAX_MEMBERS];
    uint16_t port;
    if (make_tcp_group(AF_INET, fds, n, &port) != 0) {
        CHECK(!"tcp group");
        return;
    }
    int rc = rl_shard_attach_terminal(fds[0], AF_INET, n);
    if (rc != 0) perror("rl_shard_attach_terminal");
    CHECK(rc == 0);
    enum { TOTAL = TCP_SOURCES * TCP_PER_SOURCE };
    int clients[TOTAL], made = 0;
    for (int r = 0; r < TCP_PER_SOURCE; r++) {
        for (uint32_t x = 2; x <= 20; x++) {
            uint32_t a = htonl(0x7f000000u | x);
            int c = connect_from(AF_INET, &a, port);
            if (c >= 0) clients[made++] = c;
        }
    }
    CHECK(made == TOTAL);
    int listener_of[TOTAL];
    struct sockaddr_storage peer_of[TOTAL];
    int got = accept_all(fds, n, made, 2.0, listener_of, peer_of);
    CHECK(got == made);
    int wrong = 0;
    uint32_t per[MAX_MEMBERS] = {0};
    for (int k = 0; k < got; k++) {
        uint32_t want = rl_shard_of_source((struct sockaddr *)&peer_of[k], n);
        if ((uint32_t)listener_of[k] != want) {
            char s[64];
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer_of[k])->sin_addr, s, sizeof s);
            fprintf(stderr, "  tcp n=%u: %s accepted by %d, want %u\n", n, s, listener_of[k], want);
            wrong++;
        }
        per[listener_of[k]]++;
    }
    CHECK(wrong == 0);
    printf("  tcp 127.0.0.2-20 n=%u: %d connections, %d accepted, %d on the wrong listener, per listener:", n, made, got, wrong);
    for (uint32_t i = 0; i < n; i++) printf(" %u", per[i]);
    printf("\n");
    close_all(clients, (uint32_t)made);
    close_all(fds, n);
}

static int have_ipv6_loopback(void) {
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void tcp6_case(void) {
    int fds[2];
    uint16_t port;
    if (make_tcp_group(AF_INET6, fds, 2, &port) != 0) {
        CHECK(!"tcp6 group");
        return;
    }
    int rc = rl_shard_attach_terminal(fds[0], AF_INET6, 2);
    if (rc != 0) perror("rl_shard_attach_terminal v6");
    CHECK(rc == 0);
    enum { TOTAL = 8 };
    int clients[TOTAL], made = 0;
    for (int k = 0; k < TOTAL; k++) {
        int c = connect_from(AF_INET6, &in6addr_loopback, port);
        if (c >= 0) clients[made++] = c;
    }
    CHECK(made == TOTAL);
    int listener_of[TOTAL];
    struct sockaddr_storage peer_of[TOTAL];
    int got = accept_all(fds, 2, made, 2.0, listener_of, peer_of);
    CHECK(got == made);
    struct sockaddr_in6 lo = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    uint32_t want = rl_shard_of_source((struct sockaddr *)&lo, 2);
    int wrong = 0;
    for (int k = 0; k < got; k++) wrong += (uint32_t)listener_of[k] != want ||
                                            rl_shard_of_source((struct sockaddr *)&peer_of[k], 2) != want;
    CHECK(wrong == 0);
    printf("  tcp [::1] n=2: %d connections, %d accepted, all at listener %u: %s\n", made, got, want, wrong ? "no" : "yes");
    close_all(clients, (uint32_t)made);
    close_all(fds, 2);
}

int main(void) {
    test_shard_of_properties();
    static const uint32_t ns[] = {2, 3, 4, 16};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) udp_group_case(AF_INET, ns[t]);
    udp_attach_edges();
    tcp_group_case(2);
    tcp_group_case(4);
    if (have_ipv6_loopback()) {
        udp_group_case(AF_INET6, 2);
        tcp6_case();
    } else {
        printf("  no [::1]: the IPv6 cases are skipped\n");
    }
    printf("shard: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
