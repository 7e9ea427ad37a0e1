/* http.c: the relay's own HTTP answers (refusals, redirects, health). */
#include <stdio.h>
#include <string.h>
#include "http.h"

const char *rl_http_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 302: return "Found";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

void rl_http_respond(struct evbuffer *out, int status, const char *extra_headers, const char *body) {
    size_t body_len = body ? strlen(body) : 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: %zu\r\n"
                        "Cache-Control: no-store\r\n"
                        "Connection: close\r\n"
                        "%s"
                        "\r\n",
                        status, rl_http_reason(status), body_len, extra_headers ? extra_headers : "");
    if (body_len) evbuffer_add(out, body, body_len);
}
