/* Unit tests for shared/http.c: incremental parsing in every split, pipelining,
 * chunked bodies, each limit and refusal with its status, smuggling attempts,
 * garbage, responses, and writer -> parser round trips. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/http.h"
#include "shared/mem.h"

/* ---- helpers ------------------------------------------------------------ */

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* One line describing a message, for comparing parses. */
static void describe(struct mmr_buf *t, const struct mmr_http_message *m)
{
    if (m->method)
        mmr_buf_appendf(t, "%s %s path=%s query=%s", m->method, m->target, m->path,
                        m->query ? m->query : "(none)");
    else
        mmr_buf_appendf(t, "%d '%s'", m->status, m->reason);
    mmr_buf_appendf(t, " 1.%d ka=%d ch=%d [", m->version_minor, m->keep_alive, m->chunked);
    for (size_t i = 0; i < m->header_count; i++)
        mmr_buf_appendf(t, "%s=%s;", m->headers[i].name, m->headers[i].value);
    mmr_buf_appendf(t, "] body=%zu:%016llx\n", m->body_len,
                    (unsigned long long)fnv(m->body, m->body_len));
    cr_assert(m->body[m->body_len] == '\0', "body not NUL-terminated");
}

/* How the input is cut into feeds. */
struct cutter {
    size_t at;     /* SPLIT_AT: one cut there */
    size_t step;   /* SPLIT_STEP: pieces of this size */
    uint32_t seed; /* SPLIT_RANDOM */
};
enum split { SPLIT_WHOLE, SPLIT_AT, SPLIT_STEP, SPLIT_RANDOM };

static size_t next_piece(enum split how, struct cutter *c, size_t pos, size_t left)
{
    size_t n = left;
    switch (how) {
    case SPLIT_WHOLE:
        break;
    case SPLIT_AT:
        if (pos < c->at)
            n = c->at - pos;
        break;
    case SPLIT_STEP:
        n = c->step;
        break;
    case SPLIT_RANDOM:
        c->seed ^= c->seed << 13;
        c->seed ^= c->seed >> 17;
        c->seed ^= c->seed << 5;
        n = 1 + c->seed % 7;
        break;
    }
    return n < left ? n : left;
}

/* Parses data fed in pieces, with an optional end of stream, and returns a
 * transcript: a line per message, then the outcome. Allocated. */
static char *transcript(enum mmr_http_kind kind, const struct mmr_http_limits *lim,
                        const char *data, size_t len, enum split how, struct cutter c, bool eof)
{
    struct mmr_http_parser *p = mmr_http_parser_new(kind, lim);
    struct mmr_buf t = {0};
    size_t pos = 0;
    int rc = MMR_HTTP_MORE;
    while (pos < len) {
        size_t n = next_piece(how, &c, pos, len - pos);
        size_t used = 0;
        rc = mmr_http_parser_feed(p, data + pos, n, &used);
        cr_assert(used <= n);
        pos += used;
        if (rc < 0)
            break;
        if (rc == MMR_HTTP_DONE) {
            struct mmr_http_message m;
            mmr_http_parser_take(p, &m);
            describe(&t, &m);
            mmr_http_message_free(&m);
        } else {
            cr_assert_eq(used, n, "MORE must use every byte");
        }
    }
    if (rc >= 0 && eof) {
        rc = mmr_http_parser_finish(p);
        if (rc == MMR_HTTP_DONE) {
            struct mmr_http_message m;
            mmr_http_parser_take(p, &m);
            describe(&t, &m);
            mmr_http_message_free(&m);
            rc = mmr_http_parser_finish(p);
        }
    }
    if (rc < 0)
        mmr_buf_appendf(&t, "ERR %d %s\n", mmr_http_parser_status(p), mmr_err_name(rc));
    else
        mmr_buf_appendf(&t, "%s\n", mmr_http_parser_busy(p) ? "PARTIAL" : "IDLE");
    mmr_http_parser_free(p);
    mmr_buf_append(&t, "", 0);
    return t.data;
}

static char *whole(enum mmr_http_kind kind, const struct mmr_http_limits *lim, const char *data,
                   size_t len, bool eof)
{
    struct cutter c = {0};
    return transcript(kind, lim, data, len, SPLIT_WHOLE, c, eof);
}

/* The same transcript for every two-piece split, byte-by-byte feeding and a
 * few random splits. Returns the transcript (allocated). */
static char *same_in_every_split(enum mmr_http_kind kind, const struct mmr_http_limits *lim,
                                 const char *data, size_t len, bool eof)
{
    char *ref = whole(kind, lim, data, len, eof);
    for (size_t at = 1; at < len; at++) {
        struct cutter c = {.at = at};
        char *t = transcript(kind, lim, data, len, SPLIT_AT, c, eof);
        cr_assert_str_eq(t, ref, "split at %zu of %zu", at, len);
        free(t);
    }
    struct cutter one = {.step = 1};
    char *t = transcript(kind, lim, data, len, SPLIT_STEP, one, eof);
    cr_assert_str_eq(t, ref, "byte by byte");
    free(t);
    for (uint32_t seed = 1; seed <= 20; seed++) {
        struct cutter c = {.seed = seed * 2654435761u};
        t = transcript(kind, lim, data, len, SPLIT_RANDOM, c, eof);
        cr_assert_str_eq(t, ref, "random split, seed %u", seed);
        free(t);
    }
    return ref;
}

/* Feeds a whole request and returns the refusal status (0 when none). */
static int status_of(const struct mmr_http_limits *lim, const char *data, size_t len)
{
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, lim);
    size_t used;
    int rc = mmr_http_parser_feed(p, data, len, &used);
    int status = rc < 0 ? mmr_http_parser_status(p) : 0;
    if (rc < 0)
        cr_assert(mmr_err_msg()[0] != '\0', "a refusal without a message");
    mmr_http_parser_free(p);
    return status;
}

