/* The agent's status document: what `mamorictl status` and the tray show,
 * and what goes into diagnostic bundles. Built from memory only. */
#ifndef MMR_STATUS_H
#define MMR_STATUS_H

#include <jansson.h>

#include "agent/agent.h"

/* A new JSON object; see docs/cli.md for its fields. */
json_t *mmr_status_collect(const struct mmr_agent *agent);

struct mmr_control;
/* Registers the "status" IPC command (open to every local user). */
void mmr_status_register(struct mmr_control *ctl, struct mmr_agent *agent);

#endif
