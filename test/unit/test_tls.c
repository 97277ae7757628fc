/* Tests for shared/tls.c and shared/tls_client.c: real TLS over 127.0.0.1
 * between the blocking client and a server engine driven by a libuv loop in a
 * thread (as mamori-server drives it), mutual TLS, resumption (timed), pins,
 * refusals with their messages, and the engine alone fed garbage. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/pki.h"
#include "shared/platform.h"
#include "shared/tls.h"

#define DAY_MS     (24LL * 3600 * 1000)
#define TIMEOUT_MS 10000

static void setup(void)
{
    /* A peer that closes while we write must not kill the test process. */
    mmr_process_ignore_sigpipe();
}

/* ---- a PKI: root CA, issuing CA, server and device certificates ---------------- */

struct pki {
    struct mmr_key *root_key, *ca_key, *server_key, *device_key;
    char *root, *ca, *server_chain, *device, *device_chain;
};

static struct mmr_key *new_key(void)
{
    struct mmr_key *k = NULL;
    cr_assert_eq(mmr_key_generate(&k), 0, "%s", mmr_err_msg());
    return k;
}

static char *issue(const struct mmr_cert_spec *spec, struct mmr_key *subject,
                   struct mmr_key *issuer_key, const char *issuer)
{
    char *pem = NULL;
    cr_assert_eq(mmr_cert_issue(spec, subject, issuer_key, issuer, &pem), 0, "issuing %s: %s",
                 spec->cn, mmr_err_msg());
    return pem;
}

static const char *const local_sans[] = {"localhost", "127.0.0.1"};

static void make_pki(struct pki *p, const char *const *sans, size_t san_count)
{
    int64_t now = mmr_time_now_ms();
    p->root_key = new_key();
    p->ca_key = new_key();
    p->server_key = new_key();
    p->device_key = new_key();
    struct mmr_cert_spec root = {.kind = MMR_CERT_CA,
                                 .cn = "Mamori Root CA",
                                 .not_before_ms = now - DAY_MS,
                                 .not_after_ms = now + 3650 * DAY_MS,
                                 .max_path_len = 1};
    p->root = issue(&root, p->root_key, p->root_key, NULL);
    struct mmr_cert_spec ca = {.kind = MMR_CERT_CA,
                               .cn = "Mamori Issuing CA",
                               .not_before_ms = now - DAY_MS,
                               .not_after_ms = now + 1825 * DAY_MS,
                               .max_path_len = 0};
    p->ca = issue(&ca, p->ca_key, p->root_key, p->root);
    struct mmr_cert_spec server = {.kind = MMR_CERT_SERVER,
                                   .cn = "mamori-server",
                                   .not_before_ms = now - DAY_MS,
                                   .not_after_ms = now + 365 * DAY_MS,
                                   .san = sans,
                                   .san_count = san_count};
    char *server_pem = issue(&server, p->server_key, p->ca_key, p->ca);
    p->server_chain = mmr_asprintf("%s%s", server_pem, p->ca);
    free(server_pem);
    struct mmr_cert_spec device = {.kind = MMR_CERT_CLIENT,
                                   .cn = "device-0001",
                                   .not_before_ms = now - DAY_MS,
                                   .not_after_ms = now + 90 * DAY_MS};
    p->device = issue(&device, p->device_key, p->ca_key, p->ca);
    p->device_chain = mmr_asprintf("%s%s", p->device, p->ca);
}

static void free_pki(struct pki *p)
{
    mmr_key_free(p->root_key);
    mmr_key_free(p->ca_key);
    mmr_key_free(p->server_key);
    mmr_key_free(p->device_key);
    free(p->root);
    free(p->ca);
    free(p->server_chain);
    free(p->device);
    free(p->device_chain);
}

static struct mmr_tls_server *new_server_tls(struct pki *p, enum mmr_tls_client_auth auth)
{
    struct mmr_tls_server_opts o = {.cert_chain_pem = p->server_chain,
                                    .key = p->server_key,
                                    .client_ca_pem = p->ca,
                                    .client_auth = auth};
    struct mmr_tls_server *srv = NULL;
    cr_assert_eq(mmr_tls_server_new(&o, &srv), 0, "%s", mmr_err_msg());
    return srv;
}

/* A client trusting ca_pem or pin, presenting chain/key when given. */
static struct mmr_tls_client *new_client(const char *ca_pem, const char *pin, const char *chain,
                                         struct mmr_key *key)
{
    struct mmr_tls_client_opts o = {
        .ca_pem = ca_pem, .pin_sha256 = pin, .cert_chain_pem = chain, .key = key};
    struct mmr_tls_client *cli = NULL;
    cr_assert_eq(mmr_tls_client_new(&o, &cli), 0, "%s", mmr_err_msg());
    return cli;
}

/* ---- a TLS server on a libuv loop in a thread ------------------------------------ */

enum server_mode {
    SERVE_TLS,         /* greet with what we know of the peer, then echo */
    SERVE_SILENT,      /* accept and never answer */
    SERVE_PLAIN_TEXT,  /* answer like an HTTP server */
    SERVE_GREET_CLOSE, /* greet, then close_notify */
    SERVE_GREET_DROP,  /* greet, then drop the connection without close_notify */
};

struct server {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    struct mmr_tls_server *tls;
    enum server_mode mode;
    int port;
    uv_mutex_t lock; /* guards what follows */
    char last_error[1024];
    int handshakes;
};

struct sconn {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown;
    struct server *srv;
    struct mmr_tls_conn *tls;
    bool greeted;
    bool finishing;
};

struct wreq {
    uv_write_t req;
    char *data;
};

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    free(w->data);
    free(w);
}

