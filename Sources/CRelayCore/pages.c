/*
 * pages.c: the relay's own answers as a person reads them. A terminal whose request accepts
 * text/html (a browser) gets a small styled page saying what happened and what to do;
 * anyone else the plain text line as before. The page carries only what the plain answer
 * says, so it reveals nothing more (without a valid token, known and unknown devices get
 * the same page).
 */
#include <string.h>
#include <strings.h>
#include "http.h"
#include "flow.h"

static const char *what_to_do(int status) {
    switch (status) {
    case 400: return "The address or the request is not one the relay can pass on. Check the link.";
    case 401: return "This link needs a valid access token. Ask whoever gave you the link for a new one: "
                     "tokens expire, and can be revoked.";
    case 403: return "This link's token opens another device. Use the link made for this one.";
    case 404: return "Check the address: device names are 1 to 63 letters a-z, digits and dashes.";
    case 408: return "Your browser took too long to send its request. Reload the page.";
    case 429: return "Too many requests in a short time. Wait a moment, then reload.";
    case 431: return "The request was too large (often: too many cookies). Clear this site's cookies and reload.";
    case 502: return "The device closed the connection before it answered. Reload in a moment; if it keeps "
                     "happening, the device's own web server may be down.";
    case 503: return "The device cannot be reached right now. It answers again once it is switched on and "
                     "online; reload then.";
    case 504: return "The device did not answer in time. It may be busy, asleep or badly connected: reload in "
                     "a moment.";
    default: return "Reload the page in a moment.";
    }
}

static const char *headline(int status) {
    switch (status) {
    case 401: return "This link needs a valid token";
    case 403: return "This link is for another device";
    case 404: return "No such page";
    case 429: return "Too many requests";
    case 502: return "The device hung up";
    case 503: return "The device is offline";
    case 504: return "The device did not answer";
    default: return rl_http_reason(status);
    }
}

static void add_escaped(struct evbuffer *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': evbuffer_add(b, "&lt;", 4); break;
        case '>': evbuffer_add(b, "&gt;", 4); break;
        case '&': evbuffer_add(b, "&amp;", 5); break;
        case '"': evbuffer_add(b, "&quot;", 6); break;
        case '\n': break;
        default: evbuffer_add(b, s, 1);
        }
    }
}

int rl_wants_html(const struct rl_head *h) {
    rl_span accept = rl_head_get(h, "accept");
    for (size_t i = 0; accept.p && i + 9 <= accept.n; i++)
        if (strncasecmp(accept.p + i, "text/html", 9) == 0) return 1;
    return 0;
}

void rl_http_respond_page(struct evbuffer *out, int status, const char *extra_headers, const char *text) {
    struct evbuffer *page = evbuffer_new();
    if (!page) {
        rl_http_respond(out, status, extra_headers, text);
        return;
    }
    evbuffer_add_printf(page,
                        "<!doctype html>\n<html lang=en><meta charset=utf-8>"
                        "<meta name=viewport content=\"width=device-width,initial-scale=1\">"
                        "<title>%d %s</title><style>"
                        "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}"
                        "main{max-width:34rem;margin:12vh auto;padding:2rem 2.2rem;background:#fff;border-radius:12px;"
                        "box-shadow:0 2px 12px #0001}h1{font-size:1.3rem;margin:0 0 .6rem}"
                        ".code{color:#8a93a6;font-weight:400}p{margin:.5rem 0}.what{color:#4a5366}"
                        "</style><main><h1>%s <span class=code>%d</span></h1><p>",
                        status, rl_http_reason(status), headline(status), status);
    add_escaped(page, text ? text : "");
    evbuffer_add_printf(page, "</p><p class=what>%s</p></main>\n", what_to_do(status));
    size_t n = evbuffer_get_length(page);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                        status, rl_http_reason(status), n, extra_headers ? extra_headers : "");
    evbuffer_add_buffer(out, page);
    evbuffer_free(page);
}
