/*
 * fuzz_flow.c: HTTP/1.x message framing (rl_flow_find_head, rl_flow_head, rl_flow_body)
 * in both directions, driven the way front.c (terminal -> device) and session.c
 * (device -> terminal) drive it, with the byte stream arriving in pieces.
 *
 * Input: flags(1) head_mask(1) seed(4) stream...
 *   flags bit 0: 0 request direction, 1 response direction;
 *   head_mask bit i: the i-th response (mod 8) answers a HEAD request (no body);
 *   seed: where the stream is split into arrivals (xorshift).
 * Oracles:
 *   - bytes are conserved: what left `in` is exactly what reached `out`, in order;
 *   - the split stream gives exactly the same message boundaries, the same heads and the
 *     same verdict as the whole stream delivered at once;
 *   - a head that parses has a start line (a request target or a 3-digit status).
 */
#include "fuzz_util.h"
#include "flow.h"

enum { EV_HEAD = 1, EV_END = 2, EV_ERR = 3 };
#define MAX_EV 256

typedef struct run {
    size_t ev_kind[MAX_EV], ev_at[MAX_EV], ev_len[MAX_EV];
    int n_ev;
    size_t consumed;
    int msgno;
    int failed;
} run;

static void add_ev(run *r, size_t kind, size_t at, size_t len) {
    if (r->n_ev < MAX_EV) {
        r->ev_kind[r->n_ev] = kind;
        r->ev_at[r->n_ev] = at;
        r->ev_len[r->n_ev] = len;
        r->n_ev++;
    }
}

/* One pass of the relay's pump over what has arrived. */
static void pump(rl_flow *f, int response, uint8_t head_mask, struct evbuffer *in, struct evbuffer *out, run *r) {
    while (!r->failed && evbuffer_get_length(in) > 0) {
        if (f->raw || f->in_body) {
            size_t avail = evbuffer_get_length(in);
            long n = rl_flow_body(f, in, out);
            if (n < 0) {
                /* where a body error is noticed depends on the arrivals: no offset */
                add_ev(r, EV_ERR, 0, 0);
                r->failed = 1;
                return;
            }
            FZ_CHECK((size_t)n <= avail && evbuffer_get_length(in) == avail - (size_t)n);
            r->consumed += (size_t)n;
            if (f->done) {
                if (!f->raw) add_ev(r, EV_END, r->consumed, 0); /* raw: framing is over */
                rl_flow_next(f);
            }
            if (n == 0) break;
            continue;
        }
        size_t head_len = rl_flow_find_head(in);
        if (!head_len) break;
        rl_head h;
        if (response) f->skip_body = (head_mask >> (r->msgno & 7)) & 1;
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)head_len);
        if (rl_flow_head(f, response ? HTTP_RESPONSE : HTTP_REQUEST, p, head_len, &h) != 0) {
            add_ev(r, EV_ERR, r->consumed, 1);
            r->failed = 1;
            return;
        }
        /* a head that parses names a request target or a status */
        if (response) FZ_CHECK(h.status >= 100 && h.status <= 999);
        else FZ_CHECK(h.url.p != NULL && h.url.n > 0);
        FZ_CHECK(h.n_headers >= 0 && h.n_headers <= RL_MAX_HEADERS);
        for (int i = 0; i < h.n_headers; i++) {
            FZ_CHECK(h.names[i].p >= p && h.names[i].p + h.names[i].n <= p + head_len);
            FZ_CHECK(!h.values[i].p || (h.values[i].p >= p && h.values[i].p + h.values[i].n <= p + head_len));
        }
        FZ_CHECK(h.url.p == NULL || (h.url.p >= p && h.url.p + h.url.n <= p + head_len));
        add_ev(r, EV_HEAD, r->consumed, head_len);
        evbuffer_remove_buffer(in, out, head_len);
        r->consumed += head_len;
        r->msgno++;
        if (response ? f->done : (!f->in_body && !f->raw)) {
            if (f->done) add_ev(r, EV_END, r->consumed, 0);
            rl_flow_next(f);
        }
    }
}

static void feed(const uint8_t *s, size_t n, int response, uint8_t mask, uint32_t seed, run *r) {
    rl_flow f;
    memset(&f, 0, sizeof f);
    memset(r, 0, sizeof *r);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    size_t off = 0;
    while (off < n) {
        size_t piece = n - off;
        if (seed) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            piece = 1 + seed % (piece < 64 ? piece : 64);
        }
        evbuffer_add(in, s + off, piece);
        off += piece;
        pump(&f, response, mask, in, out, r);
        if (r->failed) break;
    }
    /* conservation: out holds exactly the consumed prefix of the stream */
    FZ_CHECK(evbuffer_get_length(out) == r->consumed && r->consumed <= n);
    if (r->consumed) {
        uint8_t *o = evbuffer_pullup(out, -1);
        FZ_CHECK(memcmp(o, s, r->consumed) == 0);
    }
    evbuffer_free(in);
    evbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 6 || size > 16384) return 0;
    int response = data[0] & 1;
    uint8_t mask = data[1];
    uint32_t seed = (uint32_t)data[2] << 24 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 8 | data[5];
    const uint8_t *s = data + 6;
    size_t n = size - 6;
    static run whole, split;
    feed(s, n, response, mask, 0, &whole);
    feed(s, n, response, mask, seed | 1, &split);
    FZ_CHECK(whole.failed == split.failed);
    FZ_CHECK(whole.n_ev == split.n_ev);
    for (int i = 0; i < whole.n_ev; i++)
        FZ_CHECK(whole.ev_kind[i] == split.ev_kind[i] && whole.ev_at[i] == split.ev_at[i] &&
                 whole.ev_len[i] == split.ev_len[i]);
    if (!whole.failed) FZ_CHECK(whole.consumed == split.consumed);
    return 0;
}
