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
#include "internal.h"
#include "flow.h"

static void term_cb(rl_stream *st, int event, void *arg);
static void on_head_timeout(evutil_socket_t fd, short what, void *arg);

/* What one request head asks for, after routing and authentication. */
typedef struct rl_route {
    int status;                     /* 0: forward to `device`; else the relay answers */
    const char *body;               /* the relay's answer */
    char body_buf[400];
    char extra[2600];               /* extra response headers (redirect, cookie) */
    char device[RL_ID_MAX + 1];
    uint64_t id_hash;
    int path_routed;                /* /d/ID/ prefix to strip */
    size_t prefix_len;              /* bytes of the URL path that are the prefix */
    int token_in;                   /* 1 Authorization, 2 query, 3 cookie */
    uint8_t reuse_sid[RL_SESSION_ID_LEN];
    int has_reuse_sid;
    int own_endpoint;               /* /healthz: the relay's own answer, not a refusal */
} rl_route;

static void count_answer(rl_core *core, int status);

static struct timeval header_timeout(const rl_core *core) {
    return (struct timeval){core->cfg.header_timeout_ms / 1000, (core->cfg.header_timeout_ms % 1000) * 1000};
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
    struct timeval tv = header_timeout(core);
    evtimer_add(t->head_timer, &tv);
    rl_stream_read(t->st, 1);
}

/* ---- closing ---- */

static void push_record(rl_term *t, int status, int outcome) {
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

static void term_free(rl_term *t) {
    rl_core *core = t->core;
    if (t->prev) t->prev->next = t->next;
    else core->terms = t->next;
    if (t->next) t->next->prev = t->prev;
    CTR_DEC(core->ctr.terminals_open);
    if (t->source) t->source->open--;
    if (t->st->ssl && !t->tls_seen) CTR_INC(core->ctr.tls_terminal_failed); /* never finished its handshake */
    event_free(t->head_timer);
    rl_stream_free(t->st);
    free(t);
}

/* Closes the terminal; its session (if any) is detached: idle for reuse, or closed. */
void rl_term_close(rl_term *t, int outcome) {
    rl_session *s = t->sess;
    if (s) {
        push_record(t, 0, outcome);
        t->sess = NULL;
        s->term = NULL;
        if (s->state == SESS_WAKING) rl_session_free(s);
        else rl_session_detach(s);
    }
    term_free(t);
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
        } else if (t->state == TERM_BOUND && nothing_pending && t->sess && t->sess->link && t->sess->pend_count == 0 &&
                   rl_session_at_boundary(t->sess) && evbuffer_get_length(t->sess->link->in) == 0) {
            rl_term_finish(t); /* keep-alive connection between two requests */
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
    rl_http_respond(t->st->out, status, extra, body);
    t->bytes_to_terminal += evbuffer_get_length(t->st->out);
    term_close_after_flush(t, 0);
}

void rl_term_finish(rl_term *t) {
    rl_session *s = t->sess;
    push_record(t, 0, RL_OUTCOME_RELAYED);
    t->sess = NULL;
    s->term = NULL;
    rl_session_free(s);
    term_close_after_flush(t, 1);
}

void rl_term_fail(rl_term *t, int status, const char *body) {
    rl_session *s = t->sess;
    if (s) {
        push_record(t, status, status == 504 ? RL_OUTCOME_TIMEOUT : RL_OUTCOME_DEVICE_LOST);
        s->term = NULL;
        t->sess = NULL;
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

/* Finds `name=value` in a query string (raw, no decoding: tokens need none). */
static rl_span query_param(rl_span url, const char *name, rl_span *whole) {
    rl_span none = {NULL, 0};
    const char *q = memchr(url.p, '?', url.n);
    if (!q) return none;
    const char *end = url.p + url.n, *p = q + 1;
    size_t nl = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            rl_span v = {p + nl + 1, (size_t)(stop - p - nl - 1)};
            whole->p = p;
            whole->n = (size_t)(stop - p);
            return v;
        }
        p = stop + 1;
    }
    return none;
}

/* Finds a cookie by name in a Cookie header value. */
static rl_span cookie_value(rl_span header, const char *name, rl_span *whole) {
    rl_span none = {NULL, 0};
    const char *p = header.p, *end = header.p + header.n;
    size_t nl = strlen(name);
    while (p && p < end) {
        while (p < end && (*p == ' ' || *p == ';')) p++;
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            rl_span v = {p + nl + 1, (size_t)(stop - p - nl - 1)};
            whole->p = p;
            whole->n = (size_t)(stop - p);
            return v;
        }
        p = semi ? semi + 1 : end;
    }
    return none;
}

