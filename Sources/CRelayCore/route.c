/*
 * route.c: routing and authorization of one request head (route.h). Nothing here reads or
 * writes a socket: the front hands in a parsed head and acts on the decision.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "route.h"
#include "node.h"
#include "liveness.h"
#include "mesh.h"
#include "http.h"
#include "rewrite.h"

void rl_route_answer(rl_route *r, int status, const char *fmt, const char *arg) {
    r->status = status;
    snprintf(r->body_buf, sizeof r->body_buf, fmt, arg);
    r->body = r->body_buf;
}

/* Device named by a host "<id>.<domain>[:port]"; 1 when found. */
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

/* The request target in origin-form and the host it names. An absolute-form target
 * ("http://cam-1.example/x", RFC 9112 3.2.2) is accepted: its authority is the host (the
 * Host header is ignored, 7.2) and "/x" is what is routed and forwarded. 0, or -1. */
static int split_target(const rl_head *h, rl_route *r) {
    rl_span url = h->url;
    r->target = url;
    r->host = rl_span_trim(rl_head_get(h, "host"));
    if (url.n && url.p[0] == '/') return 0;
    size_t scheme = url.n > 7 && strncasecmp(url.p, "http://", 7) == 0    ? 7
                    : url.n > 8 && strncasecmp(url.p, "https://", 8) == 0 ? 8
                                                                          : 0;
    if (!scheme) return -1;
    const char *a = url.p + scheme, *end = url.p + url.n, *q = a;
    while (q < end && *q != '/' && *q != '?') q++;
    r->host = (rl_span){a, (size_t)(q - a)};
    if (!rl_authority_valid(r->host)) return -1; /* userinfo ("@") included */
    r->target = (rl_span){q, (size_t)(end - q)};
    r->absolute_form = 1;
    return 0;
}

/* The relay's own endpoints on a host that names no device. 1 when answered. */
static int own_endpoint(const rl_core *core, rl_span target, rl_route *r) {
    if (target.n == 8 && memcmp(target.p, "/healthz", 8) == 0) {
        /* Alive: the loop answers. 503 only before the relay first became ready. */
        int ready = atomic_load(&core->ready) || atomic_load(&core->draining);
        rl_route_answer(r, ready ? 200 : 503, "%s", ready ? "ok\n" : "starting\n");
    } else if (target.n == 7 && memcmp(target.p, "/readyz", 7) == 0) {
        /* Ready for terminals: listening, the device store readable, not stopping. */
        const char *why = atomic_load(&core->draining)    ? "draining: the relay is stopping\n"
                          : !atomic_load(&core->ready)    ? "starting\n"
                          : !atomic_load(&core->store_ok) ? "device store unreadable\n"
                                                          : NULL;
        rl_route_answer(r, why ? 503 : 200, "%s", why ? why : "ready\n");
    } else {
        return 0;
    }
    r->own_endpoint = 1;
    return 1;
}

/* "/d/ID/rest": the device and the prefix. 0, or -1 with the answer set in `r`. */
static int route_by_path(rl_route *r) {
    rl_span u = r->target;
    const char *p = u.p + 3, *end = u.p + u.n, *q = p;
    while (q < end && *q != '/' && *q != '?') q++;
    size_t id_len = (size_t)(q - p);
    if (id_len == 0 || id_len > RL_ID_MAX || !rl_device_id_valid(p, id_len)) {
        rl_route_answer(r, 404, "%s", "no such device: device IDs are 1-63 of a-z, 0-9 and -\n");
        return -1;
    }
    memcpy(r->device, p, id_len);
    r->device[id_len] = 0;
    r->path_routed = 1;
    r->prefix_len = 3 + id_len;
    if (q < end && *q == '/') return 0;
    /* "/d/ID" is a directory: without the slash a client would resolve the page's relative
     * links above it. The Location starts "/d/", so it stays on this origin. */
    size_t rest = (size_t)(end - q);
    if (rest + 3 + id_len + 2 + 14 > sizeof r->extra) {
        rl_route_answer(r, 431, "%s", "URL too long\n");
        return -1;
    }
    snprintf(r->extra, sizeof r->extra, "Location: /d/%s/%.*s\r\n", r->device, (int)rest, q);
    rl_route_answer(r, 308, "%s", "a device's pages are under /d/ID/: continue at Location\n");
    r->own_endpoint = 1;
    return -1;
}

