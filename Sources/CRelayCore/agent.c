/*
 * agent.c: the device side, the design's transfer module [claims 5, 8-12, 21-23].
 *
 * Asks the relay for the max access period, sends NOTIFY_A and NOTIFY_B on their timers
 * from one UDP socket (so the NAT keeps one mapping), answers verified connection requests
 * by calling back over TCP, and splices each callback link onto a fresh connection to the
 * local web server, or onto a socket pair whose other end goes to the firmware (on_link).
 *
 * The same file runs in `relay agent` (Swift), in the standalone `relay-agent` program and
 * in librelayagent (agent/): it needs only stream.c, tls.c, wire.c, crypto.c and netaddr.c
 * of the core, libevent_core and OpenSSL. Public API: include/relay_agent.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <openssl/crypto.h>
#include "relay_core.h"
#include "clock.h"
#include "counter.h"
#include "util.h"
#include "netaddr.h"
#include "stream.h"
#include "tls.h"
#include "wire.h"

#define SEEN_SIDS 64
/* Callbacks not yet bound: CONNECT_REQUESTs beyond are ignored. A replayed old request (its
 * session long gone at the relay) costs a callback each, and this bounds what a flood of
 * them can make the device open, towards the relay and its local server. */
#define MAX_UNBOUND_LINKS 16
#define ATTEMPTS_PER_SESSION 3 /* callbacks of one session in flight (a lost SYN: try again) */
#define NO_ANSWER_AFTER 3      /* period requests, or notifies without a NOTIFY_ACK */
#define LEAVE_TRIES 4          /* LEAVE re-sent every 250 ms until its ACK */
#define CONFIRM_AFTER_S 3      /* NOTIFY_B this long after a notify moved the anchor */

typedef struct agent_link agent_link;

struct rl_agent {
    char id[RL_ID_MAX + 1];
    size_t id_len;
    uint8_t key[RL_KEY_LEN];
    struct event_base *base;
    int udp_fd;
    struct event *udp_ev, *period_timer, *a_timer, *b_timer, *stop_ev;
    int stop_pipe[2];      /* rl_agent_stop writes a byte: safe from threads and signal handlers */
    struct sockaddr_storage relay_addr, fwd_addr;
    socklen_t relay_len, fwd_len;
    uint8_t client_nonce[8];
    uint32_t epoch, period_s, keepalive_s, backoff_ms;
    uint16_t cb_port;
    int registered;
    uint64_t counter;
    uint64_t epoch_from;   /* our counter when the current epoch was adopted (RESYNC freshness) */
    uint64_t acked;        /* highest counter the relay answered with NOTIFY_ACK */
    uint32_t unanswered;   /* period requests or notifies sent since the relay last answered */
    uint32_t rejected;     /* REJECTs for our pending request in a row */
    int refused;           /* the kernel said the relay's UDP port is closed (ICMP) */
    int lost;              /* said "relay stopped answering" (until it answers again) */
    int leaving;           /* rl_agent_stop: LEAVE sent, waiting for its ACK */
    uint32_t leave_tries;
    uint64_t leave_from;   /* counter of the first LEAVE: an ACK of any of them will do */
    struct event *leave_timer;
    char relay_text[128], forward_text[128];
    void (*log)(void *ctx, int level, const char *event, const char *text);
    void *log_ctx;
    void (*on_status)(void *ctx, int event, const char *detail);
    int (*on_link)(void *ctx, int fd);
    void *status_ctx;
    uint8_t seen[SEEN_SIDS][RL_SESSION_ID_LEN];
    int seen_next;
    rl_mac mac;
    SSL_CTX *tls;          /* callbacks over TLS when set */
    char tls_name[256];    /* what the relay's certificate must name */
    agent_link *links;
    rl_counter notify_a, notify_b, conn_requests, conn_rejected, links_opened, links_failed, resyncs, acks;
    /* registered, period and keepalive as other threads may read them */
    rl_counter pub_registered, pub_period, pub_keepalive;
};

static void publish(rl_agent *a) {
    atomic_store_explicit(&a->pub_registered, (uint64_t)a->registered, memory_order_relaxed);
    atomic_store_explicit(&a->pub_period, a->period_s, memory_order_relaxed);
    atomic_store_explicit(&a->pub_keepalive, a->keepalive_s, memory_order_relaxed);
}