static void set_body(rl_route *r, int status, const char *fmt, const char *arg) {
    r->status = status;
    snprintf(r->body_buf, sizeof r->body_buf, fmt, arg);
    r->body = r->body_buf;
}

/* Device named by Host "<id>.<domain>[:port]"; 1 when found. */
static int route_by_host(const rl_core *core, rl_span host, char out[RL_ID_MAX + 1]) {
    if (!host.p || !core->domain_len) return 0;
    size_t n = host.n;
    const char *colon = memchr(host.p, ':', n);
    if (colon) n = (size_t)(colon - host.p);
    if (n < core->domain_len + 2 || host.p[n - core->domain_len - 1] != '.') return 0;
    if (strncasecmp(host.p + n - core->domain_len, core->domain, core->domain_len) != 0) return 0;
    size_t id_len = n - core->domain_len - 1;
    if (id_len > RL_ID_MAX) return 0;
    for (size_t i = 0; i < id_len; i++) {
        char c = host.p[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[id_len] = 0;
    return rl_device_id_valid(out, id_len);
}

static void route_request(rl_term *t, const rl_head *h, rl_route *r) {
    rl_core *core = t->core;
    memset(r, 0, sizeof *r);
    if (!h->url.p || h->url.n == 0 || h->url.p[0] != '/') {
        set_body(r, 400, "%s", "request target must be an absolute path\n");
        return;
    }
    rl_span host = rl_head_get(h, "host");
    if (!route_by_host(core, host, r->device)) {
        if (h->url.n >= 4 && memcmp(h->url.p, "/d/", 3) == 0) {
            const char *p = h->url.p + 3, *end = h->url.p + h->url.n, *q = p;
            while (q < end && *q != '/' && *q != '?') q++;
            size_t id_len = (size_t)(q - p);
            if (id_len == 0 || id_len > RL_ID_MAX || !rl_device_id_valid(p, id_len)) {
                set_body(r, 404, "%s", "no such device: device IDs are 1-63 of a-z, 0-9 and -\n");
                return;
            }
            memcpy(r->device, p, id_len);
            r->device[id_len] = 0;
            r->path_routed = 1;
            r->prefix_len = 3 + id_len;
            if (q == end || *q == '?') {
                /* "/d/ID" is a directory: without the slash a browser would resolve the page's
                 * relative links above it and not send the cookie scoped to "/d/ID/". */
                size_t rest = (size_t)(end - q);
                if (rest + 3 + id_len + 2 + 14 > sizeof r->extra) {
                    set_body(r, 431, "%s", "URL too long\n");
                    return;
                }
                snprintf(r->extra, sizeof r->extra, "Location: /d/%s/%.*s\r\n", r->device, (int)rest, q);
                set_body(r, 308, "%s", "a device's pages are under /d/ID/: continue at Location\n");
                r->own_endpoint = 1;
                return;
            }
        } else if (h->url.n == 8 && memcmp(h->url.p, "/healthz", 8) == 0) {
            /* Alive: the loop answers. 503 only before the relay first became ready. */
            int ready = atomic_load(&core->ready) || atomic_load(&core->draining);
            set_body(r, ready ? 200 : 503, "%s", ready ? "ok\n" : "starting\n");
            r->own_endpoint = 1;
            return;
        } else if (h->url.n == 7 && memcmp(h->url.p, "/readyz", 7) == 0) {
            /* Ready for terminals: listening, the device store readable, not stopping. */
            const char *why = atomic_load(&core->draining)    ? "draining: the relay is stopping\n"
                              : !atomic_load(&core->ready)    ? "starting\n"
                              : !atomic_load(&core->store_ok) ? "device store unreadable\n"
                                                              : NULL;
            set_body(r, why ? 503 : 200, "%s", why ? why : "ready\n");
            r->own_endpoint = 1;
            return;
        } else {
            set_body(r, 400, "no device named: use http://ID.%s/ or /d/ID/\n", core->domain_len ? core->domain : "<domain>");
            return;
        }
    }
    r->id_hash = rl_registry_hash(&core->reg, r->device, strlen(r->device));
    rl_dev *dev = rl_registry_find(&core->reg, r->id_hash);
    if (!dev) {
        set_body(r, 404, "no such device: %s\n", r->device);
        return;
    }

    /* The token: Authorization, then query, then cookie. */
    rl_span tok = {NULL, 0}, whole;
    rl_span auth = rl_head_get(h, "authorization");
    if (auth.p && auth.n > 7 && strncasecmp(auth.p, "Bearer ", 7) == 0) {
        tok.p = auth.p + 7;
        tok.n = auth.n - 7;
        r->token_in = 1;
    }
    if (!tok.p) {
        tok = query_param(h->url, "relay_token", &whole);
        if (tok.p) r->token_in = 2;
    }
    if (!tok.p) {
        for (int i = 0; i < h->n_headers && !tok.p; i++)
            if (rl_span_ieq(h->names[i], "cookie")) tok = cookie_value(h->values[i], "relay_token", &whole);
        if (tok.p) r->token_in = 3;
    }
    if (!tok.p || tok.n == 0) {
        set_body(r, 401, "%s", "missing token: send Authorization: Bearer <token> or ?relay_token=<token>\n");
        return;
    }
    char tok_dev[RL_ID_MAX + 1];
    char tokbuf[RL_TOKEN_MAX];
    if (tok.n >= sizeof tokbuf) {
        set_body(r, 401, "%s", "malformed token\n");
        return;
    }
    memcpy(tokbuf, tok.p, tok.n);
    tokbuf[tok.n] = 0;
    uint64_t now = (uint64_t)time(NULL);
    int rc = rl_token_check(core->cfg.token_key, tokbuf, tok.n, r->device, dev->key, now, tok_dev);
    if (rc == RL_TOKEN_BAD_MAC && tok_dev[0] && strcmp(tok_dev, r->device) != 0) {
        /* Maybe a genuine token for another device: that is 403, a forgery is 401. */
        rl_dev *other = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, tok_dev, strlen(tok_dev)));
        if (other && rl_token_check(core->cfg.token_key, tokbuf, tok.n, tok_dev, other->key, now, tok_dev) == RL_TOKEN_OK) {
            set_body(r, 403, "this token is for another device, not %s\n", r->device);
            return;
        }
    }
    if (rc == RL_TOKEN_EXPIRED) {
        set_body(r, 401, "%s", "token expired\n");
        return;
    }
    if (rc != RL_TOKEN_OK) {
        set_body(r, 401, "%s", rc == RL_TOKEN_MALFORMED ? "malformed token\n" : "invalid token\n");
        return;
    }
    /* Checked on every request, so a revocation also ends the next request of an open connection. */
    uint8_t tid[8];
    if (rl_token_id(tokbuf, tok.n, tid) != 0 || rl_revoked_has(&core->revoked, tid)) {
        set_body(r, 401, "%s", "token revoked\n");
        return;
    }

    if (r->token_in == 2) {
        /* Trade the query token for a cookie on this device's origin, and drop it from the URL. */
        char loc[2048];
        size_t a = (size_t)(whole.p - h->url.p), b = a + whole.n;
        if (b < h->url.n && h->url.p[b] == '&') b++;
        else if (a > 0 && (h->url.p[a - 1] == '&' || h->url.p[a - 1] == '?')) a--;
        if (a + (h->url.n - b) + 1 > sizeof loc) {
            set_body(r, 431, "%s", "URL too long\n");
            return;
        }
        memcpy(loc, h->url.p, a);
        memcpy(loc + a, h->url.p + b, h->url.n - b);
        size_t loc_len = a + h->url.n - b;
        if (loc_len > 0 && loc[loc_len - 1] == '?') loc_len--;
        loc[loc_len] = 0;
        uint64_t exp = strtoull(strchr(tokbuf, '.') + 1, NULL, 10);
        long max_age = exp > now ? (long)(exp - now) : 0;
        snprintf(r->extra, sizeof r->extra,
                 "Location: %s\r\nSet-Cookie: relay_token=%s; Path=%s%s%s; Max-Age=%ld; HttpOnly; SameSite=Lax%s\r\n",
                 loc, tokbuf, r->path_routed ? "/d/" : "/", r->path_routed ? r->device : "", r->path_routed ? "/" : "",
                 max_age, t->st->ssl ? "; Secure" : "");
        set_body(r, 302, "%s", "token accepted; continue at Location\n");
        return;
    }

    /* Fast liveness verdict [claims 4, 5, 18]: nothing is sent to a stale address. */
    if ((r->status = rl_liveness_verdict(core, dev, r->device, r->body_buf, sizeof r->body_buf)) != 0) {
        r->body = r->body_buf;
        return;
    }
    rl_span sid = rl_head_get(h, "x-relay-session");
    if (sid.p && sid.n == 2 * RL_SESSION_ID_LEN && rl_unhex(sid.p, sid.n, r->reuse_sid, RL_SESSION_ID_LEN) == 0)
        r->has_reuse_sid = 1;
}

