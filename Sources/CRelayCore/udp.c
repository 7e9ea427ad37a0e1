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
#include <stdio.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "core_types.h"
#include "udp.h"
#include "records.h"
#include "liveness.h"
#include "track.h"
#include "netaddr.h"
#include "util.h"
#include "node.h"

#define RL_UDP_BUDGET 16
#define RL_UDP_BUF 256 /* larger than any valid datagram: longer ones are flagged MSG_TRUNC */

static void on_udp(evutil_socket_t fd, short what, void *arg);

uint32_t rl_udp_rcvbuf(const rl_core *core) {
    uint32_t least = 0;
    for (int i = 0; i < core->n_udp; i++)
        if (i == 0 || core->udp[i].rcvbuf < least) least = core->udp[i].rcvbuf;
    return least;
}

int rl_udp_open(rl_core *core, const char *addr, int opts, char *err, size_t err_len) {
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
    /* One socket per loop thread, all bound to this address (shard.h steers between them). */
    rl_sock_set_opts(fd, opts);
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

int rl_udp_port(const rl_core *core, int index) {
    if (index < 0 || index >= core->n_udp) return -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(core->udp[index].fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    uint8_t a[16];
    uint16_t port;
    rl_addr_to_v6((struct sockaddr *)&ss, a, &port);
    return port;
}

void rl_udp_close_all(rl_core *core) {
    for (int i = 0; i < core->n_udp; i++) {
        event_free(core->udp[i].ev);
        close(core->udp[i].fd);
    }
    core->n_udp = 0;
}

/* Queues a reply on the socket the datagram came in on; on_udp sends a batch's replies
 * with one sendmmsg. Best effort: a full send buffer drops a reply; the device retries. */
static void reply(rl_udp_sock *u, const uint8_t *buf, size_t len, const struct sockaddr *to, socklen_t to_len) {
    if (!len || len > sizeof u->out[0] || to_len > sizeof u->out_to[0]) return;
    if (u->n_out == RL_UDP_BATCH) rl_udp_flush(u);
    uint32_t i = u->n_out++;
    memcpy(u->out[i], buf, len);
    u->out_len[i] = (uint8_t)len;
    memcpy(&u->out_to[i], to, to_len);
    u->out_to_len[i] = to_len;
}

void rl_udp_flush(rl_udp_sock *u) {
    struct mmsghdr m[RL_UDP_BATCH];
    struct iovec iov[RL_UDP_BATCH];
    uint32_t n = u->n_out;
    for (uint32_t i = 0; i < n; i++) {
        iov[i] = (struct iovec){u->out[i], u->out_len[i]};
        memset(&m[i], 0, sizeof m[i]);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &u->out_to[i];
        m[i].msg_hdr.msg_namelen = u->out_to_len[i];
    }
    for (uint32_t sent = 0; sent < n;) {
        int r = sendmmsg(u->fd, m + sent, n - sent, MSG_DONTWAIT);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            sent++; /* skip the one that failed (unreachable, buffer full): the rest still go */
            continue;
        }
        sent += (uint32_t)r;
    }
    u->n_out = 0;
}

/* The callback port to tell a device: a TCP listener of the same address family as the UDP
 * socket it talks to, so a device reached over IPv6 calls back over IPv6. */
static uint16_t callback_port(const rl_core *core, int family) {
    const rl_listener *l = rl_listen_for_family(core, RL_LISTEN_TCP, family);
    return (uint16_t)(l ? l->port : 0);
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

/* A PERIOD_REQUEST the relay does not answer with PERIOD_INFO (unknown device, bad tag,
 * replay) gets REJECT, the same for each, so that an agent with a wrong --id or --key is told
 * and nobody learns which IDs exist. It cannot be authenticated (the relay may not know the
 * device), so it is the one answer to unverified input: never larger than the request, and at
 * most RL_REJECTS_PER_S a second for the whole relay, so a reflector gets next to nothing. */
#define RL_REJECTS_PER_S 10
static void reject_period_request(rl_core *core, rl_udp_sock *u, const rl_dgram *d, const struct sockaddr *from,
                                  socklen_t from_len) {
    uint32_t now = rl_core_now_s(core);
    if (core->reject_s != now) {
        core->reject_s = now;
        core->rejects_in_s = 0;
    }
    if (core->rejects_in_s >= RL_REJECTS_PER_S) return;
    core->rejects_in_s++;
    uint8_t out[RL_DGRAM_MAX] = {0};
    size_t len = rl_dgram_len(RL_T_REJECT, d->id_len);
    out[0] = RL_MAGIC;
    out[1] = RL_VERSION;
    out[2] = RL_T_REJECT;
    out[3] = d->id_len;
    memcpy(out + 4, d->id, d->id_len);
    memcpy(out + 4 + d->id_len, d->body, 8); /* the client nonce; the rest and the tag stay zero */
    CTR_INC(core->ctr.rejects_sent);
    reply(u, out, len, from, from_len);
}

/* PERIOD_REQUEST: client nonce (8) || counter (8) || 8 zero bytes. Answered once per counter,
 * so a captured request reflects at most once, and only while no later datagram of the
 * device has been seen. It moves nothing but the counter. */
static void handle_period_request(rl_core *core, rl_udp_sock *u, const rl_dgram *d, const uint8_t *raw,
                                  size_t raw_len, rl_dev *dev, const struct sockaddr *from, socklen_t from_len) {
    if (!fresh_and_genuine(core, RL_DK_PERIOD, rl_get64(d->body + 8), raw, raw_len, dev)) {
        reject_period_request(core, u, d, from, from_len);
        return;
    }
    /* Whether its agent takes CONNECT_REQUEST_TO (a wake from another node): the tag covers it. */
    uint8_t f = rl_dev_flags(dev);
    rl_dev_set_flags(dev, (d->body[16] & RL_PERIOD_CAN_REDIRECT) ? (uint8_t)(f | RL_DEV_REDIRECTS)
                                                                 : (uint8_t)(f & ~RL_DEV_REDIRECTS));
    uint8_t body[RL_BODY_PERIOD_INFO] = {0}, out[RL_DGRAM_MAX];
    memcpy(body, d->body, 8); /* echo the client nonce */
    rl_put32(body + 8, core->epoch);
    rl_put32(body + 12, core->cfg.period_s);
    rl_put32(body + 16, core->cfg.keepalive_s);
    /* The lead's port, whichever loop answers: one port to open in a firewall for a relay of
     * one loop, the first of a range for several (each CONNECT_REQUEST names its own). */
    rl_put16(body + 20, callback_port(core->node->loops[0], u->family));
    rl_put16(body + 22, core->node->cluster ? RL_INFO_CLUSTERED : 0);
    size_t n = rl_dgram_build(&core->mac, out, sizeof out, RL_T_PERIOD_INFO, d->id, d->id_len, body, sizeof body, dev->key);
    CTR_INC(core->ctr.period_requests);
    reply(u, out, n, from, from_len);
}

/* Answers a datagram of the device with `type` (NOTIFY_ACK, RESYNC): echoed counter || epoch,
 * exactly as long as the notify or LEAVE it answers, so it never amplifies. */
static void answer_counter(rl_core *core, rl_udp_sock *u, int type, const rl_dgram *d, uint64_t counter, rl_dev *dev,
                           const struct sockaddr *from, socklen_t from_len) {
    uint8_t body[RL_BODY_NOTIFY_ACK], out[RL_DGRAM_MAX];
    rl_put64(body, counter);
    rl_put32(body + 8, core->epoch);
    reply(u, out, rl_dgram_build(&core->mac, out, sizeof out, type, d->id, d->id_len, body, sizeof body, dev->key), from,
          from_len);
}

static uint32_t anchor_hash(const uint8_t addr[16], uint16_t port, uint8_t sock) {
    uint32_t h = 2166136261u ^ ((uint32_t)port << 8 | sock); /* FNV-1a: only compared, never keyed */
    for (int i = 0; i < 16; i++) h = (h ^ addr[i]) * 16777619u;
    return h;
}

static void format_anchor(const rl_core *core, const uint8_t addr[16], uint16_t port, char *out, size_t n) {
    struct sockaddr_storage ss;
    socklen_t len;
    char host[64] = "?";
    rl_v6_to_sockaddr(addr, port, memcmp(addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 ? AF_INET : AF_INET6, &ss, &len);
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
    else inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
    snprintf(out, n, ss.ss_family == AF_INET ? "%s:%u" : "[%s]:%u", host, port);
}

/* The anchor moves back to where it was just before, within a few keepalives: two agents with
 * one ID (or a NAT that alternates mappings). Counted, and logged at most once a minute per
 * device. Then the move is remembered in the device's mark. */
static void anchor_moved(rl_core *core, const rl_dgram *d, rl_dev *dev, const uint8_t addr[16], uint16_t port,
                         uint8_t sock) {
    uint32_t now_ds = rl_core_now_ds(core), was = anchor_hash(dev->addr, dev->port, dev->sock);
    rl_mark *m = rl_marks_find(&core->marks, dev->id_hash);
    if (m && m->prev_anchor == anchor_hash(addr, port, sock) && now_ds - m->moved_ds <= 40 * core->cfg.keepalive_s) {
        CTR_INC(core->ctr.anchor_flaps);
        uint32_t now_s = rl_core_now_s(core);
        if (!m->flap_logged_s || now_s - m->flap_logged_s >= 60) {
            m->flap_logged_s = now_s;
            char a[80], b[80];
            format_anchor(core, dev->addr, dev->port, a, sizeof a);
            format_anchor(core, addr, port, b, sizeof b);
            rl_core_push_event(core, RL_EVENT_ANCHOR_FLAP, d->id, d->id_len,
                               "anchor alternates between %s and %s: two agents with this device ID?", a, b);
        }
    }
    m = rl_marks_take(&core->marks, dev->id_hash);
    m->prev_anchor = was;
    m->moved_ds = now_ds;
}

/* NOTIFY_A, NOTIFY_B and LEAVE: epoch (4) || counter (8). */
static void handle_notify(rl_core *core, rl_udp_sock *u, const rl_dgram *d, const uint8_t *raw, size_t raw_len,
                          rl_dev *dev, const struct sockaddr *from, socklen_t from_len) {
    int kind = d->type == RL_T_NOTIFY_A ? RL_DK_NOTIFY_A : d->type == RL_T_NOTIFY_B ? RL_DK_NOTIFY_B : RL_DK_LEAVE;
    uint32_t epoch = rl_get32(d->body);
    uint64_t counter = rl_get64(d->body + 4);
    /* Every notify, NOTIFY_B from the current anchor too: one accepted unverified would leave
     * its counter unrecorded, and its replay from elsewhere would then move the anchor. */
    if (!fresh_and_genuine(core, kind, counter, raw, raw_len, dev)) return;
    if (epoch != core->epoch) {
        /* From before a relay restart: tell the device the new epoch (a leaving one needs
         * nothing). The counter is recorded, so each captured datagram gets one RESYNC. */
        DROP(core, kind, RL_DR_STALE_EPOCH);
        if (kind != RL_DK_LEAVE) answer_counter(core, u, RL_T_RESYNC, d, counter, dev, from, from_len);
        return;
    }
    CTR_INC(core->ctr.notify_acks);
    if (kind == RL_DK_LEAVE) {
        answer_counter(core, u, RL_T_NOTIFY_ACK, d, counter, dev, from, from_len);
        CTR_INC(core->ctr.leaves);
        rl_device_went_offline(core, dev, RL_DEV_LEFT);
        rl_core_push_event(core, RL_EVENT_DEVICE_LEFT, d->id, d->id_len, "its agent said it was stopping");
        return;
    }
    rl_device_heard(core, dev);
    uint8_t addr[16];
    uint16_t port;
    rl_addr_to_v6(from, addr, &port);
    int moved = dev->sock != u->index || dev->port != port || memcmp(dev->addr, addr, 16) != 0;
    /* A new anchor is usually a new NAT mapping: the device then confirms it a few seconds
     * later, so that a NAT which promotes answered mappings only after they lived 2 s
     * (Linux conntrack) keeps this one for its long timeout. */
    answer_counter(core, u, moved ? RL_T_NOTIFY_ACK_MOVED : RL_T_NOTIFY_ACK, d, counter, dev, from, from_len);
    if (moved) {
        if (dev->sock != RL_NO_SOCK) {
            CTR_INC(core->ctr.address_changes);
            anchor_moved(core, d, dev, addr, port, u->index);
            rl_track_moved(core, dev, addr, port);
        }
        rl_registry_set_anchor(&core->reg, dev, addr, port, u->index);
        /* NAT rebinding during a wake: its CONNECT_REQUEST went to the old mapping. */
        if (dev->flags & RL_DEV_WAKING) core->anchor_moved(core, dev, d->id, d->id_len);
    }
    if (d->type == RL_T_NOTIFY_A) {
        rl_dev_set_last_access(dev, rl_core_now_ds(core) + 1);
        CTR_INC(core->ctr.notify_a_ok);
    } else {
        CTR_INC(core->ctr.notify_b_ok);
    }
}

/* A datagram of protocol version 1 (before counters in period requests, answers and
 * LEAVE): dropped. When it is genuine, the operator is told which device needs a new agent
 * (at most once a second across the relay: the check costs an HMAC). */
static void handle_old_version(rl_core *core, const uint8_t *buf, size_t len, int kind) {
    DROP(core, kind, RL_DR_OLD_VERSION);
    uint32_t now = rl_core_now_s(core);
    if (core->old_version_logged_s == now || len > RL_DGRAM_MAX) return;
    uint8_t v2[RL_DGRAM_MAX];
    memcpy(v2, buf, len);
    v2[1] = RL_VERSION; /* the frame is the same: parse it as today's to find the device */
    rl_dgram d;
    if (rl_dgram_parse(v2, len, &d) != 0) return;
    rl_dev *dev = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, d.id, d.id_len));
    if (!dev || !rl_dgram_verify(&core->mac, dev->key, buf, len)) return;
    core->old_version_logged_s = now;
    rl_core_push_event(core, RL_EVENT_OLD_VERSION, d.id, d.id_len,
                       "its agent speaks protocol version 1; this relay speaks version %d: upgrade the agent", RL_VERSION);
}

static void handle_one(rl_core *core, rl_udp_sock *u, const uint8_t *buf, size_t len, int truncated,
                       const struct sockaddr *from, socklen_t from_len) {
    rl_dgram d;
    int framed = len >= 3 && buf[0] == RL_MAGIC;
    /* The kind is what the type byte claims, when there is one. */
    int claimed = !framed ? RL_DK_OTHER
                  : buf[2] == RL_T_PERIOD_REQUEST ? RL_DK_PERIOD
                  : buf[2] == RL_T_NOTIFY_A       ? RL_DK_NOTIFY_A
                  : buf[2] == RL_T_NOTIFY_B       ? RL_DK_NOTIFY_B
                  : buf[2] == RL_T_LEAVE          ? RL_DK_LEAVE
                                                  : RL_DK_OTHER;
    if (!truncated && framed && buf[1] == RL_VERSION_OLD) {
        handle_old_version(core, buf, len, claimed);
        return;
    }
    if (truncated || rl_dgram_parse(buf, len, &d) != 0) {
        DROP(core, framed && buf[1] == RL_VERSION ? claimed : RL_DK_OTHER, RL_DR_MALFORMED);
        return;
    }
    if (claimed == RL_DK_OTHER) {
        DROP(core, RL_DK_OTHER, RL_DR_MALFORMED); /* relay-to-device types are never accepted */
        return;
    }
    rl_dev *dev = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, d.id, d.id_len));
    if (!dev) {
        DROP(core, claimed, RL_DR_UNKNOWN_DEVICE);
        if (d.type == RL_T_PERIOD_REQUEST) reject_period_request(core, u, &d, from, from_len);
        return;
    }
    if (d.type == RL_T_PERIOD_REQUEST) handle_period_request(core, u, &d, buf, len, dev, from, from_len);
    else handle_notify(core, u, &d, buf, len, dev, from, from_len);
}

