/*
 * exchange.c: both directions of a bound terminal and device link (exchange.h).
 *
 * A direction is a source stream, a destination stream, the flow framing its messages and
 * two hooks: what to do with a complete head, and what to do when a message ends. pump()
 * moves bodies through the flow and hands heads to the hook, until the source is empty or
 * the destination full; each direction then settles its own reading and closing.
 */
#include <stdio.h>
#include <string.h>
#include "core_types.h"
#include "exchange.h"
#include "records.h"
#include "route.h"
#include "rewrite.h"
#include "session.h"
#include "splice.h"

typedef struct chan chan;
struct chan {
    rl_term *t;
    rl_session *s;
    rl_stream *src, *dst;
    rl_flow *flow;
    /* A complete head is at the start of src->in: PUMP_MOVED when forwarded, PUMP_WAIT when
     * it must wait, PUMP_IDLE when nothing more can move now, PUMP_OVER when the exchange
     * ended or changed (the caller returns at once). */
    int (*head)(chan *c, size_t head_len);
    int (*head_missing)(chan *c); /* no complete head yet: PUMP_IDLE or PUMP_OVER */
    int (*heads_held)(chan *c);   /* 1: no head is read now (NULL: never) */
    void (*message_done)(chan *c);
};
enum { PUMP_IDLE = 0, PUMP_MOVED = 1, PUMP_WAIT = 2, PUMP_OVER = -1, PUMP_BAD_FRAMING = -2 };

/* The one pump. `moved`: bytes appended to dst. */
static int pump(chan *c, size_t *moved) {
    struct evbuffer *in = c->src->in, *out = c->dst->out;
    size_t before = evbuffer_get_length(out);
    int rc = PUMP_IDLE;
    while (evbuffer_get_length(in) > 0 && !rl_stream_out_high(c->dst)) {
        if (c->flow->raw || c->flow->in_body) {
            long n = rl_flow_body(c->flow, in, out);
            if (n < 0) {
                rc = PUMP_BAD_FRAMING;
                break;
            }
            if (c->flow->done) c->message_done(c);
            if (n == 0) break;
            continue;
        }
        if (c->heads_held && c->heads_held(c)) break;
        size_t head_len = rl_flow_find_head(in);
        rc = head_len ? c->head(c, head_len) : c->head_missing(c);
        if (rc != PUMP_MOVED) break;
        rc = PUMP_IDLE;
    }
    *moved = evbuffer_get_length(out) - before;
    return rc;
}

static void pipeline_push(rl_pipeline *p, int is_head) {
    p->is_head[(p->first + p->count) % RL_MAX_PIPELINE] = (uint8_t)is_head;
    p->count++;
}

static void pipeline_pop(rl_pipeline *p) {
    if (!p->count) return;
    p->first = (p->first + 1) % RL_MAX_PIPELINE;
    p->count--;
}

/* ---- records and leaving ---- */

void rl_xchg_record(rl_term *t, int status, int outcome) {
    rl_session_record r;
    memset(&r, 0, sizeof r);
    if (t->sess) {
        snprintf(r.device_id, sizeof r.device_id, "%s", t->sess->device_id);
        memcpy(r.session_id, t->sess->sid_hex, sizeof r.session_id);
    }
    /* A relayed session logs the device's latest status; a failed one the relay's answer. */
    r.status = status ? (uint32_t)status : t->sess ? t->sess->last_status : 0;
    r.outcome = (uint32_t)outcome;
    r.duration_us = rl_mono_us() - t->started_us;
    r.bytes_to_device = t->bytes_to_device;
    r.bytes_to_terminal = t->bytes_to_terminal;
    r.reused = (uint32_t)t->reused;
    rl_core_push_record(t->core, &r);
}

void rl_xchg_leave(rl_term *t, int keep_link) {
    rl_session *s = t->sess;
    rl_xchg_record(t, 0, RL_OUTCOME_RELAYED);
    rl_unpair(t);
    if (keep_link) rl_session_detach(s);
    else rl_session_end(s);
}

void rl_xchg_finish(rl_term *t) {
    rl_xchg_leave(t, 0);
    t->ops->linger(t);
}

/* The session ended at a message boundary (its device closed between requests): the
 * terminal's next request starts anew, unless that response was the connection's last. */
static void rewake(rl_term *t) {
    rl_xchg_record(t, 0, RL_OUTCOME_RELAYED);
    rl_unpair(t);
    t->upgrade_wait = 0;
    if (t->close_after) t->ops->linger(t);
    else if (atomic_load_explicit(&t->core->draining, memory_order_relaxed) && evbuffer_get_length(t->st->in) == 0)
        t->ops->close(t, RL_OUTCOME_RELAYED); /* draining: no next request on this connection */
    else t->ops->next_head(t);
}

