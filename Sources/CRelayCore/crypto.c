/* crypto.c: key derivation, randomness, device IDs and terminal tokens (docs/PROTOCOL.md). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include "wire.h"

int rl_random_bytes(uint8_t *out, size_t len) {
    return RAND_bytes(out, (int)len) == 1 ? 0 : -1;
}

int rl_derive_device_key(const uint8_t secret[RL_SECRET_LEN], uint8_t key[RL_KEY_LEN]) {
    static const char label[] = "relay device key v1";
    rl_mac m;
    if (rl_mac_init(&m) != 0) return -1;
    int rc = rl_mac_compute(&m, secret, RL_SECRET_LEN, label, sizeof label - 1, NULL, 0, NULL, 0, key, RL_KEY_LEN);
    rl_mac_free(&m);
    return rc;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 16 bytes -> 22 base64url characters, no padding. */
static void b64url16(const uint8_t in[16], char out[23]) {
    size_t o = 0;
    for (size_t i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        out[o++] = b64url[v & 63];
    }
    out[o++] = b64url[in[15] >> 2];
    out[o++] = b64url[(in[15] & 3) << 4];
    out[o] = 0;
}

/* 22 base64url characters -> 16 bytes; -1 unless `in` is exactly what b64url16 writes (the
 * last character carries 2 bits and its 4 unused ones must be 0), so that each MAC has one
 * spelling. Only a presented MAC is decoded: its text is public, so early exits leak nothing. */
static int b64url16_decode(const char in[22], uint8_t out[16]) {
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < 22; i++) {
        const char *at = memchr(b64url, in[i], 64);
        if (!at) return -1;
        acc = acc << 6 | (uint32_t)(at - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < 16) out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o == 16 && (acc & ((1u << bits) - 1)) == 0 ? 0 : -1;
}

/* The signed part "<id>.<expiry>.<tid>" is MACed with the device key appended, so that a
 * re-provisioned device (new secret, new key) invalidates every token made before. */
/* Fetching an HMAC implementation costs more than computing one in OpenSSL 3, and a token
 * is checked on every terminal request: each thread keeps one context, freed at its exit. */
static pthread_key_t mac_key;
static pthread_once_t mac_key_once = PTHREAD_ONCE_INIT;

static void free_thread_mac(void *p) {
    rl_mac_free(p);
    free(p);
}

static void make_mac_key(void) {
    pthread_key_create(&mac_key, free_thread_mac);
}

static rl_mac *thread_mac(void) {
    pthread_once(&mac_key_once, make_mac_key);
    rl_mac *m = pthread_getspecific(mac_key);
    if (m) return m;
    m = calloc(1, sizeof *m);
    if (!m || rl_mac_init(m) != 0) {
        free(m);
        return NULL;
    }
    pthread_setspecific(mac_key, m);
    return m;
}

static int token_mac(const uint8_t token_key[RL_TOKEN_KEY_LEN], const char *signed_part, size_t len,
                     const uint8_t device_key[RL_KEY_LEN], uint8_t mac[16]) {
    static const char label[] = "relay token v1"; /* sizeof includes the 0x00 separator */
    rl_mac *m = thread_mac();
    if (!m) return -1;
    return rl_mac_compute(m, token_key, RL_TOKEN_KEY_LEN, label, sizeof label, signed_part, len, device_key,
                          RL_KEY_LEN, mac, 16);
}

int rl_token_mint(const uint8_t token_key[RL_TOKEN_KEY_LEN], const char *device_id,
                  const uint8_t device_key[RL_KEY_LEN], uint64_t expires_unix, const uint8_t token_id[8],
                  char *out, size_t out_len) {
    char tid[17], text[23];
    uint8_t mac[16];
    size_t id_len = strlen(device_id);
    if (!rl_device_id_valid(device_id, id_len) || out_len < RL_TOKEN_MAX) return -1;
    rl_hex(token_id, 8, tid);
    int n = snprintf(out, out_len, "%s.%llu.%s", device_id, (unsigned long long)expires_unix, tid);
    if (n < 0 || (size_t)n >= out_len) return -1;
    if (token_mac(token_key, out, (size_t)n, device_key, mac) != 0) return -1;
    if ((size_t)n + 1 + 22 + 1 > out_len) return -1;
    b64url16(mac, text);
    out[n] = '.';
    memcpy(out + n + 1, text, 23);
    return 0;
}

int rl_token_check(const uint8_t token_key[RL_TOKEN_KEY_LEN], const char *token, size_t token_len,
                   const char *device_id, const uint8_t device_key[RL_KEY_LEN], uint64_t now_unix,
                   char token_device[RL_ID_MAX + 1]) {
    token_device[0] = 0;
    if (token_len >= RL_TOKEN_MAX) return RL_TOKEN_MALFORMED;
    /* <id>.<expiry>.<tid16>.<mac22> */
    const char *dot1 = memchr(token, '.', token_len);
    if (!dot1) return RL_TOKEN_MALFORMED;
    size_t id_len = (size_t)(dot1 - token);
    if (!rl_device_id_valid(token, id_len)) return RL_TOKEN_MALFORMED;
    memcpy(token_device, token, id_len);
    token_device[id_len] = 0;
    const char *p = dot1 + 1, *end = token + token_len;
    uint64_t expiry = 0;
    size_t digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 19) {
        expiry = expiry * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    if (digits == 0 || p >= end || *p != '.') return RL_TOKEN_MALFORMED;
    p++;
    uint8_t tid[8];
    if (end - p != 16 + 1 + 22 || rl_unhex(p, 16, tid, 8) != 0 || p[16] != '.') return RL_TOKEN_MALFORMED;
    if (strcmp(token_device, device_id) != 0) return RL_TOKEN_BAD_MAC; /* caller checks the token's own device */
    /* Everything above reads only what the terminal sent, and device IDs are public: their
     * early exits tell an attacker nothing. The expected MAC is the one secret here; it is
     * compared as raw bytes in constant time, never encoded (a table lookup per secret byte). */
    uint8_t presented[16], expected[16];
    if (b64url16_decode(p + 17, presented) != 0) return RL_TOKEN_BAD_MAC;
    size_t signed_len = (size_t)(p + 16 - token);
    if (token_mac(token_key, token, signed_len, device_key, expected) != 0) return RL_TOKEN_BAD_MAC;
    if (CRYPTO_memcmp(expected, presented, sizeof expected) != 0) return RL_TOKEN_BAD_MAC;
    if (expiry < now_unix) return RL_TOKEN_EXPIRED;
    return RL_TOKEN_OK;
}

int rl_token_id(const char *token, size_t token_len, uint8_t tid[8]) {
    if (token_len < 16 + 1 + 22 || token[token_len - 22 - 1] != '.') return -1;
    return rl_unhex(token + token_len - 22 - 1 - 16, 16, tid, 8);
}
