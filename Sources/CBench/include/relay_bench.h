/*
 * relay_bench.h: the hot loops of relay-bench, the only C header its Swift side sees.
 *
 * A simulator of many devices speaking docs/PROTOCOL.md from a modest number of UDP sockets,
 * each bound to its own 127.10.x.y address (a device's "NAT mapping" is its socket), plus
 * a bare recvmmsg receiver (the baseline for ingest), a terminal load generator for wakes
 * and a tiny HTTP GET for scraping /metrics. Everything talks to 127.0.0.0/8 only, and
 * every loop is bounded in count and time.
 *
 * Conventions: 0 on success, -1 on failure with a message in `err` when one is given.
 * Device `i` is named rb_device_id(i) ("dev-0000042"), its secret is
 * SHA-256("relay-bench secret v1" || be32(i)) and its key K is derived from that secret as
 * the protocol says, so the bench can provision keys and still know every secret.
 */
#ifndef RELAY_BENCH_H
#define RELAY_BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RB_ID_LEN 11       /* "dev-" + 7 digits: device indexes below 10,000,000 */
#define RB_MAX_DEVICES 9999999u

/* Writes the ID of device `index` (RB_ID_LEN chars + NUL) into `out` (16 bytes). */
void rb_device_id(uint32_t index, char out[16]);
/* The deterministic 32-byte secret of device `index`. */
void rb_device_secret(uint32_t index, uint8_t secret[32]);

typedef struct rb_sim rb_sim;

/* Makes the simulator: derives the keys of `total` devices (on `threads` threads), of which
 * the first `live` get sockets and speak the protocol (the rest stay offline), and binds
 * `sockets` UDP sockets on 127.10.x.y:0. Notifies go to 127.0.0.1:`relay_udp_port`. */
rb_sim *rb_sim_new(uint32_t total, uint32_t live, uint32_t sockets, uint16_t relay_udp_port, int threads,
                   char *err, size_t err_len);
void rb_sim_free(rb_sim *sim);
/* The derived keys, 16 bytes per device, `total` devices. */
const uint8_t *rb_sim_keys(const rb_sim *sim);
/* Seconds the key derivation took. */
double rb_sim_keygen_seconds(const rb_sim *sim);
/* Sets where notifies go: 127.0.0.1:`port` (the relay's UDP listener). */
void rb_sim_set_relay_port(rb_sim *sim, uint16_t port);
/* Sets the relay-wide token key terminals' tokens are minted with (32 bytes). */
void rb_sim_set_token_key(rb_sim *sim, const uint8_t key[32]);

typedef struct rb_reg_result {
    double seconds;            /* first period request to last notify A handed to the kernel */
    uint64_t requests_sent;    /* PERIOD_REQUEST, retransmissions included */
    uint64_t retransmits;
    uint64_t infos_ok;         /* PERIOD_INFO verified and matching an outstanding nonce */
    uint64_t infos_bad;        /* bad tag, wrong nonce, duplicates */
    uint64_t notify_a_sent;
    uint32_t registered;       /* devices that completed */
    uint32_t epoch, period_s, keepalive_s, callback_port;
} rb_reg_result;

/* Registers the live devices: each sends PERIOD_REQUEST (at most `window` outstanding,
 * retransmitted after 1 s) and, once its PERIOD_INFO verifies, a first NOTIFY_A.
 * Runs on the calling thread; must be called before rb_sim_start. Bounded by `timeout_s`. */
int rb_sim_register(rb_sim *sim, uint32_t window, double timeout_s, rb_reg_result *out);

/* Starts the device thread: answers CONNECT_REQUEST with a TCP callback (hello + proof),
 * then reads the relayed request and answers a small fixed HTTP response and closes. */
int rb_sim_start(rb_sim *sim, char *err, size_t err_len);
void rb_sim_stop(rb_sim *sim);

typedef struct rb_dev_stats {
    uint64_t connect_requests;   /* verified CONNECT_REQUEST, retransmissions included */
    uint64_t connect_bad;        /* failed verification or unknown device */
    uint64_t connect_dup;        /* retransmissions of an answered session */
    uint64_t callbacks_ok;       /* status 0x00 received */
    uint64_t callbacks_refused;  /* any other status, or closed before it */
    uint64_t responses;          /* HTTP responses written on a link */
    uint64_t resyncs;
    uint64_t acks;               /* NOTIFY_ACKs received (the relay answers every notify) */
} rb_dev_stats;
void rb_sim_dev_stats(const rb_sim *sim, rb_dev_stats *out);

