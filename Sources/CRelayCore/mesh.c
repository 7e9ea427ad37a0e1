/* mesh.c: see mesh.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include "mesh.h"
#include "netaddr.h"
#include "node.h"
#include "liveness.h"
#include "records.h"
#include "session.h"
#include "udp.h"
#include "util.h"

#define MESH_MAGIC 0x4D /* 'M' */
#define MESH_VERSION 1
#define MESH_HEAD 20    /* magic, version, type, sender node, time (8), sequence (8) */
#define MESH_WAKE_FIXED (1 + RL_SESSION_ID_LEN + RL_NONCE_LEN + 16 + 2)  /* + the ID */
#define MESH_ACK_BODY (RL_SESSION_ID_LEN + 1 + 4)
#define MESH_MAX (MESH_HEAD + MESH_WAKE_FIXED + RL_ID_MAX + RL_TAG_LEN)
#define SILENT_LOG_EVERY_S 60

const char *const rl_mesh_status_names[RL_MESH_STATUSES] = {"sent", "unknown", "offline", "legacy"};
const char *const rl_mesh_drop_names[RL_MD_N] = {"malformed", "bad_auth", "stale", "replay", "not_private",
                                                "unknown_peer"};

static uint64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- frames ---- */

static size_t build(rl_core *core, uint8_t *out, int type, const uint8_t *body, size_t body_len) {
    rl_cluster *c = core->node->cluster;
    out[0] = MESH_MAGIC;
    out[1] = MESH_VERSION;
    out[2] = (uint8_t)type;
    out[3] = c->node_id;
    rl_put64(out + 4, wall_us());
    rl_put64(out + 12, atomic_fetch_add_explicit(&c->seq, 1, memory_order_relaxed));
    memcpy(out + MESH_HEAD, body, body_len);
    size_t n = MESH_HEAD + body_len;
    if (rl_mac_compute(&core->mac, c->key, RL_MESH_KEY_LEN, out, n, NULL, 0, NULL, 0, out + n, RL_TAG_LEN) != 0)
        return 0;
    return n + RL_TAG_LEN;
}

/* The replay window of one sender: above the highest sequence seen, or within the 64 below
 * it and not seen yet. Updated only for datagrams whose tag verified. */
static int window_take(rl_mesh_window *w, uint64_t seq) {
    if (seq > w->top) {
        uint64_t shift = seq - w->top;
        w->bits = shift >= 64 ? 1 : (w->bits << shift) | 1;
        w->top = seq;
        return 1;
    }
    uint64_t back = w->top - seq;
    if (back >= 64 || (w->bits & (1ull << back))) return 0;
    w->bits |= 1ull << back;
    return 1;
}

/* Checks a received datagram in the order that costs an outsider the least: shape, source,
 * tag, then freshness and replay. Returns its type, or -1 (counted). */
static int verify(rl_core *core, const uint8_t *buf, size_t n, const struct sockaddr *from) {
    rl_mesh *m = core->mesh;
    rl_cluster *c = core->node->cluster;
    CTR_INC(m->received);
    if (n < MESH_HEAD + RL_TAG_LEN || buf[0] != MESH_MAGIC || buf[1] != MESH_VERSION) {
        CTR_INC(m->dropped[RL_MD_MALFORMED]);
        return -1;
    }
    uint8_t a[16];
    uint16_t port;
    rl_addr_to_v6(from, a, &port);
    if (!rl_addr_is_private(a)) {
        CTR_INC(m->dropped[RL_MD_NOT_PRIVATE]);
        return -1;
    }
    uint8_t want[RL_TAG_LEN];
    if (rl_mac_compute(&core->mac, c->key, RL_MESH_KEY_LEN, buf, n - RL_TAG_LEN, NULL, 0, NULL, 0, want,
                       RL_TAG_LEN) != 0 ||
        CRYPTO_memcmp(want, buf + n - RL_TAG_LEN, RL_TAG_LEN) != 0) {
        CTR_INC(m->dropped[RL_MD_BAD_AUTH]);
        return -1;
    }
    uint64_t sent = rl_get64(buf + 4), now = wall_us();
    if (sent > now + RL_MESH_FRESH_US || now > sent + RL_MESH_FRESH_US) {
        CTR_INC(m->dropped[RL_MD_STALE]);
        return -1;
    }
    if (!window_take(&m->window[buf[3]], rl_get64(buf + 12))) {
        CTR_INC(m->dropped[RL_MD_REPLAY]);
        return -1;
    }
    return buf[2];
}

