/* HTTP/1.1 framing over a byte stream. http-parser (2.9) does the syntax; this
 * file adds the limits, the framing rules that stop request smuggling, the
 * assembly of whole messages from callbacks, and the writers. */
#include "shared/compiler.h"
#include "shared/http.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "shared/err.h"

/* ---- small string helpers ----------------------------------------------- */

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* a[0..alen) equals the lower-case word b, ignoring case. */
static bool word_eq(const char *a, size_t alen, const char *b)
{
    size_t i = 0;
    for (; i < alen && b[i]; i++)
        if (lower(a[i]) != b[i])
            return false;
    return i == alen && b[i] == '\0';
}

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Field content and reason phrases: no control bytes but tab (obs-text,
 * bytes from 0x80, is allowed). */
static bool has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return true;
    }
    return false;
}

/* A request-target is visible ASCII (a URI: anything else is
 * percent-encoded). */
static bool has_non_uri(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f)
            return true;
    }
    return false;
}

/* Calls fn on each element of a comma-separated list, trimmed of spaces.
 * Stops and returns fn's value when it is non-zero. */
static int each_element(const char *list, int (*fn)(const char *s, size_t n, void *ud), void *ud)
{
    const char *s = list;
    for (;;) {
        const char *e = strchr(s, ',');
        const char *end = e ? e : s + strlen(s);
        const char *a = s;
        const char *b = end;
        while (a < b && is_ows(*a))
            a++;
        while (b > a && is_ows(b[-1]))
            b--;
        int rc = fn(a, (size_t)(b - a), ud);
        if (rc || !e)
            return rc;
        s = e + 1;
    }
}

/* ---- limits and messages ------------------------------------------------ */

void mmr_http_limits_default(struct mmr_http_limits *limits)
{
    limits->max_url = MMR_HTTP_MAX_URL_DEFAULT;
    limits->max_header_bytes = MMR_HTTP_MAX_HEADER_BYTES_DEFAULT;
    limits->max_headers = MMR_HTTP_MAX_HEADERS_DEFAULT;
    limits->max_body = MMR_HTTP_MAX_BODY_DEFAULT;
}

const char *mmr_http_message_header(const struct mmr_http_message *msg, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < msg->header_count; i++) {
        const char *h = msg->headers[i].name;
        if (strlen(h) != n)
            continue;
        size_t j = 0;
        while (j < n && lower(h[j]) == lower(name[j]))
            j++;
        if (j == n)
            return msg->headers[i].value;
    }
    return NULL;
}

void mmr_http_message_free(struct mmr_http_message *msg)
{
    free(msg->storage_);
    free(msg->headers);
    free(msg->body);
    memset(msg, 0, sizeof(*msg));
}

/* ---- parser state ------------------------------------------------------- */

/* What the last data callback delivered. http-parser hands over each element
 * (target, header name, header value) in pieces: one ending where the element
 * ends, preceded by pieces cut off by the end of a fed buffer. */
enum piece { PIECE_NONE, PIECE_START, PIECE_FIELD, PIECE_VALUE };

/* Where http-parser was paused. Debian builds it without HTTP_PARSER_STRICT,
 * so it takes any byte after a CR for the LF that should follow at the end of
 * the head, of chunk-size lines and of chunk data, and any two bytes after
 * chunk data for CRLF. Pausing at those points tells us where they are, and
 * we check the bytes there ourselves. */
enum pause_point { PAUSE_NONE, PAUSE_HEAD, PAUSE_CHUNK, PAUSE_CHUNK_END, PAUSE_DONE };

struct hdr_ref {
    size_t name; /* offsets into text */
    size_t value;
};

struct mmr_http_parser {
    http_parser hp;
    enum mmr_http_kind kind;
    struct mmr_http_limits lim;

    /* The buffer being fed, to tell a piece cut by its end from the end of
     * an element, and the offset of its first byte in the message. */
    const char *feed_start;
    const char *feed_end;
    size_t base;
    size_t last_end; /* message offset just past the last data piece */
    size_t framing;  /* chunked bodies: bytes between pieces of data */

    int err; /* sticky */
    int status;
    char errmsg[256];

    enum pause_point paused;
    char prev_byte; /* the last byte used by earlier feeds */
    bool closed;    /* the last message taken ended the connection */
    bool head_next; /* the next response answers HEAD */

