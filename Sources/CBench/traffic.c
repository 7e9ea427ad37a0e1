/* traffic.c: notify traffic (precomputed pool, paced background load) and the bare receiver. */
#include "bench_internal.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#define SLOT 48 /* a notify is 32 + RB_ID_LEN = 43 bytes */
_Static_assert(RB_LEN_NOTIFY <= SLOT, "a notify must fit a pool slot");

struct rb_pool {
    uint64_t batches;
    uint8_t *slots;      /* batches * RB_BATCH * SLOT */
    uint32_t *sock;      /* per batch */
    double build_s;
};

typedef struct pool_job {
    rb_sim *sim;
    rb_pool *pool;
    uint64_t from, to, counter0;
    uint32_t b_per_a;
} pool_job;

/* Batch b goes out from socket b % nsock; that socket's q-th batch carries its devices
 * (q*64 + j) mod (devices on the socket). Deterministic, so threads can split batches. */
static void *pool_thread(void *arg) {
    pool_job *j = arg;
    rb_sim *s = j->sim;
    for (uint64_t b = j->from; b < j->to; b++) {
        uint32_t sock = (uint32_t)(b % s->nsock);
        uint64_t q = b / s->nsock;
        uint32_t first = sock * s->per_sock;
        uint32_t range = s->live - first < s->per_sock ? s->live - first : s->per_sock;
        j->pool->sock[b] = sock;
        for (uint32_t k = 0; k < RB_BATCH; k++) {
            uint64_t g = b * RB_BATCH + k;
            uint32_t dev = first + (uint32_t)((q * RB_BATCH + k) % range);
            int type = g % (j->b_per_a + 1) == 0 ? RB_T_NOTIFY_A : RB_T_NOTIFY_B;
            rb_build_notify(s, dev, type, j->counter0 + g, j->pool->slots + g * SLOT);
        }
    }
    return NULL;
}

