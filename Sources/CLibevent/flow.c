/* flow.c: see flow.h. */
#include <limits.h>
#include <string.h>
#include <strings.h>
#include "internal.h"
#include "flow.h"

typedef struct parse_ctx {
    rl_flow *flow;
    rl_head *head; /* NULL while counting body bytes */
    int last_was_value;
} parse_ctx;

static int on_url(http_parser *p, const char *at, size_t n) {
    parse_ctx *c = p->data;
    if (!c->head) return 0;
    if (!c->head->url.p) c->head->url.p = at;
    c->head->url.n += n;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
    parse_ctx *c = p->data;
    rl_head *h = c->head;
    if (!h) return 0;
    if (c->last_was_value || h->n_headers == 0) {
        if (h->n_headers == RL_MAX_HEADERS) {
            h->overflow = 1;
            return 0;
        }
        h->names[h->n_headers].p = at;
        h->names[h->n_headers].n = 0;
        h->values[h->n_headers].p = NULL;
        h->values[h->n_headers].n = 0;
        h->n_headers++;
    }
    if (!h->overflow) h->names[h->n_headers - 1].n += n;
    c->last_was_value = 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
    parse_ctx *c = p->data;
    rl_head *h = c->head;
    if (!h || h->overflow || h->n_headers == 0) return 0;
    rl_span *v = &h->values[h->n_headers - 1];
    if (!v->p) v->p = at;
    v->n += n;
    c->last_was_value = 1;
    return 0;
}

static int on_headers_complete(http_parser *p) {
    parse_ctx *c = p->data;
    return c->flow->skip_body ? 1 : 0; /* 1: a response to HEAD has no body */
}

static int on_message_complete(http_parser *p) {
    parse_ctx *c = p->data;
    c->flow->done = 1;
    http_parser_pause(p, 1); /* stop exactly at the message's end */
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* RFC 9112 6.3: a response without Content-Length or chunked framing (and that may have a
 * body) ends when the connection closes. (http-parser exports this test but does not
 * declare it.) */
static int needs_eof(const http_parser *p, int skip_body) {
    if (p->status_code / 100 == 1 || p->status_code == 204 || p->status_code == 304 || skip_body) return 0;
    if ((p->flags & F_CHUNKED) || p->content_length != ULLONG_MAX) return 0;
    return 1;
}

int rl_flow_head(rl_flow *f, enum http_parser_type type, const char *p, size_t n, rl_head *h) {
    parse_ctx c = {.flow = f, .head = h};
    memset(h, 0, sizeof *h);
    http_parser_init(&f->parser, type);
    f->parser.data = &c;
    f->done = 0;
    size_t got = http_parser_execute(&f->parser, &settings, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&f->parser);
    f->parser.data = NULL;
    if ((e != HPE_OK && e != HPE_PAUSED) || got != n || h->overflow) return -1;
    /* http-parser skips empty lines before a start line, so a "head" of bare CRLFs parses
     * as nothing; the next message would then be framed as its body (and a response would
     * reach the terminal without its start line). A head must have a start line. */
    if (type == HTTP_REQUEST ? !h->url.p : f->parser.status_code < 100) return -1;
    h->method = f->parser.method;
    h->status = f->parser.status_code;
    h->major = f->parser.http_major;
    h->minor = f->parser.http_minor;
    if (f->parser.upgrade || (type == HTTP_RESPONSE && h->status == 101)) {
        f->raw = 1;
    } else if (type == HTTP_RESPONSE && !f->done && needs_eof(&f->parser, f->skip_body)) {
        f->raw = 1; /* body ends when the device closes: no more framing on this link */
    }
    f->in_body = !f->done && !f->raw;
    return 0;
}

long rl_flow_body(rl_flow *f, struct evbuffer *in, struct evbuffer *out) {
    size_t avail = evbuffer_get_length(in);
    if (f->raw) {
        evbuffer_add_buffer(out, in);
        return (long)avail;
    }
    if (!f->in_body || avail == 0) return 0;
    parse_ctx c = {.flow = f, .head = NULL};
    f->parser.data = &c;
    size_t used = 0;
    struct evbuffer_iovec vec[16];
    while (used < avail && !f->done) {
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, used, EVBUFFER_PTR_SET);
        int nvec = evbuffer_peek(in, -1, &pos, vec, 16);
        if (nvec <= 0) break;
        if (nvec > 16) nvec = 16;
        for (int i = 0; i < nvec && !f->done; i++) {
            size_t got = http_parser_execute(&f->parser, &settings, vec[i].iov_base, vec[i].iov_len);
            enum http_errno e = HTTP_PARSER_ERRNO(&f->parser);
            if (e != HPE_OK && e != HPE_PAUSED) {
                f->parser.data = NULL;
                return -1;
            }
            used += got;
            if (got < vec[i].iov_len && !f->done) {
                f->parser.data = NULL;
                return -1;
            }
        }
    }
    f->parser.data = NULL;
    if (used) evbuffer_remove_buffer(in, out, used);
    if (f->done) f->in_body = 0;
    return (long)used;
}

void rl_flow_next(rl_flow *f) {
    f->done = 0;
    f->in_body = 0;
    f->skip_body = 0;
}

size_t rl_flow_find_head(struct evbuffer *buf) {
    struct evbuffer_ptr p = evbuffer_search(buf, "\r\n\r\n", 4, NULL);
    return p.pos < 0 ? 0 : (size_t)p.pos + 4;
}

int rl_span_ieq(rl_span s, const char *lit) {
    size_t n = strlen(lit);
    return s.p && s.n == n && strncasecmp(s.p, lit, n) == 0;
}

rl_span rl_head_get(const rl_head *h, const char *name) {
    for (int i = 0; i < h->n_headers; i++)
        if (rl_span_ieq(h->names[i], name)) return h->values[i];
    rl_span none = {NULL, 0};
    return none;
}
