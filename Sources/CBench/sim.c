/* sim.c: the simulated devices: keys, sockets on 127.10.x.y, registration. */
#include "bench_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include "relay_core.h"

typedef struct keygen_job {
    rb_sim *sim;
    uint32_t from, to;
    int failed;
} keygen_job;

static void *keygen_thread(void *arg) {
    keygen_job *j = arg;
    uint8_t secret[32];
    for (uint32_t i = j->from; i < j->to; i++) {
        rb_device_secret(i, secret);
        /* The relay's own derivation, so that the bench and the relay agree by construction. */
        if (rl_derive_device_key(secret, j->sim->keys + (size_t)i * 16) != 0) j->failed = 1;
    }
    return NULL;
}

/* The source address of socket `i`: 127.10.c.d, d in 1..250. */
static uint32_t sock_addr(uint32_t i) { return (127u << 24) | (10u << 16) | ((i / 250) << 8) | (1 + i % 250); }

rb_sim *rb_sim_new(uint32_t total, uint32_t live, uint32_t sockets, uint16_t relay_udp_port, int threads,
                   char *err, size_t err_len) {
    if (total == 0 || total > RB_MAX_DEVICES || live > total || sockets == 0 || sockets > 60000) {
        rb_set_err(err, err_len, "bad simulator sizes: total %u live %u sockets %u", total, live, sockets);
        return NULL;
    }
    rb_sim *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->total = total;
    s->live = live;
    s->nsock = live < sockets ? (live ? live : 1) : sockets;
    s->per_sock = live ? (live + s->nsock - 1) / s->nsock : 1;
    s->nsock = live ? (live + s->per_sock - 1) / s->per_sock : 1;
    s->keys = malloc((size_t)total * 16);
    s->last_sid = calloc(live ? live : 1, sizeof(uint64_t));
    s->fds = malloc(s->nsock * sizeof(int));
    s->epfd = -1;
    s->web_lfd = -1;
    if (!s->keys || !s->last_sid || !s->fds) goto fail_alloc;
    for (uint32_t i = 0; i < s->nsock; i++) s->fds[i] = -1;
    s->relay.sin_family = AF_INET;
    s->relay.sin_port = htons(relay_udp_port);
    s->relay.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    atomic_store(&s->counter, 1);

    double t0 = rb_now();
    if (threads < 1) threads = 1;
    if (threads > 16) threads = 16;
    pthread_t th[16];
    keygen_job jobs[16];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (keygen_job){s, (uint32_t)((uint64_t)total * t / threads), (uint32_t)((uint64_t)total * (t + 1) / threads), 0};
        pthread_create(&th[t], NULL, keygen_thread, &jobs[t]);
    }
    int failed = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        failed |= jobs[t].failed;
    }
    s->keygen_s = rb_now() - t0;
    if (failed) {
        rb_set_err(err, err_len, "device key derivation failed");
        rb_sim_free(s);
        return NULL;
    }

    for (uint32_t i = 0; i < s->nsock; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rb_set_err(err, err_len, "socket: %s", strerror(errno));
            rb_sim_free(s);
            return NULL;
        }
        s->fds[i] = fd;
        int buf = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(sock_addr(i))};
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            rb_set_err(err, err_len, "bind 127.10.%u.%u: %s", i / 250, 1 + i % 250, strerror(errno));
            rb_sim_free(s);
            return NULL;
        }
    }
    return s;
fail_alloc:
    rb_set_err(err, err_len, "out of memory for %u devices", total);
    rb_sim_free(s);
    return NULL;
}

void rb_sim_free(rb_sim *s) {
    if (!s) return;
    rb_load_stop(s);
    rb_sim_stop(s);
    if (s->fds)
        for (uint32_t i = 0; i < s->nsock; i++)
            if (s->fds[i] >= 0) close(s->fds[i]);
    free(s->fds);
    free(s->keys);
    free(s->last_sid);
    free(s);
}

