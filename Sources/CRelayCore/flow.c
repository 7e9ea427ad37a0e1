/* flow.c: see flow.h. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "flow.h"

typedef struct parse_ctx {
    rl_flow *flow;
    rl_head *head; /* NULL while counting body bytes */
    int last_was_value;
} parse_ctx;

/* States of the chunked request body check (chunk_step). */
enum { CK_SIZE0, CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_TRAILER, CK_TNAME, CK_TVALUE,
       CK_TLF, CK_END_LF, CK_DONE };

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

/* ---- request heads: one reading only (RFC 9112) ----
 *
 * http-parser 2.9 is lenient where a device's server may not be: it joins obs-fold lines
 * without their CRLF, takes bare LF as a line end, and lets a few odd bytes through. A head
 * the relay and the device could read differently is refused with 400 before anything of it
 * is forwarded; the relay then writes the head again from what it parsed. */

static int is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A field value's byte: visible ASCII, obs-text, SP or HTAB. No NUL, CR, LF or other control. */
static int is_value_byte(unsigned char c) {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* The request line: method SP target SP HTTP/1.0 or HTTP/1.1, single spaces, the target
 * visible ASCII without '#'. */
static const char *check_request_line(const char *p, const char *end) {
    const char *q = p;
    while (q < end && is_tchar((unsigned char)*q)) q++;
    if (q == p || q == end || *q != ' ') return "malformed request line";
    const char *target = ++q;
    while (q < end && *q > 0x20 && *q < 0x7f && *q != '#') q++;
    if (q == target || q == end || *q != ' ') return "malformed request target";
    q++;
    if (end - q != 8 || memcmp(q, "HTTP/1.", 7) != 0 || (q[7] != '0' && q[7] != '1'))
        return "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)";
    return NULL;
}

static const char *check_field_line(const char *p, const char *end) {
    if (*p == ' ' || *p == '\t') return "obs-fold (a header line continued on the next) is not accepted";
    const char *q = p;
    while (q < end && is_tchar((unsigned char)*q)) q++;
    if (q < end && q > p && (*q == ' ' || *q == '\t')) return "no whitespace allowed before a header's colon";
    if (q == end || *q != ':' || q == p) return "malformed header name";
    for (q++; q < end; q++)
        if (!is_value_byte((unsigned char)*q)) return "control character in a header value";
    return NULL;
}

/* Every line ends in CRLF (no bare CR or LF), the request line and each field line have
 * exactly the RFC 9112 shape. One empty line before the request line is allowed (2.2). */
static const char *check_request_bytes(const char *p, size_t n) {
    const char *end = p + n;
    if (n >= 2 && p[0] == '\r' && p[1] == '\n') p += 2;
    int first = 1;
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p)), *lf = memchr(p, '\n', (size_t)(end - p));
        if (!cr || !lf || lf != cr + 1) return "a line not ending in CRLF (bare CR or LF)";
        if (cr == p) return first ? "empty request line" : (cr + 2 == end ? NULL : "bytes after the head's end");
        const char *why = first ? check_request_line(p, cr) : check_field_line(p, cr);
        if (why) return why;
        first = 0;
        p = cr + 2;
    }
    return "head does not end with an empty line";
}

rl_span rl_span_trim(rl_span s) {
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t')) s.n--;
    return s;
}

static int count_header(const rl_head *h, const char *name, rl_span *last) {
    int n = 0;
    for (int i = 0; i < h->n_headers; i++)
        if (rl_span_ieq(h->names[i], name)) {
            n++;
            if (last) *last = rl_span_trim(h->values[i]);
        }
    return n;
}

int rl_authority_valid(rl_span s) {
    size_t i = 0;
    if (s.n && s.p[0] == '[') {
        for (i = 1; i < s.n && s.p[i] != ']'; i++)
            if (!strchr("0123456789abcdefABCDEF:.", s.p[i])) return 0;
        if (i == s.n || i < 3) return 0;
        i++;
    } else {
        for (; i < s.n && s.p[i] != ':'; i++) {
            char c = s.p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                  c == '_'))
                return 0;
        }
        if (i == 0 || i > 255) return 0;
    }
    if (i == s.n) return 1;
    if (s.p[i] != ':' || s.n - i - 1 > 5) return 0;
    for (i++; i < s.n; i++)
        if (s.p[i] < '0' || s.p[i] > '9') return 0;
    return 1;
}

