/*
 * splice.c: kernel-to-kernel byte moves (splice.h). Both sides run at once, as with
 * buffers: each side's event is armed exactly while it can make progress, the source's
 * while the pipe has room, the destination's while the pipe holds bytes its socket did not
 * take.
 */
#define _GNU_SOURCE /* splice, pipe2, F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include "splice.h"

#define RL_SPLICE_PIPE (1 << 20) /* pipe capacity asked for: fewer calls per MiB */

struct rl_splice {
    int pipe_r, pipe_w, src_fd, dst_fd;
    size_t cap;         /* the pipe's capacity */
    size_t in_pipe;     /* bytes in the pipe, not yet at the destination */
    int full;           /* the pipe refused more (its slots can fill before `cap` bytes) */
    uint64_t left;      /* bytes not yet taken from the source */
    struct event *in_ev;  /* source readable */
    struct event *out_ev; /* destination writable */
    rl_splice_cb cb;
    void *arg;
};

static void on_in(evutil_socket_t fd, short what, void *arg);
static void on_out(evutil_socket_t fd, short what, void *arg);

void rl_splice_free(rl_splice *p) {
    if (!p) return;
    if (p->in_ev) event_free(p->in_ev);
    if (p->out_ev) event_free(p->out_ev);
    if (p->pipe_r >= 0) close(p->pipe_r);
    if (p->pipe_w >= 0) close(p->pipe_w);
    free(p);
}

rl_splice *rl_splice_start(struct event_base *base, int src_fd, int dst_fd, uint64_t len, rl_splice_cb cb, void *arg) {
    rl_splice *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(p);
        return NULL;
    }
    p->pipe_r = fds[0];
    p->pipe_w = fds[1];
    (void)fcntl(p->pipe_w, F_SETPIPE_SZ, RL_SPLICE_PIPE); /* best effort: 64 KiB otherwise */
    int cap = fcntl(p->pipe_w, F_GETPIPE_SZ);
    p->cap = cap > 0 ? (size_t)cap : 65536;
    p->left = len;
    p->src_fd = src_fd;
    p->dst_fd = dst_fd;
    p->cb = cb;
    p->arg = arg;
    p->in_ev = event_new(base, src_fd, EV_READ | EV_PERSIST, on_in, p);
    p->out_ev = event_new(base, dst_fd, EV_WRITE | EV_PERSIST, on_out, p);
    if (!p->in_ev || !p->out_ev) {
        rl_splice_free(p);
        return NULL;
    }
    event_add(p->in_ev, NULL);
    return p;
}

/* Moves what the pipe holds to the destination and re-arms each side. */
static void pump_out(rl_splice *p) {
    int blocked = 0;
    while (p->in_pipe > 0) {
        ssize_t n = splice(p->pipe_r, NULL, p->dst_fd, NULL, p->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            p->in_pipe -= (size_t)n;
            p->full = 0;
            p->cb(p->arg, RL_SPLICE_MOVED, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            blocked = 1; /* the destination's socket is full */
            break;
        }
        p->cb(p->arg, RL_SPLICE_DST_ERROR, 0);
        return;
    }
    if (p->left == 0 && p->in_pipe == 0) {
        p->cb(p->arg, RL_SPLICE_DONE, 0);
        return;
    }
    if (blocked) event_add(p->out_ev, NULL);
    else event_del(p->out_ev);
    if (p->left > 0 && p->in_pipe < p->cap && !p->full) event_add(p->in_ev, NULL);
    else event_del(p->in_ev);
}

static void on_in(evutil_socket_t fd, short what, void *arg) {
    rl_splice *p = arg;
    size_t room = p->cap - p->in_pipe;
    size_t want = p->left < room ? (size_t)p->left : room;
    ssize_t n = splice(fd, NULL, p->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        p->in_pipe += (size_t)n;
        p->left -= (uint64_t)n;
    } else if (n == 0) {
        p->cb(p->arg, RL_SPLICE_SRC_EOF, 0);
        return;
    } else if (errno == EAGAIN && p->in_pipe > 0) {
        p->full = 1; /* wait for the destination to take some before reading the source again */
    } else if (errno != EAGAIN && errno != EINTR) {
        p->cb(p->arg, RL_SPLICE_SRC_ERROR, 0);
        return;
    }
    pump_out(p);
}

static void on_out(evutil_socket_t fd, short what, void *arg) {
    pump_out(arg);
}