/* ---- terminal -> device ---- */

/* The head reader waits: for the device's answer to an Upgrade, or for the connection's end. */
static int heads_held(const rl_term *t) {
    return t->upgrade_wait || t->close_after;
}

static int request_heads_held(chan *c) {
    rl_term *t = c->t;
    if (t->close_after) evbuffer_drain(c->src->in, evbuffer_get_length(c->src->in)); /* pipelined after the last */
    return heads_held(t);
}

static int request_head_missing(chan *c) {
    rl_term *t = c->t;
    if (evbuffer_get_length(c->src->in) > t->core->cfg.max_header_bytes) {
        t->ops->close(t, RL_OUTCOME_ABORTED);
        return PUMP_OVER;
    }
    if (!t->head_since_us) t->ops->head_started(t);
    return PUMP_IDLE;
}

/* Routes and forwards the next head. One that is not forwarded on this session (a refusal,
 * a malformed head, another device) waits for the responses in flight, then is handled as
 * a first head. */
static int request_head(chan *c, size_t head_len) {
    rl_term *t = c->t;
    rl_session *s = c->s;
    struct evbuffer *in = c->src->in;
    if (rl_pipeline_len(&s->pipe) == RL_MAX_PIPELINE) return PUMP_WAIT;
    rl_head h;
    rl_route r;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)head_len);
    int parsed = head_len <= t->core->cfg.max_header_bytes && rl_flow_head(&t->req, HTTP_REQUEST, p, head_len, &h) == 0;
    if (parsed) {
        rl_route_request(t->core, &h, t->st->ssl != NULL, &t->auth, &r);
        t->wants_html = r.wants_html;
    }
    if (!parsed || r.status || r.id_hash != s->id_hash) {
        rl_flow_next(&t->req);
        if (rl_pipeline_len(&s->pipe) > 0 || !rl_session_at_boundary(s)) return PUMP_WAIT;
        rl_xchg_leave(t, 1);
        t->ops->next_head(t);
        return PUMP_OVER;
    }
    rl_rewrite_request_head(c->dst->out, &h, &r, t->peer, t->st->ssl != NULL);
    evbuffer_drain(in, head_len);
    t->head_since_us = 0;
    pipeline_push(&s->pipe, h.method == HTTP_HEAD);
    /* After an Upgrade request nothing more is read until the device answers it; after a
     * last request (Connection: close, HTTP/1.0), nothing more at all (RFC 9112 9.6). */
    if (h.upgrade) t->upgrade_wait = 1;
    if (!h.keep_alive) t->close_after = CLOSE_TERMINAL_SAID;
    if (!t->req.in_body) rl_flow_next(&t->req);
    return PUMP_MOVED;
}

static void request_done(chan *c) {
    rl_flow_next(c->flow);
}

void rl_xchg_pump_request(rl_term *t) {
    rl_session *s = t->sess;
    if (t->dying || !s || !s->link || t->state != TERM_BOUND) return;
    if (t->close_after && rl_pipeline_len(&s->pipe) == 0 && rl_session_at_boundary(s)) {
        /* The last response is complete: close after it; a link the device keeps open stays
         * for reuse unless the device said close. */
        rl_xchg_leave(t, t->close_after == CLOSE_TERMINAL_SAID);
        t->ops->linger(t);
        return;
    }
    chan c = {t, s, t->st, s->link, &t->req, request_head, request_head_missing, request_heads_held, request_done};
    size_t moved;
    int rc = pump(&c, &moved);
    if (rc == PUMP_OVER) return;
    if (rc == PUMP_BAD_FRAMING) {
        t->ops->close(t, RL_OUTCOME_ABORTED);
        return;
    }
    if (moved) t->last_active_s = rl_core_now_s(t->core);
    t->bytes_to_device += moved;
    CTR_ADD(t->core->ctr.bytes_to_device, moved);
    rl_stream_flush(s->link);
    int held = rc == PUMP_WAIT || (heads_held(t) && !t->req.raw && !t->req.in_body);
    rl_stream_read(t->st, !rl_stream_out_high(s->link) && !t->st->eof && !held);
    if (t->st->eof && evbuffer_get_length(t->st->in) == 0 && t->req.raw) rl_stream_shutdown_after_flush(s->link);
}

/* ---- device -> terminal ---- */

