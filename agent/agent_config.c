/* The agent's configuration schema and its loading rules (command-line
 * overrides, derived defaults). */
#include "agent/agent_config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define KEY(sec, nm, ty, field, dflt, lo, hi, ch, sec_, hlp)                                      \
    {sec, nm, ty, offsetof(struct mmr_agent_config, field), dflt, lo, hi, ch, sec_, hlp}

const struct mmr_cfg_key mmr_agent_config_schema[] = {
    KEY("agent", "data_dir", MMR_CFG_STRING, data_dir, NULL, 0, 0, NULL, false,
        "directory holding agent.db, keys and logs (default: the system's data directory)"),
    KEY("agent", "run_dir", MMR_CFG_STRING, run_dir, NULL, 0, 0, NULL, false,
        "directory of the local IPC socket (default: /run/mamori, or data_dir with --data-dir)"),
    KEY("agent", "hardware_id", MMR_CFG_STRING, hardware_id, NULL, 0, 0, NULL, false,
        "identifier of this computer for enrollment (default: SMBIOS UUID or machine-id; "
        "set it on cloned virtual machines)"),
    KEY("log", "level", MMR_CFG_ENUM, log_level, "info", 0, 0, log_levels, false,
        "least severe level written: debug, info, warn, error"),
    KEY("log", "file", MMR_CFG_STRING, log_file, NULL, 0, 0, NULL, false,
        "log file (default: <data_dir>/logs/agent.log)"),
    KEY("log", "max_size", MMR_CFG_SIZE, log_max_size, "10M", 64 * 1024, 1024LL * 1024 * 1024,
        NULL, false, "rotate the log file at this size"),
    KEY("log", "keep", MMR_CFG_INT, log_keep, "5", 1, 100, NULL, false,
        "rotated log files kept"),
    KEY("log", "stderr", MMR_CFG_BOOL, log_stderr, "false", 0, 0, NULL, false,
        "also log to standard error (always on in the foreground)"),
    KEY("server", "url", MMR_CFG_STRING, server_url, NULL, 0, 0, NULL, false,
        "management server, e.g. https://mamori.example.lg.jp:8443"),
    KEY("server", "enroll_token", MMR_CFG_STRING, enroll_token, NULL, 0, 0, NULL, true,
        "enrollment token for silent installs (used until the agent is enrolled; never "
        "logged, redacted in support bundles)"),
};

const size_t mmr_agent_config_nkeys =
    sizeof(mmr_agent_config_schema) / sizeof(mmr_agent_config_schema[0]);

char *mmr_agent_config_path(const char *config_opt, const char *data_dir_opt, bool *explicit_)
{
    *explicit_ = config_opt != NULL;
    if (config_opt)
        return mmr_strdup(config_opt);
    if (data_dir_opt)
        return mmr_path_join(data_dir_opt, "agent.conf");
    return mmr_strdup(mmr_default_config_path());
}

static void replace(char **field, const char *value)
{
    free(*field);
    *field = mmr_strdup(value);
}

static bool empty(const char *s)
{
    return !s || !s[0];
}

int mmr_agent_config_load(const char *path, bool missing_ok, const char *data_dir_override,
                          struct mmr_agent_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = mmr_config_load(path, missing_ok, mmr_agent_config_schema, mmr_agent_config_nkeys,
                             cfg);
    if (rc < 0)
        return rc;
    if (data_dir_override) {
        replace(&cfg->data_dir, data_dir_override);
        if (empty(cfg->run_dir))
            replace(&cfg->run_dir, data_dir_override);
    }
    if (empty(cfg->data_dir))
        replace(&cfg->data_dir, mmr_default_data_dir());
    if (empty(cfg->run_dir))
        replace(&cfg->run_dir, mmr_default_run_dir());
    if (empty(cfg->log_file)) {
        free(cfg->log_file);
        char *logs = mmr_path_join(cfg->data_dir, "logs");
        cfg->log_file = mmr_path_join(logs, "agent.log");
        free(logs);
    }
    return 0;
}

void mmr_agent_config_free(struct mmr_agent_config *cfg)
{
    mmr_config_free(mmr_agent_config_schema, mmr_agent_config_nkeys, cfg);
}
