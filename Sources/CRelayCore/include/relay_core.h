/*
 * relay_core.h: the only C header Swift sees.
 *
 * The C core owns every per-packet and per-byte path: UDP notify ingest, the device
 * registry, wakes and their retransmission, the device callback listener, the terminal
 * HTTP front and the splicing between terminal and device links. It runs on one
 * libevent loop thread per rl_core. Swift configures it, feeds it devices, and reads
 * counters and session records; it never sees a packet.
 *
 * Conventions: functions return 0 on success and -1 on failure, with a message written
 * to `err` (always NUL-terminated) when one is given. Only plain C types cross here:
 * libevent, OpenSSL and http-parser stay inside the target.
 */
#ifndef RELAY_CORE_H
#define RELAY_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sizes fixed by the wire protocol (docs/PROTOCOL.md) ---- */
#define RL_ID_MAX 63          /* device ID: 1..63 of [a-z0-9-], DNS label rules */
#define RL_SECRET_LEN 32      /* device secret, shown to users as 64 hex digits */
#define RL_KEY_LEN 16         /* per-device key derived from the secret */
#define RL_TOKEN_KEY_LEN 32   /* relay-wide token signing key */
#define RL_SESSION_ID_LEN 16
#define RL_NONCE_LEN 16
#define RL_TOKEN_MAX 160      /* longest token text, NUL included */
#define RL_UDP_RCVBUF (8 << 20) /* receive buffer each UDP socket asks for: registration bursts */

/* ---- crypto helpers shared by relay, agent, CLI and tests ---- */

/* K = first 16 bytes of HMAC-SHA256(secret, "relay device key v1"). */
int rl_derive_device_key(const uint8_t secret[RL_SECRET_LEN], uint8_t key[RL_KEY_LEN]);

/* Fills `out` with `len` bytes from OpenSSL's CSPRNG. */
int rl_random_bytes(uint8_t *out, size_t len);

/* Writes a terminal access token "<id>.<expiry>.<tid hex>.<mac>" into `out`
 * (RL_TOKEN_MAX bytes). See docs/PROTOCOL.md, "Terminal tokens". */
int rl_token_mint(const uint8_t token_key[RL_TOKEN_KEY_LEN], const char *device_id,
                  const uint8_t device_key[RL_KEY_LEN], uint64_t expires_unix,
                  const uint8_t token_id[8], char *out, size_t out_len);

/* Outcomes of rl_token_check. */
enum {
    RL_TOKEN_OK = 0,
    RL_TOKEN_MALFORMED = 1,
    RL_TOKEN_BAD_MAC = 2,
    RL_TOKEN_EXPIRED = 3,
};
/* Verifies a token's MAC and expiry for `device_id`/`device_key`. The token's own ID
 * field is parsed into `token_device` (RL_ID_MAX+1 bytes) even when the check fails. */
int rl_token_check(const uint8_t token_key[RL_TOKEN_KEY_LEN], const char *token, size_t token_len,
                   const char *device_id, const uint8_t device_key[RL_KEY_LEN], uint64_t now_unix,
                   char token_device[RL_ID_MAX + 1]);

/* Gives freed heap memory back to the system (glibc keeps it otherwise): called after the
 * start-up load, so resident memory reflects the registry rather than the load. */
void rl_release_free_memory(void);

/* 1 when `id` (length `len`) is a valid device ID. */
int rl_device_id_valid(const char *id, size_t len);

/* ---- the relay core ---- */

typedef struct rl_core rl_core;

/* Most loop threads one relay runs (rl_core_config.threads). */
#define RL_MAX_THREADS 64

