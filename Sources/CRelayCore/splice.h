/*
 * splice.h: moving a known number of bytes from one socket to another inside the kernel
 * [claim 10]: source socket -> pipe -> destination socket with splice(2), so the bytes
 * never enter user space. A mechanism only: it knows two descriptors and a length; the
 * exchange decides when a body is worth it and what a failure means.
 */
#ifndef RL_SPLICE_H
#define RL_SPLICE_H

#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>

#define RL_SPLICE_MIN (256 * 1024) /* body bytes left for a splice to be worth its pipe */

typedef struct rl_splice rl_splice;

enum rl_splice_event {
    RL_SPLICE_MOVED,     /* `n` more bytes reached the destination */
    RL_SPLICE_DONE,      /* all of them did */
    RL_SPLICE_SRC_EOF,   /* the source closed before the end */
    RL_SPLICE_SRC_ERROR,
    RL_SPLICE_DST_ERROR,
};
/* Every event but MOVED ends the splice: the callback frees it (rl_splice_free) or lets it be,
 * and the splice touches nothing of its own after calling back with one of them. */
typedef void (*rl_splice_cb)(void *arg, int event, size_t n);

/* Starts moving `len` bytes from `src_fd` to `dst_fd`; NULL (no pipe: out of descriptors)
 * and the caller moves them the ordinary way. */
rl_splice *rl_splice_start(struct event_base *base, int src_fd, int dst_fd, uint64_t len, rl_splice_cb cb, void *arg);
void rl_splice_free(rl_splice *p);

#endif