    /* The message under construction. Checks that can refuse it run where
     * an element ends, never on a cut piece: so the verdict is the same
     * whatever the split of the input. */
    bool begun;
    bool headers_done;
    bool complete;
    bool start_closed; /* target or reason is NUL-terminated in text */
    enum piece last;
    bool last_done;      /* the last piece ended its element */
    bool name_bad;       /* the current header name holds a non-token byte */
    bool value_bad;      /* the current element holds a control byte */
    bool overflow;       /* a limit was passed: keep counting, stop storing */
    struct mmr_buf text; /* target or reason, then name\0value\0 pairs, path, query */
    size_t start_len;
    size_t name_len;
    size_t header_bytes;
    size_t header_lines;
    struct hdr_ref *hdrs;
    size_t nhdrs;
    size_t hdrs_cap;
    size_t path_off;
    size_t query_off;
    bool has_query;
    bool chunked;
    bool length_body; /* the body is Content-Length bytes, at least one */
    uint64_t chunk_size;
    bool keep_alive;
    bool expect_continue;
    bool continue_told;
    int version_minor;
    struct mmr_buf body;
};

static const char *kind_name(const struct mmr_http_parser *p)
{
    return p->kind == MMR_HTTP_REQUEST ? "request" : "response";
}

/* Records the first refusal; returns -1, which makes http-parser stop. */
static int fail(struct mmr_http_parser *p, int status, int code, const char *fmt, ...)
    MMR_PRINTF(4, 5);

