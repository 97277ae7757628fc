/* HTTPS/1.1 keep-alive client over the blocking TLS stream. */
#include "shared/https.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/token.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_RESPONSE (32u * 1024 * 1024)
#define GZIP_MIN_BYTES 512

struct mmr_https {
    struct mmr_https_opts opts;
    char *host;
    uint16_t port;
    char *host_header;
    struct mmr_tls_stream *stream;
    struct mmr_https_stats stats;
};

int mmr_https_new(const struct mmr_https_opts *opts, struct mmr_https **out)
{
    char *host, *port;
    int rc = mmr_url_split(opts->url, &host, &port);
    if (rc < 0)
        return rc;
    struct mmr_https *h = mmr_calloc(1, sizeof(*h));
    h->opts = *opts;
    if (!h->opts.timeout_ms)
        h->opts.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!h->opts.max_response)
        h->opts.max_response = DEFAULT_MAX_RESPONSE;
    h->host = host;
    h->port = (uint16_t)atoi(port);
    h->host_header = strchr(host, ':') ? mmr_asprintf("[%s]:%s", host, port)
                                       : mmr_asprintf("%s:%s", host, port);
    free(port);
    *out = h;
    return 0;
}

void mmr_https_disconnect(struct mmr_https *h)
{
    if (h->stream)
        mmr_tls_stream_close(h->stream);
    h->stream = NULL;
}

void mmr_https_free(struct mmr_https *h)
{
    if (!h)
        return;
    mmr_https_disconnect(h);
    free(h->host);
    free(h->host_header);
    free(h);
}

struct mmr_tls_conn *mmr_https_tls(struct mmr_https *h)
{
    return h->stream ? mmr_tls_stream_conn(h->stream) : NULL;
}

void mmr_https_stats(const struct mmr_https *h, struct mmr_https_stats *out)
{
    *out = h->stats;
}

static int connect_stream(struct mmr_https *h, int timeout_ms)
{
    int rc = mmr_tls_stream_connect(h->opts.tls, h->host, h->port, timeout_ms, &h->stream);
    if (rc < 0)
        return rc;
    h->stats.connects++;
    if (mmr_tls_conn_resumed(mmr_tls_stream_conn(h->stream)))
        h->stats.resumed++;
    return 0;
}

/* One attempt on the current stream. *got_any says whether any response
 * byte arrived (a stale connection shows none). */
static int exchange(struct mmr_https *h, const struct mmr_buf *req, uint64_t deadline,
                    bool head, struct mmr_http_message *resp, bool *got_any)
{
    *got_any = false;
    int64_t left = (int64_t)(deadline - mmr_time_mono_ms());
    if (left <= 0)
        return mmr_err_set(MMR_ETIMEDOUT, "request to %s timed out", h->host_header);
    int rc = mmr_tls_stream_write_all(h->stream, req->data, req->len, (int)left);
    if (rc < 0)
        return rc;
    struct mmr_http_limits limits;
    mmr_http_limits_default(&limits);
    limits.max_body = h->opts.max_response;
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_RESPONSE, &limits);
    if (head)
        mmr_http_parser_expect_head(p);
    char buf[16 * 1024];
    for (;;) {
        left = (int64_t)(deadline - mmr_time_mono_ms());
        if (left <= 0) {
            rc = mmr_err_set(MMR_ETIMEDOUT, "%s did not answer in time", h->host_header);
            break;
        }
        size_t n = 0;
        rc = mmr_tls_stream_read(h->stream, buf, sizeof(buf), (int)left, &n);
        if (rc < 0)
            break;
        if (n == 0) {
            rc = mmr_http_parser_finish(p);
            if (rc == MMR_HTTP_MORE)
                rc = mmr_err_set(MMR_ECONN, "%s closed the connection", h->host_header);
            if (rc == MMR_HTTP_DONE)
                rc = 0;
            break;
        }
        *got_any = true;
        h->stats.bytes_received += n;
        size_t used = 0;
        rc = mmr_http_parser_feed(p, buf, n, &used);
        if (rc < 0) {
            rc = mmr_err_wrap(MMR_EPROTO, "malformed response from %s", h->host_header);
            break;
        }
        if (rc == MMR_HTTP_DONE) {
            rc = 0;
            break;
        }
    }
    if (rc == 0) {
        mmr_http_parser_take(p, resp);
        if (!resp->keep_alive)
            mmr_https_disconnect(h);
    }
    mmr_http_parser_free(p);
    return rc;
}

int mmr_https_request(struct mmr_https *h, const char *method, const char *target,
                      const struct mmr_http_header *headers, size_t nheaders, const void *body,
                      size_t len, struct mmr_http_message *resp)
{
    memset(resp, 0, sizeof(*resp));
    struct mmr_buf req = {0};
    int rc = mmr_http_write_request(&req, method, h->host_header, target, headers, nheaders,
                                    body, len, true);
    if (rc < 0)
        return rc;
    uint64_t deadline = mmr_time_mono_ms() + (uint64_t)h->opts.timeout_ms;
    bool head = strcmp(method, "HEAD") == 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = h->stream != NULL;
        if (!h->stream && (rc = connect_stream(h, h->opts.timeout_ms)) < 0)
            break;
        bool got_any;
        rc = exchange(h, &req, deadline, head, resp, &got_any);
        if (rc == 0) {
            h->stats.requests++;
            h->stats.bytes_sent += req.len;
            break;
        }
        mmr_https_disconnect(h);
        /* Only a reused connection that died silently earns a second try. */
        if (!reused || got_any || rc == MMR_ETIMEDOUT)
            break;
    }
    mmr_buf_free(&req);
    return rc;
}

int mmr_https_json(struct mmr_https *h, const char *method, const char *target,
                   const json_t *body, bool gzip, int *status, json_t **reply)
{
    *reply = NULL;
    *status = 0;
    char *text = body ? mmr_json_dump_line(body) : NULL;
    struct mmr_buf packed = {0};
    const void *payload = text;
    size_t len = text ? strlen(text) : 0;
    struct mmr_http_header hdrs[2];
    size_t n = 0;
    if (text) {
        hdrs[n++] = (struct mmr_http_header){"Content-Type", "application/json"};
        /* Small bodies grow when compressed (gzip's own 18 bytes). */
        if (gzip && len >= GZIP_MIN_BYTES &&
            mmr_gzip_compress(text, len, MMR_GZIP_LEVEL_DEFAULT, &packed) == 0 &&
            packed.len < len) {
            hdrs[n++] = (struct mmr_http_header){"Content-Encoding", "gzip"};
            payload = packed.data;
            len = packed.len;
        }
    }
    struct mmr_http_message resp;
    int rc = mmr_https_request(h, method, target, hdrs, n, payload, len, &resp);
    free(text);
    mmr_buf_free(&packed);
    if (rc < 0)
        return rc;
    *status = resp.status;
    if (resp.body_len > 0)
        mmr_json_parse(resp.body, resp.body_len, MMR_JSON_MAX_DEPTH, reply);
    mmr_http_message_free(&resp);
    return 0;
}

const char *mmr_https_error_message(const json_t *reply, const char *fallback)
{
    const char *m = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
    return m ? m : fallback;
}

const char *mmr_https_error_reason(const json_t *reply)
{
    const char *r = json_string_value(json_object_get(json_object_get(reply, "error"), "reason"));
    return r ? r : "";
}