static void send_to(int fd, const uint8_t *buf, size_t n, const uint8_t addr[16], uint16_t port, int family) {
    struct sockaddr_storage to;
    socklen_t to_len;
    rl_v6_to_sockaddr(addr, port, family, &to, &to_len);
    (void)sendto(fd, buf, n, MSG_DONTWAIT, (struct sockaddr *)&to, to_len); /* lost: the next attempt follows */
}

/* ---- the terminal's node ---- */

void rl_mesh_send_wake(rl_core *core, rl_session *s) {
    rl_cluster *c = core->node->cluster;
    rl_mesh *m = core->mesh;
    size_t id_len = strlen(s->device_id);
    uint8_t body[MESH_WAKE_FIXED + RL_ID_MAX], out[MESH_MAX];
    body[0] = (uint8_t)id_len;
    memcpy(body + 1, s->device_id, id_len);
    uint8_t *p = body + 1 + id_len;
    memcpy(p, s->sid, RL_SESSION_ID_LEN);
    memcpy(p + 16, s->nonce, RL_NONCE_LEN);
    memcpy(p + 32, c->callback_addr, 16);
    const rl_listener *l = rl_listen_for_family(core, RL_LISTEN_TCP, c->callback_family); /* this loop's port */
    rl_put16(p + 48, (uint16_t)(l ? l->port : 0));
    size_t n = build(core, out, RL_MESH_T_WAKE, body, MESH_WAKE_FIXED + id_len);
    if (!n) return;
    for (uint32_t i = 0; i < c->n_peers; i++) {
        if (s->mesh_refused & (1u << i)) continue; /* it said no: asking again changes nothing */
        int fam = rl_v6_family(c->peer_addr[i]);
        int fd = m->out_fd[fam == AF_INET6];
        if (fd < 0) continue;
        send_to(fd, out, n, c->peer_addr[i], c->peer_port[i], fam);
        CTR_INC(m->wakes_sent[i]);
    }
}

static int peer_index(const rl_cluster *c, const uint8_t a[16], uint16_t port) {
    for (uint32_t i = 0; i < c->n_peers; i++)
        if (c->peer_port[i] == port && memcmp(c->peer_addr[i], a, 16) == 0) return (int)i;
    return -1;
}

/* Every peer refused: the device notifies none of them, or is offline at the one it does. */
static void all_refused(rl_core *core, rl_session *s) {
    char body[400] = "";
    rl_dev copy;
    const rl_dev *dev = rl_device_lookup(core, s->device_id, strlen(s->device_id), s->id_hash, &copy);
    if (dev && rl_device_alive(core, dev, rl_core_now_ds(core))) {
        /* It registered here while the others were asked (this node took its address over):
         * the wake goes on from here, on the same schedule. */
        s->remote = 0;
        s->mesh_refused = 0;
        rl_udp_send_connect(core, s);
        return;
    }
    /* This node's own word is the most specific when it was the device's last holder (its agent
     * said it was stopping, or it missed a wake), or when no other node has any. */
    int here = dev && dev->sock != RL_NO_SOCK && dev->last_access;
    int said = here && (rl_dev_flags(dev) & (RL_DEV_LEFT | RL_DEV_UNANSWERED));
    if (dev && !s->mesh_legacy && (said || (here && !s->mesh_offline_ds)) &&
        rl_liveness_verdict(core, dev, s->device_id, body, sizeof body) != 0) {
        /* this node's own verdict, in body */
    } else if (s->mesh_legacy)
        snprintf(body, sizeof body, "device %s notifies another node of the cluster, and its agent cannot call back to "
                 "this one (it predates CONNECT_REQUEST_TO): upgrade the agent\n", s->device_id);
    else if (s->mesh_offline_ds)
        snprintf(body, sizeof body, "device %s is offline: last notify %u.%u s ago (at another node), max access "
                 "period %u s\n", s->device_id, (s->mesh_offline_ds - 1) / 10, (s->mesh_offline_ds - 1) % 10,
                 core->cfg.period_s);
    else
        snprintf(body, sizeof body, "device %s is offline: no node of the cluster has heard from it within its access "
                 "period (%u mesh peers asked)\n", s->device_id, core->node->cluster->n_peers);
    rl_node_track_wake(core, s->device_id, s->id_hash, RL_WAKE_TIMEOUT, rl_mono_us() - s->wake_started_us);
    CTR_INC(core->ctr.wakes_refused_by_cluster);
    rl_session_fail(s, 503, body);
}