static int fail(struct mmr_http_parser *p, int status, int code, const char *fmt, ...)
{
    if (p->err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
    va_end(ap);
    p->err = code;
    p->status = status;
    return -1;
}

static int sticky(const struct mmr_http_parser *p)
{
    return mmr_err_set(p->err, "%s", p->errmsg);
}

/* Forgets the message under construction. A full reset also restarts
 * http-parser; an interim 1xx response is dropped without one, http-parser
 * going on to the final response by itself. */
static void reset_message(struct mmr_http_parser *p, bool full)
{
    mmr_buf_free(&p->text);
    mmr_buf_free(&p->body);
    free(p->hdrs);
    p->hdrs = NULL;
    p->nhdrs = p->hdrs_cap = 0;
    p->begun = p->headers_done = p->complete = p->start_closed = false;
    p->last = PIECE_NONE;
    p->last_done = p->name_bad = p->value_bad = p->overflow = false;
    p->start_len = p->name_len = p->header_bytes = p->header_lines = 0;
    p->path_off = p->query_off = 0;
    p->has_query = p->chunked = p->length_body = p->keep_alive = false;
    p->chunk_size = 0;
    p->paused = PAUSE_NONE;
    p->expect_continue = p->continue_told = false;
    p->version_minor = 0;
    p->framing = 0;
    if (full) {
        http_parser_init(&p->hp, p->kind == MMR_HTTP_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
        p->hp.data = p;
        p->base = p->last_end = 0;
        p->head_next = false;
    }
}

static struct mmr_http_parser *from(http_parser *hp)
{
    return hp->data;
}

/* Notes a data piece; returns whether it ends its element (a cut piece ends
 * exactly at the end of the buffer, an element before its terminator). */
static bool piece(struct mmr_http_parser *p, enum piece kind, const char *at, size_t len)
{
    p->last = kind;
    p->last_end = p->base + (size_t)(at - p->feed_start) + len;
    p->last_done = at + len != p->feed_end;
    return p->last_done;
}

static void store(struct mmr_http_parser *p, const char *at, size_t len)
{
    if (!p->overflow)
        mmr_buf_append(&p->text, at, len);
}

static void close_start(struct mmr_http_parser *p)
{
    if (p->start_closed)
        return;
    mmr_buf_append(&p->text, "", 1);
    p->start_closed = true;
}

/* ---- callbacks ---------------------------------------------------------- */

static int on_message_begin(http_parser *hp)
{
    from(hp)->begun = true;
    return 0;
}

/* Request-target (requests) or reason phrase (responses). */
static int on_start(struct mmr_http_parser *p, const char *at, size_t len)
{
    if (p->last != PIECE_NONE && !(p->last == PIECE_START && !p->last_done))
        return fail(p, 400, MMR_EINVAL, "malformed %s line", kind_name(p));
    bool done = piece(p, PIECE_START, at, len);
    bool request = p->kind == MMR_HTTP_REQUEST;
    if (request ? has_non_uri(at, len) : has_ctl(at, len))
        p->value_bad = true;
    p->start_len += len;
    if (p->start_len > p->lim.max_url)
        p->overflow = true;
    store(p, at, len);
    if (!done)
        return 0;
    if (p->value_bad)
        return fail(p, 400, MMR_EINVAL, "%s holds bytes it may not",
                    request ? "request-target" : "reason phrase");
    if (p->start_len > p->lim.max_url) {
        if (request)
            return fail(p, 414, MMR_ETOOBIG, "request-target longer than %zu bytes",
                        p->lim.max_url);
        return fail(p, 400, MMR_ETOOBIG, "reason phrase longer than %zu bytes", p->lim.max_url);
    }
    close_start(p);
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    return on_start(from(hp), at, len);
}

static int on_status(http_parser *hp, const char *at, size_t len)
{
    return on_start(from(hp), at, len);
}

static int check_header_limits(struct mmr_http_parser *p)
{
    if (p->header_lines > p->lim.max_headers)
        return fail(p, 431, MMR_ETOOBIG, "more than %zu header lines", p->lim.max_headers);
    if (p->header_bytes > p->lim.max_header_bytes)
        return fail(p, 431, MMR_ETOOBIG, "header lines exceed %zu bytes", p->lim.max_header_bytes);
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct mmr_http_parser *p = from(hp);
    if (p->last == PIECE_FIELD) {
        if (p->last_done)
            return fail(p, 400, MMR_EINVAL, "malformed header line");
    } else {
        if (p->last != PIECE_NONE && !p->last_done)
            return fail(p, 400, MMR_EINVAL, "malformed header line");
        /* A new header (or trailer) line. */
        if (!p->headers_done)
            close_start(p);
        p->header_lines++;
        p->name_len = 0;
        p->name_bad = false;
        if (!p->headers_done && !p->overflow) {
            if (p->nhdrs == p->hdrs_cap) {
                p->hdrs_cap = p->hdrs_cap ? 2 * p->hdrs_cap : 8;
                p->hdrs = mmr_realloc(p->hdrs, p->hdrs_cap * sizeof(*p->hdrs));
            }
            p->hdrs[p->nhdrs].name = p->text.len;
            p->hdrs[p->nhdrs].value = 0;
        }
    }
    bool done = piece(p, PIECE_FIELD, at, len);
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            p->name_bad = true;
    p->name_len += len;
    p->header_bytes += len;
    if (p->header_bytes > p->lim.max_header_bytes || p->header_lines > p->lim.max_headers)
        p->overflow = true;
    if (!p->headers_done)
        store(p, at, len);
    if (!done)
        return 0;
    /* http-parser lets a space through before the colon: a smuggling classic
     * ("Transfer-Encoding : chunked"), refused as RFC 9112 says. */
    if (p->name_bad || p->name_len == 0)
        return fail(p, 400, MMR_EINVAL, "header name %zu is not a token", p->header_lines);
    if (check_header_limits(p) < 0)
        return -1;
    if (!p->headers_done) {
        mmr_buf_append(&p->text, "", 1);
        p->hdrs[p->nhdrs++].value = p->text.len;
    }
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct mmr_http_parser *p = from(hp);
    if (p->last == PIECE_VALUE) {
        /* A finished value going on: an obs-fold continuation line, which
         * RFC 9112 lets a server refuse, and which we do. */
        if (p->last_done)
            return fail(p, 400, MMR_EINVAL, "header line folded over several lines");
    } else if (p->last != PIECE_FIELD || !p->last_done) {
        return fail(p, 400, MMR_EINVAL, "malformed header line");
    }
    if (p->last == PIECE_FIELD)
        p->value_bad = false;
    bool done = piece(p, PIECE_VALUE, at, len);
    if (has_ctl(at, len))
        p->value_bad = true;
    p->header_bytes += len;
    if (p->header_bytes > p->lim.max_header_bytes)
        p->overflow = true;
    if (!p->headers_done)
        store(p, at, len);
    if (!done)
        return 0;
    if (p->value_bad)
        return fail(p, 400, MMR_EINVAL, "header value %zu holds control bytes", p->header_lines);
    if (check_header_limits(p) < 0)
        return -1;
    if (!p->headers_done) {
        size_t start = p->hdrs[p->nhdrs - 1].value;
        while (p->text.len > start && is_ows(p->text.data[p->text.len - 1]))
            p->text.len--;
        mmr_buf_append(&p->text, "", 1);
    }
    return 0;
}

struct te_scan {
    int chunked;       /* how many times */
    bool chunked_last; /* the last element so far is chunked */
    bool unknown;      /* a coding we do not implement */
    bool bad;          /* not a list of codings */
};

static int te_element(const char *s, size_t n, void *ud)
{
    struct te_scan *t = ud;
    size_t tok = 0;
    while (tok < n && is_tchar((unsigned char)s[tok]))
        tok++;
    size_t k = tok;
    while (k < n && is_ows(s[k]))
        k++;
    if (tok == 0 || (k < n && s[k] != ';')) {
        t->bad = true;
        return 1;
    }
    t->chunked_last = tok == n && word_eq(s, n, "chunked");
    if (t->chunked_last)
        t->chunked++;
    else if (word_eq(s, tok, "chunked"))
        t->bad = true; /* chunked takes no parameters */
    else
        t->unknown = true;
    return 0;
}

/* Transfer-Encoding: only "chunked" is implemented. */
static int check_te(struct mmr_http_parser *p, const char *value)
{
    struct te_scan t = {0};
    each_element(value, te_element, &t);
    if (t.bad)
        return fail(p, 400, MMR_EINVAL, "malformed Transfer-Encoding");
    if (t.unknown)
        return fail(p, 501, MMR_EUNSUP, "transfer-coding other than chunked");
    if (t.chunked != 1 || !t.chunked_last)
        return fail(p, 400, MMR_EINVAL, "chunked must be the last transfer-coding, once");
    return 0;
}

struct conn_scan {
    bool close;
    bool keep_alive;
};

static int conn_element(const char *s, size_t n, void *ud)
{
    struct conn_scan *c = ud;
    if (word_eq(s, n, "close"))
        c->close = true;
    else if (word_eq(s, n, "keep-alive"))
        c->keep_alive = true;
    return 0;
}

/* Splits the request-target into path and query, stored after the headers. */
static int check_target(struct mmr_http_parser *p)
{
    const char *t = p->text.data;
    size_t n = p->start_len;
    if (n == 0)
        return fail(p, 400, MMR_EINVAL, "empty request-target");
    if (memchr(t, '#', n))
        return fail(p, 400, MMR_EINVAL, "request-target holds a fragment");
    const char *rest = t;
    if (n == 1 && t[0] == '*') {
        if (p->hp.method != HTTP_OPTIONS)
            return fail(p, 400, MMR_EINVAL, "request-target '*' outside OPTIONS");
    } else if (t[0] != '/') {
        /* absolute-form, which servers must accept (RFC 9112 3.2.2) */
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (n > UINT16_MAX || http_parser_parse_url(t, n, 0, &u) != 0 ||
            !(u.field_set & (1 << UF_SCHEMA)) || !(u.field_set & (1 << UF_HOST)))
            return fail(p, 400, MMR_EINVAL, "malformed request-target");
        const char *scheme = t + u.field_data[UF_SCHEMA].off;
        size_t slen = u.field_data[UF_SCHEMA].len;
        if (!word_eq(scheme, slen, "http") && !word_eq(scheme, slen, "https"))
            return fail(p, 400, MMR_EINVAL, "request-target with a scheme other than http(s)");
        rest = scheme + slen + 3; /* past "://" */
        while (rest < t + n && *rest != '/' && *rest != '?')
            rest++;
    }
    /* Appending to text may move it: work on a copy of path and query. */
    size_t rlen = (size_t)(t + n - rest);
    char *copy = mmr_malloc(rlen + 1);
    memcpy(copy, rest, rlen);
    copy[rlen] = '\0';
    char *q = strchr(copy, '?');
    if (q)
        *q++ = '\0';
    p->path_off = p->text.len;
    mmr_buf_append(&p->text, copy[0] ? copy : "/", strlen(copy[0] ? copy : "/") + 1);
    p->has_query = q != NULL;
    p->query_off = p->text.len;
    mmr_buf_append(&p->text, q ? q : "", strlen(q ? q : "") + 1);
    free(copy);
    return 0;
}

struct head_scan {
    size_t content_length;
    size_t transfer_encoding;
    size_t host;
    size_t te; /* offset of the Transfer-Encoding value: text may move */
    bool te_lookalike;
    bool expect_continue;
    struct conn_scan conn;
};

static void scan_headers(const struct mmr_http_parser *p, struct head_scan *s)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < p->nhdrs; i++) {
        const char *name = p->text.data + p->hdrs[i].name;
        const char *value = p->text.data + p->hdrs[i].value;
        size_t n = strlen(name);
        if (word_eq(name, n, "content-length")) {
            s->content_length++;
        } else if (word_eq(name, n, "transfer-encoding")) {
            s->transfer_encoding++;
            s->te = p->hdrs[i].value;
        } else if (n > 17 && word_eq(name, 17, "transfer-encoding")) {
            s->te_lookalike = true;
        } else if (word_eq(name, n, "host")) {
            s->host++;
        } else if (word_eq(name, n, "connection")) {
            each_element(value, conn_element, &s->conn);
        } else if (word_eq(name, n, "expect")) {
            s->expect_continue = word_eq(value, strlen(value), "100-continue");
        }
    }
}

