/*
 * core_tests.c: unit tests of the C core's pure parts (codecs, registry, tokens, HTTP
 * framing, address parsing), built with AddressSanitizer and UBSan by `make test-c`.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "core_types.h"
#include "records.h"
#include "util.h"
#include "netaddr.h"
#include "udp.h"
#include "liveness.h"
#include "session.h"
#include "splice.h"
#include "front.h"
#include "callback.h"
#include "track.h"
#include "metrics.h"
#include "http.h"
#include "flow.h"
#include "rewrite.h"

#include "check.h"

static const uint8_t key_a[RL_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t key_b[RL_KEY_LEN] = {16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};

static void test_device_ids(void) {
    CHECK(rl_device_id_valid("cam-1", 5));
    CHECK(rl_device_id_valid("a", 1));
    CHECK(!rl_device_id_valid("", 0));
    CHECK(!rl_device_id_valid("-cam", 4));
    CHECK(!rl_device_id_valid("cam-", 4));
    CHECK(!rl_device_id_valid("Cam", 3));
    CHECK(!rl_device_id_valid("cam.1", 5));
    char long_id[65];
    memset(long_id, 'a', 64);
    long_id[64] = 0;
    CHECK(rl_device_id_valid(long_id, 63));
    CHECK(!rl_device_id_valid(long_id, 64));
}

/* RFC 4231 test cases 1, 2 and 6 (a key longer than a block is hashed first), with the
 * message split across the three parts rl_mac_compute takes. */
