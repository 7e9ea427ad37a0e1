/*
 * listen.h: the relay's TCP listeners, one table by kind (RL_LISTEN_HTTP, _HTTPS, _TCP,
 * _METRICS; UDP sockets are udp.c's), and what every accept shares: pausing when the
 * process runs out of descriptors, and the descriptor reserve.
 */
#ifndef RL_LISTEN_H
#define RL_LISTEN_H

#include <event2/listener.h>

typedef struct rl_core rl_core;

#define RL_MAX_LISTENERS 8
#define RL_LISTEN_KINDS 5 /* indexed by RL_LISTEN_* (relay_core.h); the UDP row stays empty */

typedef struct rl_listener {
    struct evconnlistener *lev;
    int port;
    int family;
} rl_listener;

/* Opens a listener of `kind` on `addr` whose connections go to `accept`: its index among
 * that kind, or -1 with `err`. */
int rl_listen_add(rl_core *core, int kind, const char *addr, int opts, evconnlistener_cb accept, char *err,
                  size_t err_len);
/* The port listener `index` of `kind` is bound to, or -1. */
int rl_listen_port(const rl_core *core, int kind, int index);
/* The first listener of `kind` with address `family`, else the first of `kind`, or NULL. */
const rl_listener *rl_listen_for_family(const rl_core *core, int kind, int family);
int rl_listen_count(const rl_core *core, int kind);
/* Draining: the terminal listeners close (a new terminal is refused at once). */
void rl_listen_close_terminal(rl_core *core);
/* Stopping: every listener stops accepting; freeing: every listener closes. */
void rl_listen_stop_all(rl_core *core);
void rl_listen_free_all(rl_core *core);
/* Closes the listener of `kind` added last (a port range that did not fit, core.c). */
void rl_listen_drop_last(rl_core *core, int kind);
/* resume_ev's callback: the listeners paused for lack of descriptors accept again. */
void rl_listen_resume(evutil_socket_t fd, short what, void *arg);

/* An accepted descriptor in the reserve (numbered at or above fd_ceiling: at least that many
 * are open) is closed and the listeners pause as on EMFILE. 1 when `fd` was refused. */
int rl_core_fd_refused(rl_core *core, int fd);

#endif