const uint8_t *rb_sim_keys(const rb_sim *s) { return s->keys; }
double rb_sim_keygen_seconds(const rb_sim *s) { return s->keygen_s; }
void rb_sim_set_relay_port(rb_sim *s, uint16_t port) { s->relay.sin_port = htons(port); }
void rb_sim_set_token_key(rb_sim *s, const uint8_t key[32]) { memcpy(s->token_key, key, 32); }

/* ---- registration ---- */

enum { REG_IDLE = 0, REG_WAIT = 1, REG_DONE = 2 };

typedef struct reg_state {
    uint8_t *state;      /* per live device */
    uint64_t *nonce;     /* per live device: the nonce outstanding */
    float *sent_at;      /* per live device: seconds since start of its last request */
    uint32_t *ring;      /* FIFO of outstanding devices, oldest first */
    uint32_t ring_cap, head, count;
} reg_state;

static int send_batch(int fd, const struct sockaddr_in *to, uint8_t (*bufs)[RB_DGRAM_MAX], const size_t *lens, int n) {
    struct mmsghdr m[RB_BATCH];
    struct iovec iov[RB_BATCH];
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = lens[i];
        memset(&m[i], 0, sizeof m[i]);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = (void *)to;
        m[i].msg_hdr.msg_namelen = sizeof *to;
    }
    int done = 0, tries = 0;
    while (done < n && tries++ < 1000) {
        int r = sendmmsg(fd, m + done, (unsigned)(n - done), 0);
        if (r > 0) done += r;
        else if (r < 0 && errno != EAGAIN && errno != EINTR && errno != ENOBUFS) break;
        else usleep(50);
    }
    return done;
}

static void reg_push(reg_state *r, uint32_t dev) {
    r->ring[(r->head + r->count) % r->ring_cap] = dev;
    r->count++;
}

