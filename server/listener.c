/* The server's TLS listener: TCP accept, TLS engine, HTTP/1.1 keep-alive,
 * dispatch to the API on the thread pool, limits and timeouts. Everything
 * here runs on the loop thread except mmr_api_handle. */
#include "server/listener.h"

#include <stdlib.h>
#include <string.h>

#include "server/ca.h"
#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/tls.h"

#define READ_CHUNK (64 * 1024)

struct mmr_listener {
    struct mmr_server *srv;
    uv_tcp_t tcp;
    struct mmr_tls_server *tls;
    struct mmr_http_limits limits;
    struct conn *conns;
    struct mmr_listener_stats stats;
    bool stopping;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct mmr_listener *l;
    struct conn *prev, *next;
    struct mmr_tls_conn *tls;
    struct mmr_http_parser *http;
    struct mmr_buf plain;   /* plaintext received and not yet parsed */
    char peer[64];
    int refs;               /* handles still open + work in flight + writes */
    int open_handles;
    bool handshake_counted;
    bool busy;              /* a request is on the thread pool */
    bool closing;
    bool close_after_write; /* the last response said Connection: close */
    bool request_timer;     /* the timer runs the request deadline, not the idle one */
    int writes;
};

struct job {
    uv_work_t work;
    struct conn *c;
    struct mmr_http_message msg;
    struct mmr_buf body; /* decoded body when gzipped */
    struct mmr_api_request req;
    struct mmr_api_response res;
    bool hostile; /* refused before the API (bad encoding): close after replying */
};

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    mmr_tls_conn_free(c->tls);
    mmr_http_parser_free(c->http);
    mmr_buf_free(&c->plain);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles == 0) {
        struct mmr_listener *l = c->l;
        if (c->prev)
            c->prev->next = c->next;
        else
            l->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        l->stats.connections--;
    }
    conn_unref(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

struct write_req {
    uv_write_t req;
    char *data;
};

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = req->data;
    free(w->data);
    free(w);
    c->writes--;
    if (status < 0 || (c->close_after_write && c->writes == 0 && !c->busy))
        conn_close(c);
    conn_unref(c);
}

/* Sends whatever ciphertext the TLS engine has produced. */
static void flush(struct conn *c)
{
    size_t len;
    char *data = mmr_tls_conn_take_output(c->tls, &len);
    if (!data)
        return;
    if (c->closing) {
        free(data);
        return;
    }
    struct write_req *w = mmr_malloc(sizeof(*w));
    w->data = data;
    w->req.data = c;
    uv_buf_t buf = uv_buf_init(data, (unsigned)len);
    c->refs++;
    c->writes++;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0) {
        free(data);
        free(w);
        c->writes--;
        c->refs--;
        conn_close(c);
    }
}

static void arm_timer(struct conn *c);

static void send_response(struct conn *c, int status, const struct mmr_http_header *headers,
                          size_t nheaders, const void *body, size_t len, bool keep_alive)
{
    struct mmr_buf out = {0};
    if (mmr_http_write_response(&out, status, headers, nheaders, body, len, keep_alive) == 0 &&
        mmr_tls_conn_write(c->tls, out.data, out.len) == 0) {
        if (!keep_alive) {
            c->close_after_write = true;
            mmr_tls_conn_close_notify(c->tls);
        }
        flush(c);
    } else {
        conn_close(c);
    }
    mmr_buf_free(&out);
}

/* A refusal before the API: answer, then close. */
static void refuse(struct conn *c, int status, const char *message)
{
    c->l->stats.refused++;
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", "EPROTO", "message", message);
    char *text = mmr_json_dump_line(body);
    json_decref(body);
    struct mmr_http_header h = {"Content-Type", "application/json"};
    send_response(c, status, &h, 1, text, strlen(text), false);
    free(text);
}