/* The token and where it came from. With path routing every device shares the relay's
 * browser origin, so a cookie or a URL token there would let one device's page use another
 * device's credential: path routing takes Authorization only. 0, or -1 with the answer. */
static int find_token(const rl_core *core, const rl_head *h, rl_route *r, rl_span *tok) {
    rl_span none = {NULL, 0};
    *tok = none;
    if (rl_bearer(rl_head_get(h, "authorization"), tok)) {
        r->token_in = 1;
    } else if ((*tok = rl_query_token(r->target)).p) {
        r->token_in = 2;
    } else if ((*tok = rl_cookie_token(h)).p) {
        r->token_in = 3;
    }
    if (r->path_routed && r->token_in > 1) {
        rl_route_answer(r, 401,
                 "path routing (/d/ID/) takes the token only in Authorization: Bearer <token>; "
                 "browsers use host routing: http://ID.%s/?relay_token=<token>\n",
                 core->domain_len ? core->domain : "<domain>");
        return -1;
    }
    if (!tok->p || tok->n == 0) {
        rl_route_answer(r, 401, "%s",
                 r->path_routed ? "missing token: send Authorization: Bearer <token>\n"
                                : "missing token: send Authorization: Bearer <token> or ?relay_token=<token>\n");
        return -1;
    }
    return 0;
}

/* Checks the token against the device. A device that is not registered is checked against a
 * key no token has, so that without a valid token known and unknown devices get the same
 * answer after the same work: device IDs cannot be probed. */
static int check_token(const rl_core *core, const rl_dev *dev, const char *tokbuf, size_t n, rl_route *r,
                       uint8_t tid[8]) {
    static const uint8_t no_device_key[RL_KEY_LEN];
    char tok_dev[RL_ID_MAX + 1];
    uint64_t now = (uint64_t)time(NULL);
    int rc = rl_token_check(core->cfg.token_key, tokbuf, n, r->device, dev ? dev->key : no_device_key, now, tok_dev);
    if (!dev && rc != RL_TOKEN_MALFORMED) rc = RL_TOKEN_BAD_MAC;
    if (rc == RL_TOKEN_BAD_MAC && tok_dev[0] && strcmp(tok_dev, r->device) != 0) {
        /* Maybe a genuine token for another device: that is 403 (its holder knows that device
         * exists), a forgery is 401 after the same work. */
        rl_dev copy;
        const rl_dev *other = rl_device_lookup(core, tok_dev, strlen(tok_dev),
                                               rl_registry_hash(&core->reg, tok_dev, strlen(tok_dev)), &copy);
        char again[RL_ID_MAX + 1];
        if (rl_token_check(core->cfg.token_key, tokbuf, n, tok_dev, other ? other->key : no_device_key, now, again) ==
                RL_TOKEN_OK && other) {
            rl_route_answer(r, 403, "this token is for another device, not %s\n", r->device);
            return -1;
        }
    }
    if (rc == RL_TOKEN_EXPIRED) {
        rl_route_answer(r, 401, "%s", "token expired\n");
        return -1;
    }
    if (rc != RL_TOKEN_OK) {
        rl_route_answer(r, 401, "%s", rc == RL_TOKEN_MALFORMED ? "malformed token\n" : "invalid token\n");
        return -1;
    }
    /* Checked on every request, so a revocation also ends the next request of an open connection. */
    if (rl_token_id(tokbuf, n, tid) != 0 || rl_revoked_has(&core->revoked, tid)) {
        rl_route_answer(r, 401, "%s", "token revoked\n");
        return -1;
    }
    return 0;
}

