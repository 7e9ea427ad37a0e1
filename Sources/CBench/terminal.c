/* terminal.c: terminals asking for devices through the relay's HTTP front, and a tiny GET. */
#include "bench_internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include "relay_core.h"

#define TERM_BUF 4096
#define TERM_REQUEST_TIMEOUT 10.0 /* above the relay's wake timeout (5 s): we see its 504 */

typedef struct term {
    int fd;
    int state; /* 0 free, 1 connecting, 2 waiting for the response */
    double started;
    int first_seen;
    size_t got, req_len;
    char req[512];
    char buf[TERM_BUF];
} term;

static void term_prepare(rb_sim *s, term *t, int target, uint64_t *rng) {
    char id[16];
    uint32_t dev = 0;
    const uint8_t *key = NULL;
    uint8_t fake_key[16] = {0};
    if (target == RB_TARGET_LIVE && s->live) {
        dev = (uint32_t)(rb_xorshift(rng) % s->live);
        rb_device_id(dev, id);
        key = rb_key_of(s, dev);
    } else if (target == RB_TARGET_OFFLINE && s->total > s->live) {
        dev = s->live + (uint32_t)(rb_xorshift(rng) % (s->total - s->live));
        rb_device_id(dev, id);
        key = rb_key_of(s, dev);
    } else {
        snprintf(id, sizeof id, "unk-%07u", (unsigned)(rb_xorshift(rng) % 10000000u));
        key = fake_key;
    }
    uint8_t tid[8];
    uint64_t r = rb_xorshift(rng);
    memcpy(tid, &r, 8);
    char token[RL_TOKEN_MAX] = "none";
    rl_token_mint(s->token_key, id, key, (uint64_t)time(NULL) + 3600, tid, token, sizeof token);
    int n = snprintf(t->req, sizeof t->req,
                     "GET /d/%s/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n",
                     id, token);
    t->req_len = (size_t)n;
}

static int term_open(int ep, term *t, uint16_t port) {
    t->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (t->fd < 0) return -1;
    int one = 1;
    setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Terminals come from 127.20.x.y (4,000 addresses), so that TIME_WAIT never runs one
     * source address out of ports at thousands of short connections per second. */
    static __thread uint32_t next_src;
    uint32_t src = next_src++ % 4000;
    struct sockaddr_in from = {.sin_family = AF_INET, .sin_addr.s_addr = htonl((127u << 24) | (20u << 16) | ((src / 250) << 8) | (1 + src % 250))};
    setsockopt(t->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    bind(t->fd, (struct sockaddr *)&from, sizeof from);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    t->started = rb_now();
    t->first_seen = 0;
    t->got = 0;
    if (connect(t->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(t->fd);
        t->fd = -1;
        return -1;
    }
    t->state = 1;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = t};
    epoll_ctl(ep, EPOLL_CTL_ADD, t->fd, &ev);
    return 0;
}

/* The response is complete when its head and Content-Length bytes of body are in. */
static int response_complete(const char *buf, size_t got, int *status) {
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end) return 0;
    if (got > 12 && strncmp(buf, "HTTP/1.", 7) == 0) *status = atoi(buf + 9);
    size_t head = (size_t)(end - buf) + 4;
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (!cl || cl > end) return 0; /* delimited by close */
    long len = strtol(cl + 17, NULL, 10);
    return got >= head + (size_t)len;
}

static void term_finish(int ep, term *t, int status, rb_wake_result *o) {
    epoll_ctl(ep, EPOLL_CTL_DEL, t->fd, NULL);
    close(t->fd);
    t->fd = -1;
    t->state = 0;
    o->requests++;
    if (status >= 200 && status < 300) o->status_2xx++;
    else if (status == 404) o->status_404++;
    else if (status == 503) o->status_503++;
    else if (status == 504) o->status_504++;
    else if (status > 0) o->status_other++;
    else o->errors++;
}

