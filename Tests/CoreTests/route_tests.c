/*
 * route_tests.c: the security boundary as a table (route.c). Every outcome of routing and
 * authorization for one request head: host and path routing, the relay's own endpoints,
 * tokens in each place they may and may not be, forged, foreign, expired and revoked
 * tokens, unknown and offline devices, the per-connection token cache, and the head the
 * device sees. Built with AddressSanitizer and UBSan by `make test-c`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core_types.h"
#include "route.h"
#include "rewrite.h"
#include "check.h"

static const uint8_t key_a[RL_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t key_b[RL_KEY_LEN] = {16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
static const uint8_t key_c[RL_KEY_LEN] = {3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3};

enum { ALIVE, NEVER, STALE, LEFT, UNANSWERED };

static rl_dev *device(rl_core *core, const char *id) {
    return rl_registry_find(&core->reg, rl_registry_hash(&core->reg, id, strlen(id)));
}

static void add_device(rl_core *core, const char *id, const uint8_t key[RL_KEY_LEN], int state) {
    CHECK(rl_core_device_put(core, id, key) == 0);
    rl_dev *d = device(core, id);
    if (state == NEVER) return;
    d->sock = 0;
    d->port = 9;
    d->last_access = state == STALE ? 1 : rl_core_now_ds(core) + 1;
    if (state == LEFT) d->flags |= RL_DEV_LEFT;
    if (state == UNANSWERED) d->flags |= RL_DEV_UNANSWERED;
}

/* A core that is never started: the registry, revoked set and settings are all route reads. */
static rl_core *route_core(void) {
    rl_core_config cfg;
    char err[256];
    rl_core_config_defaults(&cfg);
    cfg.capacity = 16;
    cfg.period_s = 60;
    cfg.domain = "Relay.Test";
    memset(cfg.token_key, 7, sizeof cfg.token_key);
    rl_core *core = rl_core_new(&cfg, err, sizeof err);
    CHECK(core != NULL);
    core->t0.tv_sec -= 1000; /* "now" is 1000 s after start: a device last heard at its start is stale */
    rl_core_set_ready(core, 1);
    add_device(core, "cam-1", key_a, ALIVE);
    add_device(core, "cam-2", key_b, ALIVE);
    add_device(core, "cam-3", key_a, NEVER);
    add_device(core, "cam-4", key_a, STALE);
    add_device(core, "cam-5", key_a, LEFT);
    add_device(core, "cam-6", key_a, UNANSWERED);
    return core;
}

static void mint(const rl_core *core, const char *id, const uint8_t key[RL_KEY_LEN], uint64_t expires, uint8_t tid0,
                 char out[RL_TOKEN_MAX]) {
    uint8_t tid[8] = {tid0, 1, 2, 3, 4, 5, 6, 7};
    CHECK(rl_token_mint(core->cfg.token_key, id, key, expires, tid, out, RL_TOKEN_MAX) == 0);
}

/* Routes `head` (with every "%s" replaced by `tok`) as the first request of a connection. */
static int route_head(const rl_core *core, const char *head, const char *tok, int tls, rl_auth_cache *auth,
                      rl_route *r) {
    char text[2048];
    snprintf(text, sizeof text, head, tok, tok, tok);
    static char held[2048]; /* the route's spans point into the head */
    memcpy(held, text, sizeof held);
    rl_flow f;
    rl_head h;
    memset(&f, 0, sizeof f);
    if (rl_flow_head(&f, HTTP_REQUEST, held, strlen(held), &h) != 0) return -1;
    rl_route_request(core, &h, tls, auth, r);
    return 0;
}

typedef struct route_case {
    const char *what;
    const char *head;      /* "%s": the case's token */
    int token;             /* which token: see tokens[] in test_route_table */
    int status;            /* expected: 0 forward, else the relay's answer */
    const char *device;    /* expected device when forwarded */
    const char *says;      /* a piece of the body or of the extra headers, or NULL */
} route_case;

