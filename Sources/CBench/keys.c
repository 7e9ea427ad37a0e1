/* keys.c: device identities, key derivation and the datagram codec (docs/PROTOCOL.md). */
#include "bench_internal.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/sha.h>

void rb_set_err(char *err, size_t len, const char *fmt, ...) {
    if (!err || !len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

double rb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void rb_device_id(uint32_t index, char out[16]) { snprintf(out, 16, "dev-%07u", index % 10000000u); }

void rb_device_secret(uint32_t index, uint8_t secret[32]) {
    static const char label[] = "relay-bench secret v1";
    uint8_t msg[sizeof label - 1 + 4];
    memcpy(msg, label, sizeof label - 1);
    rb_put32(msg + sizeof label - 1, index);
    SHA256(msg, sizeof msg, secret);
}

/* Plain HMAC-SHA256 over the SHA-256 primitives: no EVP fetch or context re-keying per
 * message, which makes building millions of datagrams a matter of seconds. The low-level
 * SHA256_* calls are deprecated in OpenSSL 3 but remain; this is test traffic, not the relay. */
void rb_hmac16(const uint8_t key[16], const void *a, size_t a_len, const void *b, size_t b_len, const void *c,
               size_t c_len, uint8_t *out, size_t out_len) {
    uint8_t pad[64], inner[32], full[32];
    SHA256_CTX ctx;
    memset(pad, 0x36, sizeof pad);
    for (int i = 0; i < 16; i++) pad[i] ^= key[i];
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, pad, 64);
    if (a_len) SHA256_Update(&ctx, a, a_len);
    if (b && b_len) SHA256_Update(&ctx, b, b_len);
    if (c && c_len) SHA256_Update(&ctx, c, c_len);
    SHA256_Final(inner, &ctx);
    memset(pad, 0x5c, sizeof pad);
    for (int i = 0; i < 16; i++) pad[i] ^= key[i];
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, pad, 64);
    SHA256_Update(&ctx, inner, 32);
    SHA256_Final(full, &ctx);
    memcpy(out, full, out_len);
}

size_t rb_build(const rb_sim *s, uint32_t dev, int type, const uint8_t *body, size_t body_len, uint8_t *buf) {
    char id[16];
    rb_device_id(dev, id);
    size_t len = 4 + RB_ID_LEN + body_len + RB_TAG;
    buf[0] = RB_MAGIC;
    buf[1] = RB_VERSION;
    buf[2] = (uint8_t)type;
    buf[3] = RB_ID_LEN;
    memcpy(buf + 4, id, RB_ID_LEN);
    memcpy(buf + 4 + RB_ID_LEN, body, body_len);
    rb_hmac16(rb_key_of(s, dev), buf, len - RB_TAG, NULL, 0, NULL, 0, buf + len - RB_TAG, RB_TAG);
    return len;
}

size_t rb_build_notify(const rb_sim *s, uint32_t dev, int type, uint64_t counter, uint8_t *buf) {
    uint8_t body[12];
    rb_put32(body, s->epoch);
    rb_put64(body + 4, counter);
    return rb_build(s, dev, type, body, sizeof body, buf);
}

int64_t rb_parse_verify(const rb_sim *s, const uint8_t *buf, size_t len, int *type) {
    if (len < 4 + RB_ID_LEN + RB_TAG || buf[0] != RB_MAGIC || buf[1] != RB_VERSION || buf[3] != RB_ID_LEN) return -1;
    size_t want;
    switch (buf[2]) {
    case RB_T_PERIOD_INFO: want = RB_LEN_PERIOD; break;
    case RB_T_RESYNC: want = RB_LEN_NOTIFY; break;
    case RB_T_CONNECT: want = RB_LEN_CONNECT; break;
    case RB_T_NOTIFY_ACK:
    case RB_T_NOTIFY_ACK_MOVED: return len == RB_LEN_NOTIFY ? RB_ACK : -1; /* one per notify: kept cheap */
    default: return -1;
    }
    if (len != want || memcmp(buf + 4, "dev-", 4) != 0) return -1;
    uint32_t idx = 0;
    for (int i = 8; i < 4 + RB_ID_LEN; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -1;
        idx = idx * 10 + (uint32_t)(buf[i] - '0');
    }
    if (idx >= s->live) return -1;
    uint8_t tag[RB_TAG];
    rb_hmac16(rb_key_of(s, idx), buf, len - RB_TAG, NULL, 0, NULL, 0, tag, RB_TAG);
    if (memcmp(tag, buf + len - RB_TAG, RB_TAG) != 0) return -1;
    *type = buf[2];
    return idx;
}
