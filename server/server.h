/* The management server's shared context and configuration, handed to the
 * listener and the API modules. */
#ifndef MMR_SERVER_H
#define MMR_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "shared/config.h"
#include "shared/http.h"
#include "shared/pki.h"

struct mmr_store;
struct mmr_ca;

struct mmr_server_config {
    char *listen;             /* [server] listen: "127.0.0.1:8443" */
    char *public_url;         /* [server] public_url: what tokens tell agents */
    char *names;              /* [server] names: SANs of the server certificate (init) */
    char *org;                /* [server] org: O of every certificate (init) */
    int64_t device_cert_ms;   /* [pki] device_cert_lifetime */
    uint64_t max_body;        /* [limits] max_body */
    int64_t max_connections;  /* [limits] max_connections */
    int64_t idle_timeout_ms;  /* [limits] idle_timeout: keep-alive connections */
    int64_t request_timeout_ms; /* [limits] request_timeout: a request must arrive whole */
    int64_t checkin_interval_ms; /* [agents] checkin_interval, unless policy says */
    char *log_level;
    char *log_file;
};

extern const struct mmr_cfg_key mmr_server_config_schema[];
extern const size_t mmr_server_config_nkeys;

int mmr_server_config_load(const char *dir, struct mmr_server_config *cfg);
void mmr_server_config_free(struct mmr_server_config *cfg);

struct mmr_server {
    uv_loop_t *loop;
    char *dir;
    struct mmr_server_config cfg;
    struct mmr_store *store;
    struct mmr_ca *ca;
    uint8_t admin_token_hash[MMR_SHA256_LEN];
};

/* One API request, independent of the transport. */
struct mmr_api_request {
    const struct mmr_http_message *http;
    const char *body;        /* decoded (gunzipped) body */
    size_t body_len;
    bool has_cert;           /* a client certificate chained to our issuing CA */
    struct mmr_cert_info cert;
    char cert_error[256];    /* why a presented certificate failed, or "" */
    const char *peer;        /* "127.0.0.1:51234", for logs */
};

#define MMR_API_MAX_HEADERS 4

struct mmr_api_response {
    int status;
    json_t *json;            /* the body, or */
    char *raw;               /* raw bytes (e.g. a signed policy) */
    size_t raw_len;
    const char *content_type;
    struct mmr_http_header headers[MMR_API_MAX_HEADERS];
    char *header_values[MMR_API_MAX_HEADERS]; /* owned copies */
    size_t header_count;
};

/* Serves one request; blocking (store, signatures): runs on a worker thread. */
void mmr_api_handle(struct mmr_server *srv, const struct mmr_api_request *req,
                    struct mmr_api_response *res);
void mmr_api_response_free(struct mmr_api_response *res);

/* The exact bytes a policy signature covers:
 * {"group":<group>,"version":<n>,"document":<document text as stored>}. */
char *mmr_policy_payload(const char *group, int64_t version, const char *document);

/* Helpers shared by the API modules. */
void mmr_api_error(struct mmr_api_response *res, int status, int code, const char *reason,
                   const char *message);
void mmr_api_json(struct mmr_api_response *res, int status, json_t *body);
void mmr_api_header(struct mmr_api_response *res, const char *name, const char *value);
/* A query-string parameter, percent-decoded (allocated), or NULL. */
char *mmr_api_query(const struct mmr_api_request *req, const char *key);
/* Parses the body as a JSON object; on failure answers 400 and returns NULL. */
json_t *mmr_api_body_json(const struct mmr_api_request *req, struct mmr_api_response *res);

void mmr_api_agent(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res);
void mmr_api_admin(struct mmr_server *srv, const struct mmr_api_request *req,
                   struct mmr_api_response *res);

#endif
