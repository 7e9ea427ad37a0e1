/* netaddr.h: address text and the 16-byte anchor form (IPv4 as v4-mapped IPv6). */
#ifndef RL_NETADDR_H
#define RL_NETADDR_H

#include <stdint.h>
#include <sys/socket.h>

/* Parses "HOST:PORT", "[V6]:PORT" or "*:PORT" (numeric hosts and names). */
int rl_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t err_len);
void rl_addr_to_v6(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port);
void rl_v6_to_sockaddr(const uint8_t addr[16], uint16_t port, int family, struct sockaddr_storage *ss, socklen_t *len);
/* AF_INET for an IPv4 address in the 16-byte form (::ffff:a.b.c.d), else AF_INET6. */
int rl_v6_family(const uint8_t addr[16]);

/* Options of a listening socket, before bind: one member of a loop-per-thread
 * SO_REUSEPORT group, and RL_LISTEN_FREEBIND (relay_core.h) for a floating address. */
#define RL_SOCK_REUSEPORT 1
/* A send from a floating address (IP_FREEBIND) that this node does not hold at the moment
 * fails with one of these: keepalived gave the address to another node. */
#include <errno.h>
static inline int rl_errno_not_held(int e) { return e == ENETUNREACH || e == EADDRNOTAVAIL || e == EINVAL; }
void rl_sock_set_opts(int fd, int opts);

#endif
