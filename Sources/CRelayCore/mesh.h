/*
 * mesh.h: the channel between the nodes of a cluster (docs/PROTOCOL.md, "Between nodes").
 *
 * Only the node holding the floating address a device notifies can wake it: its NAT lets a
 * CONNECT_REQUEST in from that address and port alone. A terminal's node whose registry has
 * no live anchor for the device sends a WAKE to every peer (a mesh address that floats with
 * each device address, so "send to peer k" reaches whoever holds address k now); the holder
 * sends CONNECT_REQUEST_TO naming the terminal's node, and the device calls back there. No
 * byte of a session passes the holder, and the holder keeps no state per wake: the
 * terminal's node drives the retries on the wake's own schedule.
 *
 * Every datagram is authenticated with the cluster key (HMAC-SHA256), fresh within 2 s of the
 * receiver's clock, and inside a 64-wide replay window per sender node.
 */
#ifndef RL_MESH_H
#define RL_MESH_H

#include "core_types.h"

#define RL_MESH_MAX_PEERS RL_MESH_MAX_PEERS_PUBLIC
#define RL_MESH_MAX_LISTEN RL_MESH_MAX_LISTEN_PUBLIC
#define RL_MESH_FRESH_US 2000000

enum { RL_MESH_T_WAKE = 1, RL_MESH_T_WAKE_ACK = 2 };
/* A holder's answer to a WAKE. */
enum { RL_MESH_SENT = 0, RL_MESH_UNKNOWN = 1, RL_MESH_OFFLINE = 2, RL_MESH_LEGACY = 3, RL_MESH_STATUSES = 4 };
/* Why a mesh datagram was dropped. */
enum { RL_MD_MALFORMED, RL_MD_BAD_AUTH, RL_MD_STALE, RL_MD_REPLAY, RL_MD_NOT_PRIVATE, RL_MD_UNKNOWN_PEER, RL_MD_N };

/* The cluster's settings, fixed before start and read by every loop. */
typedef struct rl_cluster {
    uint8_t node_id;
    uint8_t key[RL_MESH_KEY_LEN];
    uint8_t callback_addr[16]; /* this node's address in CONNECT_REQUEST_TO (v4-mapped for IPv4) */
    int callback_family;
    uint32_t n_peers;
    uint8_t peer_addr[RL_MESH_MAX_PEERS][16];
    uint16_t peer_port[RL_MESH_MAX_PEERS];
    char peer_name[RL_MESH_MAX_PEERS][64];
    _Atomic uint64_t seq; /* every loop's datagrams draw from it; starts at the wall clock in us */
} rl_cluster;

/* Whether this node wakes through other nodes (it has mesh peers). */
static inline int rl_clustered(const rl_core *core) {
    return core->node->cluster && core->node->cluster->n_peers;
}

typedef struct rl_mesh_window { uint64_t top, bits; } rl_mesh_window;

/* One loop's part. */
struct rl_mesh {
    int out_fd[2];                 /* IPv4, IPv6: WAKEs out, their answers in */
    struct event *out_ev[2];
    int in_fd[RL_MESH_MAX_LISTEN]; /* the lead only: WAKEs from other nodes */
    struct event *in_ev[RL_MESH_MAX_LISTEN];
    int n_in;
    rl_mesh_window window[256];    /* by sender node */
    uint32_t peer_silent_logged_s[RL_MESH_MAX_PEERS];
    rl_counter wakes_sent[RL_MESH_MAX_PEERS];
    rl_counter answers[RL_MESH_MAX_PEERS][RL_MESH_STATUSES];
    rl_counter handled[RL_MESH_STATUSES];
    rl_counter connect_to_sent;
    rl_counter dropped[RL_MD_N];
    rl_counter received;
};


/* Sends the session's WAKE to every peer that has not answered it with a refusal. */
void rl_mesh_send_wake(rl_core *core, rl_session *s);
/* The session's wake ended without a callback: peers that never answered are logged. */
void rl_mesh_wake_timed_out(rl_core *core, rl_session *s);
void rl_mesh_free(rl_core *core);
/* The statuses' metric labels. */
extern const char *const rl_mesh_status_names[RL_MESH_STATUSES];
extern const char *const rl_mesh_drop_names[RL_MD_N];

#endif