static void send_bytes(struct sconn *c, char *data, size_t len)
{
    struct wreq *w = mmr_malloc(sizeof(*w));
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(data);
        free(w);
    }
}

static void flush_conn(struct sconn *c)
{
    size_t len;
    char *data = mmr_tls_conn_take_output(c->tls, &len);
    if (data)
        send_bytes(c, data, len);
}

static void on_sconn_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;
    mmr_tls_conn_free(c->tls);
    free(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct sconn *c = req->data;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
}

/* Closes once pending writes (an alert, close_notify) are out. */
static void finish_conn(struct sconn *c)
{
    if (c->finishing)
        return;
    c->finishing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
}

static void record_error(struct server *srv, const char *msg)
{
    uv_mutex_lock(&srv->lock);
    snprintf(srv->last_error, sizeof(srv->last_error), "%s", msg);
    uv_mutex_unlock(&srv->lock);
}

static void greet(struct sconn *c)
{
    struct mmr_cert_info info;
    int rc = mmr_tls_conn_peer_cert(c->tls, &info);
    const char *verdict = rc == 0 ? "verified" : rc == MMR_ENOENT ? "none" : "refused";
    char *line = mmr_asprintf("peer=%s cn=%s serial=%s sha256=%s resumed=%d why=%s\n", verdict,
                              info.cn, info.serial_hex, info.sha256_hex,
                              mmr_tls_conn_resumed(c->tls), rc == MMR_EPERM ? mmr_err_msg() : "");
    mmr_tls_conn_write(c->tls, line, strlen(line));
    free(line);
    c->greeted = true;
    uv_mutex_lock(&c->srv->lock);
    c->srv->handshakes++;
    uv_mutex_unlock(&c->srv->lock);
}

static void serve(struct sconn *c)
{
    char buf[16384];
    int rc = mmr_tls_conn_handshake(c->tls);
    if (rc == MMR_TLS_OK && !c->greeted) {
        greet(c);
        if (c->srv->mode == SERVE_GREET_CLOSE)
            mmr_tls_conn_close_notify(c->tls);
        if (c->srv->mode != SERVE_TLS) {
            flush_conn(c);
            finish_conn(c);
            return;
        }
    }
    while (rc == MMR_TLS_OK) {
        size_t n = 0;
        rc = mmr_tls_conn_read(c->tls, buf, sizeof(buf), &n);
        if (rc == MMR_TLS_OK)
            mmr_tls_conn_write(c->tls, buf, n);
    }
    if (rc == MMR_TLS_EOF)
        mmr_tls_conn_close_notify(c->tls);
    if (rc < 0)
        record_error(c->srv, mmr_err_msg());
    flush_conn(c);
    if (rc != MMR_TLS_WANT_INPUT)
        finish_conn(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = mmr_malloc(suggested);
    buf->len = suggested;
}

static void on_sconn_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct sconn *c = stream->data;
    if (n > 0 && c->srv->mode != SERVE_SILENT) {
        if (mmr_tls_conn_feed(c->tls, buf->base, (size_t)n) < 0) {
            record_error(c->srv, mmr_err_msg());
            finish_conn(c);
        } else {
            serve(c);
        }
    } else if (n < 0) {
        finish_conn(c);
    }
    free(buf->base);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *srv = listener->data;
    if (status < 0)
        return;
    struct sconn *c = mmr_calloc(1, sizeof(*c));
    c->srv = srv;
    uv_tcp_init(&srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
        return;
    }
    if (srv->mode == SERVE_PLAIN_TEXT) {
        static const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        send_bytes(c, mmr_strdup(reply), sizeof(reply) - 1);
        finish_conn(c);
        return;
    }
    if (srv->mode != SERVE_SILENT)
        cr_assert_eq(mmr_tls_conn_new(srv->tls, &c->tls), 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_sconn_read);
}

static void close_any(uv_handle_t *h, void *arg)
{
    struct server *srv = arg;
    if (uv_is_closing(h))
        return;
    bool ours = h == (uv_handle_t *)&srv->listener || h == (uv_handle_t *)&srv->stop;
    uv_close(h, ours ? NULL : on_sconn_closed);
}

static void on_stop(uv_async_t *a)
{
    struct server *srv = a->data;
    uv_walk(&srv->loop, close_any, srv);
}

static void server_thread(void *arg)
{
    struct server *srv = arg;
    uv_run(&srv->loop, UV_RUN_DEFAULT);
}

static void start_server(struct server *srv, struct mmr_tls_server *tls, enum server_mode mode)
{
    memset(srv, 0, sizeof(*srv));
    srv->tls = tls;
    srv->mode = mode;
    cr_assert_eq(uv_loop_init(&srv->loop), 0);
    cr_assert_eq(uv_mutex_init(&srv->lock), 0);
    uv_tcp_init(&srv->loop, &srv->listener);
    srv->listener.data = srv;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    cr_assert_eq(uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&srv->listener, 64, on_connection), 0);
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    uv_async_init(&srv->loop, &srv->stop, on_stop);
    srv->stop.data = srv;
    cr_assert_eq(uv_thread_create(&srv->thread, server_thread, srv), 0);
}

static void stop_server(struct server *srv)
{
    uv_async_send(&srv->stop);
    uv_thread_join(&srv->thread);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&srv->loop), 0);
    uv_mutex_destroy(&srv->lock);
    mmr_tls_server_free(srv->tls);
}