/* The link failed or closed: the terminal hears what it can, and the session ends. */
static void device_gone(rl_session *s, const char *why) {
    rl_term *t = s->term;
    if (t && rl_pipeline_len(&s->pipe) == 0 && rl_session_at_boundary(s) && !t->st->eof) {
        /* The device closed between requests (an HTTP/1.0 server does after each one): the
         * terminal keeps its connection and its next request wakes the device again. */
        rewake(t);
    } else if (t && !s->resp_started && rl_pipeline_len(&s->pipe) > 0) {
        char body[200];
        snprintf(body, sizeof body, "device %s closed its link before answering (%s)\n", s->device_id, why);
        t->ops->fail(t, 502, body);
    } else if (t && evbuffer_get_length(t->st->out) > 0) {
        rl_unpair(t); /* let the terminal have what already arrived, then close */
        t->ops->linger(t);
    }
    rl_session_end(s);
}

/* The device's response head to the oldest request in flight. Only a 101 answering an
 * Upgrade request makes the terminal's side opaque; any other final answer lets the next head
 * be read, routed and checked like every head. A response that ends its connection
 * (Connection: close, HTTP/1.0) ends the terminal's after it too: the relay forwarded that
 * header, so the terminal expects it. */
static void response_head_seen(rl_term *t, const rl_session *s, const rl_head *h) {
    if (h->status < 200 && h->status != 101) return;
    if (t->upgrade_wait && rl_pipeline_len(&s->pipe) == 1) {
        t->upgrade_wait = 0;
        if (h->status == 101) {
            t->req.raw = 1;
            t->req.in_body = 0;
            return;
        }
    }
    if (h->status != 101 && !h->keep_alive) t->close_after = CLOSE_DEVICE_SAID;
}

static int response_head_missing(chan *c) {
    if (evbuffer_get_length(c->src->in) <= 65536) return PUMP_IDLE;
    device_gone(c->s, "response head too large");
    return PUMP_OVER;
}

/* Forwards the head with X-Relay-Session after the status line, so the terminal can name
 * this link later. */
static int response_head(chan *c, size_t head_len) {
    rl_session *s = c->s;
    struct evbuffer *in = c->src->in, *out = c->dst->out;
    rl_head h;
    s->resp.skip_body = rl_pipeline_front_is_head(&s->pipe);
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)head_len);
    if (rl_flow_head(&s->resp, HTTP_RESPONSE, p, head_len, &h) != 0) {
        device_gone(s, "malformed response head");
        return PUMP_OVER;
    }
    struct evbuffer_ptr eol = evbuffer_search(in, "\r\n", 2, NULL);
    size_t line = (size_t)eol.pos + 2;
    evbuffer_remove_buffer(in, out, line);
    evbuffer_add(out, "X-Relay-Session: ", 17);
    evbuffer_add(out, s->sid_hex, 2 * RL_SESSION_ID_LEN);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_remove_buffer(in, out, head_len - line);
    s->resp_started = 1;
    CTR_INC(s->core->ctr.device_responses[h.status >= 100 && h.status < 600 ? h.status / 100 : 0]);
    if (h.status >= 200 || h.status == 101) s->last_status = h.status;
    response_head_seen(c->t, s, &h);
    if (s->resp.done) {
        int interim = h.status >= 100 && h.status < 200 && h.status != 101;
        rl_flow_next(&s->resp);
        if (!interim) pipeline_pop(&s->pipe);
    }
    return PUMP_MOVED;
}

static void response_done(chan *c) {
    rl_flow_next(c->flow);
    pipeline_pop(&c->s->pipe);
}

/* A body with at least RL_SPLICE_MIN bytes left, framed by Content-Length, both sides plain
 * TCP and nothing queued either way: the rest goes link -> terminal in the kernel. */
static int splice_wanted(const rl_session *s) {
    const rl_term *t = s->term;
    if (!t || s->splice || !s->link || s->link->ssl || t->st->ssl || s->link->eof) return 0;
    if (!s->resp.in_body || s->resp.raw || (s->resp.parser.flags & F_CHUNKED)) return 0;
    uint64_t left = s->resp.parser.content_length;
    if (left == UINT64_MAX || left < RL_SPLICE_MIN) return 0;
    return evbuffer_get_length(s->link->in) == 0 && evbuffer_get_length(t->st->out) == 0;
}

