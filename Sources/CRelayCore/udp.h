/* udp.h: notify ingest and the datagrams the relay sends (udp.c). */
#ifndef RL_UDP_H
#define RL_UDP_H

#include "core_types.h"

int rl_udp_open(rl_core *core, const char *addr, int opts, char *err, size_t err_len);
/* The smallest receive buffer the kernel granted among the UDP sockets (0 with none). */
uint32_t rl_udp_rcvbuf(const rl_core *core);
int rl_udp_port(const rl_core *core, int index);
void rl_udp_close_all(rl_core *core);
/* Sends the replies queued on `u` (one sendmmsg). */
void rl_udp_flush(rl_udp_sock *u);
/* Sends CONNECT_REQUEST for `s` to its device's current anchor. 0, or -1 when the
 * device has no anchor (never notified) or was removed, or RL_SEND_NOT_HELD when the
 * anchor's address is a floating one another node holds now. */
#define RL_SEND_NOT_HELD (-2)
int rl_udp_send_connect(rl_core *core, rl_session *s);
/* Sends `buf` to the device's anchor from this loop's member of the socket its notify came
 * in on. 0 (a datagram lost on the way is not seen here), or RL_SEND_NOT_HELD. */
int rl_udp_send_to_anchor(rl_core *core, const rl_dev *dev, const uint8_t *buf, size_t n);
/* Handles one received datagram of `len` bytes from `from` on socket `u` (loop thread).
 * Counts exactly one outcome counter; answers only datagrams that verify. Not static so
 * that the fuzz target Tests/fuzz/fuzz_dgram.c can drive it without a socket read. */
void rl_udp_handle(rl_core *core, rl_udp_sock *u, const uint8_t *buf, size_t len, int truncated,
                   const struct sockaddr *from, socklen_t from_len);

#endif
