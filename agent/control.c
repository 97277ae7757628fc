/* Local IPC server: accepts connections, frames lines, checks who is
 * asking, dispatches commands and writes replies, with limits on clients,
 * request size, requests in flight and idle time. */
#include "agent/control.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/log.h"
#include "shared/mem.h"

#define MAX_COMMANDS 32
#define MAX_UNSENT_BYTES (64u * 1024 * 1024)

struct command {
    char *name;
    bool admin_only;
    mmr_control_handler fn;
    void *ud;
};

struct conn {
    uv_pipe_t pipe;
    uv_timer_t idle;
    struct mmr_control *ctl;
    struct mmr_linebuf lines;
    struct mmr_peer peer;
    struct conn *next;
    int refs;        /* the handles' closes, plus one per call in flight */
    int handles_open;
    size_t inflight;
    bool closing;
};

struct mmr_control_call {
    struct conn *conn;
    json_t *id;
    char *cmd;
};

struct mmr_control {
    uv_loop_t *loop;
    uv_pipe_t server;
    char *endpoint;
    struct mmr_control_limits limits;
    struct command commands[MAX_COMMANDS];
    size_t ncommands;
    struct conn *conns;
    size_t nconns;
    bool stopping;
    bool server_open;
};

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    mmr_linebuf_free(&c->lines);
    free(c);
}

static void unlink_conn(struct conn *c)
{
    struct mmr_control *ctl = c->ctl;
    for (struct conn **p = &ctl->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            ctl->nconns--;
            break;
        }
    }
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles_open == 0)
        unlink_conn(c);
    conn_unref(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->pipe, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_conn_handle_closed);
}

struct write_req {
    uv_write_t req;
    char *line;
};

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = req->data;
    if (status < 0 && status != UV_ECANCELED)
        conn_close(c); /* the client went away; nothing more to tell it */
    free(w->line);
    free(w);
    conn_unref(c);
}

/* Takes ownership of line. */
static void conn_send(struct conn *c, char *line)
{
    if (c->closing) {
        free(line);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) > MAX_UNSENT_BYTES) {
        /* A client that never reads its replies must not make us hold them. */
        mmr_warn("control", "client does not read its replies, closing", "peer_uid=%u",
                 (unsigned)c->peer.uid);
        free(line);
        conn_close(c);
        return;
    }
    struct write_req *w = mmr_malloc(sizeof(*w));
    w->line = line;
    w->req.data = c;
    uv_buf_t buf = uv_buf_init(line, (unsigned)strlen(line));
    c->refs++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_written);
    if (rc < 0) {
        free(line);
        free(w);
        c->refs--;
        conn_close(c);
    }
}

static void call_finish(struct mmr_control_call *call, char *line)
{
    struct conn *c = call->conn;
    conn_send(c, line);
    c->inflight--;
    json_decref(call->id);
    free(call->cmd);
    free(call);
    conn_unref(c);
}

void mmr_control_reply(struct mmr_control_call *call, json_t *result)
{
    call_finish(call, mmr_ipc_reply_ok(call->id, result));
}

void mmr_control_fail(struct mmr_control_call *call, int code, const char *message)
{
    mmr_info("control", "request refused", "cmd=%s peer_uid=%u code=%s", call->cmd,
             (unsigned)call->conn->peer.uid, mmr_err_name(code));
    call_finish(call, mmr_ipc_reply_error(call->id, code, message));
}

const struct mmr_peer *mmr_control_peer(const struct mmr_control_call *call)
{
    return &call->conn->peer;
}

static const struct command *find_command(const struct mmr_control *ctl, const char *name)
{
    for (size_t i = 0; i < ctl->ncommands; i++)
        if (strcmp(ctl->commands[i].name, name) == 0)
            return &ctl->commands[i];
    return NULL;
}

static int on_line(const char *line, size_t len, void *ud)
{
    struct conn *c = ud;
    if (c->closing)
        return 1;
    if (!line) {
        conn_send(c, mmr_ipc_reply_error(NULL, MMR_ETOOBIG, "request exceeds 65536 bytes"));
        mmr_warn("control", "oversized request refused", "peer_uid=%u", (unsigned)c->peer.uid);
        return 0;
    }
    if (len == 0)
        return 0; /* blank lines are keep-alives */

    struct mmr_ipc_request req;
    if (mmr_ipc_request_parse(line, len, &req) < 0) {
        mmr_warn("control", "malformed request refused", "peer_uid=%u error=\"%s\"",
                 (unsigned)c->peer.uid, mmr_err_msg());
        conn_send(c, mmr_ipc_reply_error(req.id, MMR_EINVAL, mmr_err_msg()));
        mmr_ipc_request_free(&req);
        return 0;
    }
    const struct command *cmd = find_command(c->ctl, req.cmd);
    if (!cmd) {
        char *msg = mmr_asprintf("unknown command '%s'", req.cmd);
        conn_send(c, mmr_ipc_reply_error(req.id, MMR_EINVAL, msg));
        free(msg);
    } else if (c->inflight >= c->ctl->limits.max_inflight) {
        conn_send(c, mmr_ipc_reply_error(req.id, MMR_EBUSY, "too many requests in flight"));
    } else if (cmd->admin_only && !c->peer.admin) {
        char *msg = mmr_asprintf("'%s' is for administrators; user %s may not call it", req.cmd,
                                 c->peer.name);
        mmr_warn("control", "admin command refused", "cmd=%s peer_uid=%u", req.cmd,
                 (unsigned)c->peer.uid);
        conn_send(c, mmr_ipc_reply_error(req.id, MMR_EPERM, msg));
        free(msg);
    } else {
        struct mmr_control_call *call = mmr_malloc(sizeof(*call));
        call->conn = c;
        call->id = json_incref(req.id);
        call->cmd = mmr_strdup(req.cmd);
        c->refs++;
        c->inflight++;
        mmr_debug("control", "request", "cmd=%s peer_uid=%u", req.cmd, (unsigned)c->peer.uid);
        cmd->fn(call, req.args, cmd->ud);
    }
    mmr_ipc_request_free(&req);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = mmr_malloc(suggested);
    buf->len = suggested;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n > 0) {
        uv_timer_again(&c->idle);
        mmr_linebuf_feed(&c->lines, buf->base, (size_t)n, on_line, c);
    } else if (n < 0) {
        conn_close(c);
    }
    free(buf->base);
}

