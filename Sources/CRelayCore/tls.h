/*
 * tls.h: OpenSSL contexts for the relay's two TLS legs and the agent.
 *
 * Terminal leg: one server context per certificate; the first is the default, and SNI
 * switches a handshake to the certificate whose names match the requested host (exact, or
 * a "*.domain" wildcard for one label). The alternates hang off the default context as
 * ex_data, so they live exactly as long as OpenSSL holds the default one (a reload frees
 * the old set once its last handshake is done).
 * Device leg: the first certificate; with a device CA it asks for a client certificate and
 * leaves judging it to the callback (rl_tls_device_identity), so that a bad certificate
 * gets the terminal a specific error instead of a failed handshake nobody can attribute.
 */
#ifndef RL_TLS_H
#define RL_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

typedef struct rl_tls {
    SSL_CTX *terminal;     /* default server context for terminals (SNI picks others) */
    SSL_CTX *device;       /* server context for device callbacks */
    int device_certs;      /* 1: devices must present a certificate for their ID */
} rl_tls;

/* Loads `n` certificate chain / key file pairs (PEM) and an optional device CA. */
rl_tls *rl_tls_new(const char *const *certs, const char *const *keys, size_t n, const char *device_ca,
                   char *err, size_t err_len);
void rl_tls_free(rl_tls *t);

/* After the handshake of a device callback: NULL when the device's certificate verified and
 * names `device_id`, else why not (for the terminal's error). */
const char *rl_tls_device_identity(SSL *ssl, const char *device_id);

/* The agent's client context: verifies the relay against `ca` (PEM), and presents
 * `cert`/`key` when given. */
SSL_CTX *rl_tls_client_ctx(const char *ca, const char *cert, const char *key, char *err, size_t err_len);

#endif