/* The server's last error, waiting for it to appear (the server runs apart). */
static void server_error(struct server *srv, char *out, size_t size)
{
    for (int i = 0; i < 200; i++) {
        uv_mutex_lock(&srv->lock);
        snprintf(out, size, "%s", srv->last_error);
        uv_mutex_unlock(&srv->lock);
        if (out[0])
            return;
        uv_sleep(10);
    }
}

/* ---- client helpers ---------------------------------------------------------------- */

static struct mmr_tls_stream *connect_ok(struct mmr_tls_client *cli, const char *host, int port)
{
    struct mmr_tls_stream *s = NULL;
    int rc = mmr_tls_stream_connect(cli, host, (uint16_t)port, TIMEOUT_MS, &s);
    cr_assert_eq(rc, 0, "connect: %d %s", rc, mmr_err_msg());
    return s;
}

static void read_line(struct mmr_tls_stream *s, char *line, size_t size)
{
    size_t used = 0;
    while (used + 1 < size) {
        size_t n = 0;
        cr_assert_eq(mmr_tls_stream_read(s, line + used, 1, TIMEOUT_MS, &n), 0, "%s",
                     mmr_err_msg());
        cr_assert_gt(n, 0, "connection closed before the end of the line");
        if (line[used] == '\n')
            break;
        used += n;
    }
    line[used] = '\0';
}

/* Connects, reads the greeting, closes; returns the greeting. */
static void greeting(struct mmr_tls_client *cli, int port, char *line, size_t size, bool *resumed)
{
    struct mmr_tls_stream *s = connect_ok(cli, "127.0.0.1", port);
    read_line(s, line, size);
    if (resumed)
        *resumed = mmr_tls_conn_resumed(mmr_tls_stream_conn(s));
    mmr_tls_stream_close(s);
}

static int connect_fails(struct mmr_tls_client *cli, const char *host, int port)
{
    struct mmr_tls_stream *s = NULL;
    int rc = mmr_tls_stream_connect(cli, host, (uint16_t)port, TIMEOUT_MS, &s);
    cr_assert_lt(rc, 0, "connection should have failed");
    cr_assert_null(s);
    return rc;
}

#define expect_contains(text, part)                                                                \
    cr_expect_not_null(strstr((text), (part)), "expected \"%s\" in \"%s\"", (part), (text))

/* ---- mutual TLS over 127.0.0.1 ----------------------------------------------------- */

TestSuite(tls, .init = setup, .timeout = 120);

Test(tls, mutual_tls_handshake_and_echo)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_REQUIRED), SERVE_TLS);
    struct mmr_tls_client *cli = new_client(p.root, NULL, p.device, p.device_key);

    struct mmr_tls_stream *s = connect_ok(cli, "127.0.0.1", srv.port);
    char line[1024];
    read_line(s, line, sizeof(line));
    struct mmr_cert_info dev;
    cr_assert_eq(mmr_cert_read_info(p.device, &dev), 0);
    char *want = mmr_asprintf("peer=verified cn=device-0001 serial=%s sha256=%s resumed=0 why=",
                              dev.serial_hex, dev.sha256_hex);
    cr_expect_str_eq(line, want);
    free(want);

    struct mmr_tls_conn *conn = mmr_tls_stream_conn(s);
    cr_expect(mmr_tls_conn_handshake_done(conn));
    cr_expect_not(mmr_tls_conn_resumed(conn));
    expect_contains(mmr_tls_conn_cipher(conn), "ECDHE-ECDSA");
    expect_contains(mmr_tls_conn_cipher(conn), "GCM");
    struct mmr_cert_info server_info;
    cr_expect_eq(mmr_tls_conn_peer_cert(conn, &server_info), 0);
    cr_expect_str_eq(server_info.cn, "mamori-server");
    char *pinned = NULL;
    cr_expect_eq(mmr_tls_conn_pinned_ca_pem(conn, &pinned), MMR_ENOENT, "trusted by CA, no pin");

    /* Larger than one record, in both directions. */
    size_t big = 100000;
    char *out = mmr_malloc(big), *in = mmr_malloc(big);
    for (size_t i = 0; i < big; i++)
        out[i] = (char)('a' + i % 26);
    cr_assert_eq(mmr_tls_stream_write_all(s, out, big, TIMEOUT_MS), 0, "%s", mmr_err_msg());
    size_t got = 0;
    while (got < big) {
        size_t n = 0;
        cr_assert_eq(mmr_tls_stream_read(s, in + got, big - got, TIMEOUT_MS, &n), 0, "%s",
                     mmr_err_msg());
        cr_assert_gt(n, 0);
        got += n;
    }
    cr_expect_eq(memcmp(in, out, big), 0);
    free(in);
    free(out);
    mmr_tls_stream_close(s);

    /* By DNS name too. */
    s = connect_ok(cli, "localhost", srv.port);
    read_line(s, line, sizeof(line));
    expect_contains(line, "peer=verified cn=device-0001");
    mmr_tls_stream_close(s);

    mmr_tls_client_free(cli);
    stop_server(&srv);
    free_pki(&p);
}