static int all_digits(rl_span s) {
    if (!s.p || s.n == 0 || s.n > 18) return 0;
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] < '0' || s.p[i] > '9') return 0;
    return 1;
}

/* Fields whose doubles or spellings would let two parsers disagree on routing, credentials
 * or where the body ends (RFC 9112 3.2, 6.1, 6.3). */
static const char *check_request_fields(const rl_head *h) {
    rl_span host = {NULL, 0}, cl = {NULL, 0}, te = {NULL, 0};
    int n_host = count_header(h, "host", &host);
    if (n_host > 1) return "more than one Host header";
    if (n_host == 1 && host.n && !rl_authority_valid(host)) return "Host is not a host[:port]";
    if (count_header(h, "authorization", NULL) > 1) return "more than one Authorization header";
    int n_cl = count_header(h, "content-length", &cl), n_te = count_header(h, "transfer-encoding", &te);
    if (n_cl > 1) return "more than one Content-Length header";
    if (n_cl && !all_digits(cl)) return "Content-Length is not a decimal number";
    if (n_te && n_cl) return "both Content-Length and Transfer-Encoding";
    if (n_te > 1 || (n_te && !rl_span_ieq(te, "chunked"))) return "Transfer-Encoding other than a single chunked";
    if (n_te && h->minor == 0) return "Transfer-Encoding in an HTTP/1.0 request";
    if (h->method == HTTP_CONNECT) return "CONNECT is not relayed";
    return NULL;
}

/* The body framing http-parser will follow is the one the fields above say, and so the one a
 * device reads: chunked exactly when Transfer-Encoding is, else the Content-Length, else none. */
static const char *check_request_framing(const rl_head *h, const http_parser *p, int done) {
    rl_span cl = {NULL, 0}, te = {NULL, 0};
    int n_cl = count_header(h, "content-length", &cl), n_te = count_header(h, "transfer-encoding", &te);
    int chunked = (p->flags & F_CHUNKED) != 0;
    if (chunked != (n_te == 1)) return "Transfer-Encoding not read as chunked";
    unsigned long long sent = n_cl ? strtoull(cl.p, NULL, 10) : 0;
    unsigned long long framed = done || p->content_length == ULLONG_MAX ? 0 : (unsigned long long)p->content_length;
    if (!chunked && sent != framed) return "Content-Length not read as sent";
    return NULL;
}

int rl_flow_head(rl_flow *f, enum http_parser_type type, const char *p, size_t n, rl_head *h) {
    parse_ctx c = {.flow = f, .head = h};
    memset(h, 0, sizeof *h);
    if (type == HTTP_REQUEST && (h->error = check_request_bytes(p, n)) != NULL) return -1;
    http_parser_init(&f->parser, type);
    f->parser.data = &c;
    f->done = 0;
    size_t got = http_parser_execute(&f->parser, &settings, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&f->parser);
    f->parser.data = NULL;
    h->error = "malformed HTTP message";
    if ((e != HPE_OK && e != HPE_PAUSED) || got != n) return -1;
    if (h->overflow) {
        h->error = "too many header lines";
        return -1;
    }
    /* http-parser skips empty lines before a start line, so a "head" of bare CRLFs parses
     * as nothing; the next message would then be framed as its body (and a response would
     * reach the terminal without its start line). A head must have a start line. */
    if (type == HTTP_REQUEST ? !h->url.p : f->parser.status_code < 100) return -1;
    h->method = f->parser.method;
    h->status = f->parser.status_code;
    h->major = f->parser.http_major;
    h->minor = f->parser.http_minor;
    h->keep_alive = http_should_keep_alive(&f->parser);
    h->error = NULL;
    if (type == HTTP_REQUEST) {
        if ((h->error = check_request_fields(h)) != NULL) return -1;
        if ((h->error = check_request_framing(h, &f->parser, f->done)) != NULL) return -1;
        /* An Upgrade request is framed like any other: its own body (Content-Length,
         * chunked or none) ends it. The stream turns opaque only on the device's 101. */
        h->upgrade = f->parser.upgrade;
    } else if (h->status == 101) {
        f->raw = 1;
    } else if (!f->done && needs_eof(&f->parser, f->skip_body)) {
        f->raw = 1; /* body ends when the device closes: no more framing on this link */
    }
    f->in_body = !f->done && !f->raw;
    f->chunk_check = type == HTTP_REQUEST && f->in_body && (f->parser.flags & F_CHUNKED);
    f->chunk_state = CK_SIZE0;
    f->chunk_left = 0;
    f->chunk_digits = 0;
    return 0;
}

