/* bench_internal.h: what the CBench files share; nothing here crosses to Swift. */
#ifndef RB_INTERNAL_H
#define RB_INTERNAL_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <netinet/in.h>
#include "relay_bench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h; glibc headers may lack it */
#endif

/* Wire constants of docs/PROTOCOL.md. */
#define RB_MAGIC 0x52
#define RB_VERSION 2
#define RB_TAG 16
enum { RB_T_PERIOD_REQUEST = 1, RB_T_PERIOD_INFO = 2, RB_T_NOTIFY_A = 3, RB_T_NOTIFY_B = 4, RB_T_RESYNC = 5,
       RB_T_CONNECT = 6, RB_T_NOTIFY_ACK = 7, RB_T_NOTIFY_ACK_MOVED = 10 };
#define RB_ACK (-2) /* rb_parse_verify: a NOTIFY_ACK, counted by its type byte alone (not verified) */
#define RB_LEN_PERIOD (44 + RB_ID_LEN)
#define RB_LEN_NOTIFY (32 + RB_ID_LEN)
#define RB_LEN_CONNECT (56 + RB_ID_LEN)
#define RB_DGRAM_MAX 128
#define RB_BATCH 64

struct rb_sim {
    uint32_t total, live, nsock, per_sock;
    uint8_t *keys;                 /* total * 16 */
    double keygen_s;
    int *fds;                      /* nsock UDP sockets on 127.10.x.y */
    struct sockaddr_in relay;      /* 127.0.0.1:udp */
    uint64_t *last_sid;            /* first 8 bytes of the last session answered, per live device */
    _Atomic uint64_t counter;      /* notify counters: one sequence, so each device's grows */
    uint32_t epoch, period_s, keepalive_s;
    uint16_t cb_port;
    uint8_t token_key[32];
    /* device thread */
    pthread_t dev_thread;
    int dev_running, epfd;
    void *dev_tags;
    _Atomic int dev_stop;
    _Atomic uint64_t st_conn, st_conn_bad, st_conn_dup, st_cb_ok, st_cb_refused, st_resp, st_resync, st_ack;
    _Atomic int web_on;            /* links of web_dev serve keep-alive HTTP (rb_sim_web_start) */
    uint32_t web_dev;
    int web_lfd;                   /* the same server on a plain TCP port, for the baselines */
    void *web_tag;
    /* load thread */
    pthread_t load_thread;
    int load_running;
    _Atomic int load_stop;
    _Atomic uint64_t load_sent;
    double load_rate;
    uint32_t load_b_per_a;
};

static inline uint32_t rb_sock_of(const rb_sim *s, uint32_t dev) { return dev / s->per_sock; }
static inline const uint8_t *rb_key_of(const rb_sim *s, uint32_t dev) { return s->keys + (size_t)dev * 16; }

/* HMAC-SHA256 under a 16-byte key, truncated to `out_len`. */
void rb_hmac16(const uint8_t key[16], const void *a, size_t a_len, const void *b, size_t b_len, const void *c,
               size_t c_len, uint8_t *out, size_t out_len);
/* Builds a datagram of `type` for device `dev` with `body`; returns its length. */
size_t rb_build(const rb_sim *s, uint32_t dev, int type, const uint8_t *body, size_t body_len, uint8_t *buf);
/* A notify (A or B) for `dev` with `counter` under the learned epoch. */
size_t rb_build_notify(const rb_sim *s, uint32_t dev, int type, uint64_t counter, uint8_t *buf);
/* Parses a relay-to-device datagram: returns the device index (live ones only) or -1 when the
 * frame, ID or tag does not check out. */
int64_t rb_parse_verify(const rb_sim *s, const uint8_t *buf, size_t len, int *type);

static inline void rb_put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void rb_put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = (uint8_t)v; }
static inline void rb_put64(uint8_t *p, uint64_t v) { rb_put32(p, (uint32_t)(v >> 32)); rb_put32(p + 4, (uint32_t)v); }
static inline uint16_t rb_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rb_get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline uint64_t rb_get64(const uint8_t *p) { return (uint64_t)rb_get32(p) << 32 | rb_get32(p + 4); }

static inline uint64_t rb_xorshift(uint64_t *st) {
    uint64_t x = *st;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *st = x;
}

void rb_set_err(char *err, size_t len, const char *fmt, ...);

#endif