typedef struct rl_core_config {
    uint32_t period_s;          /* max access period: notify A must come more often */
    uint32_t keepalive_s;       /* notify B interval told to agents */
    uint32_t capacity;          /* registry size in devices, fixed at start */
    uint32_t max_sessions;      /* concurrent sessions (waking, bound or idle) */
    uint32_t wake_timeout_ms;   /* no callback within this: 504 to the terminal */
    uint32_t idle_link_s;       /* an idle device link is kept this long for reuse */
    uint32_t max_header_bytes;  /* largest terminal request head accepted */
    uint32_t header_timeout_ms; /* a terminal must send its request head within this */
    /* Abuse limits; 0 turns one off. A terminal over a per-source limit, or a request over a
     * per-device one, gets 429. */
    uint32_t max_conns_per_source;    /* open terminal connections from one address */
    uint32_t conn_rate_per_source;    /* new terminal connections per second from one address */
    uint32_t max_callbacks_per_source; /* device callbacks from one address whose hello has not
                                        * verified yet (status 0x06 above) */
    uint32_t max_sessions_per_device; /* sessions (waking, bound or idle) of one device */
    uint32_t wakes_per_device_minute; /* wakes of one device per minute */
    uint32_t idle_timeout_s;          /* a bound terminal with no byte either way is closed */
    const char *domain;         /* host routing: <id>.<domain>; NULL or "" to disable */
    uint8_t token_key[RL_TOKEN_KEY_LEN];
    uint32_t threads;           /* loop threads, 1..RL_MAX_THREADS (0: 1); fixed at rl_core_new */
} rl_core_config;

/* Fills `cfg` with the defaults documented in README.md. The relay's own defaults come from
 * Swift (Settings.swift), which starts from these and sets every field: these serve the C
 * tests, the fuzzers and the bench, and a Swift test checks that the two agree. */
void rl_core_config_defaults(rl_core_config *cfg);

rl_core *rl_core_new(const rl_core_config *cfg, char *err, size_t err_len);

/* Listener kinds: terminal HTTP front, device UDP, device TCP callbacks, and the
 * Prometheus text endpoint (GET /metrics, rendered from the counters at scrape time). */
enum { RL_LISTEN_HTTP = 0, RL_LISTEN_UDP = 1, RL_LISTEN_TCP = 2, RL_LISTEN_METRICS = 3, RL_LISTEN_HTTPS = 4 };

/* TLS from `n` certificate chain / private key PEM file pairs (the first is the default for
 * terminals without SNI and the device leg's) and an optional device CA (NULL: devices need
 * no certificate; else each must present one for its ID, issued by that CA). Before start
 * it turns TLS on: HTTPS listeners serve terminals, plain HTTP ones redirect to the first
 * HTTPS one, device callbacks are TLS. After start it replaces the certificates (reload):
 * handshakes from then on use the new ones, live connections keep theirs. */
int rl_core_set_tls(rl_core *core, const char *const *certs, const char *const *keys, size_t n,
                    const char *device_ca, char *err, size_t err_len);

/* Binds "HOST:PORT" or "[V6]:PORT" (port 0 picks one). Call before rl_core_start.
 * Returns the listener's index within its kind, or -1. */
int rl_core_listen(rl_core *core, int kind, const char *addr, char *err, size_t err_len);

/* rl_core_listen with options. RL_LISTEN_FREEBIND: the address is a floating one (VRRP)
 * that this node may not hold yet; the socket is bound with IP_FREEBIND and receives as
 * soon as the address is on an interface here. */
#define RL_LISTEN_FREEBIND 2
int rl_core_listen_opts(rl_core *core, int kind, const char *addr, unsigned opts, char *err, size_t err_len);

/* ---- the cluster (docs/ARCHITECTURE.md, "Cluster"; docs/PROTOCOL.md, "Between nodes") ----
 *
 * All before rl_core_start. rl_core_cluster sets this node's number (1..255), the key every
 * node shares, and the numeric address devices reach this node at: a CONNECT_REQUEST_TO
 * names it with the callback port of the terminal's loop. */
