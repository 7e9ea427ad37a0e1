/* tls.c: see tls.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "tls.h"
#include "util.h"

#define RL_TLS_MAX_CERTS 16
#define RL_TLS_MAX_NAMES 32

/* The certificates SNI can choose from, owned by the default context (ex_data). */
typedef struct rl_sni {
    int n;
    SSL_CTX *ctx[RL_TLS_MAX_CERTS];
    char *names[RL_TLS_MAX_CERTS][RL_TLS_MAX_NAMES];
} rl_sni;

static int sni_index = -1;
static pthread_once_t sni_once = PTHREAD_ONCE_INIT;

static void sni_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
    rl_sni *sni = ptr;
    if (!sni) return;
    for (int i = 0; i < sni->n; i++) {
        for (int j = 0; j < RL_TLS_MAX_NAMES; j++) free(sni->names[i][j]);
        if (i > 0) SSL_CTX_free(sni->ctx[i]); /* [0] is the parent itself */
    }
    free(sni);
}

static void sni_init(void) {
    sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, sni_free);
}

static void set_ssl_err(char *err, size_t err_len, const char *what, const char *file) {
    unsigned long e = ERR_peek_last_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    rl_set_err(err, err_len, "%s %s: %s", what, file, e ? buf : "unknown error");
    ERR_clear_error();
}

static SSL_CTX *server_ctx(const char *cert, const char *key, char *err, size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        set_ssl_err(err, err_len, "TLS context for", cert);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        set_ssl_err(err, err_len, "cannot load the certificate", cert);
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        set_ssl_err(err, err_len, "cannot load the private key", key);
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        rl_set_err(err, err_len, "the key %s does not belong to the certificate %s", key, cert);
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* DNS names of the certificate, or its CN when it has none. */
static void cert_names(SSL_CTX *ctx, char **names) {
    X509 *x = SSL_CTX_get0_certificate(ctx);
    int n = 0;
    GENERAL_NAMES *gens = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && n < RL_TLS_MAX_NAMES; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS) continue;
        const char *s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        names[n++] = strndup(s, (size_t)ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(gens);
    if (n == 0 && x) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0) names[0] = strdup(cn);
    }
}

static int name_matches(const char *pattern, const char *host) {
    if (strcasecmp(pattern, host) == 0) return 1;
    if (pattern[0] != '*' || pattern[1] != '.') return 0;
    const char *dot = strchr(host, '.'); /* the wildcard covers exactly one label */
    return dot && dot != host && strcasecmp(pattern + 1, dot) == 0;
}

static int on_servername(SSL *ssl, int *alert, void *arg) {
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    rl_sni *sni = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sni_index);
    if (!host || !sni) return SSL_TLSEXT_ERR_OK;
    for (int i = 0; i < sni->n; i++)
        for (int j = 0; j < RL_TLS_MAX_NAMES && sni->names[i][j]; j++)
            if (name_matches(sni->names[i][j], host)) {
                if (i > 0) SSL_set_SSL_CTX(ssl, sni->ctx[i]);
                return SSL_TLSEXT_ERR_OK;
            }
    return SSL_TLSEXT_ERR_OK; /* no match: the default certificate */
}

/* Asks for a certificate and accepts any, so that the callback can say what was wrong. */
static int accept_any(int ok, X509_STORE_CTX *store) {
    return 1;
}

rl_tls *rl_tls_new(const char *const *certs, const char *const *keys, size_t n, const char *device_ca,
                   char *err, size_t err_len) {
    pthread_once(&sni_once, sni_init);
    if (n < 1 || n > RL_TLS_MAX_CERTS) {
        rl_set_err(err, err_len, "between 1 and %d certificates", RL_TLS_MAX_CERTS);
        return NULL;
    }
    rl_tls *t = calloc(1, sizeof *t);
    rl_sni *sni = calloc(1, sizeof *sni);
    if (!t || !sni) {
        free(t);
        free(sni);
        rl_set_err(err, err_len, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        sni->ctx[i] = server_ctx(certs[i], keys[i], err, err_len);
        if (!sni->ctx[i]) goto fail;
        sni->n++;
        cert_names(sni->ctx[i], sni->names[i]);
    }
    t->terminal = sni->ctx[0];
    SSL_CTX_set_tlsext_servername_callback(t->terminal, on_servername);
    SSL_CTX_set_ex_data(t->terminal, sni_index, sni);
    sni = NULL; /* owned by t->terminal now */

    t->device = server_ctx(certs[0], keys[0], err, err_len);
    if (!t->device) goto fail;
    if (device_ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(device_ca);
        if (!names || SSL_CTX_load_verify_locations(t->device, device_ca, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            set_ssl_err(err, err_len, "cannot load the device CA", device_ca);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(t->device, names);
        SSL_CTX_set_verify(t->device, SSL_VERIFY_PEER, accept_any);
        t->device_certs = 1;
    }
    return t;
fail:
    if (sni) {
        for (int i = 0; i < sni->n; i++) SSL_CTX_free(sni->ctx[i]);
        for (int i = 0; i < RL_TLS_MAX_CERTS; i++)
            for (int j = 0; j < RL_TLS_MAX_NAMES; j++) free(sni->names[i][j]);
        free(sni);
    }
    rl_tls_free(t);
    return NULL;
}

void rl_tls_free(rl_tls *t) {
    if (!t) return;
    SSL_CTX_free(t->terminal); /* its ex_data frees the SNI alternates */
    SSL_CTX_free(t->device);
    free(t);
}

const char *rl_tls_device_identity(SSL *ssl, const char *device_id) {
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (!peer) return "it presented no certificate";
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) return X509_verify_cert_error_string(v);
    /* The device ID is the certificate's DNS name (or CN when it has none). */
    if (X509_check_host(peer, device_id, 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) != 1)
        return "its certificate is for another device";
    return NULL;
}

SSL_CTX *rl_tls_client_ctx(const char *ca, const char *cert, const char *key, char *err, size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        set_ssl_err(err, err_len, "TLS context for", ca);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        set_ssl_err(err, err_len, "cannot load the CA", ca);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cert && key &&
        (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        set_ssl_err(err, err_len, "cannot load the device certificate or key", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