static void process(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    /* Decompression is CPU work on up to max_body bytes: here, off the loop. */
    const char *enc = mmr_http_message_header(&j->msg, "Content-Encoding");
    if (enc && mmr_gzip_is_encoding(enc)) {
        int rc = mmr_gzip_decompress(j->msg.body, j->msg.body_len, j->c->l->srv->cfg.max_body,
                                     &j->body);
        if (rc < 0) {
            mmr_api_error(&j->res, rc == MMR_ETOOBIG ? 413 : 400, rc, "bad_encoding",
                          mmr_err_msg());
            j->hostile = true;
            return;
        }
        j->req.body = j->body.data ? j->body.data : "";
        j->req.body_len = j->body.len;
    }
    mmr_api_handle(j->c->l->srv, &j->req, &j->res);
}

static void job_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct conn *c = j->c;
    c->busy = false;
    c->l->stats.requests++;
    if (status < 0 && !j->res.status)
        mmr_api_error(&j->res, 503, MMR_EIO, "cancelled", "server is stopping");
    if (!c->closing) {
        char *body = NULL;
        size_t len = 0;
        if (j->res.json) {
            body = mmr_json_dump_line(j->res.json);
            len = strlen(body);
        } else if (j->res.raw) {
            body = j->res.raw;
            j->res.raw = NULL;
            len = j->res.raw_len;
        }
        struct mmr_http_header headers[MMR_API_MAX_HEADERS + 1];
        size_t n = 0;
        if (body && j->res.content_type)
            headers[n++] = (struct mmr_http_header){"Content-Type", j->res.content_type};
        for (size_t i = 0; i < j->res.header_count; i++)
            headers[n++] = j->res.headers[i];
        bool keep = j->msg.keep_alive && !c->l->stopping && !j->hostile;
        if (j->hostile)
            c->l->stats.refused++;
        send_response(c, j->res.status ? j->res.status : 500, headers, n, body, len, keep);
        free(body);
        if (keep)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    mmr_api_response_free(&j->res);
    mmr_http_message_free(&j->msg);
    mmr_buf_free(&j->body);
    free(j);
    if (!c->closing && !c->close_after_write)
        process(c); /* pipelined bytes may already hold the next request */
    conn_unref(c);
}

/* A complete request: decode, identify the peer, and run the API. */
static void dispatch(struct conn *c)
{
    struct job *j = mmr_calloc(1, sizeof(*j));
    j->c = c;
    j->work.data = j;
    mmr_http_parser_take(c->http, &j->msg);
    j->req.http = &j->msg;
    j->req.peer = c->peer;
    j->req.body = j->msg.body;
    j->req.body_len = j->msg.body_len;
    const char *enc = mmr_http_message_header(&j->msg, "Content-Encoding");
    if (enc && !mmr_gzip_is_encoding(enc) && strcmp(enc, "identity") != 0) {
        refuse(c, 415, "unsupported Content-Encoding");
        mmr_http_message_free(&j->msg);
        free(j);
        return;
    }
    int cert_rc = mmr_tls_conn_peer_cert(c->tls, &j->req.cert);
    j->req.has_cert = cert_rc == 0;
    if (cert_rc == MMR_EPERM)
        snprintf(j->req.cert_error, sizeof(j->req.cert_error), "%s", mmr_err_msg());
    c->busy = true;
    c->refs++;
    if (uv_queue_work(c->l->srv->loop, &j->work, job_work, job_done) < 0) {
        c->busy = false;
        c->refs--;
        refuse(c, 503, "server is stopping");
        mmr_http_message_free(&j->msg);
        mmr_buf_free(&j->body);
        free(j);
    }
}

