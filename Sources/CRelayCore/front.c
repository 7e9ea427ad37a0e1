/*
 * front.c: the terminal side [claims 2, 16]. Reads HTTP/1.x request heads, finds the
 * device (Host or /d/ID/ prefix), checks the token and the device's liveness, then wakes
 * the device or reuses an idle link, and forwards requests with credentials removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "core_types.h"
#include "node.h"
#include "front.h"
#include "records.h"
#include "session.h"
#include "exchange.h"
#include "liveness.h"
#include "http.h"
#include "netaddr.h"
#include "flow.h"
#include "rewrite.h"
#include "route.h"

static void term_cb(rl_stream *st, int event, void *arg);
static void on_head_timeout(evutil_socket_t fd, short what, void *arg);
static void term_arm_timer(rl_term *t);
static void term_on_head(rl_term *t);
static void term_bound(rl_term *t);
static void term_head_started(rl_term *t);
static const rl_term_ops term_ops;

static void count_answer(rl_core *core, int status);

static struct timeval header_timeout(const rl_core *core) {
    return rl_timeval_ms(core->cfg.header_timeout_ms);
}

/* Over a per-source limit: a short 429 straight from the accept, no state kept. */
static void refuse_source(rl_core *core, int fd, const char *why) {
    char buf[256];
    int body = (int)strlen(why);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                     body, why);
    (void)!send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    count_answer(core, 429);
    /* Unread input makes close() send a reset that can overtake the answer: take what has
     * arrived. (A request still in flight may still see a reset: a refusal all the same.) */
    char sink[4096];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void accept_terminal(rl_core *core, evutil_socket_t fd, struct sockaddr *sa, int tls);

void rl_front_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg) {
    accept_terminal(arg, fd, sa, 0);
}

void rl_front_accept_tls(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg) {
    accept_terminal(arg, fd, sa, 1);
}

static void accept_terminal(rl_core *core, evutil_socket_t fd, struct sockaddr *sa, int tls) {
    if (rl_core_fd_refused(core, fd)) return;
    uint8_t addr[16];
    uint16_t port;
    rl_addr_to_v6(sa, addr, &port);
    /* Tallied only while a per-source limit is on: no table work for a relay without them. */
    int limited = core->cfg.max_conns_per_source || core->cfg.conn_rate_per_source;
    rl_tally_entry *src = limited ? rl_tally_get(&core->sources, addr, rl_core_now_s(core)) : NULL;
    if (src && core->cfg.max_conns_per_source && src->open >= core->cfg.max_conns_per_source) {
        CTR_INC(core->ctr.limited_source_conns);
        refuse_source(core, fd, "too many open connections from your address\n");
        return;
    }
    if (src && core->cfg.conn_rate_per_source && src->window_events >= core->cfg.conn_rate_per_source) {
        CTR_INC(core->ctr.limited_source_rate);
        refuse_source(core, fd, "too many new connections from your address; retry in a second\n");
        return;
    }
    rl_term *t = calloc(1, sizeof *t); /* fd: non-blocking, from accept4 */
    if (!t) {
        close(fd);
        return;
    }
    t->core = core;
    t->ops = &term_ops;
    t->st = rl_stream_new(core->base, fd, 0, term_cb, t);
    t->head_timer = evtimer_new(core->base, on_head_timeout, t);
    if (t->st && tls && (!core->tls || rl_stream_start_tls(t->st, core->tls->terminal, 1, NULL) != 0)) {
        rl_stream_free(t->st);
        t->st = NULL;
        fd = -1; /* closed with the stream */
    }
    if (!t->st || !t->head_timer) {
        if (t->st) rl_stream_free(t->st);
        else if (fd >= 0) close(fd);
        if (t->head_timer) event_free(t->head_timer);
        free(t);
        return;
    }
    if (sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, t->peer, sizeof t->peer);
    else inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, t->peer, sizeof t->peer);
    t->started_us = rl_mono_us();
    t->state = TERM_HEAD;
    if (src) {
        src->open++;
        src->window_events++;
        t->source = src;
    }
    t->next = core->terms;
    if (core->terms) core->terms->prev = t;
    core->terms = t;
    CTR_INC(core->ctr.terminals_open);
    t->head_since_us = t->started_us; /* the first head's clock starts at the accept */
    term_arm_timer(t);
    rl_stream_read(t->st, 1);
}