struct agent_link {
    agent_link *prev, *next;
    rl_agent *a;
    rl_stream *relay, *local;
    uint8_t sid[RL_SESSION_ID_LEN];
    int relay_up;        /* the callback's TCP connect finished */
    int bound;           /* relay answered 0x00 */
    int local_up;
    uint8_t hello[RL_HELLO_MAX];
    size_t hello_len;
};

static void say(rl_agent *a, int level, const char *event, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void say(rl_agent *a, int level, const char *event, const char *fmt, ...) {
    if (!a->log) return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    a->log(a->log_ctx, level, event, text);
}

/* Tells the firmware (on_status), when it asked. */
static void tell(rl_agent *a, int event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tell(rl_agent *a, int event, const char *fmt, ...) {
    if (!a->on_status) return;
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    a->on_status(a->status_ctx, event, text);
}

/* ---- datagrams ---- */

static uint64_t next_counter(rl_agent *a) {
    /* Strictly increasing across restarts: wall-clock microseconds, or +1 if the clock lags. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    a->counter = now > a->counter ? now : a->counter + 1;
    return a->counter;
}

static void send_dgram(rl_agent *a, int type, const uint8_t *body, size_t body_len) {
    uint8_t out[RL_DGRAM_MAX];
    size_t n = rl_dgram_build(&a->mac, out, sizeof out, type, a->id, a->id_len, body, body_len, a->key);
    if (n && send(a->udp_fd, out, n, MSG_DONTWAIT) < 0 && errno == ECONNREFUSED) a->refused = 1;
}

/* The kernel's CSPRNG (getrandom): OpenSSL's RAND_bytes would start its provider and DRBG
 * machinery for these 8 bytes, 2 MB of resident memory on a device that may never use TLS. */
static void nonce(uint8_t *out, size_t len) {
    if (getrandom(out, len, 0) != (ssize_t)len) rl_random_bytes(out, len);
}

static void send_period_request(rl_agent *a) {
    uint8_t body[RL_BODY_PERIOD_REQUEST] = {0};
    nonce(a->client_nonce, sizeof a->client_nonce);
    memcpy(body, a->client_nonce, 8);
    rl_put64(body + 8, next_counter(a)); /* the relay answers each counter once */
    body[16] = RL_PERIOD_CAN_REDIRECT;   /* a cluster node may send CONNECT_REQUEST_TO */
    send_dgram(a, RL_T_PERIOD_REQUEST, body, sizeof body);
}

static void adopt_epoch(rl_agent *a, uint32_t epoch) {
    a->epoch = epoch;
    a->epoch_from = a->counter;
}

static void reregister(rl_agent *a);

/* Every notify gets a NOTIFY_ACK: NO_ANSWER_AFTER in a row without one and the relay is gone
 * (or restarted without us hearing its RESYNC): say so and ask for the period again. */
/* 0, or -1 when it registers again instead (its timers are then off). */
static int send_notify(rl_agent *a, int type) {
    if (a->registered && a->unanswered >= NO_ANSWER_AFTER) {
        if (!a->lost) {
            say(a, RL_LOG_WARNING, "agent.relay_lost",
                "the relay at %s stopped answering (%u notifies without an answer): registering again", a->relay_text,
                a->unanswered);
            tell(a, RL_AGENT_RELAY_LOST, "%s stopped answering", a->relay_text);
        }
        a->lost = 1;
        reregister(a);
        return -1;
    }
    uint8_t body[RL_BODY_NOTIFY];
    rl_put32(body, a->epoch);
    rl_put64(body + 4, next_counter(a));
    send_dgram(a, type, body, sizeof body);
    a->unanswered++;
    if (type == RL_T_NOTIFY_A) CTR_INC(a->notify_a);
    else CTR_INC(a->notify_b);
    return 0;
}

/* After NO_ANSWER_AFTER period requests without PERIOD_INFO: what the agent sees, and why. */
static void diagnose_silence(rl_agent *a) {
    if (a->unanswered != NO_ANSWER_AFTER) return; /* once per series */
    if (a->rejected >= 2)
        say(a, RL_LOG_ERROR, "agent.rejected",
            "the relay at %s rejects this device: check --id and --key (the ID given to `relay device add` and "
            "the secret it printed)", a->relay_text);
    else if (a->refused)
        say(a, RL_LOG_ERROR, "agent.no_relay",
            "nothing listens on UDP %s (the host answers, the port is closed): is --relay the relay's UDP port "
            "(its --udp, 4700 by default)?", a->relay_text);
    else
        say(a, RL_LOG_ERROR, "agent.no_answer",
            "no answer from %s after %u period requests: is --relay the relay's UDP port (its --udp, 4700 by "
            "default), is the relay running and reachable from here?", a->relay_text, a->unanswered);
}

static void arm_s(struct event *ev, uint32_t seconds) {
    struct timeval tv = {seconds, 0};
    evtimer_add(ev, &tv);
}

static uint32_t a_interval(const rl_agent *a) {
    return a->period_s >= 2 ? a->period_s / 2 : 1;
}

static void on_period_timer(evutil_socket_t fd, short what, void *arg) {
    rl_agent *a = arg;
    if (a->registered) return;
    diagnose_silence(a);
    send_period_request(a);
    a->unanswered++;
    struct timeval tv = {a->backoff_ms / 1000, (a->backoff_ms % 1000) * 1000};
    evtimer_add(a->period_timer, &tv);
    a->backoff_ms = a->backoff_ms * 2 > 30000 ? 30000 : a->backoff_ms * 2;
}

static void on_a_timer(evutil_socket_t fd, short what, void *arg) {
    rl_agent *a = arg;
    if (send_notify(a, RL_T_NOTIFY_A) != 0) return;
    arm_s(a->a_timer, a_interval(a));
    arm_s(a->b_timer, a->keepalive_s); /* A also refreshes the NAT mapping */
}

static void on_b_timer(evutil_socket_t fd, short what, void *arg) {
    rl_agent *a = arg;
    if (send_notify(a, RL_T_NOTIFY_B) != 0) return;
    arm_s(a->b_timer, a->keepalive_s);
}

static void start_notifying(rl_agent *a) {
    on_a_timer(-1, 0, a);
}

/* Back to period requests (relay lost or restarted): notifies stop until PERIOD_INFO. */
static void reregister(rl_agent *a) {
    a->registered = 0;
    publish(a);
    evtimer_del(a->a_timer);
    evtimer_del(a->b_timer);
    a->unanswered = 0;
    a->rejected = 0;
    a->refused = 0;
    a->backoff_ms = 1000;
    on_period_timer(-1, 0, a);
}

/* A NOTIFY_ACK for a counter we sent (and did not hear answered yet): 0, else -1. */
static int on_ack(rl_agent *a, const rl_dgram *d) {
    uint64_t echoed = rl_get64(d->body);
    if (echoed <= a->acked || echoed > a->counter || rl_get32(d->body + 8) != a->epoch) return -1;
    a->acked = echoed;
    a->unanswered = 0;
    CTR_INC(a->acks);
    if (a->lost) {
        a->lost = 0;
        say(a, RL_LOG_NOTICE, "agent.relay_back", "the relay at %s answers again", a->relay_text);
        tell(a, RL_AGENT_RELAY_BACK, "%s answers again", a->relay_text);
    }
    if (a->leaving && echoed >= a->leave_from) {
        tell(a, RL_AGENT_LEFT, "%s was told", a->relay_text);
        event_base_loopbreak(a->base);
    }
    return 0;
}

static void open_link(rl_agent *a, const uint8_t *sid, const uint8_t *nonce, uint16_t port, const uint8_t *to);

/* The relay's PERIOD_INFO for the request we are waiting on: registered. */
static void on_period_info(rl_agent *a, const rl_dgram *d) {
    if (a->registered || memcmp(d->body, a->client_nonce, 8) != 0) return; /* stale or replayed */
    adopt_epoch(a, rl_get32(d->body + 8));
    a->period_s = rl_get32(d->body + 12);
    a->keepalive_s = rl_get32(d->body + 16);
    a->cb_port = rl_get16(d->body + 20);
    if (a->period_s < 1) a->period_s = 1;
    if (a->keepalive_s < 1) a->keepalive_s = 1;
    a->registered = 1;
    a->unanswered = 0;
    a->lost = 0;
    memset(a->client_nonce, 0, sizeof a->client_nonce);
    evtimer_del(a->period_timer);
    publish(a);
    say(a, RL_LOG_INFO, "agent.registered", "registered with the relay at %s: period %u s, keepalive %u s, callbacks to port %u",
        a->relay_text, a->period_s, a->keepalive_s, a->cb_port);
    tell(a, RL_AGENT_REGISTERED, "%s: period %u s, keepalive %u s", a->relay_text, a->period_s, a->keepalive_s);
    if (!a->leaving) start_notifying(a);
}

static void on_resync(rl_agent *a, const rl_dgram *d) {
    /* Only an answer to a notify sent under the epoch we hold now: a replayed older RESYNC
     * would hand us a past epoch (and a re-registration) for nothing. */
    uint64_t echoed = rl_get64(d->body);
    if (echoed <= a->epoch_from || echoed > a->counter || rl_get32(d->body + 8) == a->epoch) return;
    /* The relay restarted: take its new epoch, re-register at once, and refresh the period
     * (it may have been reconfigured). */
    CTR_INC(a->resyncs);
    say(a, RL_LOG_NOTICE, "agent.resync", "the relay at %s restarted: registering again", a->relay_text);
    tell(a, RL_AGENT_RESYNC, "%s restarted", a->relay_text);
    adopt_epoch(a, rl_get32(d->body + 8));
    start_notifying(a);
    reregister(a);
}

/* CONNECT_REQUEST, or CONNECT_REQUEST_TO (`to` its callback address: the terminal's node in a
 * cluster, covered by the tag like the rest). */
static void on_connect_request(rl_agent *a, const rl_dgram *d, const uint8_t *to) {
    const uint8_t *sid = d->body, *nonce = d->body + 16;
    CTR_INC(a->conn_requests);
    int dup = 0;
    for (int k = 0; k < SEEN_SIDS && !dup; k++) dup = memcmp(a->seen[k], sid, RL_SESSION_ID_LEN) == 0;
    int unbound = 0, connecting = 0, attempts = 0;
    for (agent_link *l = a->links; l; l = l->next) {
        unbound += !l->bound;
        if (memcmp(l->sid, sid, RL_SESSION_ID_LEN) == 0) {
            attempts++;
            connecting += !l->relay_up;
        }
    }
    /* A resend for a session already answered: nothing to do, unless its callback is still
     * connecting (a lost SYN waits for TCP's own retry, 1 s then 3 s): then a fresh attempt,
     * and the first to connect wins. */
    if (dup && (!connecting || attempts >= ATTEMPTS_PER_SESSION)) return;
    if (unbound >= MAX_UNBOUND_LINKS) return; /* not remembered: a resend may get through */
    if (!dup) {
        memcpy(a->seen[a->seen_next], sid, RL_SESSION_ID_LEN);
        a->seen_next = (a->seen_next + 1) % SEEN_SIDS;
    }
    open_link(a, sid, nonce, rl_get16(d->body + 32), to);
}

/* One datagram from the relay: acted on only once its tag verifies (REJECT excepted). */
static void on_datagram(rl_agent *a, const uint8_t *buf, size_t n) {
    rl_dgram d;
    if (rl_dgram_parse(buf, n, &d) != 0 || d.id_len != a->id_len || memcmp(d.id, a->id, a->id_len) != 0)
        return; /* not for us */
    if (d.type == RL_T_REJECT) {
        /* Unauthenticated (the relay may not know our key): it only makes us say why we are
         * not registered, and only for the request we are waiting on. */
        if (!a->registered && memcmp(d.body, a->client_nonce, 8) == 0) a->rejected++;
        return;
    }
    if (!rl_dgram_verify(&a->mac, a->key, buf, n)) return; /* forged */
    switch (d.type) {
    case RL_T_PERIOD_INFO: on_period_info(a, &d); break;
    case RL_T_NOTIFY_ACK: on_ack(a, &d); break;
    case RL_T_NOTIFY_ACK_MOVED:
        /* A new NAT mapping as the relay sees it: confirm it soon, while it still has its
         * short unanswered timeout, so the NAT keeps it for its long one (PROTOCOL.md,
         * "Keepalive arithmetic"). */
        if (on_ack(a, &d) == 0 && a->registered && !a->leaving && a->keepalive_s > CONFIRM_AFTER_S)
            arm_s(a->b_timer, CONFIRM_AFTER_S);
        break;
    case RL_T_RESYNC: on_resync(a, &d); break;
    case RL_T_CONNECT: on_connect_request(a, &d, NULL); break;
    case RL_T_CONNECT_TO: on_connect_request(a, &d, d.body + 36); break;
    default: break;
    }
}

static void on_udp(evutil_socket_t fd, short what, void *arg) {
    rl_agent *a = arg;
    uint8_t buf[512];
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == ECONNREFUSED) a->refused = 1; /* ICMP port unreachable from the relay's host */
        if (n <= 0) return;
        on_datagram(a, buf, (size_t)n);
    }
}

/* ---- callback links ---- */

static void link_failed(rl_agent *a, const char *why) {
    CTR_INC(a->links_failed);
    tell(a, RL_AGENT_LINK_FAILED, "%s", why);
}

static void link_free(agent_link *l) {
    rl_agent *a = l->a;
    if (l->prev) l->prev->next = l->next;
    else a->links = l->next;
    if (l->next) l->next->prev = l->prev;
    rl_stream_free(l->relay);
    rl_stream_free(l->local);
    free(l);
}

/* Moves bytes both ways with back-pressure; closes when both directions have ended. */
static void link_pump(agent_link *l) {
    if (!l->bound || !l->local_up) return;
    rl_stream *r = l->relay, *c = l->local;
    if (evbuffer_get_length(r->in)) evbuffer_add_buffer(c->out, r->in);
    if (evbuffer_get_length(c->in)) evbuffer_add_buffer(r->out, c->in);
    rl_stream_flush(c);
    rl_stream_flush(r);
    rl_stream_read(r, !rl_stream_out_high(c));
    rl_stream_read(c, !rl_stream_out_high(r));
    if (r->eof) rl_stream_shutdown_after_flush(c);
    if (c->eof) rl_stream_shutdown_after_flush(r);
    if (r->eof && c->eof && !evbuffer_get_length(r->out) && !evbuffer_get_length(c->out)) link_free(l);
}

static void local_side_cb(rl_stream *st, int event, void *arg);

/* on_link: the link's local side is one end of a socket pair, the firmware gets the other.
 * (Not the relay's socket itself: bytes after the status may already sit in our buffer,
 * and with TLS the firmware would have to speak it.) 0, or -1. */
static int hand_over(agent_link *l) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    l->local = rl_stream_new(l->a->base, sv[0], 0, local_side_cb, l);
    if (!l->local) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    l->local_up = 1;
    rl_stream_read(l->local, 1);
    if (l->a->on_link(l->a->status_ctx, sv[1]) != 0) {
        close(sv[1]);
        return -1;
    }
    return 0;
}

