/* API routing and the reply helpers shared by the agent and admin APIs. */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"

void mmr_api_json(struct mmr_api_response *res, int status, json_t *body)
{
    json_decref(res->json);
    res->status = status;
    res->json = body;
    res->content_type = "application/json";
}

void mmr_api_error(struct mmr_api_response *res, int status, int code, const char *reason,
                   const char *message)
{
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(mmr_err_name(code)));
    if (reason)
        json_object_set_new(err, "reason", json_string(reason));
    json_t *text = json_string(message ? message : "");
    json_object_set_new(err, "message", text ? text : json_string("(not UTF-8)"));
    mmr_api_json(res, status, json_pack("{s:o}", "error", err));
}

void mmr_api_header(struct mmr_api_response *res, const char *name, const char *value)
{
    if (res->header_count >= MMR_API_MAX_HEADERS)
        abort(); /* a programming error, caught by the first test */
    size_t i = res->header_count++;
    res->header_values[i] = mmr_strdup(value);
    res->headers[i].name = name;
    res->headers[i].value = res->header_values[i];
}

json_t *mmr_api_body_json(const struct mmr_api_request *req, struct mmr_api_response *res)
{
    json_t *doc;
    if (mmr_json_parse_object(req->body, req->body_len, MMR_JSON_MAX_DEPTH, &doc) < 0) {
        mmr_api_error(res, 400, MMR_EINVAL, "bad_json", mmr_err_msg());
        return NULL;
    }
    return doc;
}

void mmr_api_response_free(struct mmr_api_response *res)
{
    json_decref(res->json);
    free(res->raw);
    for (size_t i = 0; i < res->header_count; i++)
        free(res->header_values[i]);
    memset(res, 0, sizeof(*res));
}

void mmr_api_handle(struct mmr_server *srv, const struct mmr_api_request *req,
                    struct mmr_api_response *res)
{
    const char *path = req->http->path;
    if (strncmp(path, "/v1/", 4) == 0)
        mmr_api_agent(srv, req, res);
    else if (strncmp(path, "/admin/v1/", 10) == 0)
        mmr_api_admin(srv, req, res);
    else
        mmr_api_error(res, 404, MMR_ENOENT, "no_such_path", "no such path");
    if (res->status >= 400)
        mmr_info("api", "request refused", "peer=%s method=%s path=\"%s\" status=%d", req->peer,
                 req->http->method, path, res->status);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *mmr_api_query(const struct mmr_api_request *req, const char *key)
{
    const char *q = req->http->query;
    size_t klen = strlen(key);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > klen && strncmp(q, key, klen) == 0 && q[klen] == '=') {
            struct mmr_buf v = {0};
            for (size_t i = klen + 1; i < len; i++) {
                char c = q[i];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && i + 2 < len + 1 && hexval(q[i + 1]) >= 0 &&
                           hexval(q[i + 2]) >= 0) {
                    c = (char)(hexval(q[i + 1]) * 16 + hexval(q[i + 2]));
                    i += 2;
                }
                mmr_buf_append(&v, &c, 1);
            }
            mmr_buf_append(&v, "", 0);
            return v.data;
        }
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}
