/* The agent's local IPC server (mamorictl, mamori-tray): newline-delimited
 * JSON over a Unix socket or named pipe. Commands are registered by the
 * modules that serve them; admin-only commands are refused to other users,
 * identified by the OS, not by anything the client sends. */
#ifndef MMR_CONTROL_H
#define MMR_CONTROL_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "shared/platform.h"

struct mmr_control;
struct mmr_control_call;

/* Serves one request. Must eventually call mmr_control_reply or
 * mmr_control_fail exactly once, now or later (e.g. after thread-pool work).
 * args is borrowed for the duration of the handler call only. */
typedef void (*mmr_control_handler)(struct mmr_control_call *call, json_t *args, void *ud);

struct mmr_control_limits {
    size_t max_clients;       /* 0: 64 */
    size_t max_inflight;      /* per connection; 0: 8 */
    unsigned idle_timeout_ms; /* 0: 30,000 */
};

/* Listens on endpoint (a stale socket left by a dead agent is replaced: the
 * caller holds the instance lock). */
int mmr_control_start(uv_loop_t *loop, const char *endpoint,
                      const struct mmr_control_limits *limits, struct mmr_control **out);

void mmr_control_register(struct mmr_control *ctl, const char *cmd, bool admin_only,
                          mmr_control_handler fn, void *ud);

/* Stops listening and closes every connection; replies still pending are
 * dropped when they arrive. Free after the loop has run the closes. */
void mmr_control_stop(struct mmr_control *ctl);
void mmr_control_free(struct mmr_control *ctl);

/* Completes a call with a result (stolen; NULL means {}). */
void mmr_control_reply(struct mmr_control_call *call, json_t *result);
/* Completes a call with an error. */
void mmr_control_fail(struct mmr_control_call *call, int code, const char *message);

const struct mmr_peer *mmr_control_peer(const struct mmr_control_call *call);

#endif
