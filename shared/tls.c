/* TLS 1.2 configurations and the connection engine over memory: the same
 * code serves the server (driven by its libuv loop) and clients (driven by
 * shared/tls_client.c or a load generator). See shared/tls.h. */
#include "shared/tls.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/oid.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <uv.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/pki_mbedtls.h"

#define DEFAULT_TICKET_LIFETIME_S (24 * 3600)

/* TLS 1.2 record types, for recognising what a peer sent first. */
#define RECORD_ALERT     0x15
#define RECORD_HANDSHAKE 0x16

static const int cipher_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    0,
};
static const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE};
static const int sig_hashes[] = {MBEDTLS_MD_SHA256, MBEDTLS_MD_NONE};

/* The settings both ends share: TLS 1.2 only, our suites, curve and hash. */
static int config_common(mbedtls_ssl_config *conf, int endpoint)
{
    int ret = mbedtls_ssl_config_defaults(conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot set up TLS: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    mbedtls_ssl_conf_rng(conf, mmr_pki_random, NULL);
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, cipher_suites);
    mbedtls_ssl_conf_curves(conf, curves);
    mbedtls_ssl_conf_sig_hashes(conf, sig_hashes);
    mbedtls_ssl_conf_cert_profile(conf, &mmr_pki_profile);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    return 0;
}

/* Loads our own certificate chain and key, checking that they belong together
 * and that the certificate is fit for kind. */
static int load_identity(mbedtls_x509_crt *chain, mbedtls_pk_context *pk, const char *chain_pem,
                         const struct mmr_key *key, enum mmr_cert_kind kind, const char *what)
{
    if (!key || !mmr_key_has_private(key))
        return mmr_err_set(MMR_EINVAL, "%s needs its private key", what);
    int rc = mmr_pki_parse_chain(chain, chain_pem, what);
    if (rc < 0)
        return rc;
    rc = mmr_pki_key_copy(key, pk);
    if (rc < 0)
        return rc;
    struct mmr_cert_info info;
    mmr_pki_crt_info(chain, &info);
    if (mbedtls_pk_check_pair(&chain->pk, pk) != 0)
        return mmr_err_set(MMR_EINVAL, "the key does not belong to %s '%s'", what, info.cn);
    const char *oid = MBEDTLS_OID_CLIENT_AUTH;
    size_t oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
    if (kind == MMR_CERT_SERVER) {
        oid = MBEDTLS_OID_SERVER_AUTH;
        oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH);
    }
    if (chain->ca_istrue ||
        mbedtls_x509_crt_check_key_usage(chain, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0 ||
        mbedtls_x509_crt_check_extended_key_usage(chain, oid, oid_len) != 0)
        return mmr_err_set(MMR_EINVAL, "%s '%s' is not issued for this use", what, info.cn);
    return 0;
}

/* ---- server configuration --------------------------------------------------- */

struct mmr_tls_server {
    mbedtls_ssl_config conf;
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
    mbedtls_x509_crt client_ca;
    mbedtls_ssl_ticket_context tickets;
};

void mmr_tls_server_free(struct mmr_tls_server *srv)
{
    if (!srv)
        return;
    mbedtls_ssl_config_free(&srv->conf);
    mbedtls_x509_crt_free(&srv->chain);
    mbedtls_pk_free(&srv->key);
    mbedtls_x509_crt_free(&srv->client_ca);
    mbedtls_ssl_ticket_free(&srv->tickets);
    free(srv);
}

