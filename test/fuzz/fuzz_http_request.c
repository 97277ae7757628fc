/* libFuzzer target for shared/http.c: hostile bytes through the request parser, whole and in
 * splits chosen by the first two input bytes: same result for every split, consumed <= fed,
 * sane messages that survive the request writer and a second parse. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/http.h"
#include "shared/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_http_request: %s (%s)\n", what, mmr_err_msg());
        abort();
    }
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool same_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        if (x != *b)
            return false;
    }
    return *a == *b;
}

static bool owned_by_writer(const char *name)
{
    return same_nocase(name, "host") || same_nocase(name, "content-length") ||
           same_nocase(name, "transfer-encoding") || same_nocase(name, "connection");
}

static void sane(const struct mmr_http_message *m, const struct mmr_http_limits *lim)
{
    check(m->method && m->method[0], "no method");
    check(m->status == 0 && m->reason == NULL, "response fields in a request");
    size_t tlen = strlen(m->target);
    check(tlen > 0 && tlen <= lim->max_url, "target length");
    check(m->path[0] == '/' || strcmp(m->path, "*") == 0, "path neither /... nor *");
    check(strchr(m->target, '#') == NULL, "fragment in target");
    for (size_t i = 0; i < tlen; i++)
        check((unsigned char)m->target[i] > 0x20 && (unsigned char)m->target[i] < 0x7f,
              "target byte");
    check(m->header_count <= lim->max_headers, "header count");
    size_t bytes = 0;
    int host = 0;
    for (size_t i = 0; i < m->header_count; i++) {
        const char *n = m->headers[i].name;
        const char *v = m->headers[i].value;
        size_t vl = strlen(v);
        check(n[0] != '\0', "empty header name");
        for (const char *c = n; *c; c++)
            check(*c > 0x20 && *c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", *c), "name byte");
        for (const char *c = v; *c; c++)
            check((unsigned char)*c >= 0x20 ? *c != 0x7f : *c == '\t', "value byte");
        check(vl == 0 || (!is_ows(v[0]) && !is_ows(v[vl - 1])), "value not trimmed");
        bytes += strlen(n) + vl;
        host += same_nocase(n, "host");
    }
    check(bytes <= lim->max_header_bytes, "header bytes");
    check(m->version_minor >= 1 ? host == 1 : host <= 1, "Host count");
    check(m->body != NULL && m->body_len <= lim->max_body, "body length");
    check(m->body[m->body_len] == '\0', "body not terminated");
    check(!m->chunked || m->version_minor >= 1, "chunked HTTP/1.0");
}

/* Writes the request back and parses it again: same request. */
static void round_trip(const struct mmr_http_message *m)
{
    if (m->target[0] != '/')
        return;
    struct mmr_http_header *h = mmr_calloc(m->header_count + 1, sizeof(*h));
    size_t n = 0;
    for (size_t i = 0; i < m->header_count; i++)
        if (!owned_by_writer(m->headers[i].name))
            h[n++] = m->headers[i];
    const char *host = mmr_http_message_header(m, "host");
    struct mmr_buf w = {0};
    int rc = mmr_http_write_request(&w, m->method, host ? host : "h", m->target, h, n, m->body,
                                    m->body_len, m->keep_alive);
    if (rc < 0) /* only a Host value the writer will not send is a reason */
        rc = mmr_http_write_request(&w, m->method, "h", m->target, h, n, m->body, m->body_len,
                                    m->keep_alive);
    check(rc == 0, "writer refused a parsed request");

    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    lim.max_headers = 1000;
    lim.max_header_bytes = 1 << 20;
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, &lim);
    size_t used = 0;
    if (mmr_http_parser_feed(p, w.data, w.len, &used) != MMR_HTTP_DONE) {
        fprintf(stderr, "rewritten request:\n%s\n", w.data);
        check(false, "rewritten: not done");
    }
    check(used == w.len, "rewritten: bytes left over");
    struct mmr_http_message r;
    mmr_http_parser_take(p, &r);
    check(strcmp(r.method, m->method) == 0, "rewritten: method");
    check(strcmp(r.target, m->target) == 0, "rewritten: target");
    check(r.body_len == m->body_len && memcmp(r.body, m->body, m->body_len) == 0,
          "rewritten: body");
    check(r.keep_alive == m->keep_alive, "rewritten: keep-alive");
    size_t k = 0;
    for (size_t i = 0; i < r.header_count; i++) {
        if (owned_by_writer(r.headers[i].name))
            continue;
        check(k < n, "rewritten: extra header");
        check(strcmp(r.headers[i].name, h[k].name) == 0, "rewritten: header name");
        check(strcmp(r.headers[i].value, h[k].value) == 0, "rewritten: header value");
        k++;
    }
    check(k == n, "rewritten: header lost");
    mmr_http_message_free(&r);
    mmr_http_parser_free(p);
    mmr_buf_free(&w);
    free(h);
}