/* ---- closing ---- */

static void term_destroy(rl_reap *node) {
    rl_term *t = (rl_term *)node;
    event_free(t->head_timer);
    rl_stream_free(t->st);
    free(t);
}

/* Closes the terminal now (unlinked, silent, its source's slot free) and frees it after the
 * current callback (reap.h); its session (if any) is detached: idle for reuse, or ended. */
void rl_term_close(rl_term *t, int outcome) {
    if (t->dying) return;
    rl_core *core = t->core;
    t->dying = 1;
    rl_session *s = t->sess;
    if (s) {
        rl_xchg_record(t, 0, outcome);
        rl_unpair(t);
        if (s->state == SESS_WAKING) rl_session_end(s);
        else rl_session_detach(s);
    }
    if (t->prev) t->prev->next = t->next;
    else core->terms = t->next;
    if (t->next) t->next->prev = t->prev;
    CTR_DEC(core->ctr.terminals_open);
    if (t->source) t->source->open--;
    if (t->st->ssl && !t->tls_seen) CTR_INC(core->ctr.tls_terminal_failed); /* never finished its handshake */
    evtimer_del(t->head_timer);
    rl_stream_mute(t->st);
    rl_reap_later(core, &t->reap, term_destroy);
}

void rl_term_close_all(rl_core *core) {
    while (core->terms) rl_term_close(core->terms, RL_OUTCOME_ABORTED);
}

void rl_term_close_idle(rl_core *core) {
    rl_term *t = core->terms;
    while (t) {
        rl_term *next = t->next;
        int nothing_pending = evbuffer_get_length(t->st->in) == 0;
        if (t->state == TERM_HEAD && nothing_pending) {
            rl_term_close(t, RL_OUTCOME_ABORTED);
        } else if (t->state == TERM_BOUND && nothing_pending && t->sess && t->sess->link &&
                   rl_session_at_boundary(t->sess) && evbuffer_get_length(t->sess->link->in) == 0) {
            rl_xchg_finish(t); /* keep-alive connection between two requests */
        }
        t = next;
    }
}

const uint16_t rl_answer_codes[RL_ANSWER_CODES] = {200, 302, 308, 400, 401, 403, 404, 408, 429, 431, 502, 503, 504};

static void count_answer(rl_core *core, int status) {
    int i = 0;
    while (i < RL_ANSWER_CODES && rl_answer_codes[i] != status) i++;
    CTR_INC(core->ctr.answers[i]);
}

/* The relay answers by itself and closes once the answer is written. */
/* Writes what is queued, half-closes, and frees `t` once the terminal has it (DRAINED) or
 * closes too (EOF), or at the header timeout: a terminal that never reads must not hold the
 * connection forever. `watch_fin`: keep reading (and discarding) to see the terminal's FIN. */
static void term_close_after_flush(rl_term *t, int watch_fin) {
    rl_stream_read(t->st, watch_fin);
    struct timeval linger = header_timeout(t->core);
    evtimer_add(t->head_timer, &linger);
    t->state = TERM_CLOSING;
    rl_stream_shutdown_after_flush(t->st);
}

static void term_answer(rl_term *t, int status, const char *extra, const char *body) {
    count_answer(t->core, status);
    char headers[2800];
    if (status == 401) { /* RFC 9110 11.6.1: say which scheme would do */
        snprintf(headers, sizeof headers, "WWW-Authenticate: Bearer realm=\"relay\"\r\n%s", extra ? extra : "");
        extra = headers;
    }
    if (t->wants_html && status >= 400) rl_http_respond_page(t->st->out, status, extra, body);
    else rl_http_respond(t->st->out, status, extra, body);
    t->bytes_to_terminal += evbuffer_get_length(t->st->out);
    term_close_after_flush(t, 0);
}

