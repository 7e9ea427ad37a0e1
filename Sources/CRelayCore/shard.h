/*
 * shard.h: which loop thread owns a device, and the kernel's half of that choice.
 *
 * With N loop threads every UDP address is N sockets in one SO_REUSEPORT group, one per
 * loop, and a classic BPF program attached to the group picks the member for each datagram
 * from the device ID inside it: shard(ID) = fmix32(FNV-1a-32(seed, ID)) mod N, computed the
 * same way by rl_shard_of here. So a device's datagrams reach the loop that owns its registry
 * entry whatever its NAT does to its source port. Terminal listeners are grouped the same
 * way by the terminal's source address, so one browser's connections share a loop (its
 * session reuse and the per-source limits stay within one loop).
 *
 * A datagram without a valid ID length (0, over RL_ID_MAX) goes to member 0, and one too
 * short to carry its ID makes the program fail its load, which gives it to member 0 as well:
 * that loop drops it as malformed. A well-formed datagram for an unknown device reaches the
 * loop whose shard would hold it, which drops it as unknown: no loop acts on a datagram for
 * a device it does not own.
 */
#ifndef RL_SHARD_H
#define RL_SHARD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The loop (0..n-1) that owns the device `id`. */
uint32_t rl_shard_of(uint32_t seed, const char *id, size_t len, uint32_t n);
/* The loop that takes a terminal from `from` (what the terminal program computes). */
uint32_t rl_shard_of_source(const struct sockaddr *from, uint32_t n);
/* Attach the programs to a complete group (any member's descriptor). 0, or -1 with errno. */
int rl_shard_attach_udp(int fd, uint32_t seed, uint32_t n);
int rl_shard_attach_terminal(int fd, int family, uint32_t n);

#endif
