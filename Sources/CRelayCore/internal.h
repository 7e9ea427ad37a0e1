/*
 * internal.h: types shared by the C core's files. Nothing here is visible to Swift.
 *
 * Threading: everything below is owned by the loop thread of its rl_core (or rl_agent),
 * except the fields marked "any thread" (atomics, or guarded by the named mutex).
 */
#ifndef RL_INTERNAL_H
#define RL_INTERNAL_H

#include <sys/types.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include <http_parser.h>

#include "relay_core.h"
#include "registry.h"
#include "stream.h"
#include "wire.h"
#include "tally.h"
#include "tls.h"
#include "revoked.h"
#include "marks.h"
#include "counters.h"

#define RL_MAX_LISTENERS 8
#define RL_RECORD_RING 4096
#define RL_EVENT_RING 256
#define RL_MAX_PIPELINE 32 /* requests awaiting a response on one link */

/* Single-writer counters: the loop thread adds, scrapers read. A relaxed load plus a
 * relaxed store is a plain add on x86, with no locked instruction on the hot path. */
typedef _Atomic uint64_t rl_counter;
#define CTR_ADD(c, n) atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + (n), memory_order_relaxed)
#define CTR_INC(c) CTR_ADD(c, 1)
#define CTR_DEC(c) CTR_ADD(c, (uint64_t)-1)
#define CTR_GET(c) atomic_load_explicit(&(c), memory_order_relaxed)

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

typedef struct rl_listener {
    struct evconnlistener *lev;
    int port;
    int family;
} rl_listener;

/* A device change or a token revocation queued by another thread. */
enum rl_cmd_kind { RL_CMD_PUT, RL_CMD_REMOVE, RL_CMD_REVOKE };
typedef struct rl_cmd {
    enum rl_cmd_kind kind;
    char id[RL_ID_MAX + 1];   /* PUT, REMOVE */
    uint8_t key[RL_KEY_LEN];  /* PUT */
    uint8_t tid[8];           /* REVOKE: the token's ID ... */
    uint64_t expires;         /* ... and its expiry, Unix seconds */
} rl_cmd;

typedef struct rl_session rl_session;
typedef struct rl_splice rl_splice;
typedef struct rl_term rl_term;

struct rl_core {
    rl_core_config cfg;
    char domain[256];
    size_t domain_len;
    struct event_base *base;
    pthread_t thread;
    int started, stopped;
    _Atomic int ready;     /* set by the control layer once listeners and store are up */
    _Atomic int store_ok;  /* cleared while the device store cannot be read (/readyz) */
    _Atomic int draining;  /* SIGTERM: no new terminals; links close at message boundaries */
    uint32_t epoch;
    struct timespec t0; /* monotonic start; registry times are seconds since then */

    rl_registry reg;

    rl_udp_sock udp[RL_MAX_LISTENERS];
    int n_udp;
    rl_listener http[RL_MAX_LISTENERS], tcp[RL_MAX_LISTENERS], metrics[RL_MAX_LISTENERS], https[RL_MAX_LISTENERS];
    int n_http, n_tcp, n_metrics, n_https;
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
    int accept_paused;       /* accept ran out of descriptors: every listener waits for resume_ev */
    int fd_ceiling;          /* accepted descriptors from here up are refused: a reserve below
                              * RLIMIT_NOFILE stays for the runtime, the store and TLS reloads */
    rl_tally sources;        /* terminal addresses: open connections, new ones per second */
    rl_tally devices;        /* device ID hashes: open sessions, wakes per minute */
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
};

/* ---- time ---- */
uint32_t rl_core_now_s(const rl_core *core);      /* monotonic seconds since start */
uint32_t rl_core_now_ds(const rl_core *core);     /* monotonic tenths of a second since start */
uint64_t rl_mono_us(void);

/* ---- core.c ---- */
void rl_init_threads(void); /* once per process, before any event_base */
void rl_core_push_record(rl_core *core, const rl_session_record *rec);
/* Queues an operator event (RL_EVENT_*) for the control layer's log; dropped and counted
 * when the log is behind. Callers rate-limit what an outsider can trigger. */