static void term_fail(rl_term *t, int status, const char *body) {
    rl_session *s = t->sess;
    if (s) {
        rl_xchg_record(t, status, status == 504 ? RL_OUTCOME_TIMEOUT : RL_OUTCOME_DEVICE_LOST);
        rl_unpair(t);
    }
    if (status) term_answer(t, status, NULL, body);
    else rl_term_close(t, RL_OUTCOME_DEVICE_LOST);
}

static void count_refusal(rl_core *core, int status) {
    switch (status) {
    case 400: case 408: case 431: CTR_INC(core->ctr.refused_bad_request); break;
    case 401: CTR_INC(core->ctr.refused_unauthorized); break;
    case 403: CTR_INC(core->ctr.refused_forbidden); break;
    case 404: CTR_INC(core->ctr.refused_unknown); break;
    case 503: CTR_INC(core->ctr.refused_offline); break;
    default: break;
    }
}

static void term_refuse(rl_term *t, rl_route *r) {
    if (r->own_endpoint) {
        term_answer(t, r->status, r->extra[0] ? r->extra : NULL, r->body);
        return;
    }
    count_refusal(t->core, r->status);
    rl_session_record rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.device_id, sizeof rec.device_id, "%s", r->device);
    rec.status = (uint32_t)r->status;
    rec.outcome = RL_OUTCOME_REFUSED;
    rec.duration_us = rl_mono_us() - t->started_us;
    if (r->status != 200 && r->status != 302) rl_core_push_record(t->core, &rec);
    term_answer(t, r->status, r->extra[0] ? r->extra : NULL, r->body);
}

/* ---- routing and authentication ---- */

/* ---- the first request: decide, then wake or reuse ---- */

/* No complete head yet: too large, the terminal gone, or this head's header timeout starts. */
static void term_head_incomplete(rl_term *t) {
    struct evbuffer *in = t->st->in;
    if (evbuffer_get_length(in) > t->core->cfg.max_header_bytes) {
        rl_route r = {.status = 431, .body = "request head too large\n"};
        term_refuse(t, &r);
    } else if (t->st->eof) {
        rl_term_close(t, RL_OUTCOME_ABORTED);
    } else if (!t->head_since_us && evbuffer_get_length(in) > 0) {
        term_head_started(t);
    }
}

/* A new wake within the device's limits, counted (a wake and an open session) in its tally
 * entry, returned in `dev` (NULL when no limit is on): 0; or -1 with the 429 in `r`. The
 * tally is the one every loop shares, so the limits hold for the device whichever loops its
 * terminals reach. */
static int device_limits(rl_core *core, rl_route *r, rl_tally_entry **dev) {
    uint8_t key[16] = {0};
    memcpy(key, &r->id_hash, sizeof r->id_hash);
    *dev = NULL;
    if (!core->cfg.max_sessions_per_device && !core->cfg.wakes_per_device_minute) return 0;
    rl_tally *tally = rl_node_devices_lock(core);
    uint32_t now = rl_core_now_s(core);
    rl_tally_entry *d = rl_tally_get(tally, key, now);
    int rc = 0;
    if (d && core->cfg.max_sessions_per_device && d->open >= core->cfg.max_sessions_per_device) {
        CTR_INC(core->ctr.limited_device_sessions);
        rl_route_answer(r, 429, "device %s has too many sessions open; retry later\n", r->device);
        snprintf(r->extra, sizeof r->extra, "Retry-After: 1\r\n");
        rc = -1;
    } else if (d && core->cfg.wakes_per_device_minute && d->window_events >= core->cfg.wakes_per_device_minute) {
        CTR_INC(core->ctr.limited_device_wakes);
        uint32_t left = d->window_start + tally->window_s - now;
        rl_route_answer(r, 429, "device %s was woken too often in the last minute; retry later\n", r->device);
        snprintf(r->extra, sizeof r->extra, "Retry-After: %u\r\n", left ? left : 1);
        rc = -1;
    } else if (d) {
        d->window_events++;
        d->open++;
        *dev = d;
    }
    rl_node_devices_unlock(core);
    return rc;
}

/* An allowed first head: served on the idle link it names, or the device is woken. The head
 * stays in the buffer: the exchange forwards it once a link is there (its token is the
 * connection's remembered one by then: no second MAC). */