static void on_splice(void *arg, int event, size_t n) {
    rl_session *s = arg;
    rl_term *t = s->term;
    if (event == RL_SPLICE_MOVED) {
        t->bytes_to_terminal += n;
        t->st->bytes_written += n;
        CTR_ADD(s->core->ctr.bytes_to_terminal, n);
        t->last_active_s = rl_core_now_s(s->core);
        return;
    }
    rl_splice_free(s->splice);
    s->splice = NULL;
    if (event == RL_SPLICE_DONE) {
        /* The body is through: the stream takes the link back, and the next response (or
         * request) goes on as after any complete message. */
        rl_flow_next(&s->resp);
        pipeline_pop(&s->pipe);
        rl_stream_read(s->link, 1);
        rl_xchg_pump_response(s);
    } else if (event == RL_SPLICE_DST_ERROR) {
        t->ops->close(t, RL_OUTCOME_RELAYED); /* the terminal went away mid-body; ends s */
    } else {
        device_gone(s, event == RL_SPLICE_SRC_EOF ? "end of stream in the middle of a body" : "link error");
    }
}

static int splice_begin(rl_session *s) {
    s->splice = rl_splice_start(s->core->base, s->link->fd, s->term->st->fd, s->resp.parser.content_length, on_splice, s);
    if (!s->splice) return -1; /* out of descriptors: the ordinary path carries the body */
    CTR_INC(s->core->ctr.splices);
    rl_stream_read(s->link, 0); /* the link's bytes are the splice's until the body ends */
    return 0;
}

/* After a response moved: the connection's end, a drain, or the next request. */
static void after_response(rl_session *s, rl_term *t) {
    rl_core *core = s->core;
    if (atomic_load_explicit(&core->draining, memory_order_relaxed) && s->resp_started &&
        rl_pipeline_len(&s->pipe) == 0 && rl_session_at_boundary(s)) {
        rl_xchg_finish(t); /* draining: this response was the connection's last */
        return;
    }
    if (rl_pipeline_len(&s->pipe) == RL_MAX_PIPELINE) return;
    if (t->st->eof && rl_pipeline_len(&s->pipe) == 0 && !t->req.raw && evbuffer_get_length(t->st->in) == 0) {
        t->ops->close(t, RL_OUTCOME_RELAYED); /* the terminal had half-closed: we are done */
        return;
    }
    rl_xchg_pump_request(t); /* a request waiting for a free pipeline slot or a boundary */
}

void rl_xchg_pump_response(rl_session *s) {
    rl_stream *link = s->link;
    if (s->dying || !link || s->splice) return; /* a splice moves the body and calls back when done */
    rl_term *t = s->term;
    if (!t) {
        if (evbuffer_get_length(link->in) > 0 || link->eof) rl_session_end(s); /* idle links stay silent */
        return;
    }
    chan c = {t, s, link, t->st, &s->resp, response_head, response_head_missing, NULL, response_done};
    size_t moved;
    int rc = pump(&c, &moved);
    if (rc == PUMP_OVER) return;
    if (rc == PUMP_BAD_FRAMING) {
        device_gone(s, "malformed response framing");
        return;
    }
    if (moved) t->last_active_s = rl_core_now_s(s->core);
    t->bytes_to_terminal += moved;
    CTR_ADD(s->core->ctr.bytes_to_terminal, moved);
    rl_stream_flush(t->st);
    if (splice_wanted(s) && splice_begin(s) == 0) return;
    rl_stream_read(link, !rl_stream_out_high(t->st));
    if (link->eof && evbuffer_get_length(link->in) == 0) {
        device_gone(s, "end of stream");
        return;
    }
    after_response(s, t);
}

/* ---- the link's events ---- */

static void link_cb(rl_stream *st, int event, void *arg) {
    rl_session *s = arg;
    switch (event) {
    case RL_STREAM_READ_READY:
    case RL_STREAM_EOF:
        if (s->state == SESS_IDLE) rl_session_end(s); /* an idle device that speaks or closes ends it */
        else rl_xchg_pump_response(s);
        break;
    case RL_STREAM_DRAINED:
        if (s->term) rl_xchg_pump_request(s->term);
        break;
    default:
        device_gone(s, "link error");
        break;
    }
}

void rl_xchg_begin(rl_term *t) {
    rl_session *s = t->sess;
    rl_stream_set_cb(s->link, link_cb, s);
    rl_stream_read(s->link, 1);
    rl_xchg_pump_request(t);
    if (s->dying) return;
    rl_stream_flush(s->link); /* a callback's status byte, when no request went with it */
    if (evbuffer_get_length(s->link->in) > 0) rl_xchg_pump_response(s); /* sent right after its hello */
}