Test(tls, resumption_is_cheaper_than_a_full_handshake)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL), SERVE_TLS);
    struct mmr_tls_client *cli = new_client(p.root, NULL, p.device_chain, p.device_key);
    enum { ROUNDS = 10 };
    char line[1024];
    bool resumed = true;

    uint64_t full_ns = 0, resumed_ns = 0;
    for (int i = 0; i < ROUNDS; i++) {
        mmr_tls_client_forget_session(cli);
        uint64_t t0 = uv_hrtime();
        struct mmr_tls_stream *s = connect_ok(cli, "127.0.0.1", srv.port);
        full_ns += uv_hrtime() - t0;
        cr_expect_not(mmr_tls_conn_resumed(mmr_tls_stream_conn(s)));
        mmr_tls_stream_close(s);
    }
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t t0 = uv_hrtime();
        struct mmr_tls_stream *s = connect_ok(cli, "127.0.0.1", srv.port);
        resumed_ns += uv_hrtime() - t0;
        cr_expect(mmr_tls_conn_resumed(mmr_tls_stream_conn(s)), "round %d not resumed", i);
        read_line(s, line, sizeof(line));
        /* The server still knows who it talks to: the ticket carries the
         * device certificate. */
        expect_contains(line, "peer=verified cn=device-0001");
        expect_contains(line, "resumed=1");
        struct mmr_cert_info info;
        cr_expect_eq(mmr_tls_conn_peer_cert(mmr_tls_stream_conn(s), &info), 0);
        cr_expect_str_eq(info.cn, "mamori-server");
        mmr_tls_stream_close(s);
    }
    double full_ms = (double)full_ns / ROUNDS / 1e6;
    double resumed_ms = (double)resumed_ns / ROUNDS / 1e6;
    cr_log_info("tls_handshake_full: %.2f ms (connect + mutual TLS, client and server)", full_ms);
    cr_log_info("tls_handshake_resumed: %.2f ms (ratio %.1fx)", resumed_ms, full_ms / resumed_ms);
    cr_expect_lt(resumed_ms, full_ms, "resumed %.2f ms, full %.2f ms", resumed_ms, full_ms);

    /* Forgetting the session means a full handshake again. */
    mmr_tls_client_forget_session(cli);
    greeting(cli, srv.port, line, sizeof(line), &resumed);
    cr_expect_not(resumed);
    expect_contains(line, "resumed=0");

    mmr_tls_client_free(cli);
    stop_server(&srv);
    free_pki(&p);
}

Test(tls, pin_match_gives_the_pinned_ca)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL), SERVE_TLS);
    struct mmr_cert_info ca;
    cr_assert_eq(mmr_cert_read_info(p.ca, &ca), 0);
    char pin[80];
    snprintf(pin, sizeof(pin), "sha256:%s", ca.sha256_hex);
    for (char *c = pin + 7; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    struct mmr_tls_client *cli = new_client(NULL, pin, NULL, NULL);

    struct mmr_tls_stream *s = connect_ok(cli, "127.0.0.1", srv.port);
    char line[1024];
    read_line(s, line, sizeof(line));
    expect_contains(line, "peer=none");
    char *pinned = NULL;
    cr_assert_eq(mmr_tls_conn_pinned_ca_pem(mmr_tls_stream_conn(s), &pinned), 0, "%s",
                 mmr_err_msg());
    cr_expect_str_eq(pinned, p.ca);
    char *chain = NULL;
    cr_assert_eq(mmr_tls_conn_peer_chain_pem(mmr_tls_stream_conn(s), &chain), 0);
    cr_expect_str_eq(chain, p.server_chain);
    free(chain);
    free(pinned);
    mmr_tls_stream_close(s);

    /* The pinned CA, stored by the enrollment, then serves as a trusted CA. */
    struct mmr_tls_client *later = new_client(p.ca, NULL, p.device, p.device_key);
    greeting(later, srv.port, line, sizeof(line), NULL);
    expect_contains(line, "peer=verified cn=device-0001");

    mmr_tls_client_free(later);
    mmr_tls_client_free(cli);
    stop_server(&srv);
    free_pki(&p);
}

Test(tls, pin_mismatch_is_refused)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL), SERVE_TLS);

    /* The root is genuine but not in the chain the server presents. */
    struct mmr_cert_info root;
    cr_assert_eq(mmr_cert_read_info(p.root, &root), 0);
    struct mmr_tls_client *cli = new_client(NULL, root.sha256_hex, NULL, NULL);
    cr_expect_eq(connect_fails(cli, "127.0.0.1", srv.port), MMR_EPERM);
    char *want = mmr_asprintf("server certificate chain does not contain the pinned CA sha256:%s",
                              root.sha256_hex);
    expect_contains(mmr_err_msg(), want);
    expect_contains(mmr_err_msg(), "'mamori-server' sha256:");
    free(want);
    char err[1024];
    server_error(&srv, err, sizeof(err));
    cr_expect_str_eq(err, "client ended the connection with alert 'bad certificate' (42)");
    mmr_tls_client_free(cli);

    cli = new_client(NULL, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", NULL,
                     NULL);
    cr_expect_eq(connect_fails(cli, "127.0.0.1", srv.port), MMR_EPERM);
    expect_contains(mmr_err_msg(), "does not contain the pinned CA sha256:0011");
    mmr_tls_client_free(cli);

    /* A pin must name a CA: pinning the server's own certificate is refused. */
    struct mmr_cert_info leaf;
    cr_assert_eq(mmr_cert_read_info(p.server_chain, &leaf), 0);
    cli = new_client(NULL, leaf.sha256_hex, NULL, NULL);
    cr_expect_eq(connect_fails(cli, "127.0.0.1", srv.port), MMR_EPERM);
    expect_contains(mmr_err_msg(), "server certificate 'mamori-server' is not signed by the pinned "
                                   "CA sha256:");
    mmr_tls_client_free(cli);

    stop_server(&srv);
    free_pki(&p);
}

