/* Integration: bad input never takes mamori-server down. Each case sends one
 * kind of hostile or broken traffic, expects a clean refusal and a log line,
 * and then proves that a real agent still checks in and an admin call works. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fleet.h"
#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/pki.h"
#include "shared/platform.h"
#include "shared/tls.h"

#define REQUEST_TIMEOUT_MS 2000

static struct fleet fl;
static struct fleet_server srv;
static struct fleet_agent agent; /* a real agent, running and enrolled */

static void setup(void)
{
    fleet_init(&fl);
    fleet_server_init(&fl, &srv, "\n[limits]\nrequest_timeout = 2s\n");
    fleet_server_start(&srv);
    char *token = fleet_token_create(&srv, "City", "desktops", 10, NULL);
    fleet_agent_init(&fl, &agent, "laptop", &srv, NULL, token, NULL);
    free(token);
    fleet_agent_start_enrolled(&agent);
}

static void teardown(void)
{
    fleet_agent_stop(&agent);
    fleet_server_stop(&srv);
    fleet_cleanup(&fl);
}

TestSuite(robust, .init = setup, .fini = teardown, .timeout = 240);

/* ---- after every case: the server still serves ---------------------------------- */

struct checkin_wait {
    char *before; /* checkin.last before the sync, or NULL */
    json_t *last;
};

static bool checked_in_again(void *ud)
{
    struct checkin_wait *w = ud;
    json_decref(w->last);
    w->last = fleet_agent_status(&agent);
    const char *last = fleet_json_str(w->last, "checkin.last");
    const char *result = fleet_json_str(w->last, "checkin.result");
    return last && result && strcmp(result, "ok") == 0 &&
           (!w->before || strcmp(last, w->before) != 0);
}

/* A fresh check-in by the real agent, and an admin call, both succeed. */
static void expect_still_serving(const char *after_what)
{
    cr_assert(fleet_server_answers(&srv), "admin API dead after %s", after_what);
    json_t *st = fleet_agent_status(&agent);
    struct checkin_wait w = {0};
    const char *before = fleet_json_str(st, "checkin.last");
    w.before = before ? mmr_strdup(before) : NULL;
    json_decref(st);
    /* checkin.last has millisecond resolution: make sure it can move. */
    usleep(5 * 1000);
    struct proc_result res;
    int rc = fleet_ctl(&agent, &res, "sync", NULL);
    cr_assert_eq(rc, 0, "mamorictl sync: %s", res.err);
    proc_result_free(&res);
    bool ok = fleet_wait_for(checked_in_again, &w, 15000);
    char *text = w.last ? mmr_json_dump_pretty(fleet_json_path(w.last, "checkin")) : NULL;
    cr_assert(ok, "the agent could not check in after %s: %s", after_what, text ? text : "");
    free(text);
    json_decref(w.last);
    free(w.before);
    cr_assert(fleet_server_answers(&srv));
}

/* The server log has a line with all of the given words. */
static bool log_has(const char *a, const char *b)
{
    char *path = mmr_path_join(srv.dir, "logs/server.log");
    char *text = fleet_read_file(path, NULL);
    free(path);
    bool found = false;
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line && !found;
         line = strtok_r(NULL, "\n", &save))
        found = strstr(line, a) && (!b || strstr(line, b));
    free(text);
    return found;
}

/* ---- raw TCP -------------------------------------------------------------------------- */

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