static void test_hmac_rfc4231(void) {
    rl_mac m;
    CHECK(rl_mac_init(&m) == 0);
    uint8_t out[32], k1[20], k6[131];
    char hex[65];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    CHECK(rl_mac_compute(&m, k1, sizeof k1, "Hi There", 8, NULL, 0, NULL, 0, out, 32) == 0);
    rl_hex(out, 32, hex);
    CHECK(strcmp(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7") == 0);
    CHECK(rl_mac_compute(&m, (const uint8_t *)"Jefe", 4, "what do ya want ", 16, "for nothing", 11, "?", 1, out, 32) == 0);
    rl_hex(out, 32, hex);
    CHECK(strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") == 0);
    static const char msg6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    CHECK(rl_mac_compute(&m, k6, sizeof k6, msg6, sizeof msg6 - 1, NULL, 0, NULL, 0, out, 16) == 0);
    rl_hex(out, 16, hex);
    CHECK(strcmp(hex, "60e431591ee0b67f0d8a26aacbf5b77f") == 0); /* truncated to 128 bits */
    CHECK(rl_mac_compute(&m, k1, sizeof k1, "x", 1, NULL, 0, NULL, 0, out, 33) != 0);
    rl_mac_free(&m);
}

static void test_datagrams(void) {
    rl_mac m;
    CHECK(rl_mac_init(&m) == 0);
    uint8_t buf[RL_DGRAM_MAX], body[RL_BODY_NOTIFY] = {0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 42};
    size_t n = rl_dgram_build(&m, buf, sizeof buf, RL_T_NOTIFY_A, "cam-1", 5, body, sizeof body, key_a);
    CHECK(n == 32 + 5);
    rl_dgram d;
    CHECK(rl_dgram_parse(buf, n, &d) == 0);
    CHECK(d.type == RL_T_NOTIFY_A && d.id_len == 5 && memcmp(d.id, "cam-1", 5) == 0);
    CHECK(rl_get32(d.body) == 7 && rl_get64(d.body + 4) == 42);
    CHECK(rl_dgram_verify(&m, key_a, buf, n));
    CHECK(!rl_dgram_verify(&m, key_b, buf, n)); /* forged with another key */
    /* every truncation and one extra byte are malformed */
    for (size_t cut = 0; cut < n; cut++) CHECK(rl_dgram_parse(buf, cut, &d) != 0);
    CHECK(rl_dgram_parse(buf, n + 1, &d) != 0);
    /* a flipped bit anywhere breaks the tag (or the frame) */
    for (size_t i = 0; i < n; i++) {
        buf[i] ^= 0x40;
        CHECK(rl_dgram_parse(buf, n, &d) != 0 || !rl_dgram_verify(&m, key_a, buf, n));
        buf[i] ^= 0x40;
    }
    buf[0] = 0x53;
    CHECK(rl_dgram_parse(buf, n, &d) != 0);
    buf[0] = RL_MAGIC;
    buf[1] = RL_VERSION_OLD;
    CHECK(rl_dgram_parse(buf, n, &d) != 0);
    buf[1] = RL_VERSION + 1;
    CHECK(rl_dgram_parse(buf, n, &d) != 0);
    buf[1] = RL_VERSION;
    buf[2] = 11;
    CHECK(rl_dgram_parse(buf, n, &d) != 0);
    /* lengths per type, as docs/PROTOCOL.md says */
    CHECK(rl_dgram_len(RL_T_PERIOD_REQUEST, 5) == 49);
    CHECK(rl_dgram_len(RL_T_PERIOD_INFO, 5) == 49);
    CHECK(rl_dgram_len(RL_T_NOTIFY_B, 5) == 37);
    CHECK(rl_dgram_len(RL_T_RESYNC, 5) == 37);
    CHECK(rl_dgram_len(RL_T_CONNECT, 5) == 61);
    CHECK(rl_dgram_len(RL_T_CONNECT, 0) == 0 && rl_dgram_len(RL_T_CONNECT, 64) == 0);
    CHECK(rl_dgram_len(RL_T_NOTIFY_ACK, 5) == 37 && rl_dgram_len(RL_T_LEAVE, 5) == 37);
    CHECK(rl_dgram_len(RL_T_REJECT, 5) == 49);
    /* answers are never larger than what they answer */
    CHECK(rl_dgram_len(RL_T_NOTIFY_ACK, 63) <= rl_dgram_len(RL_T_NOTIFY_B, 63));
    CHECK(rl_dgram_len(RL_T_NOTIFY_ACK, 63) <= rl_dgram_len(RL_T_LEAVE, 63));
    CHECK(rl_dgram_len(RL_T_REJECT, 63) <= rl_dgram_len(RL_T_PERIOD_REQUEST, 63));
    /* replies are never larger than what caused them */
    CHECK(rl_dgram_len(RL_T_PERIOD_INFO, 63) <= rl_dgram_len(RL_T_PERIOD_REQUEST, 63));
    CHECK(rl_dgram_len(RL_T_RESYNC, 63) <= rl_dgram_len(RL_T_NOTIFY_A, 63));
    /* wrong body size refused by the builder */
    CHECK(rl_dgram_build(&m, buf, sizeof buf, RL_T_NOTIFY_A, "cam-1", 5, body, 11, key_a) == 0);
    /* a known vector, recomputable with any HMAC-SHA256: K = HMAC(32 x 0x01, "relay device key v1")[0..16] */
    uint8_t secret[RL_SECRET_LEN], k[RL_KEY_LEN];
    char hex[33];
    memset(secret, 1, sizeof secret);
    CHECK(rl_derive_device_key(secret, k) == 0);
    rl_hex(k, sizeof k, hex);
    CHECK(strlen(hex) == 32);
    uint8_t back[RL_KEY_LEN];
    CHECK(rl_unhex(hex, 32, back, sizeof back) == 0 && memcmp(back, k, sizeof k) == 0);
    CHECK(rl_unhex("zz", 2, back, 1) != 0);
    rl_mac_free(&m);
}

static void test_tokens(void) {
    uint8_t tk[RL_TOKEN_KEY_LEN], tid[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char tok[RL_TOKEN_MAX], dev[RL_ID_MAX + 1];
    memset(tk, 9, sizeof tk);
    CHECK(rl_token_mint(tk, "cam-1", key_a, 2000000000ull, tid, tok, sizeof tok) == 0);
    CHECK(strncmp(tok, "cam-1.2000000000.0102030405060708.", 34) == 0 && strlen(tok) == 34 + 22);
    size_t n = strlen(tok);
    CHECK(rl_token_check(tk, tok, n, "cam-1", key_a, 1900000000ull, dev) == RL_TOKEN_OK);
    CHECK(strcmp(dev, "cam-1") == 0);
    CHECK(rl_token_check(tk, tok, n, "cam-1", key_a, 2000000001ull, dev) == RL_TOKEN_EXPIRED);
    CHECK(rl_token_check(tk, tok, n, "cam-1", key_b, 1900000000ull, dev) == RL_TOKEN_BAD_MAC); /* re-provisioned */
    CHECK(rl_token_check(tk, tok, n, "cam-2", key_a, 1900000000ull, dev) == RL_TOKEN_BAD_MAC);
    CHECK(strcmp(dev, "cam-1") == 0); /* the token's own device is reported: 403 vs 401 */
    char bad[RL_TOKEN_MAX];
    memcpy(bad, tok, n + 1);
    bad[n - 1] = bad[n - 1] == 'A' ? 'B' : 'A';
    CHECK(rl_token_check(tk, bad, n, "cam-1", key_a, 1900000000ull, dev) == RL_TOKEN_BAD_MAC);
    memcpy(bad, tok, n + 1);
    bad[n - 1] = (char)(bad[n - 1] + 1); /* the same 16 bytes spelled with unused bits set */
    CHECK(strchr("AQgw", tok[n - 1]) && rl_token_check(tk, bad, n, "cam-1", key_a, 1900000000ull, dev) == RL_TOKEN_BAD_MAC);
    memcpy(bad, tok, n + 1);
    bad[n - 2] = '*'; /* not base64url */
    CHECK(rl_token_check(tk, bad, n, "cam-1", key_a, 1900000000ull, dev) == RL_TOKEN_BAD_MAC);
    memcpy(bad, tok, n + 1);
    bad[7] = '3'; /* a later expiry, same MAC */
    CHECK(rl_token_check(tk, bad, n, "cam-1", key_a, 1900000000ull, dev) == RL_TOKEN_BAD_MAC);
    CHECK(rl_token_check(tk, "garbage", 7, "cam-1", key_a, 0, dev) == RL_TOKEN_MALFORMED);
    CHECK(rl_token_check(tk, "cam-1.x.y.z", 11, "cam-1", key_a, 0, dev) == RL_TOKEN_MALFORMED);
    CHECK(rl_token_check(tk, tok, n - 1, "cam-1", key_a, 0, dev) == RL_TOKEN_MALFORMED);
}

static void test_revoked_set(void) {
    rl_revoked r = {0};
    uint8_t tid[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const uint64_t now = 1700000000ull;
    CHECK(!rl_revoked_has(&r, tid)); /* empty, nothing allocated */
    CHECK(rl_revoked_add(&r, tid, now - 1, now) == 0 && !rl_revoked_has(&r, tid)); /* already expired */
    CHECK(rl_revoked_add(&r, tid, now + 10, now) == 0 && rl_revoked_has(&r, tid));
    CHECK(rl_revoked_add(&r, tid, now + 5, now) == 0 && r.count == 1); /* again: one entry, later expiry kept */
    /* many IDs: the table grows and finds every one, and no other */
    enum { N = 5000 };
    for (uint32_t i = 0; i < N; i++) {
        uint8_t t[8] = {0};
        memcpy(t, &i, sizeof i);
        t[7] = 0xee;
        CHECK(rl_revoked_add(&r, t, now + 100 + (i % 2) * 1000, now) == 0);
    }
    CHECK(r.count == N + 1 && 2 * r.count <= r.mask + 1);
    int found = 0, stray = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint8_t t[8] = {0};
        memcpy(t, &i, sizeof i);
        t[7] = 0xee;
        found += rl_revoked_has(&r, t);
        t[7] = 0xef;
        stray += rl_revoked_has(&r, t);
    }
    CHECK(found == N && stray == 0);
    /* before the earliest expiry a sweep changes nothing; after it the expired go */
    rl_revoked_sweep(&r, now + 10);
    CHECK(r.count == N + 1);
    rl_revoked_sweep(&r, now + 11);
    CHECK(r.count == N && !rl_revoked_has(&r, tid));
    rl_revoked_sweep(&r, now + 101);
    CHECK(r.count == N / 2);
    found = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint8_t t[8] = {0};
        memcpy(t, &i, sizeof i);
        t[7] = 0xee;
        found += rl_revoked_has(&r, t) == (int)(i % 2);
    }
    CHECK(found == N);
    rl_revoked_sweep(&r, now + 1101);
    CHECK(r.count == 0 && r.mask + 1 == 16); /* shrunk back */
    rl_revoked_free(&r);
}

static void test_registry(void) {
    rl_registry r;
    enum { N = 5000 };
    CHECK(rl_registry_init(&r, N) == 0);
    uint64_t hashes[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "dev-%d", i);
        hashes[i] = rl_registry_hash(&r, id, strlen(id));
        uint8_t k[RL_KEY_LEN] = {0};
        memcpy(k, &i, sizeof i);
        CHECK(rl_registry_put(&r, hashes[i], k) == 0 || (failed++, 0));
    }
    CHECK(r.count == N);
    uint8_t extra[RL_KEY_LEN] = {0};
    CHECK(rl_registry_put(&r, 12345, extra) == -1); /* full */
    int found = 0;
    for (int i = 0; i < N; i++) {
        rl_dev *d = rl_registry_find(&r, hashes[i]);
        int k;
        if (d) memcpy(&k, d->key, sizeof k);
        found += d && k == i && d->sock == RL_NO_SOCK && d->last_access == 0;
    }
    CHECK(found == N);
    /* remove every third, check the rest are intact (backward-shift and dense moves) */
    for (int i = 0; i < N; i += 3) CHECK(rl_registry_remove(&r, hashes[i]) == 0 || (failed++, 0));
    CHECK(rl_registry_remove(&r, hashes[0]) == -1);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        rl_dev *d = rl_registry_find(&r, hashes[i]);
        int k = -1;
        if (d) memcpy(&k, d->key, sizeof k);
        ok += (i % 3 == 0) ? d == NULL : (d != NULL && k == i);
    }
    CHECK(ok == N);
    /* re-keying resets the anchor and liveness */
    rl_dev *d = rl_registry_find(&r, hashes[1]);
    d->last_access = 99;
    d->sock = 0;
    d->counter = 5;
    uint8_t same[RL_KEY_LEN];
    memcpy(same, d->key, sizeof same);
    CHECK(rl_registry_put(&r, hashes[1], same) == 0 && rl_registry_find(&r, hashes[1])->last_access == 99);
    CHECK(rl_registry_put(&r, hashes[1], key_b) == 0);
    d = rl_registry_find(&r, hashes[1]);
    CHECK(d->last_access == 0 && d->sock == RL_NO_SOCK && d->counter == 0);
    CHECK(rl_registry_bytes(&r) / N <= 64);
    rl_registry_free(&r);
}

static void test_flow(void) {
    rl_flow f;
    rl_head h;
    memset(&f, 0, sizeof f);
    const char *req = "POST /d/cam-1/up?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
    CHECK(rl_flow_head(&f, HTTP_REQUEST, req, strlen(req), &h) == 0);
    CHECK(h.method == HTTP_POST && h.url.n == strlen("/d/cam-1/up?x=1") && h.n_headers == 3);
    CHECK(rl_span_ieq(rl_head_get(&h, "x-a"), "1") && rl_head_get(&h, "missing").p == NULL);
    CHECK(f.in_body && !f.raw);
    /* the chunked body ends exactly before the next request */
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    const char *rest = "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    evbuffer_add(in, rest, 10); /* split mid-body */
    CHECK(rl_flow_body(&f, in, out) == 10 && !f.done);
    evbuffer_add(in, rest + 10, strlen(rest) - 10);
    long n = rl_flow_body(&f, in, out);
    CHECK(n == (long)strlen("5\r\nhello\r\n0\r\n\r\n") - 10 && f.done);
    CHECK(evbuffer_get_length(in) == strlen("GET / HTTP/1.1\r\n\r\n"));
    rl_flow_next(&f);
    CHECK(rl_flow_find_head(in) == strlen("GET / HTTP/1.1\r\n\r\n"));
    /* a response to HEAD has no body despite Content-Length */
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    memset(&f, 0, sizeof f);
    f.skip_body = 1;
    CHECK(rl_flow_head(&f, HTTP_RESPONSE, resp, strlen(resp), &h) == 0 && f.done && !f.in_body);
    /* no framing: the body runs to the end of the connection */
    const char *eof_resp = "HTTP/1.0 200 OK\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_RESPONSE, eof_resp, strlen(eof_resp), &h) == 0 && f.raw);
    /* 101 and Upgrade make the stream opaque */
    const char *up = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_RESPONSE, up, strlen(up), &h) == 0 && f.raw && h.status == 101);
    const char *upreq = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, upreq, strlen(upreq), &h) == 0 && !f.raw && h.upgrade); /* raw on the 101 only */
    /* smuggling shapes and garbage are refused */
    const char *bad[] = {
        "GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&f, 0, sizeof f);
        CHECK(rl_flow_head(&f, HTTP_REQUEST, bad[i], strlen(bad[i]), &h) != 0);
    }
    /* Found by Tests/fuzz/fuzz_flow: a head of bare CRLFs parsed as an empty message and
     * left the flow "in a body", so the next message was framed as that body (and a device
     * response went to the terminal without its start line). A head needs a start line. */
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, "\r\n\r\n", 4, &h) != 0);
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_RESPONSE, "\r\n\r\n", 4, &h) != 0);
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_RESPONSE, "HTTP/1.1 099 Low\r\n\r\n", 22, &h) != 0);
    memset(&f, 0, sizeof f); /* one empty line before a request line stays allowed (RFC 9112 2.2) */
    CHECK(rl_flow_head(&f, HTTP_REQUEST, "\r\nGET / HTTP/1.1\r\n\r\n", 20, &h) == 0 && h.url.n == 1);
    evbuffer_free(in);
    evbuffer_free(out);
}