static void relay_side_cb(rl_stream *st, int event, void *arg) {
    agent_link *l = arg;
    switch (event) {
    case RL_STREAM_CONNECTED:
        for (agent_link *o = l->a->links; o; o = o->next)
            if (o != l && o->relay_up && memcmp(o->sid, l->sid, RL_SESSION_ID_LEN) == 0) {
                link_free(l); /* another attempt for this session got there first */
                return;
            }
        l->relay_up = 1;
        evbuffer_add(st->out, l->hello, l->hello_len);
        rl_stream_flush(st);
        rl_stream_read(st, 1);
        return;
    case RL_STREAM_READ_READY:
    case RL_STREAM_EOF:
        if (!l->bound) {
            uint8_t status;
            if (evbuffer_remove(st->in, &status, 1) != 1) {
                link_failed(l->a, "the relay closed the callback before answering");
                say(l->a, RL_LOG_WARNING, "agent.callback_failed",
                    "the relay closed the callback before answering its hello%s",
                    l->a->tls ? " (with TLS: does the relay have --tls-cert, and is --ca its CA?)" : "");
                link_free(l); /* closed before answering */
                return;
            }
            if (status != RL_CB_OK) {
                link_failed(l->a, "the relay refused the callback");
                static const char *why[] = {"", "malformed hello", "unknown or expired session (the wake ended)",
                                            "proof does not verify: check --key", "the session already has a link",
                                            "device certificate missing, invalid, or for another device",
                                            "too many unfinished callbacks from this address"};
                if (status != RL_CB_ALREADY_BOUND) /* another attempt of ours won: no news */
                    say(l->a, RL_LOG_WARNING, "agent.callback_refused", "the relay refused a callback: status 0x%02x, %s",
                        status, status < sizeof why / sizeof why[0] ? why[status] : "unknown status");
                link_free(l);
                return;
            }
            l->bound = 1;
            if (l->a->on_link && hand_over(l) != 0) {
                link_failed(l->a, "no socket pair for the firmware, or it refused the link");
                link_free(l);
                return;
            }
            CTR_INC(l->a->links_opened);
            tell(l->a, RL_AGENT_LINK_OPENED, "%s", l->a->on_link ? "handed to the firmware" : l->a->forward_text);
        }
        link_pump(l);
        return;
    case RL_STREAM_DRAINED:
        link_pump(l);
        return;
    default:
        link_failed(l->a, l->relay_up ? "the relay side of a link failed" : "callback to the relay failed");
        if (!l->relay_up)
            say(l->a, RL_LOG_WARNING, "agent.callback_failed", "callback to the relay's TCP port failed: %s",
                st->error ? strerror(st->error) : "connection error");
        link_free(l);
        return;
    }
}

