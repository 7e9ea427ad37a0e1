/*
 * route.h: what one request head asks for, decided without touching a socket [claims 2,
 * 4, 5, 16, 18]: which device (by host "<id>.<domain>" or path "/d/<id>/"), whether its
 * token is genuine, for this device, unexpired and not revoked, whether the device is
 * alive, or which of the relay's own answers it gets (health, readiness, redirects, the
 * token-for-cookie trade, every refusal). This is the security boundary: the front asks it
 * once per request head and forwards only what it allowed.
 */
#ifndef RL_ROUTE_H
#define RL_ROUTE_H

#include "core_types.h"

typedef struct rl_route {
    int status;                     /* 0: forward to `device`; else the relay answers */
    const char *body;               /* the relay's answer */
    char body_buf[400];
    char extra[2600];               /* extra response headers (redirect, cookie) */
    char device[RL_ID_MAX + 1];
    uint64_t id_hash;
    rl_span target;                 /* origin-form: path and query (absolute-form cut down) */
    rl_span host;                   /* the target's authority, else the Host header */
    int absolute_form;              /* "GET http://host/path": Host is rewritten to `host` */
    int path_routed;                /* /d/ID/ prefix to strip */
    size_t prefix_len;              /* bytes of the URL path that are the prefix */
    int token_in;                   /* 1 Authorization, 2 query, 3 cookie */
    uint8_t reuse_sid[RL_SESSION_ID_LEN];
    int has_reuse_sid;
    int remote;                     /* not live here: wake it through the cluster (mesh.h) */
    int own_endpoint;               /* /healthz, a redirect: the relay's own answer, not a refusal */
    int wants_html;                 /* the terminal accepts text/html: answers as pages */
    int authenticated_before;       /* the token was the connection's verified one (no MAC work) */
} rl_route;


/* Decides what head `h` asks for on a connection (`tls`: it came over TLS; `auth`: the
 * connection's cache, or NULL). Pure: reads the registry, the revoked set, the clock and
 * the core's settings; changes nothing but `r` and `auth`. */
void rl_route_request(const rl_core *core, const rl_head *h, int tls, rl_auth_cache *auth, rl_route *r);
/* Makes `r` the relay's answer `status` with a body formatted from `fmt` and `arg`. */
void rl_route_answer(rl_route *r, int status, const char *fmt, const char *arg);

#endif
