/* rewrite.c: see rewrite.h. */
#include <string.h>
#include <strings.h>
#include "rewrite.h"
#include "route.h"

static const char TOKEN_NAME[] = "relay_token";

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A query parameter's name as the device's framework reads it: percent-decoded, so that
 * relay%5Ftoken is ours too. */
static int param_name_is_token(const char *p, size_t n) {
    char name[sizeof TOKEN_NAME];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%' && i + 2 < n && hex_digit(p[i + 1]) >= 0 && hex_digit(p[i + 2]) >= 0) {
            c = (char)(hex_digit(p[i + 1]) * 16 + hex_digit(p[i + 2]));
            i += 2;
        }
        if (k == sizeof name - 1) return 0;
        name[k++] = c;
    }
    return k == sizeof TOKEN_NAME - 1 && memcmp(name, TOKEN_NAME, k) == 0;
}

/* Splits `target` at its '?'. */
static void split_query(rl_span target, rl_span *path, rl_span *query) {
    const char *q = memchr(target.p, '?', target.n);
    path->p = target.p;
    path->n = q ? (size_t)(q - target.p) : target.n;
    query->p = q ? q + 1 : NULL;
    query->n = q ? target.n - path->n - 1 : 0;
}

/* Calls `each` for every '&'-separated parameter of `query` until it returns nonzero. */
typedef int (*param_fn)(const char *p, size_t n, size_t name_len, void *arg);
static void each_param(rl_span query, param_fn each, void *arg) {
    const char *p = query.p, *end = query.p + query.n;
    while (p && p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (each(p, (size_t)(stop - p), eq ? (size_t)(eq - p) : (size_t)(stop - p), arg)) return;
        if (!amp) return;
        p = amp + 1;
    }
}

static int find_token_param(const char *p, size_t n, size_t name_len, void *arg) {
    if (!param_name_is_token(p, name_len)) return 0;
    rl_span *v = arg;
    v->p = name_len < n ? p + name_len + 1 : p + n;
    v->n = name_len < n ? n - name_len - 1 : 0;
    return 1;
}

rl_span rl_query_token(rl_span target) {
    rl_span path, query, v = {NULL, 0};
    split_query(target, &path, &query);
    if (query.p) each_param(query, find_token_param, &v);
    return v;
}

typedef struct kept_params { struct evbuffer *out; int n; } kept_params;

static int keep_other_param(const char *p, size_t n, size_t name_len, void *arg) {
    kept_params *k = arg;
    if (n == 0 || param_name_is_token(p, name_len)) return 0;
    evbuffer_add(k->out, k->n++ ? "&" : "?", 1);
    evbuffer_add(k->out, p, n);
    return 0;
}

static void add_query_without_tokens(struct evbuffer *out, rl_span query) {
    kept_params k = {out, 0};
    if (query.p) each_param(query, keep_other_param, &k);
}

void rl_add_target_without_tokens(struct evbuffer *out, rl_span target) {
    rl_span path, query;
    split_query(target, &path, &query);
    evbuffer_add(out, path.p, path.n);
    add_query_without_tokens(out, query);
}

void rl_add_same_origin_path(struct evbuffer *out, rl_span target) {
    rl_span path, query;
    split_query(target, &path, &query);
    size_t lead = 0;
    while (lead < path.n && (path.p[lead] == '/' || path.p[lead] == '\\')) lead++;
    evbuffer_add(out, "/", 1);
    evbuffer_add(out, path.p + lead, path.n - lead);
    add_query_without_tokens(out, query);
}

/* ---- cookies ---- */

typedef int (*cookie_fn)(rl_span pair, rl_span name, rl_span value, void *arg);

/* Calls `each` for every ';'-separated cookie pair of a Cookie value, trimmed. */
static void each_cookie(rl_span header, cookie_fn each, void *arg) {
    const char *p = header.p, *end = header.p + header.n;
    while (p && p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        rl_span pair = rl_span_trim((rl_span){p, (size_t)((semi ? semi : end) - p)});
        const char *eq = pair.n ? memchr(pair.p, '=', pair.n) : NULL;
        rl_span name = rl_span_trim((rl_span){pair.p, eq ? (size_t)(eq - pair.p) : pair.n});
        rl_span value = eq ? rl_span_trim((rl_span){eq + 1, (size_t)(pair.p + pair.n - eq - 1)}) : (rl_span){NULL, 0};
        if (pair.n && each(pair, name, value, arg)) return;
        p = semi ? semi + 1 : end;
    }
}

