/* The local IPC protocol between the agent and mamorictl / mamori-tray:
 * newline-delimited JSON. A request is {"id":N,"cmd":"status","args":{...}};
 * a reply is {"id":N,"ok":true,"result":{...}} or
 * {"id":N,"ok":false,"error":{"code":"EPERM","message":"..."}}.
 * This file holds the framing, the envelope, and a synchronous client. */
#ifndef MMR_IPC_H
#define MMR_IPC_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* Requests larger than this are refused; the agent replies with ETOOBIG. */
#define MMR_IPC_MAX_REQUEST (64 * 1024)
/* Replies may carry a diagnostic bundle (base64), so they may be larger. */
#define MMR_IPC_MAX_REPLY (32 * 1024 * 1024)

/* ---- framing ------------------------------------------------------------ */

/* Called for each complete line (without the newline). line is NULL when a
 * line exceeded the limit: the excess is discarded up to the next newline.
 * Return non-zero to stop feeding (the rest of the input is dropped). */
typedef int (*mmr_line_cb)(const char *line, size_t len, void *ud);

struct mmr_linebuf {
    char *data;
    size_t len;
    size_t cap;
    size_t max_line;
    bool discarding; /* inside an oversized line */
};

void mmr_linebuf_init(struct mmr_linebuf *lb, size_t max_line);
/* Returns the callback's non-zero value if it stopped, else 0. */
int mmr_linebuf_feed(struct mmr_linebuf *lb, const char *data, size_t len, mmr_line_cb cb,
                     void *ud);
void mmr_linebuf_free(struct mmr_linebuf *lb);

/* ---- envelope ----------------------------------------------------------- */

struct mmr_ipc_request {
    json_t *id;   /* borrowed from doc; echoed in the reply (may be NULL) */
    const char *cmd;
    json_t *args; /* borrowed; an empty object when absent */
    json_t *doc;  /* owned */
};

/* Parses one request line. On failure *out is zeroed, except that out->id is
 * set when the id could be read (so the error reply can carry it). */
int mmr_ipc_request_parse(const char *line, size_t len, struct mmr_ipc_request *out);
void mmr_ipc_request_free(struct mmr_ipc_request *req);

/* Builds reply lines (newline-terminated, allocated). reply_ok steals result. */
char *mmr_ipc_reply_ok(json_t *id, json_t *result);
char *mmr_ipc_reply_error(json_t *id, int code, const char *message);

/* ---- client ------------------------------------------------------------- */

/* Sends one request to the endpoint and waits for its reply. Returns 0 and a
 * new reference in *result on success; MMR_ECONN when no agent listens there
 * (message says so), MMR_ETIMEDOUT, MMR_EPROTO for a malformed reply, or the
 * agent's error code with its message. args may be NULL; it is not stolen. */
int mmr_ipc_call(const char *endpoint, const char *cmd, json_t *args, int timeout_ms,
                 json_t **result);

/* Sends raw bytes and returns the first reply line (allocated, without the
 * newline), or NULL in *reply when the agent closed without replying. For
 * tests and diagnostics. */
int mmr_ipc_call_raw(const char *endpoint, const void *data, size_t len, int timeout_ms,
                     char **reply);

#endif
