/*
 * fuzz_front.c: a whole terminal exchange through the relay, in-process: the terminal's
 * bytes go through front.c (head parse, Host and /d/ID routing, token from Authorization,
 * query or cookie, liveness, 302 + cookie, head rewrite, pipelining, reuse by
 * X-Relay-Session), a session wakes, a device calls back through callback.c (a genuine or a
 * fuzzed hello), and the device's bytes come back through session.c (response framing,
 * X-Relay-Session insertion). Peers are socketpairs; the loop runs on this thread.
 *
 * Input: flags(1) then chunks separated by the two bytes 00 01. Chunks alternate:
 * terminal, device, terminal, device... In terminal chunks "@T" becomes a valid token for
 * cam-1, "@B" a valid token for device b (a 403), "@S" the hex ID of the latest session.
 * In device chunks "@S" becomes the raw session ID and "@P" a valid callback proof.
 *   flags bit 0: the device's first chunk is its hello (fuzzed), else a genuine hello is sent
 *   bit 1: terminal half-closes at the end     bit 2: device closes at the end
 *   bit 3: terminal leaves after its first chunk, later terminal chunks use a new connection
 *   bit 4: fire the session's timer after each step   bit 5: fire the terminal's head timer
 * Oracles: ASan/UBSan/LSan (freed everything), and after teardown no session, no terminal,
 * sessions_active back to 0.
 */
#include "fuzz_util.h"

