/* The helpdesk support bundle: a .tar.gz that answers "why is this PC
 * unhappy?" (summary of findings, status, module health, redacted config,
 * recent log, database check, disk, power). Built by the running agent on
 * request, or by mamorictl itself when the agent is not running. Never
 * contains secrets: configuration is redacted by schema, known secret values
 * are scrubbed from every text, and key files are never read. */
#ifndef MMR_DIAG_H
#define MMR_DIAG_H

#include <stddef.h>

#include <jansson.h>

#include "agent/agent.h"

struct mmr_control;

struct mmr_diag_input {
    char *data_dir;
    char *log_file;
    char *config_path;
    char *config_text;  /* redacted INI dump; NULL when the file did not load */
    char *config_error; /* why it did not load */
    char **secrets;     /* values scrubbed from every text in the bundle */
    size_t nsecrets;
    json_t *status;      /* the running agent's status; NULL when unavailable */
    char *status_error;  /* why the status is missing */
    const char *sysfs_root; /* "/sys"; tests point it at a fake tree */
};

/* Fills in from a loaded configuration (copies everything it needs). */
void mmr_diag_input_init(struct mmr_diag_input *in, const char *config_path,
                         const struct mmr_agent_config *cfg);
void mmr_diag_input_free(struct mmr_diag_input *in);

/* Builds the bundle (blocking: run it off the loop thread). *name is the
 * suggested file name, e.g. mamori-diag-host-20261122T001500Z.tar.gz. */
int mmr_diag_build(const struct mmr_diag_input *in, char **out, size_t *len, char **name);

/* Registers the admin-only "diag" IPC command, served on the thread pool. */
void mmr_diag_register(struct mmr_control *ctl, struct mmr_agent *agent);

#endif