int mmr_tls_server_new(const struct mmr_tls_server_opts *opts, struct mmr_tls_server **out)
{
    *out = NULL;
    if (!opts->cert_chain_pem)
        return mmr_err_set(MMR_EINVAL, "the TLS server needs a certificate chain");
    struct mmr_tls_server *srv = mmr_calloc(1, sizeof(*srv));
    mbedtls_ssl_config_init(&srv->conf);
    mbedtls_x509_crt_init(&srv->chain);
    mbedtls_pk_init(&srv->key);
    mbedtls_x509_crt_init(&srv->client_ca);
    mbedtls_ssl_ticket_init(&srv->tickets);

    int rc = load_identity(&srv->chain, &srv->key, opts->cert_chain_pem, opts->key, MMR_CERT_SERVER,
                           "server certificate");
    if (rc < 0)
        goto fail;
    rc = config_common(&srv->conf, MBEDTLS_SSL_IS_SERVER);
    if (rc < 0)
        goto fail;
    int ret = mbedtls_ssl_conf_own_cert(&srv->conf, &srv->chain, &srv->key);
    int authmode = MBEDTLS_SSL_VERIFY_NONE;
    switch (opts->client_auth) {
    case MMR_TLS_CLIENT_CERT_NONE:
        break;
    case MMR_TLS_CLIENT_CERT_OPTIONAL:
        authmode = MBEDTLS_SSL_VERIFY_OPTIONAL;
        break;
    case MMR_TLS_CLIENT_CERT_REQUIRED:
        authmode = MBEDTLS_SSL_VERIFY_REQUIRED;
        break;
    default:
        rc = mmr_err_set(MMR_EINVAL, "unknown client certificate mode %d", opts->client_auth);
        goto fail;
    }
    if (authmode != MBEDTLS_SSL_VERIFY_NONE) {
        if (!opts->client_ca_pem) {
            rc = mmr_err_set(MMR_EINVAL, "client certificates need the CA that issues them");
            goto fail;
        }
        rc = mmr_pki_parse_chain(&srv->client_ca, opts->client_ca_pem, "client CA certificates");
        if (rc < 0)
            goto fail;
        mbedtls_ssl_conf_ca_chain(&srv->conf, &srv->client_ca, NULL);
    }
    mbedtls_ssl_conf_authmode(&srv->conf, authmode);
    uint32_t lifetime =
        opts->ticket_lifetime_s ? opts->ticket_lifetime_s : DEFAULT_TICKET_LIFETIME_S;
    /* Ticket keys rotate every lifetime; tickets under the previous key stay
     * valid until they expire. */
    if (ret == 0)
        ret = mbedtls_ssl_ticket_setup(&srv->tickets, mmr_pki_random, NULL,
                                       MBEDTLS_CIPHER_AES_256_GCM, lifetime);
    if (ret != 0) {
        char err[128];
        rc = mmr_err_set(MMR_EIO, "cannot set up the TLS server: %s",
                         mmr_pki_strerror(ret, err, sizeof(err)));
        goto fail;
    }
    mbedtls_ssl_conf_session_tickets_cb(&srv->conf, mbedtls_ssl_ticket_write,
                                        mbedtls_ssl_ticket_parse, &srv->tickets);
    *out = srv;
    return 0;
fail:
    mmr_tls_server_free(srv);
    return rc;
}

/* ---- client configuration --------------------------------------------------- */

struct mmr_tls_client {
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca; /* trust by CA (empty with a pin) */
    bool has_ca;
    uint8_t pin[MMR_SHA256_LEN];
    char pin_hex[MMR_SHA256_HEX_SIZE];
    mbedtls_x509_crt chain; /* our certificate, if any */
    mbedtls_pk_context key;
    uv_mutex_t lock; /* guards the saved session */
    mbedtls_ssl_session session;
    bool has_session;
    char session_host[256];
};

void mmr_tls_client_free(struct mmr_tls_client *cli)
{
    if (!cli)
        return;
    mbedtls_ssl_config_free(&cli->conf);
    mbedtls_x509_crt_free(&cli->ca);
    mbedtls_x509_crt_free(&cli->chain);
    mbedtls_pk_free(&cli->key);
    mbedtls_ssl_session_free(&cli->session);
    uv_mutex_destroy(&cli->lock);
    free(cli);
}

