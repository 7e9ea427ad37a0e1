/*
 * request_cost.c: the relay's own instructions per small keep-alive request, for callgrind.
 *
 * The C core runs in-process on this thread (as in Tests/fuzz): a terminal and a device link
 * are socketpairs handed to the same accept callbacks the listeners use. After one wake, N
 * requests go terminal -> relay -> device and N responses back on the same connection. Run
 * it twice under callgrind with different N: the difference of the two instruction totals
 * divided by the difference of N is what one request costs in user space (the relay, libevent,
 * OpenSSL, libc), with start-up and the wake cancelled out. bench/request_cost.sh does that.
 *
 *   request_cost N       N requests, then prints how many got their 200
 */
#include "fuzz_util.h"

static const char *response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

/* Runs the loop until `fd` has something to read (bounded). */
static void spin_until_readable(rl_core *core, int fd) {
    for (int i = 0; i < 64; i++) {
        char c;
        if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return;
        event_base_loop(core->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
}

static size_t take(int fd, char *buf, size_t cap) {
    size_t kept = 0;
    fz_drain(fd, (uint8_t *)buf, cap - 1, &kept);
    buf[kept] = 0;
    return kept;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    rl_core *core = fz_core_new();
    uint16_t port;
    int sink = fz_sink(&port);
    fz_anchor(core, "cam-1", port);
    char tok[RL_TOKEN_MAX], req[512], buf[65536];
    uint8_t tid[8] = {1};
    FZ_CHECK(rl_token_mint(core->cfg.token_key, "cam-1", fz_key_a, 4000000000ull, tid, tok, sizeof tok) == 0);
    int req_len = snprintf(req, sizeof req,
                           "GET /index.html HTTP/1.1\r\nHost: cam-1.localhost\r\nAuthorization: Bearer %s\r\n"
                           "User-Agent: bench\r\nAccept: */*\r\n\r\n", tok);
    int term_relay, term;
    fz_pair(&term_relay, &term);
    rl_front_accept(NULL, term_relay, (struct sockaddr *)&fz_peer, sizeof fz_peer, core);
    fz_send(term, req, (size_t)req_len);
    fz_spin(core);
    FZ_CHECK(core->terms && core->terms->sess);
    rl_session *s = core->terms->sess;
    uint8_t hello[RL_HELLO_MAX];
    memcpy(hello, RL_HELLO_MAGIC, 4);
    hello[4] = 5;
    memcpy(hello + 5, "cam-1", 5);
    memcpy(hello + 10, s->sid, RL_SESSION_ID_LEN);
    FZ_CHECK(rl_callback_proof(&core->mac, fz_key_a, s->sid, s->nonce, hello + 10 + RL_SESSION_ID_LEN) == 0);
    int dev_relay, dev;
    fz_pair(&dev_relay, &dev);
    rl_callback_accept(NULL, dev_relay, (struct sockaddr *)&fz_peer, sizeof fz_peer, core);
    fz_send(dev, hello, 10 + RL_SESSION_ID_LEN + 32);
    long ok = 0;
    for (long i = 0; i <= n; i++) {
        if (i > 0) fz_send(term, req, (size_t)req_len);
        spin_until_readable(core, dev);
        take(dev, buf, sizeof buf); /* (the first time: the status byte, then the request) */
        fz_send(dev, response, strlen(response));
        spin_until_readable(core, term);
        take(term, buf, sizeof buf);
        if (i > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0) ok++;
    }
    printf("%ld of %ld requests answered 200\n", ok, n);
    close(term);
    close(dev);
    close(sink);
    rl_core_free(core);
    return ok == n ? 0 : 1;
}