/* Parses buffered plaintext; dispatches at most one request at a time. */
static void process(struct conn *c)
{
    while (!c->busy && !c->closing && c->plain.len > 0) {
        size_t used = 0;
        int rc = mmr_http_parser_feed(c->http, c->plain.data, c->plain.len, &used);
        memmove(c->plain.data, c->plain.data + used, c->plain.len - used);
        c->plain.len -= used;
        if (rc < 0) {
            int status = mmr_http_parser_status(c->http);
            mmr_info("listener", "malformed request", "peer=%s status=%d error=\"%s\"", c->peer,
                     status, mmr_err_msg());
            refuse(c, status ? status : 400, mmr_err_msg());
            return;
        }
        if (mmr_http_parser_wants_continue(c->http)) {
            /* curl asks before sending a body over ~1 MiB; saying nothing
             * costs it a second of waiting. Limits were checked already. */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (mmr_tls_conn_write(c->tls, cont, sizeof(cont) - 1) == 0)
                flush(c);
        }
        if (rc == MMR_HTTP_DONE)
            dispatch(c);
        else
            break;
    }
    if (!c->busy && !c->closing)
        arm_timer(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = mmr_malloc(READ_CHUNK);
    buf->len = READ_CHUNK;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        free(buf->base);
        conn_close(c);
        return;
    }
    if (n == 0 || c->closing) {
        free(buf->base);
        return;
    }
    int rc = mmr_tls_conn_feed(c->tls, buf->base, (size_t)n);
    free(buf->base);
    char plain[16 * 1024];
    size_t got = 0;
    while (rc >= 0) {
        rc = mmr_tls_conn_read(c->tls, plain, sizeof(plain), &got);
        if (rc == MMR_TLS_OK && got > 0) {
            if (c->plain.len + got > c->l->limits.max_body + c->l->limits.max_header_bytes +
                                         64 * 1024) {
                rc = mmr_err_set(MMR_ETOOBIG, "client sends faster than it reads replies");
                break;
            }
            mmr_buf_append(&c->plain, plain, got);
            continue;
        }
        break;
    }
    if (!c->handshake_counted && mmr_tls_conn_handshake_done(c->tls)) {
        c->handshake_counted = true;
        if (mmr_tls_conn_resumed(c->tls))
            c->l->stats.handshakes_resumed++;
        else
            c->l->stats.handshakes_full++;
    }
    flush(c);
    if (rc < 0) {
        mmr_info("listener", "TLS connection refused", "peer=%s error=\"%s\"", c->peer,
                 mmr_err_msg());
        c->l->stats.refused++;
        conn_close(c);
        return;
    }
    if (rc == MMR_TLS_EOF) {
        conn_close(c);
        return;
    }
    process(c);
    /* While a request runs, read no further: back-pressure on the client. */
    if (c->busy)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->busy)
        return;
    bool mid_request = !mmr_tls_conn_handshake_done(c->tls) || mmr_http_parser_busy(c->http) ||
                       c->plain.len > 0;
    mmr_info("listener", mid_request ? "request too slow, closing" : "idle connection closed",
             "peer=%s", c->peer);
    if (mid_request && mmr_tls_conn_handshake_done(c->tls))
        refuse(c, 408, "request timeout");
    else
        conn_close(c);
}