static int status_str(const char *s)
{
    return status_of(NULL, s, strlen(s));
}

/* Parses exactly one complete message from s (whole). */
static void parse_one(enum mmr_http_kind kind, const char *s, size_t len,
                      struct mmr_http_message *m)
{
    struct mmr_http_parser *p = mmr_http_parser_new(kind, NULL);
    size_t used = 0;
    int rc = mmr_http_parser_feed(p, s, len, &used);
    if (rc == MMR_HTTP_MORE)
        rc = mmr_http_parser_finish(p);
    cr_assert_eq(rc, MMR_HTTP_DONE, "rc %d: %s", rc, mmr_err_msg());
    mmr_http_parser_take(p, m);
    mmr_http_parser_free(p);
}

/* ---- requests ----------------------------------------------------------- */

Test(http_request, simple_get)
{
    const char *s = "GET /v1/policy?group=a&x=1 HTTP/1.1\r\nHost: srv:8443\r\n"
                    "If-None-Match:  \"v7\"  \r\nX-Empty:\r\n\r\n";
    struct mmr_http_message m;
    parse_one(MMR_HTTP_REQUEST, s, strlen(s), &m);
    cr_expect_str_eq(m.method, "GET");
    cr_expect_str_eq(m.target, "/v1/policy?group=a&x=1");
    cr_expect_str_eq(m.path, "/v1/policy");
    cr_expect_str_eq(m.query, "group=a&x=1");
    cr_expect_eq(m.version_minor, 1);
    cr_expect_eq(m.status, 0);
    cr_expect(m.keep_alive);
    cr_expect_not(m.chunked);
    cr_assert_eq(m.header_count, 3);
    cr_expect_str_eq(m.headers[0].name, "Host");
    cr_expect_str_eq(m.headers[1].value, "\"v7\"", "spaces around a value are dropped");
    cr_expect_str_eq(m.headers[2].value, "");
    cr_expect_str_eq(mmr_http_message_header(&m, "IF-NONE-MATCH"), "\"v7\"");
    cr_expect_str_eq(mmr_http_message_header(&m, "host"), "srv:8443");
    cr_expect_null(mmr_http_message_header(&m, "Content-Length"));
    cr_expect_null(mmr_http_message_header(&m, "Hos"));
    cr_expect_eq(m.body_len, 0);
    cr_expect_str_eq(m.body, "");
    mmr_http_message_free(&m);
}

Test(http_request, query_forms)
{
    struct mmr_http_message m;
    const char *bare = "GET /a? HTTP/1.1\r\nHost: h\r\n\r\n";
    parse_one(MMR_HTTP_REQUEST, bare, strlen(bare), &m);
    cr_expect_str_eq(m.path, "/a");
    cr_expect_str_eq(m.query, "");
    mmr_http_message_free(&m);

    const char *none = "GET /a/b%20c HTTP/1.1\r\nHost: h\r\n\r\n";
    parse_one(MMR_HTTP_REQUEST, none, strlen(none), &m);
    cr_expect_str_eq(m.path, "/a/b%20c", "paths are not decoded");
    cr_expect_null(m.query);
    mmr_http_message_free(&m);

    const char *absolute = "GET http://srv:8443/v1/x?y=1 HTTP/1.1\r\nHost: srv\r\n\r\n";
    parse_one(MMR_HTTP_REQUEST, absolute, strlen(absolute), &m);
    cr_expect_str_eq(m.target, "http://srv:8443/v1/x?y=1");
    cr_expect_str_eq(m.path, "/v1/x");
    cr_expect_str_eq(m.query, "y=1");
    mmr_http_message_free(&m);

    const char *no_path = "GET https://srv?z HTTP/1.1\r\nHost: srv\r\n\r\n";
    parse_one(MMR_HTTP_REQUEST, no_path, strlen(no_path), &m);
    cr_expect_str_eq(m.path, "/");
    cr_expect_str_eq(m.query, "z");
    mmr_http_message_free(&m);

    const char *star = "OPTIONS * HTTP/1.1\r\nHost: srv\r\n\r\n";
    parse_one(MMR_HTTP_REQUEST, star, strlen(star), &m);
    cr_expect_str_eq(m.path, "*");
    mmr_http_message_free(&m);
}