static void test_addresses(void) {
    struct sockaddr_storage ss;
    socklen_t len;
    char err[128];
    CHECK(rl_parse_addr("127.0.0.1:80", &ss, &len, err, sizeof err) == 0 && ss.ss_family == AF_INET);
    CHECK(rl_parse_addr("[::1]:0", &ss, &len, err, sizeof err) == 0 && ss.ss_family == AF_INET6);
    CHECK(rl_parse_addr("127.0.0.1", &ss, &len, err, sizeof err) != 0);
    CHECK(rl_parse_addr("127.0.0.1:70000", &ss, &len, err, sizeof err) != 0 && strstr(err, "port"));
    CHECK(rl_parse_addr("[::1:80", &ss, &len, err, sizeof err) != 0);
    uint8_t a[16];
    uint16_t port;
    rl_addr_to_v6((struct sockaddr *)&ss, a, &port);
    struct sockaddr_storage back;
    rl_v6_to_sockaddr(a, 4242, AF_INET6, &back, &len);
    CHECK(len == sizeof(struct sockaddr_in6) && ntohs(((struct sockaddr_in6 *)&back)->sin6_port) == 4242);
}

/* ---- rl_stream: write first, events from the loop ---- */

typedef struct stream_log {
    int drained, errors, eofs;
} stream_log;