static int parse_pin(const char *text, uint8_t pin[MMR_SHA256_LEN])
{
    if (strncmp(text, "sha256:", 7) == 0)
        text += 7;
    if (mmr_hex_decode(text, pin, MMR_SHA256_LEN) < 0)
        return mmr_err_wrap(MMR_EINVAL, "CA pin must be a SHA-256 fingerprint");
    return 0;
}

int mmr_tls_client_new(const struct mmr_tls_client_opts *opts, struct mmr_tls_client **out)
{
    *out = NULL;
    if (!opts->ca_pem == !opts->pin_sha256)
        return mmr_err_set(MMR_EINVAL, "a TLS client trusts either a CA or a CA pin (one of them)");
    if (!opts->cert_chain_pem != !opts->key)
        return mmr_err_set(MMR_EINVAL, "a client certificate needs its key, and a key its "
                                       "certificate");
    struct mmr_tls_client *cli = mmr_calloc(1, sizeof(*cli));
    mbedtls_ssl_config_init(&cli->conf);
    mbedtls_x509_crt_init(&cli->ca);
    mbedtls_x509_crt_init(&cli->chain);
    mbedtls_pk_init(&cli->key);
    mbedtls_ssl_session_init(&cli->session);
    if (uv_mutex_init(&cli->lock) != 0) {
        free(cli);
        return mmr_err_set(MMR_EIO, "cannot create a mutex");
    }
    int rc;
    if (opts->ca_pem) {
        rc = mmr_pki_parse_chain(&cli->ca, opts->ca_pem, "trusted CA certificates");
        cli->has_ca = true;
    } else {
        rc = parse_pin(opts->pin_sha256, cli->pin);
        mmr_hex_encode(cli->pin, sizeof(cli->pin), cli->pin_hex);
    }
    if (rc == 0)
        rc = config_common(&cli->conf, MBEDTLS_SSL_IS_CLIENT);
    if (rc < 0)
        goto fail;
    /* The server is verified once the handshake is done (see verify_server):
     * mbedTLS 2.28 cannot match IP addresses nor pins itself. */
    mbedtls_ssl_conf_authmode(&cli->conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_session_tickets(&cli->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    if (opts->cert_chain_pem) {
        rc = load_identity(&cli->chain, &cli->key, opts->cert_chain_pem, opts->key, MMR_CERT_CLIENT,
                           "client certificate");
        if (rc < 0)
            goto fail;
        int ret = mbedtls_ssl_conf_own_cert(&cli->conf, &cli->chain, &cli->key);
        if (ret != 0) {
            char err[128];
            rc = mmr_err_set(MMR_EIO, "cannot use the client certificate: %s",
                             mmr_pki_strerror(ret, err, sizeof(err)));
            goto fail;
        }
    }
    *out = cli;
    return 0;
fail:
    mmr_tls_client_free(cli);
    return rc;
}

void mmr_tls_client_forget_session(struct mmr_tls_client *cli)
{
    uv_mutex_lock(&cli->lock);
    mbedtls_ssl_session_free(&cli->session);
    mbedtls_ssl_session_init(&cli->session);
    cli->has_session = false;
    uv_mutex_unlock(&cli->lock);
}

static void save_session(struct mmr_tls_client *cli, const mbedtls_ssl_context *ssl,
                         const char *host)
{
    uv_mutex_lock(&cli->lock);
    mbedtls_ssl_session_free(&cli->session);
    mbedtls_ssl_session_init(&cli->session);
    cli->has_session = strlen(host) < sizeof(cli->session_host) &&
                       mbedtls_ssl_get_session(ssl, &cli->session) == 0;
    if (cli->has_session)
        snprintf(cli->session_host, sizeof(cli->session_host), "%s", host);
    uv_mutex_unlock(&cli->lock);
}

/* ---- the connection engine ---------------------------------------------------- */

struct mmr_tls_conn {
    mbedtls_ssl_context ssl;
    struct mmr_tls_client *cli; /* NULL on the server side */
    char *host;                 /* client side: the name the server must carry */
    const char *peer;           /* "client" or "server", for messages */

    /* Ciphertext fed but not yet consumed: in[off..len). */
    unsigned char *in;
    size_t in_off, in_len, in_cap;
    struct mmr_buf out; /* ciphertext to send */

    bool first_checked;   /* the peer's first byte looked like TLS */
    bool saw_certificate; /* the handshake went through the certificate step */
    bool done;
    bool resumed;
    bool peer_eof;
    bool closing;

    int fail_rc; /* sticky failure and its message */
    char fail_msg[512];

    struct mmr_pki_trace trace; /* how the peer's chain verified */
    int peer_rc;                /* mmr_tls_conn_peer_cert's verdict and message */
    char peer_msg[512];
    bool peer_present;
    struct mmr_cert_info peer_info;
    uint8_t *pinned_der; /* client with a pin: the pinned CA certificate */
    size_t pinned_len;
};

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct mmr_tls_conn *c = ctx;
    if (len > INT_MAX)
        len = INT_MAX;
    mmr_buf_append(&c->out, buf, len);
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct mmr_tls_conn *c = ctx;
    size_t avail = c->in_len - c->in_off;
    if (avail == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = len < avail ? len : avail;
    if (n > INT_MAX)
        n = INT_MAX;
    memcpy(buf, c->in + c->in_off, n);
    c->in_off += n;
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
        if (c->in_cap > 2 * MMR_TLS_MAX_RECORD) {
            /* An idle connection should not keep a burst's buffer. */
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    }
    return (int)n;
}

/* Records a failure: every later call returns it again. */
static int fail(struct mmr_tls_conn *c, int rc)
{
    c->fail_rc = rc;
    snprintf(c->fail_msg, sizeof(c->fail_msg), "%s", mmr_err_msg());
    return rc;
}

static int failed(const struct mmr_tls_conn *c)
{
    return mmr_err_set(c->fail_rc, "%s", c->fail_msg);
}

static const struct {
    int code;
    const char *name;
} alerts[] = {
    {MBEDTLS_SSL_ALERT_MSG_CLOSE_NOTIFY, "close notify"},
    {MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE, "unexpected message"},
    {MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC, "bad record MAC"},
    {MBEDTLS_SSL_ALERT_MSG_RECORD_OVERFLOW, "record overflow"},
    {MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE, "handshake failure"},
    {MBEDTLS_SSL_ALERT_MSG_NO_CERT, "no certificate"},
    {MBEDTLS_SSL_ALERT_MSG_BAD_CERT, "bad certificate"},
    {MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT, "unsupported certificate"},
    {MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED, "certificate revoked"},
    {MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED, "certificate expired"},
    {MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN, "certificate unknown"},
    {MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER, "illegal parameter"},
    {MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA, "unknown CA"},
    {MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED, "access denied"},
    {MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR, "decode error"},
    {MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR, "decrypt error"},
    {MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION, "protocol version"},
    {MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY, "insufficient security"},
    {MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR, "internal error"},
    {MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME, "unrecognized name"},
};

static const char *alert_name(int alert)
{
    for (size_t i = 0; i < sizeof(alerts) / sizeof(alerts[0]); i++)
        if (alerts[i].code == alert)
            return alerts[i].name;
    return "unknown alert";
}

/* Explains an mbedTLS error in terms of what the peer did. */
static int fail_tls(struct mmr_tls_conn *c, int ret)
{
    char err[128];
    mmr_pki_strerror(ret, err, sizeof(err));
    int rc;
    switch (ret) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
    case MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE: {
        uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
        if (c->trace.depth >= 0 && flags != 0 && flags != UINT32_MAX)
            rc = mmr_pki_explain(&c->trace, flags, NULL, "client certificate", "our CA");
        else
            rc = mmr_err_set(MMR_EPROTO, "%s sent an unusable certificate: %s", c->peer, err);
        break;
    }
    case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
        rc = mmr_err_set(MMR_EPERM, "client presented no certificate, and one is required");
        break;
    case MBEDTLS_ERR_SSL_NO_USABLE_CIPHERSUITE:
        rc = mmr_err_set(MMR_EPROTO,
                         "%s offers no cipher suite we accept (TLS 1.2, ECDHE-ECDSA with "
                         "AES-GCM, P-256)",
                         c->peer);
        break;
    case MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION:
        rc = mmr_err_set(MMR_EPROTO, "%s does not speak TLS 1.2", c->peer);
        break;
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE: {
        int alert = c->ssl.in_msg ? c->ssl.in_msg[1] : -1;
        rc = mmr_err_set(c->done ? MMR_ECONN : MMR_EPERM,
                         "%s ended the connection with alert '%s' (%d)", c->peer, alert_name(alert),
                         alert);
        break;
    }
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
    case MBEDTLS_ERR_SSL_CONN_EOF:
        rc = mmr_err_set(MMR_ECONN, "%s closed the connection during the handshake", c->peer);
        break;
    default:
        rc = mmr_err_set(MMR_EPROTO, "%s sent malformed or unexpected TLS data: %s (-0x%04x)",
                         c->peer, err, (unsigned)-ret);
        break;
    }
    return fail(c, rc);
}

/* A peer talking HTTP (or anything else) to the TLS port gets a message that
 * says so instead of mbedTLS's "bad input". */
static int check_first_bytes(struct mmr_tls_conn *c)
{
    size_t avail = c->in_len - c->in_off;
    if (c->first_checked || avail == 0)
        return 0;
    const unsigned char *p = c->in + c->in_off;
    bool record = p[0] == RECORD_HANDSHAKE || (c->cli && p[0] == RECORD_ALERT);
    if (record && (avail < 2 || p[1] == 0x03)) {
        c->first_checked = true;
        return 0;
    }
    if (p[0] >= 0x20 && p[0] < 0x7f) {
        char start[16];
        size_t n = 0;
        while (n < avail && n < 10 && p[n] >= 0x20 && p[n] < 0x7f && p[n] != '"' && p[n] != '\\') {
            start[n] = (char)p[n];
            n++;
        }
        start[n] = '\0';
        return fail(c,
                    mmr_err_set(MMR_EPROTO, "%s sent plain text instead of TLS (it begins \"%s\")",
                                c->peer, start));
    }
    return fail(c, mmr_err_set(MMR_EPROTO, "%s sent data that is not TLS (first byte 0x%02x)",
                               c->peer, p[0]));
}

static void conn_init(struct mmr_tls_conn *c)
{
    mbedtls_ssl_init(&c->ssl);
    mmr_pki_trace_init(&c->trace);
    c->peer_rc = MMR_ENOENT;
}

int mmr_tls_conn_new(struct mmr_tls_server *srv, struct mmr_tls_conn **out)
{
    *out = NULL;
    struct mmr_tls_conn *c = mmr_calloc(1, sizeof(*c));
    conn_init(c);
    c->peer = "client";
    int ret = mbedtls_ssl_setup(&c->ssl, &srv->conf);
    if (ret != 0) {
        char err[128];
        mmr_tls_conn_free(c);
        return mmr_err_set(MMR_EIO, "cannot start a TLS connection: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_verify(&c->ssl, mmr_pki_trace_cb, &c->trace);
    *out = c;
    return 0;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return uv_inet_pton(AF_INET, host, buf) == 0 || uv_inet_pton(AF_INET6, host, buf) == 0;
}

int mmr_tls_conn_new_client(struct mmr_tls_client *cli, const char *host, struct mmr_tls_conn **out)
{
    *out = NULL;
    if (!host || !host[0] || strlen(host) > 253)
        return mmr_err_set(MMR_EINVAL, "a TLS client needs the server's name or address");
    struct mmr_tls_conn *c = mmr_calloc(1, sizeof(*c));
    conn_init(c);
    c->peer = "server";
    c->cli = cli;
    c->host = mmr_strdup(host);
    int ret = mbedtls_ssl_setup(&c->ssl, &cli->conf);
    /* Server Name Indication carries DNS names only (RFC 6066). */
    if (ret == 0 && !is_ip_literal(host))
        ret = mbedtls_ssl_set_hostname(&c->ssl, host);
    if (ret == 0) {
        uv_mutex_lock(&cli->lock);
        if (cli->has_session && strcmp(cli->session_host, host) == 0)
            ret = mbedtls_ssl_set_session(&c->ssl, &cli->session);
        uv_mutex_unlock(&cli->lock);
    }
    if (ret != 0) {
        char err[128];
        mmr_tls_conn_free(c);
        return mmr_err_set(MMR_EIO, "cannot start a TLS connection: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    *out = c;
    return 0;
}

void mmr_tls_conn_free(struct mmr_tls_conn *c)
{
    if (!c)
        return;
    mbedtls_ssl_free(&c->ssl);
    free(c->in);
    mmr_buf_free(&c->out);
    free(c->host);
    free(c->pinned_der);
    free(c);
}

int mmr_tls_conn_feed(struct mmr_tls_conn *c, const void *data, size_t len)
{
    if (c->fail_rc)
        return failed(c);
    size_t pending = c->in_len - c->in_off;
    if (len > MMR_TLS_MAX_INPUT - pending)
        return fail(c, mmr_err_set(MMR_ETOOBIG, "%s sent more than %d bytes that were not read yet",
                                   c->peer, MMR_TLS_MAX_INPUT));
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, pending);
        c->in_off = 0;
        c->in_len = pending;
    }
    if (c->in_len + len > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 4096;
        while (cap < c->in_len + len)
            cap *= 2;
        if (cap > MMR_TLS_MAX_INPUT)
            cap = MMR_TLS_MAX_INPUT;
        c->in = mmr_realloc(c->in, cap);
        c->in_cap = cap;
    }
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    return 0;
}

/* Client side, after a full handshake: is this the server we trust? */
static int verify_server(struct mmr_tls_conn *c)
{
    struct mmr_tls_client *cli = c->cli;
    /* Verification only reads the chain; mbedTLS 2.28 wants it non-const. */
    mbedtls_x509_crt *chain = (mbedtls_x509_crt *)(uintptr_t)mbedtls_ssl_get_peer_cert(&c->ssl);
    if (!chain || !chain->raw.p)
        return mmr_err_set(MMR_EPERM, "server presented no certificate");
    struct mmr_cert_verify_opts opts = {.kind = MMR_CERT_SERVER, .expect_host = c->host};
    if (cli->has_ca)
        return mmr_pki_verify_chain(chain, &cli->ca, &opts, "server certificate", "the trusted CA");

    const mbedtls_x509_crt *match = NULL;
    struct mmr_buf held = {0};
    for (const mbedtls_x509_crt *crt = chain; crt && crt->raw.p; crt = crt->next) {
        uint8_t digest[MMR_SHA256_LEN];
        mmr_sha256(crt->raw.p, crt->raw.len, digest);
        if (memcmp(digest, cli->pin, sizeof(digest)) == 0) {
            match = crt;
            break;
        }
        struct mmr_cert_info info;
        mmr_pki_crt_info(crt, &info);
        mmr_buf_appendf(&held, "%s'%s' sha256:%.16s...", held.len ? ", " : "", info.cn,
                        info.sha256_hex);
    }
    if (!match) {
        int rc = mmr_err_set(MMR_EPERM,
                             "server certificate chain does not contain the pinned CA "
                             "sha256:%s (it holds %s)",
                             cli->pin_hex, held.data);
        mmr_buf_free(&held);
        return rc;
    }
    mmr_buf_free(&held);
    mbedtls_x509_crt anchor;
    mbedtls_x509_crt_init(&anchor);
    int rc = 0;
    if (mbedtls_x509_crt_parse_der(&anchor, match->raw.p, match->raw.len) != 0)
        rc = mmr_err_set(MMR_EPERM, "the pinned CA certificate cannot be parsed");
    char anchor_name[96];
    snprintf(anchor_name, sizeof(anchor_name), "the pinned CA sha256:%.16s...", cli->pin_hex);
    if (rc == 0)
        rc = mmr_pki_verify_chain(chain, &anchor, &opts, "server certificate", anchor_name);
    mbedtls_x509_crt_free(&anchor);
    if (rc == 0) {
        c->pinned_der = mmr_malloc(match->raw.len);
        memcpy(c->pinned_der, match->raw.p, match->raw.len);
        c->pinned_len = match->raw.len;
    }
    return rc;
}

/* Server side: the verdict on the client's certificate, for peer_cert. */
static void judge_client(struct mmr_tls_conn *c)
{
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&c->ssl);
    if (!peer || !peer->raw.p) {
        c->peer_rc = MMR_ENOENT;
        snprintf(c->peer_msg, sizeof(c->peer_msg), "client presented no certificate");
        return;
    }
    c->peer_present = true;
    mmr_pki_crt_info(peer, &c->peer_info);
    uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
    /* A resumed session carries the verdict of its first handshake: the
     * certificate may have expired since. */
    if (mbedtls_x509_time_is_past(&peer->valid_to))
        flags |= MBEDTLS_X509_BADCERT_EXPIRED;
    if (mbedtls_x509_time_is_future(&peer->valid_from))
        flags |= MBEDTLS_X509_BADCERT_FUTURE;
    if (flags == 0) {
        c->peer_rc = 0;
        return;
    }
    const struct mmr_pki_trace *t = c->trace.depth >= 0 ? &c->trace : NULL;
    c->peer_rc = mmr_pki_explain(t, flags, peer, "client certificate", "our CA");
    snprintf(c->peer_msg, sizeof(c->peer_msg), "%s", mmr_err_msg());
}

static int finish_handshake(struct mmr_tls_conn *c)
{
    c->done = true;
    c->resumed = !c->saw_certificate;
    if (!c->cli) {
        judge_client(c);
        return MMR_TLS_OK;
    }
    /* A resumed session was verified when it was first made. */
    if (!c->resumed) {
        int rc = verify_server(c);
        if (rc < 0) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", mmr_err_msg());
            mbedtls_ssl_send_alert_message(&c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                           MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
            return fail(c, mmr_err_set(rc, "%s", msg));
        }
    }
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&c->ssl);
    if (peer && peer->raw.p) {
        c->peer_present = true;
        mmr_pki_crt_info(peer, &c->peer_info);
    }
    c->peer_rc = 0;
    save_session(c->cli, &c->ssl, c->host);
    return MMR_TLS_OK;
}

int mmr_tls_conn_handshake(struct mmr_tls_conn *c)
{
    if (c->fail_rc)
        return failed(c);
    if (c->done)
        return MMR_TLS_OK;
    while (c->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        int rc = check_first_bytes(c);
        if (rc < 0)
            return rc;
        int ret = mbedtls_ssl_handshake_step(&c->ssl);
        /* A full handshake passes through the server's Certificate message; a
         * resumed one goes from ServerHello straight to ChangeCipherSpec. */
        if (c->ssl.state == MBEDTLS_SSL_SERVER_CERTIFICATE)
            c->saw_certificate = true;
        if (ret == MBEDTLS_ERR_SSL_WANT_READ)
            return MMR_TLS_WANT_INPUT;
        if (ret != 0)
            return fail_tls(c, ret);
    }
    return finish_handshake(c);
}

int mmr_tls_conn_read(struct mmr_tls_conn *c, void *buf, size_t cap, size_t *n)
{
    *n = 0;
    if (c->fail_rc)
        return failed(c);
    if (c->peer_eof)
        return MMR_TLS_EOF;
    if (cap == 0)
        return mmr_err_set(MMR_EINVAL, "cannot read into an empty buffer");
    if (!c->done) {
        int rc = mmr_tls_conn_handshake(c);
        if (rc != MMR_TLS_OK)
            return rc;
    }
    if (cap > INT_MAX)
        cap = INT_MAX;
    int ret = mbedtls_ssl_read(&c->ssl, buf, cap);
    if (ret > 0) {
        *n = (size_t)ret;
        return MMR_TLS_OK;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ)
        return MMR_TLS_WANT_INPUT;
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        c->peer_eof = true;
        return MMR_TLS_EOF;
    }
    return fail_tls(c, ret);
}