static void on_idle(uv_timer_t *t)
{
    struct conn *c = t->data;
    mmr_info("control", "idle client disconnected", "peer_uid=%u", (unsigned)c->peer.uid);
    conn_close(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct mmr_control *ctl = server->data;
    if (status < 0) {
        mmr_warn("control", "accept failed", "error=\"%s\"", uv_strerror(status));
        return;
    }
    struct conn *c = mmr_calloc(1, sizeof(*c));
    c->ctl = ctl;
    c->refs = 2; /* one per handle */
    c->handles_open = 2;
    mmr_linebuf_init(&c->lines, MMR_IPC_MAX_REQUEST);
    uv_pipe_init(ctl->loop, &c->pipe, 0);
    uv_timer_init(ctl->loop, &c->idle);
    c->pipe.data = c;
    c->idle.data = c;
    c->next = ctl->conns;
    ctl->conns = c;
    ctl->nconns++;

    if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
        conn_close(c);
        return;
    }
    if (mmr_peer_identify(&c->pipe, &c->peer) < 0) {
        mmr_warn("control", "cannot identify client, closing", "error=\"%s\"", mmr_err_msg());
        conn_close(c);
        return;
    }
    if (ctl->nconns > ctl->limits.max_clients) {
        mmr_warn("control", "too many clients, refusing one", "peer_uid=%u",
                 (unsigned)c->peer.uid);
        conn_send(c, mmr_ipc_reply_error(NULL, MMR_EBUSY, "too many clients connected"));
        conn_close(c);
        return;
    }
    uv_timer_start(&c->idle, on_idle, ctl->limits.idle_timeout_ms, ctl->limits.idle_timeout_ms);
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

int mmr_control_start(uv_loop_t *loop, const char *endpoint,
                      const struct mmr_control_limits *limits, struct mmr_control **out)
{
    struct mmr_control *ctl = mmr_calloc(1, sizeof(*ctl));
    ctl->loop = loop;
    ctl->endpoint = mmr_strdup(endpoint);
    if (limits)
        ctl->limits = *limits;
    if (!ctl->limits.max_clients)
        ctl->limits.max_clients = 64;
    if (!ctl->limits.max_inflight)
        ctl->limits.max_inflight = 8;
    if (!ctl->limits.idle_timeout_ms)
        ctl->limits.idle_timeout_ms = 30000;

    /* We hold the instance lock, so an existing endpoint is a dead agent's. */
    mmr_file_remove(endpoint);
    uv_pipe_init(loop, &ctl->server, 0);
    ctl->server.data = ctl;
    ctl->server_open = true;
    int rc = uv_pipe_bind(&ctl->server, endpoint);
    if (rc == 0)
        rc = mmr_ipc_endpoint_open_to_all(&ctl->server) < 0 ? UV_EACCES : 0;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&ctl->server, 16, on_connection);
    if (rc < 0) {
        int err = mmr_err_set(MMR_EIO, "cannot listen on %s: %s", endpoint, uv_strerror(rc));
        uv_close((uv_handle_t *)&ctl->server, NULL);
        ctl->server_open = false;
        *out = ctl; /* freed by the caller after the loop has run the close */
        return err;
    }
    *out = ctl;
    return 0;
}

void mmr_control_register(struct mmr_control *ctl, const char *cmd, bool admin_only,
                          mmr_control_handler fn, void *ud)
{
    if (ctl->ncommands >= MAX_COMMANDS)
        abort(); /* a programming error, caught by the first test run */
    struct command *c = &ctl->commands[ctl->ncommands++];
    c->name = mmr_strdup(cmd);
    c->admin_only = admin_only;
    c->fn = fn;
    c->ud = ud;
}

void mmr_control_stop(struct mmr_control *ctl)
{
    if (!ctl || ctl->stopping)
        return;
    ctl->stopping = true;
    if (ctl->server_open) {
        uv_close((uv_handle_t *)&ctl->server, NULL);
        ctl->server_open = false;
        mmr_file_remove(ctl->endpoint);
    }
    for (struct conn *c = ctl->conns; c; c = c->next)
        conn_close(c);
}

void mmr_control_free(struct mmr_control *ctl)
{
    if (!ctl)
        return;
    for (size_t i = 0; i < ctl->ncommands; i++)
        free(ctl->commands[i].name);
    free(ctl->endpoint);
    free(ctl);
}