void rl_core_push_event(rl_core *core, uint32_t kind, const char *device_id, size_t id_len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- udp.c ---- */
int rl_udp_open(rl_core *core, const char *addr, char *err, size_t err_len);
/* The smallest receive buffer the kernel granted among the UDP sockets (0 with none). */
uint32_t rl_udp_rcvbuf(const rl_core *core);
void rl_udp_close_all(rl_core *core);
/* Sends the replies queued on `u` (one sendmmsg). */
void rl_udp_flush(rl_udp_sock *u);
/* Sends CONNECT_REQUEST for `s` to its device's current anchor. 0, or -1 when the
 * device has no anchor (never notified) or was removed. */
int rl_udp_send_connect(rl_core *core, rl_session *s);
/* Handles one received datagram of `len` bytes from `from` on socket `u` (loop thread).
 * Counts exactly one outcome counter; answers only datagrams that verify. Not static so
 * that the fuzz target Tests/fuzz/fuzz_dgram.c can drive it without a socket read. */
void rl_udp_handle(rl_core *core, rl_udp_sock *u, const uint8_t *buf, size_t len, int truncated,
                   const struct sockaddr *from, socklen_t from_len);

/* ---- liveness.c ---- */
/* 1 when `dev` counts as alive at `now_ds`: a NOTIFY_A within the max access period, an
 * anchor, and neither a LEAVE nor an unanswered wake since. */
int rl_device_alive(const rl_core *core, const rl_dev *dev, uint32_t now_ds);
/* 0 when alive; else 503 with the reason (and how long ago) in `msg`. */
int rl_liveness_verdict(rl_core *core, const rl_dev *dev, const char *id, char *msg, size_t n);
/* The device left (RL_DEV_LEFT) or did not answer a wake (RL_DEV_UNANSWERED): offline until
 * it notifies again, with the time kept in its mark. */
void rl_device_went_offline(rl_core *core, rl_dev *dev, uint8_t why);
/* A verified notify: whatever took it offline is over. */
void rl_device_heard(rl_core *core, rl_dev *dev);

/* ---- session.c ---- */
enum rl_session_state { SESS_WAKING, SESS_BOUND, SESS_IDLE };

/* Which direction's HTTP framing is being tracked. */
typedef struct rl_flow {
    http_parser parser;
    int raw;          /* opaque byte stream from here on (Upgrade, close-delimited) */
    int in_body;      /* head seen; counting body bytes of the current message */
    int done;         /* set by on_message_complete */
    int skip_body;    /* response to a HEAD request */
    int chunk_check;  /* a chunked request body: its framing is checked byte by byte (flow.c) */
    int chunk_state;  /* where in the chunk grammar the next byte is */
    uint64_t chunk_left;  /* data bytes left in the current chunk (its size while reading it) */
    int chunk_digits; /* hex digits of the current chunk size so far */
} rl_flow;

struct rl_session {
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

    rl_flow resp;            /* device -> terminal framing */
    uint8_t pending_head[RL_MAX_PIPELINE]; /* 1 = that request was HEAD */
    uint32_t pend_first, pend_count;
    int resp_started;        /* some response bytes reached the current terminal */
    uint32_t last_status;    /* of the device's latest final response, for the session log */
    rl_tally_entry *tally;   /* this device's entry in core->devices (counts it as open) */
    rl_splice *splice;       /* a response body moving in the kernel (splice.c), or NULL */
};

/* CONNECT_REQUEST resends: after 100 ms, doubling, at most a second apart. */
#define RL_RESEND_FIRST_MS 100u
#define RL_RESEND_MAX_MS 1000u
rl_session *rl_session_wake(rl_core *core, rl_term *term, const char *device_id, uint64_t id_hash);
/* A notify moved `dev`'s anchor: its wakes in flight re-send CONNECT_REQUEST there at once. */
void rl_session_anchor_moved(rl_core *core, rl_dev *dev);
rl_session *rl_session_find(rl_core *core, const uint8_t sid[RL_SESSION_ID_LEN]);
/* Binds a verified device callback to a waking session. */
void rl_session_bind(rl_session *s, rl_stream *link);
/* Attaches a terminal to an idle session (reuse: no wake). */
void rl_session_attach(rl_session *s, rl_term *term);
/* The terminal leaves: the link goes idle when it is at a message boundary, else closes. */
void rl_session_detach(rl_session *s);
void rl_session_free(rl_session *s);
void rl_session_end_device(rl_core *core, uint64_t id_hash);
void rl_session_free_all(rl_core *core);
/* Draining: frees sessions that wait idle for reuse. */
void rl_session_free_idle(rl_core *core);
/* Moves response bytes device -> terminal (called when either side can make progress). */
void rl_session_pump_response(rl_session *s);
/* The link failed or closed: the terminal hears what it can, the session ends (frees s). */
void rl_session_device_gone(rl_session *s, const char *why);

/* ---- splice.c ---- */
#define RL_SPLICE_MIN (256 * 1024) /* body bytes left for a splice to be worth its pipe */
/* The current response body can move link -> terminal with splice(2) (see splice.c). */
int rl_splice_wanted(const rl_session *s);
/* Starts it: 0, or -1 (no pipe) and the ordinary path carries the body. */
int rl_splice_begin(rl_session *s);
void rl_splice_free(rl_splice *p);
int rl_session_at_boundary(const rl_session *s);

/* ---- front.c (terminal side) ---- */
enum rl_term_state { TERM_HEAD, TERM_WAKING, TERM_BOUND, TERM_CLOSING };

struct rl_term {
    rl_term *prev, *next;
    rl_core *core;
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
};
enum { CLOSE_TERMINAL_SAID = 1, CLOSE_DEVICE_SAID = 2 };

void rl_front_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
void rl_front_accept_tls(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
/* The session of `t` ended without a response: answer `status` (0: just close). */
void rl_term_fail(rl_term *t, int status, const char *body);
/* Bytes can move terminal -> device again. */
/* Returns -1 when `t` was closed (freed) meanwhile. */
int rl_term_pump_request(rl_term *t);
/* Called by the session when it is bound to `t` (wake done or reuse). */
void rl_term_bound(rl_term *t);
/* The session ended at a message boundary: the next request on `t` starts anew. */
void rl_term_rewake(rl_term *t);
void rl_term_close(rl_term *t, int outcome);
void rl_term_close_all(rl_core *core);
/* Draining: closes terminals that wait for a next request with nothing received. */
void rl_term_close_idle(rl_core *core);
/* Draining: the response is complete; close `t` once it is written, freeing its link. */
void rl_term_finish(rl_term *t);
/* The device's response head `h` (a struct rl_head) to the oldest request in flight: a 101
 * to an Upgrade request makes the terminal's side opaque; a closing response closes `t` after it. */
struct rl_head;
void rl_term_response_head(rl_term *t, const struct rl_head *h);

/* ---- callback.c (device TCP callbacks) ---- */
void rl_callback_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);

/* ---- inspect.c (the admin API's reads; the side table of per-device extras) ---- */
/* The side table: extras of at most RL_TRACK_MAX devices, FIFO eviction (inspect.c). */
#define RL_TRACK_SLOTS (2 * RL_TRACK_MAX) /* power of two: index at most half full */

typedef struct rl_track {
    uint64_t id_hash; /* 0: free */
    uint32_t address_changes;
    uint8_t n_addr, addr_next, n_wake, wake_next;
    struct {
        uint64_t at_unix;
        uint8_t addr[16];
        uint16_t port;
    } addrs[RL_TRACK_HIST];
    struct {
        uint64_t at_unix;
        uint32_t latency_us;
        uint32_t outcome;
    } wakes[RL_TRACK_HIST];
} rl_track;

struct rl_track_table {
    rl_track entries[RL_TRACK_MAX];
    uint16_t slots[RL_TRACK_SLOTS]; /* entry index + 1, 0 = empty */
    uint32_t next;                  /* next entry to hand out (FIFO eviction) */
    uint32_t count;
};

/* A notify moved `dev`'s anchor to addr/port (not its first anchor). */
void rl_inspect_moved(rl_core *core, const rl_dev *dev, const uint8_t addr[16], uint16_t port);
/* A wake ended: RL_WAKE_BOUND after `latency_us`, or RL_WAKE_TIMEOUT. */
void rl_inspect_wake(rl_core *core, uint64_t id_hash, uint32_t outcome, uint64_t latency_us);
/* The device was removed or re-keyed: its extras go. */
void rl_inspect_forget(rl_core *core, uint64_t id_hash);
void rl_inspect_free(rl_core *core);

/* ---- metrics.c ---- */
void rl_metrics_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg);
/* Stopping: closes every open scrape connection. */
void rl_metrics_close_all(rl_core *core);
void rl_metrics_render(rl_core *core, struct evbuffer *b); /* the scrape's body; loop thread */

