/* front.h: the terminal side: accept, heads, the relay's answers (front.c). */
#ifndef RL_FRONT_H
#define RL_FRONT_H

#include "core_types.h"

#include <event2/listener.h>

void rl_front_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
void rl_front_accept_tls(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
/* The session of `t` ended without a response: answer `status` (0: just close). */
void rl_term_fail(rl_term *t, int status, const char *body);
/* Bytes can move terminal -> device again. */
void rl_term_pump_request(rl_term *t);
/* Called by the session when it is bound to `t` (wake done or reuse). */
void rl_term_bound(rl_term *t);
/* The session ended at a message boundary: the next request on `t` starts anew. */
void rl_term_rewake(rl_term *t);
void rl_term_close(rl_term *t, int outcome);
void rl_term_close_all(rl_core *core);
/* Draining: closes terminals that wait for a next request with nothing received. */
void rl_term_close_idle(rl_core *core);
/* Draining: the response is complete; close `t` once it is written, freeing its link. */
void rl_term_finish(rl_term *t);
/* The device's response head `h` (a struct rl_head) to the oldest request in flight: a 101
 * to an Upgrade request makes the terminal's side opaque; a closing response closes `t` after it. */
struct rl_head;
void rl_term_response_head(rl_term *t, const struct rl_head *h);

#endif