Test(tls, wrong_ca_is_refused_both_ways)
{
    struct pki p, other;
    make_pki(&p, local_sans, 2);
    make_pki(&other, local_sans, 2);
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_REQUIRED), SERVE_TLS);

    /* The client trusts another CA. */
    struct mmr_tls_client *cli = new_client(other.root, NULL, p.device, p.device_key);
    cr_expect_eq(connect_fails(cli, "127.0.0.1", srv.port), MMR_EPERM);
    char *want = mmr_asprintf("127.0.0.1:%d: server certificate 'mamori-server' is not signed by "
                              "the trusted CA (its chain ends at 'Mamori Issuing CA')",
                              srv.port);
    cr_expect_str_eq(mmr_err_msg(), want);
    free(want);
    mmr_tls_client_free(cli);

    /* The client's certificate comes from another CA. */
    cli = new_client(p.root, NULL, other.device, other.device_key);
    cr_expect_lt(connect_fails(cli, "127.0.0.1", srv.port), 0);
    expect_contains(mmr_err_msg(), "server ended the connection with alert 'unknown CA'");
    char err[1024];
    server_error(&srv, err, sizeof(err));
    cr_expect_str_eq(err, "client certificate 'device-0001' is not signed by our CA");
    mmr_tls_client_free(cli);

    stop_server(&srv);
    free_pki(&other);
    free_pki(&p);
}

static char *expired_device_cert(struct pki *p, struct mmr_key *key)
{
    int64_t now = mmr_time_now_ms();
    struct mmr_cert_spec old = {.kind = MMR_CERT_CLIENT,
                                .cn = "old-device",
                                .not_before_ms = now - 100 * DAY_MS,
                                .not_after_ms = now - 10 * DAY_MS};
    return issue(&old, key, p->ca_key, p->ca);
}

Test(tls, expired_client_certificate_is_refused)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_key *key = new_key();
    char *expired = expired_device_cert(&p, key);
    struct mmr_cert_info info;
    cr_assert_eq(mmr_cert_read_info(expired, &info), 0);
    char when[32];
    mmr_time_format(info.not_after_ms, when);
    char *reason = mmr_asprintf("client certificate 'old-device' expired at %s", when);

    /* Required: the handshake fails, and each side says why. */
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_REQUIRED), SERVE_TLS);
    struct mmr_tls_client *cli = new_client(p.root, NULL, expired, key);
    cr_expect_lt(connect_fails(cli, "127.0.0.1", srv.port), 0);
    expect_contains(mmr_err_msg(), "alert 'certificate expired'");
    char err[1024];
    server_error(&srv, err, sizeof(err));
    cr_expect_str_eq(err, reason);
    stop_server(&srv);

    /* Optional (the enrollment listener): the handshake succeeds and the
     * application sees a refused certificate with the reason. */
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL), SERVE_TLS);
    char line[1024];
    greeting(cli, srv.port, line, sizeof(line), NULL);
    char *want = mmr_asprintf("peer=refused cn=old-device serial=%s sha256=%s resumed=0 why=%s",
                              info.serial_hex, info.sha256_hex, reason);
    cr_expect_str_eq(line, want);
    free(want);
    /* A resumed session keeps the verdict. */
    bool resumed = false;
    greeting(cli, srv.port, line, sizeof(line), &resumed);
    cr_expect(resumed);
    expect_contains(line, "peer=refused cn=old-device");
    expect_contains(line, reason);
    stop_server(&srv);

    mmr_tls_client_free(cli);
    free(reason);
    free(expired);
    mmr_key_free(key);
    free_pki(&p);
}

Test(tls, no_client_certificate)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_client *cli = new_client(p.root, NULL, NULL, NULL);
    char line[1024];

    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL), SERVE_TLS);
    greeting(cli, srv.port, line, sizeof(line), NULL);
    cr_expect_str_eq(line, "peer=none cn= serial= sha256= resumed=0 why=");
    stop_server(&srv);

    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_NONE), SERVE_TLS);
    mmr_tls_client_forget_session(cli);
    greeting(cli, srv.port, line, sizeof(line), NULL);
    expect_contains(line, "peer=none");
    stop_server(&srv);

    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_REQUIRED), SERVE_TLS);
    mmr_tls_client_forget_session(cli);
    cr_expect_lt(connect_fails(cli, "127.0.0.1", srv.port), 0);
    char err[1024];
    server_error(&srv, err, sizeof(err));
    cr_expect_str_eq(err, "client presented no certificate, and one is required");
    stop_server(&srv);

    mmr_tls_client_free(cli);
    free_pki(&p);
}

Test(tls, server_name_must_match)
{
    static const char *const other_name[] = {"mamori.example.org"};
    struct pki p;
    make_pki(&p, other_name, 1);
    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL), SERVE_TLS);
    struct mmr_tls_client *cli = new_client(p.root, NULL, NULL, NULL);
    cr_expect_eq(connect_fails(cli, "127.0.0.1", srv.port), MMR_EPERM);
    expect_contains(mmr_err_msg(), "server certificate 'mamori-server' is not valid for "
                                   "'127.0.0.1' (it names: mamori.example.org)");
    mmr_tls_client_free(cli);

    /* A pin does not excuse a wrong name. */
    struct mmr_cert_info ca;
    cr_assert_eq(mmr_cert_read_info(p.ca, &ca), 0);
    cli = new_client(NULL, ca.sha256_hex, NULL, NULL);
    cr_expect_eq(connect_fails(cli, "localhost", srv.port), MMR_EPERM);
    expect_contains(mmr_err_msg(), "is not valid for 'localhost'");
    mmr_tls_client_free(cli);

    stop_server(&srv);
    free_pki(&p);
}

Test(tls, device_certificate_cannot_serve)
{
    /* A device certificate comes from the same CA; it must not pass for the server. */
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_server_opts o = {.cert_chain_pem = p.device_chain,
                                    .key = p.device_key,
                                    .client_auth = MMR_TLS_CLIENT_CERT_NONE};
    struct mmr_tls_server *tls = NULL;
    cr_expect_eq(mmr_tls_server_new(&o, &tls), MMR_EINVAL);
    expect_contains(mmr_err_msg(), "server certificate 'device-0001' is not issued for this use");
    cr_expect_null(tls);
    free_pki(&p);
}