void rl_udp_handle(rl_core *core, rl_udp_sock *u, const uint8_t *buf, size_t len, int truncated,
                   const struct sockaddr *from, socklen_t from_len) {
    handle_one(core, u, buf, len, truncated, from, from_len);
    rl_udp_flush(u);
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
            handle_one(core, u, bufs[i], msgs[i].msg_len, trunc, (struct sockaddr *)&addrs[i], msgs[i].msg_hdr.msg_namelen);
        }
        rl_udp_flush(u); /* this batch's ACKs and answers, in one system call */
        if (n < RL_UDP_BATCH) return;
    }
    /* Budget spent with data possibly left: level-triggered, the next poll reports it. */
}

/* From the loop that serves the terminal, whichever loop owns the device: its own socket of
 * the anchor's address (the same address and port: the NAT lets it in) and its own callback
 * port, so that the device calls back to this loop. */
int rl_udp_send_connect(rl_core *core, rl_session *s) {
    rl_dev copy;
    const rl_dev *dev = rl_device_lookup(core, s->device_id, strlen(s->device_id), s->id_hash, &copy);
    if (!dev || dev->sock == RL_NO_SOCK || dev->sock >= core->n_udp) return -1;
    rl_udp_sock *u = &core->udp[dev->sock];
    uint8_t body[RL_BODY_CONNECT] = {0}, out[RL_DGRAM_MAX];
    memcpy(body, s->sid, RL_SESSION_ID_LEN);
    memcpy(body + 16, s->nonce, RL_NONCE_LEN);
    rl_put16(body + 32, callback_port(core, u->family));
    size_t n = rl_dgram_build(&core->mac, out, sizeof out, RL_T_CONNECT, s->device_id, strlen(s->device_id), body,
                              sizeof body, dev->key);
    if (!n) return -1;
    if (rl_udp_send_to_anchor(core, dev, out, n) != 0) return RL_SEND_NOT_HELD;
    CTR_INC(core->ctr.conn_requests_sent); /* lost on the way: the resend follows */
    return 0;
}

int rl_udp_send_to_anchor(rl_core *core, const rl_dev *dev, const uint8_t *buf, size_t n) {
    rl_udp_sock *u = &core->udp[dev->sock];
    struct sockaddr_storage to;
    socklen_t to_len;
    /* Reply through the socket the notify came in on, to the address it came from. */
    rl_v6_to_sockaddr(dev->addr, dev->port, u->family, &to, &to_len);
    if (sendto(u->fd, buf, n, MSG_DONTWAIT, (struct sockaddr *)&to, to_len) < 0 && rl_errno_not_held(errno))
        return RL_SEND_NOT_HELD;
    return 0;
}