/* Framing decisions, once the headers are in: 0 to read a body, 1 for none,
 * -1 to refuse. */
static int check_head(struct mmr_http_parser *p)
{
    http_parser *hp = &p->hp;
    bool request = p->kind == MMR_HTTP_REQUEST;
    if (hp->http_major != 1)
        return fail(p, 505, MMR_EUNSUP, "HTTP/%u.%u is not supported", (unsigned)hp->http_major,
                    (unsigned)hp->http_minor);
    p->version_minor = hp->http_minor;

    struct head_scan s;
    scan_headers(p, &s);
    if (request) {
        if (hp->method == HTTP_CONNECT)
            return fail(p, 501, MMR_EUNSUP, "the CONNECT method is not supported");
        if (s.host > 1 || (hp->http_minor >= 1 && s.host != 1))
            return fail(p, 400, MMR_EINVAL, "an HTTP/1.1 request needs exactly one Host");
        if (check_target(p) < 0)
            return -1;
    }
    /* http-parser 2.9 takes any name starting with Transfer-Encoding for it
     * ("Transfer-Encodingx"): whatever we decided, it would frame otherwise. */
    if (s.te_lookalike)
        return fail(p, 400, MMR_EINVAL, "header name that reads as Transfer-Encoding");
    if (s.transfer_encoding) {
        if (s.content_length)
            return fail(p, 400, MMR_EINVAL, "both Content-Length and Transfer-Encoding");
        if (s.transfer_encoding > 1)
            return fail(p, 400, MMR_EINVAL, "Transfer-Encoding given twice");
        if (hp->http_minor == 0)
            return fail(p, 400, MMR_EINVAL, "Transfer-Encoding in an HTTP/1.0 message");
        if (check_te(p, p->text.data + s.te) < 0)
            return -1;
        p->chunked = true;
    }
    if (s.content_length > 1)
        return fail(p, 400, MMR_EINVAL, "Content-Length given twice");
    bool has_length = s.content_length == 1;
    /* http-parser must have understood the framing as we did. */
    if (p->chunked != ((hp->flags & F_CHUNKED) != 0) ||
        has_length != ((hp->flags & F_CONTENTLENGTH) != 0))
        return fail(p, 400, MMR_EINVAL, "ambiguous message framing");

    bool no_body = false;
    unsigned status = hp->status_code;
    if (!request)
        no_body = p->head_next || (status >= 100 && status < 200) || status == 204 || status == 304;
    if (!no_body && has_length && hp->content_length > p->lim.max_body)
        return fail(p, 413, MMR_ETOOBIG, "body of %llu bytes exceeds %zu",
                    (unsigned long long)hp->content_length, p->lim.max_body);

    if (hp->http_minor >= 1)
        p->keep_alive = !s.conn.close;
    else
        p->keep_alive = s.conn.keep_alive && !s.conn.close;
    /* A body that runs to the close, or a switch to another protocol. */
    if (!request && ((!no_body && !p->chunked && !has_length) || status == 101))
        p->keep_alive = false;
    p->length_body = !no_body && has_length && hp->content_length > 0;
    p->expect_continue = request && hp->http_minor >= 1 && s.expect_continue &&
                         (p->chunked || (has_length && hp->content_length > 0));
    p->headers_done = true;
    return no_body ? 1 : 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct mmr_http_parser *p = from(hp);
    if (p->last == PIECE_FIELD || (p->last != PIECE_NONE && !p->last_done))
        return fail(p, 400, MMR_EINVAL, "malformed header line");
    close_start(p);
    int rc = check_head(p);
    if (rc >= 0) {
        p->paused = PAUSE_HEAD;
        http_parser_pause(hp, 1);
    }
    return rc;
}