int mmr_tls_conn_write(struct mmr_tls_conn *c, const void *data, size_t len)
{
    if (c->fail_rc)
        return failed(c);
    if (!c->done)
        return mmr_err_set(MMR_EINVAL, "cannot write before the TLS handshake is finished");
    if (c->closing)
        return mmr_err_set(MMR_EINVAL, "cannot write after close_notify");
    const unsigned char *p = data;
    while (len > 0) {
        int ret = mbedtls_ssl_write(&c->ssl, p, len);
        if (ret < 0)
            return fail_tls(c, ret);
        p += ret;
        len -= (size_t)ret;
    }
    return 0;
}

char *mmr_tls_conn_take_output(struct mmr_tls_conn *c, size_t *len)
{
    *len = c->out.len;
    if (c->out.len == 0)
        return NULL;
    char *data = c->out.data;
    memset(&c->out, 0, sizeof(c->out));
    return data;
}

int mmr_tls_conn_close_notify(struct mmr_tls_conn *c)
{
    if (c->fail_rc)
        return failed(c);
    if (c->closing || !c->done)
        return 0;
    c->closing = true;
    int ret = mbedtls_ssl_close_notify(&c->ssl);
    if (ret != 0)
        return fail_tls(c, ret);
    return 0;
}

bool mmr_tls_conn_handshake_done(const struct mmr_tls_conn *c)
{
    return c->done;
}

