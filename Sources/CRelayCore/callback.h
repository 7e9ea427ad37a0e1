/* callback.h: device callbacks: hello, proof, bind (callback.c). */
#ifndef RL_CALLBACK_H
#define RL_CALLBACK_H

#include "core_types.h"

#include <event2/listener.h>

void rl_callback_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);

#endif