static void on_answer(rl_core *core, const uint8_t *buf, size_t n, const struct sockaddr *from) {
    rl_cluster *c = core->node->cluster;
    rl_mesh *m = core->mesh;
    if (n != MESH_HEAD + MESH_ACK_BODY + RL_TAG_LEN) {
        CTR_INC(m->dropped[RL_MD_MALFORMED]);
        return;
    }
    const uint8_t *b = buf + MESH_HEAD;
    uint8_t status = b[16];
    uint8_t a[16];
    uint16_t port;
    rl_addr_to_v6(from, a, &port);
    int p = peer_index(c, a, port);
    if (p < 0 || status >= RL_MESH_STATUSES) {
        CTR_INC(m->dropped[p < 0 ? RL_MD_UNKNOWN_PEER : RL_MD_MALFORMED]);
        return;
    }
    CTR_INC(m->answers[p][status]);
    m->peer_silent_logged_s[p] = 0;
    rl_session *s = rl_session_find(core, b);
    if (!s || !s->remote || s->state != SESS_WAKING || s->dying) return; /* late: the wake is over */
    s->mesh_answered |= 1u << p;
    if (status == RL_MESH_SENT) {
        s->mesh_refused &= ~(1u << p);
        return;
    }
    s->mesh_refused |= 1u << p;
    if (status == RL_MESH_LEGACY) s->mesh_legacy = 1;
    uint32_t age = rl_get32(b + 17);
    if (status == RL_MESH_OFFLINE && age && (!s->mesh_offline_ds || age + 1 < s->mesh_offline_ds))
        s->mesh_offline_ds = age + 1;
    uint32_t all = c->n_peers >= 32 ? ~0u : (1u << c->n_peers) - 1;
    if ((s->mesh_refused & all) == all) all_refused(core, s);
}

void rl_mesh_wake_timed_out(rl_core *core, rl_session *s) {
    rl_cluster *c = core->node->cluster;
    uint32_t now = rl_core_now_ds(core) / 10;
    for (uint32_t i = 0; i < c->n_peers; i++) {
        if (s->mesh_answered & (1u << i)) continue;
        rl_mesh *m = core->mesh;
        if (m->peer_silent_logged_s[i] && now - m->peer_silent_logged_s[i] < SILENT_LOG_EVERY_S) continue;
        m->peer_silent_logged_s[i] = now ? now : 1;
        rl_core_push_event(core, RL_EVENT_PEER_SILENT, s->device_id, strlen(s->device_id),
                           "mesh peer %s did not answer a wake of %s", c->peer_name[i], s->device_id);
    }
}

/* ---- the holder ---- */

/* What the holder does with a WAKE: the connection request goes only to the anchor this node
 * recorded from the device's own verified notify, never to an address the message names. */
static uint8_t serve_wake(rl_core *core, const uint8_t *b, size_t len, uint32_t *age_ds) {
    size_t id_len = b[0];
    const char *id = (const char *)b + 1;
    const uint8_t *p = b + 1 + id_len;
    uint64_t h = rl_registry_hash(&core->reg, id, id_len);
    rl_dev copy;
    const rl_dev *dev = rl_device_lookup(core, id, id_len, h, &copy);
    if (!dev || dev->sock == RL_NO_SOCK || dev->sock >= core->n_udp || dev->last_access == 0) return RL_MESH_UNKNOWN;
    uint32_t now = rl_core_now_ds(core);
    if (!rl_device_alive(core, dev, now)) {
        *age_ds = now - (dev->last_access - 1);
        return RL_MESH_OFFLINE;
    }
    if (!(rl_dev_flags(dev) & RL_DEV_REDIRECTS)) return RL_MESH_LEGACY;
    uint8_t body[RL_BODY_CONNECT_TO] = {0}, out[RL_DGRAM_MAX];
    memcpy(body, p, RL_SESSION_ID_LEN + RL_NONCE_LEN);    /* session ID, nonce */
    memcpy(body + 32, p + 48, 2);                          /* callback port */
    memcpy(body + 36, p + 32, 16);                         /* callback address */
    size_t n = rl_dgram_build(&core->mac, out, sizeof out, RL_T_CONNECT_TO, id, id_len, body, sizeof body, dev->key);
    if (!n) return RL_MESH_UNKNOWN;
    /* The anchor is on an address another node holds now (a planned move, or this node came
     * back after a failover): the new holder answers for the device once it notifies there. */
    if (rl_udp_send_to_anchor(core, dev, out, n) != 0) return RL_MESH_UNKNOWN;
    CTR_INC(core->mesh->connect_to_sent);
    return RL_MESH_SENT;
}

