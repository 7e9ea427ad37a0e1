/*
 * core_types.h: the types the core's roles share (haproxy's "-t.h" split: types here,
 * each module's functions in its own header). Nothing here is visible to Swift.
 *
 * Threading: everything below is owned by the loop thread of its rl_core, except the
 * fields marked "any thread" (atomics, or guarded by the named mutex).
 */
#ifndef RL_CORE_TYPES_H
#define RL_CORE_TYPES_H

#include <sys/types.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include <event2/event.h>
#include <event2/buffer.h>

#include "relay_core.h"
#include "registry.h"
#include "stream.h"
#include "wire.h"
#include "tally.h"
#include "tls.h"
#include "revoked.h"
#include "marks.h"
#include "counters.h"
#include "flow.h"
#include "listen.h"
#include "clock.h"
#include "reap.h"
#include "counter.h"
#include "shard.h"

#define RL_RECORD_RING 4096
#define RL_EVENT_RING 256
#define RL_MAX_PIPELINE 32 /* requests awaiting a response on one link */

/* Dropped datagrams are counted by the kind they claimed to be and why they were dropped. */
enum { RL_DK_PERIOD, RL_DK_NOTIFY_A, RL_DK_NOTIFY_B, RL_DK_LEAVE, RL_DK_OTHER, RL_DK_N };
enum { RL_DR_MALFORMED, RL_DR_UNKNOWN_DEVICE, RL_DR_BAD_AUTH, RL_DR_REPLAY, RL_DR_STALE_EPOCH, RL_DR_OLD_VERSION,
       RL_DR_N };
#define DROP(core, kind, reason) CTR_INC((core)->ctr.dgram_drop[kind][reason])

/* Wake-to-callback latency histogram: upper bounds in microseconds, then one overflow bucket. */
#define RL_WAKE_BUCKETS 13
extern const uint32_t rl_wake_bucket_us[RL_WAKE_BUCKETS];

/* The relay's own answers to terminals, by status (rl_answer_codes), and the device's
 * responses by class (1xx..5xx, anything else in slot 0). */
#define RL_ANSWER_CODES 13
extern const uint16_t rl_answer_codes[RL_ANSWER_CODES];

/* The counters behind /metrics: one field per COUNTER row of counters.h, then the few that
 * metrics.c renders by hand (arrays, and the device count kept for rl_core_stats). */
#define RL_COUNTER_FIELD(field, type, name, labels, help) rl_counter field;
#define RL_NO_FIELD(render)
struct rl_counters {
    RL_METRICS(RL_COUNTER_FIELD, RL_NO_FIELD)
    rl_counter dgram_drop[RL_DK_N][RL_DR_N];
    rl_counter devices;       /* reg.count as of the last device change, for rl_core_stats on
                               * other threads (reg.count itself is the loop thread's) */
    rl_counter wake_bucket[RL_WAKE_BUCKETS + 1];  /* not cumulative; summed at scrape */
    rl_counter wake_us_sum;
    rl_counter answers[RL_ANSWER_CODES + 1];      /* last slot: any other status */
    rl_counter device_responses[6];               /* by status / 100; 0: out of range */
};
/* Counters declared above by hand; metrics.c asserts the struct holds nothing else. */
#define RL_COUNTERS_BY_HAND \
    (RL_DK_N * RL_DR_N + 1 + (RL_WAKE_BUCKETS + 1) + 1 + (RL_ANSWER_CODES + 1) + 6)

#define RL_UDP_BATCH 64
typedef struct rl_udp_sock {
    int fd;
    int family;
    struct event *ev;
    rl_core *core;
    uint8_t index;
    uint32_t rcvbuf; /* receive buffer the kernel granted (what SO_RCVBUF reads back, halved) */
    /* Replies to one received batch (ACKs, PERIOD_INFO, RESYNC, REJECT), sent together with
     * one sendmmsg: an ACK per notify costs a fraction of a system call. */
    uint32_t n_out;
    uint8_t out_len[RL_UDP_BATCH];
    uint8_t out[RL_UDP_BATCH][4 + RL_ID_MAX + 36 + 16];
    struct sockaddr_storage out_to[RL_UDP_BATCH];
    socklen_t out_to_len[RL_UDP_BATCH];
} rl_udp_sock;

/* What one thread asks a loop to do: a device change or a token revocation from the control
 * layer, or what one loop tells another about a device (node.h). */
enum rl_cmd_kind {
    RL_CMD_PUT, RL_CMD_REMOVE, RL_CMD_REVOKE,
    RL_CMD_END_DEVICE,   /* every loop: end the sessions of a removed or re-keyed device */
    RL_CMD_WAKING,       /* to the owner: a wake of this device is in flight (RL_DEV_WAKING) */
    RL_CMD_UNANSWERED,   /* to the owner: its wake got no callback within `arg` ms */
    RL_CMD_ANCHOR_MOVED, /* every loop: re-send the connection requests of its wakes now */
    RL_CMD_TRACK_WAKE,   /* to the owner: a wake's outcome `arg`, latency `arg64` us, for the admin API */
};
typedef struct rl_cmd {
    enum rl_cmd_kind kind;
    char id[RL_ID_MAX + 1];   /* every kind but REVOKE */
    uint8_t key[RL_KEY_LEN];  /* PUT */
    uint8_t tid[8];           /* REVOKE: the token's ID ... */
    uint64_t expires;         /* ... and its expiry, Unix seconds */
    uint64_t id_hash;         /* the loop-to-loop kinds */
    uint32_t arg;
    uint64_t arg64;
} rl_cmd;