/* Writes the request head as the device must see it: prefix and relay credentials gone. */
static void write_forward_head(rl_term *t, const rl_head *h, const rl_route *r, struct evbuffer *out) {
    const char *method = http_method_str((enum http_method)h->method);
    const char *path = h->url.p;
    size_t path_len = h->url.n;
    rl_span whole = {NULL, 0};
    if (r->path_routed) {
        path += r->prefix_len;
        path_len -= r->prefix_len;
    }
    evbuffer_add_printf(out, "%s ", method);
    if (path_len == 0 || path[0] != '/') evbuffer_add(out, "/", 1);
    evbuffer_add(out, path, path_len);
    evbuffer_add_printf(out, " HTTP/%d.%d\r\n", h->major, h->minor);
    for (int i = 0; i < h->n_headers; i++) {
        rl_span n = h->names[i], v = h->values[i];
        if (rl_span_ieq(n, "x-relay-session")) continue;
        if (rl_span_ieq(n, "authorization") && r->token_in == 1) continue;
        if (rl_span_ieq(n, "x-forwarded-for")) continue; /* rewritten below with the peer appended */
        if (rl_span_ieq(n, "x-forwarded-proto")) continue; /* the relay's own, below */
        if (rl_span_ieq(n, "cookie")) {
            rl_span tok = cookie_value(v, "relay_token", &whole);
            if (tok.p) {
                /* Keep the device's own cookies, drop ours. */
                size_t a = (size_t)(whole.p - v.p), b = a + whole.n;
                while (b < v.n && (v.p[b] == ';' || v.p[b] == ' ')) b++;
                while (a > 0 && (v.p[a - 1] == ' ' || v.p[a - 1] == ';') && b == v.n) a--;
                if (a == 0 && b == v.n) continue;
                evbuffer_add(out, n.p, n.n);
                evbuffer_add(out, ": ", 2);
                evbuffer_add(out, v.p, a);
                evbuffer_add(out, v.p + b, v.n - b);
                evbuffer_add(out, "\r\n", 2);
                continue;
            }
        }
        evbuffer_add(out, n.p, n.n);
        evbuffer_add(out, ": ", 2);
        if (v.p) evbuffer_add(out, v.p, v.n);
        evbuffer_add(out, "\r\n", 2);
    }
    rl_span xff = rl_head_get(h, "x-forwarded-for");
    if (xff.p) evbuffer_add_printf(out, "X-Forwarded-For: %.*s, %s\r\n", (int)xff.n, xff.p, t->peer);
    else evbuffer_add_printf(out, "X-Forwarded-For: %s\r\n", t->peer);
    if (r->path_routed) evbuffer_add_printf(out, "X-Forwarded-Prefix: /d/%s\r\n", r->device);
    evbuffer_add_printf(out, "X-Forwarded-Proto: %s\r\n", t->st->ssl ? "https" : "http");
    evbuffer_add(out, "\r\n", 2);
}