static int on_chunk_header(http_parser *hp)
{
    struct mmr_http_parser *p = from(hp);
    if (hp->content_length > p->lim.max_body - p->body.len)
        return fail(p, 413, MMR_ETOOBIG, "chunked body exceeds %zu bytes", p->lim.max_body);
    p->chunk_size = hp->content_length;
    p->paused = PAUSE_CHUNK;
    http_parser_pause(hp, 1);
    return 0;
}

static int on_chunk_complete(http_parser *hp)
{
    struct mmr_http_parser *p = from(hp);
    /* The last chunk completes with the trailers: its end is the message's. */
    if (p->chunk_size != 0) {
        p->paused = PAUSE_CHUNK_END;
        http_parser_pause(hp, 1);
    }
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct mmr_http_parser *p = from(hp);
    size_t off = p->base + (size_t)(at - p->feed_start);
    if (p->chunked) {
        /* Chunk-size lines can carry extensions (up to 80 KiB each, says
         * http-parser): bound what the framing may cost beside the data. */
        p->framing += off - p->last_end;
        if (p->framing > p->lim.max_header_bytes + p->body.len)
            return fail(p, 400, MMR_EINVAL, "chunked framing larger than the data it carries");
    }
    p->last_end = off + len;
    if (len > p->lim.max_body - p->body.len)
        return fail(p, 413, MMR_ETOOBIG, "body exceeds %zu bytes", p->lim.max_body);
    mmr_buf_append(&p->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct mmr_http_parser *p = from(hp);
    /* Stop right after this message: what follows waits for the caller. */
    p->paused = PAUSE_DONE;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
};

/* ---- parser API --------------------------------------------------------- */

struct mmr_http_parser *mmr_http_parser_new(enum mmr_http_kind kind,
                                            const struct mmr_http_limits *limits)
{
    struct mmr_http_parser *p = mmr_calloc(1, sizeof(*p));
    p->kind = kind;
    if (limits)
        p->lim = *limits;
    else
        mmr_http_limits_default(&p->lim);
    reset_message(p, true);
    return p;
}

void mmr_http_parser_free(struct mmr_http_parser *parser)
{
    if (!parser)
        return;
    reset_message(parser, false);
    free(parser);
}

/* Turns http-parser's verdict into ours, unless a callback gave one. */
static int parser_error(struct mmr_http_parser *p)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (p->err)
        return sticky(p);
    if (e == HPE_HEADER_OVERFLOW && !p->headers_done)
        fail(p, 431, MMR_ETOOBIG, "%s head larger than %d bytes", kind_name(p),
             HTTP_MAX_HEADER_SIZE);
    else if (e == HPE_HEADER_OVERFLOW)
        fail(p, 400, MMR_EINVAL, "chunk-size line or trailers larger than %d bytes",
             HTTP_MAX_HEADER_SIZE);
    else if (e == HPE_INVALID_EOF_STATE)
        fail(p, 400, MMR_EPROTO, "connection closed in the middle of a %s", kind_name(p));
    else
        fail(p, 400, MMR_EINVAL, "malformed %s: %s", kind_name(p), http_errno_description(e));
    return sticky(p);
}