#define RL_MESH_KEY_LEN 32
#define RL_MESH_MAX_PEERS_PUBLIC 16
#define RL_MESH_MAX_LISTEN_PUBLIC 8
int rl_core_cluster(rl_core *core, unsigned node_id, const uint8_t key[RL_MESH_KEY_LEN], const char *callback_host,
                    char *err, size_t err_len);
/* An address this node takes WAKEs on: a specific private one (RL_LISTEN_FREEBIND for a mesh
 * address that floats with a device address). */
int rl_core_mesh_listen(rl_core *core, const char *addr, unsigned opts, char *err, size_t err_len);
/* Where WAKEs go: one mesh address per floating device address, held by whoever holds it. */
int rl_core_mesh_peer(rl_core *core, const char *addr, char *err, size_t err_len);
/* A specific address of a private network, in the 16-byte form (IPv4 as ::ffff:a.b.c.d): 10/8,
 * 172.16/12, 192.168/16, 100.64/10 (shared carrier space), 127/8, fc00::/7, ::1. Not the
 * wildcard, not a public address. The mesh takes only these, and check-config asks the same. */
int rl_addr_is_private(const uint8_t addr[16]);

/* The port a listener is bound to (after port 0 was resolved), or -1. */
int rl_core_bound_port(const rl_core *core, int kind, int index);

/* Adds or replaces a device (fresh key: its liveness and anchor are reset when the key
 * changes). Safe from any thread; takes effect on the loop thread. */
int rl_core_device_put(rl_core *core, const char *id, const uint8_t key[RL_KEY_LEN]);
/* Removes a device: its notifies are then dropped as unknown and its sessions end. */
int rl_core_device_remove(rl_core *core, const char *id);
/* Revokes the token whose ID (the tid field, as bytes) is `tid`: from then on a request
 * carrying it gets 401 "token revoked", on open connections too. Kept until `expires_unix`,
 * the token's own expiry. Safe from any thread; takes effect on the loop thread. */
int rl_core_token_revoke(rl_core *core, const uint8_t tid[8], uint64_t expires_unix);

/* Starts the loop thread. */
int rl_core_start(rl_core *core, char *err, size_t err_len);
/* Marks the relay ready: /healthz and /readyz answer 200 only after this. */
void rl_core_set_ready(rl_core *core, int ready);
/* Whether the device store can be read; /readyz answers 503 while it cannot. */
void rl_core_set_store_ok(rl_core *core, int ok);
/* Whether the last read of the device store succeeded, for relay_store_up; unlike
 * rl_core_set_store_ok it does not touch /readyz (a shared store down is every node's). */
void rl_core_set_store_up(rl_core *core, int up);
/* Graceful stop, first half: stops accepting terminals, closes the ones idle between
 * requests and the idle device links, and closes every other terminal once its response
 * in flight is complete; the terminal listeners close. rl_stats.sessions_active and
 * terminals_open reaching 0 means it is done; rl_core_stop ends whatever is left. */
void rl_core_drain(rl_core *core);
/* Applies the timer settings of `cfg` (period, keepalive, wake timeout, idle link, header
 * size and timeout) and the abuse limits on the loop thread; the rest of `cfg` is fixed at
 * rl_core_new. */
void rl_core_reconfigure(rl_core *core, const rl_core_config *cfg);
/* Stops accepting, ends sessions, joins the loop thread. Idempotent. */
void rl_core_stop(rl_core *core);
void rl_core_free(rl_core *core);

/* What the control layer reads of the core's state, with relaxed loads. The counters are
 * read at GET /metrics (metrics.c, from the table in counters.h), not here. */
typedef struct rl_stats {
    uint64_t devices;         /* provisioned devices in the registry */
    uint64_t capacity;        /* devices the registry can hold */
    uint64_t sessions_active; /* sessions waking, bound or idle */
    uint64_t terminals_open;  /* terminal connections */
    uint64_t udp_rcvbuf;      /* smallest UDP receive buffer granted; the relay asks RL_UDP_RCVBUF,
                               * net.core.rmem_max may cap it */
} rl_stats;
void rl_core_stats(const rl_core *core, rl_stats *out);