static void term_start(rl_term *t, rl_route *r) {
    rl_core *core = t->core;
    t->head_since_us = 0;
    evtimer_del(t->head_timer);
    rl_flow_next(&t->req);
    t->req.raw = 0;
    rl_session *s = r->has_reuse_sid ? rl_session_find(core, r->reuse_sid) : NULL;
    if (s && s->state == SESS_IDLE && s->id_hash == r->id_hash) {
        t->reused = 1;
        t->state = TERM_BOUND;
        CTR_INC(core->ctr.sessions_reused);
        rl_session_attach(s, t);
        term_bound(t);
        return;
    }
    rl_tally_entry *dev;
    if (device_limits(core, r, &dev) != 0) {
        term_refuse(t, r);
        return;
    }
    rl_stream_read(t->st, 0); /* hold further bytes in the kernel until the device is here */
    t->state = TERM_WAKING;
    s = rl_session_wake(core, t, r->device, r->id_hash, r->remote);
    if (!s) {
        if (dev) { /* no session holds it open after all (the wake still counts) */
            rl_node_devices_lock(core);
            dev->open--;
            rl_node_devices_unlock(core);
        }
        CTR_INC(core->ctr.refused_capacity);
        term_answer(t, 503, NULL, "relay busy: too many sessions\n");
        return;
    }
    s->tally = dev;
}

static void term_on_head(rl_term *t) {
    rl_core *core = t->core;
    struct evbuffer *in = t->st->in;
    size_t head_len = rl_flow_find_head(in);
    if (!head_len) {
        term_head_incomplete(t);
        return;
    }
    rl_head h;
    rl_route r;
    memset(&r, 0, sizeof r);
    if (head_len > core->cfg.max_header_bytes) {
        rl_route_answer(&r, 431, "%s", "request head too large\n");
        term_refuse(t, &r);
        return;
    }
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)head_len);
    if (rl_flow_head(&t->req, HTTP_REQUEST, p, head_len, &h) != 0) {
        rl_route_answer(&r, 400, "malformed HTTP request: %s\n", h.error ? h.error : "not HTTP/1.x");
        term_refuse(t, &r);
        return;
    }
    rl_route_request(core, &h, t->st->ssl != NULL, &t->auth, &r);
    t->wants_html = r.wants_html;
    if (r.status) term_refuse(t, &r);
    else term_start(t, &r);
}

static void term_bound(rl_term *t) {
    t->state = TERM_BOUND;
    t->last_active_s = rl_core_now_s(t->core);
    t->head_since_us = 0;
    term_arm_timer(t);
    rl_xchg_begin(t);
}

/* No session now: the connection's next head is read, routed and checked as a first one. */
static void term_next_head(rl_term *t) {
    t->state = TERM_HEAD;
    t->bytes_to_device = t->bytes_to_terminal = 0;
    t->started_us = rl_mono_us();
    t->reused = 0;
    t->head_since_us = 0;
    t->last_active_s = rl_core_now_s(t->core);
    term_arm_timer(t);
    rl_flow_next(&t->req);
    rl_stream_read(t->st, 1);
    if (evbuffer_get_length(t->st->in) > 0) term_on_head(t);
}

static void term_linger(rl_term *t) {
    term_close_after_flush(t, 1);
}

static void term_head_started(rl_term *t) {
    t->head_since_us = rl_mono_us(); /* the header timeout runs from this head's first byte */
    term_arm_timer(t);
}

static const rl_term_ops term_ops = {
    .bound = term_bound,
    .fail = term_fail,
    .close = rl_term_close,
    .linger = term_linger,
    .next_head = term_next_head,
    .head_started = term_head_started,
};

/* ---- events ---- */

