/* stream.c: see stream.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "stream.h"

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

rl_stream *rl_stream_new(struct event_base *base, int fd, int connecting, rl_stream_cb cb, void *arg) {
    rl_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->fd = fd;
    s->cb = cb;
    s->arg = arg;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    s->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, s);
    s->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, s);
    if (!s->in || !s->out || !s->rev || !s->wev) {
        rl_stream_free(s);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->connecting = connecting ? 1 : 0;
    if (connecting) event_add(s->wev, NULL);
    return s;
}

void rl_stream_set_cb(rl_stream *s, rl_stream_cb cb, void *arg) {
    s->cb = cb;
    s->arg = arg;
}

void rl_stream_read(rl_stream *s, int on) {
    if (s->dead || s->eof) on = 0;
    if (on && !s->reading) event_add(s->rev, NULL);
    if (!on && s->reading) event_del(s->rev);
    s->reading = on ? 1 : 0;
}

int rl_stream_out_high(const rl_stream *s) {
    return evbuffer_get_length(s->out) >= RL_STREAM_HIGH;
}

void rl_stream_flush(rl_stream *s) {
    if (s->dead || s->connecting) return;
    if (evbuffer_get_length(s->out) > 0) {
        event_add(s->wev, NULL);
    } else if (s->shut_after_flush) {
        shutdown(s->fd, SHUT_WR);
        s->shut_after_flush = 0;
    }
}

void rl_stream_shutdown_after_flush(rl_stream *s) {
    s->shut_after_flush = 1;
    rl_stream_flush(s);
}

void rl_stream_free(rl_stream *s) {
    if (!s) return;
    if (s->rev) event_free(s->rev);
    if (s->wev) event_free(s->wev);
    if (s->in) evbuffer_free(s->in);
    if (s->out) evbuffer_free(s->out);
    if (s->fd >= 0) close(s->fd);
    free(s);
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
    rl_stream *s = arg;
    /* One large read per wake-up: level-triggered, so leftovers wake us again. */
    struct evbuffer_iovec vec[2];
    int n = evbuffer_reserve_space(s->in, RL_STREAM_READ, vec, 2);
    if (n <= 0) {
        s->cb(s, RL_STREAM_ERROR, s->arg);
        return;
    }
    struct iovec iov[2];
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    ssize_t got = readv(fd, iov, n);
    if (got > 0) {
        size_t left = (size_t)got;
        for (int i = 0; i < n; i++) {
            size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
            vec[i].iov_len = take;
            left -= take;
        }
        evbuffer_commit_space(s->in, vec, n);
        s->bytes_read += (unsigned long long)got;
        s->cb(s, RL_STREAM_READ_READY, s->arg);
        return;
    }
    evbuffer_commit_space(s->in, vec, 0);
    if (got == 0) {
        rl_stream_read(s, 0);
        s->eof = 1;
        s->cb(s, RL_STREAM_EOF, s->arg);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        rl_stream_read(s, 0);
        s->cb(s, RL_STREAM_ERROR, s->arg);
    }
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
    rl_stream *s = arg;
    if (s->connecting) {
        int soerr = 0;
        socklen_t len = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        s->connecting = 0;
        event_del(s->wev);
        if (soerr != 0) {
            s->cb(s, RL_STREAM_ERROR, s->arg);
            return;
        }
        s->cb(s, RL_STREAM_CONNECTED, s->arg);
        return; /* the callback may have freed s */
    }
    int was_high = rl_stream_out_high(s);
    int n = evbuffer_write_atmost(s->out, fd, -1);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        event_del(s->wev);
        s->cb(s, RL_STREAM_ERROR, s->arg);
        return;
    }
    s->bytes_written += (unsigned long long)n;
    if (evbuffer_get_length(s->out) == 0) {
        event_del(s->wev);
        if (s->shut_after_flush) {
            shutdown(fd, SHUT_WR);
            s->shut_after_flush = 0;
        }
    }
    if (was_high && !rl_stream_out_high(s)) s->cb(s, RL_STREAM_DRAINED, s->arg);
    else if (evbuffer_get_length(s->out) == 0) s->cb(s, RL_STREAM_DRAINED, s->arg);
}

int rl_tcp_connect(const struct sockaddr *sa, socklen_t len) {
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}