static void local_side_cb(rl_stream *st, int event, void *arg) {
    agent_link *l = arg;
    switch (event) {
    case RL_STREAM_CONNECTED:
        l->local_up = 1;
        rl_stream_read(st, 1);
        link_pump(l);
        return;
    case RL_STREAM_READ_READY:
    case RL_STREAM_EOF:
    case RL_STREAM_DRAINED:
        link_pump(l);
        return;
    default:
        /* The local web server is unreachable or reset: dropping the link tells the relay. */
        link_failed(l->a, l->local_up ? "the local side of a link failed" : "cannot reach the local server");
        if (!l->local_up)
            say(l->a, RL_LOG_WARNING, "agent.forward_failed", "cannot reach the local server %s (--forward): %s",
                l->a->forward_text, st->error ? strerror(st->error) : "connection error");
        link_free(l);
        return;
    }
}

static void open_link(rl_agent *a, const uint8_t *sid, const uint8_t *nonce, uint16_t port, const uint8_t *to) {
    agent_link *l = calloc(1, sizeof *l);
    if (!l) return;
    l->a = a;
    memcpy(l->sid, sid, RL_SESSION_ID_LEN);
    /* hello: "RLY1" n id sid proof */
    uint8_t *h = l->hello;
    memcpy(h, RL_HELLO_MAGIC, 4);
    h[4] = (uint8_t)a->id_len;
    memcpy(h + 5, a->id, a->id_len);
    memcpy(h + 5 + a->id_len, sid, RL_SESSION_ID_LEN);
    rl_callback_proof(&a->mac, a->key, sid, nonce, h + 5 + a->id_len + RL_SESSION_ID_LEN);
    l->hello_len = 5 + a->id_len + RL_SESSION_ID_LEN + 32;

    struct sockaddr_storage cb = a->relay_addr;
    socklen_t cb_len = a->relay_len;
    if (to) rl_v6_to_sockaddr(to, port, rl_v6_family(to), &cb, &cb_len);
    else if (cb.ss_family == AF_INET6) ((struct sockaddr_in6 *)&cb)->sin6_port = htons(port);
    else ((struct sockaddr_in *)&cb)->sin_port = htons(port);
    /* Both connections start at once: the local one is ready by the time the relay answers. */
    int rfd = rl_tcp_connect((struct sockaddr *)&cb, cb_len);
    int lfd = a->on_link ? -1 : rl_tcp_connect((struct sockaddr *)&a->fwd_addr, a->fwd_len);
    if (rfd >= 0) l->relay = rl_stream_new(a->base, rfd, 1, relay_side_cb, l);
    if (l->relay && a->tls && rl_stream_start_tls(l->relay, a->tls, 0, a->tls_name) != 0) {
        rl_stream_free(l->relay); /* closes rfd */
        l->relay = NULL;
        rfd = -1;
    }
    if (lfd >= 0) l->local = rl_stream_new(a->base, lfd, 1, local_side_cb, l);
    if (!l->relay || (!l->local && !a->on_link)) {
        if (!l->relay && rfd >= 0) close(rfd);
        if (!l->local && lfd >= 0) close(lfd);
        rl_stream_free(l->relay);
        rl_stream_free(l->local);
        free(l);
        link_failed(a, "cannot open a callback or its forward");
        return;
    }
    l->next = a->links;
    if (a->links) a->links->prev = l;
    a->links = l;
}

