/*
 * flow.h: HTTP/1.x message framing on a byte stream, with http-parser.
 *
 * The relay rewrites request heads (routing prefix, credentials) and adds one header to
 * response heads; everything else (bodies, chunk framing) passes through unchanged and
 * uncopied. A flow tracks where each message ends so that the next head is found, and
 * notices Upgrade / 101 / close-delimited bodies, after which the stream is opaque.
 */
#ifndef RL_FLOW_H
#define RL_FLOW_H

#include <stddef.h>
#include <event2/buffer.h>
#include <http_parser.h>

#define RL_MAX_HEADERS 100

typedef struct rl_span { const char *p; size_t n; } rl_span;

typedef struct rl_head {
    rl_span url;
    rl_span names[RL_MAX_HEADERS], values[RL_MAX_HEADERS];
    int n_headers;
    int overflow;            /* more headers than RL_MAX_HEADERS */
    int method;              /* enum http_method (requests) */
    int status;              /* responses */
    int major, minor;
    int keep_alive;          /* http_should_keep_alive: no Connection: close, not a plain 1.0 */
    int upgrade;             /* a request asking to switch protocols (Upgrade + Connection) */
    const char *error;       /* why rl_flow_head refused the head, for the 400 */
} rl_head;

/* Which direction's HTTP framing is being tracked. */
typedef struct rl_flow {
    http_parser parser;
    int raw;          /* opaque byte stream from here on (Upgrade, close-delimited) */
    int in_body;      /* head seen; counting body bytes of the current message */
    int done;         /* set by on_message_complete */
    int skip_body;    /* response to a HEAD request */
    int chunk_check;  /* a chunked request body: its framing is checked byte by byte (flow.c) */
    int chunk_state;  /* where in the chunk grammar the next byte is */
    uint64_t chunk_left;  /* data bytes left in the current chunk (its size while reading it) */
    int chunk_digits; /* hex digits of the current chunk size so far */
} rl_flow;


/* Parses the complete head `p[0..n)` (ending in CRLF CRLF) at a message boundary.
 * 0, or -1 when it is not valid HTTP/1.x (`h->error` says why). A request head is held to
 * RFC 9112 strictly (see check_request_bytes, check_request_fields), so that the relay
 * and the device cannot read it differently. A request never makes the flow raw: only the
 * device's 101 to it does (rl_term_response_head). */
int rl_flow_head(struct rl_flow *f, enum http_parser_type type, const char *p, size_t n, rl_head *h);
/* Moves the bytes of the current message body from `in` to `out` (or all of them once the
 * flow is raw). Returns bytes moved, or -1 on a framing error. */
long rl_flow_body(struct rl_flow *f, struct evbuffer *in, struct evbuffer *out);
/* Resets a flow to expect a new head (after a message completed). */
void rl_flow_next(struct rl_flow *f);
/* Finds the end of a head at the start of `buf`; returns its length (CRLF CRLF included),
 * or 0 when not yet complete. */
size_t rl_flow_find_head(struct evbuffer *buf);
/* Case-insensitive header lookup; NULL span when absent. */
rl_span rl_head_get(const rl_head *h, const char *name);
/* `s` equals `lit` ignoring ASCII case; `lit` is in lower case (header names, tokens). Inline:
 * every request head's every header is compared with a few names. */
static inline int rl_span_ieq(rl_span s, const char *lit) {
    size_t n = __builtin_strlen(lit);
    if (!s.p || s.n != n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s.p[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != lit[i]) return 0;
    }
    return 1;
}
/* `s` without leading and trailing spaces and tabs. */
rl_span rl_span_trim(rl_span s);
/* A Host value or an absolute-form authority: reg-name or [IPv6], optional :port. */
int rl_authority_valid(rl_span s);

#endif
