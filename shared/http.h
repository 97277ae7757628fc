/* HTTP/1.1 message framing for the agent <-> server protocol: an incremental
 * parser for requests (server side, untrusted input) and responses (client
 * side), with size limits and strict framing rules, and message writers. */
#ifndef MMR_HTTP_H
#define MMR_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "shared/mem.h"

/* ---- limits ------------------------------------------------------------- */

#define MMR_HTTP_MAX_URL_DEFAULT          (8 * 1024)
#define MMR_HTTP_MAX_HEADER_BYTES_DEFAULT (16 * 1024)
#define MMR_HTTP_MAX_HEADERS_DEFAULT      64
#define MMR_HTTP_MAX_BODY_DEFAULT         (8 * 1024 * 1024)

/* Whatever the limits, http-parser refuses a head (request line and headers),
 * a chunk-size line or a trailer section longer than 80 KiB. */
struct mmr_http_limits {
    size_t max_url;          /* request-target (or reason phrase) bytes: 414 */
    size_t max_header_bytes; /* names + values of all header and trailer lines: 431 */
    size_t max_headers;      /* header lines, trailers included: 431 */
    size_t max_body;         /* body bytes after de-chunking: 413 */
};

/* The defaults above. */
void mmr_http_limits_default(struct mmr_http_limits *limits);

/* ---- messages ----------------------------------------------------------- */

struct mmr_http_header {
    const char *name;  /* as received: compare without case */
    const char *value; /* leading and trailing spaces and tabs removed */
};

/* A complete message. Everything points into storage the message owns. */
struct mmr_http_message {
    const char *method; /* requests: "GET", "POST", ...; NULL in responses */
    const char *target; /* requests: the request-target as received */
    const char *path;   /* requests: "/v1/events" (raw, not percent-decoded) */
    const char *query;  /* requests: after '?' ("" for a bare '?'); NULL without '?' */
    int status;         /* responses: 100..999; 0 in requests */
    const char *reason; /* responses: reason phrase, possibly "" */
    int version_minor;  /* HTTP/1.x */
    struct mmr_http_header *headers;
    size_t header_count;
    char *body; /* never NULL; NUL-terminated after body_len bytes */
    size_t body_len;
    bool chunked;    /* the body arrived chunked */
    bool keep_alive; /* another message may follow on this connection */
    char *storage_;  /* private */
};

/* The value of the first header with this name (any case), or NULL. */
const char *mmr_http_message_header(const struct mmr_http_message *msg, const char *name);

void mmr_http_message_free(struct mmr_http_message *msg);

/* ---- parser ------------------------------------------------------------- */

enum mmr_http_kind { MMR_HTTP_REQUEST, MMR_HTTP_RESPONSE };

/* mmr_http_parser_feed results besides errors. */
#define MMR_HTTP_MORE 0 /* all bytes used, message not complete yet */
#define MMR_HTTP_DONE 1 /* a message is complete: take it */

/* Framing rules enforced on top of http-parser (each refusal names the status
 * a server should answer with, then close the connection):
 *   400 malformed syntax; Content-Length together with Transfer-Encoding,
 *       Content-Length twice, Transfer-Encoding twice or in HTTP/1.0;
 *       "chunked" twice or not last; whitespace before a header's colon;
 *       obs-fold line continuations; HTTP/1.1 without exactly one Host;
 *       a request-target that is not origin-form ("/..."), absolute-form
 *       ("http://host/...") or "*" for OPTIONS, or that holds '#'; chunked
 *       framing (chunk-size lines, extensions, CRLFs) larger than
 *       max_header_bytes plus the body received so far; bytes after a
 *       message that closes the connection
 *   413 a body over max_body (said after the headers for Content-Length, at
 *       the chunk-size line for chunked bodies: before the body is read)
 *   414 a request-target over max_url
 *   431 headers over max_header_bytes or max_headers, or a head over 80 KiB
 *   501 a transfer-coding other than chunked; the CONNECT method
 *   505 an HTTP major version other than 1
 * Trailers are checked against the header limits, then dropped. Interim 1xx
 * responses (but 101) are skipped. Whatever the split of the input into feeds,
 * the result is the same messages or the same refusal. Partial state is the
 * bytes of the message kept so far, bounded by the limits. */