Test(tls, plain_text_server_and_unreachable_ports)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_client *cli = new_client(p.root, NULL, NULL, NULL);
    struct server srv;
    start_server(&srv, NULL, SERVE_PLAIN_TEXT);
    cr_expect_eq(connect_fails(cli, "127.0.0.1", srv.port), MMR_EPROTO);
    expect_contains(mmr_err_msg(), "server sent plain text instead of TLS (it begins "
                                   "\"HTTP/1.1 4\")");
    stop_server(&srv);

    /* Accepts, never answers: the handshake times out. */
    start_server(&srv, NULL, SERVE_SILENT);
    struct mmr_tls_stream *s = NULL;
    uint64_t t0 = mmr_time_mono_ms();
    cr_expect_eq(mmr_tls_stream_connect(cli, "127.0.0.1", (uint16_t)srv.port, 300, &s),
                 MMR_ETIMEDOUT);
    uint64_t took = mmr_time_mono_ms() - t0;
    expect_contains(mmr_err_msg(), "no answer within 300 ms during the TLS handshake");
    cr_expect_geq(took, 290);
    cr_expect_lt(took, 3000);
    int port = srv.port;
    stop_server(&srv);

    /* Nobody listens any more. */
    cr_expect_eq(connect_fails(cli, "127.0.0.1", port), MMR_ECONN);
    expect_contains(mmr_err_msg(), "cannot connect: connection refused");
    cr_expect_eq(connect_fails(cli, "no-such-host.invalid", port), MMR_ECONN);
    expect_contains(mmr_err_msg(), "cannot resolve 'no-such-host.invalid'");

    mmr_tls_client_free(cli);
    free_pki(&p);
}

Test(tls, end_of_session_clean_or_not)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_client *cli = new_client(p.root, NULL, NULL, NULL);
    char line[1024], buf[64];
    size_t n = 99;

    struct server srv;
    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_NONE), SERVE_GREET_CLOSE);
    struct mmr_tls_stream *s = connect_ok(cli, "127.0.0.1", srv.port);
    read_line(s, line, sizeof(line));
    cr_expect_eq(mmr_tls_stream_read(s, buf, sizeof(buf), TIMEOUT_MS, &n), 0, "%s", mmr_err_msg());
    cr_expect_eq(n, 0, "close_notify reads as the end");
    cr_expect_eq(mmr_tls_stream_read(s, buf, sizeof(buf), TIMEOUT_MS, &n), 0);
    cr_expect_eq(n, 0);
    mmr_tls_stream_close(s);
    stop_server(&srv);

    start_server(&srv, new_server_tls(&p, MMR_TLS_CLIENT_CERT_NONE), SERVE_GREET_DROP);
    mmr_tls_client_forget_session(cli);
    s = connect_ok(cli, "127.0.0.1", srv.port);
    read_line(s, line, sizeof(line));
    cr_expect_eq(mmr_tls_stream_read(s, buf, sizeof(buf), TIMEOUT_MS, &n), MMR_ECONN);
    expect_contains(mmr_err_msg(), "the server closed the connection without close_notify");
    mmr_tls_stream_close(s);
    stop_server(&srv);

    mmr_tls_client_free(cli);
    free_pki(&p);
}

/* ---- the engine alone, over memory ------------------------------------------------ */

TestSuite(engine, .init = setup, .timeout = 120);

static void pump(struct mmr_tls_conn *from, struct mmr_tls_conn *to)
{
    size_t len;
    char *data = mmr_tls_conn_take_output(from, &len);
    if (data) {
        cr_assert_eq(mmr_tls_conn_feed(to, data, len), 0, "%s", mmr_err_msg());
        free(data);
    }
}

static void handshake_pair(struct mmr_tls_conn *client, struct mmr_tls_conn *server)
{
    for (int i = 0; i < 20; i++) {
        int a = mmr_tls_conn_handshake(client);
        cr_assert_geq(a, 0, "client: %s", mmr_err_msg());
        pump(client, server);
        int b = mmr_tls_conn_handshake(server);
        cr_assert_geq(b, 0, "server: %s", mmr_err_msg());
        pump(server, client);
        if (a == MMR_TLS_OK && b == MMR_TLS_OK)
            return;
    }
    cr_assert_fail("handshake did not finish");
}

