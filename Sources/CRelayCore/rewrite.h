/*
 * rewrite.h: what the relay takes out of a request before the device sees it (its own
 * credentials, forwarding headers a terminal made up) and what it puts in, and the paths of
 * its own redirects, which must stay on the same origin.
 *
 * The relay's credential is spelled three ways: Authorization: Bearer <token>, the query
 * parameter relay_token, the cookie relay_token. Every occurrence of each is removed from
 * every forwarded head, whichever one authenticated the request, so that a device never sees
 * a relay token.
 */
#ifndef RL_REWRITE_H
#define RL_REWRITE_H

#include <event2/buffer.h>
#include "flow.h"

/* The value of the first relay_token query parameter of `target` (NULL span: none). */
rl_span rl_query_token(rl_span target);
/* Appends `target` (path, then query) without any relay_token parameter; a query left
 * empty loses its '?'. */
void rl_add_target_without_tokens(struct evbuffer *out, rl_span target);
/* Appends a path for a Location the relay sends: `target` without relay_token parameters,
 * and with its leading run of '/' and '\' made a single '/', so that it can never be read
 * as scheme-relative ("//evil.example/", "/\evil.example/"). */
void rl_add_same_origin_path(struct evbuffer *out, rl_span target);
/* The value of the first relay_token cookie in the head's Cookie headers (NULL: none). */
rl_span rl_cookie_token(const rl_head *h);
/* Appends the Cookie header line `name: value` without relay_token cookies; nothing when
 * no cookie is left. */
void rl_add_cookie_without_tokens(struct evbuffer *out, rl_span name, rl_span value);
/* 1 when an Authorization value uses the Bearer scheme; `credential` gets what follows. */
int rl_bearer(rl_span authorization, rl_span *credential);
/* Headers the relay owns: a terminal's own are never forwarded (rl_add_forwarding_headers
 * writes the relay's, or appends to them). */
int rl_relay_owned_header(rl_span name);
/* Appends the relay's forwarding headers (docs/PROTOCOL.md, "Forwarding headers"). `host`:
 * the request's host (NULL span: none); `prefix_device`: the device of a path-routed
 * request, else NULL. */
void rl_add_forwarding_headers(struct evbuffer *out, const rl_head *h, const char *peer, int tls, rl_span host,
                               const char *prefix_device);

struct rl_route;
/* Appends request head `h` as the device must see it, routed by `r`: origin-form target
 * without the routing prefix, none of the relay's credentials, the relay's forwarding
 * headers (`peer`: the terminal's address; `tls`: it came over TLS). */
void rl_rewrite_request_head(struct evbuffer *out, const rl_head *h, const struct rl_route *r, const char *peer, int tls);

#endif