/* One record per finished terminal session, for the control layer's log. */
typedef struct rl_session_record {
    char device_id[RL_ID_MAX + 1];
    char session_id[2 * RL_SESSION_ID_LEN + 1];
    uint32_t status;          /* HTTP status the relay answered itself, or 0 when relayed */
    uint32_t outcome;         /* RL_OUTCOME_* */
    uint64_t duration_us;
    uint64_t bytes_to_device, bytes_to_terminal;
    uint32_t reused;          /* served on an idle link, no wake */
} rl_session_record;

enum {
    RL_OUTCOME_RELAYED = 0,     /* bound and carried until a side closed */
    RL_OUTCOME_REFUSED = 1,     /* answered by the relay (401/403/404/503/...) */
    RL_OUTCOME_TIMEOUT = 2,     /* device never called back */
    RL_OUTCOME_DEVICE_LOST = 3, /* device link closed before a response */
    RL_OUTCOME_ABORTED = 4,     /* terminal left or relay stopping */
};

/* Copies up to `max` pending records into `out`; returns how many. Any thread. */
size_t rl_core_drain_records(rl_core *core, rl_session_record *out, size_t max);

/* Operator events the core notices on its own, for the log. */
enum {
    RL_EVENT_OLD_VERSION = 1,     /* a genuine datagram of protocol version 1: upgrade that agent */
    RL_EVENT_ANCHOR_FLAP = 2,     /* the anchor alternates between two sources: two agents, one ID? */
    RL_EVENT_DEVICE_LEFT = 3,     /* the agent said it was stopping */
    RL_EVENT_WAKE_UNANSWERED = 4, /* no callback within the wake timeout: offline until it notifies */
    RL_EVENT_PEER_SILENT = 5,     /* a cluster peer did not answer any attempt of a wake */
};
typedef struct rl_core_event {
    uint32_t kind;
    char device_id[RL_ID_MAX + 1];
    char detail[160];
} rl_core_event;
/* Copies up to `max` pending events into `out`; returns how many. Any thread. */
size_t rl_core_drain_events(rl_core *core, rl_core_event *out, size_t max);

/* ---- inspection, for the admin API (inspect.c) ----
 *
 * Each call queues a request to the loop thread, which copies what was asked into the
 * caller's buffers between two events and signals; the caller waits at most `timeout_ms`.
 * They return -2 when the loop did not answer in time (stopping), -1 on bad input. A page is
 * at most RL_INSPECT_MAX devices: each is one registry lookup, so the loop is never held for
 * a walk of the registry (rl_core_inspect_summary reads every entry, as a /metrics scrape
 * does, in chunks of 65536 entries, one loop callback each). Per-device extras (address
 * changes and history, last wakes) come
 * from a bounded side table (RL_TRACK_MAX devices that moved or were woken most recently,
 * the oldest evicted first); the registry entry itself stays 56 bytes. */
#define RL_INSPECT_MAX 1024
#define RL_TRACK_MAX 4096
#define RL_TRACK_HIST 4
#define RL_ADDR_TEXT 56 /* "[v6]:port" */

enum { RL_WAKE_BOUND = 1, RL_WAKE_TIMEOUT = 2 };

typedef struct rl_device_view {
    char id[RL_ID_MAX + 1];        /* in: the device to look up */
    uint32_t known;                /* out: 1 when it is in the registry */
    uint32_t online;               /* the front's liveness verdict: it would be woken now */
    int64_t last_notify_a_age_s;   /* -1: no notify A since the relay started */
    char address[RL_ADDR_TEXT];    /* anchor "ip:port" as the relay sees it, "" when none */
    uint32_t address_changes;      /* since it entered the side table (0 when not in it) */
    uint32_t sessions;             /* open sessions (waking, bound or idle) */
    uint64_t last_wake_unix;       /* 0: none recorded */
    uint32_t last_wake_outcome;    /* RL_WAKE_* */
    uint32_t last_wake_latency_us; /* wake to callback (bound), or the time waited */
    uint32_t offline_why;          /* RL_OFFLINE_*: why the front would answer 503 now, 0 when online */
} rl_device_view;

