/* wire.c: datagram framing and authentication (docs/PROTOCOL.md, "Datagrams"). */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: see rl_mac_compute */
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include "wire.h"

/* Device IDs are DNS labels of [a-z0-9-]: they name hosts under the relay's domain. */
int rl_device_id_valid(const char *id, size_t len) {
    if (len < 1 || len > RL_ID_MAX || id[0] == '-' || id[len - 1] == '-') return 0;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
    }
    return 1;
}

/* HMAC-SHA256 (RFC 2104) straight over OpenSSL's SHA-256 block functions. Every datagram is
 * verified, so this is on the ingest path: EVP_MAC re-keys through the provider layer on each
 * message (fetch, context copies), which cost more than the hashing itself. Here a message
 * costs the four or five SHA-256 compressions HMAC needs and nothing else. The SHA256_*
 * calls are deprecated in OpenSSL 3 but kept, and use the CPU's SHA extensions. */
int rl_mac_init(rl_mac *m) {
    memset(m, 0, sizeof *m);
    return 0;
}

void rl_mac_free(rl_mac *m) {
    OPENSSL_cleanse(m, sizeof *m);
}

int rl_mac_compute(rl_mac *m, const uint8_t *key, size_t key_len, const void *a, size_t a_len,
                   const void *b, size_t b_len, const void *c, size_t c_len, uint8_t *out, size_t out_len) {
    uint8_t pad[64] = {0}, inner[32], full[32];
    if (out_len > sizeof full) return -1;
    if (key_len > sizeof pad) SHA256(key, key_len, pad); /* RFC 2104: long keys are hashed first */
    else memcpy(pad, key, key_len);
    for (size_t i = 0; i < sizeof pad; i++) pad[i] ^= 0x36;
    SHA256_Init(&m->sha);
    SHA256_Update(&m->sha, pad, sizeof pad);
    if (a_len) SHA256_Update(&m->sha, a, a_len);
    if (b && b_len) SHA256_Update(&m->sha, b, b_len);
    if (c && c_len) SHA256_Update(&m->sha, c, c_len);
    SHA256_Final(inner, &m->sha);
    for (size_t i = 0; i < sizeof pad; i++) pad[i] ^= 0x36 ^ 0x5c;
    SHA256_Init(&m->sha);
    SHA256_Update(&m->sha, pad, sizeof pad);
    SHA256_Update(&m->sha, inner, sizeof inner);
    SHA256_Final(full, &m->sha);
    memcpy(out, full, out_len);
    OPENSSL_cleanse(pad, sizeof pad);
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
    case RL_T_CONNECT_TO: return RL_BODY_CONNECT_TO;
    case RL_T_NOTIFY_ACK:
    case RL_T_NOTIFY_ACK_MOVED: return RL_BODY_NOTIFY_ACK;
    case RL_T_LEAVE: return RL_BODY_LEAVE;
    case RL_T_REJECT: return RL_BODY_REJECT;
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