rb_pool *rb_pool_build(rb_sim *s, uint64_t count, uint32_t b_per_a, int threads) {
    if (!s->live || !s->epoch) return NULL;
    rb_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->batches = (count + RB_BATCH - 1) / RB_BATCH;
    p->slots = malloc(p->batches * RB_BATCH * SLOT);
    p->sock = malloc(p->batches * sizeof(uint32_t));
    if (!p->slots || !p->sock) {
        rb_pool_free(p);
        return NULL;
    }
    double t0 = rb_now();
    uint64_t c0 = atomic_fetch_add(&s->counter, p->batches * RB_BATCH);
    if (threads < 1) threads = 1;
    if (threads > 16) threads = 16;
    pthread_t th[16];
    pool_job jobs[16];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (pool_job){s, p, p->batches * t / threads, p->batches * (t + 1) / threads, c0, b_per_a};
        pthread_create(&th[t], NULL, pool_thread, &jobs[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    p->build_s = rb_now() - t0;
    return p;
}

void rb_pool_free(rb_pool *p) {
    if (!p) return;
    free(p->slots);
    free(p->sock);
    free(p);
}

uint64_t rb_pool_count(const rb_pool *p) { return p->batches * RB_BATCH; }
double rb_pool_build_seconds(const rb_pool *p) { return p->build_s; }

/* Sends the batches whose socket is `part` modulo `parts`, in pool order: a device sends from
 * one socket only, so each device's counters still arrive in increasing order. */
static void blast_part(rb_sim *s, const rb_pool *p, uint16_t port, double max_seconds, uint32_t part, uint32_t parts,
                       rb_blast_result *out) {
    memset(out, 0, sizeof *out);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct mmsghdr m[RB_BATCH];
    struct iovec iov[RB_BATCH];
    for (int i = 0; i < RB_BATCH; i++) {
        memset(&m[i], 0, sizeof m[i]);
        iov[i].iov_len = RB_LEN_NOTIFY;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &to;
        m[i].msg_hdr.msg_namelen = sizeof to;
    }
    double t0 = rb_now(), deadline = t0 + max_seconds;
    uint64_t mine = 0;
    for (uint64_t b = 0; b < p->batches; b++) {
        if (p->sock[b] % parts != part) continue;
        if ((mine++ & 15) == 0 && rb_now() > deadline) break;
        for (int i = 0; i < RB_BATCH; i++) iov[i].iov_base = p->slots + (b * RB_BATCH + i) * SLOT;
        int fd = s->fds[p->sock[b]];
        int done = 0, tries = 0;
        while (done < RB_BATCH && tries++ < 100) {
            int r = sendmmsg(fd, m + done, RB_BATCH - done, 0);
            if (r > 0) done += r;
            else if (r < 0 && errno != EAGAIN && errno != EINTR && errno != ENOBUFS) break;
        }
        out->sent += (uint64_t)done;
        out->send_errors += (uint64_t)(RB_BATCH - done);
    }
    out->seconds = rb_now() - t0;
}

int rb_blast(rb_sim *s, const rb_pool *p, uint16_t port, double max_seconds, rb_blast_result *out) {
    blast_part(s, p, port, max_seconds, 0, 1, out);
    return 0;
}

typedef struct blast_job {
    rb_sim *sim;
    const rb_pool *pool;
    uint16_t port;
    double max_seconds;
    uint32_t part, parts;
    rb_blast_result result;
} blast_job;

static void *blast_thread(void *arg) {
    blast_job *j = arg;
    blast_part(j->sim, j->pool, j->port, j->max_seconds, j->part, j->parts, &j->result);
    return NULL;
}

int rb_blast_parallel(rb_sim *s, const rb_pool *p, uint16_t port, double max_seconds, uint32_t senders,
                      rb_blast_result *out) {
    if (senders < 1) senders = 1;
    if (senders > RB_MAX_SENDERS) senders = RB_MAX_SENDERS;
    if (senders > s->nsock) senders = s->nsock;
    if (senders == 1) return rb_blast(s, p, port, max_seconds, out);
    memset(out, 0, sizeof *out);
    pthread_t th[RB_MAX_SENDERS];
    blast_job jobs[RB_MAX_SENDERS];
    uint32_t started = 0;
    for (uint32_t t = 0; t < senders; t++) {
        jobs[t] = (blast_job){.sim = s, .pool = p, .port = port, .max_seconds = max_seconds, .part = t, .parts = senders};
        if (pthread_create(&th[t], NULL, blast_thread, &jobs[t]) != 0) break;
        started++;
    }
    if (started < senders) {
        /* The parts no thread took are sent by this one, so every device still goes out. */
        for (uint32_t t = started; t < senders; t++) blast_part(s, p, port, max_seconds, t, senders, &jobs[t].result);
    }
    for (uint32_t t = 0; t < started; t++) pthread_join(th[t], NULL);
    for (uint32_t t = 0; t < senders; t++) {
        out->sent += jobs[t].result.sent;
        out->send_errors += jobs[t].result.send_errors;
        if (jobs[t].result.seconds > out->seconds) out->seconds = jobs[t].result.seconds;
    }
    return 0;
}

/* ---- paced background load ---- */

static void *load_thread(void *arg) {
    rb_sim *s = arg;
    static __thread uint8_t bufs[RB_BATCH][RB_DGRAM_MAX];
    struct mmsghdr m[RB_BATCH];
    struct iovec iov[RB_BATCH];
    uint64_t g = 0, rng = 0x243f6a8885a308d3ull;
    double t0 = rb_now();
    while (!atomic_load(&s->load_stop)) {
        double now = rb_now();
        uint64_t due = (uint64_t)((now - t0) * s->load_rate);
        if (g >= due) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        /* One batch from one random socket, its devices at random. */
        uint32_t sock = (uint32_t)(rb_xorshift(&rng) % s->nsock);
        uint32_t first = sock * s->per_sock;
        uint32_t range = s->live - first < s->per_sock ? s->live - first : s->per_sock;
        int n = (int)(due - g < RB_BATCH ? due - g : RB_BATCH);
        for (int i = 0; i < n; i++, g++) {
            uint32_t dev = first + (uint32_t)(rb_xorshift(&rng) % range);
            int type = g % (s->load_b_per_a + 1) == 0 ? RB_T_NOTIFY_A : RB_T_NOTIFY_B;
            size_t len = rb_build_notify(s, dev, type, atomic_fetch_add(&s->counter, 1), bufs[i]);
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = len;
            memset(&m[i], 0, sizeof m[i]);
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
            m[i].msg_hdr.msg_name = &s->relay;
            m[i].msg_hdr.msg_namelen = sizeof s->relay;
        }
        int r = sendmmsg(s->fds[sock], m, (unsigned)n, 0);
        if (r > 0) atomic_fetch_add(&s->load_sent, (uint64_t)r);
    }
    return NULL;
}

int rb_load_start(rb_sim *s, double rate, uint32_t b_per_a) {
    if (s->load_running || !s->live || !s->epoch || rate <= 0) return -1;
    s->load_rate = rate;
    s->load_b_per_a = b_per_a;
    atomic_store(&s->load_stop, 0);
    atomic_store(&s->load_sent, 0);
    if (pthread_create(&s->load_thread, NULL, load_thread, s) != 0) return -1;
    s->load_running = 1;
    return 0;
}

uint64_t rb_load_stop(rb_sim *s) {
    if (!s->load_running) return atomic_load(&s->load_sent);
    atomic_store(&s->load_stop, 1);
    pthread_join(s->load_thread, NULL);
    s->load_running = 0;
    return atomic_load(&s->load_sent);
}

/* ---- the bare receiver ---- */

struct rb_bare {
    int fd;
    uint16_t port;
    pthread_t thread;
    _Atomic int stop;
    _Atomic uint64_t count, cpu_ns;
};

static void *bare_thread(void *arg) {
    rb_bare *b = arg;
    static __thread uint8_t bufs[RB_BATCH][256];
    struct mmsghdr m[RB_BATCH];
    struct iovec iov[RB_BATCH];
    struct sockaddr_storage addrs[RB_BATCH];
    clockid_t cid;
    pthread_getcpuclockid(pthread_self(), &cid);
    while (!atomic_load(&b->stop)) {
        /* The same per-call setup the relay does (buffers, source addresses, 64 per call). */
        for (int i = 0; i < RB_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
            m[i].msg_hdr.msg_name = &addrs[i];
            m[i].msg_hdr.msg_namelen = sizeof addrs[i];
        }
        int n = recvmmsg(b->fd, m, RB_BATCH, MSG_WAITFORONE, NULL);
        if (n > 0) atomic_fetch_add_explicit(&b->count, (uint64_t)n, memory_order_relaxed);
        struct timespec ts;
        clock_gettime(cid, &ts);
        atomic_store_explicit(&b->cpu_ns, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec,
                              memory_order_relaxed);
    }
    return NULL;
}

rb_bare *rb_bare_start(char *err, size_t err_len) {
    rb_bare *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int rcvbuf = 8 << 20; /* as the relay asks; the kernel caps both at net.core.rmem_max */
    setsockopt(b->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {0, 50000}; /* wake up to see the stop flag */
    setsockopt(b->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (b->fd < 0 || bind(b->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(b->fd, (struct sockaddr *)&a, &len) != 0) {
        rb_set_err(err, err_len, "bare receiver socket: %s", strerror(errno));
        if (b->fd >= 0) close(b->fd);
        free(b);
        return NULL;
    }
    b->port = ntohs(a.sin_port);
    if (pthread_create(&b->thread, NULL, bare_thread, b) != 0) {
        close(b->fd);
        free(b);
        return NULL;
    }
    return b;
}

uint16_t rb_bare_port(const rb_bare *b) { return b->port; }

void rb_bare_sample(const rb_bare *b, uint64_t *datagrams, uint64_t *cpu_ns) {
    *datagrams = atomic_load(&b->count);
    *cpu_ns = atomic_load(&b->cpu_ns);
}

void rb_bare_stop(rb_bare *b) {
    if (!b) return;
    atomic_store(&b->stop, 1);
    pthread_join(b->thread, NULL);
    close(b->fd);
    free(b);
}