/* The loops of one relay. loops[0], the lead, is the handle the control layer holds; the
 * public functions fan out from it (core.c). */
typedef struct rl_cluster rl_cluster;
typedef struct rl_mesh rl_mesh;

typedef struct rl_node {
    rl_cluster *cluster;         /* NULL: a node of its own (mesh.h) */
    uint32_t n;
    rl_core *loops[RL_MAX_THREADS];
    uint32_t shard_seed;         /* shard.h: which loop owns a device */
    _Atomic uint32_t devices;    /* entries in all shards: --capacity bounds the sum */
    pthread_mutex_t devices_mu;  /* the per-device tally (the lead's `devices`), shared by every loop */
} rl_node;

typedef struct rl_session rl_session;
typedef struct rl_splice rl_splice;
typedef struct rl_term rl_term;

typedef struct rl_pipeline {
    uint8_t is_head[RL_MAX_PIPELINE];
    uint32_t first, count;
} rl_pipeline;

/* What the layers below the front (session, exchange) tell a terminal. front.c fills it in,
 * so that no file below the front calls up into it. */
typedef struct rl_term_ops {
    void (*bound)(rl_term *t);                              /* its session has a link */
    void (*fail)(rl_term *t, int status, const char *body); /* its session ended without an answer */
    void (*close)(rl_term *t, int outcome);
    void (*linger)(rl_term *t);       /* its last response is out: close once it is written */
    void (*next_head)(rl_term *t);    /* it has no session now: read the next head as a first one */
    void (*head_started)(rl_term *t); /* a head began arriving: its header timeout runs */
} rl_term_ops;

struct rl_core {
    rl_node *node;
    uint32_t index;        /* this loop's place in node->loops, its shard number */
    rl_core_config cfg;
    char domain[256];
    size_t domain_len;
    struct event_base *base;
    pthread_t thread;
    int started, stopped, joined;
    _Atomic int ready;     /* set by the control layer once listeners and store are up */
    _Atomic int store_ok;  /* cleared while the device store cannot be read (/readyz) */
    _Atomic int store_up;  /* the last store read succeeded (relay_store_up), any store */
    _Atomic int draining;  /* SIGTERM: no new terminals; links close at message boundaries */
    uint32_t epoch;
    struct timespec t0; /* monotonic start; registry times are seconds since then */

    rl_registry reg;

    rl_udp_sock udp[RL_MAX_LISTENERS];
    int n_udp;
    rl_listener listeners[RL_LISTEN_KINDS][RL_MAX_LISTENERS]; /* by RL_LISTEN_* (listen.c) */
    int n_listen[RL_LISTEN_KINDS];
    rl_tls *tls;         /* NULL: plain TCP on both legs */
    rl_tls *pending_tls; /* a reload's certificates, swapped in by on_cmd (cmd_mu) */

    /* sessions, hashed by session ID */
    rl_session **sess_buckets;
    uint32_t sess_mask;
    uint32_t n_sessions;
    rl_term *terms; /* every live terminal connection, for shutdown */
    uint32_t n_scrapes; /* open /metrics connections (metrics.c bounds them) */
    struct rl_scrape *scrapes; /* ... and the list of them, for shutdown */

    /* device changes from other threads (guarded by cmd_mu) */
    pthread_mutex_t cmd_mu;
    rl_cmd *cmds;
    size_t n_cmds, cap_cmds;
    struct event *cmd_ev;
    struct event *stop_ev;
    struct event *drain_ev;
    struct event *sweep_ev;  /* once a second: forget tallies of keys gone quiet */
    struct event *resume_ev; /* re-enables the listeners paused for lack of descriptors */
    struct event *reap_ev;   /* frees what ended during a callback, after it (reap.h) */
    /* A notify moved the anchor of a device being woken (udp.c tells session.c, which sits
     * above it, through this: rl_session_anchor_moved). */
    void (*anchor_moved)(rl_core *core, rl_dev *dev, const char *id, size_t id_len);
    rl_reap *reap;
    int accept_paused;       /* accept ran out of descriptors: every listener waits for resume_ev */
    int fd_ceiling;          /* accepted descriptors from here up are refused: a reserve below
                              * RLIMIT_NOFILE stays for the runtime, the store and TLS reloads */
    rl_tally sources;        /* terminal addresses: open connections, new ones per second */
    rl_tally devices;        /* device ID hashes: open sessions, wakes per minute (the lead's
                              * serves every loop, under node->devices_mu) */
    _Atomic uint32_t sources_tracked, callbacks_tracked; /* the tallies' sizes, for /metrics */
    rl_tally callback_sources; /* device callback addresses: hellos not verified yet */
    rl_revoked revoked;      /* revoked token IDs until their expiry (rl_core_token_revoke) */
    struct rl_track_table *track; /* per-device extras for the admin API (inspect.c), or NULL */
    uint64_t inspect_n, inspect_us_total, inspect_us_max; /* device page requests: time on the loop */
    _Atomic uint64_t admin_unauthorized; /* any thread: admin API requests refused for their key */
    /* timer settings from rl_core_reconfigure, applied on the loop thread (cmd_mu) */
    rl_core_config pending_cfg;
    int has_pending_cfg;

