/*
 * listen.c: the TCP listeners by kind. Each kind's row says what accepts its connections;
 * the five places that once switched over four arrays (add, port, pause, drain, free) are
 * loops over one table. What accepts each kind's connections is the hub's choice (core.c).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include "core_types.h"
#include "listen.h"
#include "netaddr.h"
#include "util.h"

typedef struct listen_kind {
    int tcp;          /* a kind of TCP listener (UDP sockets are udp.c's) */
    int terminal;     /* closed by a drain */
    int defer_accept; /* the peer speaks first (a device's hello) */
} listen_kind;

static const listen_kind kinds[RL_LISTEN_KINDS] = {
    [RL_LISTEN_HTTP] = {1, 1, 0},
    [RL_LISTEN_HTTPS] = {1, 1, 0},
    [RL_LISTEN_TCP] = {1, 0, 1},
    [RL_LISTEN_METRICS] = {1, 0, 0},
};

static void on_accept_error(struct evconnlistener *lev, void *arg);

static int open_listener(rl_core *core, rl_listener *l, const char *addr, int opts, evconnlistener_cb cb, char *err,
                         size_t err_len) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (rl_parse_addr(addr, &ss, &len, err, err_len) != 0) return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rl_set_err(err, err_len, "socket for %s: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* One listener per loop thread on this address (shard.h steers between them). */
    rl_sock_set_opts(fd, opts);
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* accepted sockets inherit it */
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) {
        rl_set_err(err, err_len, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    l->family = ss.ss_family;
    l->lev = evconnlistener_new(core->base, cb, core, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l->lev) {
        rl_set_err(err, err_len, "cannot watch listener %s", addr);
        close(fd);
        return -1;
    }
    evconnlistener_set_error_cb(l->lev, on_accept_error);
    return 0;
}

int rl_listen_add(rl_core *core, int kind, const char *addr, int opts, evconnlistener_cb accept, char *err,
                  size_t err_len) {
    if (kind < 0 || kind >= RL_LISTEN_KINDS || !kinds[kind].tcp) {
        rl_set_err(err, err_len, "unknown listener kind %d", kind);
        return -1;
    }
    int n = core->n_listen[kind];
    if (n >= RL_MAX_LISTENERS) {
        rl_set_err(err, err_len, "at most %d listeners of a kind", RL_MAX_LISTENERS);
        return -1;
    }
    rl_listener *l = &core->listeners[kind][n];
    if (open_listener(core, l, addr, opts, accept, err, err_len) != 0) return -1;
    if (kinds[kind].defer_accept) {
        /* A device speaks first (its hello): the kernel hands over a callback with the hello
         * already in, one loop wake-up instead of two. Past the wake timeout it hands it over
         * anyway, and the hello timer refuses it. */
        int secs = (int)(core->cfg.wake_timeout_ms / 1000) + 1;
        setsockopt(evconnlistener_get_fd(l->lev), IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
    }
    return core->n_listen[kind]++;
}

int rl_listen_count(const rl_core *core, int kind) {
    return kind >= 0 && kind < RL_LISTEN_KINDS ? core->n_listen[kind] : 0;
}

int rl_listen_port(const rl_core *core, int kind, int index) {
    return index >= 0 && index < rl_listen_count(core, kind) ? core->listeners[kind][index].port : -1;
}

const rl_listener *rl_listen_for_family(const rl_core *core, int kind, int family) {
    int n = rl_listen_count(core, kind);
    for (int i = 0; i < n; i++)
        if (core->listeners[kind][i].family == family) return &core->listeners[kind][i];
    return n ? &core->listeners[kind][0] : NULL;
}

/* Every listener still open (a drain frees the terminal ones) on or off. */
static void set_accepting(rl_core *core, int on) {
    for (int k = 0; k < RL_LISTEN_KINDS; k++)
        for (int i = 0; i < core->n_listen[k]; i++) {
            struct evconnlistener *lev = core->listeners[k][i].lev;
            if (lev) on ? evconnlistener_enable(lev) : evconnlistener_disable(lev);
        }
}

static void close_kinds(rl_core *core, int terminal_only) {
    for (int k = 0; k < RL_LISTEN_KINDS; k++) {
        if (terminal_only && !kinds[k].terminal) continue;
        for (int i = 0; i < core->n_listen[k]; i++) {
            rl_listener *l = &core->listeners[k][i];
            if (l->lev) evconnlistener_free(l->lev);
            l->lev = NULL;
        }
    }
}

void rl_listen_close_terminal(rl_core *core) {
    close_kinds(core, 1);
}

void rl_listen_stop_all(rl_core *core) {
    set_accepting(core, 0);
}

void rl_listen_drop_last(rl_core *core, int kind) {
    int n = rl_listen_count(core, kind);
    if (n == 0) return;
    rl_listener *l = &core->listeners[kind][n - 1];
    if (l->lev) evconnlistener_free(l->lev);
    l->lev = NULL;
    core->n_listen[kind]--;
}

void rl_listen_free_all(rl_core *core) {
    close_kinds(core, 0);
}

/* Descriptors may be free again: accept anew (and pause again at once if not). */
void rl_listen_resume(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    core->accept_paused = 0;
    set_accepting(core, 1);
}

/* Descriptors are process-wide: when one accept runs out of them, every listener would, so
 * all of them pause together. */
static void pause_accepting(rl_core *core) {
    if (core->accept_paused) return;
    core->accept_paused = 1;
    set_accepting(core, 0);
    CTR_INC(core->ctr.accept_paused);
    struct timeval wait = {0, 250000};
    evtimer_add(core->resume_ev, &wait);
}

/* accept() failed: out of descriptors pauses the listener (instead of a busy loop on a
 * backlog it cannot take) until resume_ev; other errors are left to the next attempt. */
static void on_accept_error(struct evconnlistener *lev, void *arg) {
    int err = EVUTIL_SOCKET_ERROR();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) pause_accepting(arg);
}

int rl_core_fd_refused(rl_core *core, int fd) {
    if (fd < core->fd_ceiling) return 0;
    close(fd);
    pause_accepting(core);
    return 1;
}