struct mmr_http_parser;

/* limits may be NULL for the defaults; they are copied. */
struct mmr_http_parser *mmr_http_parser_new(enum mmr_http_kind kind,
                                            const struct mmr_http_limits *limits);
void mmr_http_parser_free(struct mmr_http_parser *parser);

/* Feeds bytes from the connection, in any split. *consumed receives how many
 * of them were used: after MMR_HTTP_DONE the rest belongs to the next message
 * (pipelining, keep-alive) and is fed again once the message is taken; while a
 * message waits to be taken, feeding returns MMR_HTTP_DONE and uses nothing.
 * Errors: MMR_EINVAL (400), MMR_ETOOBIG (413, 414, 431), MMR_EUNSUP (501,
 * 505), MMR_EPROTO (data after a closing message); they are final: every later
 * call returns the same error. */
int mmr_http_parser_feed(struct mmr_http_parser *parser, const void *data, size_t len,
                         size_t *consumed);

/* Tells the parser that the peer closed the connection. Returns MMR_HTTP_DONE
 * when that completes a message (a response whose body runs to the close),
 * MMR_HTTP_MORE when no message was under way, MMR_EPROTO when one was cut
 * short (status 400), or the earlier error. */
int mmr_http_parser_finish(struct mmr_http_parser *parser);

/* Moves the completed message into *msg and makes the parser ready for the
 * next one. Only after MMR_HTTP_DONE. */
void mmr_http_parser_take(struct mmr_http_parser *parser, struct mmr_http_message *msg);

/* After an error, the HTTP status to answer with (see above); 0 otherwise. */
int mmr_http_parser_status(const struct mmr_http_parser *parser);

/* Whether bytes of an unfinished message have arrived: a server applies its
 * request timeout rather than its idle keep-alive timeout then. */
bool mmr_http_parser_busy(const struct mmr_http_parser *parser);

/* True once per request whose headers are complete and carry "Expect:
 * 100-continue" while its body is still to come: the server then writes an
 * interim "100 Continue" response (or its refusal) before reading on. */
bool mmr_http_parser_wants_continue(struct mmr_http_parser *parser);

/* Responses: the next response answers a HEAD request, so it has no body
 * whatever its headers say. */
void mmr_http_parser_expect_head(struct mmr_http_parser *parser);

/* ---- writers ------------------------------------------------------------ */

/* Appends "METHOD target HTTP/1.1", Host, the caller's headers, Content-Length
 * (when there is a body or the method is POST, PUT or PATCH), "Connection:
 * close" unless keep_alive, and the body. target is origin-form ("/v1/x?a=b").
 * Returns MMR_EINVAL, appending nothing, for a method that is not a token, a
 * bad host or target, a header name that is not a token, a value holding
 * control characters (CR, LF, NUL...), or a header the writer owns (Host,
 * Content-Length, Transfer-Encoding, Connection). */
int mmr_http_write_request(struct mmr_buf *out, const char *method, const char *host,
                           const char *target, const struct mmr_http_header *headers,
                           size_t header_count, const void *body, size_t body_len, bool keep_alive);

/* Appends "HTTP/1.1 status reason", the caller's headers, Content-Length,
 * "Connection: close" unless keep_alive, and the body. 1xx, 204 and 304
 * responses carry neither Content-Length nor a body (a body is refused), and
 * 1xx ignore keep_alive. Returns MMR_EINVAL, appending nothing, for a status
 * outside 100..599 and the header faults of mmr_http_write_request. */
int mmr_http_write_response(struct mmr_buf *out, int status, const struct mmr_http_header *headers,
                            size_t header_count, const void *body, size_t body_len,
                            bool keep_alive);

/* The standard reason phrase for a status ("Payload Too Large"), or a generic
 * one for its class ("Client Error"). */
const char *mmr_http_reason(int status);

#endif
