/*
 * fuzz_token.c: terminal tokens (rl_token_check), as they arrive in an Authorization
 * header, a query parameter or a cookie.
 *
 * Input byte 0 selects the mode:
 *   even: the rest is token text, checked as-is against "cam-1" (and against the device
 *         it names, as front.c does for the 403 case) at a fixed time;
 *   odd:  the rest seeds a genuine token (device ID, expiry, token ID, a time), which must
 *         check OK or EXPIRED; then one byte of it is changed (position and value from the
 *         input) and the result must no longer be OK: nothing but the exact minted text
 *         verifies.
 */
#include "fuzz_util.h"

static uint8_t token_key[RL_TOKEN_KEY_LEN];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dev[RL_ID_MAX + 1];
    memset(token_key, 7, sizeof token_key);
    if (size < 1) return 0;
    if (!(data[0] & 1)) {
        const char *tok = (const char *)data + 1;
        size_t n = size - 1;
        int rc = rl_token_check(token_key, tok, n, "cam-1", fz_key_a, 1700000000ull, dev);
        FZ_CHECK(rc >= RL_TOKEN_OK && rc <= RL_TOKEN_EXPIRED);
        FZ_CHECK(rc != RL_TOKEN_OK); /* nobody can forge a MAC */
        size_t dl = strnlen(dev, sizeof dev);
        FZ_CHECK(dl < sizeof dev);
        FZ_CHECK(dl == 0 || rl_device_id_valid(dev, dl));
        if (dl) {
            char dev2[RL_ID_MAX + 1];
            rc = rl_token_check(token_key, tok, n, dev, fz_key_b, 0, dev2);
            FZ_CHECK(rc != RL_TOKEN_OK && strcmp(dev, dev2) == 0);
        }
        return 0;
    }
    /* genuine token: id length, id bytes, expiry (8), tid (8), now (8), flip pos, flip xor */
    if (size < 2) return 0;
    size_t id_len = data[1] % (RL_ID_MAX + 2);
    if (size < 2 + id_len + 8 + 8 + 8 + 2) return 0;
    char id[RL_ID_MAX + 2];
    memcpy(id, data + 2, id_len);
    id[id_len] = 0;
    const uint8_t *p = data + 2 + id_len;
    uint64_t expiry = rl_get64(p), now = rl_get64(p + 16);
    char tok[RL_TOKEN_MAX];
    int mint = rl_token_mint(token_key, id, fz_key_a, expiry, p + 8, tok, sizeof tok);
    id_len = strlen(id); /* an embedded NUL ends the C string the minter sees */
    if (!rl_device_id_valid(id, id_len)) {
        FZ_CHECK(mint != 0);
        return 0;
    }
    FZ_CHECK(mint == 0);
    size_t n = strlen(tok);
    FZ_CHECK(n < RL_TOKEN_MAX);
    int rc = rl_token_check(token_key, tok, n, id, fz_key_a, now, dev);
    /* expiries of 20 digits do not parse back (at most 19): refused as malformed, never OK */
    if (expiry >= 10000000000000000000ull) FZ_CHECK(rc == RL_TOKEN_MALFORMED);
    else FZ_CHECK(rc == (expiry < now ? RL_TOKEN_EXPIRED : RL_TOKEN_OK));
    FZ_CHECK(strcmp(dev, id) == 0 || rc == RL_TOKEN_MALFORMED);
    FZ_CHECK(rl_token_check(token_key, tok, n, id, fz_key_b, now, dev) != RL_TOKEN_OK); /* re-provisioned */
    uint8_t pos = p[24], x = p[25];
    if (x) {
        tok[pos % n] ^= x;
        FZ_CHECK(rl_token_check(token_key, tok, n, id, fz_key_a, now, dev) != RL_TOKEN_OK);
    }
    return 0;
}