/* ---- netaddr.c ---- */
/* accept() failed: out of descriptors pauses the listener (instead of a busy loop on a
 * backlog it cannot take) until resume_ev; other errors are left to the next attempt. */
void rl_listener_error(struct evconnlistener *lev, void *arg);
/* An accepted descriptor in the reserve (numbered at or above fd_ceiling: at least that many
 * are open) is closed and the listeners pause as on EMFILE. 1 when `fd` was refused. */
int rl_core_fd_refused(rl_core *core, int fd);

/* ---- netaddr.c ---- */
/* Parses "HOST:PORT", "[V6]:PORT" or "*:PORT" (numeric hosts and names). */
int rl_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t err_len);
int rl_listen_tcp(rl_core *core, rl_listener *l, const char *addr, evconnlistener_cb cb, char *err, size_t err_len);
void rl_addr_to_v6(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port);
void rl_v6_to_sockaddr(const uint8_t addr[16], uint16_t port, int family, struct sockaddr_storage *ss, socklen_t *len);
void rl_set_err(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- http.c (helpers shared by front and session) ---- */
void rl_http_respond(struct evbuffer *out, int status, const char *extra_headers, const char *body);
/* ---- pages.c ---- */
struct rl_head;
/* 1 when the request accepts text/html (a browser). */
int rl_wants_html(const struct rl_head *h);
/* The same answer as a small page saying what happened and what to do. */
void rl_http_respond_page(struct evbuffer *out, int status, const char *extra_headers, const char *text);
const char *rl_http_reason(int status);

#endif