static void log_cb(rl_stream *s, int event, void *arg) {
    stream_log *l = arg;
    if (event == RL_STREAM_DRAINED) l->drained++;
    else if (event == RL_STREAM_ERROR) l->errors++;
    else if (event == RL_STREAM_EOF) l->eofs++;
}

static size_t drain_peer(int fd) {
    char buf[65536];
    size_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) total += (size_t)n;
    return total;
}

static void test_stream_write_first(void) {
    signal(SIGPIPE, SIG_IGN); /* as rl_init_threads does: a gone peer is EPIPE */
    struct event_base *base = event_base_new();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    stream_log log = {0};
    rl_stream *s = rl_stream_new(base, sv[0], 0, log_cb, &log);

    /* A small message is on the wire when flush returns; DRAINED comes from the loop. */
    evbuffer_add(s->out, "hello", 5);
    rl_stream_flush(s);
    char got[8] = {0};
    CHECK(read(sv[1], got, sizeof got) == 5 && memcmp(got, "hello", 5) == 0);
    CHECK(log.drained == 0 && !s->writing); /* no write event armed */
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(log.drained == 1 && s->bytes_written == 5);

    /* More than the socket takes: the rest waits for the write event, then DRAINED. */
    static char big[4 << 20];
    evbuffer_add(s->out, big, sizeof big);
    rl_stream_flush(s);
    CHECK(evbuffer_get_length(s->out) > 0 && s->writing);
    size_t received = 0;
    for (int i = 0; i < 10000 && evbuffer_get_length(s->out) > 0; i++) {
        received += drain_peer(sv[1]);
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    received += drain_peer(sv[1]);
    /* DRAINED when it fell below the high mark and when it emptied (once if both at once) */
    CHECK(log.drained >= 2 && received == sizeof big && evbuffer_get_length(s->out) == 0 && !s->writing);
    int drained_before = log.drained;

    /* Half-close after the last byte: the peer sees the bytes, then end of stream. */
    evbuffer_add(s->out, "bye", 3);
    rl_stream_shutdown_after_flush(s);
    CHECK(read(sv[1], got, sizeof got) == 3 && read(sv[1], got, sizeof got) == 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(log.drained == drained_before + 1 && log.errors == 0);
    rl_stream_free(s);
    close(sv[1]);

    /* A peer that is gone: the failed write is reported from the loop, never inside flush. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    stream_log gone = {0};
    s = rl_stream_new(base, sv[0], 0, log_cb, &gone);
    close(sv[1]);
    evbuffer_add(s->out, "lost", 4);
    rl_stream_flush(s);
    CHECK(gone.errors == 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(gone.errors == 1 && gone.drained == 0);
    rl_stream_free(s);
    event_base_free(base);
}

/* ---- the core in-process: a core that is never started, its loop run on this thread and
 * its peers socketpairs handed to the accept callbacks (as Tests/fuzz/fuzz_front.c does). */

static void spin(rl_core *core) {
    for (int i = 0; i < 16; i++) event_base_loop(core->base, EVLOOP_NONBLOCK);
}

static rl_core *inproc_core(char tok[RL_TOKEN_MAX]) {
    rl_core_config cfg;
    char err[256];
    rl_core_config_defaults(&cfg);
    cfg.capacity = 4;
    memset(cfg.token_key, 7, sizeof cfg.token_key);
    rl_core *core = rl_core_new(&cfg, err, sizeof err);
    CHECK(core && rl_core_listen(core, RL_LISTEN_UDP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_listen(core, RL_LISTEN_TCP, "127.0.0.1:0", err, sizeof err) == 0);
    CHECK(rl_core_device_put(core, "cam-1", key_a) == 0);
    /* alive, anchored at the discard port of loopback */
    rl_dev *d = rl_registry_find(&core->reg, rl_registry_hash(&core->reg, "cam-1", 5));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    rl_addr_to_v6((struct sockaddr *)&sa, d->addr, &d->port);
    d->sock = 0;
    d->last_access = rl_core_now_s(core) + 1;
    uint8_t tid[8] = {0};
    CHECK(rl_token_mint(cfg.token_key, "cam-1", key_a, 4000000000ull, tid, tok, RL_TOKEN_MAX) == 0);
    return core;
}

static int inproc_peer(rl_core *core, int callback) {
    int sv[2];
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0); /* as accept4 gives */
    if (callback) rl_callback_accept(NULL, sv[0], (struct sockaddr *)&peer, sizeof peer, core);
    else rl_front_accept(NULL, sv[0], (struct sockaddr *)&peer, sizeof peer, core);
    return sv[1];
}

/* Found by Tests/fuzz/fuzz_front (corpus file regress_bind_frees_link): a terminal pipelines
 * a valid request and a malformed one; when the device's callback binds, forwarding the
 * queued requests hits the bad one and closes the terminal, which ends the session and
 * frees the link, and try_hello then read the freed link (heap use-after-free). */
static void test_callback_bind_ends_session(void) {
    char tok[RL_TOKEN_MAX], req[512];
    rl_core *core = inproc_core(tok);
    int term = inproc_peer(core, 0);
    int n = snprintf(req, sizeof req, "GET /d/cam-1/ HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n"
                     "HEAD /d 304 Not Modified\r\n\r\n", tok);
    CHECK(write(term, req, (size_t)n) == n);
    spin(core);
    rl_session *s = core->terms ? core->terms->sess : NULL;
    CHECK(s && s->state == SESS_WAKING);
    if (s) {
        uint8_t hello[RL_HELLO_MAX];
        memcpy(hello, RL_HELLO_MAGIC, 4);
        hello[4] = 5;
        memcpy(hello + 5, "cam-1", 5);
        memcpy(hello + 10, s->sid, RL_SESSION_ID_LEN);
        CHECK(rl_callback_proof(&core->mac, key_a, s->sid, s->nonce, hello + 10 + RL_SESSION_ID_LEN) == 0);
        int dev = inproc_peer(core, 1);
        /* the device's first response bytes come with the hello, so some are queued */
        const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        CHECK(write(dev, hello, 10 + RL_SESSION_ID_LEN + 32) == 10 + RL_SESSION_ID_LEN + 32);
        CHECK(write(dev, resp, strlen(resp)) == (ssize_t)strlen(resp));
        spin(core);
        /* the bad request is answered 400 after the first response, and ends the terminal */
        char got[1024];
        ssize_t k = read(term, got, sizeof got - 1);
        got[k > 0 ? k : 0] = 0;
        CHECK(strstr(got, "HTTP/1.1 400 ") != NULL && core->terms == NULL);
        close(dev);
    }
    close(term);
    spin(core);
    rl_core_free(core);
}

/* /healthz before the relay is ready answers 503 "starting" but is no refusal: it must not
 * count as a device offline (seen under ASan, where start-up is slow enough to be polled). */
static void test_healthz_is_not_a_refusal(void) {
    char tok[RL_TOKEN_MAX], buf[512];
    rl_core *core = inproc_core(tok);
    for (int ready = 0; ready <= 1; ready++) {
        rl_core_set_ready(core, ready);
        int term = inproc_peer(core, 0);
        const char *req = "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n";
        CHECK(write(term, req, strlen(req)) == (ssize_t)strlen(req));
        spin(core);
        ssize_t n = read(term, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        CHECK(strstr(buf, ready ? "HTTP/1.1 200 " : "HTTP/1.1 503 ") == buf);
        close(term);
        spin(core);
    }
    CHECK(CTR_GET(core->ctr.refused_offline) == 0 && CTR_GET(core->ctr.refused_bad_request) == 0 &&
          CTR_GET(core->ctr.refused_unknown) == 0);
    rl_core_free(core);
}

/* A revoked token gets 401 "token revoked"; another token of the same device still passes. */
static void test_revoked_token_refused(void) {
    char tok[RL_TOKEN_MAX], other[RL_TOKEN_MAX], req[512], buf[1024];
    rl_core *core = inproc_core(tok);
    uint8_t tid[8] = {0}, other_tid[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    CHECK(rl_token_mint(core->cfg.token_key, "cam-1", key_a, 4000000000ull, other_tid, other, sizeof other) == 0);
    CHECK(rl_core_token_revoke(core, tid, 4000000000ull) == 0); /* tid of `tok` */
    const char *tokens[] = {tok, other};
    for (int i = 0; i < 2; i++) {
        int term = inproc_peer(core, 0);
        int n = snprintf(req, sizeof req, "GET /d/cam-1/ HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", tokens[i]);
        CHECK(write(term, req, (size_t)n) == n);
        spin(core);
        if (i == 0) {
            ssize_t got = read(term, buf, sizeof buf - 1);
            buf[got > 0 ? got : 0] = 0;
            CHECK(strstr(buf, "HTTP/1.1 401 ") == buf && strstr(buf, "\r\n\r\ntoken revoked\n"));
        } else {
            CHECK(core->terms && core->terms->state == TERM_WAKING); /* accepted: the device is being woken */
        }
        close(term);
        spin(core);
    }
    CHECK(CTR_GET(core->ctr.refused_unauthorized) == 1);
    rl_core_free(core);
}

/* Request heads the relay and a device could read differently are refused (RFC 9112);
 * ordinary ones still parse, and an Upgrade request is framed like any other. */
static void test_request_heads_one_reading(void) {
    const char *bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n continued\r\n\r\n",                 /* obs-fold */
        "GET / HTTP/1.1\r\n\tX-A: 1\r\n\r\n",                                       /* fold first */
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: \x01\r\n\r\n",
        "GET /a\tb HTTP/1.1\r\n\r\n",
        "GET /#f HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    };
    rl_flow f;
    rl_head h;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&f, 0, sizeof f);
        int rc = rl_flow_head(&f, HTTP_REQUEST, bad[i], strlen(bad[i]), &h);
        CHECK(rc != 0 && h.error != NULL);
        if (rc == 0) fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    const char *good[] = {
        "GET http://cam-1.example:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1]:80\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        memset(&f, 0, sizeof f);
        CHECK(rl_flow_head(&f, HTTP_REQUEST, good[i], strlen(good[i]), &h) == 0);
    }
    CHECK(h.keep_alive == 0); /* HTTP/1.0 without keep-alive is a last request */
    const char *up = "POST /ws HTTP/1.1\r\nUpgrade: foo\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, up, strlen(up), &h) == 0 && h.upgrade && !f.raw && f.in_body);
    const char *close_req = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, close_req, strlen(close_req), &h) == 0 && !h.keep_alive);
}

static int buf_is(struct evbuffer *b, const char *want) {
    size_t n = evbuffer_get_length(b);
    int ok = n == strlen(want) && (n == 0 || memcmp(evbuffer_pullup(b, -1), want, n) == 0);
    if (!ok) fprintf(stderr, "got \"%.*s\", want \"%s\"\n", (int)n, (const char *)evbuffer_pullup(b, -1), want);
    evbuffer_drain(b, n);
    return ok;
}

static rl_span span_of(const char *s) {
    return (rl_span){s, strlen(s)};
}

/* The relay's credentials are removed in every spelling; its redirects stay on the origin. */
static void test_rewrite(void) {
    struct evbuffer *b = evbuffer_new();
    rl_add_target_without_tokens(b, span_of("/p?relay_token=a&x=1&relay%5ftoken=b&relay_token&y=2"));
    CHECK(buf_is(b, "/p?x=1&y=2"));
    rl_add_target_without_tokens(b, span_of("/p?relay_token=a"));
    CHECK(buf_is(b, "/p"));
    CHECK(rl_span_ieq(rl_query_token(span_of("/p?x=1&relay_token=tok&relay_token=2")), "tok"));
    CHECK(rl_query_token(span_of("/p?xrelay_token=1")).p == NULL);
    rl_add_same_origin_path(b, span_of("//evil.example/x?relay_token=t&k=1"));
    CHECK(buf_is(b, "/evil.example/x?k=1"));
    rl_add_same_origin_path(b, span_of("/\\/\\evil.example"));
    CHECK(buf_is(b, "/evil.example"));
    rl_add_cookie_without_tokens(b, span_of("Cookie"), span_of("a=1; relay_token=x;b=2 ; RELAY_TOKEN = y"));
    CHECK(buf_is(b, "Cookie: a=1; b=2\r\n"));
    rl_add_cookie_without_tokens(b, span_of("Cookie"), span_of("relay_token=x; relay_token=y"));
    CHECK(buf_is(b, ""));
    rl_span cred;
    CHECK(rl_bearer(span_of("bearer abc"), &cred) && rl_span_ieq(cred, "abc"));
    CHECK(!rl_bearer(span_of("Bearerabc"), &cred) && !rl_bearer(span_of("Basic abc"), &cred));
    CHECK(rl_relay_owned_header(span_of("X-Forwarded-Prefix")) && rl_relay_owned_header(span_of("forwarded")));
    CHECK(!rl_relay_owned_header(span_of("X-Forwarded")));
    rl_flow f;
    rl_head h;
    const char *req = "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.2\r\n"
                      "X-Forwarded-For: 10.0.0.3\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, req, strlen(req), &h) == 0);
    rl_add_forwarding_headers(b, &h, "::1", 1, span_of("cam-1.example:8443"), "cam-1");
    CHECK(buf_is(b, "X-Forwarded-For: 10.0.0.1, 10.0.0.3, ::1\r\n"
                    "Forwarded: for=10.0.0.2, for=\"[::1]\";proto=https;host=\"cam-1.example:8443\"\r\n"
                    "X-Forwarded-Proto: https\r\nX-Forwarded-Host: cam-1.example:8443\r\n"
                    "X-Forwarded-Prefix: /d/cam-1\r\nX-Real-IP: ::1\r\n"));
    const char *open_quote = "GET / HTTP/1.1\r\nForwarded: for=\"1.2.3.4\r\nForwarded: for=a;by=\"x\\\"y\", for=b\r\n\r\n";
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, open_quote, strlen(open_quote), &h) == 0);
    rl_add_forwarding_headers(b, &h, "10.0.0.9", 0, (rl_span){NULL, 0}, NULL);
    CHECK(buf_is(b, "X-Forwarded-For: 10.0.0.9\r\nForwarded: for=a;by=\"x\\\"y\", for=b, for=10.0.0.9;proto=http\r\n"
                    "X-Forwarded-Proto: http\r\nX-Real-IP: 10.0.0.9\r\n"));
    CHECK(rl_authority_valid(span_of("a.b:80")) && rl_authority_valid(span_of("[::1]")));
    CHECK(!rl_authority_valid(span_of("a:b")) && !rl_authority_valid(span_of("a\\b")) && !rl_authority_valid(span_of("[]")));
    evbuffer_free(b);
}

