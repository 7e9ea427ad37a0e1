/*
 * splice.c: large response bodies move device -> terminal inside the kernel [claim 10].
 *
 * Once a response head has gone to the terminal and its body is framed by Content-Length
 * with at least RL_SPLICE_MIN bytes left, both sides are plain TCP and nothing is queued on
 * either side, the rest of the body goes link socket -> pipe -> terminal socket with
 * splice(2): the bytes never enter user space. The session's framing stays in charge: the
 * splice moves exactly the body's length, then hands the link back to the stream, which
 * finds the next response head as before. Either side failing ends it the way a failure on
 * the ordinary path does.
 */
#define _GNU_SOURCE /* splice, pipe2, F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>
#include "core_types.h"
#include "splice.h"
#include "session.h"
#include "front.h"
#include "flow.h"

#define RL_SPLICE_PIPE (1 << 20) /* pipe capacity asked for: fewer calls per MiB */

struct rl_splice {
    int pipe_r, pipe_w;
    size_t cap;         /* the pipe's capacity */
    size_t in_pipe;     /* bytes in the pipe, not yet at the terminal */
    int full;           /* the pipe refused more (its slots can fill before `cap` bytes) */
    uint64_t left;      /* body bytes not yet taken from the link */
    struct event *in_ev;  /* link readable */
    struct event *out_ev; /* terminal writable */
};

static void on_in(evutil_socket_t fd, short what, void *arg);
static void on_out(evutil_socket_t fd, short what, void *arg);

int rl_splice_wanted(const rl_session *s) {
    const rl_term *t = s->term;
    if (!t || s->splice || !s->link || s->link->ssl || t->st->ssl || s->link->eof) return 0;
    if (!s->resp.in_body || s->resp.raw || (s->resp.parser.flags & F_CHUNKED)) return 0;
    uint64_t left = s->resp.parser.content_length;
    if (left == ULLONG_MAX || left < RL_SPLICE_MIN) return 0;
    return evbuffer_get_length(s->link->in) == 0 && evbuffer_get_length(t->st->out) == 0;
}

void rl_splice_free(rl_splice *p) {
    if (!p) return;
    if (p->in_ev) event_free(p->in_ev);
    if (p->out_ev) event_free(p->out_ev);
    if (p->pipe_r >= 0) close(p->pipe_r);
    if (p->pipe_w >= 0) close(p->pipe_w);
    free(p);
}

int rl_splice_begin(rl_session *s) {
    rl_splice *p = calloc(1, sizeof *p);
    if (!p) return -1;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(p); /* out of descriptors: the ordinary path carries the body */
        return -1;
    }
    p->pipe_r = fds[0];
    p->pipe_w = fds[1];
    (void)fcntl(p->pipe_w, F_SETPIPE_SZ, RL_SPLICE_PIPE); /* best effort: 64 KiB otherwise */
    int cap = fcntl(p->pipe_w, F_GETPIPE_SZ);
    p->cap = cap > 0 ? (size_t)cap : 65536;
    p->left = s->resp.parser.content_length;
    p->in_ev = event_new(s->core->base, s->link->fd, EV_READ | EV_PERSIST, on_in, s);
    p->out_ev = event_new(s->core->base, s->term->st->fd, EV_WRITE | EV_PERSIST, on_out, s);
    if (!p->in_ev || !p->out_ev) {
        rl_splice_free(p);
        return -1;
    }
    s->splice = p;
    CTR_INC(s->core->ctr.splices);
    rl_stream_read(s->link, 0); /* the link's bytes are ours until the body ends */
    event_add(p->in_ev, NULL);
    return 0;
}

/* The body is through: the stream takes the link back and the session goes on with the
 * next response (or request) as after any complete message. */
static void finish(rl_session *s) {
    rl_splice_free(s->splice);
    s->splice = NULL;
    rl_flow_next(&s->resp);
    if (s->pend_count) {
        s->pend_first = (s->pend_first + 1) % RL_MAX_PIPELINE;
        s->pend_count--;
    }
    rl_stream_read(s->link, 1);
    rl_session_pump_response(s);
}

/* Moves what the pipe holds to the terminal, and keeps each side's event armed exactly
 * while it can make progress: the device's while the pipe has room, the terminal's while
 * the pipe holds bytes its socket did not take. Both sides run at once, as with buffers.
 */
static void pump_out(rl_session *s) {
    rl_splice *p = s->splice;
    rl_term *t = s->term;
    int blocked = 0;
    while (p->in_pipe > 0) {
        ssize_t n = splice(p->pipe_r, NULL, t->st->fd, NULL, p->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            p->in_pipe -= (size_t)n;
            p->full = 0;
            t->bytes_to_terminal += (uint64_t)n;
            t->st->bytes_written += (unsigned long long)n;
            CTR_ADD(s->core->ctr.bytes_to_terminal, (uint64_t)n);
            t->last_active_s = rl_core_now_s(s->core);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            blocked = 1; /* the terminal's socket is full */
            break;
        }
        rl_term_close(t, RL_OUTCOME_RELAYED); /* the terminal went away mid-body; ends s */
        return;
    }
    if (p->left == 0 && p->in_pipe == 0) {
        finish(s);
        return;
    }
    if (blocked) event_add(p->out_ev, NULL);
    else event_del(p->out_ev);
    if (p->left > 0 && p->in_pipe < p->cap && !p->full) event_add(p->in_ev, NULL);
    else event_del(p->in_ev);
}

static void on_in(evutil_socket_t fd, short what, void *arg) {
    rl_session *s = arg;
    rl_splice *p = s->splice;
    size_t room = p->cap - p->in_pipe;
    size_t want = p->left < room ? (size_t)p->left : room;
    ssize_t n = splice(fd, NULL, p->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        p->in_pipe += (size_t)n;
        p->left -= (uint64_t)n;
    } else if (n == 0) {
        rl_session_device_gone(s, "end of stream in the middle of a body");
        return;
    } else if (errno == EAGAIN && p->in_pipe > 0) {
        p->full = 1; /* wait for the terminal to take some before reading the device again */
    } else if (errno != EAGAIN && errno != EINTR) {
        rl_session_device_gone(s, "link error");
        return;
    }
    pump_out(s);
}

static void on_out(evutil_socket_t fd, short what, void *arg) {
    pump_out(arg);
}