/* ---- lifecycle ---- */

/* LEAVE until its ACK (on_ack ends the loop), LEAVE_TRIES times at most. */
static void on_leave_timer(evutil_socket_t fd, short what, void *arg) {
    rl_agent *a = arg;
    if (a->leave_tries++ == LEAVE_TRIES) {
        tell(a, RL_AGENT_LEFT, "LEAVE to %s went unanswered", a->relay_text);
        event_base_loopbreak(a->base);
        return;
    }
    uint8_t body[RL_BODY_LEAVE];
    rl_put32(body, a->epoch);
    rl_put64(body + 4, next_counter(a));
    if (!a->leave_from) a->leave_from = a->counter;
    send_dgram(a, RL_T_LEAVE, body, sizeof body);
    struct timeval tv = {0, 250000};
    evtimer_add(a->leave_timer, &tv);
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
    rl_agent *a = arg;
    char drain[16];
    while (read(a->stop_pipe[0], drain, sizeof drain) > 0) {
    }
    if (!a->registered || a->leaving) {
        event_base_loopbreak(a->base);
        return;
    }
    /* Tell the relay, so that terminals get 503 at once rather than 504 after a wake. */
    a->leaving = 1;
    evtimer_del(a->a_timer);
    evtimer_del(a->b_timer);
    on_leave_timer(-1, 0, a);
}