static void arm_timer(struct conn *c)
{
    const struct mmr_server_config *cfg = &c->l->srv->cfg;
    bool mid_request = !mmr_tls_conn_handshake_done(c->tls) || mmr_http_parser_busy(c->http) ||
                       c->plain.len > 0;
    /* A slow request keeps its original deadline: trickling bytes must not
     * extend it (slowloris); only a fresh request gets a fresh one. */
    if (mid_request && c->request_timer && uv_is_active((uv_handle_t *)&c->timer))
        return;
    c->request_timer = mid_request;
    uv_timer_start(&c->timer, on_timer,
                   (uint64_t)(mid_request ? cfg->request_timeout_ms : cfg->idle_timeout_ms), 0);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct mmr_listener *l = server->data;
    if (status < 0) {
        mmr_warn("listener", "accept failed", "error=\"%s\"", uv_strerror(status));
        return;
    }
    struct conn *c = mmr_calloc(1, sizeof(*c));
    c->l = l;
    c->refs = 2;
    c->open_handles = 2;
    uv_tcp_init(l->srv->loop, &c->tcp);
    uv_timer_init(l->srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->stats.connections++;
    l->stats.accepted++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage sa;
    int salen = sizeof(sa);
    char ip[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        }
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    if ((int64_t)l->stats.connections > l->srv->cfg.max_connections || l->stopping) {
        mmr_warn("listener", "connection limit reached, refusing", "peer=%s", c->peer);
        l->stats.refused++;
        conn_close(c);
        return;
    }
    c->http = mmr_http_parser_new(MMR_HTTP_REQUEST, &l->limits);
    if (mmr_tls_conn_new(l->tls, &c->tls) < 0) {
        mmr_error("listener", "cannot start TLS", "error=\"%s\"", mmr_err_msg());
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    arm_timer(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* "host:port" or "[v6]:port" into a socket address. */
static int parse_listen(const char *listen, struct sockaddr_storage *sa)
{
    const char *colon = strrchr(listen, ':');
    if (!colon)
        return mmr_err_set(MMR_EINVAL, "listen address '%s' needs a port (HOST:PORT)", listen);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return mmr_err_set(MMR_EINVAL, "listen address '%s' has a bad port", listen);
    char host[64];
    size_t hlen = (size_t)(colon - listen);
    if (hlen >= sizeof(host))
        return mmr_err_set(MMR_EINVAL, "listen address '%s' is too long", listen);
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        host[hlen - 1] = '\0';
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)sa) == 0)
            return 0;
    } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0) {
        return 0;
    }
    return mmr_err_set(MMR_EINVAL, "listen address '%s' is not an IP address and port", listen);
}

int mmr_listener_start(struct mmr_server *srv, const char *listen, struct mmr_listener **out)
{
    struct mmr_listener *l = mmr_calloc(1, sizeof(*l));
    l->srv = srv;
    *out = l;
    mmr_http_limits_default(&l->limits);
    l->limits.max_body = srv->cfg.max_body;

    struct mmr_key *key = NULL;
    int rc = mmr_key_from_pem(mmr_ca_server_key_pem(srv->ca), &key);
    if (rc == 0) {
        struct mmr_tls_server_opts opts = {
            .cert_chain_pem = mmr_ca_server_chain_pem(srv->ca), .key = key,
            .client_ca_pem = mmr_ca_issuing_pem(srv->ca),
            .client_auth = MMR_TLS_CLIENT_CERT_OPTIONAL};
        rc = mmr_tls_server_new(&opts, &l->tls);
    }
    mmr_key_free(key);
    if (rc < 0)
        return rc;

    struct sockaddr_storage sa;
    if ((rc = parse_listen(listen, &sa)) < 0)
        return rc;
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    int uvrc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&sa, 0);
    if (uvrc == 0)
        uvrc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
    if (uvrc < 0) {
        uv_close((uv_handle_t *)&l->tcp, NULL);
        l->stopping = true;
        return mmr_err_set(uvrc == UV_EADDRINUSE ? MMR_EBUSY : MMR_EIO, "cannot listen on %s: %s",
                           listen, uv_strerror(uvrc));
    }
    return 0;
}

void mmr_listener_stop(struct mmr_listener *l)
{
    if (!l || l->stopping)
        return;
    l->stopping = true;
    uv_close((uv_handle_t *)&l->tcp, NULL);
    for (struct conn *c = l->conns; c; c = c->next)
        if (!c->busy)
            conn_close(c);
}

void mmr_listener_free(struct mmr_listener *l)
{
    if (!l)
        return;
    mmr_tls_server_free(l->tls);
    free(l);
}

void mmr_listener_stats(const struct mmr_listener *l, struct mmr_listener_stats *out)
{
    *out = l->stats;
}