/* ---- the first request: decide, then wake or reuse ---- */

/* With TLS, the plain port only sends terminals to the HTTPS one (health answers stay). */
static void redirect_to_https(rl_term *t, const rl_head *h, rl_route *r) {
    rl_span host = rl_head_get(h, "host");
    memset(r, 0, sizeof *r);
    size_t n = host.p ? host.n : 0;
    if (n && host.p[0] != '[') {
        const char *colon = memchr(host.p, ':', n);
        if (colon) n = (size_t)(colon - host.p);
    } else if (n) {
        const char *end = memchr(host.p, ']', n);
        n = end ? (size_t)(end - host.p) + 1 : 0;
    }
    if (!n || n > 255 || h->url.n > 2048) {
        set_body(r, 400, "%s", "this port redirects to HTTPS and needs a Host header\n");
        term_refuse(t, r);
        return;
    }
    int port = t->core->https[0].port;
    char portbuf[8] = "";
    if (port != 443) snprintf(portbuf, sizeof portbuf, ":%d", port);
    snprintf(r->extra, sizeof r->extra, "Location: https://%.*s%s%.*s\r\n", (int)n, host.p, portbuf, (int)h->url.n,
             h->url.p);
    set_body(r, 308, "%s", "this relay serves terminals over HTTPS: continue at Location\n");
    r->own_endpoint = 1;
    term_refuse(t, r);
}