int rl_agent_parse_secret(const char *hex, uint8_t secret[RL_SECRET_LEN]) {
    if (!hex) return -1;
    while (*hex == ' ' || *hex == '\t' || *hex == '\n' || *hex == '\r') hex++;
    size_t n = strlen(hex);
    while (n && (hex[n - 1] == ' ' || hex[n - 1] == '\t' || hex[n - 1] == '\n' || hex[n - 1] == '\r')) n--;
    if (n != 2 * RL_SECRET_LEN) return -1;
    return rl_unhex(hex, n, secret, RL_SECRET_LEN);
}

/* The callback's TLS client context, and the name the relay's certificate must carry. */
static int setup_tls(rl_agent *a, const rl_agent_config *cfg, char *err, size_t err_len) {
    a->tls = rl_tls_client_ctx(cfg->tls_ca, cfg->tls_cert, cfg->tls_key, err, err_len);
    if (!a->tls) return -1;
    if (cfg->tls_name && cfg->tls_name[0]) {
        snprintf(a->tls_name, sizeof a->tls_name, "%s", cfg->tls_name);
        return 0;
    }
    /* The host of --relay: "name:port", "[v6]:port" or "v4:port". */
    const char *h = cfg->relay, *end = strrchr(h, ':');
    if (h[0] == '[') {
        h++;
        end = strchr(h, ']');
    }
    size_t n = end ? (size_t)(end - h) : strlen(h);
    snprintf(a->tls_name, sizeof a->tls_name, "%.*s", (int)n, h);
    return 0;
}

