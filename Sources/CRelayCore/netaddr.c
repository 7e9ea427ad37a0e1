/* netaddr.c: address text parsing and the anchor address form. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "relay_core.h"
#include "netaddr.h"
#include "util.h"

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

void rl_sock_set_opts(int fd, int opts) {
    int one = 1;
    if (opts & RL_SOCK_REUSEPORT) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    /* Bound before keepalived gives this node the address, kept while another node holds it:
     * traffic arrives the moment the address is on an interface here. IP_FREEBIND also
     * covers IPv6 sockets. */
    if (opts & RL_LISTEN_FREEBIND) setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
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

int rl_v6_family(const uint8_t a[16]) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, mapped, 12) == 0 ? AF_INET : AF_INET6;
}

int rl_addr_is_private(const uint8_t a[16]) {
    static const uint8_t loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (rl_v6_family(a) == AF_INET) {
        const uint8_t *v4 = a + 12;
        return v4[0] == 10 || v4[0] == 127 || (v4[0] == 172 && (v4[1] & 0xf0) == 16) ||
               (v4[0] == 192 && v4[1] == 168) || (v4[0] == 100 && (v4[1] & 0xc0) == 64);
    }
    return (a[0] & 0xfe) == 0xfc || memcmp(a, loop6, 16) == 0;
}