static int term_on_head(rl_term *t) {
    rl_core *core = t->core;
    struct evbuffer *in = t->st->in;
    size_t head_len = rl_flow_find_head(in);
    if (!head_len) {
        if (evbuffer_get_length(in) > core->cfg.max_header_bytes) {
            rl_route r = {.status = 431, .body = "request head too large\n"};
            term_refuse(t, &r);
        } else if (t->st->eof) {
            rl_term_close(t, RL_OUTCOME_ABORTED);
            return -1;
        }
        return 0;
    }
    if (head_len > core->cfg.max_header_bytes) {
        rl_route r = {.status = 431, .body = "request head too large\n"};
        term_refuse(t, &r);
        return 0;
    }
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)head_len);
    rl_head h;
    rl_route r;
    if (rl_flow_head(&t->req, HTTP_REQUEST, p, head_len, &h) != 0) {
        memset(&r, 0, sizeof r);
        set_body(&r, 400, "%s", "malformed HTTP request\n");
        term_refuse(t, &r);
        return 0;
    }
    route_request(t, &h, &r);
    if (!t->st->ssl && core->tls && core->n_https > 0 && !r.own_endpoint) {
        redirect_to_https(t, &h, &r);
        return 0;
    }
    if (r.status) {
        term_refuse(t, &r);
        return 0;
    }
    evtimer_del(t->head_timer);
    /* The head stays in the buffer: it is parsed again and forwarded once a link is bound. */
    rl_flow_next(&t->req);
    t->req.raw = 0;
    if (r.has_reuse_sid) {
        rl_session *s = rl_session_find(core, r.reuse_sid);
        if (s && s->state == SESS_IDLE && s->id_hash == r.id_hash) {
            t->reused = 1;
            t->state = TERM_BOUND;
            CTR_INC(core->ctr.sessions_reused);
            rl_session_attach(s, t);
            return 0;
        }
    }
    uint8_t key[16] = {0};
    memcpy(key, &r.id_hash, sizeof r.id_hash);
    int limited = core->cfg.max_sessions_per_device || core->cfg.wakes_per_device_minute;
    rl_tally_entry *dev = limited ? rl_tally_get(&core->devices, key, rl_core_now_s(core)) : NULL;
    if (dev && core->cfg.max_sessions_per_device && dev->open >= core->cfg.max_sessions_per_device) {
        CTR_INC(core->ctr.limited_device_sessions);
        set_body(&r, 429, "device %s has too many sessions open; retry later\n", r.device);
        snprintf(r.extra, sizeof r.extra, "Retry-After: 1\r\n");
        term_refuse(t, &r);
        return 0;
    }
    if (dev && core->cfg.wakes_per_device_minute && dev->window_events >= core->cfg.wakes_per_device_minute) {
        CTR_INC(core->ctr.limited_device_wakes);
        uint32_t left = dev->window_start + core->devices.window_s - rl_core_now_s(core);
        set_body(&r, 429, "device %s was woken too often in the last minute; retry later\n", r.device);
        snprintf(r.extra, sizeof r.extra, "Retry-After: %u\r\n", left ? left : 1);
        term_refuse(t, &r);
        return 0;
    }
    rl_stream_read(t->st, 0); /* hold further bytes in the kernel until the device is here */
    t->state = TERM_WAKING;
    rl_session *s = rl_session_wake(core, t, r.device, r.id_hash);
    if (s && dev) {
        dev->window_events++;
        dev->open++;
        s->tally = dev;
    }
    if (!s) {
        CTR_INC(core->ctr.refused_capacity);
        rl_route busy = {.status = 503, .body = "relay busy: too many sessions\n"};
        term_answer(t, busy.status, NULL, busy.body);
    }
    return 0;
}