Test(http_request, post_with_content_length)
{
    const char *s = "POST /v1/checkin HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                    "Content-Length: 13\r\n\r\n{\"queue\":12}\n";
    struct mmr_http_message m;
    parse_one(MMR_HTTP_REQUEST, s, strlen(s), &m);
    cr_expect_str_eq(m.method, "POST");
    cr_assert_eq(m.body_len, 13);
    cr_expect_str_eq(m.body, "{\"queue\":12}\n");
    cr_expect_str_eq(mmr_http_message_header(&m, "content-length"), "13");
    mmr_http_message_free(&m);
}

Test(http_request, binary_body_kept_whole)
{
    char s[128];
    int n = snprintf(s, sizeof(s), "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n");
    memcpy(s + n, "a\0b\r\n", 5);
    struct mmr_http_message m;
    parse_one(MMR_HTTP_REQUEST, s, (size_t)n + 5, &m);
    cr_assert_eq(m.body_len, 5);
    cr_expect(memcmp(m.body, "a\0b\r\n", 5) == 0);
    mmr_http_message_free(&m);
}

/* The inputs used to check split independence, good and bad alike. */
static const char *const split_inputs[] = {
    "GET /v1/policy?g=1 HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n",
    "POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Encoding: gzip\r\n"
    "Content-Length: 10\r\n\r\n0123456789"
    "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz",
    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;name=value;x\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0;last\r\nX-Trailer: 1\r\n"
    "Another: two\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    "\r\n\r\nGET /lead HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n",
    "GET /partial HTTP/1.1\r\nHost: h\r\nX-Half: val",
    /* refusals */
    "GET /a HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: h\r\nBad Name: a\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc",
    "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    "0\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "GET /a HTTP/2.0\r\nHost: h\r\n\r\n",
    "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /a HTTP/1.1\r\n\r\n",
    "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "GET /a HTTP/1.1\r\nHost: h\r\nX: \x01\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n",
    /* line endings http-parser (built lax) would take */
    "GET /a HTTP/1.1\r\nHost: h\r\n\rGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\rXabc\r\n0\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rXGET",
};

Test(http_request, every_split_gives_the_same_result)
{
    for (size_t i = 0; i < sizeof(split_inputs) / sizeof(split_inputs[0]); i++) {
        const char *s = split_inputs[i];
        free(same_in_every_split(MMR_HTTP_REQUEST, NULL, s, strlen(s), false));
    }
}

Test(http_request, every_split_with_tight_limits)
{
    /* Limits that the inputs cross in their middle, so that each refusal
     * point meets pieces cut at every byte. */
    struct mmr_http_limits lim = {
        .max_url = 6, .max_header_bytes = 24, .max_headers = 2, .max_body = 8};
    for (size_t i = 0; i < sizeof(split_inputs) / sizeof(split_inputs[0]); i++) {
        const char *s = split_inputs[i];
        free(same_in_every_split(MMR_HTTP_REQUEST, &lim, s, strlen(s), false));
    }
}

Test(http_request, framing_headers_read_while_the_target_is_split)
{
    /* Splitting the target into path and query grows the message's text;
     * the Transfer-Encoding value read after that must not move with it
     * (found by fuzz_http_request). */
    for (int n = 1; n < 300; n++) {
        struct mmr_buf b = {0};
        mmr_buf_appendf(&b, "POST /%0*d?q HTTP/1.1\r\nHost: h\r\n", n, 0);
        mmr_buf_appendf(&b, "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n");
        struct mmr_http_message m;
        parse_one(MMR_HTTP_REQUEST, b.data, b.len, &m);
        cr_expect_str_eq(m.query, "q");
        cr_expect_str_eq(m.body, "x");
        mmr_http_message_free(&m);
        mmr_buf_free(&b);
    }
}

Test(http_request, pipelined_requests_each_consume_their_bytes)
{
    const char *a = "POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    const char *b = "GET /two HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *c = "GET /three HTTP/1.1\r\nHo";
    char buf[256];
    snprintf(buf, sizeof(buf), "%s%s%s", a, b, c);
    size_t len = strlen(buf);

    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, NULL);
    struct mmr_http_message m;
    size_t used = 0;
    cr_assert_eq(mmr_http_parser_feed(p, buf, len, &used), MMR_HTTP_DONE);
    cr_expect_eq(used, strlen(a));
    /* Until the message is taken, feeding uses nothing. */
    size_t again = 99;
    cr_expect_eq(mmr_http_parser_feed(p, buf + used, len - used, &again), MMR_HTTP_DONE);
    cr_expect_eq(again, 0);
    cr_expect_eq(mmr_http_parser_finish(p), MMR_HTTP_DONE);
    mmr_http_parser_take(p, &m);
    cr_expect_str_eq(m.path, "/one");
    cr_expect_str_eq(m.body, "abc");
    mmr_http_message_free(&m);

    size_t pos = used;
    cr_assert_eq(mmr_http_parser_feed(p, buf + pos, len - pos, &used), MMR_HTTP_DONE);
    cr_expect_eq(used, strlen(b));
    mmr_http_parser_take(p, &m);
    cr_expect_str_eq(m.path, "/two");
    mmr_http_message_free(&m);
    pos += used;

    cr_expect_not(mmr_http_parser_busy(p));
    cr_assert_eq(mmr_http_parser_feed(p, buf + pos, len - pos, &used), MMR_HTTP_MORE);
    cr_expect_eq(used, strlen(c));
    cr_expect(mmr_http_parser_busy(p));
    cr_assert_eq(mmr_http_parser_feed(p, "st: h\r\n\r\n", 9, &used), MMR_HTTP_DONE);
    mmr_http_parser_take(p, &m);
    cr_expect_str_eq(m.path, "/three");
    mmr_http_message_free(&m);

    /* The peer closing between messages is no error; within one it is. */
    cr_expect_eq(mmr_http_parser_finish(p), MMR_HTTP_MORE);
    mmr_http_parser_free(p);
}

Test(http_request, chunked_body_with_extensions_and_trailers)
{
    const char *s = "POST /v1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
                    "4;a=b\r\nWiki\r\n6 ; ext=\"q\"\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n"
                    "0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
    struct mmr_http_message m;
    parse_one(MMR_HTTP_REQUEST, s, strlen(s), &m);
    cr_expect(m.chunked);
    cr_expect_str_eq(m.body, "Wikipedia in \r\n\r\nchunks.");
    cr_expect_eq(m.body_len, 24);
    cr_expect_eq(m.header_count, 2, "trailers are dropped");
    cr_expect_null(mmr_http_message_header(&m, "Expires"));
    mmr_http_message_free(&m);
}

Test(http_request, keep_alive_rules)
{
    struct {
        const char *req;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo , close ,\r\n\r\n", false},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.2\r\nHost: h\r\n\r\n", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mmr_http_message m;
        parse_one(MMR_HTTP_REQUEST, cases[i].req, strlen(cases[i].req), &m);
        cr_expect_eq(m.keep_alive, cases[i].keep_alive, "case %zu", i);
        mmr_http_message_free(&m);
    }
}

Test(http_request, nothing_after_a_closing_request)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n";
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, NULL);
    size_t used;
    cr_assert_eq(mmr_http_parser_feed(p, s, strlen(s), &used), MMR_HTTP_DONE);
    struct mmr_http_message m;
    mmr_http_parser_take(p, &m);
    cr_expect_not(m.keep_alive);
    mmr_http_message_free(&m);
    cr_expect_eq(mmr_http_parser_feed(p, s, 0, &used), MMR_HTTP_MORE);
    cr_expect_eq(mmr_http_parser_finish(p), MMR_HTTP_MORE);
    size_t pos = used;
    cr_expect_eq(mmr_http_parser_feed(p, s + pos, strlen(s) - pos, &used), MMR_EPROTO);
    cr_expect_eq(mmr_http_parser_status(p), 400);
    mmr_http_parser_free(p);
}

