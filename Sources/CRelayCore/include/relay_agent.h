/*
 * relay_agent.h: the device agent (the design's transfer module), on its own.
 *
 * The one header of librelayagent (`make agent-lib`), and the part of relay_core.h that
 * `relay agent` uses: the same agent.c runs in the Swift binary, in the standalone
 * `relay-agent` program (agent/main.c) and inside firmware that links the library.
 *
 * An agent registers a device with a relay over UDP, keeps the NAT mapping open with its
 * notifies, and answers each wake by calling the relay back over TCP (or TLS). Each link it
 * opens is either forwarded to a local TCP server (`forward`) or handed to the firmware as
 * a connected socket (`on_link`). Everything runs on the thread that calls rl_agent_run.
 *
 * Conventions: functions return 0 on success and -1 on failure, with a message written to
 * `err` (always NUL-terminated) when one is given. Plain C types only; no libevent or
 * OpenSSL type appears here. Protocol: docs/PROTOCOL.md.
 */
#ifndef RELAY_AGENT_H
#define RELAY_AGENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef RL_ID_MAX
#define RL_ID_MAX 63     /* device ID: 1..63 of [a-z0-9-], DNS label rules */
#endif
#ifndef RL_SECRET_LEN
#define RL_SECRET_LEN 32 /* device secret, shown to users as 64 hex digits */
#endif

typedef struct rl_agent rl_agent;

/* What on_status reports (the `detail` sentence says more, for a log). */
enum {
    RL_AGENT_REGISTERED = 1,  /* the relay answered the period request: reachable from now on */
    RL_AGENT_RELAY_LOST = 2,  /* notifies went unanswered: registering again */
    RL_AGENT_RELAY_BACK = 3,  /* the relay answers again after RELAY_LOST */
    RL_AGENT_RESYNC = 4,      /* the relay restarted: registering again */
    RL_AGENT_LINK_OPENED = 5, /* a terminal's link is up (forwarded, or handed to on_link) */
    RL_AGENT_LINK_FAILED = 6, /* a callback or its forward failed */
    RL_AGENT_LEFT = 7,        /* rl_agent_stop of a registered agent: LEAVE answered, or not after ~1 s */
};

typedef struct rl_agent_config {
    const char *relay;         /* relay UDP "HOST:PORT" */
    const char *device_id;     /* the ID given to `relay device add` */
    uint8_t secret[RL_SECRET_LEN]; /* the secret it printed, as bytes (rl_agent_parse_secret) */
    const char *forward;       /* local web server "HOST:PORT"; NULL or "" with on_link */
    /* TLS on the callback: the CA to verify the relay with (NULL: plain TCP), the name the
     * relay's certificate must carry (NULL: the host of `relay`), and this device's
     * certificate and key when the relay asks for one. */
    const char *tls_ca, *tls_name, *tls_cert, *tls_key;
    /* What the agent sees and the likely cause, as it happens (registered, no answer, relay
     * rejects the device, relay lost, a forward or callback that failed): called on the
     * agent's loop thread with an event name and a sentence. NULL: silent. */
    void (*log)(void *ctx, int level, const char *event, const char *text);
    void *log_ctx;
    /* Optional. Each state change above (RL_AGENT_*), on the loop thread. */
    void (*on_status)(void *ctx, int event, const char *detail);
    /* Optional: links go to the firmware instead of `forward`. Called on the loop thread
     * once the relay accepted the callback, with `fd`, a connected non-blocking stream
     * socket (AF_UNIX) carrying the terminal's bytes both ways (the agent moves them to and
     * from the relay, TLS included). The firmware owns `fd` and closes it when done (or
     * shuts down its write side for a half-close). Return 0, or -1 to refuse (the agent
     * closes `fd`). Must not block: hand `fd` to the firmware's own loop or thread. */
    int (*on_link)(void *ctx, int fd);
    void *status_ctx; /* passed to on_status and on_link */
} rl_agent_config;

/* rl_agent_config.log levels. */
enum { RL_LOG_DEBUG = 0, RL_LOG_INFO = 1, RL_LOG_NOTICE = 2, RL_LOG_WARNING = 3, RL_LOG_ERROR = 4 };

/* Agent state as seen by the control layer. */
typedef struct rl_agent_stats {
    uint32_t registered;       /* period info received for the current epoch */
    uint32_t period_s, keepalive_s;
    uint64_t notify_a_sent, notify_b_sent, conn_requests, conn_requests_rejected,
        links_opened, links_failed, resyncs, acks;
} rl_agent_stats;

/* The 64 hex digit text `relay device add` printed (surrounding blanks ignored) into its 32
 * bytes: 0, or -1 when it is anything else. */
int rl_agent_parse_secret(const char *hex, uint8_t secret[RL_SECRET_LEN]);

/* Copies what it needs from `cfg` (the strings may be freed afterwards). */
rl_agent *rl_agent_new(const rl_agent_config *cfg, char *err, size_t err_len);
/* Runs the agent loop on the calling thread until rl_agent_stop, then returns 0. The agent
 * writes to sockets a peer may have closed: the process must ignore SIGPIPE (signal(SIGPIPE,
 * SIG_IGN), as relay-agent and `relay agent` do), or the first such write ends it. */
int rl_agent_run(rl_agent *agent);
/* Safe from any thread and from a signal handler (it writes one byte to a pipe), before,
 * during or after rl_agent_run. A registered agent first tells the relay it is leaving
 * (LEAVE, re-sent until answered, at most about a second), then rl_agent_run returns. */
void rl_agent_stop(rl_agent *agent);
void rl_agent_stats_get(const rl_agent *agent, rl_agent_stats *out);
/* After rl_agent_run returned (or instead of it). Closes the links still open. */
void rl_agent_free(rl_agent *agent);

#ifdef __cplusplus
}
#endif
#endif
