/*
 * udp.c: notify ingest [claims 1, 4, 5, 12, 21-23] and the datagrams the relay sends.
 *
 * Each UDP listener is read with recvmmsg in batches, level-triggered: a callback reads
 * up to RL_UDP_BUDGET batches and returns, and a socket with data left is reported ready
 * again by the next epoll_wait, together with every other ready socket, so a datagram
 * flood cannot starve the HTTP front or the callbacks. (It was edge-triggered and
 * re-activated itself with event_active; libevent 2.1 runs an event activated from a
 * callback in the same pass without polling again, so under a sustained flood the loop
 * never returned to epoll: found by `make test-tsan`, Tests/fuzz/tsan_core.c.)
 * Nothing is allocated per datagram.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "internal.h"

#define RL_UDP_BATCH 64
#define RL_UDP_BUDGET 16
#define RL_UDP_BUF 256 /* larger than any valid datagram: longer ones are flagged MSG_TRUNC */

static void on_udp(evutil_socket_t fd, short what, void *arg);

uint32_t rl_udp_rcvbuf(const rl_core *core) {
    uint32_t least = 0;
    for (int i = 0; i < core->n_udp; i++)
        if (i == 0 || core->udp[i].rcvbuf < least) least = core->udp[i].rcvbuf;
    return least;
}

int rl_udp_open(rl_core *core, const char *addr, char *err, size_t err_len) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (rl_parse_addr(addr, &ss, &len, err, err_len) != 0) return -1;
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rl_set_err(err, err_len, "socket for %s: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1, rcvbuf = RL_UDP_RCVBUF, granted = 0;
    socklen_t glen = sizeof granted;
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    /* Bursts of notifies must not overflow the default ~200 KiB buffer (about 500 datagrams
     * on loopback). The kernel caps this at net.core.rmem_max, and reads back twice what it
     * granted (its bookkeeping share): the relay reports the grant so an operator sees a cap. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &glen);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        rl_set_err(err, err_len, "cannot bind UDP %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    rl_udp_sock *u = &core->udp[core->n_udp];
    u->fd = fd;
    u->family = ss.ss_family;
    u->core = core;
    u->index = (uint8_t)core->n_udp;
    u->rcvbuf = granted > 0 ? (uint32_t)granted / 2 : 0;
    u->ev = event_new(core->base, fd, EV_READ | EV_PERSIST, on_udp, u);
    if (!u->ev || event_add(u->ev, NULL) != 0) {
        rl_set_err(err, err_len, "cannot watch UDP %s", addr);
        if (u->ev) event_free(u->ev);
        close(fd);
        return -1;
    }
    core->n_udp++;
    return 0;
}

void rl_udp_close_all(rl_core *core) {
    for (int i = 0; i < core->n_udp; i++) {
        event_free(core->udp[i].ev);
        close(core->udp[i].fd);
    }
    core->n_udp = 0;
}

static void send_from(rl_udp_sock *u, const uint8_t *buf, size_t len, const struct sockaddr *to, socklen_t to_len) {
    /* Best effort: a full send buffer drops the reply; the device retries. */
    (void)sendto(u->fd, buf, len, MSG_DONTWAIT, to, to_len);
}

/* The callback port to tell a device: a TCP listener of the same address family as the UDP
 * socket it talks to, so a device reached over IPv6 calls back over IPv6. */
static uint16_t callback_port(const rl_core *core, int family) {
    for (int i = 0; i < core->n_tcp; i++)
        if (core->tcp[i].family == family) return (uint16_t)core->tcp[i].port;
    return (uint16_t)(core->n_tcp ? core->tcp[0].port : 0);
}

/* The replay rule for every device -> relay datagram [claims 21-23]: a counter not above the
 * last one recorded is dropped before any crypto (replays cost no HMAC), and a tag that does
 * not verify is dropped; only then is the counter recorded. So no captured datagram, replayed
 * from any address, is acted on twice, and an unverified one leaves nothing behind.
 * 1 when the datagram may be acted on, its counter now recorded. */