static void on_wake(rl_core *core, int fd, const uint8_t *buf, size_t n, const struct sockaddr *from,
                    socklen_t from_len) {
    rl_mesh *m = core->mesh;
    const uint8_t *b = buf + MESH_HEAD;
    size_t body_len = n - MESH_HEAD - RL_TAG_LEN;
    if (body_len < MESH_WAKE_FIXED + 1 || b[0] == 0 || b[0] > RL_ID_MAX || body_len != MESH_WAKE_FIXED + b[0] ||
        !rl_device_id_valid((const char *)b + 1, b[0])) {
        CTR_INC(m->dropped[RL_MD_MALFORMED]);
        return;
    }
    uint32_t age = 0;
    uint8_t status = serve_wake(core, b, body_len, &age);
    CTR_INC(m->handled[status]);
    uint8_t ack[MESH_ACK_BODY], out[MESH_MAX];
    memcpy(ack, b + 1 + b[0], RL_SESSION_ID_LEN);
    ack[16] = status;
    rl_put32(ack + 17, age);
    size_t len = build(core, out, RL_MESH_T_WAKE_ACK, ack, sizeof ack);
    if (len) (void)sendto(fd, out, len, MSG_DONTWAIT, from, from_len);
}

/* ---- sockets ---- */

static void on_readable(evutil_socket_t fd, short what, void *arg) {
    rl_core *core = arg;
    uint8_t buf[MESH_MAX + 1];
    int inbound = 0; /* a --mesh address (WAKEs in), else this loop's own socket (answers in) */
    for (int k = 0; k < core->mesh->n_in; k++) inbound |= core->mesh->in_fd[k] == fd;
    for (int i = 0; i < 64; i++) { /* bounded: other events get their turn */
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
        if (n < 0) return;
        if ((size_t)n > MESH_MAX) {
            CTR_INC(core->mesh->dropped[RL_MD_MALFORMED]);
            continue;
        }
        int type = verify(core, buf, (size_t)n, (struct sockaddr *)&from);
        if (type == RL_MESH_T_WAKE && inbound) on_wake(core, fd, buf, (size_t)n, (struct sockaddr *)&from, from_len);
        else if (type == RL_MESH_T_WAKE_ACK && !inbound) on_answer(core, buf, (size_t)n, (struct sockaddr *)&from);
        else if (type >= 0) CTR_INC(core->mesh->dropped[RL_MD_MALFORMED]);
    }
}

static rl_mesh *mesh_of(rl_core *loop, char *err, size_t err_len) {
    if (loop->mesh) return loop->mesh;
    rl_mesh *m = calloc(1, sizeof *m);
    if (!m) {
        rl_set_err(err, err_len, "out of memory");
        return NULL;
    }
    m->out_fd[0] = m->out_fd[1] = -1;
    loop->mesh = m;
    return m;
}

/* A non-blocking UDP socket `loop` reads: bound to `ss` (a --mesh address, `opts` may say
 * FREEBIND) or, with ss NULL, unbound in `family` (this loop's WAKEs out, answers in). */
static int open_watched(rl_core *loop, int family, const struct sockaddr_storage *ss, socklen_t len, unsigned opts,
                        const char *what, struct event **ev, char *err, size_t err_len) {
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rl_set_err(err, err_len, "socket for mesh %s: %s", what, strerror(errno));
        return -1;
    }
    int one = 1;
    if (ss && family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (ss) rl_sock_set_opts(fd, (int)(opts & RL_LISTEN_FREEBIND));
    if (ss && bind(fd, (const struct sockaddr *)ss, len) != 0) {
        rl_set_err(err, err_len, "cannot bind mesh UDP %s: %s", what, strerror(errno));
        close(fd);
        return -1;
    }
    *ev = event_new(loop->base, fd, EV_READ | EV_PERSIST, on_readable, loop);
    if (!*ev || event_add(*ev, NULL) != 0) {
        if (*ev) event_free(*ev);
        *ev = NULL;
        close(fd);
        rl_set_err(err, err_len, "cannot watch mesh UDP %s", what);
        return -1;
    }
    return fd;
}

/* A mesh address: numeric or not, it must be a specific private one with a port. */
static int parse_mesh_addr(const char *addr, const char *what, struct sockaddr_storage *ss, socklen_t *len,
                           uint8_t a[16], uint16_t *port, char *err, size_t err_len) {
    if (rl_parse_addr(addr, ss, len, err, err_len) != 0) return -1;
    rl_addr_to_v6((struct sockaddr *)ss, a, port);
    if (!rl_addr_is_private(a) || *port == 0) {
        rl_set_err(err, err_len, "%s %s is not a specific private address with a port (10/8, 172.16/12, "
                   "192.168/16, 100.64/10, 127/8, fc00::/7, ::1): the mesh belongs on the nodes' private network",
                   what, addr);
        return -1;
    }
    return 0;
}