/* A web device for the data path: from now on, device `dev`'s links serve HTTP/1.1
 * keep-alive GETs (a path starting with /bulk gets RB_WEB_BULK bytes, any other
 * RB_WEB_SMALL), and so does a TCP listener on 127.0.0.1 whose port is returned (0 on
 * error): the same server behind the relay and behind every baseline proxy. Needs the
 * device thread (rb_sim_start); stopped with it. */
#define RB_WEB_SMALL 128
#define RB_WEB_BULK (64u << 20)
uint16_t rb_sim_web_start(rb_sim *sim, uint32_t dev, char *err, size_t err_len);

/* ---- notify traffic ---- */

/* A precomputed run of notifies (mix: one NOTIFY_A then `b_per_a` NOTIFY_B), in batches of
 * 64 from one socket each, devices taken round-robin, counters strictly increasing. */
typedef struct rb_pool rb_pool;
rb_pool *rb_pool_build(rb_sim *sim, uint64_t count, uint32_t b_per_a, int threads);
void rb_pool_free(rb_pool *pool);
uint64_t rb_pool_count(const rb_pool *pool);
double rb_pool_build_seconds(const rb_pool *pool);

typedef struct rb_blast_result {
    uint64_t sent;
    uint64_t send_errors;
    double seconds;
} rb_blast_result;
/* Sends the pool as fast as one thread can (sendmmsg, 64 per call) to 127.0.0.1:`port`,
 * from each device's own socket, until the pool ends or `max_seconds` pass. */
int rb_blast(rb_sim *sim, const rb_pool *pool, uint16_t port, double max_seconds, rb_blast_result *out);

/* The same from `senders` threads at once (1..RB_MAX_SENDERS, at most one per socket): thread
 * t sends the batches of the sockets t modulo `senders`, in pool order, so each device's
 * datagrams keep their order. `seconds` is the longest thread's. */
#define RB_MAX_SENDERS 64
int rb_blast_parallel(rb_sim *sim, const rb_pool *pool, uint16_t port, double max_seconds, uint32_t senders,
                      rb_blast_result *out);

/* Background notify load at `rate` datagrams/s (same mix, built live) to the relay. */
int rb_load_start(rb_sim *sim, double rate, uint32_t b_per_a);
/* Stops it; returns the datagrams it sent. */
uint64_t rb_load_stop(rb_sim *sim);

/* ---- the bare receiver: recvmmsg (64 per call) and count, nothing else ---- */
typedef struct rb_bare rb_bare;
rb_bare *rb_bare_start(char *err, size_t err_len);
uint16_t rb_bare_port(const rb_bare *bare);
/* Datagrams received so far and the receiving thread's CPU time. */
void rb_bare_sample(const rb_bare *bare, uint64_t *datagrams, uint64_t *cpu_ns);
void rb_bare_stop(rb_bare *bare);

/* ---- terminals ---- */
enum { RB_TARGET_LIVE = 0, RB_TARGET_OFFLINE = 1, RB_TARGET_UNKNOWN = 2 };

typedef struct rb_wake_result {
    uint64_t requests;        /* completed (a full response or an error) */
    uint64_t status_2xx, status_404, status_503, status_504, status_other, errors;
    double seconds;
    uint64_t latencies;       /* how many entries were written to lat_us */
} rb_wake_result;

/* Terminals: `concurrency` connections at a time, each `GET /d/<id>/` with a valid token,
 * for `seconds` or `max_requests`, through 127.0.0.1:`http_port`. Writes time-to-first-byte
 * (from connect) per request into `lat_us` (capacity `lat_cap`). Runs on the calling thread. */
int rb_wakes_run(rb_sim *sim, uint16_t http_port, int target, uint32_t concurrency, double seconds,
                 uint64_t max_requests, uint32_t *lat_us, uint64_t lat_cap, rb_wake_result *out);

/* GET http://127.0.0.1:`port``path` with `headers` ("Name: value\r\n" lines, or NULL);
 * writes the body (NUL-terminated) into `buf`. Returns the HTTP status, or -1. */
int rb_http_get(uint16_t port, const char *path, const char *headers, char *buf, size_t cap, int timeout_ms);

/* Monotonic seconds. */
double rb_now(void);

#ifdef __cplusplus
}
#endif
#endif
