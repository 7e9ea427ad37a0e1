/*
 * callback.c: device callbacks [claims 1, 8, 11, 17]. A device answering a connection
 * request connects here and sends its hello (docs/PROTOCOL.md, "Callback"); the relay
 * checks the session ID and the proof of the nonce, answers one status byte, and hands
 * the connection to the session as its device link.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include "core_types.h"
#include "node.h"
#include "callback.h"
#include "session.h"
#include "listen.h"
#include "netaddr.h"

typedef struct rl_pending_cb {
    rl_core *core;
    rl_stream *st;
    struct event *timer;
    int tls_seen; /* the TLS handshake's success was counted */
    rl_tally_entry *source; /* this address's entry in core->callback_sources (counts it) */
} rl_pending_cb;

static void pending_free(rl_pending_cb *p, int close_stream) {
    if (p->source) p->source->open--;
    if (p->timer) event_free(p->timer);
    if (close_stream) rl_stream_free(p->st);
    free(p);
}

/* Answers a refusal and closes once it is written. */
static void refuse_cb(rl_stream *st, int event, void *arg) {
    if (event == RL_STREAM_DRAINED || event == RL_STREAM_ERROR || event == RL_STREAM_EOF) rl_stream_free(st);
}

static void reject(rl_pending_cb *p, uint8_t status) {
    CTR_INC(p->core->ctr.callbacks_rejected);
    rl_stream *st = p->st;
    pending_free(p, 0);
    rl_stream_read(st, 0);
    rl_stream_set_cb(st, refuse_cb, NULL);
    evbuffer_add(st->out, &status, 1);
    rl_stream_shutdown_after_flush(st);
}

static void try_hello(rl_pending_cb *p) {
    rl_core *core = p->core;
    struct evbuffer *in = p->st->in;
    size_t have = evbuffer_get_length(in);
    if (have < 5) return;
    uint8_t head[5];
    evbuffer_copyout(in, head, 5);
    size_t id_len = head[4];
    if (memcmp(head, RL_HELLO_MAGIC, 4) != 0 || id_len < 1 || id_len > RL_ID_MAX) {
        reject(p, RL_CB_MALFORMED);
        return;
    }
    size_t total = 5 + id_len + RL_SESSION_ID_LEN + 32;
    if (have < total) return;
    uint8_t hello[RL_HELLO_MAX];
    evbuffer_remove(in, hello, total);
    const char *id = (const char *)hello + 5;
    const uint8_t *sid = hello + 5 + id_len, *proof = sid + RL_SESSION_ID_LEN;
    if (!rl_device_id_valid(id, id_len)) {
        reject(p, RL_CB_MALFORMED);
        return;
    }
    rl_session *s = rl_session_find(core, sid);
    if (!s) {
        reject(p, RL_CB_UNKNOWN_SESSION);
        return;
    }
    uint64_t h = rl_registry_hash(&core->reg, id, id_len);
    rl_dev copy;
    const rl_dev *dev = rl_device_lookup(core, id, id_len, h, &copy);
    uint8_t want[32];
    if (!dev || h != s->id_hash || rl_callback_proof(&core->mac, dev->key, s->sid, s->nonce, want) != 0 ||
        CRYPTO_memcmp(want, proof, 32) != 0) {
        reject(p, RL_CB_BAD_PROOF);
        return;
    }
    if (s->state != SESS_WAKING) {
        reject(p, RL_CB_ALREADY_BOUND);
        return;
    }
    const char *bad_cert = core->tls && core->tls->device_certs ? rl_tls_device_identity(p->st->ssl, s->device_id) : NULL;
    if (bad_cert) {
        /* The device proved its secret but not its certificate: the terminal hears why now
         * (not a 504 later), and the wake ends. */
        CTR_INC(core->ctr.device_certs_refused);
        char body[300];
        snprintf(body, sizeof body, "device %s was refused: %s\n", s->device_id, bad_cert);
        rl_session_fail(s, 502, body);
        reject(p, RL_CB_BAD_CERT);
        return;
    }
    rl_stream *st = p->st;
    pending_free(p, 0);
    uint8_t ok = RL_CB_OK;
    evbuffer_add(st->out, &ok, 1); /* written with the terminal's first request, in one write */
    rl_session_bind(s, st); /* bytes the device sent after its hello stay queued in st->in */
}

static void pending_cb(rl_stream *st, int event, void *arg) {
    rl_pending_cb *p = arg;
    if (st->ssl && !p->tls_seen && SSL_is_init_finished(st->ssl)) {
        p->tls_seen = 1;
        CTR_INC(p->core->ctr.tls_device_ok);
    }
    if (event == RL_STREAM_READ_READY) {
        try_hello(p);
    } else if (event == RL_STREAM_EOF || event == RL_STREAM_ERROR) {
        CTR_INC(p->core->ctr.callbacks_rejected);
        if (st->ssl && !p->tls_seen) CTR_INC(p->core->ctr.tls_device_failed);
        pending_free(p, 1);
    }
}

static void on_hello_timeout(evutil_socket_t fd, short what, void *arg) {
    rl_pending_cb *p = arg;
    reject(p, RL_CB_MALFORMED);
}

/* Over the per-source bound: one status byte, straight from the accept, no state kept.
 * (Anyone can connect here; only a verified hello is worth a descriptor for long.) */
static void refuse_source(rl_core *core, int fd) {
    uint8_t busy = RL_CB_BUSY_SOURCE;
    CTR_INC(core->ctr.limited_callback_source);
    CTR_INC(core->ctr.callbacks_rejected);
    if (!core->tls) (void)!send(fd, &busy, 1, MSG_DONTWAIT | MSG_NOSIGNAL); /* TLS: before any handshake, just close */
    char sink[512];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {} /* unread input would turn close into a reset */
    close(fd);
}

void rl_callback_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg) {
    rl_core *core = arg; /* fd: non-blocking, from accept4 */
    if (rl_core_fd_refused(core, fd)) return;
    rl_tally_entry *src = NULL;
    if (core->cfg.max_callbacks_per_source) {
        uint8_t addr[16];
        uint16_t port;
        rl_addr_to_v6(sa, addr, &port);
        src = rl_tally_get(&core->callback_sources, addr, rl_core_now_s(core));
        if (src && src->open >= core->cfg.max_callbacks_per_source) {
            refuse_source(core, fd);
            return;
        }
    }
    rl_pending_cb *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return;
    }
    p->core = core;
    if (src) {
        src->open++;
        p->source = src;
    }
    p->st = rl_stream_new(core->base, fd, 0, pending_cb, p);
    p->timer = evtimer_new(core->base, on_hello_timeout, p);
    if (p->st && core->tls && rl_stream_start_tls(p->st, core->tls->device, 1, NULL) != 0) {
        rl_stream_free(p->st);
        p->st = NULL;
        fd = -1;
    }
    if (!p->st || !p->timer) {
        if (!p->st && fd >= 0) close(fd);
        pending_free(p, 1);
        return;
    }
    struct timeval tv = rl_timeval_ms(core->cfg.wake_timeout_ms);
    evtimer_add(p->timer, &tv);
    rl_stream_read(p->st, 1);
}
