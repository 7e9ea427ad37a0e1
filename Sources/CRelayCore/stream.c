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
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "stream.h"

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void tls_read(rl_stream *s);
static void tls_write(rl_stream *s);

/* The write event armed or not (event_pending would also say yes while it is merely active,
 * e.g. a DRAINED on its way). */
static void wev_on(rl_stream *s) {
    event_add(s->wev, NULL);
    s->writing = 1;
}

static void wev_off(rl_stream *s) {
    event_del(s->wev);
    s->writing = 0;
}

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
        s->fd = -1; /* the caller still owns it: every caller closes it on NULL */
        rl_stream_free(s);
        return NULL;
    }
    if (connecting) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    s->read_size = RL_STREAM_READ_FIRST;
    s->connecting = connecting ? 1 : 0;
    if (connecting) wev_on(s);
    return s;
}

static void muted_cb(rl_stream *s, int event, void *arg) {}

void rl_stream_mute(rl_stream *s) {
    if (!s) return;
    event_del(s->rev);
    wev_off(s);
    s->reading = 0;
    s->cb = muted_cb;
    s->arg = NULL;
}

void rl_stream_set_cb(rl_stream *s, rl_stream_cb cb, void *arg) {
    s->cb = cb;
    s->arg = arg;
}

void rl_stream_read(rl_stream *s, int on) {
    if (s->eof) on = 0;
    if (on && !s->reading) event_add(s->rev, NULL);
    /* A TLS write waiting for the peer keeps the read event: on_read retries the write. */
    if (!on && s->reading && !s->tls_write_wants_read) event_del(s->rev);
    s->reading = on ? 1 : 0;
}

int rl_stream_out_high(const rl_stream *s) {
    return evbuffer_get_length(s->out) >= RL_STREAM_HIGH;
}

void rl_stream_flush(rl_stream *s) {
    if (s->connecting) return;
    if (evbuffer_get_length(s->out) > 0) {
        if (s->ssl || s->write_failed || s->writing) {
            wev_on(s);
            return;
        }
        /* Write first: a writable socket takes it now, which saves arming the write event,
         * a loop turn and disarming it again (two epoll_ctl calls per message). */
        int was_high = rl_stream_out_high(s);
        int n = evbuffer_write_atmost(s->out, s->fd, -1);
        if (n > 0) s->bytes_written += (unsigned long long)n;
        if (was_high && !rl_stream_out_high(s)) s->out_was_high = 1; /* on_write says DRAINED */
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s->write_failed = 1; /* reported by on_write, from the loop */
            event_active(s->wev, EV_WRITE, 0);
        } else if (evbuffer_get_length(s->out) > 0) {
            wev_on(s);
        } else {
            if (s->shut_after_flush) {
                shutdown(s->fd, SHUT_WR);
                s->shut_after_flush = 0;
            }
            event_active(s->wev, EV_WRITE, 0); /* RL_STREAM_DRAINED, from the loop */
        }
    } else if (s->shut_after_flush) {
        if (s->ssl) SSL_shutdown(s->ssl); /* close_notify, best effort */
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
    if (s->ssl) SSL_free(s->ssl);
    if (s->fd >= 0) close(s->fd);
    free(s);
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
    rl_stream *s = arg;
    if (s->ssl) {
        if (s->tls_write_wants_read) {
            /* A write waited for the peer's bytes (handshake, key update): retry it. */
            s->tls_write_wants_read = 0;
            wev_on(s);
            if (!s->reading) {
                event_del(s->rev);
                return;
            }
        }
        tls_read(s);
        return;
    }
    /* One large read per wake-up: level-triggered, so leftovers wake us again. */
    struct evbuffer_iovec vec[2];
    int n = evbuffer_reserve_space(s->in, (ev_ssize_t)s->read_size, vec, 2);
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
        /* A full read means more is coming: read bigger next time (bulk transfers reach
         * RL_STREAM_READ in a few reads; a small request never allocates more than 16 KiB). */
        if ((size_t)got >= s->read_size && s->read_size < RL_STREAM_READ) s->read_size *= 2;
        s->cb(s, RL_STREAM_READ_READY, s->arg);
        return;
    }
    evbuffer_commit_space(s->in, vec, 0);
    if (got == 0) {
        rl_stream_read(s, 0);
        s->eof = 1;
        s->cb(s, RL_STREAM_EOF, s->arg);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        s->error = errno;
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
        wev_off(s);
        if (soerr != 0) {
            s->error = soerr;
            s->cb(s, RL_STREAM_ERROR, s->arg);
            return;
        }
        s->cb(s, RL_STREAM_CONNECTED, s->arg);
        return; /* the callback may have freed s */
    }
    if (s->ssl) {
        if (s->tls_read_wants_write) {
            s->tls_read_wants_write = 0;
            if (evbuffer_get_length(s->out) == 0) wev_off(s);
            if (s->reading) event_active(s->rev, EV_READ, 0);
        }
        tls_write(s);
        return;
    }
    if (s->write_failed) {
        wev_off(s);
        s->cb(s, RL_STREAM_ERROR, s->arg);
        return;
    }
    int was_high = rl_stream_out_high(s) || s->out_was_high;
    /* Empty when a write-first flush already wrote it all (evbuffer_write_atmost says -1 for
     * nothing to write): only the DRAINED below is left to deliver. */
    int n = evbuffer_get_length(s->out) > 0 ? evbuffer_write_atmost(s->out, fd, -1) : 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        s->error = errno;
        wev_off(s);
        s->cb(s, RL_STREAM_ERROR, s->arg);
        return;
    }
    s->bytes_written += (unsigned long long)n;
    if (evbuffer_get_length(s->out) == 0) {
        wev_off(s);
        if (s->shut_after_flush) {
            shutdown(fd, SHUT_WR);
            s->shut_after_flush = 0;
        }
    }
    if ((was_high && !rl_stream_out_high(s)) || evbuffer_get_length(s->out) == 0) {
        s->out_was_high = 0;
        s->cb(s, RL_STREAM_DRAINED, s->arg);
    }
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

