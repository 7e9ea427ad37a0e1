/*
 * agent-example: firmware embedding librelayagent. It gives the agent the device's identity
 * and key, asks for each link as a socket (on_link, no local port forwarded), answers every
 * HTTP request on it from its own code, and prints the status callbacks.
 *
 *   agent-example RELAY_HOST:UDP_PORT DEVICE_ID   (the secret's 64 hex digits on stdin)
 *
 * Build: make agent (links .build-agent/librelayagent.a). Tests/integration/test_agent_c.py
 * runs it against a real relay and fetches its page through the relay.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "relay_agent.h"

static rl_agent *agent;

static void on_signal(int sig) {
    rl_agent_stop(agent); /* async-signal-safe */
}

static void on_status(void *ctx, int event, const char *detail) {
    static const char *names[] = {"", "registered", "relay lost", "relay back", "relay restarted",
                                  "link opened", "link failed", "left"};
    printf("status: %s (%s)\n", event > 0 && event <= RL_AGENT_LEFT ? names[event] : "?", detail);
    fflush(stdout);
}

/* One link: a terminal's HTTP/1.1 requests, answered until it closes. A real firmware would
 * hand the socket to its own web server; this one has a page of its own. */
static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    char buf[8192];
    size_t have = 0;
    unsigned served = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0) break;
        have += (size_t)n;
        buf[have] = 0;
        char *end;
        while ((end = strstr(buf, "\r\n\r\n"))) {
            served++;
            char body[128], head[256];
            int bl = snprintf(body, sizeof body, "hello from the firmware, request %u on this link\n", served);
            int hl = snprintf(head, sizeof head,
                              "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", bl);
            if (write(fd, head, (size_t)hl) != hl || write(fd, body, (size_t)bl) != bl) goto done;
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, end + 4, have - used + 1);
            have -= used;
        }
        if (have == sizeof buf - 1) break; /* a head too long */
    }
done:
    close(fd);
    return NULL;
}

static int on_link(void *ctx, int fd) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int rc = pthread_create(&t, &attr, serve, (void *)(intptr_t)fd);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1; /* -1: the agent closes fd */
}

static void on_log(void *ctx, int level, const char *event, const char *text) {
    fprintf(stderr, "log %d %s: %s\n", level, event, text);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s RELAY_HOST:UDP_PORT DEVICE_ID < secret\n", argv[0]);
        return 2;
    }
    char hex[256] = "";
    if (!fgets(hex, sizeof hex, stdin)) hex[0] = 0;
    rl_agent_config cfg = {0};
    if (rl_agent_parse_secret(hex, cfg.secret) != 0) {
        fprintf(stderr, "the secret must be 64 hex digits\n");
        return 2;
    }
    memset(hex, 0, sizeof hex);
    cfg.relay = argv[1];
    cfg.device_id = argv[2];
    cfg.on_link = on_link;
    cfg.on_status = on_status;
    cfg.log = on_log;
    char err[256];
    agent = rl_agent_new(&cfg, err, sizeof err);
    memset(cfg.secret, 0, sizeof cfg.secret);
    if (!agent) {
        fprintf(stderr, "rl_agent_new: %s\n", err);
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    rl_agent_run(agent);
    rl_agent_stats st;
    rl_agent_stats_get(agent, &st);
    printf("stopped: %llu links opened\n", (unsigned long long)st.links_opened);
    rl_agent_free(agent);
    return 0;
}
