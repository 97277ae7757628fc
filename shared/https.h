/* HTTPS/1.1 client for worker threads (the agent's uplink, mamoriadm, the
 * load generator): one keep-alive connection to one server, reopened (with
 * TLS session resumption) when the server closed it, and JSON helpers. */
#ifndef MMR_HTTPS_H
#define MMR_HTTPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/http.h"
#include "shared/tls.h"

struct mmr_https;

struct mmr_https_opts {
    const char *url;            /* "https://host:port" */
    struct mmr_tls_client *tls; /* trust and identity; borrowed, must outlive the client */
    int timeout_ms;             /* connect + send + whole response; 0: 30 s */
    size_t max_response;        /* largest response body; 0: 32 MiB */
};

struct mmr_https_stats {
    uint64_t connects;  /* TCP + TLS connections made */
    uint64_t resumed;   /* of which resumed a TLS session */
    uint64_t requests;
    uint64_t bytes_sent;     /* plaintext HTTP bytes */
    uint64_t bytes_received;
};

int mmr_https_new(const struct mmr_https_opts *opts, struct mmr_https **out);
void mmr_https_free(struct mmr_https *h);

/* Sends one request and reads its response (freed with
 * mmr_http_message_free). A kept-alive connection that the server closed
 * meanwhile is replaced once, transparently, when nothing of the response had
 * arrived. Errors: MMR_ECONN, MMR_ETIMEDOUT, MMR_EPROTO (malformed response),
 * MMR_EPERM (TLS trust failure), each with a message naming the server. */
int mmr_https_request(struct mmr_https *h, const char *method, const char *target,
                      const struct mmr_http_header *headers, size_t nheaders, const void *body,
                      size_t len, struct mmr_http_message *resp);

/* JSON request (body may be NULL; gzip compresses it) and JSON response:
 * *status gets the HTTP status, *reply the parsed body (NULL when empty or
 * not JSON). Non-2xx statuses are not errors here: the caller decides. */
int mmr_https_json(struct mmr_https *h, const char *method, const char *target,
                   const json_t *body, bool gzip, int *status, json_t **reply);

/* The message of an API error reply {"error":{"message":...}}, or fallback. */
const char *mmr_https_error_message(const json_t *reply, const char *fallback);
/* Its "reason" ("token_expired", "cert_revoked", ...), or "". */
const char *mmr_https_error_reason(const json_t *reply);

/* Closes the connection (the next request opens a new one). */
void mmr_https_disconnect(struct mmr_https *h);

/* The TLS connection of the last request, for peer certificate queries;
 * NULL when disconnected. */
struct mmr_tls_conn *mmr_https_tls(struct mmr_https *h);

void mmr_https_stats(const struct mmr_https *h, struct mmr_https_stats *out);

#endif