/* Cookie names are matched without regard to case: stripping more never leaks ours. */
static int cookie_is_token(rl_span name) {
    return rl_span_ieq(name, TOKEN_NAME);
}

static int find_token_cookie(rl_span pair, rl_span name, rl_span value, void *arg) {
    if (!cookie_is_token(name)) return 0;
    *(rl_span *)arg = value.p ? value : (rl_span){pair.p + pair.n, 0};
    return 1;
}

rl_span rl_cookie_token(const rl_head *h) {
    rl_span v = {NULL, 0};
    for (int i = 0; i < h->n_headers && !v.p; i++)
        if (rl_span_ieq(h->names[i], "cookie") && h->values[i].p) each_cookie(h->values[i], find_token_cookie, &v);
    return v;
}

typedef struct kept_cookies { struct evbuffer *out; rl_span header_name; int n; } kept_cookies;

static int keep_other_cookie(rl_span pair, rl_span name, rl_span value, void *arg) {
    kept_cookies *k = arg;
    if (cookie_is_token(name)) return 0;
    if (k->n++ == 0) {
        evbuffer_add(k->out, k->header_name.p, k->header_name.n);
        evbuffer_add(k->out, ": ", 2);
    } else {
        evbuffer_add(k->out, "; ", 2);
    }
    evbuffer_add(k->out, pair.p, pair.n);
    return 0;
}

void rl_add_cookie_without_tokens(struct evbuffer *out, rl_span name, rl_span value) {
    kept_cookies k = {out, name, 0};
    if (value.p) each_cookie(value, keep_other_cookie, &k);
    if (k.n) evbuffer_add(out, "\r\n", 2);
}

/* ---- Authorization ---- */

int rl_bearer(rl_span authorization, rl_span *credential) {
    rl_span a = rl_span_trim(authorization);
    if (!a.p || a.n < 6 || strncasecmp(a.p, "Bearer", 6) != 0 || (a.n > 6 && a.p[6] != ' ' && a.p[6] != '\t'))
        return 0;
    *credential = rl_span_trim((rl_span){a.p + 6, a.n - 6});
    return 1;
}

/* ---- forwarding headers ---- */

static const char *const RELAY_OWNED[] = {
    "x-relay-session", "x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host",
    "x-forwarded-prefix", "x-forwarded-port", "x-real-ip",
};

int rl_relay_owned_header(rl_span name) {
    char first = name.n ? (char)(name.p[0] | 0x20) : 0;
    if (first != 'x' && first != 'f') return 0; /* every name above starts so: most headers stop here */
    for (size_t i = 0; i < sizeof RELAY_OWNED / sizeof RELAY_OWNED[0]; i++)
        if (rl_span_ieq(name, RELAY_OWNED[i])) return 1;
    return 0;
}

static int is_tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 7239 4: forwarded-element *( OWS "," OWS forwarded-element ), each element pairs
 * token "=" ( token / quoted-string ) joined by ";". A terminal's value that is not exactly
 * that (an open quote, say) could swallow the element the relay appends: it is dropped. */
static int forwarded_well_formed(rl_span v) {
    const char *p = v.p, *end = v.p + v.n;
    for (;;) {
        const char *name = p;
        while (p < end && is_tchar(*p)) p++;
        if (p == name || p == end || *p++ != '=') return 0;
        if (p < end && *p == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\' && ++p == end) return 0;
            if (p++ == end) return 0;
        } else {
            const char *value = p;
            while (p < end && is_tchar(*p)) p++;
            if (p == value) return 0;
        }
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p == end) return 1;
        if (*p != ';' && *p != ',') return 0;
        for (p++; p < end && (*p == ' ' || *p == '\t' || *p == ','); p++) {}
    }
}

/* Every instance of a list header, in order, joined with ", " (empty ones skipped; for
 * Forwarded, malformed ones too). */
static int add_joined(struct evbuffer *out, const rl_head *h, const char *name) {
    int n = 0, forwarded = strcmp(name, "forwarded") == 0;
    for (int i = 0; i < h->n_headers; i++) {
        rl_span v = rl_span_trim(h->values[i]);
        if (!rl_span_ieq(h->names[i], name) || !v.n || (forwarded && !forwarded_well_formed(v))) continue;
        if (n++) evbuffer_add(out, ", ", 2);
        evbuffer_add(out, v.p, v.n);
    }
    return n;
}

