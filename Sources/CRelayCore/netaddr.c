/* netaddr.c: address text parsing, listener setup, and the anchor address form. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

void rl_set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || !err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

int rl_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t err_len) {
    char host[256];
    const char *port_s;
    if (!text || !*text) {
        rl_set_err(err, err_len, "empty address");
        return -1;
    }
    if (text[0] == '[') {
        const char *close_b = strchr(text, ']');
        if (!close_b || close_b[1] != ':' || (size_t)(close_b - text - 1) >= sizeof host) {
            rl_set_err(err, err_len, "address '%s' is not [IPV6]:PORT", text);
            return -1;
        }
        memcpy(host, text + 1, (size_t)(close_b - text - 1));
        host[close_b - text - 1] = 0;
        port_s = close_b + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host) {
            rl_set_err(err, err_len, "address '%s' is not HOST:PORT", text);
            return -1;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = 0;
        port_s = colon + 1;
    }
    char *end;
    long port = strtol(port_s, &end, 10);
    if (!*port_s || *end || port < 0 || port > 65535) {
        rl_set_err(err, err_len, "address '%s' has no valid port (0-65535)", text);
        return -1;
    }
    if (strcmp(host, "*") == 0 || host[0] == 0) strcpy(host, "0.0.0.0");
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = AI_NUMERICSERV;
    char port_buf[8];
    snprintf(port_buf, sizeof port_buf, "%ld", port);
    int rc = getaddrinfo(host, port_buf, &hints, &res);
    if (rc != 0 || !res) {
        rl_set_err(err, err_len, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int rl_listen_tcp(rl_core *core, rl_listener *l, const char *addr, evconnlistener_cb cb, char *err, size_t err_len) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (rl_parse_addr(addr, &ss, &len, err, err_len) != 0) return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rl_set_err(err, err_len, "socket for %s: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* accepted sockets inherit it */
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) {
        rl_set_err(err, err_len, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    l->family = ss.ss_family;
    l->lev = evconnlistener_new(core->base, cb, core, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l->lev) {
        rl_set_err(err, err_len, "cannot watch listener %s", addr);
        close(fd);
        return -1;
    }
    evconnlistener_set_error_cb(l->lev, rl_listener_error);
    return 0;
}

void rl_addr_to_v6(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port) {
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        memcpy(addr, &s6->sin6_addr, 16);
        *port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memset(addr, 0, 10);
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &s4->sin_addr, 4);
        *port = ntohs(s4->sin_port);
    }
}

void rl_v6_to_sockaddr(const uint8_t addr[16], uint16_t port, int family, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        memcpy(&s4->sin_addr, addr + 12, 4);
        *len = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        memcpy(&s6->sin6_addr, addr, 16);
        *len = sizeof *s6;
    }
}