/* The byte `back` places before offset off of the fed buffer, reaching into
 * the previous feed for one byte. */
static char byte_at(const struct mmr_http_parser *p, const char *buf, size_t off, size_t back)
{
    return off >= back ? buf[off - back] : p->prev_byte;
}

/* At a pause, off is where http-parser stopped in buf. Checks the line ending
 * there; returns 0 to go on parsing, MMR_HTTP_DONE, or -1 on a refusal. */
static int at_pause(struct mmr_http_parser *p, const char *buf, size_t off)
{
    enum pause_point at = p->paused;
    bool ok = true;
    p->paused = PAUSE_NONE;
    switch (at) {
    case PAUSE_HEAD: /* the byte that ends the head is still to be used */
        ok = buf[off] == '\n';
        break;
    case PAUSE_CHUNK: /* the chunk-size line's CR and this were used */
        ok = byte_at(p, buf, off, 1) == '\n';
        break;
    case PAUSE_CHUNK_END:
        ok = byte_at(p, buf, off, 1) == '\n' && byte_at(p, buf, off, 2) == '\r';
        break;
    case PAUSE_DONE:
        ok = p->length_body || byte_at(p, buf, off, 1) == '\n';
        break;
    case PAUSE_NONE:
        ok = false;
        break;
    }
    if (!ok)
        return fail(p, 400, MMR_EINVAL, "malformed %s: a line ends without LF", kind_name(p));
    if (at != PAUSE_DONE)
        return 0;
    unsigned status = p->hp.status_code;
    if (p->kind == MMR_HTTP_RESPONSE && status >= 100 && status < 200 && status != 101) {
        /* An interim response: the final one follows. */
        bool head = p->head_next;
        reset_message(p, false);
        p->head_next = head;
        return 0;
    }
    p->complete = true;
    return MMR_HTTP_DONE;
}

