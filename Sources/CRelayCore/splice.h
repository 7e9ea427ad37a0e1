/* splice.h: response bodies moved in the kernel (splice.c). */
#ifndef RL_SPLICE_H
#define RL_SPLICE_H

#include "core_types.h"

#define RL_SPLICE_MIN (256 * 1024) /* body bytes left for a splice to be worth its pipe */
/* The current response body can move link -> terminal with splice(2) (see splice.c). */
int rl_splice_wanted(const rl_session *s);
/* Starts it: 0, or -1 (no pipe) and the ordinary path carries the body. */
int rl_splice_begin(rl_session *s);
void rl_splice_free(rl_splice *p);

#endif