/* Literal pieces, added without printf: this runs for every forwarded request. */
#define ADD_LIT(out, lit) evbuffer_add((out), (lit), sizeof(lit) - 1)

static void add_str(struct evbuffer *out, const char *s) {
    evbuffer_add(out, s, strlen(s));
}

void rl_add_forwarding_headers(struct evbuffer *out, const rl_head *h, const char *peer, int tls, rl_span host,
                               const char *prefix_device) {
    const char *proto = tls ? "https" : "http";
    int v6 = strchr(peer, ':') != NULL;
    /* X-Forwarded-For and Forwarded are chains: the relay appends its hop (RFC 7239 4). */
    ADD_LIT(out, "X-Forwarded-For: ");
    if (add_joined(out, h, "x-forwarded-for")) ADD_LIT(out, ", ");
    add_str(out, peer);
    ADD_LIT(out, "\r\nForwarded: ");
    if (add_joined(out, h, "forwarded")) ADD_LIT(out, ", ");
    if (v6) ADD_LIT(out, "for=\"[");
    else ADD_LIT(out, "for=");
    add_str(out, peer);
    if (v6) ADD_LIT(out, "]\"");
    ADD_LIT(out, ";proto=");
    add_str(out, proto);
    if (host.n) {
        ADD_LIT(out, ";host=\"");
        evbuffer_add(out, host.p, host.n);
        ADD_LIT(out, "\"");
    }
    /* The rest describe the relay's own hop only: the terminal's are never passed on. */
    ADD_LIT(out, "\r\nX-Forwarded-Proto: ");
    add_str(out, proto);
    if (host.n) {
        ADD_LIT(out, "\r\nX-Forwarded-Host: ");
        evbuffer_add(out, host.p, host.n);
    }
    if (prefix_device) {
        ADD_LIT(out, "\r\nX-Forwarded-Prefix: /d/");
        add_str(out, prefix_device);
    }
    ADD_LIT(out, "\r\nX-Real-IP: ");
    add_str(out, peer);
    ADD_LIT(out, "\r\n");
}

/* Writes the request head as the device must see it: origin-form target without the prefix,
 * none of the relay's credentials, the relay's forwarding headers. */
void rl_rewrite_request_head(struct evbuffer *out, const rl_head *h, const struct rl_route *r, const char *peer, int tls) {
    rl_span path = r->target, cred;
    if (r->path_routed) {
        path.p += r->prefix_len;
        path.n -= r->prefix_len;
    }
    add_str(out, http_method_str((enum http_method)h->method));
    ADD_LIT(out, " ");
    if (path.n == 0 || path.p[0] != '/') ADD_LIT(out, "/");
    rl_add_target_without_tokens(out, path);
    char version[] = " HTTP/1.1\r\n"; /* flow.c admits HTTP/1.0 and 1.1 only */
    version[8] = (char)('0' + h->minor);
    ADD_LIT(out, version);
    if (r->absolute_form) {
        ADD_LIT(out, "Host: ");
        evbuffer_add(out, r->host.p, r->host.n);
        ADD_LIT(out, "\r\n");
    }
    for (int i = 0; i < h->n_headers; i++) {
        rl_span n = h->names[i], v = h->values[i];
        if (rl_relay_owned_header(n)) continue;
        if (r->absolute_form && rl_span_ieq(n, "host")) continue; /* the target's authority, above */
        /* Bearer is the relay's scheme: a request carrying one was checked by it (it comes first). */
        if (rl_span_ieq(n, "authorization") && rl_bearer(v, &cred)) continue;
        if (rl_span_ieq(n, "cookie")) {
            rl_add_cookie_without_tokens(out, n, v);
            continue;
        }
        evbuffer_add(out, n.p, n.n);
        evbuffer_add(out, ": ", 2);
        if (v.p) evbuffer_add(out, v.p, v.n);
        evbuffer_add(out, "\r\n", 2);
    }
    rl_add_forwarding_headers(out, h, peer, tls, r->host, r->path_routed ? r->device : NULL);
    evbuffer_add(out, "\r\n", 2);
}