static int fresh_and_genuine(rl_core *core, int kind, uint64_t counter, const uint8_t *raw, size_t raw_len,
                             rl_dev *dev) {
    if (counter <= dev->counter) {
        DROP(core, kind, RL_DR_REPLAY);
        return 0;
    }
    if (!rl_dgram_verify(&core->mac, dev->key, raw, raw_len)) {
        DROP(core, kind, RL_DR_BAD_AUTH);
        return 0;
    }
    dev->counter = counter;
    return 1;
}

/* PERIOD_REQUEST: client nonce (8) || counter (8) || 8 zero bytes. Answered once per counter,
 * so a captured request reflects at most once, and only while no later datagram of the
 * device has been seen. It moves nothing but the counter. */
static void handle_period_request(rl_core *core, rl_udp_sock *u, const rl_dgram *d, const uint8_t *raw,
                                  size_t raw_len, rl_dev *dev, const struct sockaddr *from, socklen_t from_len) {
    if (!fresh_and_genuine(core, RL_DK_PERIOD, rl_get64(d->body + 8), raw, raw_len, dev)) return;
    uint8_t body[RL_BODY_PERIOD_INFO] = {0}, out[RL_DGRAM_MAX];
    memcpy(body, d->body, 8); /* echo the client nonce */
    rl_put32(body + 8, core->epoch);
    rl_put32(body + 12, core->cfg.period_s);
    rl_put32(body + 16, core->cfg.keepalive_s);
    rl_put16(body + 20, callback_port(core, u->family));
    size_t n = rl_dgram_build(&core->mac, out, sizeof out, RL_T_PERIOD_INFO, d->id, d->id_len, body, sizeof body, dev->key);
    CTR_INC(core->ctr.period_requests);
    if (n) send_from(u, out, n, from, from_len);
}

static void handle_notify(rl_core *core, rl_udp_sock *u, const rl_dgram *d, const uint8_t *raw, size_t raw_len,
                          rl_dev *dev, const struct sockaddr *from, socklen_t from_len) {
    int kind = d->type == RL_T_NOTIFY_A ? RL_DK_NOTIFY_A : RL_DK_NOTIFY_B;
    uint32_t epoch = rl_get32(d->body);
    uint64_t counter = rl_get64(d->body + 4);
    /* Every notify, NOTIFY_B from the current anchor too: one accepted unverified would leave
     * its counter unrecorded, and its replay from elsewhere would then move the anchor. */
    if (!fresh_and_genuine(core, kind, counter, raw, raw_len, dev)) return;
    if (epoch != core->epoch) {
        /* A notify from before a relay restart: tell the device the new epoch. RESYNC is
         * exactly as long as the notify (no amplification), and the counter is recorded, so
         * each captured notify is answered at most once. */
        uint8_t body[RL_BODY_RESYNC], out[RL_DGRAM_MAX];
        rl_put64(body, counter);
        rl_put32(body + 8, core->epoch);
        size_t n = rl_dgram_build(&core->mac, out, sizeof out, RL_T_RESYNC, d->id, d->id_len, body, sizeof body, dev->key);
        DROP(core, kind, RL_DR_STALE_EPOCH);
        if (n) send_from(u, out, n, from, from_len);
        return;
    }
    uint8_t addr[16];
    uint16_t port;
    rl_addr_to_v6(from, addr, &port);
    if (dev->sock != u->index || dev->port != port || memcmp(dev->addr, addr, 16) != 0) {
        if (dev->sock != RL_NO_SOCK) {
            CTR_INC(core->ctr.address_changes);
            rl_inspect_moved(core, dev, addr, port);
        }
        memcpy(dev->addr, addr, 16);
        dev->port = port;
        dev->sock = u->index;
        /* NAT rebinding during a wake: its CONNECT_REQUEST went to the old mapping. */
        if (dev->flags & RL_DEV_WAKING) rl_session_anchor_moved(core, dev);
    }
    if (d->type == RL_T_NOTIFY_A) {
        dev->last_access = rl_core_now_s(core) + 1;
        CTR_INC(core->ctr.notify_a_ok);
    } else {
        CTR_INC(core->ctr.notify_b_ok);
    }
}