Test(engine, pair_over_memory)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_server *tls = new_server_tls(&p, MMR_TLS_CLIENT_CERT_REQUIRED);
    struct mmr_tls_client *cli = new_client(p.root, NULL, p.device, p.device_key);
    struct mmr_tls_conn *server, *client;
    cr_assert_eq(mmr_tls_conn_new(tls, &server), 0);
    cr_assert_eq(mmr_tls_conn_new_client(cli, "localhost", &client), 0);
    size_t len;
    cr_expect_null(mmr_tls_conn_take_output(server, &len));
    cr_expect_eq(len, 0);
    cr_expect_eq(mmr_tls_conn_write(client, "x", 1), MMR_EINVAL, "before the handshake");
    struct mmr_cert_info info;
    cr_expect_eq(mmr_tls_conn_peer_cert(server, &info), MMR_EINVAL);
    cr_expect_str_eq(mmr_tls_conn_cipher(server), "");
    handshake_pair(client, server);

    cr_expect_eq(mmr_tls_conn_peer_cert(server, &info), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(info.cn, "device-0001");
    char *chain = NULL;
    cr_assert_eq(mmr_tls_conn_peer_chain_pem(server, &chain), 0);
    cr_expect_str_eq(chain, p.device);
    free(chain);

    /* 200 KB through, a slice at a time: the input bound holds. */
    size_t total = 200000, got = 0;
    char *data = mmr_malloc(total), *back = mmr_malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = (char)(i * 7);
    cr_assert_eq(mmr_tls_conn_write(client, data, total), 0);
    char *wire = mmr_tls_conn_take_output(client, &len);
    cr_assert_gt(len, total);
    for (size_t off = 0; off < len;) {
        size_t slice = len - off < 30000 ? len - off : 30000;
        cr_assert_eq(mmr_tls_conn_feed(server, wire + off, slice), 0, "%s", mmr_err_msg());
        off += slice;
        size_t n = 0;
        while (mmr_tls_conn_read(server, back + got, total - got, &n) == MMR_TLS_OK)
            got += n;
    }
    cr_expect_eq(got, total);
    cr_expect_eq(memcmp(back, data, total), 0);
    free(wire);
    free(back);
    free(data);

    /* close_notify: the other side reads EOF, this side writes no more. */
    cr_assert_eq(mmr_tls_conn_close_notify(client), 0);
    cr_expect_eq(mmr_tls_conn_write(client, "x", 1), MMR_EINVAL);
    pump(client, server);
    char buf[16];
    size_t n;
    cr_expect_eq(mmr_tls_conn_read(server, buf, sizeof(buf), &n), MMR_TLS_EOF);
    cr_expect_eq(mmr_tls_conn_read(server, buf, sizeof(buf), &n), MMR_TLS_EOF);

    mmr_tls_conn_free(client);
    mmr_tls_conn_free(server);
    mmr_tls_client_free(cli);
    mmr_tls_server_free(tls);
    free_pki(&p);
}

/* Server CPU per handshake, full (mutual TLS) and resumed: what sizes the
 * server for a fleet. Only the server engine's calls are timed. */
Test(engine, server_cost_per_handshake)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_server *tls = new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL);
    struct mmr_tls_client *cli = new_client(p.root, NULL, p.device, p.device_key);
    enum { ROUNDS = 10 };
    uint64_t spent[2] = {0, 0};
    for (int round = 0; round < 2 * ROUNDS; round++) {
        bool resume = round >= ROUNDS;
        if (!resume)
            mmr_tls_client_forget_session(cli);
        struct mmr_tls_conn *server, *client;
        cr_assert_eq(mmr_tls_conn_new(tls, &server), 0);
        cr_assert_eq(mmr_tls_conn_new_client(cli, "localhost", &client), 0);
        int a = MMR_TLS_WANT_INPUT, b = MMR_TLS_WANT_INPUT;
        for (int i = 0; i < 20 && (a != MMR_TLS_OK || b != MMR_TLS_OK); i++) {
            a = mmr_tls_conn_handshake(client);
            pump(client, server);
            uint64_t t0 = uv_hrtime();
            b = mmr_tls_conn_handshake(server);
            spent[resume] += uv_hrtime() - t0;
            pump(server, client);
            cr_assert(a >= 0 && b >= 0, "%s", mmr_err_msg());
        }
        cr_expect_eq(mmr_tls_conn_resumed(server), resume);
        struct mmr_cert_info info;
        cr_expect_eq(mmr_tls_conn_peer_cert(server, &info), 0, "%s", mmr_err_msg());
        mmr_tls_conn_free(client);
        mmr_tls_conn_free(server);
    }
    double full_ms = (double)spent[0] / ROUNDS / 1e6, resumed_ms = (double)spent[1] / ROUNDS / 1e6;
    cr_log_info("tls_server_cpu_full_handshake: %.2f ms (mutual TLS)", full_ms);
    cr_log_info("tls_server_cpu_resumed_handshake: %.3f ms (ratio %.0fx)", resumed_ms,
                full_ms / resumed_ms);
    cr_expect_lt(resumed_ms, full_ms);
    mmr_tls_client_free(cli);
    mmr_tls_server_free(tls);
    free_pki(&p);
}