/* ---- TLS ---- */

int rl_stream_start_tls(rl_stream *s, SSL_CTX *ctx, int server, const char *sni) {
    s->ssl = SSL_new(ctx);
    if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1) return -1;
    SSL_set_mode(s->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server) {
        SSL_set_accept_state(s->ssl);
    } else {
        unsigned char ip[16];
        if (sni && (inet_pton(AF_INET, sni, ip) == 1 || inet_pton(AF_INET6, sni, ip) == 1)) {
            /* An address: the certificate must name it; no SNI (it carries host names only). */
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), sni);
        } else if (sni && sni[0]) {
            SSL_set_tlsext_host_name(s->ssl, sni);
            SSL_set1_host(s->ssl, sni); /* checked when the context verifies the peer */
        }
        SSL_set_connect_state(s->ssl);
    }
    return 0;
}

/* Reads records until OpenSSL wants more from the socket (or RL_STREAM_READ bytes came);
 * the handshake, on the server side, happens here too. */
static void tls_read(rl_stream *s) {
    size_t total = 0;
    int end = 0; /* 1: EOF, 2: error */
    while (total < RL_STREAM_READ) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(s->in, 16384, &v, 1) < 1) {
            end = 2;
            break;
        }
        ERR_clear_error();
        int n = SSL_read(s->ssl, v.iov_base, (int)(v.iov_len < 65536 ? v.iov_len : 65536));
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(s->in, &v, 1);
            total += (size_t)n;
            /* Nothing left inside OpenSSL: the socket is level-triggered, so stop here rather
             * than pay a read(2) that returns EAGAIN. */
            if (!SSL_has_pending(s->ssl)) break;
            continue;
        }
        evbuffer_commit_space(s->in, NULL, 0);
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) {
            s->tls_read_wants_write = 1;
            wev_on(s);
            break;
        }
        end = e == SSL_ERROR_ZERO_RETURN ? 1 : 2;
        break;
    }
    /* Decrypted bytes left inside OpenSSL are invisible to poll(): come back for them. */
    if (!end && total >= RL_STREAM_READ && SSL_pending(s->ssl) > 0) event_active(s->rev, EV_READ, 0);
    if (total) {
        s->bytes_read += total;
        if (end) event_active(s->rev, EV_READ, 0); /* the EOF or error is seen on the next call */
        s->cb(s, RL_STREAM_READ_READY, s->arg);
        return;
    }
    if (end) {
        rl_stream_read(s, 0);
        if (end == 1) s->eof = 1;
        s->cb(s, end == 1 ? RL_STREAM_EOF : RL_STREAM_ERROR, s->arg);
    }
}

static void tls_write(rl_stream *s) {
    int was_high = rl_stream_out_high(s);
    while (evbuffer_get_length(s->out) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(s->out, -1, NULL, &v, 1) < 1) break;
        ERR_clear_error();
        int n = SSL_write(s->ssl, v.iov_base, (int)(v.iov_len < 65536 ? v.iov_len : 65536));
        if (n > 0) {
            evbuffer_drain(s->out, (size_t)n);
            s->bytes_written += (unsigned long long)n;
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) return; /* wev stays: the socket will take more */
        if (e == SSL_ERROR_WANT_READ) {
            /* Waits for the peer (handshake): no busy wev meanwhile; on_read retries. */
            s->tls_write_wants_read = 1;
            wev_off(s);
            event_add(s->rev, NULL);
            return;
        }
        wev_off(s);
        s->cb(s, RL_STREAM_ERROR, s->arg);
        return;
    }
    wev_off(s);
    if (s->shut_after_flush) {
        SSL_shutdown(s->ssl);
        shutdown(s->fd, SHUT_WR);
        s->shut_after_flush = 0;
    }
    if (was_high || evbuffer_get_length(s->out) == 0) s->cb(s, RL_STREAM_DRAINED, s->arg);
}