void rl_term_rewake(rl_term *t) {
    push_record(t, 0, RL_OUTCOME_RELAYED);
    if (t->sess) t->sess->term = NULL;
    t->sess = NULL;
    if (atomic_load_explicit(&t->core->draining, memory_order_relaxed) && evbuffer_get_length(t->st->in) == 0) {
        rl_term_close(t, RL_OUTCOME_RELAYED); /* draining: no next request on this connection */
        return;
    }
    t->state = TERM_HEAD;
    t->bytes_to_device = t->bytes_to_terminal = 0;
    t->started_us = rl_mono_us();
    t->reused = 0;
    rl_flow_next(&t->req);
    rl_stream_read(t->st, 1);
    if (evbuffer_get_length(t->st->in) > 0) term_on_head(t);
}

void rl_term_bound(rl_term *t) {
    t->state = TERM_BOUND;
    t->last_active_s = rl_core_now_s(t->core);
    if (t->core->cfg.idle_timeout_s) {
        /* The head timer serves as the idle timer while bound (see on_head_timeout). */
        struct timeval tv = {t->core->cfg.idle_timeout_s, 0};
        evtimer_add(t->head_timer, &tv);
    }
    rl_term_pump_request(t);
}

/* ---- a bound connection: forward every request, rewriting each head ---- */