int rb_wakes_run(rb_sim *s, uint16_t http_port, int target, uint32_t concurrency, double seconds,
                 uint64_t max_requests, uint32_t *lat_us, uint64_t lat_cap, rb_wake_result *o) {
    memset(o, 0, sizeof *o);
    if (concurrency < 1) concurrency = 1;
    if (concurrency > 1024) concurrency = 1024;
    term *ts = calloc(concurrency, sizeof *ts);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!ts || ep < 0) {
        free(ts);
        if (ep >= 0) close(ep);
        return -1;
    }
    uint64_t rng = 0x6a09e667f3bcc909ull ^ (uint64_t)(rb_now() * 1e6) ^ ((uint64_t)target << 40);
    double t0 = rb_now(), stop_at = t0 + seconds, hard_stop = stop_at + TERM_REQUEST_TIMEOUT + 1;
    uint64_t issued = 0;
    int busy = 0;
    struct epoll_event evs[256];
    for (;;) {
        double now = rb_now();
        /* Keep `concurrency` requests in flight until the time or count runs out. */
        for (uint32_t i = 0; i < concurrency && now < stop_at && issued < max_requests; i++) {
            if (ts[i].state != 0) continue;
            term_prepare(s, &ts[i], target, &rng);
            if (term_open(ep, &ts[i], http_port) == 0) {
                busy++;
                issued++;
            } else {
                o->errors++;
                issued++;
            }
        }
        if (busy == 0 || now > hard_stop) break;
        int ne = epoll_wait(ep, evs, 256, 5);
        now = rb_now();
        for (int e = 0; e < ne; e++) {
            term *t = evs[e].data.ptr;
            if (t->state == 1) {
                if (evs[e].events & (EPOLLERR | EPOLLHUP)) {
                    term_finish(ep, t, -1, o);
                    busy--;
                    continue;
                }
                if (write(t->fd, t->req, t->req_len) != (ssize_t)t->req_len) {
                    term_finish(ep, t, -1, o);
                    busy--;
                    continue;
                }
                t->state = 2;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = t};
                epoll_ctl(ep, EPOLL_CTL_MOD, t->fd, &ev);
                continue;
            }
            ssize_t n = read(t->fd, t->buf + t->got, TERM_BUF - 1 - t->got);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n > 0 && !t->first_seen) {
                t->first_seen = 1;
                if (o->latencies < lat_cap) lat_us[o->latencies++] = (uint32_t)((now - t->started) * 1e6);
            }
            int status = 0;
            if (n > 0) {
                t->got += (size_t)n;
                t->buf[t->got] = 0;
                if (!response_complete(t->buf, t->got, &status) && t->got < TERM_BUF - 1) continue;
            } else {
                t->buf[t->got] = 0;
                if (t->got > 12 && strncmp(t->buf, "HTTP/1.", 7) == 0) status = atoi(t->buf + 9);
                else status = -1;
            }
            term_finish(ep, t, status, o);
            busy--;
        }
        /* A request stuck past the timeout counts as an error. */
        for (uint32_t i = 0; i < concurrency; i++)
            if (ts[i].state != 0 && now - ts[i].started > TERM_REQUEST_TIMEOUT) {
                term_finish(ep, &ts[i], -1, o);
                busy--;
            }
    }
    for (uint32_t i = 0; i < concurrency; i++)
        if (ts[i].state != 0) term_finish(ep, &ts[i], -1, o);
    o->seconds = rb_now() - t0;
    close(ep);
    free(ts);
    return 0;
}

int rb_http_get(uint16_t port, const char *path, const char *headers, char *buf, size_t cap, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || cap < 2) return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n", path, headers ? headers : "");
    int status = -1;
    if (n <= 0 || n >= (int)sizeof req) goto out;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || write(fd, req, (size_t)n) != n) goto out;
    size_t got = 0;
    double deadline = rb_now() + timeout_ms / 1000.0;
    while (got < cap - 1 && rb_now() < deadline) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    buf[got] = 0;
    if (got < 12 || strncmp(buf, "HTTP/1.", 7) != 0) goto out;
    status = atoi(buf + 9);
    char *body = strstr(buf, "\r\n\r\n");
    if (body) memmove(buf, body + 4, strlen(body + 4) + 1);
out:
    close(fd);
    return status;
}
