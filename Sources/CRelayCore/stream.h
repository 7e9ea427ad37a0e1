/*
 * stream.h: a non-blocking TCP socket with an input and an output evbuffer.
 *
 * Why not a bufferevent: libevent 2.1 socket bufferevents read at most 4 KiB per read(2).
 * A stream reads up to RL_STREAM_READ bytes per call straight into reserved evbuffer
 * space, and writes with writev over the output chains, so bytes moved between two
 * streams with evbuffer_add_buffer are never copied in user space.
 *
 * A stream may carry TLS (rl_stream_start_tls): the same events, with plaintext in `in` and
 * `out`; OpenSSL reads and writes the socket itself. Plain streams keep the path above.
 */
#ifndef RL_STREAM_H
#define RL_STREAM_H

#include <event2/event.h>
#include <event2/buffer.h>
#include <openssl/ssl.h>

#define RL_STREAM_READ (256 * 1024)     /* bytes per read(2) at most */
#define RL_STREAM_READ_FIRST (16 * 1024) /* a new stream's first reads: most messages are small */
#define RL_STREAM_HIGH (1024 * 1024)    /* stop reading the peer above this much queued output */

enum rl_stream_event {
    RL_STREAM_READ_READY = 1, /* new bytes in `in` */
    RL_STREAM_DRAINED = 2,    /* `out` went below the high watermark (or empty) */
    RL_STREAM_EOF = 3,        /* peer closed its side; `in` may still hold bytes */
    RL_STREAM_ERROR = 4,      /* reset or other error; close it */
    RL_STREAM_CONNECTED = 5,  /* an outgoing connect finished */
};

typedef struct rl_stream rl_stream;
typedef void (*rl_stream_cb)(rl_stream *s, int event, void *arg);

struct rl_stream {
    int fd;
    struct event *rev, *wev;
    struct evbuffer *in, *out;
    rl_stream_cb cb;
    void *arg;
    unsigned reading : 1, eof : 1, connecting : 1, shut_after_flush : 1, out_was_high : 1;
    unsigned tls_write_wants_read : 1, tls_read_wants_write : 1, write_failed : 1, writing : 1;
    unsigned read_size; /* grows while reads fill it, up to RL_STREAM_READ */
    int error;          /* errno of the failure behind RL_STREAM_ERROR, when the kernel gave one */
    unsigned long long bytes_read, bytes_written;
    SSL *ssl; /* NULL for plain TCP */
};

/* Wraps a connected (or connecting, with `connecting` = 1) non-blocking socket. Outgoing
 * sockets get TCP_NODELAY here; accepted ones inherit it from their listener. NULL when out
 * of memory, and then `fd` is still the caller's to close. */
rl_stream *rl_stream_new(struct event_base *base, int fd, int connecting, rl_stream_cb cb, void *arg);
void rl_stream_set_cb(rl_stream *s, rl_stream_cb cb, void *arg);
/* No more events for its owner (which is ending); rl_stream_free still closes it. */
void rl_stream_mute(rl_stream *s);
void rl_stream_read(rl_stream *s, int on);
/* Writes whatever `out` holds: at once on a plain stream (the socket usually takes it all,
 * and no write event is armed), the rest when the socket is writable. RL_STREAM_DRAINED
 * still comes from the loop, never from inside this call. */
void rl_stream_flush(rl_stream *s);
/* Half-closes once `out` is empty. */
void rl_stream_shutdown_after_flush(rl_stream *s);
int rl_stream_out_high(const rl_stream *s);
/* Closes the socket and frees everything. */
void rl_stream_free(rl_stream *s);
/* Turns on TLS before any byte moved: as the server (`server` = 1) or as a client that
 * sends `sni` and verifies the peer against it when the context verifies. 0 or -1. */
int rl_stream_start_tls(rl_stream *s, SSL_CTX *ctx, int server, const char *sni);
/* Non-blocking TCP connect; returns the fd or -1. */
int rl_tcp_connect(const struct sockaddr *sa, socklen_t len);

#endif