/* Trades a query token for a cookie on this device's origin (host routing only), sending the
 * browser to the same path without it. */
static void trade_token_for_cookie(int tls, rl_route *r, const char *tokbuf) {
    if (r->target.n > 2048) {
        rl_route_answer(r, 431, "%s", "URL too long\n");
        return;
    }
    struct evbuffer *loc = evbuffer_new();
    if (!loc) {
        rl_route_answer(r, 503, "%s", "relay out of memory\n");
        return;
    }
    rl_add_same_origin_path(loc, r->target);
    uint64_t now = (uint64_t)time(NULL), exp = strtoull(strchr(tokbuf, '.') + 1, NULL, 10);
    long max_age = exp > now ? (long)(exp - now) : 0;
    snprintf(r->extra, sizeof r->extra,
             "Location: %.*s\r\nSet-Cookie: relay_token=%s; Path=/; Max-Age=%ld; HttpOnly; SameSite=Lax%s\r\n",
             (int)evbuffer_get_length(loc), (const char *)evbuffer_pullup(loc, -1), tokbuf, max_age,
             tls ? "; Secure" : "");
    evbuffer_free(loc);
    rl_route_answer(r, 302, "%s", "token accepted; continue at Location\n");
}

/* Fast liveness verdict [claims 4, 5, 18]: nothing is sent to a stale address (liveness.c
 * says why a device is offline). 0 when live. */
static int check_live(const rl_core *core, const rl_dev *dev, rl_route *r) {
    if ((r->status = rl_liveness_verdict(core, dev, r->device, r->body_buf, sizeof r->body_buf)) == 0) return 0;
    if (dev && rl_clustered(core)) {
        /* Not live here: it may notify an address another node holds, who decides. */
        r->status = 0;
        r->remote = 1;
        return 0;
    }
    r->body = r->body_buf;
    return -1;
}

/* The connection's verified token, when `tokbuf` is it for this device and key. */
static int cache_hit(const rl_auth_cache *c, const rl_dev *dev, const char *tokbuf, size_t n, uint64_t id_hash) {
    return c && dev && c->id_hash == id_hash && c->len == n && memcmp(c->token, tokbuf, n) == 0 &&
           memcmp(c->key, dev->key, RL_KEY_LEN) == 0;
}

/* A token seen before on this connection is only checked for what can change (expiry,
 * revocation); any other is checked in full and, when good, becomes the one remembered. */
static int authenticate(const rl_core *core, const rl_dev *dev, const char *tokbuf, size_t n, rl_auth_cache *auth,
                        rl_route *r) {
    if (cache_hit(auth, dev, tokbuf, n, r->id_hash)) {
        r->authenticated_before = 1;
        if (auth->expires_unix <= (uint64_t)time(NULL)) {
            rl_route_answer(r, 401, "%s", "token expired\n");
            return -1;
        }
        if (rl_revoked_has(&core->revoked, auth->tid)) {
            rl_route_answer(r, 401, "%s", "token revoked\n");
            return -1;
        }
        return 0;
    }
    uint8_t tid[8];
    if (check_token(core, dev, tokbuf, n, r, tid) != 0) return -1;
    if (auth && dev) {
        auth->id_hash = r->id_hash;
        memcpy(auth->key, dev->key, RL_KEY_LEN);
        auth->expires_unix = strtoull(strchr(tokbuf, '.') + 1, NULL, 10);
        memcpy(auth->tid, tid, sizeof tid);
        auth->len = (uint8_t)n;
        memcpy(auth->token, tokbuf, n);
    }
    return 0;
}

/* With TLS, the plain port only sends terminals to the HTTPS one (health answers stay). The
 * host was checked as a host[:port] with the head (rl_flow_head), so the Location names it. */