static rl_core *core;
static rl_mac mac;
static int sink_fd;
static uint16_t sink_port;
static char tok_a[RL_TOKEN_MAX], tok_b[RL_TOKEN_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    core = fz_core_new();
    FZ_CHECK(rl_mac_init(&mac) == 0);
    sink_fd = fz_sink(&sink_port);
    uint8_t tid[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    FZ_CHECK(rl_token_mint(core->cfg.token_key, "cam-1", fz_key_a, 4000000000ull, tid, tok_a, sizeof tok_a) == 0);
    FZ_CHECK(rl_token_mint(core->cfg.token_key, "b", fz_key_b, 4000000000ull, tid, tok_b, sizeof tok_b) == 0);
    return 0;
}

/* The latest session seen waking, by value (the session itself may be gone by now). */
static struct {
    int set;
    uint8_t sid[RL_SESSION_ID_LEN], nonce[RL_NONCE_LEN];
    char sid_hex[2 * RL_SESSION_ID_LEN + 1], device_id[RL_ID_MAX + 1];
} latest;

static void remember(const rl_session *s) {
    latest.set = 1;
    memcpy(latest.sid, s->sid, sizeof latest.sid);
    memcpy(latest.nonce, s->nonce, sizeof latest.nonce);
    memcpy(latest.sid_hex, s->sid_hex, sizeof latest.sid_hex);
    memcpy(latest.device_id, s->device_id, sizeof latest.device_id);
}

static rl_session *waking_session(void) {
    for (rl_term *t = core->terms; t; t = t->next)
        if (t->sess && t->sess->state == SESS_WAKING) return t->sess;
    return NULL;
}

static void fire_timers(uint8_t flags) {
    if (flags & 0x10) {
        rl_session *s = waking_session();
        if (!s && core->terms && core->terms->sess) s = core->terms->sess;
        if (s && s->timer) event_active(s->timer, EV_TIMEOUT, 1);
    }
    if ((flags & 0x20) && core->terms) event_active(core->terms->head_timer, EV_TIMEOUT, 1);
    fz_spin(core);
}

/* A session waking that no device connection answered yet gets one: a genuine hello, or
 * (flag bit 0, first wake only) the next device chunk as the hello. */
static uint8_t called_sid[RL_SESSION_ID_LEN];
static int n_calls;

static void maybe_callback(uint8_t flags, int *dev, int *hello_sent) {
    rl_session *s = waking_session();
    if (!s || (n_calls && memcmp(called_sid, s->sid, RL_SESSION_ID_LEN) == 0) || n_calls >= 4) return;
    remember(s);
    memcpy(called_sid, s->sid, RL_SESSION_ID_LEN);
    n_calls++;
    if (*dev >= 0) close(*dev);
    int r;
    fz_pair(&r, dev);
    rl_callback_accept(NULL, r, (struct sockaddr *)&fz_peer, sizeof fz_peer, core);
    *hello_sent = 0;
    if (!(flags & 1) || n_calls > 1) {
        uint8_t hello[RL_HELLO_MAX];
        size_t id_len = strlen(s->device_id);
        memcpy(hello, RL_HELLO_MAGIC, 4);
        hello[4] = (uint8_t)id_len;
        memcpy(hello + 5, s->device_id, id_len);
        memcpy(hello + 5 + id_len, s->sid, RL_SESSION_ID_LEN);
        const uint8_t *key = strcmp(s->device_id, "b") == 0 ? fz_key_b : fz_key_a;
        FZ_CHECK(rl_callback_proof(&mac, key, s->sid, s->nonce, hello + 5 + id_len + RL_SESSION_ID_LEN) == 0);
        fz_send(*dev, hello, 5 + id_len + RL_SESSION_ID_LEN + 32);
        *hello_sent = 1;
    }
    fz_spin(core);
}

static int open_term(void) {
    int r, o;
    fz_pair(&r, &o);
    rl_front_accept(NULL, r, (struct sockaddr *)&fz_peer, sizeof fz_peer, core);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 8192) return 0;
    uint8_t flags = data[0];
    fz_anchor(core, "cam-1", sink_port);
    fz_anchor(core, "b", sink_port);
    latest.set = 0;
    n_calls = 0;
    int term = open_term(), dev = -1, chunk = 0, hello_sent = 0;
    size_t off = 1;
    while (off <= size && chunk < 12) {
        const uint8_t *start = data + off, *end = data + size;
        const uint8_t *m = NULL;
        for (const uint8_t *q = start; q + 1 < end; q++)
            if (q[0] == 0 && q[1] == 1) {
                m = q;
                break;
            }
        size_t n = (size_t)((m ? m : end) - start);
        off += n + 2;
        if (chunk % 2 == 0) {
            char sid_hex[2 * RL_SESSION_ID_LEN + 1];
            if (latest.set) memcpy(sid_hex, latest.sid_hex, sizeof sid_hex);
            else memset(sid_hex, '0', sizeof sid_hex - 1), sid_hex[sizeof sid_hex - 1] = 0;
            size_t n1, n2, n3;
            uint8_t *a = fz_subst(start, n, "@T", tok_a, strlen(tok_a), &n1);
            uint8_t *b = fz_subst(a, n1, "@B", tok_b, strlen(tok_b), &n2);
            uint8_t *c = fz_subst(b, n2, "@S", sid_hex, 32, &n3);
            if (term < 0) term = open_term();
            fz_send(term, c, n3);
            free(a), free(b), free(c);
            fz_spin(core);
            maybe_callback(flags, &dev, &hello_sent);
            if ((flags & 8) && chunk == 0) {
                close(term);
                term = -1;
                fz_spin(core);
            }
        } else if (dev >= 0) {
            if ((flags & 1) && !hello_sent && latest.set) {
                uint8_t proof[32];
                const uint8_t *key = strcmp(latest.device_id, "b") == 0 ? fz_key_b : fz_key_a;
                FZ_CHECK(rl_callback_proof(&mac, key, latest.sid, latest.nonce, proof) == 0);
                size_t n1, n2;
                uint8_t *a = fz_subst(start, n, "@S", latest.sid, RL_SESSION_ID_LEN, &n1);
                uint8_t *b = fz_subst(a, n1, "@P", proof, 32, &n2);
                fz_send(dev, b, n2);
                free(a), free(b);
                hello_sent = 1;
            } else {
                fz_send(dev, start, n);
            }
            fz_spin(core);
        }
        fire_timers(flags);
        maybe_callback(flags, &dev, &hello_sent);
        if (term >= 0) fz_drain(term, NULL, 0, NULL);
        if (dev >= 0) fz_drain(dev, NULL, 0, NULL);
        fz_spin(core);
        chunk++;
        if (!m) break;
    }
    if (term >= 0 && (flags & 2)) shutdown(term, SHUT_WR);
    if (dev >= 0 && (flags & 4)) shutdown(dev, SHUT_WR);
    fz_spin(core);
    if (term >= 0) fz_drain(term, NULL, 0, NULL);
    if (dev >= 0) fz_drain(dev, NULL, 0, NULL);
    /* teardown: peers vanish, then the relay ends what is left (as rl_core_stop does) */
    if (term >= 0) close(term);
    if (dev >= 0) close(dev);
    fz_spin(core);
    rl_term_close_all(core);
    rl_session_end_all(core);
    fz_spin(core);
    FZ_CHECK(core->terms == NULL && core->n_sessions == 0 && CTR_GET(core->ctr.sessions_active) == 0);
    rl_session_record recs[64];
    while (rl_core_drain_records(core, recs, 64) > 0) {
    }
    uint8_t junk[256];
    while (recv(sink_fd, junk, sizeof junk, MSG_DONTWAIT) > 0) {
    }
    return 0;
}