static void send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        cr_assert(n > 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* Reads until the server closes (true) or timeout_ms passes (false). */
static bool wait_closed(int fd, int timeout_ms, size_t *bytes_read)
{
    uint64_t deadline = mmr_time_mono_ms() + (uint64_t)timeout_ms;
    char buf[4096];
    *bytes_read = 0;
    for (;;) {
        uint64_t now = mmr_time_mono_ms();
        if (now >= deadline)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return true; /* EOF or reset */
        *bytes_read += (size_t)n;
    }
}

/* ---- raw TLS ------------------------------------------------------------------------------ */

static struct mmr_tls_client *tls_client(const char *cert_pem, const char *key_pem)
{
    char *root_path = mmr_path_join(srv.dir, "pki/root.crt");
    char *root = fleet_read_file(root_path, NULL);
    free(root_path);
    struct mmr_key *key = NULL;
    if (key_pem)
        cr_assert_eq(mmr_key_from_pem(key_pem, &key), 0, "%s", mmr_err_msg());
    struct mmr_tls_client_opts o = {.ca_pem = root, .cert_chain_pem = cert_pem, .key = key};
    struct mmr_tls_client *cli = NULL;
    cr_assert_eq(mmr_tls_client_new(&o, &cli), 0, "%s", mmr_err_msg());
    mmr_key_free(key);
    free(root);
    return cli;
}

static struct mmr_tls_stream *tls_connect(struct mmr_tls_client *cli)
{
    struct mmr_tls_stream *s = NULL;
    cr_assert_eq(mmr_tls_stream_connect(cli, "127.0.0.1", (uint16_t)srv.port, fleet_ms(10000), &s),
                 0, "%s", mmr_err_msg());
    return s;
}

/* Reads what the server sends until it closes or timeout_ms passes; returns
 * it (allocated); *closed tells whether the server closed. */
static char *tls_read_until_close(struct mmr_tls_stream *s, int timeout_ms, bool *closed)
{
    struct mmr_buf got = {0};
    mmr_buf_append(&got, "", 0);
    uint64_t deadline = mmr_time_mono_ms() + (uint64_t)timeout_ms;
    *closed = false;
    while (mmr_time_mono_ms() < deadline) {
        char buf[4096];
        size_t n = 0;
        int rc =
            mmr_tls_stream_read(s, buf, sizeof(buf), (int)(deadline - mmr_time_mono_ms()) + 1, &n);
        if (rc == MMR_ETIMEDOUT)
            break;
        if (rc < 0 || n == 0) {
            *closed = true;
            break;
        }
        mmr_buf_append(&got, buf, n);
    }
    return got.data;
}

static int status_of(const char *response)
{
    int status = 0;
    if (sscanf(response, "HTTP/1.1 %d", &status) != 1)
        return -1;
    return status;
}

/* Sends raw bytes over TLS and expects `status`, then the server's close. */
static void expect_refusal(struct mmr_tls_client *cli, const void *req, size_t len, int status)
{
    struct mmr_tls_stream *s = tls_connect(cli);
    cr_assert_eq(mmr_tls_stream_write_all(s, req, len, fleet_ms(10000)), 0, "%s", mmr_err_msg());
    bool closed;
    char *resp = tls_read_until_close(s, fleet_ms(10000), &closed);
    cr_expect_eq(status_of(resp), status, "response: %.200s", resp);
    cr_expect(closed, "the server kept the connection after refusing");
    const char *body = strstr(resp, "\r\n\r\n");
    cr_log_info("%d: %.160s", status, body ? body + 4 : "");
    free(resp);
    mmr_tls_stream_close(s);
}

static char *agent_file(const char *name)
{
    char *path = fleet_agent_path(&agent, name);
    char *text = fleet_read_file(path, NULL);
    free(path);
    cr_assert(text, "no %s", name);
    return text;
}

/* ---- the cases ----------------------------------------------------------------------------- */

Test(robust, plain_text_on_the_tls_port)
{
    static const char http[] = "GET /admin/v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    int fd = tcp_connect();
    send_all(fd, http, sizeof(http) - 1);
    size_t n;
    cr_expect(wait_closed(fd, fleet_ms(5000), &n), "the server kept a plain-text connection");
    close(fd);
    cr_expect(log_has("TLS connection refused", "plain text"), "no log line for plain text");

    /* Binary noise shaped like nothing at all. */
    uint8_t noise[4096];
    mmr_random_bytes(noise, sizeof(noise));
    noise[0] = 0x16; /* a handshake record type, then garbage */
    fd = tcp_connect();
    send_all(fd, noise, sizeof(noise));
    cr_expect(wait_closed(fd, fleet_ms(5000), &n), "the server kept a garbage connection");
    close(fd);
    expect_still_serving("plain text and noise on the TLS port");
}

Test(robust, no_client_certificate)
{
    struct fleet_client c;
    fleet_client_open(&c, &srv, NULL, NULL);
    static const char *const paths[][2] = {{"POST", "/v1/checkin"},
                                           {"POST", "/v1/events"},
                                           {"GET", "/v1/policy"},
                                           {"POST", "/v1/renew"}};
    for (size_t i = 0; i < 4; i++) {
        json_t *reply = NULL;
        bool post = strcmp(paths[i][0], "POST") == 0;
        int status = fleet_client_call(&c, paths[i][0], paths[i][1], post ? "{}" : NULL,
                                       post ? 2 : 0, &reply);
        cr_expect_eq(status, 401, "%s %s: %d", paths[i][0], paths[i][1], status);
        cr_expect_str_eq(mmr_https_error_reason(reply), "no_certificate");
        json_decref(reply);
    }
    /* And the admin API without its token. */
    cr_expect_eq(fleet_client_call(&c, "GET", "/admin/v1/devices", NULL, 0, NULL), 401);
    fleet_client_close(&c);
    cr_expect(log_has("request refused", "status=401"));
    expect_still_serving("calls without a certificate");
}

Test(robust, certificate_from_a_foreign_ca)
{
    /* A look-alike CA and a certificate naming the real device, with its
     * serial: only the issuer differs. */
    char *real = agent_file("device.crt");
    struct mmr_cert_info info;
    cr_assert_eq(mmr_cert_read_info(real, &info), 0);
    uint8_t serial[MMR_CERT_SERIAL_MAX];
    size_t serial_len = strlen(info.serial_hex) / 2;
    cr_assert_eq(mmr_hex_decode(info.serial_hex, serial, serial_len), 0);

    struct mmr_key *ca_key = NULL, *dev_key = NULL;
    cr_assert_eq(mmr_key_generate(&ca_key), 0);
    cr_assert_eq(mmr_key_generate(&dev_key), 0);
    int64_t now = mmr_time_now_ms();
    struct mmr_cert_spec ca_spec = {.kind = MMR_CERT_CA,
                                    .cn = "Mamori Issuing CA",
                                    .org = info.org,
                                    .not_before_ms = now - 3600000,
                                    .not_after_ms = now + 86400000,
                                    .max_path_len = 0};
    char *ca_pem = NULL, *leaf = NULL;
    cr_assert_eq(mmr_cert_issue(&ca_spec, ca_key, ca_key, NULL, &ca_pem), 0, "%s", mmr_err_msg());
    struct mmr_cert_spec leaf_spec = {.kind = MMR_CERT_CLIENT,
                                      .cn = info.cn,
                                      .org = info.org,
                                      .serial = serial,
                                      .serial_len = serial_len,
                                      .not_before_ms = now - 3600000,
                                      .not_after_ms = now + 86400000};
    cr_assert_eq(mmr_cert_issue(&leaf_spec, dev_key, ca_key, ca_pem, &leaf), 0, "%s",
                 mmr_err_msg());
    char *chain = mmr_asprintf("%s%s", leaf, ca_pem);
    char *key_pem = NULL;
    char *key_path = mmr_path_join(fl.root, "foreign.key");
    cr_assert_eq(mmr_key_save(dev_key, key_path), 0);
    key_pem = fleet_read_file(key_path, NULL);

    struct fleet_client c;
    fleet_client_open(&c, &srv, chain, key_pem);
    json_t *reply = NULL;
    int status = fleet_client_call(&c, "POST", "/v1/checkin", "{}", 2, &reply);
    /* Refused either in the handshake or by the API, never served. */
    cr_expect(status < 0 || status == 403, "status %d", status);
    if (status > 0) {
        cr_expect_str_eq(mmr_https_error_reason(reply), "cert_invalid");
        cr_expect(strstr(mmr_https_error_message(reply, ""), "not signed"), "reply: %s",
                  mmr_https_error_message(reply, "(none)"));
        cr_log_info("foreign certificate: %d %s", status, mmr_https_error_message(reply, ""));
    }
    json_decref(reply);
    fleet_client_close(&c);
    cr_expect(log_has("device certificate refused", NULL) ||
                  log_has("TLS connection refused", NULL),
              "no log line for the foreign certificate");

    free(key_pem);
    free(key_path);
    free(chain);
    free(leaf);
    free(ca_pem);
    mmr_key_free(ca_key);
    mmr_key_free(dev_key);
    free(real);
    expect_still_serving("a certificate from a foreign CA");
}

Test(robust, oversized_headers)
{
    struct mmr_tls_client *cli = tls_client(NULL, NULL);
    struct mmr_buf req = {0};
    mmr_buf_appendf(&req, "POST /v1/checkin HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
    for (int i = 0; i < 20000; i++)
        mmr_buf_append(&req, "a", 1);
    mmr_buf_appendf(&req, "\r\nContent-Length: 2\r\n\r\n{}");
    expect_refusal(cli, req.data, req.len, 431);
    mmr_buf_free(&req);

    /* Many small header lines. */
    mmr_buf_appendf(&req, "GET /v1/policy HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < 200; i++)
        mmr_buf_appendf(&req, "X-H%d: v\r\n", i);
    mmr_buf_appendf(&req, "\r\n");
    expect_refusal(cli, req.data, req.len, 431);
    mmr_buf_free(&req);
    mmr_tls_client_free(cli);
    cr_expect(log_has("malformed request", "status=431"));
    expect_still_serving("oversized headers");
}

Test(robust, oversized_body)
{
    char *crt = agent_file("device.crt");
    char *key = agent_file("device.key");
    struct mmr_tls_client *cli = tls_client(crt, key);

    /* Declared too large: refused before a byte of the body is read. */
    static const char declared[] = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   "Content-Type: application/json\r\n"
                                   "Content-Length: 9000000\r\n\r\n";
    expect_refusal(cli, declared, sizeof(declared) - 1, 413);

    /* Small on the wire, too large once decompressed. */
    size_t big = 9u << 20;
    char *spaces = mmr_malloc(big);
    memset(spaces, ' ', big);
    struct mmr_buf gz = {0};
    cr_assert_eq(mmr_gzip_compress(spaces, big, MMR_GZIP_LEVEL_DEFAULT, &gz), 0);
    free(spaces);
    struct mmr_buf req = {0};
    mmr_buf_appendf(&req,
                    "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    gz.len);
    mmr_buf_append(&req, gz.data, gz.len);
    cr_log_info("gzip bomb: %zu bytes expanding to %zu", gz.len, big);
    expect_refusal(cli, req.data, req.len, 413);
    mmr_buf_free(&req);
    mmr_buf_free(&gz);
    mmr_tls_client_free(cli);
    free(key);
    free(crt);
    cr_expect(log_has("status=413", NULL));
    expect_still_serving("oversized bodies");
}

Test(robust, slowloris)
{
    /* A request trickled one header line every 300 ms: the deadline is the
     * request's, not the last byte's, so the server answers 408 at
     * request_timeout and closes; others are served meanwhile. */
    struct mmr_tls_client *cli = tls_client(NULL, NULL);
    struct mmr_tls_stream *s = tls_connect(cli);
    uint64_t t0 = mmr_time_mono_ms();
    static const char start[] = "POST /v1/checkin HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    cr_assert_eq(mmr_tls_stream_write_all(s, start, sizeof(start) - 1, 5000), 0);
    bool closed = false, served_meanwhile = false;
    struct mmr_buf got = {0};
    mmr_buf_append(&got, "", 0);
    for (int i = 0; i < 100 && !closed; i++) {
        char line[32];
        snprintf(line, sizeof(line), "X-Slow-%d: x\r\n", i);
        if (mmr_tls_stream_write_all(s, line, strlen(line), 5000) < 0)
            break;
        char buf[4096];
        size_t n = 0;
        int rc = mmr_tls_stream_read(s, buf, sizeof(buf), 300, &n);
        if (rc == 0 && n > 0)
            mmr_buf_append(&got, buf, n);
        else if (rc != MMR_ETIMEDOUT)
            closed = true;
        if (i == 2)
            served_meanwhile = fleet_server_answers(&srv);
    }
    uint64_t took = mmr_time_mono_ms() - t0;
    mmr_tls_stream_close(s);
    cr_log_info("slowloris connection closed after %llu ms: %.40s", (unsigned long long)took,
                got.data);
    cr_expect(closed || status_of(got.data) == 408, "the server kept a trickling request");
    cr_expect_eq(status_of(got.data), 408, "response: %.200s", got.data);
    cr_expect(took >= REQUEST_TIMEOUT_MS - 200 &&
                  took <= (uint64_t)fleet_ms(REQUEST_TIMEOUT_MS + 2000),
              "closed after %llu ms, request_timeout is %d ms", (unsigned long long)took,
              REQUEST_TIMEOUT_MS);
    cr_expect(served_meanwhile, "the admin API did not answer during the slow request");
    mmr_buf_free(&got);

    /* A handshake that stops half-way is closed at the same deadline. */
    int fd = tcp_connect();
    static const uint8_t partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    t0 = mmr_time_mono_ms();
    send_all(fd, partial, sizeof(partial));
    size_t n;
    cr_expect(wait_closed(fd, fleet_ms(REQUEST_TIMEOUT_MS + 3000), &n),
              "a stalled handshake was kept open");
    took = mmr_time_mono_ms() - t0;
    cr_log_info("stalled handshake closed after %llu ms", (unsigned long long)took);
    cr_expect(took >= REQUEST_TIMEOUT_MS - 200, "closed after only %llu ms",
              (unsigned long long)took);
    close(fd);
    mmr_tls_client_free(cli);
    cr_expect(log_has("request too slow", NULL));
    expect_still_serving("slow requests");
}

Test(robust, malformed_json)
{
    struct fleet_client c;
    fleet_client_open_device(&c, &srv, &agent);
    char deep[20001];
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = '\0';
    const char *bodies[] = {
        "{not json", "[1,2,3]", "", "{\"queue_depth\":\"many\"}", deep, "{\"a\":\"\xff\xfe\"}"};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        json_t *reply = NULL;
        int status =
            fleet_client_call(&c, "POST", "/v1/checkin", bodies[i], strlen(bodies[i]), &reply);
        cr_expect_eq(status, 400, "body %zu: status %d", i, status);
        cr_expect(json_is_object(json_object_get(reply, "error")), "body %zu: no error object", i);
        json_decref(reply);
    }
    const char *batches[] = {"{\"events\":", "{\"after\":0}", "{\"events\":[{\"seq\":0}]}",
                             "{\"events\":[{\"seq\":1,\"time\":1,\"severity\":9,"
                             "\"type\":\"x\"}]}"};
    for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++) {
        json_t *reply = NULL;
        int status =
            fleet_client_call(&c, "POST", "/v1/events", batches[i], strlen(batches[i]), &reply);
        cr_expect_eq(status, 400, "batch %zu: status %d", i, status);
        json_decref(reply);
    }
    fleet_client_close(&c);

    /* The admin API too. */
    fleet_client_open(&c, &srv, NULL, NULL);
    fleet_client_use_admin_token(&c, &srv);
    cr_expect_eq(fleet_client_call(&c, "POST", "/admin/v1/tokens", "{", 1, NULL), 400);
    cr_expect_eq(fleet_client_call(&c, "POST", "/admin/v1/tokens", "{\"org\":1}", 9, NULL), 400);
    fleet_client_close(&c);
    cr_expect(log_has("request refused", "status=400"));
    expect_still_serving("malformed JSON");
}

/* Posts one batch of seqs [first, last] (after = -1) and checks the reply. */
static void post_batch(struct fleet_client *c, int first, int last, long long ack,
                       long long inserted, long long duplicates)
{
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "{\"after\":-1,\"events\":[");
    for (int s = first; s <= last; s++)
        mmr_buf_appendf(&b,
                        "%s{\"seq\":%d,\"time\":%lld,\"type\":\"test.batch\",\"severity\":1,"
                        "\"data\":{\"n\":%d}}",
                        s == first ? "" : ",", s, (long long)mmr_time_now_ms(), s);
    mmr_buf_appendf(&b, "]}");
    json_t *reply = NULL;
    int status = fleet_client_call(c, "POST", "/v1/events", b.data, b.len, &reply);
    cr_assert_eq(status, 200, "batch %d-%d: status %d", first, last, status);
    cr_expect_eq(fleet_json_int(reply, "ack"), ack, "batch %d-%d: ack %lld, expected %lld", first,
                 last, fleet_json_int(reply, "ack"), ack);
    cr_expect_eq(fleet_json_int(reply, "inserted"), inserted, "batch %d-%d: inserted %lld", first,
                 last, fleet_json_int(reply, "inserted"));
    cr_expect_eq(fleet_json_int(reply, "duplicates"), duplicates, "batch %d-%d: duplicates %lld",
                 first, last, fleet_json_int(reply, "duplicates"));
    json_decref(reply);
    mmr_buf_free(&b);
}

Test(robust, event_batches_with_gaps_and_duplicates)
{
    /* A second device, enrolled but not running, so that only this test
     * sends events in its name. */
    char *token = fleet_token_create(&srv, "City", "desktops", 1, NULL);
    struct fleet_agent raw;
    fleet_agent_init(&fl, &raw, "raw", &srv, NULL, NULL, NULL);
    struct proc_result res;
    cr_assert_eq(fleet_agent_enroll(&raw, token, &res), 0, "%s", res.err);
    proc_result_free(&res);
    char *crt_path = fleet_agent_path(&raw, "device.crt");
    char *crt = fleet_read_file(crt_path, NULL);
    struct mmr_cert_info info;
    cr_assert_eq(mmr_cert_read_info(crt, &info), 0);

    struct fleet_client c;
    fleet_client_open_device(&c, &srv, &raw);
    post_batch(&c, 1, 5, 5, 5, 0);
    post_batch(&c, 4, 8, 8, 3, 2);   /* overlaps: 4 and 5 again */
    post_batch(&c, 10, 12, 8, 3, 0); /* a hole at 9: the ack stays */
    post_batch(&c, 9, 9, 12, 1, 0);  /* the hole filled: the ack jumps */
    post_batch(&c, 1, 12, 12, 0, 12);

    /* Seqs going backwards inside a batch are refused whole. */
    static const char backwards[] =
        "{\"after\":-1,\"events\":[{\"seq\":14,\"time\":1,\"type\":\"t\",\"severity\":0},"
        "{\"seq\":13,\"time\":1,\"type\":\"t\",\"severity\":0}]}";
    json_t *reply = NULL;
    cr_expect_eq(
        fleet_client_call(&c, "POST", "/v1/events", backwards, sizeof(backwards) - 1, &reply), 400);
    cr_expect(strstr(mmr_https_error_message(reply, ""), "$.events[1].seq"), "%s",
              mmr_https_error_message(reply, "(none)"));
    json_decref(reply);
    fleet_client_close(&c);

    /* Stored exactly once. */
    cr_expect_eq(
        fleet_adm(&srv, &res, "events", "count", "--device", info.cn, "--type", "test.batch", NULL),
        0, "%s", res.err);
    cr_expect_eq(atoi(res.out), 12, "the server holds %s events, not 12", res.out);
    proc_result_free(&res);
    json_t *d = fleet_adm_json(&srv, "device", "show", info.cn, NULL);
    cr_expect_eq(fleet_json_int(d, "event_ack"), 12);
    json_decref(d);
    free(crt);
    free(crt_path);
    free(token);
    expect_still_serving("batches with gaps and duplicates");
}

#define ABANDONED 200

Test(robust, abandoned_handshakes)
{
    /* A genuine ClientHello, cut in half on each of 200 connections. */
    struct mmr_tls_client *cli = tls_client(NULL, NULL);
    struct mmr_tls_conn *conn = NULL;
    cr_assert_eq(mmr_tls_conn_new_client(cli, "127.0.0.1", &conn), 0);
    cr_assert_eq(mmr_tls_conn_handshake(conn), MMR_TLS_WANT_INPUT);
    size_t hello_len = 0;
    char *hello = mmr_tls_conn_take_output(conn, &hello_len);
    cr_assert(hello && hello_len > 40);
    int fds[ABANDONED];
    uint64_t t0 = mmr_time_mono_ms();
    for (int i = 0; i < ABANDONED; i++) {
        fds[i] = tcp_connect();
        send_all(fds[i], hello, hello_len / 2);
    }
    cr_log_info("%d half handshakes opened in %llu ms", ABANDONED,
                (unsigned long long)(mmr_time_mono_ms() - t0));
    /* While they hang, everyone else is served. */
    expect_still_serving("200 half-open handshakes");

    /* Half are dropped with a reset, half simply closed. */
    for (int i = 0; i < ABANDONED / 2; i++) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fds[i]);
    }
    for (int i = ABANDONED / 2; i < ABANDONED; i++)
        close(fds[i]);
    expect_still_serving("200 abandoned handshakes");

    /* And the server does not hold stalled ones forever: a fresh batch is
     * closed by the server at request_timeout. */
    for (int i = 0; i < 20; i++) {
        fds[i] = tcp_connect();
        send_all(fds[i], hello, hello_len / 2);
    }
    int closed = 0;
    for (int i = 0; i < 20; i++) {
        size_t n;
        closed += wait_closed(fds[i], fleet_ms(REQUEST_TIMEOUT_MS + 3000), &n);
        close(fds[i]);
    }
    cr_expect_eq(closed, 20, "only %d of 20 stalled handshakes were closed by the server", closed);
    free(hello);
    mmr_tls_conn_free(conn);
    mmr_tls_client_free(cli);
    expect_still_serving("stalled handshakes timed out");
}
