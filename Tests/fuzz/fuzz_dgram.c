/*
 * fuzz_dgram.c: datagrams from the internet, through rl_dgram_parse and the relay's
 * whole handling path (rl_udp_handle: registry lookup, tag check, epoch, replay, anchor
 * update, PERIOD_INFO and RESYNC answers), with no socket read.
 *
 * Input: a sequence of records  ctl(1) len(1) bytes(len). For each record:
 *   ctl bit 0: if the frame parses, re-sign it with the named device's key (so the fuzzer
 *              gets past the HMAC and reaches the state machine behind it);
 *   ctl bit 1: for notifies, put the relay's current epoch in;
 *   ctl bit 2: report the datagram as truncated (MSG_TRUNC);
 *   ctl bits 3-5: source port variant, bits 6-7: source address variant (NAT re-mapping).
 * Oracles: every datagram moves exactly one outcome counter; the parse result is
 * self-consistent and rebuilds to the same bytes; anchors only ever name a real socket; a
 * datagram whose tag does not verify changes no device, and one that changes a device
 * raised its counter (so no datagram is acted on twice).
 */
#include "fuzz_util.h"

static rl_core *core;
static rl_mac mac;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    core = fz_core_new();
    FZ_CHECK(rl_mac_init(&mac) == 0);
    return 0;
}

static uint64_t outcomes(void) {
    const struct rl_counters *c = &core->ctr;
    uint64_t n = CTR_GET(c->notify_a_ok) + CTR_GET(c->notify_b_ok) + CTR_GET(c->period_requests) + CTR_GET(c->leaves);
    for (int k = 0; k < RL_DK_N; k++)
        for (int r = 0; r < RL_DR_N; r++) n += CTR_GET(c->dgram_drop[k][r]);
    return n;
}

static const uint8_t *key_for(const char *id, size_t n) {
    if (n == 5 && memcmp(id, "cam-1", 5) == 0) return fz_key_a;
    if (n == 1 && id[0] == 'b') return fz_key_b;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Each input starts from devices that never notified. */
    const char *ids[] = {"cam-1", "b"};
    for (int i = 0; i < 2; i++) {
        rl_dev *d = fz_dev(core, ids[i]);
        FZ_CHECK(d);
        d->counter = 0;
        d->sock = RL_NO_SOCK;
        d->last_access = 0;
        d->flags = 0;
        d->port = 0;
        memset(d->addr, 0, sizeof d->addr);
    }
    size_t off = 0;
    while (off + 2 <= size) {
        uint8_t ctl = data[off], len = data[off + 1];
        off += 2;
        if (len > size - off) len = (uint8_t)(size - off);
        uint8_t buf[256];
        memcpy(buf, data + off, len);
        off += len;

        rl_dgram d;
        int parsed = rl_dgram_parse(buf, len, &d) == 0;
        if (parsed) {
            FZ_CHECK(rl_dgram_len(d.type, d.id_len) == len);
            FZ_CHECK(d.body + d.body_len + RL_TAG_LEN == buf + len && d.tag == buf + len - RL_TAG_LEN);
            FZ_CHECK(rl_device_id_valid(d.id, d.id_len));
            const uint8_t *k = key_for(d.id, d.id_len);
            if ((ctl & 2) && (d.type == RL_T_NOTIFY_A || d.type == RL_T_NOTIFY_B || d.type == RL_T_LEAVE))
                rl_put32(buf + 4 + d.id_len, core->epoch);
            if ((ctl & 1) && k) {
                uint8_t again[256];
                size_t n = rl_dgram_build(&mac, again, sizeof again, d.type, d.id, d.id_len, d.body, d.body_len, k);
                FZ_CHECK(n == len && memcmp(again, buf, len - RL_TAG_LEN) == 0);
                memcpy(buf, again, n);
                FZ_CHECK(rl_dgram_verify(&mac, k, buf, len));
            }
        }
        struct sockaddr_in from = {.sin_family = AF_INET};
        from.sin_port = htons((uint16_t)(40000 + ((ctl >> 3) & 7)));
        from.sin_addr.s_addr = htonl(0x7f000001u + ((ctl >> 6) & 3));
        uint64_t before = outcomes();
        const uint8_t *k = parsed ? key_for(d.id, d.id_len) : NULL;
        int genuine = k && !(ctl & 4) && rl_dgram_verify(&mac, k, buf, len);
        rl_dev was[2];
        for (int i = 0; i < 2; i++) was[i] = *fz_dev(core, ids[i]);
        rl_udp_handle(core, &core->udp[0], buf, len, (ctl & 4) != 0, (struct sockaddr *)&from, sizeof from);
        FZ_CHECK(outcomes() == before + 1);
        for (int i = 0; i < 2; i++) {
            rl_dev *dv = fz_dev(core, ids[i]);
            int changed = memcmp(dv, &was[i], sizeof *dv) != 0;
            FZ_CHECK(!changed || genuine);
            FZ_CHECK(!changed || dv->counter > was[i].counter);
            FZ_CHECK(dv->sock == RL_NO_SOCK || dv->sock < core->n_udp);
            FZ_CHECK(dv->sock != RL_NO_SOCK || dv->last_access == 0); /* alive only with an anchor */
        }
    }
    return 0;
}