/* ---- chunked request bodies: strictly RFC 9112 7.1 ----
 *
 * A request body passes to the device as it came, so its chunk framing must read the same
 * to both. http-parser 2.9 (as Debian builds it) takes a bare LF inside a chunk extension,
 * any two bytes after a chunk's data, bare LF and obs-fold in trailers. Every byte it
 * consumes is checked here against the strict grammar before it is forwarded; the first
 * byte off it ends the connection, so the device only ever gets a prefix of a valid body. */


static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One byte of the chunk framing (data bytes are skipped in bulk by chunk_scan). */
static int chunk_step(rl_flow *f, unsigned char c) {
    switch (f->chunk_state) {
    case CK_SIZE0:
    case CK_SIZE:
        if (hex_value(c) >= 0 && f->chunk_digits < 16) {
            f->chunk_left = f->chunk_left * 16 + (uint64_t)hex_value(c);
            f->chunk_digits++;
            f->chunk_state = CK_SIZE;
        } else if (f->chunk_state == CK_SIZE && (c == ';' || c == '\r')) {
            f->chunk_state = c == ';' ? CK_EXT : CK_SIZE_LF; /* no whitespace around the size */
        } else {
            return -1;
        }
        return 0;
    case CK_EXT:
        if (c == '\r') f->chunk_state = CK_SIZE_LF;
        else if (!is_value_byte(c)) return -1;
        return 0;
    case CK_SIZE_LF:
        if (c != '\n') return -1;
        f->chunk_state = f->chunk_left ? CK_DATA : CK_TRAILER;
        f->chunk_digits = 0;
        return 0;
    case CK_DATA_CR: if (c != '\r') return -1; f->chunk_state = CK_DATA_LF; return 0;
    case CK_DATA_LF: if (c != '\n') return -1; f->chunk_state = CK_SIZE0; return 0;
    case CK_TRAILER:
        if (c == '\r') f->chunk_state = CK_END_LF;
        else if (is_tchar(c)) f->chunk_state = CK_TNAME; /* SP or HTAB here would be obs-fold */
        else return -1;
        return 0;
    case CK_TNAME:
        if (c == ':') f->chunk_state = CK_TVALUE;
        else if (!is_tchar(c)) return -1;
        return 0;
    case CK_TVALUE:
        if (c == '\r') f->chunk_state = CK_TLF;
        else if (!is_value_byte(c)) return -1;
        return 0;
    case CK_TLF: if (c != '\n') return -1; f->chunk_state = CK_TRAILER; return 0;
    case CK_END_LF: if (c != '\n') return -1; f->chunk_state = CK_DONE; return 0;
    default: return -1; /* CK_DONE: http-parser stops at the message's end */
    }
}

static int chunk_scan(rl_flow *f, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (f->chunk_state == CK_DATA) {
            size_t take = n - i < f->chunk_left ? n - i : (size_t)f->chunk_left;
            f->chunk_left -= take;
            i += take - 1;
            if (!f->chunk_left) f->chunk_state = CK_DATA_CR;
            continue;
        }
        if (chunk_step(f, p[i]) != 0) return -1;
    }
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
            /* Checked before anything of it is forwarded: nothing leaves this call on error. */
            if (f->chunk_check && (chunk_scan(f, vec[i].iov_base, got) != 0 || (f->done && f->chunk_state != CK_DONE))) {
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
    f->chunk_check = 0;
}

size_t rl_flow_find_head(struct evbuffer *buf) {
    struct evbuffer_ptr p = evbuffer_search(buf, "\r\n\r\n", 4, NULL);
    return p.pos < 0 ? 0 : (size_t)p.pos + 4;
}

rl_span rl_head_get(const rl_head *h, const char *name) {
    for (int i = 0; i < h->n_headers; i++)
        if (rl_span_ieq(h->names[i], name)) return h->values[i];
    rl_span none = {NULL, 0};
    return none;
}