/* A chunked request body reaches the device only as a prefix of a strictly valid one:
 * http-parser's leniencies (bare LF in an extension, any two bytes after the data, bare LF
 * or obs-fold in trailers, whitespace around the size) are refused. */
static long feed_chunked(const char *body, size_t split) {
    const char *head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    rl_flow f;
    rl_head h;
    memset(&f, 0, sizeof f);
    CHECK(rl_flow_head(&f, HTTP_REQUEST, head, strlen(head), &h) == 0 && f.in_body && f.chunk_check);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    size_t n = strlen(body);
    long total = 0, got = 0;
    evbuffer_add(in, body, split < n ? split : n);
    got = rl_flow_body(&f, in, out);
    if (got >= 0) {
        total += got;
        evbuffer_add(in, body + (split < n ? split : n), n - (split < n ? split : n));
        got = rl_flow_body(&f, in, out);
        total += got;
    }
    long result = got < 0 ? -1 : f.done ? total : -2;
    evbuffer_free(in);
    evbuffer_free(out);
    return result;
}

static void test_chunked_request_framing(void) {
    const char *good[] = {"5\r\nhello\r\n0\r\n\r\n", "5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
                          "0005\r\nhello\r\n00\r\n\r\n", "A\r\n0123456789\r\n0\r\n\r\n"};
    const char *bad[] = {"5;x\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n",
                         "5\r\nhello\r\n0\r\nX: y\n\r\n", "5\r\nhello\r\n0\r\n\n", "5\r\nhello\r\n0\r\n X: y\r\n\r\n",
                         "5\r\nhello\r\n0\r\nX : y\r\n\r\n", "5;\x01\r\nhello\r\n0\r\n\r\n",
                         "10000000000000005\r\nhello\r\n0\r\n\r\n"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        for (size_t split = 1; split <= strlen(good[i]); split += 3) CHECK(feed_chunked(good[i], split) == (long)strlen(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (size_t split = 1; split <= strlen(bad[i]); split += 3) {
            long r = feed_chunked(bad[i], split);
            CHECK(r == -1);
            if (r != -1) fprintf(stderr, "chunked body %zu split %zu: %ld\n", i, split, r);
        }
}

int main(void) {
    test_device_ids();
    test_hmac_rfc4231();
    test_datagrams();
    test_tokens();
    test_revoked_set();
    test_registry();
    test_flow();
    test_addresses();
    test_stream_write_first();
    test_callback_bind_ends_session();
    test_healthz_is_not_a_refusal();
    test_revoked_token_refused();
    test_request_heads_one_reading();
    test_rewrite();
    test_chunked_request_framing();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