bool mmr_tls_conn_resumed(const struct mmr_tls_conn *c)
{
    return c->done && c->resumed;
}

const char *mmr_tls_conn_cipher(const struct mmr_tls_conn *c)
{
    return c->done ? mbedtls_ssl_get_ciphersuite(&c->ssl) : "";
}

int mmr_tls_conn_peer_cert(const struct mmr_tls_conn *c, struct mmr_cert_info *out)
{
    if (c->peer_present)
        *out = c->peer_info;
    else
        memset(out, 0, sizeof(*out));
    if (!c->done)
        return mmr_err_set(MMR_EINVAL, "the TLS handshake is not finished");
    if (c->peer_rc < 0)
        return mmr_err_set(c->peer_rc, "%s", c->peer_msg);
    return 0;
}

int mmr_tls_conn_peer_chain_pem(const struct mmr_tls_conn *c, char **out)
{
    *out = NULL;
    const mbedtls_x509_crt *chain = c->done ? mbedtls_ssl_get_peer_cert(&c->ssl) : NULL;
    if (!chain || !chain->raw.p)
        return mmr_err_set(MMR_ENOENT, "the %s presented no certificate", c->peer);
    struct mmr_buf all = {0};
    for (const mbedtls_x509_crt *crt = chain; crt && crt->raw.p; crt = crt->next) {
        char *pem;
        int rc = mmr_cert_der_to_pem(crt->raw.p, crt->raw.len, &pem);
        if (rc < 0) {
            mmr_buf_free(&all);
            return rc;
        }
        mmr_buf_append(&all, pem, strlen(pem));
        free(pem);
    }
    *out = all.data;
    return 0;
}

int mmr_tls_conn_pinned_ca_pem(const struct mmr_tls_conn *c, char **out)
{
    *out = NULL;
    if (!c->pinned_der)
        return mmr_err_set(MMR_ENOENT, "no pinned CA certificate was seen on this connection");
    return mmr_cert_der_to_pem(c->pinned_der, c->pinned_len, out);
}
