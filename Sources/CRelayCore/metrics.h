/* metrics.h: the Prometheus listener (metrics.c). */
#ifndef RL_METRICS_H
#define RL_METRICS_H

#include "core_types.h"

#include <event2/listener.h>

void rl_metrics_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
/* Stopping: closes every open scrape connection. */
void rl_metrics_close_all(rl_core *core);
void rl_metrics_render(rl_core *core, struct evbuffer *b); /* the scrape's body; loop thread */

#endif
