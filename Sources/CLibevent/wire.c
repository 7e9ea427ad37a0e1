/* wire.c: datagram framing and authentication (docs/PROTOCOL.md, "Datagrams"). */
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include "wire.h"

int rl_mac_init(rl_mac *m) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac) return -1;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (!ctx) return -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_CTX_set_params(ctx, params)) {
        EVP_MAC_CTX_free(ctx);
        return -1;
    }
    m->ctx = ctx;
    return 0;
}

void rl_mac_free(rl_mac *m) {
    if (m->ctx) EVP_MAC_CTX_free((EVP_MAC_CTX *)m->ctx);
    m->ctx = NULL;
}

int rl_mac_compute(rl_mac *m, const uint8_t *key, size_t key_len, const void *a, size_t a_len,
                   const void *b, size_t b_len, const void *c, size_t c_len, uint8_t *out, size_t out_len) {
    EVP_MAC_CTX *ctx = (EVP_MAC_CTX *)m->ctx;
    uint8_t full[32];
    size_t n = 0;
    if (out_len > sizeof full) return -1;
    if (!EVP_MAC_init(ctx, key, key_len, NULL)) return -1;
    if (a_len && !EVP_MAC_update(ctx, a, a_len)) return -1;
    if (b && b_len && !EVP_MAC_update(ctx, b, b_len)) return -1;
    if (c && c_len && !EVP_MAC_update(ctx, c, c_len)) return -1;
    if (!EVP_MAC_final(ctx, full, &n, sizeof full) || n != sizeof full) return -1;
    memcpy(out, full, out_len);
    return 0;
}

static size_t body_len_for(int type) {
    switch (type) {
    case RL_T_PERIOD_REQUEST: return RL_BODY_PERIOD_REQUEST;
    case RL_T_PERIOD_INFO: return RL_BODY_PERIOD_INFO;
    case RL_T_NOTIFY_A:
    case RL_T_NOTIFY_B: return RL_BODY_NOTIFY;
    case RL_T_RESYNC: return RL_BODY_RESYNC;
    case RL_T_CONNECT: return RL_BODY_CONNECT;
    default: return 0;
    }
}

size_t rl_dgram_len(int type, size_t id_len) {
    size_t body = body_len_for(type);
    if (!body || id_len < 1 || id_len > RL_ID_MAX) return 0;
    return 4 + id_len + body + RL_TAG_LEN;
}

int rl_dgram_parse(const uint8_t *buf, size_t len, rl_dgram *out) {
    if (len < 4 + 1 + RL_TAG_LEN || buf[0] != RL_MAGIC || buf[1] != RL_VERSION) return -1;
    size_t id_len = buf[3];
    size_t want = rl_dgram_len(buf[2], id_len);
    if (want == 0 || want != len) return -1;
    if (!rl_device_id_valid((const char *)buf + 4, id_len)) return -1;
    out->type = buf[2];
    out->id_len = (uint8_t)id_len;
    out->id = (const char *)buf + 4;
    out->body = buf + 4 + id_len;
    out->body_len = body_len_for(buf[2]);
    out->tag = buf + len - RL_TAG_LEN;
    return 0;
}

int rl_dgram_verify(rl_mac *m, const uint8_t key[RL_KEY_LEN], const uint8_t *buf, size_t len) {
    uint8_t tag[RL_TAG_LEN];
    if (len < RL_TAG_LEN) return 0;
    if (rl_mac_compute(m, key, RL_KEY_LEN, buf, len - RL_TAG_LEN, NULL, 0, NULL, 0, tag, sizeof tag) != 0) return 0;
    return CRYPTO_memcmp(tag, buf + len - RL_TAG_LEN, RL_TAG_LEN) == 0;
}

size_t rl_dgram_build(rl_mac *m, uint8_t *buf, size_t cap, int type, const char *id, size_t id_len,
                      const uint8_t *body, size_t body_len, const uint8_t key[RL_KEY_LEN]) {
    size_t len = rl_dgram_len(type, id_len);
    if (len == 0 || len > cap || body_len != body_len_for(type)) return 0;
    buf[0] = RL_MAGIC;
    buf[1] = RL_VERSION;
    buf[2] = (uint8_t)type;
    buf[3] = (uint8_t)id_len;
    memcpy(buf + 4, id, id_len);
    memcpy(buf + 4 + id_len, body, body_len);
    if (rl_mac_compute(m, key, RL_KEY_LEN, buf, len - RL_TAG_LEN, NULL, 0, NULL, 0, buf + len - RL_TAG_LEN, RL_TAG_LEN) != 0)
        return 0;
    return len;
}

int rl_callback_proof(rl_mac *m, const uint8_t key[RL_KEY_LEN], const uint8_t sid[RL_SESSION_ID_LEN],
                      const uint8_t nonce[RL_NONCE_LEN], uint8_t proof[32]) {
    static const char label[] = "relay callback v1";
    return rl_mac_compute(m, key, RL_KEY_LEN, label, sizeof label - 1, sid, RL_SESSION_ID_LEN, nonce,
                          RL_NONCE_LEN, proof, 32);
}

void rl_hex(const uint8_t *in, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int rl_unhex(const char *in, size_t in_len, uint8_t *out, size_t out_len) {
    if (in_len != 2 * out_len) return -1;
    for (size_t i = 0; i < out_len; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