int rb_sim_register(rb_sim *s, uint32_t window, double timeout_s, rb_reg_result *out) {
    memset(out, 0, sizeof *out);
    if (window < RB_BATCH) window = RB_BATCH;
    reg_state r = {0};
    r.state = calloc(s->live ? s->live : 1, 1);
    r.nonce = calloc(s->live ? s->live : 1, sizeof(uint64_t));
    r.sent_at = calloc(s->live ? s->live : 1, sizeof(float));
    r.ring_cap = window + RB_BATCH;
    r.ring = calloc(r.ring_cap, sizeof(uint32_t));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int rc = -1;
    if (!r.state || !r.nonce || !r.sent_at || !r.ring || ep < 0) goto done;
    for (uint32_t i = 0; i < s->nsock; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fds[i], &ev);
    }
    static __thread uint8_t bufs[RB_BATCH][RB_DGRAM_MAX];
    static __thread uint8_t rbufs[RB_BATCH][RB_DGRAM_MAX];
    size_t lens[RB_BATCH];
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(rb_now() * 1e9);
    uint32_t next = 0, registered = 0;
    double t0 = rb_now(), last_send = t0;
    struct epoll_event evs[64];

    while (registered < s->live) {
        double now = rb_now();
        if (now - t0 > timeout_s) break;
        /* New requests: one batch per call from one socket, while the window has room. */
        while (next < s->live && r.count + RB_BATCH <= window) {
            uint32_t sock = rb_sock_of(s, next);
            int n = 0;
            while (n < RB_BATCH && next < s->live && rb_sock_of(s, next) == sock) {
                uint8_t body[24] = {0}; /* nonce || counter (answered once each) || zeros */
                r.nonce[next] = rb_xorshift(&rng);
                rb_put64(body, r.nonce[next]);
                rb_put64(body + 8, atomic_fetch_add(&s->counter, 1));
                lens[n] = rb_build(s, next, RB_T_PERIOD_REQUEST, body, sizeof body, bufs[n]);
                r.state[next] = REG_WAIT;
                r.sent_at[next] = (float)(now - t0);
                reg_push(&r, next);
                next++, n++;
            }
            out->requests_sent += (uint64_t)send_batch(s->fds[sock], &s->relay, bufs, lens, n);
            last_send = now;
        }
        /* Retransmit the oldest outstanding after 1 s (the protocol's first backoff step). */
        int resent = 0;
        while (r.count && resent < RB_BATCH) {
            uint32_t dev = r.ring[r.head];
            if (r.state[dev] == REG_DONE) {
                r.head = (r.head + 1) % r.ring_cap;
                r.count--;
                continue;
            }
            if (now - t0 - r.sent_at[dev] < 1.0) break;
            r.head = (r.head + 1) % r.ring_cap;
            r.count--;
            uint8_t body[24] = {0};
            r.nonce[dev] = rb_xorshift(&rng);
            rb_put64(body, r.nonce[dev]);
            rb_put64(body + 8, atomic_fetch_add(&s->counter, 1));
            size_t len = rb_build(s, dev, RB_T_PERIOD_REQUEST, body, sizeof body, bufs[0]);
            r.sent_at[dev] = (float)(now - t0);
            reg_push(&r, dev);
            out->requests_sent += (uint64_t)send_batch(s->fds[rb_sock_of(s, dev)], &s->relay, bufs, &len, 1);
            out->retransmits++;
            resent++;
        }
        (void)last_send;
        int ne = epoll_wait(ep, evs, 64, 2);
        for (int e = 0; e < ne; e++) {
            uint32_t sock = evs[e].data.u32;
            for (int round = 0; round < 64; round++) {
                struct mmsghdr m[RB_BATCH];
                struct iovec iov[RB_BATCH];
                for (int i = 0; i < RB_BATCH; i++) {
                    iov[i].iov_base = rbufs[i];
                    iov[i].iov_len = RB_DGRAM_MAX;
                    memset(&m[i], 0, sizeof m[i]);
                    m[i].msg_hdr.msg_iov = &iov[i];
                    m[i].msg_hdr.msg_iovlen = 1;
                }
                int n = recvmmsg(s->fds[sock], m, RB_BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0) break;
                int na = 0;
                for (int i = 0; i < n; i++) {
                    int type = 0;
                    int64_t dev = rb_parse_verify(s, rbufs[i], m[i].msg_len, &type);
                    if (dev == RB_ACK) continue; /* the answer to a first NOTIFY_A */
                    if (dev < 0 || type != RB_T_PERIOD_INFO || r.state[dev] != REG_WAIT ||
                        rb_get64(rbufs[i] + 4 + RB_ID_LEN) != r.nonce[dev]) {
                        out->infos_bad++;
                        continue;
                    }
                    const uint8_t *b = rbufs[i] + 4 + RB_ID_LEN;
                    if (!s->epoch) {
                        s->epoch = rb_get32(b + 8);
                        s->period_s = rb_get32(b + 12);
                        s->keepalive_s = rb_get32(b + 16);
                        s->cb_port = rb_get16(b + 20);
                    }
                    r.state[dev] = REG_DONE;
                    registered++;
                    out->infos_ok++;
                    lens[na] = rb_build_notify(s, (uint32_t)dev, RB_T_NOTIFY_A, atomic_fetch_add(&s->counter, 1), bufs[na]);
                    na++;
                }
                if (na) out->notify_a_sent += (uint64_t)send_batch(s->fds[sock], &s->relay, bufs, lens, na);
                if (n < RB_BATCH) break;
            }
        }
    }
    out->seconds = rb_now() - t0;
    out->registered = registered;
    out->epoch = s->epoch;
    out->period_s = s->period_s;
    out->keepalive_s = s->keepalive_s;
    out->callback_port = s->cb_port;
    rc = registered == s->live ? 0 : -1;
done:
    if (ep >= 0) close(ep);
    free(r.state);
    free(r.nonce);
    free(r.sent_at);
    free(r.ring);
    return rc;
}