int rl_term_pump_request(rl_term *t) {
    rl_session *s = t->sess;
    if (!s || !s->link || t->state != TERM_BOUND) return 0;
    struct evbuffer *in = t->st->in, *out = s->link->out;
    size_t before = evbuffer_get_length(out);
    while (evbuffer_get_length(in) > 0 && !rl_stream_out_high(s->link)) {
        if (t->req.raw || t->req.in_body) {
            long n = rl_flow_body(&t->req, in, out);
            if (n < 0) {
                rl_term_close(t, RL_OUTCOME_ABORTED);
                return -1;
            }
            if (t->req.done) rl_flow_next(&t->req);
            if (n == 0) break;
            continue;
        }
        size_t head_len = rl_flow_find_head(in);
        if (!head_len) {
            if (evbuffer_get_length(in) > t->core->cfg.max_header_bytes) {
                rl_term_close(t, RL_OUTCOME_ABORTED);
                return -1;
            }
            break;
        }
        if (s->pend_count == RL_MAX_PIPELINE) break;
        rl_head h;
        rl_route r;
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)head_len);
        if (head_len > t->core->cfg.max_header_bytes || rl_flow_head(&t->req, HTTP_REQUEST, p, head_len, &h) != 0) {
            rl_term_close(t, RL_OUTCOME_ABORTED);
            return -1;
        }
        route_request(t, &h, &r);
        if (r.status || r.id_hash != s->id_hash) {
            /* Another device, or a refusal: first let the responses in flight finish. */
            if (s->pend_count > 0 || !rl_session_at_boundary(s)) {
                rl_flow_next(&t->req);
                break;
            }
            rl_flow_next(&t->req);
            push_record(t, 0, RL_OUTCOME_RELAYED);
            t->sess = NULL;
            s->term = NULL;
            rl_session_detach(s);
            t->state = TERM_HEAD;
            t->bytes_to_device = t->bytes_to_terminal = 0;
            t->started_us = rl_mono_us();
            t->reused = 0;
            return term_on_head(t);
        }
        write_forward_head(t, &h, &r, out);
        evbuffer_drain(in, head_len);
        uint32_t slot = (s->pend_first + s->pend_count) % RL_MAX_PIPELINE;
        s->pending_head[slot] = h.method == HTTP_HEAD;
        s->pend_count++;
        if (!t->req.in_body && !t->req.raw) rl_flow_next(&t->req);
    }
    size_t moved = evbuffer_get_length(out) - before;
    if (moved) t->last_active_s = rl_core_now_s(t->core);
    t->bytes_to_device += moved;
    CTR_ADD(t->core->ctr.bytes_to_device, moved);
    rl_stream_flush(s->link);
    rl_stream_read(t->st, !rl_stream_out_high(s->link) && !t->st->eof);
    if (t->st->eof && evbuffer_get_length(in) == 0 && t->req.raw) rl_stream_shutdown_after_flush(s->link);
    return 0;
}

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
            if (rl_term_pump_request(t) < 0) return;
            if (event == RL_STREAM_EOF && t->sess && !t->req.raw && t->sess->pend_count == 0)
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
            rl_session_pump_response(t->sess);
        }
        break;
    case RL_STREAM_ERROR:
    default:
        rl_term_close(t, t->state == TERM_BOUND ? RL_OUTCOME_RELAYED : RL_OUTCOME_ABORTED);
        break;
    }
}

static void on_head_timeout(evutil_socket_t fd, short what, void *arg) {
    rl_term *t = arg;
    if (t->state == TERM_CLOSING) {
        rl_term_close(t, RL_OUTCOME_REFUSED);
        return;
    }
    if (t->state == TERM_BOUND) {
        uint32_t limit = t->core->cfg.idle_timeout_s, idle = rl_core_now_s(t->core) - t->last_active_s;
        if (!limit) return;
        if (idle < limit) {
            struct timeval tv = {limit - idle, 0};
            evtimer_add(t->head_timer, &tv);
            return;
        }
        CTR_INC(t->core->ctr.idle_timeouts);
        rl_term_close(t, RL_OUTCOME_ABORTED); /* nothing either way for idle_timeout_s */
        return;
    }
    if (t->state != TERM_HEAD) return;
    CTR_INC(t->core->ctr.refused_bad_request);
    term_answer(t, 408, NULL, "request head not received in time\n");
}