int rl_core_cluster(rl_core *core, unsigned node_id, const uint8_t key[RL_MESH_KEY_LEN], const char *callback_host,
                    char *err, size_t err_len) {
    rl_node *node = core->node;
    if (core->started || node->cluster) {
        rl_set_err(err, err_len, "the cluster is set once, before start");
        return -1;
    }
    if (node_id < 1 || node_id > 255) {
        rl_set_err(err, err_len, "node number %u is not 1..255", node_id);
        return -1;
    }
    rl_cluster *c = calloc(1, sizeof *c);
    if (!c) {
        rl_set_err(err, err_len, "out of memory");
        return -1;
    }
    /* Numeric only: a name would make every CONNECT_REQUEST_TO depend on a lookup at start. */
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (callback_host && inet_pton(AF_INET, callback_host, &s4->sin_addr) == 1) ss.ss_family = AF_INET;
    else if (callback_host && inet_pton(AF_INET6, callback_host, &s6->sin6_addr) == 1) ss.ss_family = AF_INET6;
    else {
        free(c);
        rl_set_err(err, err_len, "callback host '%s' is not a numeric IPv4 or IPv6 address", callback_host ? callback_host : "");
        return -1;
    }
    uint16_t no_port;
    rl_addr_to_v6((struct sockaddr *)&ss, c->callback_addr, &no_port);
    c->callback_family = ss.ss_family;
    c->node_id = (uint8_t)node_id;
    memcpy(c->key, key, RL_MESH_KEY_LEN);
    atomic_store(&c->seq, wall_us());
    node->cluster = c;
    EACH_LOOP(core, loop) {
        if (!mesh_of(loop, err, err_len)) return -1;
    }
    return 0;
}

int rl_core_mesh_listen(rl_core *core, const char *addr, unsigned opts, char *err, size_t err_len) {
    rl_core *lead = core->node->loops[0];
    rl_mesh *m = lead->mesh;
    if (!m || lead->started) {
        rl_set_err(err, err_len, "mesh addresses need the cluster set (rl_core_cluster), before start");
        return -1;
    }
    if (m->n_in == RL_MESH_MAX_LISTEN) {
        rl_set_err(err, err_len, "at most %d mesh addresses", RL_MESH_MAX_LISTEN);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    uint8_t a[16];
    uint16_t port;
    if (parse_mesh_addr(addr, "mesh address", &ss, &len, a, &port, err, err_len) != 0) return -1;
    struct event *ev;
    int fd = open_watched(lead, ss.ss_family, &ss, len, opts, addr, &ev, err, err_len);
    if (fd < 0) return -1;
    m->in_fd[m->n_in] = fd;
    m->in_ev[m->n_in] = ev;
    m->n_in++;
    return 0;
}

int rl_core_mesh_peer(rl_core *core, const char *addr, char *err, size_t err_len) {
    rl_cluster *c = core->node->cluster;
    if (!c || core->started) {
        rl_set_err(err, err_len, "mesh peers need the cluster set (rl_core_cluster), before start");
        return -1;
    }
    if (c->n_peers == RL_MESH_MAX_PEERS) {
        rl_set_err(err, err_len, "at most %d mesh peers", RL_MESH_MAX_PEERS);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    uint32_t i = c->n_peers;
    if (parse_mesh_addr(addr, "mesh peer", &ss, &len, c->peer_addr[i], &c->peer_port[i], err, err_len) != 0)
        return -1;
    snprintf(c->peer_name[i], sizeof c->peer_name[i], "%s", addr);
    int v6 = ss.ss_family == AF_INET6;
    EACH_LOOP(core, loop) {
        rl_mesh *m = loop->mesh;
        if (m->out_fd[v6] < 0 &&
            (m->out_fd[v6] = open_watched(loop, ss.ss_family, NULL, 0, 0, v6 ? "IPv6" : "IPv4", &m->out_ev[v6], err,
                                          err_len)) < 0)
            return -1;
    }
    c->n_peers++;
    return 0;
}

void rl_mesh_free(rl_core *core) {
    rl_mesh *m = core->mesh;
    if (!m) return;
    for (int v6 = 0; v6 < 2; v6++) {
        if (m->out_ev[v6]) event_free(m->out_ev[v6]);
        if (m->out_fd[v6] >= 0) close(m->out_fd[v6]);
    }
    for (int k = 0; k < m->n_in; k++) {
        event_free(m->in_ev[k]);
        close(m->in_fd[k]);
    }
    free(m);
    core->mesh = NULL;
}
