/* Local IPC: newline framing with a size limit, and the request/reply
 * envelope of the agent's newline-delimited JSON protocol. */
#include "shared/ipc.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"

void mmr_linebuf_init(struct mmr_linebuf *lb, size_t max_line)
{
    memset(lb, 0, sizeof(*lb));
    lb->max_line = max_line;
}

void mmr_linebuf_free(struct mmr_linebuf *lb)
{
    free(lb->data);
    memset(lb, 0, sizeof(*lb));
}

static void keep_partial(struct mmr_linebuf *lb, const char *data, size_t len)
{
    if (lb->len + len > lb->max_line) {
        /* The line is already too long: report it once, drop the rest. */
        lb->discarding = true;
        lb->len = 0;
        return;
    }
    if (lb->len + len > lb->cap) {
        size_t cap = lb->cap ? lb->cap : 256;
        while (cap < lb->len + len)
            cap *= 2;
        lb->data = mmr_realloc(lb->data, cap);
        lb->cap = cap;
    }
    memcpy(lb->data + lb->len, data, len);
    lb->len += len;
}

int mmr_linebuf_feed(struct mmr_linebuf *lb, const char *data, size_t len, mmr_line_cb cb,
                     void *ud)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        if (!nl) {
            bool was_discarding = lb->discarding;
            if (!was_discarding)
                keep_partial(lb, data, len);
            if (!was_discarding && lb->discarding) {
                int stop = cb(NULL, 0, ud);
                if (stop)
                    return stop;
            }
            return 0;
        }
        size_t chunk = (size_t)(nl - data);
        int stop = 0;
        if (lb->discarding) {
            lb->discarding = false; /* the oversized line ends here */
        } else if (lb->len + chunk > lb->max_line) {
            lb->len = 0;
            stop = cb(NULL, 0, ud);
        } else if (lb->len == 0) {
            stop = cb(data, chunk, ud); /* whole line in this chunk: no copy */
        } else {
            keep_partial(lb, data, chunk);
            stop = cb(lb->data, lb->len, ud);
            lb->len = 0;
        }
        if (stop)
            return stop;
        data = nl + 1;
        len -= chunk + 1;
    }
    return 0;
}

int mmr_ipc_request_parse(const char *line, size_t len, struct mmr_ipc_request *out)
{
    memset(out, 0, sizeof(*out));
    json_t *doc;
    int rc = mmr_json_parse_object(line, len, MMR_JSON_MAX_DEPTH, &doc);
    if (rc < 0)
        return mmr_err_wrap(rc, "request is not a JSON object");
    out->doc = doc;
    json_t *id = json_object_get(doc, "id");
    if (id && !json_is_integer(id) && !json_is_string(id)) {
        rc = mmr_err_set(MMR_EINVAL, "$.id: expected an integer or a string");
        goto fail;
    }
    out->id = id;
    rc = mmr_json_get_str(doc, "$", "cmd", true, &out->cmd);
    if (rc < 0)
        goto fail;
    json_t *args = NULL;
    rc = mmr_json_get_object(doc, "$", "args", false, &args);
    if (rc < 0)
        goto fail;
    if (!args) {
        args = json_object();
        json_object_set_new(doc, "args", args);
    }
    out->args = args;
    return 0;
fail:
    /* Keep the id (and the doc that owns it) so the error reply can echo it. */
    out->cmd = NULL;
    out->args = NULL;
    return rc;
}

void mmr_ipc_request_free(struct mmr_ipc_request *req)
{
    json_decref(req->doc);
    memset(req, 0, sizeof(*req));
}

static char *finish_line(json_t *reply)
{
    char *body = mmr_json_dump_line(reply);
    json_decref(reply);
    char *line = mmr_asprintf("%s\n", body);
    free(body);
    return line;
}

char *mmr_ipc_reply_ok(json_t *id, json_t *result)
{
    json_t *reply = json_object();
    json_object_set(reply, "id", id ? id : json_null());
    json_object_set_new(reply, "ok", json_true());
    json_object_set_new(reply, "result", result ? result : json_object());
    return finish_line(reply);
}

char *mmr_ipc_reply_error(json_t *id, int code, const char *message)
{
    json_t *reply = json_object();
    json_object_set(reply, "id", id ? id : json_null());
    json_object_set_new(reply, "ok", json_false());
    json_t *error = json_object();
    json_t *text = json_string(message ? message : "");
    if (!text) /* not UTF-8: say so rather than send invalid JSON */
        text = json_string("(error message was not valid UTF-8)");
    json_object_set_new(error, "code", json_string(mmr_err_name(code)));
    json_object_set_new(error, "message", text);
    json_object_set_new(reply, "error", error);
    return finish_line(reply);
}