/* Why a device is offline, as the front's verdict (liveness.c) says it. */
enum { RL_OFFLINE_NEVER = 1, RL_OFFLINE_STALE = 2, RL_OFFLINE_LEFT = 3, RL_OFFLINE_UNANSWERED = 4 };

typedef struct rl_address_seen {
    uint64_t at_unix;
    char address[RL_ADDR_TEXT];
} rl_address_seen;

typedef struct rl_wake_seen {
    uint64_t at_unix;
    uint32_t outcome, latency_us;
} rl_wake_seen;

typedef struct rl_device_history {
    uint32_t tracked;              /* 1 when the device is in the side table */
    uint32_t address_changes;
    uint32_t n_addresses, n_wakes; /* newest first */
    rl_address_seen addresses[RL_TRACK_HIST];
    rl_wake_seen wakes[RL_TRACK_HIST];
} rl_device_history;

enum { RL_SESSION_WAKING = 0, RL_SESSION_BOUND = 1, RL_SESSION_IDLE = 2 };

typedef struct rl_session_view {
    char session_id[2 * RL_SESSION_ID_LEN + 1];
    char device_id[RL_ID_MAX + 1];
    char terminal[64];             /* terminal address, "" when none is attached */
    uint32_t state;                /* RL_SESSION_* */
    uint64_t age_ms;
    uint64_t bytes_to_device, bytes_to_terminal; /* of the attached terminal */
} rl_session_view;

typedef struct rl_fleet_summary {
    uint64_t devices, online, never_notified, capacity, sessions, tracked;
    uint32_t period_s;
    /* device page requests answered so far, and the time they held the loop thread */
    uint64_t page_requests, page_loop_us_total, page_loop_us_max;
    uint64_t summary_loop_us; /* this summary's own pass over the registry, all chunks */
    uint64_t summary_chunks;  /* loop callbacks it took (65536 entries each) */
} rl_fleet_summary;

/* Fills views[0..n) (n <= RL_INSPECT_MAX; each view's `id` set by the caller). 0 or -1/-2. */
int rl_core_inspect_devices(rl_core *core, rl_device_view *views, size_t n, uint32_t timeout_ms);
/* Address history and last wakes of one device: 0, -1 when it is not in the registry. */
int rl_core_inspect_history(rl_core *core, const char *id, rl_device_history *out, uint32_t timeout_ms);
/* Up to `max` sessions (of `device_id`, or all when NULL); returns how many were copied and
 * sets *total to how many there are. */
int rl_core_inspect_sessions(rl_core *core, const char *device_id, rl_session_view *out, size_t max, size_t *total,
                             uint32_t timeout_ms);
/* Ends the session `session_id` (32 hex digits): its terminal and link are closed. 0, or -1
 * when there is none. */
int rl_core_end_session(rl_core *core, const char *session_id, uint32_t timeout_ms);
int rl_core_inspect_summary(rl_core *core, rl_fleet_summary *out, uint32_t timeout_ms);

/* Admin keys are stored as SHA-256 of their text (they are 32 random bytes: no slow hash
 * needed) and compared in constant time (CRYPTO_memcmp); 1 when equal. */
void rl_admin_key_hash(const char *key, size_t len, uint8_t out[32]);
/* Counts an admin API request refused for a missing or wrong key (relay_admin_unauthorized_total
 * in /metrics); any thread. */
void rl_core_admin_refused(rl_core *core);
int rl_const_time_equal(const uint8_t *a, const uint8_t *b, size_t len);

/* ---- the device agent (transfer module): relay_agent.h, on its own for librelayagent ---- */
#include "relay_agent.h"

#ifdef __cplusplus
}
#endif
#endif