/* A small deterministic generator (xorshift32), the same on every system. */
static uint32_t next_random(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

Test(engine, garbage_gets_a_clean_error)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_server *tls = new_server_tls(&p, MMR_TLS_CLIENT_CERT_OPTIONAL);
    struct mmr_tls_conn *c;

    cr_assert_eq(mmr_tls_conn_new(tls, &c), 0);
    const char *http = "GET /v1/checkin HTTP/1.1\r\nHost: localhost\r\n\r\n";
    cr_assert_eq(mmr_tls_conn_feed(c, http, strlen(http)), 0);
    char buf[64];
    size_t n;
    cr_expect_eq(mmr_tls_conn_read(c, buf, sizeof(buf), &n), MMR_EPROTO);
    cr_expect_str_eq(mmr_err_msg(),
                     "client sent plain text instead of TLS (it begins \"GET /v1/ch\")");
    mmr_err_clear();
    cr_expect_eq(mmr_tls_conn_handshake(c), MMR_EPROTO, "the failure sticks");
    expect_contains(mmr_err_msg(), "plain text");
    cr_expect_eq(mmr_tls_conn_feed(c, "x", 1), MMR_EPROTO);
    mmr_tls_conn_free(c);

    cr_assert_eq(mmr_tls_conn_new(tls, &c), 0);
    cr_assert_eq(mmr_tls_conn_feed(c, "\x00\x01\x02", 3), 0);
    cr_expect_eq(mmr_tls_conn_handshake(c), MMR_EPROTO);
    cr_expect_str_eq(mmr_err_msg(), "client sent data that is not TLS (first byte 0x00)");
    mmr_tls_conn_free(c);

    /* Records that look like TLS and are not: never a crash, always an
     * error or a wait for more. */
    uint32_t seed = 12345;
    for (int round = 0; round < 400; round++) {
        cr_assert_eq(mmr_tls_conn_new(tls, &c), 0);
        unsigned char junk[600];
        size_t len = 5 + (size_t)(next_random(&seed) % (sizeof(junk) - 5));
        for (size_t i = 0; i < len; i++)
            junk[i] = (unsigned char)next_random(&seed);
        junk[0] = 0x16;
        junk[1] = 0x03;
        junk[2] = (unsigned char)(next_random(&seed) % 4);
        if (round % 2) {
            /* A plausible length, so the parser gets to the handshake body. */
            junk[3] = (unsigned char)((len - 5) >> 8);
            junk[4] = (unsigned char)((len - 5) & 0xff);
            junk[5] = 0x01; /* ClientHello */
        }
        cr_assert_eq(mmr_tls_conn_feed(c, junk, len), 0);
        int rc = mmr_tls_conn_handshake(c);
        cr_expect(rc == MMR_TLS_WANT_INPUT || rc < 0, "round %d: rc %d", round, rc);
        cr_expect(rc != MMR_TLS_OK);
        if (rc < 0)
            cr_expect_neq(mmr_err_msg()[0], '\0');
        size_t out_len;
        free(mmr_tls_conn_take_output(c, &out_len));
        mmr_tls_conn_free(c);
    }
    mmr_tls_server_free(tls);
    free_pki(&p);
}

Test(engine, unread_input_is_bounded)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_server *tls = new_server_tls(&p, MMR_TLS_CLIENT_CERT_NONE);
    struct mmr_tls_conn *c;
    cr_assert_eq(mmr_tls_conn_new(tls, &c), 0);
    char *block = mmr_calloc(1, MMR_TLS_MAX_INPUT);
    block[0] = 0x16;
    block[1] = 0x03;
    cr_expect_eq(mmr_tls_conn_feed(c, block, MMR_TLS_MAX_INPUT - 1), 0);
    cr_expect_eq(mmr_tls_conn_feed(c, block, 1), 0);
    cr_expect_eq(mmr_tls_conn_feed(c, block, 1), MMR_ETOOBIG);
    expect_contains(mmr_err_msg(), "client sent more than");
    cr_expect_lt(mmr_tls_conn_handshake(c), 0, "the connection is finished");
    free(block);
    mmr_tls_conn_free(c);
    mmr_tls_server_free(tls);
    free_pki(&p);
}

/* ---- configurations ---------------------------------------------------------------- */

TestSuite(config, .init = setup);

Test(config, server_refuses_bad_settings)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_server *tls = NULL;
    struct mmr_tls_server_opts o = {.cert_chain_pem = p.server_chain,
                                    .key = p.server_key,
                                    .client_ca_pem = p.ca,
                                    .client_auth = MMR_TLS_CLIENT_CERT_REQUIRED};
    struct mmr_tls_server_opts bad;

    bad = o;
    bad.key = p.device_key;
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);
    expect_contains(mmr_err_msg(), "the key does not belong to server certificate 'mamori-server'");

    bad = o;
    char *cut = mmr_strndup(p.server_chain, strlen(p.server_chain) - 40);
    bad.cert_chain_pem = cut;
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);
    expect_contains(mmr_err_msg(), "truncated");
    free(cut);

    bad = o;
    bad.client_ca_pem = NULL;
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);
    bad.client_ca_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);

    bad = o;
    bad.cert_chain_pem = NULL;
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);
    bad = o;
    bad.key = NULL;
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);
    bad = o;
    bad.client_auth = (enum mmr_tls_client_auth)7;
    cr_expect_eq(mmr_tls_server_new(&bad, &tls), MMR_EINVAL);
    cr_expect_null(tls);
    free_pki(&p);
}

Test(config, client_refuses_bad_settings)
{
    struct pki p;
    make_pki(&p, local_sans, 2);
    struct mmr_tls_client *cli = NULL;
    struct mmr_cert_info ca;
    cr_assert_eq(mmr_cert_read_info(p.ca, &ca), 0);
    struct mmr_tls_client_opts o = {0};
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL, "no trust at all");
    o.ca_pem = p.root;
    o.pin_sha256 = ca.sha256_hex;
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL, "both kinds of trust");
    o.ca_pem = NULL;
    o.pin_sha256 = "sha256:abcd";
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL);
    expect_contains(mmr_err_msg(), "CA pin must be a SHA-256 fingerprint");
    o.pin_sha256 = ca.sha256_hex;
    o.cert_chain_pem = p.device;
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL, "certificate without key");
    o.key = p.server_key;
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL, "someone else's key");
    o.cert_chain_pem = p.server_chain;
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL, "a server certificate");
    expect_contains(mmr_err_msg(), "not issued for this use");
    o.ca_pem = "garbage";
    o.pin_sha256 = NULL;
    o.cert_chain_pem = NULL;
    o.key = NULL;
    cr_expect_eq(mmr_tls_client_new(&o, &cli), MMR_EINVAL);
    cr_expect_null(cli);

    o.ca_pem = p.root;
    cr_assert_eq(mmr_tls_client_new(&o, &cli), 0);
    struct mmr_tls_conn *c = NULL;
    cr_expect_eq(mmr_tls_conn_new_client(cli, "", &c), MMR_EINVAL);
    cr_expect_null(c);
    mmr_tls_client_free(cli);
    free_pki(&p);
}