static void redirect_to_https(const rl_core *core, rl_route *r) {
    rl_span host = r->host, target = r->target;
    size_t n = host.n;
    if (n && host.p[0] != '[') {
        const char *colon = memchr(host.p, ':', n);
        if (colon) n = (size_t)(colon - host.p);
    } else if (n) {
        const char *end = memchr(host.p, ']', n);
        n = end ? (size_t)(end - host.p) + 1 : 0;
    }
    memset(&r->extra, 0, sizeof r->extra);
    r->status = 0;
    int origin_form = target.n == 0 || target.p[0] == '/' || target.p[0] == '?';
    if (!n || n > 255 || target.n > 2048 || !origin_form || !rl_authority_valid((rl_span){host.p, n})) {
        rl_route_answer(r, 400, "%s", "this port redirects to HTTPS and needs a Host header\n");
        r->own_endpoint = 0;
        return;
    }
    int port = rl_listen_port(core, RL_LISTEN_HTTPS, 0);
    char portbuf[8] = "";
    if (port != 443) snprintf(portbuf, sizeof portbuf, ":%d", port);
    int slash = target.n == 0 || target.p[0] != '/';
    snprintf(r->extra, sizeof r->extra, "Location: https://%.*s%s%s%.*s\r\n", (int)n, host.p, portbuf, slash ? "/" : "",
             (int)target.n, target.p);
    rl_route_answer(r, 308, "%s", "this relay serves terminals over HTTPS: continue at Location\n");
    r->own_endpoint = 1;
}

static void route(const rl_core *core, const rl_head *h, int tls, rl_auth_cache *auth, rl_route *r) {
    memset(r, 0, sizeof *r);
    r->wants_html = rl_wants_html(h);
    if (split_target(h, r) != 0) {
        rl_route_answer(r, 400, "%s", "request target must be a path (/x) or an absolute URL (http://host/x)\n");
        return;
    }
    if (!route_by_host(core, r->host, r->device)) {
        if (r->target.n >= 4 && memcmp(r->target.p, "/d/", 3) == 0) {
            if (route_by_path(r) != 0) return;
        } else if (!own_endpoint(core, r->target, r)) {
            rl_route_answer(r, 400, "no device named: use http://ID.%s/ or /d/ID/\n", core->domain_len ? core->domain : "<domain>");
            return;
        }
        if (r->own_endpoint) return;
    }
    rl_span tok;
    if (find_token(core, h, r, &tok) != 0) return;
    char tokbuf[RL_TOKEN_MAX];
    if (tok.n >= sizeof tokbuf) {
        rl_route_answer(r, 401, "%s", "malformed token\n");
        return;
    }
    memcpy(tokbuf, tok.p, tok.n);
    tokbuf[tok.n] = 0;
    r->id_hash = rl_registry_hash(&core->reg, r->device, strlen(r->device));
    rl_dev copy; /* the device's entry as its loop has it (node.h) */
    const rl_dev *dev = rl_device_lookup(core, r->device, strlen(r->device), r->id_hash, &copy);
    if (authenticate(core, dev, tokbuf, tok.n, auth, r) != 0) return;
    if (r->token_in == 2) {
        trade_token_for_cookie(tls, r, tokbuf);
        return;
    }
    if (check_live(core, dev, r) != 0) return;
    rl_span sid = rl_head_get(h, "x-relay-session");
    if (sid.p && sid.n == 2 * RL_SESSION_ID_LEN && rl_unhex(sid.p, sid.n, r->reuse_sid, RL_SESSION_ID_LEN) == 0)
        r->has_reuse_sid = 1;
}

void rl_route_request(const rl_core *core, const rl_head *h, int tls, rl_auth_cache *auth, rl_route *r) {
    route(core, h, tls, auth, r);
    /* With TLS the plain port only sends terminals to the HTTPS one (health answers stay). */
    if (!tls && core->tls && rl_listen_count(core, RL_LISTEN_HTTPS) > 0 && !r->own_endpoint) redirect_to_https(core, r);
}
