/* devices.c: the device thread: connection requests, TCP callbacks, a tiny web server. */
#include "bench_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define LINK_MAX_CONNS 4096
#define LINK_BUF 2048

/* What an epoll entry points at: a UDP socket or a device link. */
typedef struct link_conn {
    int kind; /* 0 udp, 1 link */
    int fd;
    uint32_t dev;
    int state; /* 0 connecting, 1 waiting for status, 2 reading the request */
    size_t hello_len, got;
    double started;
    uint8_t hello[4 + 1 + RB_ID_LEN + 16 + 32];
    char buf[LINK_BUF];
} link_conn;

typedef struct udp_tag {
    int kind;
    uint32_t sock;
} udp_tag;

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello device\n";

static void link_close(rb_sim *s, link_conn *c, int *open_links) {
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
    (*open_links)--;
}

static void on_connect_request(rb_sim *s, uint32_t dev, const uint8_t *dgram, int *open_links) {
    const uint8_t *body = dgram + 4 + RB_ID_LEN;
    uint64_t sid8 = rb_get64(body);
    if (s->last_sid[dev] == sid8) {
        atomic_fetch_add_explicit(&s->st_conn_dup, 1, memory_order_relaxed);
        return;
    }
    s->last_sid[dev] = sid8;
    if (*open_links >= LINK_MAX_CONNS) {
        atomic_fetch_add_explicit(&s->st_cb_refused, 1, memory_order_relaxed);
        return;
    }
    link_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->kind = 1;
    c->dev = dev;
    c->started = rb_now();
    char id[16];
    rb_device_id(dev, id);
    uint8_t *h = c->hello;
    memcpy(h, "RLY1", 4);
    h[4] = RB_ID_LEN;
    memcpy(h + 5, id, RB_ID_LEN);
    memcpy(h + 5 + RB_ID_LEN, body, 16);
    static const char label[] = "relay callback v1";
    rb_hmac16(rb_key_of(s, dev), label, sizeof label - 1, body, 16, body + 16, 16, h + 5 + RB_ID_LEN + 16, 32);
    c->hello_len = 5 + RB_ID_LEN + 16 + 32;
    uint16_t port = rb_get16(body + 32);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        free(c);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* From the device's own "NAT" address, to "relay host : callback port" (127.0.0.1). */
    struct sockaddr_in from;
    socklen_t from_len = sizeof from;
    if (getsockname(s->fds[rb_sock_of(s, dev)], (struct sockaddr *)&from, &from_len) == 0) {
        from.sin_port = 0;
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        bind(c->fd, (struct sockaddr *)&from, sizeof from);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int r = connect(c->fd, (struct sockaddr *)&a, sizeof a);
    if (r != 0 && errno != EINPROGRESS) {
        close(c->fd);
        free(c);
        atomic_fetch_add_explicit(&s->st_cb_refused, 1, memory_order_relaxed);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, c->fd, &ev);
    (*open_links)++;
}

static void on_link(rb_sim *s, link_conn *c, uint32_t events, int *open_links) {
    if (c->state == 0) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            atomic_fetch_add_explicit(&s->st_cb_refused, 1, memory_order_relaxed);
            link_close(s, c, open_links);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        ssize_t w = write(c->fd, c->hello, c->hello_len);
        if (w != (ssize_t)c->hello_len) {
            atomic_fetch_add_explicit(&s->st_cb_refused, 1, memory_order_relaxed);
            link_close(s, c, open_links);
            return;
        }
        c->state = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    for (int guard = 0; guard < 16; guard++) {
        ssize_t n = read(c->fd, c->buf + c->got, LINK_BUF - 1 - c->got);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) {
            if (c->state == 1) atomic_fetch_add_explicit(&s->st_cb_refused, 1, memory_order_relaxed);
            link_close(s, c, open_links);
            return;
        }
        c->got += (size_t)n;
        if (c->state == 1) {
            if (c->buf[0] != 0) {
                atomic_fetch_add_explicit(&s->st_cb_refused, 1, memory_order_relaxed);
                link_close(s, c, open_links);
                return;
            }
            atomic_fetch_add_explicit(&s->st_cb_ok, 1, memory_order_relaxed);
            memmove(c->buf, c->buf + 1, c->got - 1);
            c->got -= 1;
            c->state = 2;
        }
        c->buf[c->got] = 0;
        if (strstr(c->buf, "\r\n\r\n")) {
            /* A GET: the head is the whole request. Answer, then close like HTTP/1.0. */
            if (write(c->fd, RESPONSE, sizeof RESPONSE - 1) == (ssize_t)(sizeof RESPONSE - 1))
                atomic_fetch_add_explicit(&s->st_resp, 1, memory_order_relaxed);
            link_close(s, c, open_links);
            return;
        }
        if (c->got >= LINK_BUF - 1) {
            link_close(s, c, open_links);
            return;
        }
    }
}