int mmr_http_parser_feed(struct mmr_http_parser *parser, const void *data, size_t len,
                         size_t *consumed)
{
    struct mmr_http_parser *p = parser;
    const char *buf = data;
    *consumed = 0;
    if (p->err)
        return sticky(p);
    if (p->complete)
        return MMR_HTTP_DONE;
    if (len == 0)
        return MMR_HTTP_MORE;
    if (p->closed) {
        fail(p, 400, MMR_EPROTO, "data after a %s that closed the connection", kind_name(p));
        return sticky(p);
    }
    size_t off = 0;
    int rc = 0;
    while (rc == 0 && off < len) {
        p->feed_start = buf + off;
        p->feed_end = buf + len;
        size_t n = http_parser_execute(&p->hp, &settings, buf + off, len - off);
        p->base += n;
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e == HPE_PAUSED) {
            rc = at_pause(p, buf, off);
            if (rc == 0)
                http_parser_pause(&p->hp, 0);
        } else if (e != HPE_OK) {
            rc = -1;
        } else if (off != len) {
            rc = fail(p, 400, MMR_EINVAL, "malformed %s: parsing stopped early", kind_name(p));
        }
    }
    *consumed = off;
    if (off > 0)
        p->prev_byte = buf[off - 1];
    if (rc < 0)
        return parser_error(p);
    return rc == MMR_HTTP_DONE ? MMR_HTTP_DONE : MMR_HTTP_MORE;
}

int mmr_http_parser_finish(struct mmr_http_parser *parser)
{
    struct mmr_http_parser *p = parser;
    if (p->err)
        return sticky(p);
    if (p->complete)
        return MMR_HTTP_DONE;
    if (p->closed)
        return MMR_HTTP_MORE;
    static const char nothing[1] = "";
    p->feed_start = p->feed_end = nothing;
    http_parser_execute(&p->hp, &settings, nothing, 0);
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (e == HPE_PAUSED && p->paused == PAUSE_DONE) {
        /* Only a body running to the close ends here: no line to check. */
        p->paused = PAUSE_NONE;
        p->complete = true;
        return MMR_HTTP_DONE;
    }
    if (e != HPE_OK)
        return parser_error(p);
    return MMR_HTTP_MORE;
}

void mmr_http_parser_take(struct mmr_http_parser *parser, struct mmr_http_message *msg)
{
    struct mmr_http_parser *p = parser;
    memset(msg, 0, sizeof(*msg));
    if (!p->complete)
        return;
    if (!p->text.data)
        mmr_buf_append(&p->text, "", 1);
    if (!p->body.data)
        mmr_buf_append(&p->body, "", 0);
    char *s = p->text.data;
    msg->storage_ = s;
    if (p->kind == MMR_HTTP_REQUEST) {
        msg->method = http_method_str((enum http_method)p->hp.method);
        msg->target = s;
        msg->path = s + p->path_off;
        msg->query = p->has_query ? s + p->query_off : NULL;
    } else {
        msg->status = (int)p->hp.status_code;
        msg->reason = s;
    }
    msg->version_minor = p->version_minor;
    if (p->nhdrs) {
        msg->headers = mmr_malloc(p->nhdrs * sizeof(*msg->headers));
        for (size_t i = 0; i < p->nhdrs; i++) {
            msg->headers[i].name = s + p->hdrs[i].name;
            msg->headers[i].value = s + p->hdrs[i].value;
        }
    }
    msg->header_count = p->nhdrs;
    msg->body = p->body.data;
    msg->body_len = p->body.len;
    msg->chunked = p->chunked;
    msg->keep_alive = p->keep_alive;
    /* The buffers now belong to the message. */
    memset(&p->text, 0, sizeof(p->text));
    memset(&p->body, 0, sizeof(p->body));
    reset_message(p, true);
    p->closed = !msg->keep_alive;
}

int mmr_http_parser_status(const struct mmr_http_parser *parser)
{
    return parser->err ? parser->status : 0;
}

bool mmr_http_parser_busy(const struct mmr_http_parser *parser)
{
    return parser->begun && !parser->complete;
}

bool mmr_http_parser_wants_continue(struct mmr_http_parser *parser)
{
    struct mmr_http_parser *p = parser;
    if (!p->expect_continue || p->continue_told || p->complete || p->err)
        return false;
    p->continue_told = true;
    return true;
}

void mmr_http_parser_expect_head(struct mmr_http_parser *parser)
{
    parser->head_next = true;
}

/* ---- writers ------------------------------------------------------------ */

