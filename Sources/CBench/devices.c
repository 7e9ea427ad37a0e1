/* devices.c: the device thread: connection requests, TCP callbacks, a tiny web server. */
#include "bench_internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define LINK_MAX_CONNS 4096
#define LINK_BUF 2048

/* What an epoll entry points at: a UDP socket, a device link or the web listener. */
enum { KIND_UDP = 0, KIND_LINK = 1, KIND_WEB_LISTENER = 2 };
enum { LINK_CONNECTING, LINK_STATUS, LINK_REQUEST, LINK_SERVING };
typedef struct link_conn {
    int kind;
    int fd;
    uint32_t dev;
    int state;
    size_t hello_len, got;
    double started;
    uint8_t hello[4 + 1 + RB_ID_LEN + 16 + 32];
    char buf[LINK_BUF];
    /* LINK_SERVING: the response being written */
    char head[128];
    size_t head_len, head_off;
    uint64_t body_left;
    int want_out; /* EPOLLOUT is armed */
} link_conn;

typedef struct udp_tag {
    int kind;
    uint32_t sock;
} udp_tag;

static void web_serve(rb_sim *s, link_conn *c, int *open_links);

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
    if (c->state == LINK_SERVING) {
        web_serve(s, c, open_links);
        return;
    }
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
            if (atomic_load_explicit(&s->web_on, memory_order_relaxed) && c->dev == s->web_dev) {
                c->state = LINK_SERVING;
                web_serve(s, c, open_links);
                return;
            }
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

/* ---- the web device: keep-alive HTTP on device links and on a plain TCP port ---- */

static char web_body[256 * 1024];

/* Writes what is left of the current response: 1 when done, 0 when the socket is full, -1 on error. */
static int web_write(link_conn *c) {
    while (c->head_off < c->head_len || c->body_left > 0) {
        struct iovec iov[2];
        int n = 0;
        size_t head = c->head_len - c->head_off;
        if (head) iov[n++] = (struct iovec){c->head + c->head_off, head};
        if (c->body_left) iov[n++] = (struct iovec){web_body, c->body_left < sizeof web_body ? c->body_left : sizeof web_body};
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        size_t from_head = (size_t)w < head ? (size_t)w : head;
        c->head_off += from_head;
        c->body_left -= (size_t)w - from_head;
    }
    return 1;
}

static void web_want_out(rb_sim *s, link_conn *c, int on) {
    if (c->want_out == on) return;
    c->want_out = on;
    struct epoll_event ev = {.events = on ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Answers every complete request head in the buffer, one response at a time; reads more
 * only while no response is waiting for the socket. Bounded: 16 reads per event. */
static void web_serve(rb_sim *s, link_conn *c, int *open_links) {
    for (int guard = 0; guard < 16; guard++) {
        int done = web_write(c);
        if (done < 0) {
            link_close(s, c, open_links);
            return;
        }
        if (!done) {
            web_want_out(s, c, 1);
            return;
        }
        web_want_out(s, c, 0);
        c->buf[c->got] = 0;
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end) {
            int bulk = strncmp(c->buf, "GET /bulk", 9) == 0;
            c->body_left = bulk ? RB_WEB_BULK : RB_WEB_SMALL;
            c->head_len = (size_t)snprintf(c->head, sizeof c->head,
                                           "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                           "Content-Length: %llu\r\n\r\n", (unsigned long long)c->body_left);
            c->head_off = 0;
            size_t used = (size_t)(end + 4 - c->buf);
            memmove(c->buf, c->buf + used, c->got - used);
            c->got -= used;
            atomic_fetch_add_explicit(&s->st_resp, 1, memory_order_relaxed);
            continue;
        }
        if (c->got >= LINK_BUF - 1) {
            link_close(s, c, open_links); /* a head this large is not a benchmark request */
            return;
        }
        ssize_t n = read(c->fd, c->buf + c->got, LINK_BUF - 1 - c->got);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) {
            link_close(s, c, open_links);
            return;
        }
        c->got += (size_t)n;
    }
}

static void web_accept(rb_sim *s, int *open_links) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->web_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        link_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->kind = KIND_LINK;
        c->fd = fd;
        c->state = LINK_SERVING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
        (*open_links)++;
    }
}

uint16_t rb_sim_web_start(rb_sim *s, uint32_t dev, char *err, size_t err_len) {
    if (!s->dev_running || dev >= s->live) {
        rb_set_err(err, err_len, "the web device needs the device thread and a live device");
        return 0;
    }
    memset(web_body, 'a', sizeof web_body);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        rb_set_err(err, err_len, "web listener: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return 0;
    }
    udp_tag *tag = calloc(1, sizeof *tag);
    if (!tag) {
        close(fd);
        return 0;
    }
    tag->kind = KIND_WEB_LISTENER;
    s->web_lfd = fd;
    s->web_tag = tag;
    s->web_dev = dev;
    atomic_store(&s->web_on, 1);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
    return ntohs(a.sin_port);
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
            if (kind == KIND_LINK) {
                on_link(s, evs[e].data.ptr, evs[e].events, &open_links);
                continue;
            }
            if (kind == KIND_WEB_LISTENER) {
                web_accept(s, &open_links);
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
                    if (dev == RB_ACK) {
                        atomic_fetch_add_explicit(&s->st_ack, 1, memory_order_relaxed);
                        continue;
                    }
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
    if (s->web_lfd >= 0) close(s->web_lfd);
    s->web_lfd = -1;
    free(s->web_tag);
    s->web_tag = NULL;
    atomic_store(&s->web_on, 0);
}

void rb_sim_dev_stats(const rb_sim *s, rb_dev_stats *o) {
    o->connect_requests = atomic_load(&s->st_conn);
    o->connect_bad = atomic_load(&s->st_conn_bad);
    o->connect_dup = atomic_load(&s->st_conn_dup);
    o->callbacks_ok = atomic_load(&s->st_cb_ok);
    o->callbacks_refused = atomic_load(&s->st_cb_refused);
    o->responses = atomic_load(&s->st_resp);
    o->resyncs = atomic_load(&s->st_resync);
    o->acks = atomic_load(&s->st_ack);
}