static void *dev_thread(void *arg) {
    rb_sim *s = arg;
    static __thread uint8_t rbufs[RB_BATCH][RB_DGRAM_MAX];
    struct epoll_event evs[128];
    int open_links = 0;
    while (!atomic_load(&s->dev_stop)) {
        int ne = epoll_wait(s->epfd, evs, 128, 20);
        for (int e = 0; e < ne; e++) {
            int kind = *(int *)evs[e].data.ptr;
            if (kind == 1) {
                on_link(s, evs[e].data.ptr, evs[e].events, &open_links);
                continue;
            }
            udp_tag *t = evs[e].data.ptr;
            for (int round = 0; round < 16; round++) {
                struct mmsghdr m[RB_BATCH];
                struct iovec iov[RB_BATCH];
                for (int i = 0; i < RB_BATCH; i++) {
                    iov[i].iov_base = rbufs[i];
                    iov[i].iov_len = RB_DGRAM_MAX;
                    memset(&m[i], 0, sizeof m[i]);
                    m[i].msg_hdr.msg_iov = &iov[i];
                    m[i].msg_hdr.msg_iovlen = 1;
                }
                int n = recvmmsg(s->fds[t->sock], m, RB_BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0) break;
                for (int i = 0; i < n; i++) {
                    int type = 0;
                    int64_t dev = rb_parse_verify(s, rbufs[i], m[i].msg_len, &type);
                    if (dev < 0) {
                        atomic_fetch_add_explicit(&s->st_conn_bad, 1, memory_order_relaxed);
                        continue;
                    }
                    if (type == RB_T_CONNECT) {
                        atomic_fetch_add_explicit(&s->st_conn, 1, memory_order_relaxed);
                        on_connect_request(s, (uint32_t)dev, rbufs[i], &open_links);
                    } else if (type == RB_T_RESYNC) {
                        atomic_fetch_add_explicit(&s->st_resync, 1, memory_order_relaxed);
                    }
                }
                if (n < RB_BATCH) break;
            }
        }
    }
    return NULL;
}

int rb_sim_start(rb_sim *s, char *err, size_t err_len) {
    if (s->dev_running) return 0;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        rb_set_err(err, err_len, "epoll: %s", strerror(errno));
        return -1;
    }
    udp_tag *tags = calloc(s->nsock, sizeof *tags);
    if (!tags) return -1;
    for (uint32_t i = 0; i < s->nsock; i++) {
        tags[i] = (udp_tag){0, i};
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tags[i]};
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->fds[i], &ev);
    }
    atomic_store(&s->dev_stop, 0);
    if (pthread_create(&s->dev_thread, NULL, dev_thread, s) != 0) {
        rb_set_err(err, err_len, "cannot start the device thread");
        free(tags);
        return -1;
    }
    s->dev_tags = tags;
    s->dev_running = 1;
    return 0;
}

void rb_sim_stop(rb_sim *s) {
    if (!s->dev_running) return;
    atomic_store(&s->dev_stop, 1);
    pthread_join(s->dev_thread, NULL);
    s->dev_running = 0;
    /* Links still open are closed with the epoll set (they are few and short-lived). */
    close(s->epfd);
    s->epfd = -1;
    free(s->dev_tags);
    s->dev_tags = NULL;
}

void rb_sim_dev_stats(const rb_sim *s, rb_dev_stats *o) {
    o->connect_requests = atomic_load(&s->st_conn);
    o->connect_bad = atomic_load(&s->st_conn_bad);
    o->connect_dup = atomic_load(&s->st_conn_dup);
    o->callbacks_ok = atomic_load(&s->st_cb_ok);
    o->callbacks_refused = atomic_load(&s->st_cb_refused);
    o->responses = atomic_load(&s->st_resp);
    o->resyncs = atomic_load(&s->st_resync);
}
