/* Synchronous client for the agent's local IPC: connect, send one request,
 * wait for one reply line, with a timeout. Runs a private libuv loop, so the
 * same code speaks Unix sockets and Windows named pipes. */
#include "shared/ipc.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"

struct call {
    uv_loop_t loop;
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    const char *endpoint;
    uv_buf_t out;
    struct mmr_linebuf lines;
    char *reply;    /* first line received */
    int rc;
    bool done;
    bool oversized;
};

static void finish(struct call *c, int rc)
{
    if (c->done)
        return;
    c->done = true;
    c->rc = rc;
    uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->pipe);
}

static int on_line(const char *line, size_t len, void *ud)
{
    struct call *c = ud;
    if (!line) {
        c->oversized = true;
        finish(c, mmr_err_set(MMR_EPROTO, "agent reply exceeds %d bytes", MMR_IPC_MAX_REPLY));
        return 1;
    }
    c->reply = mmr_strndup(line, len);
    finish(c, 0);
    return 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = mmr_malloc(suggested);
    buf->len = suggested;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct call *c = s->data;
    if (n > 0 && !c->done)
        mmr_linebuf_feed(&c->lines, buf->base, (size_t)n, on_line, c);
    else if (n < 0 && !c->done)
        finish(c, n == UV_EOF ? 0 : mmr_err_set(MMR_ECONN, "connection to agent lost: %s",
                                                 uv_strerror((int)n)));
    free(buf->base);
}

static void on_write(uv_write_t *req, int status)
{
    struct call *c = req->data;
    if (status < 0)
        finish(c, mmr_err_set(MMR_ECONN, "cannot send to agent at %s: %s", c->endpoint,
                              uv_strerror(status)));
}

static void on_connect(uv_connect_t *req, int status)
{
    struct call *c = req->data;
    if (status < 0) {
        const char *why = status == UV_ENOENT || status == UV_ECONNREFUSED
                              ? "the agent is not running"
                          : status == UV_EACCES ? "permission denied"
                                                : uv_strerror(status);
        finish(c, mmr_err_set(MMR_ECONN, "cannot reach the agent at %s: %s", c->endpoint, why));
        return;
    }
    /* Talk only to an agent run by an administrator or by ourselves: an
     * impostor serving the same name would otherwise read our requests and
     * feed us answers (on Windows any local user can add a pipe instance). */
    struct mmr_peer server;
    int rc = mmr_peer_identify_server(&c->pipe, &server);
    if (rc < 0) {
        finish(c, mmr_err_wrap(rc, "cannot tell who serves %s", c->endpoint));
        return;
    }
    if (!server.admin) {
        finish(c, mmr_err_set(MMR_EPERM,
                              "refusing %s: it is served by user %s (pid %lld), who is neither "
                              "an administrator nor you; another program may be posing as the "
                              "agent",
                              c->endpoint, server.name, (long long)server.pid));
        return;
    }
    c->write_req.data = c;
    uv_write(&c->write_req, (uv_stream_t *)&c->pipe, &c->out, 1, on_write);
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void on_timeout(uv_timer_t *t)
{
    struct call *c = t->data;
    finish(c, mmr_err_set(MMR_ETIMEDOUT, "the agent at %s did not answer in time", c->endpoint));
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

int mmr_ipc_call_raw(const char *endpoint, const void *data, size_t len, int timeout_ms,
                     char **reply)
{
    struct call c;
    memset(&c, 0, sizeof(c));
    c.endpoint = endpoint;
    c.out = uv_buf_init((char *)data, (unsigned)len);
    mmr_linebuf_init(&c.lines, MMR_IPC_MAX_REPLY);
    *reply = NULL;

    int rc = uv_loop_init(&c.loop);
    if (rc < 0)
        return mmr_err_set(MMR_EIO, "cannot start event loop: %s", uv_strerror(rc));
    uv_pipe_init(&c.loop, &c.pipe, 0);
    uv_timer_init(&c.loop, &c.timer);
    c.pipe.data = &c;
    c.timer.data = &c;
    c.connect_req.data = &c;
    uv_timer_start(&c.timer, on_timeout, (uint64_t)timeout_ms, 0);
    uv_pipe_connect(&c.connect_req, &c.pipe, endpoint, on_connect);

    while (!c.done && uv_run(&c.loop, UV_RUN_ONCE))
        ;
    if (!c.done)
        finish(&c, 0);
    uv_close((uv_handle_t *)&c.pipe, close_cb);
    uv_close((uv_handle_t *)&c.timer, close_cb);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    uv_loop_close(&c.loop);
    mmr_linebuf_free(&c.lines);

    if (c.rc < 0) {
        free(c.reply);
        return c.rc;
    }
    *reply = c.reply;
    return 0;
}

static int decode_reply(const char *line, json_t **result)
{
    json_t *doc;
    int rc = mmr_json_parse_object(line, strlen(line), MMR_JSON_MAX_DEPTH, &doc);
    if (rc < 0)
        return mmr_err_wrap(MMR_EPROTO, "malformed reply from agent");
    bool ok = false;
    rc = mmr_json_get_bool(doc, "$", "ok", true, &ok);
    if (rc < 0)
        goto bad;
    if (ok) {
        json_t *res = json_object_get(doc, "result");
        *result = json_incref(res ? res : json_null());
        json_decref(doc);
        return 0;
    }
    json_t *err;
    const char *code = "EPROTO", *message = "";
    rc = mmr_json_get_object(doc, "$", "error", true, &err);
    if (rc == 0)
        rc = mmr_json_get_str(err, "$.error", "code", true, &code);
    if (rc == 0)
        rc = mmr_json_get_str(err, "$.error", "message", false, &message);
    if (rc < 0)
        goto bad;
    rc = mmr_err_set(mmr_err_from_name(code), "%s", message);
    json_decref(doc);
    return rc;
bad:
    json_decref(doc);
    return mmr_err_wrap(MMR_EPROTO, "malformed reply from agent");
}

int mmr_ipc_call(const char *endpoint, const char *cmd, json_t *args, int timeout_ms,
                 json_t **result)
{
    json_t *req = json_object();
    json_object_set_new(req, "id", json_integer(1));
    json_object_set_new(req, "cmd", json_string(cmd));
    json_object_set_new(req, "args", args ? json_incref(args) : json_object());
    char *body = mmr_json_dump_line(req);
    json_decref(req);
    char *line = mmr_asprintf("%s\n", body);
    free(body);

    char *reply = NULL;
    int rc = mmr_ipc_call_raw(endpoint, line, strlen(line), timeout_ms, &reply);
    free(line);
    if (rc < 0)
        return rc;
    if (!reply)
        return mmr_err_set(MMR_EPROTO, "the agent closed the connection without replying");
    rc = decode_reply(reply, result);
    free(reply);
    return rc;
}