/* Feeds in pieces of 1..max_piece bytes (max_piece 0: all at once) and
 * returns a transcript of the messages and the outcome. */
static char *run(const struct mmr_http_limits *lim, const char *in, size_t len, uint32_t seed,
                 size_t max_piece, bool deep)
{
    struct mmr_http_parser *p = mmr_http_parser_new(MMR_HTTP_REQUEST, lim);
    struct mmr_buf t = {0};
    size_t pos = 0;
    int rc = MMR_HTTP_MORE;
    uint32_t x = seed | 1;
    while (pos < len) {
        size_t n = len - pos;
        if (max_piece) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            size_t want = 1 + x % max_piece;
            if (want < n)
                n = want;
        }
        size_t used = n + 1;
        rc = mmr_http_parser_feed(p, in + pos, n, &used);
        check(used <= n, "consumed more than fed");
        pos += used;
        if (rc < 0) {
            check(mmr_err_msg()[0] != '\0', "refusal without a message");
            break;
        }
        check(rc == MMR_HTTP_MORE ? used == n : rc == MMR_HTTP_DONE, "bad result");
        if (rc == MMR_HTTP_DONE) {
            struct mmr_http_message m;
            mmr_http_parser_take(p, &m);
            sane(&m, lim);
            mmr_buf_appendf(&t, "%s %s %zu/%zu ka=%d ch=%d body=%zu\n", m.method, m.target,
                            m.header_count, strlen(m.path), m.keep_alive, m.chunked, m.body_len);
            if (deep)
                round_trip(&m);
            mmr_http_message_free(&m);
        }
    }
    if (rc < 0) {
        int st = mmr_http_parser_status(p);
        check(st == 400 || st == 413 || st == 414 || st == 431 || st == 501 || st == 505,
              "unexpected status");
        mmr_buf_appendf(&t, "ERR %d %d\n", st, rc);
    } else {
        int fin = mmr_http_parser_finish(p);
        check(fin == MMR_HTTP_MORE || fin == MMR_EPROTO, "finish of a request stream");
        mmr_buf_appendf(&t, "END %d\n", fin);
    }
    mmr_http_parser_free(p);
    mmr_buf_append(&t, "", 0);
    return t.data;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = (uint32_t)data[0] | (uint32_t)data[1] << 8;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;

    /* Tight limits for half the seeds, so that inputs cross them. */
    struct mmr_http_limits lim;
    mmr_http_limits_default(&lim);
    if (seed & 1) {
        lim.max_url = 24;
        lim.max_header_bytes = 200;
        lim.max_headers = 6;
        lim.max_body = 300;
    }
    char *whole = run(&lim, in, len, 0, 0, true);
    size_t pieces[] = {1, 2 + (seed >> 1) % 7, 1 + (seed >> 4) % 200};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        if (pieces[i] == 1 && len > 4096)
            continue; /* byte by byte is slow on long inputs */
        char *split = run(&lim, in, len, seed * 2654435761u + (uint32_t)i, pieces[i], false);
        if (strcmp(split, whole) != 0) {
            fprintf(stderr, "whole:\n%s\nsplit (max %zu):\n%s\n", whole, pieces[i], split);
            check(false, "a split changed the result");
        }
        free(split);
    }
    free(whole);
    return 0;
}