static void term_cb(rl_stream *st, int event, void *arg) {
    rl_term *t = arg;
    if (st->ssl && !t->tls_seen && SSL_is_init_finished(st->ssl)) {
        t->tls_seen = 1;
        CTR_INC(t->core->ctr.tls_terminal_ok);
    }
    switch (event) {
    case RL_STREAM_READ_READY:
    case RL_STREAM_EOF:
        if (t->state == TERM_HEAD) {
            term_on_head(t);
        } else if (t->state == TERM_BOUND) {
            rl_xchg_pump_request(t);
            if (event == RL_STREAM_EOF && !t->dying && t->state == TERM_BOUND && t->sess && !t->req.raw &&
                rl_pipeline_len(&t->sess->pipe) == 0)
                rl_term_close(t, RL_OUTCOME_RELAYED);
        } else if (t->state == TERM_WAKING && event == RL_STREAM_EOF) {
            rl_term_close(t, RL_OUTCOME_ABORTED);
        } else if (t->state == TERM_CLOSING) {
            evbuffer_drain(st->in, evbuffer_get_length(st->in));
            if (event == RL_STREAM_EOF) rl_term_close(t, RL_OUTCOME_REFUSED);
        }
        break;
    case RL_STREAM_DRAINED:
        if (t->state == TERM_CLOSING) {
            if (evbuffer_get_length(st->out) == 0) rl_term_close(t, RL_OUTCOME_REFUSED);
        } else if (t->sess) {
            rl_xchg_pump_response(t->sess);
        }
        break;
    case RL_STREAM_ERROR:
    default:
        rl_term_close(t, t->state == TERM_BOUND ? RL_OUTCOME_RELAYED : RL_OUTCOME_ABORTED);
        break;
    }
}

/* ---- timers: one per terminal, for the head being read and for idleness ----
 *
 * Every request head must be complete within the header timeout of its first byte (the first
 * one: of the connection's accept). Between requests, and while bound, a connection with no
 * byte moving either way for the idle timeout is closed. */

static uint64_t head_deadline_us(const rl_term *t) {
    return t->head_since_us ? t->head_since_us + (uint64_t)t->core->cfg.header_timeout_ms * 1000 : 0;
}

/* Idle is measured while bound or between requests, not while a head is being read. */
static uint64_t idle_deadline_us(const rl_term *t, uint64_t now) {
    uint32_t limit = t->core->cfg.idle_timeout_s;
    if (!limit || t->head_since_us || (t->state != TERM_BOUND && t->state != TERM_HEAD)) return 0;
    uint32_t idle = rl_core_now_s(t->core) - t->last_active_s;
    return now + (idle < limit ? (uint64_t)(limit - idle) * 1000000 : 0);
}

static void term_arm_timer(rl_term *t) {
    uint64_t now = rl_mono_us(), head = head_deadline_us(t), idle = idle_deadline_us(t, now);
    uint64_t at = head && (!idle || head < idle) ? head : idle;
    if (!at) {
        evtimer_del(t->head_timer);
        return;
    }
    uint64_t wait = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(wait / 1000000), (suseconds_t)(wait % 1000000)};
    evtimer_add(t->head_timer, &tv);
}

/* A head not complete in time: 408 and close, the session and its link freed. With responses
 * still in flight the 408 cannot be put between them: the connection ends after them. */
static void head_timed_out(rl_term *t) {
    CTR_INC(t->core->ctr.refused_bad_request);
    t->head_since_us = 0;
    rl_session *s = t->sess;
    if (t->state == TERM_BOUND && s && (rl_pipeline_len(&s->pipe) > 0 || !rl_session_at_boundary(s))) {
        t->close_after = CLOSE_DEVICE_SAID;
        rl_stream_read(t->st, 0);
        term_arm_timer(t);
        return;
    }
    if (s) rl_xchg_leave(t, 0);
    term_answer(t, 408, NULL, "request head not received in time\n");
}

static void on_head_timeout(evutil_socket_t fd, short what, void *arg) {
    rl_term *t = arg;
    if (t->state == TERM_CLOSING) {
        rl_term_close(t, RL_OUTCOME_REFUSED);
        return;
    }
    if (t->state == TERM_WAKING) return; /* the wake timeout covers it */
    uint64_t now = rl_mono_us(), head = head_deadline_us(t), idle = idle_deadline_us(t, now);
    if (head && head <= now) {
        head_timed_out(t);
        return;
    }
    if (idle && idle <= now) {
        CTR_INC(t->core->ctr.idle_timeouts);
        rl_term_close(t, RL_OUTCOME_ABORTED); /* nothing either way for idle_timeout_s */
        return;
    }
    term_arm_timer(t);
}