static void test_route_table(void) {
    rl_core *core = route_core();
    uint64_t later = (uint64_t)time(NULL) + 3600;
    char tokens[7][RL_TOKEN_MAX];
    mint(core, "cam-1", key_a, later, 1, tokens[0]);            /* 0: good for cam-1 */
    mint(core, "cam-2", key_b, later, 2, tokens[1]);            /* 1: good for cam-2 */
    mint(core, "cam-1", key_b, later, 3, tokens[2]);            /* 2: cam-1 under the wrong key: forged */
    mint(core, "cam-1", key_a, (uint64_t)time(NULL) - 5, 4, tokens[3]); /* 3: expired */
    mint(core, "cam-1", key_a, later, 5, tokens[4]);            /* 4: revoked below */
    mint(core, "cam-3", key_a, later, 6, tokens[5]);            /* 5: good for cam-3 (never notified) */
    mint(core, "cam-9", key_a, later, 7, tokens[6]);            /* 6: for a device that does not exist */
    uint8_t revoked_tid[8] = {5, 1, 2, 3, 4, 5, 6, 7};
    CHECK(rl_core_token_revoke(core, revoked_tid, later) == 0);
    const route_case cases[] = {
        {"host routing, Bearer", "GET /x HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 0, 0, "cam-1", NULL},
        {"host routing, any case and a port", "GET / HTTP/1.1\r\nHost: CAM-1.Relay.TEST:8080\r\nAuthorization: Bearer %s\r\n\r\n", 0, 0, "cam-1", NULL},
        {"path routing, Bearer", "GET /d/cam-1/x HTTP/1.1\r\nHost: relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 0, 0, "cam-1", NULL},
        {"host routing, cookie", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nCookie: a=1; relay_token=%s\r\n\r\n", 0, 0, "cam-1", NULL},
        {"absolute form names the device", "GET http://cam-1.relay.test/x HTTP/1.1\r\nHost: cam-2.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 0, 0, "cam-1", NULL},
        {"query token traded for a cookie", "GET /p?relay_token=%s&k=1 HTTP/1.1\r\nHost: cam-1.relay.test\r\n\r\n", 0, 302, NULL, "Location: /p?k=1\r\nSet-Cookie: relay_token="},
        {"path routing refuses a query token", "GET /d/cam-1/?relay_token=%s HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 401, NULL, "only in Authorization"},
        {"path routing refuses a cookie", "GET /d/cam-1/ HTTP/1.1\r\nHost: relay.test\r\nCookie: relay_token=%s\r\n\r\n", 0, 401, NULL, "only in Authorization"},
        {"no token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\n\r\n", 0, 401, NULL, "missing token"},
        {"Basic is not a token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Basic %s\r\n\r\n", 0, 401, NULL, "missing token"},
        {"another device's genuine token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 1, 403, NULL, "another device"},
        {"forged token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 2, 401, NULL, "invalid token"},
        {"forged token naming another device", "GET / HTTP/1.1\r\nHost: cam-2.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 2, 401, NULL, "invalid token"},
        {"unknown device: same answer as a forgery", "GET / HTTP/1.1\r\nHost: cam-9.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 6, 401, NULL, "invalid token"},
        /* a genuine token names its own device: 403 whether or not the one asked for exists */
        {"unknown device, another's token", "GET / HTTP/1.1\r\nHost: cam-9.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 0, 403, NULL, "another device"},
        {"malformed token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer x%s\r\n\r\n", 0, 401, NULL, "token"},
        {"expired token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 3, 401, NULL, "token expired"},
        {"revoked token", "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 4, 401, NULL, "token revoked"},
        {"never notified", "GET / HTTP/1.1\r\nHost: cam-3.relay.test\r\nAuthorization: Bearer %s\r\n\r\n", 5, 503, NULL, "has not notified"},
        {"/d/ID without the slash", "GET /d/cam-1?x=1 HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 308, NULL, "Location: /d/cam-1/?x=1"},
        {"not a device ID", "GET /d/Cam_1/ HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 404, NULL, "no such device"},
        {"no device named", "GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 400, NULL, "no device named"},
        {"a host under another domain", "GET / HTTP/1.1\r\nHost: cam-1.relay.test.evil\r\n\r\n", 0, 400, NULL, "no device named"},
        {"healthz", "GET /healthz HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 200, NULL, "ok"},
        {"readyz", "GET /readyz HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 200, NULL, "ready"},
        {"asterisk form", "OPTIONS * HTTP/1.1\r\nHost: relay.test\r\n\r\n", 0, 400, NULL, "request target"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const route_case *c = &cases[i];
        rl_route r;
        int parsed = route_head(core, c->head, tokens[c->token], 0, NULL, &r) == 0;
        int ok = parsed && r.status == c->status && (!c->device || strcmp(r.device, c->device) == 0) &&
                 (!c->says || (r.body && strstr(r.body, c->says)) || strstr(r.extra, c->says));
        CHECK(ok);
        if (!ok) fprintf(stderr, "case \"%s\": status %d, device %s, body %s extra %s\n", c->what, r.status, r.device,
                         r.body ? r.body : "-", r.extra);
    }
    rl_core_free(core);
}

/* Offline devices are refused with why, from the registry alone. */
static void test_offline_reasons(void) {
    rl_core *core = route_core();
    const char *ids[] = {"cam-4", "cam-5", "cam-6"};
    const char *why[] = {"last notify", "said it was stopping", "did not answer its last wake"};
    for (int i = 0; i < 3; i++) {
        char tok[RL_TOKEN_MAX], head[512];
        mint(core, ids[i], key_a, (uint64_t)time(NULL) + 60, 9, tok);
        snprintf(head, sizeof head, "GET / HTTP/1.1\r\nHost: %s.relay.test\r\nAuthorization: Bearer %%s\r\n\r\n", ids[i]);
        rl_route r;
        CHECK(route_head(core, head, tok, 0, NULL, &r) == 0 && r.status == 503 && strstr(r.body, why[i]));
    }
    rl_core_free(core);
}

/* The reuse request header is taken only in its exact form. */
static void test_reuse_sid(void) {
    rl_core *core = route_core();
    char tok[RL_TOKEN_MAX];
    mint(core, "cam-1", key_a, (uint64_t)time(NULL) + 60, 1, tok);
    rl_route r;
    const char *good = "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n"
                       "X-Relay-Session: 00112233445566778899aabbccddeeff\r\n\r\n";
    CHECK(route_head(core, good, tok, 0, NULL, &r) == 0 && r.status == 0 && r.has_reuse_sid && r.reuse_sid[15] == 0xff);
    const char *short_sid = "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n"
                            "X-Relay-Session: 00112233445566778899aabbccddeef\r\n\r\n";
    CHECK(route_head(core, short_sid, tok, 0, NULL, &r) == 0 && r.status == 0 && !r.has_reuse_sid);
    const char *not_hex = "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n"
                          "X-Relay-Session: 00112233445566778899aabbccddeefg\r\n\r\n";
    CHECK(route_head(core, not_hex, tok, 0, NULL, &r) == 0 && r.status == 0 && !r.has_reuse_sid);
    rl_core_free(core);
}

/* A connection's verified token costs no MAC next time, but everything that can change is
 * still seen: revocation, expiry, a re-keyed device, another token, another device. */
static void test_auth_cache(void) {
    rl_core *core = route_core();
    char tok[RL_TOKEN_MAX], other[RL_TOKEN_MAX];
    mint(core, "cam-1", key_a, (uint64_t)time(NULL) + 60, 1, tok);
    mint(core, "cam-1", key_a, (uint64_t)time(NULL) + 60, 2, other);
    const char *cam1 = "GET / HTTP/1.1\r\nHost: cam-1.relay.test\r\nAuthorization: Bearer %s\r\n\r\n";
    const char *cam2 = "GET / HTTP/1.1\r\nHost: cam-2.relay.test\r\nAuthorization: Bearer %s\r\n\r\n";
    rl_auth_cache auth;
    memset(&auth, 0, sizeof auth);
    rl_route r;
    CHECK(route_head(core, cam1, tok, 0, &auth, &r) == 0 && r.status == 0 && !r.authenticated_before);
    CHECK(route_head(core, cam1, tok, 0, &auth, &r) == 0 && r.status == 0 && r.authenticated_before);
    /* the same token for another device is checked in full: 403, and the cache stays */
    CHECK(route_head(core, cam2, tok, 0, &auth, &r) == 0 && r.status == 403 && !r.authenticated_before);
    /* another good token replaces it */
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 0 && !r.authenticated_before);
    CHECK(route_head(core, cam1, tok, 0, &auth, &r) == 0 && r.status == 0 && !r.authenticated_before);
    /* revoked while cached */
    uint8_t tid[8] = {1, 1, 2, 3, 4, 5, 6, 7};
    CHECK(rl_core_token_revoke(core, tid, (uint64_t)time(NULL) + 60) == 0);
    CHECK(route_head(core, cam1, tok, 0, &auth, &r) == 0 && r.status == 401 && strstr(r.body, "revoked"));
    /* expired while cached */
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 0);
    auth.expires_unix = (uint64_t)time(NULL) - 1;
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 401 && strstr(r.body, "expired"));
    /* the device re-keyed: the cached proof is for the old key */
    memset(&auth, 0, sizeof auth);
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 0);
    CHECK(rl_core_device_put(core, "cam-1", key_c) == 0);
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 401 && !r.authenticated_before);
    /* the device removed (first back under its old key: a re-key also forgets its anchor) */
    add_device(core, "cam-1", key_a, ALIVE);
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 0);
    CHECK(rl_core_device_remove(core, "cam-1") == 0);
    CHECK(route_head(core, cam1, other, 0, &auth, &r) == 0 && r.status == 401);
    rl_core_free(core);
}

/* What the device sees: no prefix, no relay credential in any spelling, its own cookies and
 * the relay's forwarding headers. */
static void test_forwarded_head(void) {
    rl_core *core = route_core();
    char tok[RL_TOKEN_MAX];
    mint(core, "cam-1", key_a, (uint64_t)time(NULL) + 60, 1, tok);
    const char *head = "POST /d/cam-1/api?relay_token=x&q=1 HTTP/1.1\r\nHost: relay.test\r\nAuthorization: Bearer %s\r\n"
                       "Cookie: theme=dark; relay_token=%s; sid=7\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 0\r\n\r\n";
    rl_route r;
    CHECK(route_head(core, head, tok, 0, NULL, &r) == 0 && r.status == 0 && r.path_routed);
    rl_flow f;
    rl_head h;
    char text[2048];
    snprintf(text, sizeof text, head, tok, tok);
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, text, strlen(text), &h) == 0);
    rl_route_request(core, &h, 0, NULL, &r);
    struct evbuffer *out = evbuffer_new();
    rl_rewrite_request_head(out, &h, &r, "192.0.2.7", 0);
    size_t n = evbuffer_get_length(out);
    char *seen = calloc(1, n + 1);
    evbuffer_remove(out, seen, n);
    CHECK(strncmp(seen, "POST /api?q=1 HTTP/1.1\r\n", 24) == 0);
    CHECK(strstr(seen, "relay_token") == NULL && strstr(seen, tok) == NULL && strstr(seen, "Bearer") == NULL);
    CHECK(strstr(seen, "Cookie: theme=dark; sid=7\r\n") != NULL);
    /* the terminal's X-Forwarded-For is a claim: kept as one, with the address the relay saw last */
    CHECK(strstr(seen, "X-Forwarded-For: 6.6.6.6, 192.0.2.7\r\n") != NULL && strstr(seen, "X-Real-IP: 192.0.2.7\r\n"));
    CHECK(strstr(seen, "X-Forwarded-Prefix: /d/cam-1\r\n") != NULL);
    CHECK(n > 4 && strcmp(seen + n - 4, "\r\n\r\n") == 0);
    if (failed) fprintf(stderr, "forwarded head:\n%s", seen);
    free(seen);
    evbuffer_free(out);
    rl_core_free(core);
}

int main(void) {
    test_route_table();
    test_offline_reasons();
    test_reuse_sid();
    test_auth_cache();
    test_forwarded_head();
    printf("route: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
