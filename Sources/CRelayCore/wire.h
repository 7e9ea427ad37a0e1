/*
 * wire.h: the datagram and callback codecs of docs/PROTOCOL.md, and the HMAC context
 * they use. Pure functions over byte buffers: no sockets, no allocation.
 */
#ifndef RL_WIRE_H
#define RL_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/sha.h> /* SHA256_CTX */
#include "relay_core.h"

#define RL_MAGIC 0x52
#define RL_VERSION 2       /* 2: counters in PERIOD_REQUEST, NOTIFY_ACK, LEAVE, REJECT */
#define RL_VERSION_OLD 1   /* refused, counted and logged: such an agent needs an upgrade */
#define RL_TAG_LEN 16
#define RL_DGRAM_MAX (4 + RL_ID_MAX + 52 + RL_TAG_LEN) /* the largest valid datagram (CONNECT_REQUEST_TO) */
#define RL_HELLO_MAGIC "RLY1"
#define RL_HELLO_MAX (4 + 1 + RL_ID_MAX + RL_SESSION_ID_LEN + 32)

enum rl_dgram_type {
    RL_T_PERIOD_REQUEST = 1,
    RL_T_PERIOD_INFO = 2,
    RL_T_NOTIFY_A = 3,
    RL_T_NOTIFY_B = 4,
    RL_T_RESYNC = 5,
    RL_T_CONNECT = 6,
    RL_T_NOTIFY_ACK = 7, /* relay -> device: a notify or LEAVE was accepted */
    RL_T_LEAVE = 8,      /* device -> relay: the agent is stopping */
    RL_T_REJECT = 9,     /* relay -> device: a PERIOD_REQUEST for an unknown ID or with a bad tag */
    RL_T_NOTIFY_ACK_MOVED = 10, /* NOTIFY_ACK of a notify that moved the anchor (a new NAT mapping) */
    RL_T_CONNECT_TO = 11,       /* CONNECT_REQUEST naming the callback address: a wake from another node */
};

/* Body sizes by type (the frame adds 4 + id length + tag). */
#define RL_BODY_PERIOD_REQUEST 24
#define RL_BODY_PERIOD_INFO 24
#define RL_BODY_NOTIFY 12
#define RL_BODY_RESYNC 12
#define RL_BODY_CONNECT 36
#define RL_BODY_CONNECT_TO 52 /* as CONNECT, then the callback address (16, v4-mapped for IPv4) */
/* PERIOD_REQUEST's first padding byte, bit 0: the agent takes CONNECT_REQUEST_TO.
 * PERIOD_INFO's flags, bit 0: the relay is a cluster node (it may send one). */
#define RL_PERIOD_CAN_REDIRECT 0x01
#define RL_INFO_CLUSTERED 0x0001
#define RL_BODY_NOTIFY_ACK 12 /* echoed counter (8) || epoch (4) */
#define RL_BODY_LEAVE 12      /* epoch (4) || counter (8), as a notify */
#define RL_BODY_REJECT 24     /* echoed client nonce (8) || 16 zero bytes; the tag is zero */

/* Callback status bytes. */
enum { RL_CB_OK = 0, RL_CB_MALFORMED = 1, RL_CB_UNKNOWN_SESSION = 2, RL_CB_BAD_PROOF = 3, RL_CB_ALREADY_BOUND = 4,
       RL_CB_BAD_CERT = 5, RL_CB_BUSY_SOURCE = 6 };

/* Scratch space for HMAC-SHA256; re-keyed per message. One per thread. */
typedef struct rl_mac { SHA256_CTX sha; } rl_mac;
int rl_mac_init(rl_mac *m);
void rl_mac_free(rl_mac *m);
/* out = HMAC(key, a || b || c)[0..out_len]; any of b, c may be NULL. */
int rl_mac_compute(rl_mac *m, const uint8_t *key, size_t key_len, const void *a, size_t a_len,
                   const void *b, size_t b_len, const void *c, size_t c_len, uint8_t *out, size_t out_len);

/* A datagram's fields, pointing into the buffer it was parsed from. */
typedef struct rl_dgram {
    uint8_t type;
    uint8_t id_len;
    const char *id;
    const uint8_t *body;
    size_t body_len;
    const uint8_t *tag;
} rl_dgram;

/* Total datagram length for `type` and an ID of `id_len`, or 0 for an unknown type. */
size_t rl_dgram_len(int type, size_t id_len);
/* Checks the frame (magic, version, type, ID, exact length). 0 or -1. Does not verify the tag. */
int rl_dgram_parse(const uint8_t *buf, size_t len, rl_dgram *out);
/* 1 when the tag of the `len`-byte datagram verifies under `key` (constant time). */
int rl_dgram_verify(rl_mac *m, const uint8_t key[RL_KEY_LEN], const uint8_t *buf, size_t len);
/* Writes a complete datagram; returns its length, or 0 when it does not fit or is invalid. */
size_t rl_dgram_build(rl_mac *m, uint8_t *buf, size_t cap, int type, const char *id, size_t id_len,
                      const uint8_t *body, size_t body_len, const uint8_t key[RL_KEY_LEN]);

/* Callback proof = HMAC(K, "relay callback v1" || sid || nonce), 32 bytes. */
int rl_callback_proof(rl_mac *m, const uint8_t key[RL_KEY_LEN], const uint8_t sid[RL_SESSION_ID_LEN],
                      const uint8_t nonce[RL_NONCE_LEN], uint8_t proof[32]);

/* Big-endian helpers. */
static inline void rl_put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void rl_put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = (uint8_t)v; }
static inline void rl_put64(uint8_t *p, uint64_t v) { rl_put32(p, (uint32_t)(v >> 32)); rl_put32(p + 4, (uint32_t)v); }
static inline uint16_t rl_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rl_get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline uint64_t rl_get64(const uint8_t *p) { return (uint64_t)rl_get32(p) << 32 | rl_get32(p + 4); }

void rl_hex(const uint8_t *in, size_t len, char *out); /* writes 2*len digits + NUL */
int rl_unhex(const char *in, size_t in_len, uint8_t *out, size_t out_len); /* 0 or -1 */

/* The 8-byte ID of a token rl_token_check accepted: the 16 hex digits before its MAC. */
int rl_token_id(const char *token, size_t token_len, uint8_t tid[8]); /* 0 or -1 */

#endif
