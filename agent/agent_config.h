/* The agent's configuration file (agent.conf): its schema and loading. */
#ifndef MMR_AGENT_CONFIG_H
#define MMR_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/config.h"

struct mmr_agent_config {
    char *data_dir;     /* [agent] data_dir */
    char *run_dir;      /* [agent] run_dir: where the IPC socket lives */
    char *hardware_id;  /* [agent] hardware_id: overrides the machine's identifier */
    char *log_level;    /* [log] level */
    char *log_file;     /* [log] file; empty: <data_dir>/logs/agent.log */
    uint64_t log_max_size;
    int64_t log_keep;
    bool log_stderr;
    char *server_url;   /* [server] url */
    char *enroll_token; /* [server] enroll_token (secret) */
};

extern const struct mmr_cfg_key mmr_agent_config_schema[];
extern const size_t mmr_agent_config_nkeys;

/* Loads path (missing_ok: a missing file means defaults). data_dir_override,
 * when not NULL, replaces [agent] data_dir, and run_dir follows it unless
 * the file sets run_dir. Fills derived defaults. */
int mmr_agent_config_load(const char *path, bool missing_ok, const char *data_dir_override,
                          struct mmr_agent_config *cfg);
void mmr_agent_config_free(struct mmr_agent_config *cfg);

/* The configuration file to read: --config if given, else agent.conf in the
 * data directory given with --data-dir, else the system default. Allocated. */
char *mmr_agent_config_path(const char *config_opt, const char *data_dir_opt, bool *explicit_);

#endif
