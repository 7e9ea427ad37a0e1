/* front.h: the terminal side: accept, heads, the relay's answers, timers (front.c). */
#ifndef RL_FRONT_H
#define RL_FRONT_H

#include <event2/listener.h>
#include "core_types.h"

void rl_front_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
void rl_front_accept_tls(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
/* Closes the terminal now and frees it after the current callback (reap.h); its session is
 * detached (idle for reuse) or ended. */
void rl_term_close(rl_term *t, int outcome);
void rl_term_close_all(rl_core *core);
/* Draining: closes terminals that wait for a next request with nothing received. */
void rl_term_close_idle(rl_core *core);

#endif