Test(http_request, expect_continue)
{
    const char *head = "POST /v1/events HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                       "Content-Length: 4\r\n\r\n";
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, NULL);
    size_t used;
    cr_expect_not(mmr_http_parser_wants_continue(p));
    cr_assert_eq(mmr_http_parser_feed(p, head, strlen(head), &used), MMR_HTTP_MORE);
    cr_expect(mmr_http_parser_wants_continue(p));
    cr_expect_not(mmr_http_parser_wants_continue(p), "once per request");
    cr_assert_eq(mmr_http_parser_feed(p, "body", 4, &used), MMR_HTTP_DONE);
    struct mmr_http_message m;
    mmr_http_parser_take(p, &m);
    mmr_http_message_free(&m);

    /* No body to wait for: nothing to say. */
    const char *get = "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
    cr_assert_eq(mmr_http_parser_feed(p, get, strlen(get), &used), MMR_HTTP_DONE);
    cr_expect_not(mmr_http_parser_wants_continue(p));
    mmr_http_parser_free(p);
}

/* ---- limits ------------------------------------------------------------- */

/* A request with a header line of n bytes of value. */
static char *with_value(size_t n)
{
    char *s = mmr_malloc(n + 64);
    int k = sprintf(s, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
    memset(s + k, 'v', n);
    strcpy(s + k + n, "\r\n\r\n");
    return s;
}

Test(http_limits, defaults)
{
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    cr_expect_eq(lim.max_url, 8192);
    cr_expect_eq(lim.max_header_bytes, 16384);
    cr_expect_eq(lim.max_headers, 64);
    cr_expect_eq(lim.max_body, 8 * 1024 * 1024);
}

Test(http_limits, url_414)
{
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_url = 10;
    cr_expect_eq(status_str("GET /123456789 HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
    const char *s = "GET /1234567890 HTTP/1.1\r\nHost: h\r\n\r\n";
    cr_expect_eq(status_of(&lim, s, strlen(s)), 414);
    cr_expect(strstr(mmr_err_msg(), "request-target") != NULL);

    /* The default, with a target of 8 KiB + 1. */
    char *big = mmr_malloc(9000);
    int k = sprintf(big, "GET /");
    memset(big + k, 'a', 8192);
    strcpy(big + k + 8192, " HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_expect_eq(status_str(big), 414);
    strcpy(big + k + 8191, " HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_expect_eq(status_str(big), 0, "8 KiB exactly");
    free(big);
}

Test(http_limits, header_bytes_431)
{
    /* Host (4 + 1) plus X-Big (5 + n): exactly 16 KiB passes. */
    char *ok = with_value(16384 - 10);
    cr_expect_eq(status_str(ok), 0);
    char *over = with_value(16384 - 9);
    cr_expect_eq(status_str(over), 431);
    cr_expect_eq(mmr_err_from_name(mmr_err_name(MMR_ETOOBIG)), MMR_ETOOBIG);
    free(ok);
    free(over);
    /* Past http-parser's own 80 KiB bound, whatever our limit. */
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_header_bytes = 1 << 20;
    char *huge = with_value(100 * 1024);
    cr_expect_eq(status_of(&lim, huge, strlen(huge)), 431);
    free(huge);
}

Test(http_limits, oversized_line_refused_where_it_ends)
{
    /* Partial state stays bounded: past the limit bytes are counted, not
     * kept, and the refusal comes when the line ends. */
    char *s = with_value(40000);
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, NULL);
    size_t len = strlen(s) - 4;
    size_t used;
    cr_expect_eq(mmr_http_parser_feed(p, s, len, &used), MMR_HTTP_MORE);
    cr_expect(mmr_http_parser_busy(p));
    cr_expect_eq(mmr_http_parser_feed(p, s + len, 4, &used), MMR_ETOOBIG);
    cr_expect_eq(mmr_http_parser_status(p), 431);
    /* Final: the same answer from then on. */
    cr_expect_eq(mmr_http_parser_feed(p, "x", 1, &used), MMR_ETOOBIG);
    cr_expect_eq(used, 0);
    cr_expect_eq(mmr_http_parser_finish(p), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "16384") != NULL, "%s", mmr_err_msg());
    mmr_http_parser_free(p);
    free(s);
}

Test(http_limits, header_count_431)
{
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < 64; i++)
        mmr_buf_appendf(&b, "X-%d: %d\r\n", i, i);
    size_t at64 = b.len;
    mmr_buf_appendf(&b, "\r\n");
    cr_expect_eq(status_str(b.data), 0, "64 headers");
    b.len = at64;
    mmr_buf_appendf(&b, "X-65: 1\r\n\r\n");
    cr_expect_eq(status_str(b.data), 431);
    cr_expect(strstr(mmr_err_msg(), "64") != NULL);
    mmr_buf_free(&b);
}

Test(http_limits, trailers_count_against_header_limits)
{
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_headers = 3;
    const char *ok = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\nT1: a\r\n\r\n";
    cr_expect_eq(status_of(&lim, ok, strlen(ok)), 0);
    const char *over = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "0\r\nT1: a\r\nT2: b\r\n\r\n";
    cr_expect_eq(status_of(&lim, over, strlen(over)), 431);
    lim.max_headers = 10;
    lim.max_header_bytes = 40;
    const char *big = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "0\r\nT1: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    cr_expect_eq(status_of(&lim, big, strlen(big)), 431);
}

Test(http_limits, body_413_before_the_body_arrives)
{
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_body = 100;
    const char *ok = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n";
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, &lim);
    size_t used;
    cr_expect_eq(mmr_http_parser_feed(p, ok, strlen(ok), &used), MMR_HTTP_MORE);
    mmr_http_parser_free(p);

    const char *head = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n";
    p = mmr_http_parser_new(MMR_HTTP_REQUEST, &lim);
    cr_expect_eq(mmr_http_parser_feed(p, head, strlen(head), &used), MMR_ETOOBIG);
    cr_expect_eq(mmr_http_parser_status(p), 413);
    mmr_http_parser_free(p);

    /* The default limit, claimed by a header with nothing behind it. */
    const char *claim = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8388609\r\n\r\n";
    cr_expect_eq(status_str(claim), 413);
    const char *absurd =
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    cr_expect_eq(status_str(absurd), 400);
}

Test(http_limits, body_at_the_default_limit)
{
    size_t n = MMR_HTTP_MAX_BODY_DEFAULT;
    char *body = mmr_malloc(n + 1);
    memset(body, 'b', n + 1);
    struct mmr_buf w = {0};
    cr_assert_eq(mmr_http_write_request(&w, "POST", "h", "/", NULL, 0, body, n, true), 0);
    struct mmr_http_message m;
    parse_one(MMR_HTTP_REQUEST, w.data, w.len, &m);
    cr_expect_eq(m.body_len, n);
    mmr_http_message_free(&m);
    w.len = 0;
    cr_assert_eq(mmr_http_write_request(&w, "POST", "h", "/", NULL, 0, body, n + 1, true), 0);
    cr_expect_eq(status_of(NULL, w.data, w.len), 413);
    mmr_buf_free(&w);
    free(body);
}

Test(http_limits, chunked_body_413_at_the_chunk_size)
{
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_body = 10;
    const char *ok = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n";
    cr_expect_eq(status_of(&lim, ok, strlen(ok)), 0);
    /* Refused at the size line, the data never read. */
    const char *over = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\n12345\r\n6\r\n";
    cr_expect_eq(status_of(&lim, over, strlen(over)), 413);
    const char *huge = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "fffffffffffffff\r\n";
    cr_expect_eq(status_of(NULL, huge, strlen(huge)), 413);
    const char *wraps = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "ffffffffffffffff\r\n";
    cr_expect_eq(status_of(NULL, wraps, strlen(wraps)), 400);
}

Test(http_limits, chunked_framing_overhead_bounded)
{
    /* Extensions of 1 KiB on chunks of one byte: the framing outgrows the
     * data it carries by far, and the message is refused after 16 KiB. */
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    char ext[1024];
    memset(ext, 'e', sizeof(ext) - 1);
    ext[sizeof(ext) - 1] = '\0';
    for (int i = 0; i < 40; i++)
        mmr_buf_appendf(&b, "1;%s\r\nx\r\n", ext);
    mmr_buf_appendf(&b, "0\r\n\r\n");
    cr_expect_eq(status_str(b.data), 400);
    cr_expect(strstr(mmr_err_msg(), "framing") != NULL, "%s", mmr_err_msg());
    mmr_buf_free(&b);

    /* Ordinary chunking of a body, even in small chunks, passes. */
    mmr_buf_appendf(&b, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5000; i++)
        mmr_buf_appendf(&b, "8\r\n%08d\r\n", i);
    mmr_buf_appendf(&b, "0\r\n\r\n");
    cr_expect_eq(status_str(b.data), 0);
    /* A single chunk-size line past 80 KiB is http-parser's refusal. */
    b.len = 0;
    mmr_buf_appendf(&b, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    for (int i = 0; i < 90; i++)
        mmr_buf_append(&b, ext, sizeof(ext) - 1);
    cr_expect_eq(status_str(b.data), 400);
    mmr_buf_free(&b);
}

/* ---- refusals ----------------------------------------------------------- */

Test(http_refusal, statuses)
{
    struct {
        const char *req;
        int status;
    } cases[] = {
        /* 501: transfer-codings we do not implement, CONNECT */
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x;q=1\r\n\r\n", 501},
        {"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 501},
        /* 505: versions */
        {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
        {"GET / HTTP/0.9\r\n\r\n", 505},
        {"GET /\r\n\r\n", 505},
        {"GET / HTTP/10.1\r\nHost: h\r\n\r\n", 400},
        /* 400: malformed */
        {"GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400},
        {"GET foo HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: \x01\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX:\t\x1b[31mred\r\n\r\n", 400},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tfolded\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip x\r\n\r\n", 400},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(status_str(cases[i].req), cases[i].status, "case %zu: %s", i, cases[i].req);
}

Test(http_refusal, error_codes_follow_statuses)
{
    struct {
        const char *req;
        int code;
    } cases[] = {
        {"XYZ / HTTP/1.1\r\n\r\n", MMR_EINVAL},
        {"GET / HTTP/3.0\r\nHost: h\r\n\r\n", MMR_EUNSUP},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: br\r\n\r\n", MMR_EUNSUP},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999999\r\n\r\n", MMR_ETOOBIG},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, NULL);
        size_t used;
        cr_expect_eq(mmr_http_parser_feed(p, cases[i].req, strlen(cases[i].req), &used),
                     cases[i].code, "case %zu", i);
        mmr_http_parser_free(p);
    }
}

Test(http_refusal, smuggling)
{
    const char *cases[] = {
        /* CL.TE and TE.CL */
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nX",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
        "0\r\n\r\nX",
        /* duplicate Content-Length, equal or not */
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3 3\r\n\r\nabc",
        /* whitespace before the colon hides a header from some readers */
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc",
        /* two Transfer-Encoding lines, chunked twice, chunked not last */
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        "\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        /* names http-parser takes for Transfer-Encoding when they only
         * start with it (found by fuzz_http_request) */
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-EncodingX: a\r\nContent-Length: 1\r\n\r\nx",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding-2: a\r\nTransfer-Encoding: chunked\r\n"
        "\r\n0\r\n\r\n",
        /* Transfer-Encoding in HTTP/1.0 */
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        /* obs-fold */
        "POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        /* bare LF inside a value, NUL in a value or a target */
        "POST / HTTP/1.1\r\nHost: h\r\nX: a\rContent-Length: 3\r\n\r\nabc",
        /* a CR standing for CRLF, which the lax build of http-parser takes */
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\rXabc",
        "GET / HTTP/1.1\r\nHost: h\r\n\rX",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\rX3\r\nabc\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\rXabc\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\rX0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\rX\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rX",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n\rX",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(status_str(cases[i]), 400, "case %zu: %s", i, cases[i]);
    const char nul_value[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    cr_expect_eq(status_of(NULL, nul_value, sizeof(nul_value) - 1), 400);
    const char nul_target[] = "GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n";
    cr_expect_eq(status_of(NULL, nul_target, sizeof(nul_target) - 1), 400);
}

Test(http_refusal, obs_fold_after_an_empty_value_reads_as_a_space)
{
    /* http-parser joins a fold after an empty first line by itself; RFC
     * 9112 5.2 allows replacing obs-fold with a space, which is what this
     * amounts to. The framing headers still agree with http-parser. */
    const char *s = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 3\r\n\r\nabc";
    struct mmr_http_message m;
    parse_one(MMR_HTTP_REQUEST, s, strlen(s), &m);
    cr_expect_str_eq(mmr_http_message_header(&m, "content-length"), "3");
    cr_expect_str_eq(m.body, "abc");
    mmr_http_message_free(&m);
}

Test(http_refusal, garbage)
{
    /* The start of a TLS ClientHello: plain HTTP spoken to... the other way. */
    static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc,
                                          0x03, 0x03, 0x5a, 0x1f, 0x00, 0x00, 0x20, 0xc0, 0x2b,
                                          0xc0, 0x2f, 0x00, 0x9e, 0xcc, 0xa9, 0x01, 0x00};
    cr_expect_eq(status_of(NULL, (const char *)hello, sizeof(hello)), 400);
    /* Random noise, also after a valid start. */
    uint32_t x = 12345;
    char buf[600];
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + round % (sizeof(buf) - 1);
        size_t from = 0;
        if (round % 2) {
            const char *start = "POST /v1/events HTTP/1.1\r\nHost: h\r\n";
            from = strlen(start);
            memcpy(buf, start, from);
            if (n < from + 1)
                n = from + 1;
        }
        for (size_t i = from; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = (char)x;
        }
        int st = status_of(NULL, buf, n);
        cr_assert(st == 0 || st == 400 || st == 431 || st == 505, "round %d: %d", round, st);
    }
}

/* ---- responses ---------------------------------------------------------- */

Test(http_response, content_length_and_pipelined)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                    "\r\n{}HTTP/1.1 304 Not Modified\r\nETag: \"v7\"\r\nContent-Length: 99\r\n\r\n"
                    "HTTP/1.1 204 No Content\r\n\r\n"
                    "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"
                    "HTTP/1.1 503\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx";
    char *t = same_in_every_split(MMR_HTTP_RESPONSE, NULL, s, strlen(s), false);
    cr_expect_str_eq(t, "200 'OK' 1.1 ka=1 ch=0 [Content-Type=application/json;Content-Length=2;]"
                        " body=2:08f44b07b5901a25\n"
                        "304 'Not Modified' 1.1 ka=1 ch=0 [ETag=\"v7\";Content-Length=99;]"
                        " body=0:cbf29ce484222325\n"
                        "204 'No Content' 1.1 ka=1 ch=0 [] body=0:cbf29ce484222325\n"
                        "404 '' 1.1 ka=1 ch=0 [Content-Length=0;] body=0:cbf29ce484222325\n"
                        "503 '' 1.1 ka=0 ch=0 [Content-Length=1;Connection=close;]"
                        " body=1:af63f54c86021707\n"
                        "IDLE\n");
    free(t);
}

Test(http_response, chunked)
{
    const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n";
    struct mmr_http_message m;
    parse_one(MMR_HTTP_RESPONSE, s, strlen(s), &m);
    cr_expect_eq(m.status, 200);
    cr_expect_str_eq(m.reason, "OK");
    cr_expect_null(m.method);
    cr_expect(m.chunked);
    cr_expect(m.keep_alive);
    cr_expect_str_eq(m.body, "abcde");
    cr_expect_eq(m.header_count, 1);
    mmr_http_message_free(&m);
}

Test(http_response, close_delimited)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this, until EOF";
    char *t = same_in_every_split(MMR_HTTP_RESPONSE, NULL, s, strlen(s), true);
    cr_expect(strstr(t, "200 'OK' 1.1 ka=0 ch=0 [Content-Type=text/plain;] body=22:") == t, "%s",
              t);
    cr_expect(strstr(t, "IDLE\n") != NULL, "%s", t);
    free(t);

    /* Without the end of stream, the body is not over. */
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
    size_t used;
    cr_expect_eq(mmr_http_parser_feed(p, s, strlen(s), &used), MMR_HTTP_MORE);
    cr_expect(mmr_http_parser_busy(p));
    cr_expect_eq(mmr_http_parser_finish(p), MMR_HTTP_DONE);
    struct mmr_http_message m;
    mmr_http_parser_take(p, &m);
    cr_expect_str_eq(m.body, "all of this, until EOF");
    cr_expect_not(m.keep_alive);
    mmr_http_message_free(&m);
    mmr_http_parser_free(p);

    /* Its body limit still applies. */
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_body = 5;
    p = mmr_http_parser_new(MMR_HTTP_RESPONSE, &lim);
    cr_expect_eq(mmr_http_parser_feed(p, s, strlen(s), &used), MMR_ETOOBIG);
    cr_expect_eq(mmr_http_parser_status(p), 413);
    mmr_http_parser_free(p);
}

Test(http_response, truncated)
{
    const char *cases[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        "HTTP/1.1 200 OK\r\nContent-Le",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
        size_t used;
        cr_expect_eq(mmr_http_parser_feed(p, cases[i], strlen(cases[i]), &used), MMR_HTTP_MORE);
        cr_expect_eq(mmr_http_parser_finish(p), MMR_EPROTO, "case %zu", i);
        cr_expect(strstr(mmr_err_msg(), "closed in the middle") != NULL);
        mmr_http_parser_free(p);
    }
}

Test(http_response, head_interim_and_versions)
{
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
    size_t used;
    struct mmr_http_message m;
    /* A HEAD answer announces a body it does not carry. */
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
                       "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                       "HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nz";
    mmr_http_parser_expect_head(p);
    cr_assert_eq(mmr_http_parser_feed(p, head, strlen(head), &used), MMR_HTTP_DONE);
    mmr_http_parser_take(p, &m);
    cr_expect_eq(m.status, 200);
    cr_expect_eq(m.body_len, 0);
    mmr_http_message_free(&m);
    /* The interim 100 is skipped; HEAD applied to one response only. */
    size_t pos = used;
    cr_assert_eq(mmr_http_parser_feed(p, head + pos, strlen(head) - pos, &used), MMR_HTTP_DONE);
    mmr_http_parser_take(p, &m);
    cr_expect_eq(m.status, 201);
    cr_expect_str_eq(m.body, "z");
    cr_expect_null(mmr_http_message_header(&m, "X-Interim"));
    mmr_http_message_free(&m);
    mmr_http_parser_free(p);

    const char *old = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    parse_one(MMR_HTTP_RESPONSE, old, strlen(old), &m);
    cr_expect_eq(m.version_minor, 0);
    cr_expect_not(m.keep_alive);
    mmr_http_message_free(&m);

    const char *sw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                     "Connection: Upgrade\r\n\r\n";
    parse_one(MMR_HTTP_RESPONSE, sw, strlen(sw), &m);
    cr_expect_eq(m.status, 101);
    cr_expect_not(m.keep_alive);
    mmr_http_message_free(&m);

    p = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
    const char *v2 = "HTTP/2.0 200 OK\r\n\r\n";
    cr_expect_eq(mmr_http_parser_feed(p, v2, strlen(v2), &used), MMR_EUNSUP);
    mmr_http_parser_free(p);

    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_url = 4;
    p = mmr_http_parser_new(MMR_HTTP_RESPONSE, &lim);
    const char *longr = "HTTP/1.1 200 Very Long Reason\r\n\r\n";
    cr_expect_eq(mmr_http_parser_feed(p, longr, strlen(longr), &used), MMR_ETOOBIG);
    mmr_http_parser_free(p);

    p = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
    const char *te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    cr_expect_eq(mmr_http_parser_feed(p, te, strlen(te), &used), MMR_EUNSUP);
    mmr_http_parser_free(p);
}

Test(http_response, garbage)
{
    const char *cases[] = {"HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 OK\r\n\r\n",
                           "\x16\x03\x03\x00\x02\x02\x28", "SSH-2.0-OpenSSH_9.2\r\n",
                           "HTTP/1.1 200 O\x01K\r\n\r\n"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
        size_t used;
        cr_expect_eq(mmr_http_parser_feed(p, cases[i], strlen(cases[i]), &used), MMR_EINVAL,
                     "case %zu", i);
        cr_expect(mmr_err_msg()[0] != '\0');
        mmr_http_parser_free(p);
    }
}

/* ---- writers ------------------------------------------------------------ */

Test(http_writer, request_round_trip)
{
    struct mmr_http_header h[] = {
        {"Content-Type", "application/json"},
        {"Content-Encoding", "gzip"},
        {"X-Obs", "caf\xc3\xa9\tand tab"},
    };
    const char body[] = "{\"events\":[]}";
    struct mmr_buf w = {0};
    mmr_buf_append(&w, "kept", 4);
    cr_assert_eq(mmr_http_write_request(&w, "POST", "srv:8443", "/v1/events?x=1", h, 3, body,
                                        sizeof(body) - 1, true),
                 0);
    const char *start = "keptPOST /v1/events?x=1 HTTP/1.1\r\nHost: srv:8443\r\n";
    cr_expect(strncmp(w.data, start, strlen(start)) == 0, "%s", w.data);
    struct mmr_http_message m;
    char *t = same_in_every_split(MMR_HTTP_REQUEST, NULL, w.data + 4, w.len - 4, false);
    free(t);
    parse_one(MMR_HTTP_REQUEST, w.data + 4, w.len - 4, &m);
    cr_expect_str_eq(m.method, "POST");
    cr_expect_str_eq(m.path, "/v1/events");
    cr_expect_str_eq(m.query, "x=1");
    cr_expect_str_eq(mmr_http_message_header(&m, "host"), "srv:8443");
    cr_expect_str_eq(mmr_http_message_header(&m, "content-encoding"), "gzip");
    cr_expect_str_eq(mmr_http_message_header(&m, "x-obs"), "caf\xc3\xa9\tand tab");
    cr_expect_str_eq(mmr_http_message_header(&m, "content-length"), "13");
    cr_expect_str_eq(m.body, body);
    cr_expect(m.keep_alive);
    mmr_http_message_free(&m);

    /* GET without a body carries no Content-Length; close is said. */
    w.len = 0;
    cr_assert_eq(mmr_http_write_request(&w, "GET", "h", "/v1/policy", NULL, 0, NULL, 0, false), 0);
    cr_expect_str_eq(w.data, "GET /v1/policy HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    parse_one(MMR_HTTP_REQUEST, w.data, w.len, &m);
    cr_expect_not(m.keep_alive);
    mmr_http_message_free(&m);

    /* POST always says its length, even 0. */
    w.len = 0;
    cr_assert_eq(mmr_http_write_request(&w, "POST", "h", "/", NULL, 0, NULL, 0, true), 0);
    cr_expect_str_eq(w.data, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    mmr_buf_free(&w);
}

Test(http_writer, response_round_trip)
{
    struct mmr_http_header h[] = {{"Content-Type", "application/json"}, {"ETag", "\"v9\""}};
    struct mmr_buf w = {0};
    cr_assert_eq(mmr_http_write_response(&w, 200, h, 2, "{\"ok\":true}", 11, true), 0);
    cr_assert_eq(mmr_http_write_response(&w, 413, NULL, 0, "too big", 7, false), 0);
    char *t = same_in_every_split(MMR_HTTP_RESPONSE, NULL, w.data, w.len, false);
    cr_expect_str_eq(t, "200 'OK' 1.1 ka=1 ch=0 [Content-Type=application/json;ETag=\"v9\";"
                        "Content-Length=11;] body=11:1b4b9c59b3854dc5\n"
                        "413 'Payload Too Large' 1.1 ka=0 ch=0 [Content-Length=7;Connection=close;]"
                        " body=7:a7cb8b71c539170b\n"
                        "IDLE\n");
    free(t);

    w.len = 0;
    cr_assert_eq(mmr_http_write_response(&w, 204, NULL, 0, NULL, 0, false), 0);
    cr_expect_str_eq(w.data, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    w.len = 0;
    cr_assert_eq(mmr_http_write_response(&w, 100, NULL, 0, NULL, 0, false), 0);
    cr_expect_str_eq(w.data, "HTTP/1.1 100 Continue\r\n\r\n");
    w.len = 0;
    cr_assert_eq(mmr_http_write_response(&w, 299, NULL, 0, NULL, 0, true), 0);
    cr_expect_str_eq(w.data, "HTTP/1.1 299 Success\r\nContent-Length: 0\r\n\r\n");
    mmr_buf_free(&w);
}

Test(http_writer, refuses_bad_input_and_appends_nothing)
{
    struct mmr_buf w = {0};
    mmr_buf_append(&w, "x", 1);
    struct mmr_http_header crlf[] = {{"X-A", "1\r\nX-Injected: 1"}};
    struct mmr_http_header lf[] = {{"X-A", "1\nb"}};
    struct mmr_http_header del[] = {{"X-A", "\x7f"}};
    struct mmr_http_header name[] = {{"Bad Name", "1"}};
    struct mmr_http_header colon[] = {{"X:Y", "1"}};
    struct mmr_http_header empty[] = {{"", "1"}};
    struct mmr_http_header nullv[] = {{"X-A", NULL}};
    struct mmr_http_header owned[] = {{"content-LENGTH", "5"}};
    struct mmr_http_header host[] = {{"Host", "evil"}};
    struct mmr_http_header te[] = {{"Transfer-Encoding", "chunked"}};
    struct mmr_http_header conn[] = {{"Connection", "close"}};
    const struct mmr_http_header *bad[] = {crlf,  lf,    del,  name, colon, empty,
                                           nullv, owned, host, te,   conn};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(mmr_http_write_request(&w, "GET", "h", "/", bad[i], 1, NULL, 0, true),
                     MMR_EINVAL, "request case %zu", i);
        cr_expect_eq(mmr_http_write_response(&w, 200, bad[i], 1, NULL, 0, true), MMR_EINVAL,
                     "response case %zu", i);
    }
    cr_expect_eq(mmr_http_write_request(&w, "GE T", "h", "/", NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "", "h", "/", NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "h\r\nX: 1", "/", NULL, 0, NULL, 0, true),
                 MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "h/x", "/", NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "", "/", NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "h", "x", NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "h", "/a b", NULL, 0, NULL, 0, true),
                 MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "h", "/a#b", NULL, 0, NULL, 0, true),
                 MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "GET", "h", "/\xc3\xa9", NULL, 0, NULL, 0, true),
                 MMR_EINVAL);
    cr_expect_eq(mmr_http_write_request(&w, "POST", "h", "/", NULL, 0, NULL, 3, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_response(&w, 99, NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_response(&w, 600, NULL, 0, NULL, 0, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_response(&w, 204, NULL, 0, "x", 1, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_response(&w, 304, NULL, 0, "x", 1, true), MMR_EINVAL);
    cr_expect_eq(mmr_http_write_response(&w, 200, NULL, 0, NULL, 1, true), MMR_EINVAL);
    cr_expect(mmr_err_msg()[0] != '\0');
    cr_expect_eq(w.len, 1);
    cr_expect_str_eq(w.data, "x");
    mmr_buf_free(&w);
}

Test(http_writer, reasons)
{
    cr_expect_str_eq(mmr_http_reason(200), "OK");
    cr_expect_str_eq(mmr_http_reason(413), "Payload Too Large");
    cr_expect_str_eq(mmr_http_reason(431), "Request Header Fields Too Large");
    cr_expect_str_eq(mmr_http_reason(199), "Informational");
    cr_expect_str_eq(mmr_http_reason(399), "Redirection");
    cr_expect_str_eq(mmr_http_reason(499), "Client Error");
    cr_expect_str_eq(mmr_http_reason(599), "Server Error");
    cr_expect_str_eq(mmr_http_reason(700), "Unknown");
}

Test(http_parser, free_null_and_take_without_message)
{
    mmr_http_parser_free(NULL);
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, NULL);
    struct mmr_http_message m;
    mmr_http_parser_take(p, &m);
    cr_expect_null(m.method);
    cr_expect_null(m.body);
    cr_expect_eq(mmr_http_parser_status(p), 0);
    mmr_http_message_free(&m);
    /* A message dropped with its parser is freed with it. */
    size_t used;
    cr_expect_eq(mmr_http_parser_feed(p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 27, &used),
                 MMR_HTTP_DONE);
    mmr_http_parser_free(p);
}