static bool is_token(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* Field content: visible bytes, spaces, tabs and obs-text; no CR, LF, NUL. */
static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* Visible ASCII without the bytes in `except`. */
static bool is_visible(const char *s, const char *except)
{
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr(except, c))
            return false;
    }
    return true;
}

static int check_headers(const struct mmr_http_header *h, size_t n)
{
    static const char *const owned[] = {"host", "content-length", "transfer-encoding",
                                        "connection"};
    for (size_t i = 0; i < n; i++) {
        if (!is_token(h[i].name))
            return mmr_err_set(MMR_EINVAL, "header %zu: name is not a token", i);
        if (!h[i].value || !is_field_value(h[i].value))
            return mmr_err_set(MMR_EINVAL, "header %s: value holds control characters", h[i].name);
        for (size_t j = 0; j < sizeof(owned) / sizeof(owned[0]); j++)
            if (word_eq(h[i].name, strlen(h[i].name), owned[j]))
                return mmr_err_set(MMR_EINVAL, "header %s is written by the HTTP writer",
                                   h[i].name);
    }
    return 0;
}

static void append_str(struct mmr_buf *out, const char *s)
{
    mmr_buf_append(out, s, strlen(s));
}

static void append_headers(struct mmr_buf *out, const struct mmr_http_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        append_str(out, h[i].name);
        mmr_buf_append(out, ": ", 2);
        append_str(out, h[i].value);
        mmr_buf_append(out, "\r\n", 2);
    }
}

static void append_length(struct mmr_buf *out, size_t len)
{
    char line[48];
    int n = snprintf(line, sizeof(line), "Content-Length: %zu\r\n", len);
    mmr_buf_append(out, line, (size_t)n);
}

int mmr_http_write_request(struct mmr_buf *out, const char *method, const char *host,
                           const char *target, const struct mmr_http_header *headers,
                           size_t header_count, const void *body, size_t body_len, bool keep_alive)
{
    if (!is_token(method))
        return mmr_err_set(MMR_EINVAL, "HTTP method is not a token");
    if (!is_visible(host, "/?#@"))
        return mmr_err_set(MMR_EINVAL, "bad HTTP host");
    if (!is_visible(target, "#") || target[0] != '/')
        return mmr_err_set(MMR_EINVAL, "bad request-target (it must start with '/')");
    if (body_len && !body)
        return mmr_err_set(MMR_EINVAL, "request body missing");
    int rc = check_headers(headers, header_count);
    if (rc < 0)
        return rc;

    append_str(out, method);
    mmr_buf_append(out, " ", 1);
    append_str(out, target);
    mmr_buf_append(out, " HTTP/1.1\r\nHost: ", 17);
    append_str(out, host);
    mmr_buf_append(out, "\r\n", 2);
    append_headers(out, headers, header_count);
    if (body_len || !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH"))
        append_length(out, body_len);
    if (!keep_alive)
        append_str(out, "Connection: close\r\n");
    mmr_buf_append(out, "\r\n", 2);
    mmr_buf_append(out, body, body_len);
    return 0;
}

int mmr_http_write_response(struct mmr_buf *out, int status, const struct mmr_http_header *headers,
                            size_t header_count, const void *body, size_t body_len, bool keep_alive)
{
    if (status < 100 || status > 599)
        return mmr_err_set(MMR_EINVAL, "HTTP status %d out of range", status);
    bool bodiless = status < 200 || status == 204 || status == 304;
    if (body_len && bodiless)
        return mmr_err_set(MMR_EINVAL, "a %d response has no body", status);
    if (body_len && !body)
        return mmr_err_set(MMR_EINVAL, "response body missing");
    int rc = check_headers(headers, header_count);
    if (rc < 0)
        return rc;

    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    mmr_buf_append(out, line, (size_t)n);
    append_str(out, mmr_http_reason(status));
    mmr_buf_append(out, "\r\n", 2);
    append_headers(out, headers, header_count);
    if (!bodiless)
        append_length(out, body_len);
    if (!keep_alive && status >= 200)
        append_str(out, "Connection: close\r\n");
    mmr_buf_append(out, "\r\n", 2);
    mmr_buf_append(out, body, body_len);
    return 0;
}

const char *mmr_http_reason(int status)
{
    const char *s = http_status_str((enum http_status)status);
    if (s && s[0] != '<')
        return s;
    switch (status / 100) {
    case 1:
        return "Informational";
    case 2:
        return "Success";
    case 3:
        return "Redirection";
    case 4:
        return "Client Error";
    case 5:
        return "Server Error";
    default:
        return "Unknown";
    }
}