/* The loop, its events, and the pipe rl_agent_stop writes to. */
static int setup_loop(rl_agent *a, char *err, size_t err_len) {
    if (pipe(a->stop_pipe) != 0) {
        rl_set_err(err, err_len, "cannot open a pipe: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(a->stop_pipe[i], F_SETFL, O_NONBLOCK);
        fcntl(a->stop_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    a->base = event_base_new();
    if (!a->base) return -1;
    a->udp_ev = event_new(a->base, a->udp_fd, EV_READ | EV_PERSIST, on_udp, a);
    a->period_timer = evtimer_new(a->base, on_period_timer, a);
    a->a_timer = evtimer_new(a->base, on_a_timer, a);
    a->b_timer = evtimer_new(a->base, on_b_timer, a);
    a->stop_ev = event_new(a->base, a->stop_pipe[0], EV_READ | EV_PERSIST, on_stop, a);
    a->leave_timer = evtimer_new(a->base, on_leave_timer, a);
    return a->udp_ev && a->period_timer && a->a_timer && a->b_timer && a->stop_ev && a->leave_timer ? 0 : -1;
}

rl_agent *rl_agent_new(const rl_agent_config *cfg, char *err, size_t err_len) {
    /* No evthread here (rl_init_threads is the relay core's): nothing crosses threads but
     * rl_agent_stop's pipe byte and the stats' atomics. */
    size_t id_len = cfg->device_id ? strlen(cfg->device_id) : 0;
    if (!rl_device_id_valid(cfg->device_id, id_len)) {
        rl_set_err(err, err_len, "device ID must be 1-63 of a-z, 0-9 and -, not starting or ending with -");
        return NULL;
    }
    rl_agent *a = calloc(1, sizeof *a);
    if (!a) {
        rl_set_err(err, err_len, "out of memory");
        return NULL;
    }
    a->udp_fd = -1;
    a->stop_pipe[0] = a->stop_pipe[1] = -1;
    memcpy(a->id, cfg->device_id, id_len);
    a->id_len = id_len;
    if (rl_derive_device_key(cfg->secret, a->key) != 0 || rl_mac_init(&a->mac) != 0) {
        rl_set_err(err, err_len, "cannot initialise HMAC");
        goto fail;
    }
    char sub[256];
    if (rl_parse_addr(cfg->relay, &a->relay_addr, &a->relay_len, sub, sizeof sub) != 0) {
        rl_set_err(err, err_len, "--relay: %s", sub);
        goto fail;
    }
    if (!(cfg->on_link && (!cfg->forward || !cfg->forward[0])) &&
        rl_parse_addr(cfg->forward, &a->fwd_addr, &a->fwd_len, sub, sizeof sub) != 0) {
        rl_set_err(err, err_len, "--forward: %s", sub);
        goto fail;
    }
    a->udp_fd = socket(a->relay_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* A connected socket only receives from the relay: the kernel drops anything else. */
    if (a->udp_fd < 0 || connect(a->udp_fd, (struct sockaddr *)&a->relay_addr, a->relay_len) != 0) {
        rl_set_err(err, err_len, "cannot open UDP to %s: %s", cfg->relay, strerror(errno));
        goto fail;
    }
    if (cfg->tls_ca && setup_tls(a, cfg, err, err_len) != 0) goto fail;
    if (setup_loop(a, err, err_len) != 0) goto fail;
    snprintf(a->relay_text, sizeof a->relay_text, "%s", cfg->relay);
    snprintf(a->forward_text, sizeof a->forward_text, "%s", cfg->forward ? cfg->forward : "");
    a->log = cfg->log;
    a->log_ctx = cfg->log_ctx;
    a->on_status = cfg->on_status;
    a->on_link = cfg->on_link;
    a->status_ctx = cfg->status_ctx;
    event_add(a->stop_ev, NULL); /* a stop before rl_agent_run is seen when it starts */
    a->period_s = 300;
    a->keepalive_s = 25;
    publish(a);
    return a;
fail:
    if (err && !err[0]) rl_set_err(err, err_len, "cannot create the agent");
    rl_agent_free(a);
    return NULL;
}

int rl_agent_run(rl_agent *a) {
    event_add(a->udp_ev, NULL);
    a->backoff_ms = 1000;
    on_period_timer(-1, 0, a);
    event_base_loop(a->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return 0;
}

void rl_agent_stop(rl_agent *a) {
    if (a && a->stop_pipe[1] >= 0) {
        int saved = errno; /* a signal handler may call this */
        ssize_t n = write(a->stop_pipe[1], "s", 1);
        (void)n; /* a full pipe already holds a stop */
        errno = saved;
    }
}

void rl_agent_stats_get(const rl_agent *a, rl_agent_stats *o) {
    memset(o, 0, sizeof *o);
    o->registered = (uint32_t)CTR_GET(a->pub_registered);
    o->period_s = (uint32_t)CTR_GET(a->pub_period);
    o->keepalive_s = (uint32_t)CTR_GET(a->pub_keepalive);
    o->notify_a_sent = CTR_GET(a->notify_a);
    o->notify_b_sent = CTR_GET(a->notify_b);
    o->conn_requests = CTR_GET(a->conn_requests);
    o->conn_requests_rejected = CTR_GET(a->conn_rejected);
    o->links_opened = CTR_GET(a->links_opened);
    o->links_failed = CTR_GET(a->links_failed);
    o->resyncs = CTR_GET(a->resyncs);
    o->acks = CTR_GET(a->acks);
}

void rl_agent_free(rl_agent *a) {
    if (!a) return;
    while (a->links) link_free(a->links);
    if (a->udp_ev) event_free(a->udp_ev);
    if (a->period_timer) event_free(a->period_timer);
    if (a->a_timer) event_free(a->a_timer);
    if (a->b_timer) event_free(a->b_timer);
    if (a->stop_ev) event_free(a->stop_ev);
    if (a->leave_timer) event_free(a->leave_timer);
    if (a->base) event_base_free(a->base);
    if (a->udp_fd >= 0) close(a->udp_fd);
    if (a->stop_pipe[0] >= 0) close(a->stop_pipe[0]);
    if (a->stop_pipe[1] >= 0) close(a->stop_pipe[1]);
    rl_mac_free(&a->mac);
    if (a->tls) SSL_CTX_free(a->tls);
    free(a);
}
