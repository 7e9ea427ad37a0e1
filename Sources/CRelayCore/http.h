/* http.h: the relay's own HTTP answers, as text or as a page (http.c, pages.c). */
#ifndef RL_HTTP_H
#define RL_HTTP_H

#include <event2/buffer.h>
#include "flow.h"

void rl_http_respond(struct evbuffer *out, int status, const char *extra_headers, const char *body);
/* 1 when the request accepts text/html (a browser). */
int rl_wants_html(const struct rl_head *h);
/* The same answer as a small page saying what happened and what to do. */
void rl_http_respond_page(struct evbuffer *out, int status, const char *extra_headers, const char *text);
const char *rl_http_reason(int status);

#endif