    /* finished-session records for the control layer (guarded by rec_mu) */
    pthread_mutex_t rec_mu;
    rl_session_record *recs;
    size_t rec_head, rec_count;
    rl_core_event *events;   /* operator events for the log (also rec_mu) */
    size_t ev_head, ev_count;
    rl_marks marks;          /* offline times and previous anchors (marks.h) */
    uint32_t reject_s, rejects_in_s; /* REJECT budget: per second, for the whole relay */
    uint32_t old_version_logged_s;   /* an old agent is logged at most once a second */

    struct rl_counters ctr;
    rl_mac mac; /* loop thread's HMAC context */
    rl_mesh *mesh; /* this loop's part of the cluster channel, or NULL (mesh.h) */
};

enum rl_session_state { SESS_WAKING, SESS_BOUND, SESS_IDLE };

struct rl_session {
    rl_reap reap;            /* first: the reap queue's node (reap.h) */
    int dying;               /* ended: unlinked, silent, freed after the current callback */
    rl_session *next_in_bucket;
    rl_core *core;
    uint8_t sid[RL_SESSION_ID_LEN];
    uint8_t nonce[RL_NONCE_LEN];
    char sid_hex[2 * RL_SESSION_ID_LEN + 1];
    char device_id[RL_ID_MAX + 1];
    uint64_t id_hash;
    enum rl_session_state state;
    rl_term *term;           /* attached terminal, or NULL */
    rl_stream *link;         /* device link once bound */
    struct event *timer;     /* retransmit while waking, idle expiry while idle */
    uint32_t retransmits;
    uint64_t wake_started_us;
    /* A wake through the cluster (mesh.h): the holder of the device's address sends the
     * connection request. Peers by bit: those that answered, those whose last answer was no. */
    int remote;
    uint32_t mesh_answered, mesh_refused;
    int mesh_legacy;             /* a holder knows it, but its agent cannot call back here */
    uint32_t mesh_offline_ds;    /* the freshest "offline" a holder gave: its age + 1, or 0 */

    rl_flow resp;            /* device -> terminal framing */
    rl_pipeline pipe;        /* requests forwarded, awaiting their responses (exchange.h) */
    int resp_started;        /* some response bytes reached the current terminal */
    uint32_t last_status;    /* of the device's latest final response, for the session log */
    rl_tally_entry *tally;   /* this device's entry in core->devices (counts it as open) */
    rl_splice *splice;       /* a response body moving in the kernel (splice.h), or NULL */
};

/* The token a connection last proved, so that the next request carrying the same token for
 * the same device and key costs no MAC: only its expiry and revocation are checked again,
 * the two things that can change between requests. */
typedef struct rl_auth_cache {
    uint64_t id_hash;               /* 0: empty */
    uint8_t key[RL_KEY_LEN];        /* the device key it was checked with (a re-key invalidates) */
    uint64_t expires_unix;
    uint8_t tid[8];
    uint8_t len;
    char token[RL_TOKEN_MAX];
} rl_auth_cache;

enum rl_term_state { TERM_HEAD, TERM_WAKING, TERM_BOUND, TERM_CLOSING };

struct rl_term {
    rl_reap reap;            /* first: the reap queue's node (reap.h) */
    int dying;               /* closed: unlinked, silent, freed after the current callback */
    rl_term *prev, *next;
    rl_core *core;
    const rl_term_ops *ops;
    rl_stream *st;
    enum rl_term_state state;
    rl_session *sess;
    struct event *head_timer;
    rl_flow req;             /* terminal -> device framing */
    char peer[64];           /* "addr" for X-Forwarded-For */
    uint64_t started_us;
    uint64_t bytes_to_device, bytes_to_terminal;
    int reused;
    rl_tally_entry *source;  /* this address's entry in core->sources (counts it as open) */
    int tls_seen;            /* TLS: the handshake's outcome was counted */
    uint32_t last_active_s;  /* core seconds of the last byte moved while bound */
    int wants_html;          /* its latest request head accepts text/html: answers as pages */
    uint64_t head_since_us;  /* a head is being read since then (its header timeout), or 0 */
    int upgrade_wait;        /* an Upgrade request was forwarded: no next head until its answer */
    int close_after;         /* CLOSE_*: the connection ends after the responses in flight */
    rl_auth_cache auth;      /* the token this connection proved last (route.c) */
};
enum { CLOSE_TERMINAL_SAID = 1, CLOSE_DEVICE_SAID = 2 };

#endif