void rl_udp_handle(rl_core *core, rl_udp_sock *u, const uint8_t *buf, size_t len, int truncated,
                   const struct sockaddr *from, socklen_t from_len) {
    rl_dgram d;
    if (truncated || rl_dgram_parse(buf, len, &d) != 0) {
        /* The kind is what the type byte claims, when there is one. */
        int framed = len >= 3 && buf[0] == RL_MAGIC && buf[1] == RL_VERSION;
        int kind = !framed ? RL_DK_OTHER
                   : buf[2] == RL_T_PERIOD_REQUEST ? RL_DK_PERIOD
                   : buf[2] == RL_T_NOTIFY_A       ? RL_DK_NOTIFY_A
                   : buf[2] == RL_T_NOTIFY_B       ? RL_DK_NOTIFY_B
                                                   : RL_DK_OTHER;
        DROP(core, kind, RL_DR_MALFORMED);
        return;
    }
    if (d.type != RL_T_PERIOD_REQUEST && d.type != RL_T_NOTIFY_A && d.type != RL_T_NOTIFY_B) {
        DROP(core, RL_DK_OTHER, RL_DR_MALFORMED); /* relay-to-device types are never accepted */
        return;
    }
    int kind = d.type == RL_T_PERIOD_REQUEST ? RL_DK_PERIOD : d.type == RL_T_NOTIFY_A ? RL_DK_NOTIFY_A : RL_DK_NOTIFY_B;
    rl_dev *dev = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, d.id, d.id_len));
    if (!dev) {
        DROP(core, kind, RL_DR_UNKNOWN_DEVICE);
        return;
    }
    if (d.type == RL_T_PERIOD_REQUEST) {
        handle_period_request(core, u, &d, buf, len, dev, from, from_len);
        return;
    }
    handle_notify(core, u, &d, buf, len, dev, from, from_len);
}

static void on_udp(evutil_socket_t fd, short what, void *arg) {
    rl_udp_sock *u = arg;
    rl_core *core = u->core;
    static __thread uint8_t bufs[RL_UDP_BATCH][RL_UDP_BUF];
    static __thread struct sockaddr_storage addrs[RL_UDP_BATCH];
    struct mmsghdr msgs[RL_UDP_BATCH];
    struct iovec iovs[RL_UDP_BATCH];

    for (int round = 0; round < RL_UDP_BUDGET; round++) {
        for (int i = 0; i < RL_UDP_BATCH; i++) {
            iovs[i].iov_base = bufs[i];
            iovs[i].iov_len = RL_UDP_BUF;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
        }
        int n = recvmmsg(fd, msgs, RL_UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return; /* EAGAIN: drained */
        CTR_ADD(core->ctr.dgram_rx, (uint64_t)n);
        for (int i = 0; i < n; i++) {
            int trunc = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
            rl_udp_handle(core, u, bufs[i], msgs[i].msg_len, trunc, (struct sockaddr *)&addrs[i],
                          msgs[i].msg_hdr.msg_namelen);
        }
        if (n < RL_UDP_BATCH) return;
    }
    /* Budget spent with data possibly left: level-triggered, the next poll reports it. */
}

int rl_udp_send_connect(rl_core *core, rl_session *s) {
    rl_dev *dev = rl_registry_find(&core->reg, s->id_hash);
    if (!dev || dev->sock == RL_NO_SOCK || dev->sock >= core->n_udp) return -1;
    rl_udp_sock *u = &core->udp[dev->sock];
    uint8_t body[RL_BODY_CONNECT] = {0}, out[RL_DGRAM_MAX];
    memcpy(body, s->sid, RL_SESSION_ID_LEN);
    memcpy(body + 16, s->nonce, RL_NONCE_LEN);
    rl_put16(body + 32, callback_port(core, u->family));
    size_t n = rl_dgram_build(&core->mac, out, sizeof out, RL_T_CONNECT, s->device_id, strlen(s->device_id), body,
                              sizeof body, dev->key);
    if (!n) return -1;
    struct sockaddr_storage to;
    socklen_t to_len;
    /* Reply through the socket the notify came in on, to the address it came from. */
    rl_v6_to_sockaddr(dev->addr, dev->port, u->family, &to, &to_len);
    send_from(u, out, n, (struct sockaddr *)&to, to_len);
    CTR_INC(core->ctr.conn_requests_sent);
    return 0;
}
